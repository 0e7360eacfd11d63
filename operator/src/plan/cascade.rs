//! Cascades: which Services the workloads call, read from their own
//! configuration, and what losing the zone does to the callers of a Service
//! that goes dark with it.
//!
//! Invariants this module keeps:
//! - Pure: [`Discovery`] is fed pods as they are listed and keeps one entry
//!   per workload (the first pod of each owner is read, the rest only
//!   counted), never a pod spec; the graph is built from that and the
//!   snapshot alone.
//! - A name is a Service only when it says so: `svc.ns`, `svc.ns.svc`,
//!   `svc.ns.svc.<domain>`, or a bare `svc` inside a URL or `host:port`, and
//!   only when such a Service exists. A Secret's values are never read.
//! - A name found in prose (a value with spaces, a comment line, a variable
//!   named like a note) is a weak edge: it may never be called, so it makes
//!   a caller at risk at most, never predicted Failed.

use super::{Labels, OwnerKey, PodInfo, Request, SloTarget, Snapshot, Target};
use crate::api::{DependenciesSpec, DependencyEdge};
use kube::core::{Selector, SelectorExt};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// Where a workload's configuration names a host.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    /// As written, without scheme or port: `tokens.fleet.svc`.
    pub host: String,
    /// `env TOKENS_URL`, `args`, `ConfigMap fleet/gateway-config key upstreams`.
    pub via: String,
    /// In a URL or `host:port`: a bare name may then be a Service.
    pub qualified: bool,
    /// Not in prose or a comment: the workload most likely calls it.
    pub strong: bool,
}

/// A ConfigMap a workload mounts or reads its environment from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConfigMapUse {
    pub name: String,
    /// Only this key (`valueFrom.configMapKeyRef`), else every key.
    pub key: Option<String>,
    /// `env TOKENS_URL`, `envFrom`, `volume config`.
    pub via: String,
}

/// A workload and the hosts its configuration names.
#[derive(Clone, Debug, PartialEq)]
pub struct Caller {
    /// `Deployment fleet/gateway`
    pub workload: String,
    pub namespace: String,
    /// The labels of its first pod: what a Service's selector is matched on.
    pub labels: Labels,
    pub refs: Vec<Reference>,
    pub config_maps: Vec<ConfigMapUse>,
}

impl Caller {
    /// `namespace/name`, as `spec.dependencies` names it.
    pub fn short_name(&self) -> &str {
        self.workload
            .split_once(' ')
            .map(|(_, n)| n)
            .unwrap_or(&self.workload)
    }
}

/// A Service, as much of it as the graph needs.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceInfo {
    pub namespace: String,
    pub name: String,
    /// None: no selector (endpoints managed by hand, or ExternalName).
    pub selector: Option<Selector>,
    pub external_name: Option<String>,
}

/// What was found while the pods were listed: one [`Caller`] per workload,
/// and the ready pods outside the zone counted per label set.
#[derive(Clone, Debug, Default)]
pub struct Discovery {
    pub callers: Vec<Caller>,
    seen: HashSet<OwnerKey>,
    /// (namespace, labels) → ready pods outside the zone.
    pub ready_outside: HashMap<(String, Labels), i32>,
    pub services: Vec<ServiceInfo>,
}

impl Discovery {
    /// Take what `pod` names (its first replica only) and count it.
    pub fn add(&mut self, pod: &mut PodInfo, in_zone: bool) {
        let refs = std::mem::take(&mut pod.refs);
        let config_maps = std::mem::take(&mut pod.config_maps);
        if !in_zone && pod.ready && !pod.finished && !pod.terminating {
            *self
                .ready_outside
                .entry((pod.namespace.clone(), pod.labels.clone()))
                .or_default() += 1;
        }
        let owner = pod.owner.clone().unwrap_or_else(|| OwnerKey {
            kind: "Pod".into(),
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
        });
        if pod.finished || !self.seen.insert(owner.clone()) {
            return;
        }
        self.callers.push(Caller {
            workload: workload_name(&owner, &pod.labels),
            namespace: pod.namespace.clone(),
            labels: pod.labels.clone(),
            refs,
            config_maps,
        });
    }

    /// Forget the per-owner index once listing is over.
    pub fn finish(&mut self) {
        self.seen = HashSet::new();
        self.callers.shrink_to_fit();
    }
}

