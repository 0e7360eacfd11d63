//! Planning: what losing a zone would do, computed from a snapshot of the
//! cluster. Everything in this module is pure; [`collect`] is the I/O edge
//! that builds the snapshot.
//!
//! The planner answers, before anything is touched:
//! - which nodes are in the zone, and which pods on them are in scope;
//! - which workloads lose every ready replica;
//! - which pods are pinned to the zone and cannot be rescheduled elsewhere
//!   (required node affinity or nodeSelector on the zone or its hostnames,
//!   PVCs bound to PVs that only exist in the zone);
//! - whether the surviving zones have the CPU and memory for the displaced pods;
//! - which PodDisruptionBudgets a real fire would violate (a fire ignores them);
//! - and whether a guard refuses the experiment.

pub mod cascade;
pub mod collect;
pub mod lite;
pub mod placement;
mod primaries;

use crate::api::{
    DataCenterFailureSpec, FaultMode, GuardSpec, MAX_LISTED, PlanSummary, SYSTEM_NAMESPACES,
    SloPredictionStatus, TargetSpec, Verdict,
};
use kube::core::{Expression, Selector, SelectorExt};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One node, as much of it as planning needs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub unschedulable: bool,
    pub ready: bool,
    /// Allocatable CPU and memory.
    pub cpu_millis: i64,
    pub memory_bytes: i64,
    /// Allocatable pods (0: not known).
    pub max_pods: i64,
    pub taints: Vec<TaintInfo>,
    /// What the pods running on it request, when capacity was measured.
    pub requested: Option<Requested>,
    /// Its InternalIP addresses.
    pub addresses: Vec<String>,
}

/// A node taint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaintInfo {
    pub key: String,
    pub value: String,
    pub effect: String,
}

/// Requests of the pods on one node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Requested {
    pub cpu_millis: i64,
    pub memory_bytes: i64,
    pub pods: i64,
}

/// A pod toleration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TolerationInfo {
    pub key: String,
    /// `Exists` or `Equal`.
    pub operator: String,
    pub value: String,
    /// Empty: every effect.
    pub effect: String,
}

impl TolerationInfo {
    pub fn tolerates(&self, t: &TaintInfo) -> bool {
        (self.effect.is_empty() || self.effect == t.effect)
            && if self.key.is_empty() {
                self.operator == "Exists"
            } else {
                self.key == t.key && (self.operator == "Exists" || self.value == t.value)
            }
    }
}

/// A topology spread constraint with `whenUnsatisfiable: DoNotSchedule`.
#[derive(Clone, Debug, PartialEq)]
pub struct SpreadInfo {
    pub max_skew: i32,
    pub topology_key: String,
    /// The constraint's selector, with `matchLabelKeys` already applied.
    pub selector: Selector,
    pub min_domains: Option<i32>,
    /// `nodeAffinityPolicy: Honor` (the default): only nodes the pod may
    /// run on count as domains.
    pub honor_node_affinity: bool,
    /// `nodeTaintsPolicy: Honor` (the default is Ignore): tainted nodes the
    /// pod does not tolerate do not count as domains.
    pub honor_taints: bool,
}

/// A required pod (anti-)affinity term.
#[derive(Clone, Debug, PartialEq)]
pub struct PodTermInfo {
    pub selector: Selector,
    /// Namespaces the term looks in (the pod's own when the term names none).
    pub namespaces: Vec<String>,
    /// The term looks in every namespace (`namespaceSelector: {}`).
    pub all_namespaces: bool,
    pub topology_key: String,
}

/// A node-affinity requirement (`matchExpressions` of a node selector term).
#[derive(Clone, Debug, PartialEq)]
pub struct Requirement {
    pub key: String,
    pub operator: String,
    pub values: Vec<String>,
}

/// The owner a pod belongs to, as Kubernetes records it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerKey {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

/// One pod on a node of the zone.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub node: String,
    /// Shared: the replicas of a workload carry the same labels, and the
    /// planner holds one copy of each set (see [`LabelSets`]).
    pub labels: Labels,
    pub owner: Option<OwnerKey>,
    /// A static pod's mirror: the API server cannot delete the real one.
    pub mirror: bool,
    pub ready: bool,
    /// Succeeded or Failed: nothing left to kill.
    pub finished: bool,
    pub node_selector: BTreeMap<String, String>,
    /// Required node affinity: any one term must match (terms are ORed, requirements ANDed).
    pub required_terms: Vec<Vec<Requirement>>,
    /// PVC names in the pod's namespace.
    pub pvcs: Vec<String>,
    pub cpu_millis: i64,
    pub memory_bytes: i64,
    pub tolerations: Vec<TolerationInfo>,
    /// Topology spread constraints with `whenUnsatisfiable: DoNotSchedule`.
    pub spread: Vec<SpreadInfo>,
    pub affinity: Vec<PodTermInfo>,
    pub anti_affinity: Vec<PodTermInfo>,
    /// Being deleted already.
    pub terminating: bool,
    /// Hosts its configuration names; moved into [`cascade::Discovery`]
    /// as the pods are listed, so no pod keeps them.
    pub refs: Vec<cascade::Reference>,
    /// ConfigMaps it mounts or reads its environment from; moved likewise.
    pub config_maps: Vec<cascade::ConfigMapUse>,
}

