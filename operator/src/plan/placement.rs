//! Where the replacements of the zone's pods can go. Pure.
//!
//! A small model of the kube-scheduler's filters, run on the planning
//! snapshot as if the zone were already dark: every in-scope pod on the
//! zone's nodes is gone, and its controller asks for a replacement with the
//! same spec. Replacements are placed one by one on the surviving nodes (the
//! zone's nodes are cordoned and tainted), each placement counting for the
//! next, and a replacement that fits nowhere is reported with the rule that
//! left no node:
//!
//! 1. a volume bound to the zone (zonal or local PersistentVolume);
//! 2. `nodeSelector` / required node affinity;
//! 3. taints the pod does not tolerate;
//! 4. CPU, memory and pod slots of each node (per-pod fit, not a sum);
//! 5. required pod anti-affinity, then required pod affinity;
//! 6. topology spread constraints with `whenUnsatisfiable: DoNotSchedule`,
//!    honouring `maxSkew`, `minDomains`, `matchLabelKeys`,
//!    `nodeAffinityPolicy` and `nodeTaintsPolicy`. With the default
//!    `nodeTaintsPolicy: Ignore`, the dark zone still counts as a domain,
//!    with no pods in it: that is why spread workloads lose capacity when a
//!    zone burns.
//!
//! Not modelled: other pods' anti-affinity towards the replacement,
//! `namespaceSelector`s other than "every namespace", preemption, scoring.

use super::{NodeInfo, PodInfo, PodTermInfo, Request, Snapshot, SpreadInfo, TaintInfo};
use kube::core::SelectorExt;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A workload whose replacements cannot all be scheduled outside the zone.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Unplaceable {
    /// `Deployment shop/frontend`
    pub workload: String,
    /// Its pods killed in the zone.
    pub lost: i32,
    /// How many of their replacements fit nowhere.
    pub unplaceable: i32,
    /// The scheduling rule that leaves no node, in words.
    pub rule: String,
}

/// The taint the experiment puts on the dark zone, as filters see it.
const DARK: &str = "chaos.firedrill.dev/zone-down";

/// The controller kinds that replace a deleted pod.
fn replaced(kind: &str) -> bool {
    matches!(
        kind,
        "ReplicaSet" | "StatefulSet" | "ReplicationController" | "Job"
    )
}

/// What a node offers while the simulation runs.
struct Slot<'a> {
    node: &'a NodeInfo,
    dark: bool,
    /// The node's taints as a pod meets them after the fault.
    taints: Vec<TaintInfo>,
    free_cpu: Option<i64>,
    free_mem: Option<i64>,
    free_pods: Option<i64>,
}

impl<'a> Slot<'a> {
    fn new(node: &'a NodeInfo, dark: bool) -> Self {
        Slot {
            node,
            dark,
            taints: Slot::taints(node, dark),
            free_cpu: node
                .requested
                .map(|r| node.cpu_millis.saturating_sub(r.cpu_millis)),
            free_mem: node
                .requested
                .map(|r| node.memory_bytes.saturating_sub(r.memory_bytes)),
            free_pods: node
                .requested
                .filter(|_| node.max_pods > 0)
                .map(|r| node.max_pods.saturating_sub(r.pods)),
        }
    }

    /// Place `pod` here: what it requests is no longer free.
    fn take(&mut self, pod: &PodInfo) {
        self.free_cpu = self.free_cpu.map(|c| c.saturating_sub(pod.cpu_millis));
        self.free_mem = self.free_mem.map(|m| m.saturating_sub(pod.memory_bytes));
        self.free_pods = self.free_pods.map(|n| n - 1);
    }

    fn taints(node: &NodeInfo, dark: bool) -> Vec<TaintInfo> {
        let mut t = node.taints.clone();
        if dark {
            t.push(TaintInfo {
                key: DARK.into(),
                value: String::new(),
                effect: "NoSchedule".into(),
            });
            t.push(TaintInfo {
                key: "node.kubernetes.io/unschedulable".into(),
                value: String::new(),
                effect: "NoSchedule".into(),
            });
        }
        t
    }
}