/// The workload people know: a ReplicaSet named `<deployment>-<hash>`
/// whose pods carry that `pod-template-hash` is its Deployment's.
pub fn workload_name(owner: &OwnerKey, labels: &BTreeMap<String, String>) -> String {
    if owner.kind == "ReplicaSet"
        && let Some(hash) = labels.get("pod-template-hash")
        && let Some(dep) = owner.name.strip_suffix(&format!("-{hash}"))
    {
        return format!("Deployment {}/{dep}", owner.namespace);
    }
    format!("{} {}/{}", owner.kind, owner.namespace, owner.name)
}

/// Environment variable names that read as notes, not addresses.
const NOTE_NAMES: [&str; 6] = ["NOTE", "COMMENT", "DESCRIPTION", "HELP", "DOC", "EXAMPLE"];

/// The hosts an environment variable's value names.
pub fn env_refs(name: &str, value: &str) -> Vec<Reference> {
    let upper = name.to_ascii_uppercase();
    let note = NOTE_NAMES.iter().any(|n| upper.contains(n));
    let prose = value.trim().contains(char::is_whitespace);
    hosts_in(value, &format!("env {name}"), !note && !prose)
}

/// The hosts a command line names (each argument on its own).
pub fn args_refs(what: &str, args: &[String]) -> Vec<Reference> {
    args.iter().flat_map(|a| hosts_in(a, what, true)).collect()
}

/// The hosts a ConfigMap's values name: line by line, a comment line
/// (`#`, `//`, `;`) naming a host only weakly.
pub fn config_map_refs(
    namespace: &str,
    name: &str,
    data: &BTreeMap<String, String>,
    use_: &ConfigMapUse,
) -> Vec<Reference> {
    let mut out = vec![];
    for (key, value) in data {
        if use_.key.as_ref().is_some_and(|k| k != key) {
            continue;
        }
        let via = format!("ConfigMap {namespace}/{name} key {key}, {}", use_.via);
        for line in value.lines() {
            let t = line.trim_start();
            let comment = t.starts_with('#') || t.starts_with("//") || t.starts_with(';');
            out.extend(hosts_in(line, &via, !comment));
        }
    }
    out
}

/// The host names in `text`: URLs, `host:port`, and dotted names.
pub fn hosts_in(text: &str, via: &str, strong: bool) -> Vec<Reference> {
    let mut out: Vec<Reference> = vec![];
    let seps = |c: char| {
        c.is_whitespace()
            || matches!(
                c,
                '"' | '\'' | ',' | ';' | '=' | '(' | ')' | '[' | ']' | '{' | '}' | '<' | '>' | '`'
            )
    };
    for token in text.split(seps).filter(|t| !t.is_empty()) {
        let (host, qualified) = if let Some((_, rest)) = token.split_once("://") {
            (super::collect::url_host(rest), true)
        } else {
            let t = token.trim_end_matches(['.', ':']);
            match t.rsplit_once(':') {
                Some((h, port)) if !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) => {
                    (h.to_string(), true)
                }
                Some(_) => continue,
                None => (t.split('/').next().unwrap_or("").to_string(), false),
            }
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if host.is_empty() || (!qualified && !host.contains('.')) {
            continue;
        }
        let r = Reference {
            host,
            via: via.to_string(),
            qualified,
            strong,
        };
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

/// The Service (`namespace`, `name`) a host names, seen from `own_ns`.
pub fn service_named(host: &str, qualified: bool, own_ns: &str) -> Option<(String, String)> {
    if let Some(found) = super::collect::service_of_host(host) {
        return Some(found);
    }
    let label = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !s.starts_with('-')
            && !s.chars().all(|c| c.is_ascii_digit())
    };
    (qualified && label(host)).then(|| (own_ns.to_string(), host.to_string()))
}

/// One edge of the graph: a workload calls a Service.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Edge {
    /// `Deployment fleet/gateway`
    pub from: String,
    /// `fleet/tokens`
    pub to: String,
    /// The host as written (`tokens.fleet.svc`), or `spec.dependencies`.
    pub host: String,
    pub via: String,
    /// False: named in prose or a comment; may never be called.
    pub strong: bool,
}