/// A pod's labels, shared between pods that carry the same set.
pub type Labels = std::sync::Arc<BTreeMap<String, String>>;

/// One copy of each distinct label set: at 30,000 pods the replicas of 30
/// Deployments carry 30 sets, and a set held per pod would weigh more than
/// the rest of the pod's record.
#[derive(Default)]
pub struct LabelSets(std::collections::HashSet<Labels>);

impl LabelSets {
    /// The shared copy of `labels`.
    pub fn share(&mut self, labels: &Labels) -> Labels {
        if let Some(known) = self.0.get(labels) {
            return known.clone();
        }
        self.0.insert(labels.clone());
        labels.clone()
    }
}

impl PodInfo {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// What a workload controller reports about itself.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadInfo {
    /// Ready replicas across the whole cluster.
    pub ready: i32,
    /// The name people know it by: a ReplicaSet's Deployment, for example.
    pub display: String,
}

/// A PodDisruptionBudget.
#[derive(Clone, Debug, PartialEq)]
pub struct PdbInfo {
    pub namespace: String,
    pub name: String,
    pub selector: Selector,
    pub disruptions_allowed: i32,
}

/// Free allocatable capacity on the schedulable nodes outside the zone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Capacity {
    pub cpu_millis: i64,
    pub memory_bytes: i64,
}

/// Everything the planner looks at. `pods` holds only pods on the zone's nodes.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub nodes: Vec<NodeInfo>,
    pub pods: Vec<PodInfo>,
    /// Keyed by the pod's direct owner.
    pub workloads: HashMap<OwnerKey, WorkloadInfo>,
    /// `namespace/pvc` → the zones (values of the topology key) or hostnames
    /// its bound PV is restricted to. Absent: not restricted.
    pub pvc_topology: HashMap<String, VolumeTopology>,
    pub pdbs: Vec<PdbInfo>,
    /// Free capacity outside the zone, if it was measured.
    pub surviving_free: Option<Capacity>,
    /// DataCenterFailures other than this one that are active (not terminal).
    pub active_experiments: Vec<String>,
    /// Nodes the operator's own pods run on, when it runs in the cluster.
    pub operator_nodes: Option<Vec<String>>,
    /// The node the operator's leader runs on, when it runs in the cluster.
    pub leader_node: Option<String>,
    /// The nodes the API server runs on, as far as the cluster tells
    /// ([`api_server_nodes`]; read for a PowerLoss only).
    pub api_server_nodes: Vec<String>,
    /// Pods anywhere in the cluster that the zone's pods' spread constraints
    /// and pod (anti-)affinity terms count, and the pods behind the SLOs'
    /// probes, in a slim form (no scheduling rules of their own).
    pub peers: Vec<PodInfo>,
    /// What each SLO's probe depends on, where the cluster tells.
    pub slo_targets: Vec<SloTarget>,
    /// What the workloads' configuration names, the Services of the
    /// cluster, and their ready pods outside the zone.
    pub discovery: cascade::Discovery,
}

/// Pods known by a selector: a Service's, or a workload's.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// `Service auth/login`
    pub what: String,
    pub namespace: String,
    pub selector: Selector,
}

/// What an SLO's probe depends on.
#[derive(Clone, Debug, PartialEq)]
pub struct SloTarget {
    pub slo: String,
    /// The pods that serve what the probe checks.
    pub backing: Option<Target>,
    /// The pods the probe itself needs (the Prometheus server it queries).
    pub prober: Option<Target>,
    /// How many backing pods must be ready for the probe to pass.
    pub need: i32,
}

/// What the plan expects of one SLO.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SloPrediction {
    pub slo: String,
    /// None: the plan cannot tell.
    pub verdict: Option<Verdict>,
    pub why: String,
    /// What serves it (`Service auth/login`).
    pub target: Option<String>,
    /// The rule that keeps it from failing over, in short.
    pub rule: Option<String>,
    /// For a predicted cascade, the Services along its path
    /// (`namespace/name`, the lost one last).
    pub via: Vec<String>,
}

/// Where a PersistentVolume can be used.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VolumeTopology {
    pub zones: Vec<String>,
    pub hostnames: Vec<String>,
}

/// What the experiment asks for, in the planner's terms.
#[derive(Clone, Debug)]
pub struct Request {
    pub zone: String,
    pub topology_key: String,
    pub scope: Scope,
    pub guards: GuardSpec,
    /// PowerLoss mode: nothing is deleted through the API; the nodes go
    /// unreachable and Kubernetes' failure handling runs.
    pub power_loss: bool,
    /// Corrections to the discovered Service dependencies.
    pub dependencies: crate::api::DependenciesSpec,
    /// Labels (`key`, `value`) that mark a store's primary, beside the known ones.
    pub primary_labels: Vec<(String, String)>,
}