fn tolerated(pod: &PodInfo, taints: &[TaintInfo]) -> bool {
    taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|t| pod.tolerations.iter().any(|tol| tol.tolerates(t)))
}

fn node_affinity_ok(pod: &PodInfo, node: &NodeInfo) -> bool {
    pod.node_selector
        .iter()
        .all(|(k, v)| node.labels.get(k) == Some(v))
        && (pod.required_terms.is_empty()
            || pod.required_terms.iter().any(|term| {
                term.iter()
                    .all(|r| super::requirement_matches(r, &node.labels))
            }))
}

fn term_covers(term: &PodTermInfo, owner_ns: &str, peer: &PodInfo) -> bool {
    let ns_ok = term.all_namespaces
        || if term.namespaces.is_empty() {
            peer.namespace == owner_ns
        } else {
            term.namespaces.contains(&peer.namespace)
        };
    ns_ok && term.selector.matches(&peer.labels)
}

/// The pods running during the simulation, each on its slot, and for every
/// selector a filter has asked about (a spread constraint's, a pod
/// (anti-)affinity term's) how many of them it matches on each slot. A
/// selector's counts are computed once, on first use, and kept up to date as
/// replacements are placed, so each placement costs a pass over the nodes,
/// not over every pod of the cluster.
struct Running<'a> {
    pods: Vec<(&'a PodInfo, usize)>,
    slots: usize,
    counted: HashMap<String, Counted<'a>>,
}

/// Running pods one selector matches, per slot.
struct Counted<'a> {
    covers: Box<dyn Fn(&PodInfo) -> bool + 'a>,
    per_slot: Vec<u32>,
}

impl<'a> Running<'a> {
    /// The pods that keep running once `killed` are gone: peers of the
    /// constraints, not leaving, on a node the snapshot knows.
    fn after(snap: &'a Snapshot, slots: &[Slot], killed: &[&PodInfo]) -> Self {
        let slot_of: HashMap<&str, usize> = slots
            .iter()
            .enumerate()
            .map(|(i, s)| (s.node.name.as_str(), i))
            .collect();
        let killed_keys: BTreeSet<String> = killed.iter().map(|p| p.key()).collect();
        Running {
            pods: snap
                .peers
                .iter()
                .filter(|p| !p.node.is_empty() && !p.finished && !p.terminating)
                .filter(|p| !killed_keys.contains(&p.key()))
                .filter_map(|p| Some((p, *slot_of.get(p.node.as_str())?)))
                .collect(),
            slots: slots.len(),
            counted: HashMap::new(),
        }
    }

    /// How many running pods `covers` matches on each slot; `key` names the
    /// selector (the same key must always mean the same `covers`).
    fn counts(&mut self, key: String, covers: impl Fn(&PodInfo) -> bool + 'a) -> &[u32] {
        let (pods, slots) = (&self.pods, self.slots);
        &self
            .counted
            .entry(key)
            .or_insert_with(|| {
                let mut per_slot = vec![0; slots];
                for (p, i) in pods {
                    if covers(p) {
                        per_slot[*i] += 1;
                    }
                }
                Counted {
                    covers: Box::new(covers),
                    per_slot,
                }
            })
            .per_slot
    }

    fn push(&mut self, pod: &'a PodInfo, slot: usize) {
        self.pods.push((pod, slot));
        for c in self.counted.values_mut() {
            if (c.covers)(pod) {
                c.per_slot[slot] += 1;
            }
        }
    }
}

/// The value of each topology key on each slot, as small numbers.
#[derive(Default)]
struct Domains {
    by_key: HashMap<String, Domain>,
}

struct Domain {
    /// Per slot: the index of its value in `names`, if it has the key.
    of_slot: Vec<Option<usize>>,
    names: Vec<String>,
}