/// A Service of the graph and what the zone's loss does to it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServiceNode {
    /// `fleet/tokens`
    pub name: String,
    /// The workloads whose pods it selects.
    pub workloads: Vec<String>,
    pub ready_outside: i32,
    /// Why it goes dark with the zone, when it does.
    pub lost: Option<String>,
}

/// The Service dependency graph.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Graph {
    pub services: Vec<ServiceNode>,
    pub edges: Vec<Edge>,
}

impl Graph {
    /// Graphviz `dot`: workloads as boxes, Services as ellipses, the ones
    /// lost with the zone in red.
    pub fn dot(&self, zone: &str) -> String {
        let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let mut s = format!(
            "digraph dependencies {{\n  label={};\n  rankdir=LR;\n",
            q(&format!("firedrill: losing {zone}"))
        );
        let mut workloads = BTreeSet::new();
        for e in &self.edges {
            workloads.insert(e.from.as_str());
        }
        for n in &self.services {
            workloads.extend(n.workloads.iter().map(String::as_str));
        }
        for w in workloads {
            s.push_str(&format!("  {} [shape=box];\n", q(w)));
        }
        for n in &self.services {
            let svc = format!("Service {}", n.name);
            match &n.lost {
                Some(why) => s.push_str(&format!(
                    "  {} [color=red,fontcolor=red,tooltip={}];\n",
                    q(&svc),
                    q(why)
                )),
                None => s.push_str(&format!("  {};\n", q(&svc))),
            }
            for w in &n.workloads {
                s.push_str(&format!(
                    "  {} -> {} [style=dotted,arrowhead=none];\n",
                    q(&svc),
                    q(w)
                ));
            }
        }
        for e in &self.edges {
            let style = if e.strong { "" } else { ",style=dashed" };
            s.push_str(&format!(
                "  {} -> {} [label={}{style}];\n",
                q(&e.from),
                q(&format!("Service {}", e.to)),
                q(&e.via)
            ));
        }
        s.push_str("}\n");
        s
    }

    /// One line per edge, for the plan table.
    pub fn lines(&self) -> Vec<String> {
        self.edges
            .iter()
            .map(|e| {
                let lost = self
                    .services
                    .iter()
                    .find(|n| n.name == e.to)
                    .and_then(|n| n.lost.as_deref());
                format!(
                    "{} -> Service {} ({} {}){}{}",
                    e.from,
                    e.to,
                    e.via,
                    e.host,
                    if e.strong {
                        ""
                    } else {
                        " [named only in prose]"
                    },
                    lost.map(|l| format!(": LOST, {l}")).unwrap_or_default()
                )
            })
            .collect()
    }
}

/// What the graph does to one SLO.
#[derive(Clone, Debug, PartialEq)]
pub enum Cascade {
    /// A Service it calls (through any number of hops) goes dark: the path,
    /// and the Services along it (`namespace/name`, first hop first, the
    /// lost one last).
    Fails(String, Vec<String>),
    /// It names a lost Service only in prose.
    AtRisk(String),
}

/// Builds the graph and answers, per SLO, whether a lost Service takes it
/// down.
pub struct Cascades<'a> {
    pub graph: Graph,
    callers: &'a [Caller],
}