impl Request {
    /// What an experiment's spec asks for, for the pods `scope` selects (the
    /// spec's target, parsed; the command line may narrow it).
    pub fn from_spec(spec: &DataCenterFailureSpec, scope: Scope) -> Self {
        Request {
            zone: spec.zone.clone(),
            topology_key: spec.topology_key.clone(),
            scope,
            guards: spec.guards.clone(),
            power_loss: spec.fault.mode == FaultMode::PowerLoss,
            dependencies: spec.dependencies.clone(),
            primary_labels: spec
                .primary_labels
                .iter()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// Why a pod on the zone's nodes is left alone, if it is. A power loss
    /// spares nothing: every pod on a dark node is cut off, the operator's
    /// and the system namespaces' too.
    pub fn spares(&self, pod: &PodInfo) -> Option<&'static str> {
        if pod.finished {
            return Some("finished");
        }
        if self.power_loss {
            return None;
        }
        self.scope.spares(pod)
    }

    pub fn affects(&self, pod: &PodInfo) -> bool {
        self.spares(pod).is_none()
    }
}

/// Which pods are in scope.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    pub namespaces: BTreeSet<String>,
    pub exclude_namespaces: BTreeSet<String>,
    pub selector: Option<Selector>,
    pub include_daemon_sets: bool,
    pub include_system_namespaces: bool,
    /// The operator's namespace: never killed.
    pub operator_namespace: Option<String>,
}

impl Scope {
    pub fn from_target(
        target: &TargetSpec,
        operator_namespace: Option<String>,
    ) -> Result<Self, String> {
        let selector = match &target.label_selector {
            Some(ls) => Some(
                Selector::try_from(ls.clone())
                    .map_err(|e| format!("spec.target.labelSelector: {e}"))?,
            ),
            None => None,
        };
        Ok(Scope {
            namespaces: target.namespaces.iter().cloned().collect(),
            exclude_namespaces: target.exclude_namespaces.iter().cloned().collect(),
            selector,
            include_daemon_sets: target.include_daemon_sets,
            include_system_namespaces: target.include_system_namespaces,
            operator_namespace,
        })
    }

    /// Why a pod is spared, or `None` when it is in scope.
    pub fn spares(&self, pod: &PodInfo) -> Option<&'static str> {
        if pod.mirror {
            return Some("static pod");
        }
        if self.operator_namespace.as_deref() == Some(pod.namespace.as_str()) {
            return Some("the operator's namespace");
        }
        if !self.include_system_namespaces && SYSTEM_NAMESPACES.contains(&pod.namespace.as_str()) {
            return Some("system namespace");
        }
        if self.exclude_namespaces.contains(&pod.namespace) {
            return Some("excluded namespace");
        }
        if !self.namespaces.is_empty() && !self.namespaces.contains(&pod.namespace) {
            return Some("namespace not targeted");
        }
        if !self.include_daemon_sets && pod.owner.as_ref().is_some_and(|o| o.kind == "DaemonSet") {
            return Some("DaemonSet pod");
        }
        if let Some(sel) = &self.selector
            && !sel.matches(&pod.labels)
        {
            return Some("label selector");
        }
        None
    }

    pub fn in_scope(&self, pod: &PodInfo) -> bool {
        !pod.finished && self.spares(pod).is_none()
    }

    /// The target restricts nothing by rule: every namespace, every label,
    /// DaemonSet pods included. Only then may the zone be kept dark with a
    /// NoExecute taint, and only if no pod on it was spared (system and
    /// operator namespaces, static pods): a NoExecute taint evicts every pod
    /// that does not tolerate it, in scope or not.
    pub fn targets_whole_zone(&self) -> bool {
        self.namespaces.is_empty()
            && self.exclude_namespaces.is_empty()
            && self.selector.is_none()
            && self.include_daemon_sets
    }
}

/// Parse a label selector as kubectl writes it: `app=web,tier!=db,env in (a,b),!legacy`.
pub fn parse_selector(s: &str) -> Result<Selector, String> {
    let mut parts = vec![];
    let (mut depth, mut start) = (0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    let mut exprs = vec![];
    for part in parts.into_iter().map(str::trim).filter(|p| !p.is_empty()) {
        let set = |rest: &str| -> Result<BTreeSet<String>, String> {
            let inner = rest
                .trim()
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| format!("{part:?}: expected (values)"))?;
            Ok(inner
                .split(',')
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .collect())
        };
        let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
        let expr = if let Some((k, v)) = part.split_once("!=") {
            Expression::NotEqual(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            Expression::Equal(k.trim().into(), v.trim().into())
        } else if words.len() == 2 && words[1].trim_start().starts_with("notin") {
            Expression::NotIn(
                words[0].into(),
                set(&words[1].trim_start()["notin".len()..])?,
            )
        } else if words.len() == 2 && words[1].trim_start().starts_with("in") {
            Expression::In(words[0].into(), set(&words[1].trim_start()["in".len()..])?)
        } else if let Some(k) = part.strip_prefix('!') {
            Expression::DoesNotExist(k.trim().into())
        } else if words.len() == 1 {
            Expression::Exists(part.into())
        } else {
            return Err(format!("cannot parse label selector term {part:?}"));
        };
        exprs.push(expr);
    }
    Ok(Selector::from_iter(exprs))
}

/// Why a pod cannot run outside the zone.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Pinned {
    pub pod: String,
    pub reason: String,
}

/// A workload that loses every ready replica.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LostWorkload {
    pub kind: String,
    pub name: String,
    pub ready_in_zone: i32,
    pub ready_total: i32,
}