impl Domain {
    /// Per domain: whether any slot of it has a counted pod.
    fn occupied(&self, per_slot: &[u32]) -> Vec<bool> {
        let mut out = vec![false; self.names.len()];
        for (n, d) in per_slot.iter().zip(&self.of_slot) {
            if let (true, Some(d)) = (*n > 0, d) {
                out[*d] = true;
            }
        }
        out
    }
}

impl Domains {
    fn of(&mut self, key: &str, slots: &[Slot]) -> &Domain {
        self.by_key.entry(key.to_string()).or_insert_with(|| {
            let mut names: Vec<String> = Vec::new();
            let mut index: HashMap<&str, usize> = HashMap::new();
            let of_slot = slots
                .iter()
                .map(|s| {
                    let v = s.node.labels.get(key)?;
                    Some(*index.entry(v.as_str()).or_insert_with(|| {
                        names.push(v.clone());
                        names.len() - 1
                    }))
                })
                .collect();
            Domain { of_slot, names }
        })
    }
}

fn term_key(term: &PodTermInfo, owner_ns: &str) -> String {
    format!(
        "term\0{owner_ns}\0{}\0{}\0{}",
        term.all_namespaces,
        term.namespaces.join(","),
        term.selector
    )
}

/// The outcome of the simulation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Placement {
    pub workloads: Vec<Unplaceable>,
    /// Killed pod (`namespace/name`) → the rule that leaves its replacement nowhere to go.
    pub pods: HashMap<String, String>,
}

/// Simulate the replacements of `killed` (in-scope pods on the zone's nodes).
pub fn place(
    req: &Request,
    snap: &Snapshot,
    zone_nodes: &BTreeSet<&str>,
    killed: &[&PodInfo],
    pinned: &HashMap<String, String>,
) -> Placement {
    let mut slots: Vec<Slot> = snap
        .nodes
        .iter()
        .map(|n| Slot::new(n, zone_nodes.contains(n.name.as_str())))
        .collect();
    let mut running = Running::after(snap, &slots, killed);
    let mut domains = Domains::default();
    let mut out = Placement::default();
    for (workload, pods) in by_workload(snap, killed) {
        let mut unplaceable = 0;
        let mut rule: Option<String> = None;
        for pod in &pods {
            let placed = match not_replaced(req, pod, pinned) {
                Some(why) => Err(why),
                None => choose(req, pod, &slots, &mut running, &mut domains),
            };
            match placed {
                Ok(i) => {
                    slots[i].take(pod);
                    running.push(pod, i);
                }
                Err(why) => {
                    unplaceable += 1;
                    out.pods.insert(pod.key(), why.clone());
                    rule.get_or_insert(why);
                }
            }
        }
        if unplaceable > 0 {
            out.workloads.push(Unplaceable {
                workload,
                lost: pods.len() as i32,
                unplaceable,
                rule: rule.unwrap_or_default(),
            });
        }
    }
    out
}

/// The killed pods whose controllers replace them, by the workload people
/// know (`Deployment shop/frontend`), in a stable order.
fn by_workload<'a>(snap: &Snapshot, killed: &[&'a PodInfo]) -> BTreeMap<String, Vec<&'a PodInfo>> {
    let mut by_owner: BTreeMap<String, Vec<&PodInfo>> = BTreeMap::new();
    for p in killed {
        let Some(o) = &p.owner else { continue };
        if !replaced(&o.kind) {
            continue;
        }
        let display = match snap.workloads.get(o) {
            Some(w) if o.kind == "ReplicaSet" && w.display != o.name => {
                format!("Deployment {}/{}", o.namespace, w.display)
            }
            _ => format!("{} {}/{}", o.kind, o.namespace, o.name),
        };
        by_owner.entry(display).or_default().push(p);
    }
    by_owner
}