impl<'a> Cascades<'a> {
    /// `zone_nodes`: the zone's node names; `unplaceable`: killed pod (key)
    /// → why its replacement fits nowhere.
    pub fn build(
        req: &Request,
        snap: &'a Snapshot,
        zone_nodes: &BTreeSet<&str>,
        unplaceable: &HashMap<String, String>,
        deps: &DependenciesSpec,
    ) -> Self {
        let d = &snap.discovery;
        let by_name: BTreeMap<(&str, &str), &ServiceInfo> = d
            .services
            .iter()
            .map(|s| ((s.namespace.as_str(), s.name.as_str()), s))
            .collect();
        let mut edges = BTreeSet::new();
        for c in &d.callers {
            for r in &c.refs {
                let Some((ns, name)) = service_named(&r.host, r.qualified, &c.namespace) else {
                    continue;
                };
                let Some(svc) = by_name.get(&(ns.as_str(), name.as_str())) else {
                    continue;
                };
                // An ExternalName naming a Service of the cluster is a call
                // to that Service; one naming a host outside loses nothing.
                let (to, host) = match svc.external_name.as_deref() {
                    None => (format!("{ns}/{name}"), r.host.clone()),
                    Some(ext) => match super::collect::service_of_host(ext)
                        .filter(|k| by_name.contains_key(&(k.0.as_str(), k.1.as_str())))
                    {
                        Some((tns, tname)) => (
                            format!("{tns}/{tname}"),
                            format!("{} (ExternalName {ns}/{name})", r.host),
                        ),
                        None => continue,
                    },
                };
                edges.insert(Edge {
                    from: c.workload.clone(),
                    to,
                    host,
                    via: r.via.clone(),
                    strong: r.strong,
                });
            }
        }
        let matches = |rule: &DependencyEdge, e: &Edge| {
            let short = e.from.split_once(' ').map(|(_, n)| n).unwrap_or(&e.from);
            (rule.from == "*" || rule.from == short || rule.from == e.from)
                && (rule.to == "*" || rule.to == e.to)
        };
        edges.retain(|e| !deps.drop.iter().any(|rule| matches(rule, e)));
        for rule in &deps.add {
            for c in d
                .callers
                .iter()
                .filter(|c| c.short_name() == rule.from || c.workload == rule.from)
            {
                edges.insert(Edge {
                    from: c.workload.clone(),
                    to: rule.to.clone(),
                    host: rule.to.clone(),
                    via: "spec.dependencies".into(),
                    strong: true,
                });
            }
        }
        let named: BTreeSet<&str> = edges.iter().map(|e| e.to.as_str()).collect();
        let mut services = vec![];
        for name in named {
            let Some((ns, n)) = name.split_once('/') else {
                continue;
            };
            let Some(svc) = by_name.get(&(ns, n)) else {
                services.push(ServiceNode {
                    name: name.to_string(),
                    workloads: vec![],
                    ready_outside: 0,
                    lost: None,
                });
                continue;
            };
            services.push(service_node(req, snap, svc, zone_nodes, unplaceable));
        }
        Cascades {
            graph: Graph {
                services,
                edges: edges.into_iter().collect(),
            },
            callers: &d.callers,
        }
    }

    /// Whether a lost Service takes down what `t`'s backing pods serve.
    pub fn of(&self, t: &SloTarget) -> Option<Cascade> {
        let backing = t.backing.as_ref()?;
        let workloads = self.workloads_of(backing);
        let mut seen = BTreeSet::new();
        let mut weak = None;
        for w in &workloads {
            match self.walk(w, &mut seen, 0) {
                Some(f @ Cascade::Fails(..)) => return Some(f),
                Some(c) => weak = weak.or(Some(c)),
                None => {}
            }
        }
        weak
    }

    fn workloads_of(&self, t: &Target) -> Vec<String> {
        let mut out: Vec<String> = self
            .callers
            .iter()
            .filter(|c| c.namespace == t.namespace && t.selector.matches(&c.labels))
            .map(|c| c.workload.clone())
            .collect();
        out.dedup();
        out
    }

    /// The first lost Service reached from `workload`, as the path to it.
    fn walk(&self, workload: &str, seen: &mut BTreeSet<String>, depth: usize) -> Option<Cascade> {
        if depth > 8 || !seen.insert(workload.to_string()) {
            return None;
        }
        let mut weak = None;
        for e in self.graph.edges.iter().filter(|e| e.from == workload) {
            let Some(node) = self.graph.services.iter().find(|n| n.name == e.to) else {
                continue;
            };
            let step = format!("{} ({} of {})", e.host, e.via, e.from);
            let found = match &node.lost {
                Some(why) => Some(Cascade::Fails(format!("{step}: {why}"), vec![e.to.clone()])),
                // A failing path through any of its workloads, before a
                // weak one through an earlier workload.
                None => {
                    let mut weak = None;
                    let mut fails = None;
                    for w in &node.workloads {
                        match self.walk(w, seen, depth + 1) {
                            Some(Cascade::Fails(rest, mut via)) => {
                                via.insert(0, e.to.clone());
                                fails = Some(Cascade::Fails(format!("{step} -> {rest}"), via));
                                break;
                            }
                            other => weak = weak.or(other),
                        }
                    }
                    fails.or(weak)
                }
            };
            match (found, e.strong) {
                (Some(f @ Cascade::Fails(..)), true) => return Some(f),
                (Some(Cascade::Fails(p, _) | Cascade::AtRisk(p)), _) => {
                    weak = weak.or(Some(Cascade::AtRisk(p)))
                }
                (None, _) => {}
            }
        }
        weak
    }
}