/// The planner's answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub zone: String,
    pub nodes: Vec<String>,
    pub nodes_in_cluster: usize,
    pub schedulable_nodes_in_cluster: usize,
    /// Nodes of the zone that were already unschedulable before the experiment.
    pub already_cordoned: Vec<String>,
    /// Nodes of the zone without the node agent (PowerLoss needs it).
    pub nodes_without_agent: Vec<String>,
    /// `namespace/name` of every in-scope pod on the zone's nodes.
    pub pods_in_scope: Vec<String>,
    /// `namespace/name` → why it is spared.
    pub pods_spared: Vec<(String, String)>,
    pub lost_workloads: Vec<LostWorkload>,
    pub pinned: Vec<Pinned>,
    /// Workloads whose replacements cannot all be scheduled outside the zone.
    pub unplaceable: Vec<placement::Unplaceable>,
    pub slo_predictions: Vec<SloPrediction>,
    /// Things that would make the drill's measurements misleading.
    pub warnings: Vec<String>,
    pub pdbs_violated: Vec<String>,
    pub capacity_needed: Capacity,
    pub capacity_free: Option<Capacity>,
    /// The Services the workloads call, read from their configuration.
    pub dependencies: cascade::Graph,
}

impl Plan {
    pub fn capacity_sufficient(&self) -> Option<bool> {
        self.capacity_free.map(|free| {
            free.cpu_millis >= self.capacity_needed.cpu_millis
                && free.memory_bytes >= self.capacity_needed.memory_bytes
        })
    }

    /// The bounded form stored in the experiment's status.
    pub fn summary(&self) -> PlanSummary {
        let first = |v: Vec<String>| v.into_iter().take(MAX_LISTED).collect::<Vec<_>>();
        PlanSummary {
            nodes_in_zone: self.nodes.len() as i32,
            nodes_in_cluster: self.nodes_in_cluster as i32,
            pods_in_scope: self.pods_in_scope.len() as i32,
            pods_spared: self.pods_spared.len() as i32,
            workloads_losing_all_replicas: self.lost_workloads.len() as i32,
            workloads_losing_all_replicas_names: first(
                self.lost_workloads
                    .iter()
                    .map(|w| format!("{}/{}", w.kind, w.name))
                    .collect(),
            ),
            pinned_pods: self.pinned.len() as i32,
            pinned_pod_names: first(
                self.pinned
                    .iter()
                    .map(|p| format!("{} ({})", p.pod, p.reason))
                    .collect(),
            ),
            replacements_unschedulable: self.unplaceable.iter().map(|u| u.unplaceable).sum(),
            unschedulable_workloads: first(
                self.unplaceable
                    .iter()
                    .map(|u| {
                        format!(
                            "{}: {} of {} replacements ({})",
                            u.workload, u.unplaceable, u.lost, u.rule
                        )
                    })
                    .collect(),
            ),
            slo_predictions: self
                .slo_predictions
                .iter()
                .map(|p| SloPredictionStatus {
                    name: p.slo.clone(),
                    verdict: p.verdict,
                    why: p.why.clone(),
                    target: p.target.clone(),
                    rule: p.rule.clone(),
                    via: p.via.clone(),
                })
                .collect(),
            warnings: first(self.warnings.clone()),
            dependencies: first(self.dependencies.lines()),
            dependency_services: self
                .dependencies
                .services
                .iter()
                .take(crate::api::MAX_WATCHED_SERVICES)
                .map(|s| s.name.clone())
                .collect(),
            pdbs_violated: self.pdbs_violated.len() as i32,
            pdb_names: first(self.pdbs_violated.clone()),
            capacity: self.capacity_free.map(|free| crate::api::CapacitySummary {
                cpu_needed_millis: self.capacity_needed.cpu_millis,
                cpu_free_millis: free.cpu_millis,
                memory_needed_bytes: self.capacity_needed.memory_bytes,
                memory_free_bytes: free.memory_bytes,
                sufficient: self.capacity_sufficient().unwrap_or(true),
            }),
        }
    }
}

/// [`plan`] on a thread of the blocking pool: planning a large cluster
/// (placement, cascades, predictions over every pod) takes CPU for a while,
/// and on the async runtime it would stall the timers, watches, probes and
/// Lease renewals sharing its workers. The request and the snapshot are
/// handed back with the plan.
pub async fn plan_off_runtime(req: Request, snap: Snapshot) -> (Request, Snapshot, Plan) {
    off_runtime(move || {
        let p = plan(&req, &snap);
        (req, snap, p)
    })
    .await
}

/// Run CPU-heavy pure work on the blocking pool and wait for it; a panic in
/// it is a panic here.
pub async fn off_runtime<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("planning was cancelled: {e}"),
    }
}

/// Build the plan. Pure: the same snapshot always gives the same plan.
pub fn plan(req: &Request, snap: &Snapshot) -> Plan {
    let zone = Zone::of(req, snap);
    let mut out = zone_plan(req, snap, &zone.nodes);
    let affected = affected_pods(req, snap, &zone, &mut out);
    out.lost_workloads = lost_workloads(snap, &affected.ready_in_zone);
    out.warnings.extend(primaries::primaries(
        &affected.killed,
        &req.primary_labels,
        &req.zone,
    ));
    out.pdbs_violated = pdbs_violated(snap, affected.displaced_by_pdb);
    let pinned: HashMap<String, String> = out
        .pinned
        .iter()
        .map(|p| (p.pod.clone(), p.reason.clone()))
        .collect();
    let placed = placement::place(req, snap, &zone.nodes, &affected.killed, &pinned);
    out.unplaceable = placed.workloads;
    let cascades =
        cascade::Cascades::build(req, snap, &zone.nodes, &placed.pods, &req.dependencies);
    Predictor {
        req,
        snap,
        zone_nodes: &zone.nodes,
        unplaceable: &placed.pods,
        cascades: &cascades,
    }
    .predict(&mut out);
    out.dependencies = cascades.graph;
    out
}