/// Why `pod` gets no replacement to place, before any node is looked at: a
/// power loss deletes nothing, and a pinned pod can go nowhere else.
fn not_replaced(req: &Request, pod: &PodInfo, pinned: &HashMap<String, String>) -> Option<String> {
    if req.power_loss {
        // Nothing is deleted: a StatefulSet never replaces a pod on an
        // unreachable node; other controllers only once it is evicted.
        return Some(
            if pod.owner.as_ref().is_some_and(|o| o.kind == "StatefulSet") {
                format!(
                    "a StatefulSet pod on an unreachable node is not replaced until {} has power again",
                    req.zone
                )
            } else {
                "not replaced until the pod is evicted from the unreachable node (its tolerationSeconds for node.kubernetes.io/unreachable, 300s by default)".to_string()
            },
        );
    }
    pinned.get(&pod.key()).cloned()
}

/// The nodes a replacement may still go to, narrowed filter by filter.
struct Candidates(Vec<usize>);

impl Candidates {
    /// Keep the nodes `keep` accepts; when none is left, `what` is the rule.
    fn narrow(&mut self, what: String, keep: impl Fn(usize) -> bool) -> Result<(), String> {
        self.0.retain(|&i| keep(i));
        if self.0.is_empty() { Err(what) } else { Ok(()) }
    }
}

/// The node a replacement of `pod` goes to, or the rule that leaves none.
fn choose<'a>(
    req: &Request,
    pod: &'a PodInfo,
    slots: &[Slot],
    running: &mut Running<'a>,
    domains: &mut Domains,
) -> Result<usize, String> {
    let mut candidates = Candidates(
        (0..slots.len())
            .filter(|&i| !slots[i].dark && !slots[i].node.unschedulable && slots[i].node.ready)
            .collect(),
    );
    if candidates.0.is_empty() {
        return Err(format!("no schedulable node outside {}", req.zone));
    }
    node_filters(&mut candidates, req, pod, slots)?;
    pod_term_filters(&mut candidates, req, pod, slots, running, domains)?;
    let ns = pod.namespace.as_str();
    for c in &pod.spread {
        let key = format!("spread\0{ns}\0{}", c.selector);
        let per_slot = running.counts(key, move |p| {
            p.namespace == ns && c.selector.matches(&p.labels)
        });
        let skew = spread_check(pod, c, slots, per_slot, domains.of(&c.topology_key, slots));
        candidates.narrow(skew.1.clone(), &skew.0)?;
    }
    // Of the nodes left, the one with the most CPU free (spreads load).
    Ok(*candidates
        .0
        .iter()
        .max_by_key(|&&i| (slots[i].free_cpu.unwrap_or(0), std::cmp::Reverse(i)))
        .unwrap())
}

/// The filters on a node alone: node affinity, taints, and room for the pod.
fn node_filters(
    candidates: &mut Candidates,
    req: &Request,
    pod: &PodInfo,
    slots: &[Slot],
) -> Result<(), String> {
    let how = if pod.required_terms.is_empty() {
        "nodeSelector"
    } else {
        "required node affinity"
    };
    candidates.narrow(format!("{how} matches no node outside {}", req.zone), |i| {
        node_affinity_ok(pod, slots[i].node)
    })?;
    candidates.narrow(
        "taints on every remaining node it may use, without tolerations".into(),
        |i| tolerated(pod, &slots[i].taints),
    )?;
    candidates.narrow(
        format!(
            "no single node outside {} has {}m CPU and {} MiB free for it",
            req.zone,
            pod.cpu_millis,
            pod.memory_bytes >> 20
        ),
        |i| {
            let s = &slots[i];
            s.free_cpu.is_none_or(|c| c >= pod.cpu_millis)
                && s.free_mem.is_none_or(|m| m >= pod.memory_bytes)
                && s.free_pods.is_none_or(|n| n >= 1)
        },
    )
}