/// What the zone's loss leaves of one Service: its ready pods outside the
/// zone (and the zone's pods the drill spares), and whether the killed
/// ones' replacements can start.
fn service_node(
    req: &Request,
    snap: &Snapshot,
    svc: &ServiceInfo,
    zone_nodes: &BTreeSet<&str>,
    unplaceable: &HashMap<String, String>,
) -> ServiceNode {
    let name = format!("{}/{}", svc.namespace, svc.name);
    let Some(sel) = &svc.selector else {
        return ServiceNode {
            name,
            workloads: vec![],
            ready_outside: 0,
            lost: None,
        };
    };
    let ready_outside: i32 = snap
        .discovery
        .ready_outside
        .iter()
        .filter(|((ns, labels), _)| *ns == svc.namespace && sel.matches(labels))
        .map(|(_, n)| *n)
        .sum();
    let zone_pods: Vec<&PodInfo> = snap
        .pods
        .iter()
        .filter(|p| zone_nodes.contains(p.node.as_str()))
        .filter(|p| p.namespace == svc.namespace && sel.matches(&p.labels))
        .filter(|p| !p.finished && !p.terminating)
        .collect();
    let spared = zone_pods
        .iter()
        .filter(|p| p.ready && !req.affects(p))
        .count() as i32;
    let killed: Vec<&&PodInfo> = zone_pods.iter().filter(|p| req.affects(p)).collect();
    let stuck: Vec<&str> = killed
        .iter()
        .filter_map(|p| unplaceable.get(&p.key()).map(String::as_str))
        .collect();
    let workloads = snap
        .discovery
        .callers
        .iter()
        .filter(|c| c.namespace == svc.namespace && sel.matches(&c.labels))
        .map(|c| c.workload.clone())
        .collect();
    let serving = ready_outside + spared;
    let lost = (serving == 0 && !killed.is_empty() && stuck.len() == killed.len()).then(|| {
        let mut why = format!("Service {name} keeps 0 ready pods outside {}", req.zone);
        let mut rules: Vec<&str> = stuck.clone();
        rules.sort();
        rules.dedup();
        if !rules.is_empty() && !req.power_loss {
            why.push_str(&format!(
                ", and its {} replacements cannot be scheduled ({})",
                killed.len(),
                rules.join("; ")
            ));
        }
        why
    });
    ServiceNode {
        name,
        workloads,
        ready_outside: serving,
        lost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::collect::references;
    use k8s_openapi::api::core::v1::PodSpec;

    fn hosts(text: &str) -> Vec<(String, bool)> {
        hosts_in(text, "env X", true)
            .into_iter()
            .map(|r| (r.host, r.qualified))
            .collect()
    }

    #[test]
    fn host_names_are_found_with_or_without_scheme_and_port() {
        assert_eq!(
            hosts("http://tokens.fleet.svc:8080/v1?a=b"),
            [("tokens.fleet.svc".into(), true)]
        );
        assert_eq!(
            hosts("tokens.fleet.svc.cluster.local"),
            [("tokens.fleet.svc.cluster.local".into(), false)]
        );
        assert_eq!(hosts("tokens:8080"), [("tokens".into(), true)]);
        assert_eq!(
            hosts("--upstream=grpc://tokens,cache.fleet:6379"),
            [("tokens".into(), true), ("cache.fleet".into(), true)]
        );
        // A bare word is no host; neither is a key: value pair.
        assert!(hosts("tokens").is_empty());
        assert!(hosts("mode: fast").is_empty());
    }

    #[test]
    fn a_bare_name_is_a_service_only_in_a_url_or_host_port() {
        assert_eq!(
            service_named("tokens", true, "fleet"),
            Some(("fleet".into(), "tokens".into()))
        );
        assert_eq!(service_named("tokens", false, "fleet"), None);
        assert_eq!(
            service_named("tokens.auth", false, "fleet"),
            Some(("auth".into(), "tokens".into()))
        );
        assert_eq!(
            service_named("tokens.auth.svc.cluster.local", true, "fleet"),
            Some(("auth".into(), "tokens".into()))
        );
        assert_eq!(service_named("10.0.0.1", true, "fleet"), None);
        assert_eq!(service_named("Tokens_DB", true, "fleet"), None);
    }

    #[test]
    fn prose_and_notes_name_hosts_only_weakly() {
        assert!(
            env_refs("TOKENS_URL", "http://tokens.fleet.svc")
                .iter()
                .all(|r| r.strong)
        );
        assert!(
            env_refs("MOTD", "ask tokens.fleet.svc")
                .iter()
                .all(|r| !r.strong)
        );
        assert!(
            env_refs("HELP_TEXT", "tokens.fleet.svc")
                .iter()
                .all(|r| !r.strong)
        );
        assert_eq!(env_refs("HELP_TEXT", "tokens.fleet.svc").len(), 1);
    }

    #[test]
    fn a_config_map_is_read_line_by_line_and_by_key() {
        let data = BTreeMap::from([
            (
                "app.yaml".to_string(),
                "upstream: http://tokens.fleet.svc\n# old: http://legacy.fleet.svc\n".to_string(),
            ),
            ("OTHER".to_string(), "cache.fleet:6379".to_string()),
        ]);
        let all = ConfigMapUse {
            name: "cfg".into(),
            key: None,
            via: "volume config".into(),
        };
        let refs = config_map_refs("fleet", "cfg", &data, &all);
        let found: Vec<(&str, bool)> = refs.iter().map(|r| (r.host.as_str(), r.strong)).collect();
        assert_eq!(
            found,
            [
                ("cache.fleet", true),
                ("tokens.fleet.svc", true),
                ("legacy.fleet.svc", false)
            ]
        );
        assert_eq!(
            refs[1].via,
            "ConfigMap fleet/cfg key app.yaml, volume config"
        );
        let one = ConfigMapUse {
            key: Some("OTHER".into()),
            ..all
        };
        assert_eq!(config_map_refs("fleet", "cfg", &data, &one).len(), 1);
    }

    #[test]
    fn a_pod_spec_is_read_for_env_args_command_and_config_maps_never_secrets() {
        let spec: PodSpec = serde_json::from_value(serde_json::json!({
            "containers": [{
                "name": "gw",
                "command": ["/gw", "--tokens=http://tokens.fleet.svc"],
                "args": ["--cache", "cache.fleet:6379"],
                "env": [
                    {"name": "TOKENS_URL", "value": "http://tokens.fleet.svc:8080"},
                    {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "url"}}},
                    {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "s", "key": "db.fleet:5432"}}}
                ],
                "envFrom": [{"configMapRef": {"name": "env"}}, {"secretRef": {"name": "sec"}}]
            }],
            "volumes": [{"name": "config", "configMap": {"name": "files"}}, {"name": "s", "secret": {"secretName": "x"}}]
        }))
        .unwrap();
        let (refs, cms) = references(&spec);
        let found: Vec<(&str, &str)> = refs
            .iter()
            .map(|r| (r.host.as_str(), r.via.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                ("cache.fleet", "args"),
                ("tokens.fleet.svc", "command"),
                ("tokens.fleet.svc", "env TOKENS_URL")
            ]
        );
        let used: Vec<(&str, Option<&str>, &str)> = cms
            .iter()
            .map(|u| (u.name.as_str(), u.key.as_deref(), u.via.as_str()))
            .collect();
        assert_eq!(
            used,
            [
                ("cfg", Some("url"), "env FROM_CM"),
                ("env", None, "envFrom"),
                ("files", None, "volume config")
            ]
        );
    }

    #[test]
    fn a_replica_set_is_named_by_its_deployment() {
        let owner = OwnerKey {
            kind: "ReplicaSet".into(),
            namespace: "fleet".into(),
            name: "gateway-7f9c".into(),
        };
        let labels = BTreeMap::from([("pod-template-hash".to_string(), "7f9c".to_string())]);
        assert_eq!(workload_name(&owner, &labels), "Deployment fleet/gateway");
        assert_eq!(
            workload_name(&owner, &BTreeMap::new()),
            "ReplicaSet fleet/gateway-7f9c"
        );
    }
}