/// The zone's nodes, their hostnames, and the nodes outside it.
struct Zone<'a> {
    nodes: BTreeSet<&'a str>,
    hostnames: BTreeSet<&'a str>,
    outside: Vec<&'a NodeInfo>,
}

impl<'a> Zone<'a> {
    fn of(req: &Request, snap: &'a Snapshot) -> Self {
        let nodes: BTreeSet<&str> = snap
            .nodes
            .iter()
            .filter(|n| n.labels.get(&req.topology_key) == Some(&req.zone))
            .map(|n| n.name.as_str())
            .collect();
        let hostnames = snap
            .nodes
            .iter()
            .filter(|n| nodes.contains(n.name.as_str()))
            .map(|n| {
                n.labels
                    .get("kubernetes.io/hostname")
                    .map(String::as_str)
                    .unwrap_or(&n.name)
            })
            .collect();
        let outside = snap
            .nodes
            .iter()
            .filter(|n| !nodes.contains(n.name.as_str()))
            .collect();
        Zone {
            nodes,
            hostnames,
            outside,
        }
    }
}

/// The plan's account of the nodes: the zone's, the cluster's, and which of
/// the zone's are cordoned already or run no agent.
fn zone_plan(req: &Request, snap: &Snapshot, zone_nodes: &BTreeSet<&str>) -> Plan {
    Plan {
        zone: req.zone.clone(),
        nodes: zone_nodes.iter().map(|s| s.to_string()).collect(),
        nodes_in_cluster: snap.nodes.len(),
        schedulable_nodes_in_cluster: snap.nodes.iter().filter(|n| !n.unschedulable).count(),
        already_cordoned: snap
            .nodes
            .iter()
            .filter(|n| zone_nodes.contains(n.name.as_str()) && n.unschedulable)
            .map(|n| n.name.clone())
            .collect(),
        nodes_without_agent: snap
            .nodes
            .iter()
            .filter(|n| zone_nodes.contains(n.name.as_str()))
            .filter(|n| !n.labels.contains_key(crate::api::AGENT_LABEL))
            .map(|n| n.name.clone())
            .collect(),
        capacity_free: snap.surviving_free,
        ..Default::default()
    }
}

/// What the pods the drill affects add up to, for the steps after.
struct Affected<'a> {
    /// The in-scope pods on the zone's nodes.
    killed: Vec<&'a PodInfo>,
    /// Their ready pods, by owner.
    ready_in_zone: BTreeMap<&'a OwnerKey, i32>,
    /// Their ready pods, by the index of each PDB that selects them.
    displaced_by_pdb: HashMap<usize, i32>,
}

/// Go through the pods on the zone's nodes: record which are spared and
/// which are in scope, what the displaced ones need, and which are pinned.
fn affected_pods<'a>(
    req: &Request,
    snap: &'a Snapshot,
    zone: &Zone,
    out: &mut Plan,
) -> Affected<'a> {
    let mut affected = Affected {
        killed: vec![],
        ready_in_zone: BTreeMap::new(),
        displaced_by_pdb: HashMap::new(),
    };
    for pod in snap
        .pods
        .iter()
        .filter(|p| zone.nodes.contains(p.node.as_str()))
    {
        if let Some(why) = req.spares(pod) {
            out.pods_spared.push((pod.key(), why.to_string()));
            continue;
        }
        out.pods_in_scope.push(pod.key());
        affected.killed.push(pod);
        if pod.ready
            && let Some(owner) = &pod.owner
        {
            *affected.ready_in_zone.entry(owner).or_default() += 1;
        }
        // DaemonSet pods are not displaced: their node is gone with the zone.
        let daemon = pod.owner.as_ref().is_some_and(|o| o.kind == "DaemonSet");
        if !daemon {
            let need = &mut out.capacity_needed;
            need.cpu_millis = need.cpu_millis.saturating_add(pod.cpu_millis);
            need.memory_bytes = need.memory_bytes.saturating_add(pod.memory_bytes);
            if let Some(reason) =
                pinned_reason(pod, req, &zone.hostnames, &zone.outside, &snap.pvc_topology)
            {
                out.pinned.push(Pinned {
                    pod: pod.key(),
                    reason,
                });
            }
        }
        for (i, pdb) in snap.pdbs.iter().enumerate() {
            if pdb.namespace == pod.namespace && pod.ready && pdb.selector.matches(&pod.labels) {
                *affected.displaced_by_pdb.entry(i).or_default() += 1;
            }
        }
    }
    affected
}

/// The workloads whose every ready replica is in the zone, by kind and name.
fn lost_workloads(snap: &Snapshot, ready_in_zone: &BTreeMap<&OwnerKey, i32>) -> Vec<LostWorkload> {
    let mut lost = vec![];
    for (owner, &in_zone) in ready_in_zone {
        if let Some(w) = snap.workloads.get(*owner)
            && w.ready <= in_zone
        {
            let kind = if owner.kind == "ReplicaSet" && w.display != owner.name {
                "Deployment"
            } else {
                owner.kind.as_str()
            };
            lost.push(LostWorkload {
                kind: kind.to_string(),
                name: format!("{}/{}", owner.namespace, w.display),
                ready_in_zone: in_zone,
                ready_total: w.ready,
            });
        }
    }
    lost.sort_by(|a, b| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)));
    lost
}