/// Required pod anti-affinity, then required pod affinity, against the pods
/// running (and the replacements placed so far).
fn pod_term_filters<'a>(
    candidates: &mut Candidates,
    req: &Request,
    pod: &'a PodInfo,
    slots: &[Slot],
    running: &mut Running<'a>,
    domains: &mut Domains,
) -> Result<(), String> {
    let ns = pod.namespace.as_str();
    for term in &pod.anti_affinity {
        let per_slot = running.counts(term_key(term, ns), move |p| term_covers(term, ns, p));
        let domain = domains.of(&term.topology_key, slots);
        let taken = domain.occupied(per_slot);
        candidates.narrow(
            format!(
                "required pod anti-affinity ({} {}): every remaining {} already runs a matching pod",
                term.topology_key, term.selector, term.topology_key
            ),
            |i| domain.of_slot[i].is_none_or(|d| !taken[d]),
        )?;
    }
    for term in &pod.affinity {
        let per_slot = running.counts(term_key(term, ns), move |p| term_covers(term, ns, p));
        if per_slot.iter().all(|n| *n == 0) && term_covers(term, ns, pod) {
            continue; // the first pod of a group that is affine to itself
        }
        let domain = domains.of(&term.topology_key, slots);
        let wanted = domain.occupied(per_slot);
        candidates.narrow(
            format!(
                "required pod affinity ({} {}): no pod it must run beside is left outside {}",
                term.topology_key, term.selector, req.zone
            ),
            |i| domain.of_slot[i].is_some_and(|d| wanted[d]),
        )?;
    }
    Ok(())
}

/// The spread filter for one constraint: a predicate on candidate nodes and
/// the reason it gives when no node passes. `per_slot`: the running pods the
/// constraint's selector matches, per slot.
fn spread_check<'a>(
    pod: &'a PodInfo,
    c: &'a SpreadInfo,
    slots: &'a [Slot],
    per_slot: &[u32],
    domain: &'a Domain,
) -> (Box<dyn Fn(usize) -> bool + 'a>, String) {
    let eligible = |i: usize| {
        let s = &slots[i];
        domain.of_slot[i].is_some()
            && (!c.honor_node_affinity || node_affinity_ok(pod, s.node))
            && (!c.honor_taints || tolerated(pod, &s.taints))
    };
    // Domain index → matching pods, for the domains that count.
    let mut by_domain: Vec<Option<i64>> = vec![None; domain.names.len()];
    for i in (0..slots.len()).filter(|&i| eligible(i)) {
        let d = domain.of_slot[i].expect("eligible slots have the key");
        *by_domain[d].get_or_insert(0) += per_slot[i] as i64;
    }
    let counts: BTreeMap<&str, i64> = by_domain
        .iter()
        .enumerate()
        .filter_map(|(d, n)| Some((domain.names[d].as_str(), (*n)?)))
        .collect();
    let mut min = counts.values().copied().min().unwrap_or(0);
    if c.min_domains.is_some_and(|m| (counts.len() as i32) < m) {
        min = 0;
    }
    let self_match = c.selector.matches(&pod.labels) as i64;
    let empty: Vec<&str> = counts
        .iter()
        .filter(|(_, n)| **n == min)
        .map(|(d, _)| *d)
        .collect();
    let dark_domains: BTreeSet<&str> = (0..slots.len())
        .filter(|&i| slots[i].dark)
        .filter_map(|i| Some(domain.names[domain.of_slot[i]?].as_str()))
        .collect();
    let mut why = format!(
        "topology spread constraint ({}, maxSkew {}, DoNotSchedule): ",
        c.topology_key, c.max_skew
    );
    let dark_min: Vec<&str> = empty
        .iter()
        .copied()
        .filter(|d| dark_domains.contains(d))
        .collect();
    if !dark_min.is_empty() && !c.honor_taints {
        why.push_str(&format!(
            "{} still counts as a domain with {min} matching pods (nodeTaintsPolicy Ignore), so every other domain is already {} over",
            dark_min.join(", "),
            c.max_skew
        ));
    } else {
        why.push_str(&format!(
            "placing it anywhere would leave a skew above {} (least-filled domain: {} with {min})",
            c.max_skew,
            empty.join(", ")
        ));
    }
    let max_skew = c.max_skew as i64;
    let ok = move |i: usize| {
        let Some(d) = domain.of_slot[i] else {
            return false;
        };
        by_domain[d].unwrap_or(0) + self_match - min <= max_skew
    };
    (Box::new(ok), why)
}