/// The PDBs (`namespace/name`, sorted) that would lose more ready pods than
/// they allow.
fn pdbs_violated(snap: &Snapshot, displaced_by_pdb: HashMap<usize, i32>) -> Vec<String> {
    let mut pdbs: Vec<String> = displaced_by_pdb
        .into_iter()
        .filter(|(i, n)| *n > snap.pdbs[*i].disruptions_allowed)
        .map(|(i, _)| format!("{}/{}", snap.pdbs[i].namespace, snap.pdbs[i].name))
        .collect();
    pdbs.sort();
    pdbs
}

/// What the plan needs to predict the SLOs.
struct Predictor<'a> {
    req: &'a Request,
    snap: &'a Snapshot,
    zone_nodes: &'a BTreeSet<&'a str>,
    /// Killed pod → the rule that leaves its replacement nowhere to go.
    unplaceable: &'a HashMap<String, String>,
    cascades: &'a cascade::Cascades<'a>,
}

impl Predictor<'_> {
    /// The plan's prediction for each SLO whose probe's target it can tell,
    /// and warnings about probes that depend on the zone.
    fn predict(&self, out: &mut Plan) {
        for t in &self.snap.slo_targets {
            let mut prediction = self.slo(t, &mut out.warnings);
            self.cascade(t, &mut prediction, &mut out.warnings);
            out.slo_predictions.push(prediction);
        }
    }

    /// A prediction that its own pods keep serving is overturned when a
    /// Service they call goes dark with the zone; a call named only in
    /// prose makes it a warning.
    fn cascade(&self, t: &SloTarget, prediction: &mut SloPrediction, warnings: &mut Vec<String>) {
        if matches!(
            prediction.verdict,
            Some(Verdict::Failed | Verdict::Inconclusive)
        ) {
            return;
        }
        match self.cascades.of(t) {
            Some(cascade::Cascade::Fails(path, via)) => {
                prediction.verdict = Some(Verdict::Failed);
                prediction.why = format!("predicted Failed via {path}");
                prediction.rule = Some("cascade".into());
                prediction.via = via;
            }
            Some(cascade::Cascade::AtRisk(path)) => warnings.push(format!(
                "SLO {} at risk via {path} (the name appears only in prose or a comment, and may never be called)",
                t.slo
            )),
            None => {}
        }
    }

    /// The pods a target selects that run, or are about to.
    fn live(&self, t: &Target) -> Vec<&PodInfo> {
        self.snap
            .peers
            .iter()
            .filter(|p| p.namespace == t.namespace && t.selector.matches(&p.labels))
            .filter(|p| !p.finished && !p.terminating)
            .collect()
    }

    fn in_zone(&self, p: &PodInfo) -> bool {
        self.zone_nodes.contains(p.node.as_str())
    }

    fn slo(&self, t: &SloTarget, warnings: &mut Vec<String>) -> SloPrediction {
        let mut prediction = SloPrediction {
            slo: t.slo.clone(),
            verdict: None,
            why: "the plan cannot tell what this probe depends on".into(),
            target: t.backing.as_ref().map(|b| b.what.clone()),
            rule: None,
            via: vec![],
        };
        if let Some(why) = t
            .prober
            .as_ref()
            .and_then(|prober| self.prober_goes_dark(t, prober, warnings))
        {
            prediction.verdict = Some(Verdict::Inconclusive);
            prediction.why = why;
            return prediction;
        }
        let Some(backing) = &t.backing else {
            return prediction;
        };
        let pods = self.live(backing);
        if pods.is_empty() {
            prediction.why = format!("no pod matches {}", backing.what);
            return prediction;
        }
        self.backing(t, backing, &pods, &mut prediction, warnings);
        prediction
    }

    /// Warn when the probe's own pods (the Prometheus it queries) run only
    /// in the zone; when the drill cuts off every one of them, why the probe
    /// cannot answer.
    fn prober_goes_dark(
        &self,
        t: &SloTarget,
        prober: &Target,
        warnings: &mut Vec<String>,
    ) -> Option<String> {
        let pods = self.live(prober);
        if pods.is_empty() || !pods.iter().all(|p| self.in_zone(p)) {
            return None;
        }
        let why = format!(
            "SLO {}: its probe's {} runs only in {}: the probe cannot answer while the zone is dark",
            t.slo, prober.what, self.req.zone
        );
        warnings.push(why.clone());
        pods.iter().all(|p| self.req.affects(p)).then_some(why)
    }

    /// Predict from the pods that serve what the probe checks: those that
    /// keep serving, and those whose replacements can start elsewhere.
    fn backing(
        &self,
        t: &SloTarget,
        backing: &Target,
        pods: &[&PodInfo],
        prediction: &mut SloPrediction,
        warnings: &mut Vec<String>,
    ) {
        let req = self.req;
        let (zone_pods, outside): (Vec<&PodInfo>, Vec<&PodInfo>) =
            pods.iter().partition(|p| self.in_zone(p));
        let killed: Vec<&PodInfo> = zone_pods
            .iter()
            .copied()
            .filter(|p| req.affects(p))
            .collect();
        let serving = outside.iter().filter(|p| p.ready).count() as i32
            + zone_pods
                .iter()
                .filter(|p| p.ready && !req.affects(p))
                .count() as i32;
        let stuck: Vec<&PodInfo> = killed
            .iter()
            .copied()
            .filter(|p| self.unplaceable.contains_key(&p.key()))
            .collect();
        let replaced = (killed.len() - stuck.len()) as i32;
        if outside.is_empty() {
            warnings.push(format!(
                "SLO {}: every pod behind {} runs in {}",
                t.slo, backing.what, req.zone
            ));
        }
        if serving >= t.need {
            prediction.verdict = Some(Verdict::Passed);
            prediction.why = format!(
                "{serving} ready pods of {} keep serving outside {}",
                backing.what, req.zone
            );
        } else if serving + replaced >= t.need {
            prediction.verdict = Some(Verdict::Passed);
            prediction.why = format!(
                "{} needs {} of its {replaced} replacement pods to start outside {} within the recovery-time objective",
                backing.what,
                t.need - serving,
                req.zone
            );
        } else {
            prediction.verdict = Some(Verdict::Failed);
            let mut why = format!(
                "{} keeps {serving} ready pods outside {} (needs {})",
                backing.what, req.zone, t.need
            );
            if !stuck.is_empty() {
                let rule = self.stuck_rule(&stuck);
                let names: Vec<String> = stuck.iter().take(3).map(|p| p.key()).collect();
                let more = if stuck.len() > 3 {
                    format!(" and {} more", stuck.len() - 3)
                } else {
                    String::new()
                };
                why.push_str(&format!(
                    "; {} replacements cannot be scheduled, {rule}: {}{more}",
                    stuck.len(),
                    names.join(", ")
                ));
                prediction.rule = Some(rule);
            }
            prediction.why = why;
        }
    }

    /// The rules that leave the `stuck` pods' replacements nowhere to go, in
    /// short: a nodeSelector or node affinity on the zone reads "pinned to".
    fn stuck_rule(&self, stuck: &[&PodInfo]) -> String {
        let mut rules: Vec<&str> = vec![];
        for p in stuck {
            let r = self.unplaceable[&p.key()].as_str();
            if !rules.contains(&r) {
                rules.push(r);
            }
        }
        let rule = rules.join("; ");
        match rule
            .strip_prefix("nodeSelector ")
            .or(rule.strip_prefix("required node affinity "))
        {
            Some(_) if !rule.contains("matches no node") => {
                format!("pinned to {} by {rule}", self.req.zone)
            }
            _ => rule,
        }
    }
}

/// Why `pod` cannot be scheduled anywhere outside the zone, if it cannot.
fn pinned_reason(
    pod: &PodInfo,
    req: &Request,
    zone_hostnames: &BTreeSet<&str>,
    outside: &[&NodeInfo],
    pvc_topology: &HashMap<String, VolumeTopology>,
) -> Option<String> {
    // Volumes first: a zonal disk pins a pod whatever its affinity says.
    for pvc in &pod.pvcs {
        if let Some(topo) = pvc_topology.get(&format!("{}/{pvc}", pod.namespace)) {
            let zonal = !topo.zones.is_empty() && topo.zones.iter().all(|z| *z == req.zone);
            let local = !topo.hostnames.is_empty()
                && topo
                    .hostnames
                    .iter()
                    .all(|h| zone_hostnames.contains(h.as_str()));
            if zonal || local {
                return Some(format!("PVC {pvc} is bound to a volume in {}", req.zone));
            }
        }
    }
    if let Some(v) = pod.node_selector.get(&req.topology_key)
        && *v == req.zone
    {
        return Some(format!("nodeSelector {}={}", req.topology_key, v));
    }
    if let Some(h) = pod.node_selector.get("kubernetes.io/hostname")
        && zone_hostnames.contains(h.as_str())
    {
        return Some(format!("nodeSelector kubernetes.io/hostname={h}"));
    }
    // With no nodeSelector/affinity trouble, the pod can go anywhere outside.
    let fits = |n: &NodeInfo| {
        pod.node_selector
            .iter()
            .all(|(k, v)| n.labels.get(k) == Some(v))
            && (pod.required_terms.is_empty()
                || pod
                    .required_terms
                    .iter()
                    .any(|term| term.iter().all(|r| requirement_matches(r, &n.labels))))
    };
    if !pod.node_selector.is_empty() || !pod.required_terms.is_empty() {
        if outside.iter().any(|n| fits(n)) {
            return None;
        }
        let how = if pod.required_terms.is_empty() {
            "nodeSelector"
        } else {
            "required node affinity"
        };
        return Some(format!("{how} matches no node outside {}", req.zone));
    }
    None
}

fn requirement_matches(r: &Requirement, labels: &BTreeMap<String, String>) -> bool {
    let value = labels.get(&r.key);
    let expr = match r.operator.as_str() {
        "In" => Expression::In(r.key.clone(), r.values.iter().cloned().collect()),
        "NotIn" => Expression::NotIn(r.key.clone(), r.values.iter().cloned().collect()),
        "Exists" => Expression::Exists(r.key.clone()),
        "DoesNotExist" => Expression::DoesNotExist(r.key.clone()),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                r.values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            return if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            };
        }
        _ => return false,
    };
    expr.matches(labels)
}

/// The nodes the API server runs on: those whose InternalIP is an address
/// of the `kubernetes` Service's EndpointSlices (`endpoint_addresses`), and
/// those running a `component: kube-apiserver` pod in kube-system
/// (`pod_nodes`, a static pod's node). Sorted, each once. Pure.
pub fn api_server_nodes(
    nodes: &[NodeInfo],
    endpoint_addresses: &[String],
    pod_nodes: &[String],
) -> Vec<String> {
    let by_address: BTreeSet<&str> = endpoint_addresses.iter().map(String::as_str).collect();
    let known: BTreeSet<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    let mut found: BTreeSet<String> = nodes
        .iter()
        .filter(|n| n.addresses.iter().any(|a| by_address.contains(a.as_str())))
        .map(|n| n.name.clone())
        .collect();
    found.extend(
        pod_nodes
            .iter()
            .filter(|n| known.contains(n.as_str()))
            .cloned(),
    );
    found.into_iter().collect()
}

/// A guard's refusal: the experiment ends Failed with this reason and nothing is touched.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// Check every guard against the plan. The first refusal wins.
pub fn check_guards(req: &Request, plan: &Plan, snap: &Snapshot) -> Result<(), Refusal> {
    let g = &req.guards;
    check_node_guards(req, plan)?;
    if !g.allow_overlap && !snap.active_experiments.is_empty() {
        return Err(Refusal(format!(
            "another DataCenterFailure is active ({}); set guards.allowOverlap to run both",
            snap.active_experiments.join(", ")
        )));
    }
    if g.protect_operator
        && let Some(nodes) = &snap.operator_nodes
        && !nodes.is_empty()
        && nodes.iter().all(|n| plan.nodes.contains(n))
    {
        return Err(Refusal(format!(
            "the operator would be left with no replica outside {} (it runs on {}); set guards.protectOperator=false to allow",
            req.zone,
            nodes.join(", ")
        )));
    }
    if req.power_loss
        && let Some(node) = &snap.leader_node
        && plan.nodes.contains(node)
    {
        return Err(Refusal(format!(
            "the operator's leader runs on {node} in {}: a power loss would cut it off mid-drill; move it out of the zone first (delete its pod, and a replica elsewhere leads)",
            req.zone
        )));
    }
    if req.power_loss && !g.allow_api_server_zone {
        let held: Vec<&str> = snap
            .api_server_nodes
            .iter()
            .filter(|n| plan.nodes.contains(n))
            .map(String::as_str)
            .collect();
        if !held.is_empty() {
            return Err(Refusal(format!(
                "the API server runs on {} in {}: a power loss would cut the control plane off, and with it the drill's restore; set guards.allowApiServerZone to rehearse that anyway",
                held.join(", "),
                req.zone
            )));
        }
    }
    if g.require_capacity && !req.power_loss && plan.capacity_sufficient() == Some(false) {
        let free = plan.capacity_free.unwrap_or_default();
        return Err(Refusal(format!(
            "the surviving zones lack capacity for the displaced pods: need {}m CPU and {} MiB memory, {}m and {} MiB free",
            plan.capacity_needed.cpu_millis,
            plan.capacity_needed.memory_bytes >> 20,
            free.cpu_millis,
            free.memory_bytes >> 20
        )));
    }
    Ok(())
}

/// The guards that depend on the nodes alone. Checked at planning, and again
/// at injection against the node list actually taken.
pub fn check_node_guards(req: &Request, plan: &Plan) -> Result<(), Refusal> {
    let g = &req.guards;
    if plan.nodes.is_empty() {
        return Err(Refusal(format!(
            "no nodes with {}={}",
            req.topology_key, req.zone
        )));
    }
    if req.power_loss && !plan.nodes_without_agent.is_empty() {
        let n = &plan.nodes_without_agent;
        let mut names = n.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
        if n.len() > 5 {
            names.push_str(&format!(" and {} more", n.len() - 5));
        }
        return Err(Refusal(format!(
            "{} nodes of {} run no firedrill agent ({names}): a power loss cannot be rehearsed there; install the chart with agent.enabled=true",
            n.len(),
            req.zone
        )));
    }
    let zone_schedulable = plan.nodes.len() - plan.already_cordoned.len();
    if plan.schedulable_nodes_in_cluster > 0
        && zone_schedulable >= plan.schedulable_nodes_in_cluster
    {
        return Err(Refusal(format!(
            "zone {} holds every schedulable node of the cluster ({} of {}); nothing would survive",
            req.zone, zone_schedulable, plan.schedulable_nodes_in_cluster
        )));
    }
    if let Some(max) = g.max_nodes
        && plan.nodes.len() as i64 > max as i64
    {
        return Err(Refusal(format!(
            "zone {} has {} nodes, more than guards.maxNodes={}",
            req.zone,
            plan.nodes.len(),
            max
        )));
    }
    let share = plan.nodes.len() as f64 * 100.0 / plan.nodes_in_cluster.max(1) as f64;
    if share > g.max_node_percent as f64 {
        return Err(Refusal(format!(
            "zone {} holds {:.0}% of the cluster's nodes ({} of {}), more than guards.maxNodePercent={}",
            req.zone,
            share,
            plan.nodes.len(),
            plan.nodes_in_cluster,
            g.max_node_percent
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
