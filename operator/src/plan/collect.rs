//! The I/O edge of planning: read what the planner needs from the cluster,
//! without keeping a copy of every pod. Nodes are listed once (small); pods
//! are listed per zone node with a field selector; the capacity check streams
//! pods page by page and keeps only sums.

use super::{
    Capacity, NodeInfo, OwnerKey, PdbInfo, PodInfo, Requirement, Snapshot, VolumeTopology,
    WorkloadInfo,
};
use crate::api::{DataCenterFailure, Phase};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::apps::v1::{DaemonSet, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, ListParams};
use kube::core::Selector;
use kube::{Client, ResourceExt};
use std::collections::{BTreeSet, HashMap};

/// How many list/get calls run at once.
pub const DEFAULT_CONCURRENCY: usize = 32;
const PAGE: u32 = 500;

/// What to collect besides nodes and the zone's pods.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub measure_capacity: bool,
    /// This experiment's name, left out of the active-experiment check.
    pub experiment: Option<String>,
    /// The operator's own pods (namespace, label selector), when it runs in the cluster.
    pub operator_pods: Option<(String, String)>,
    pub concurrency: usize,
}

/// Read the snapshot for planning `zone`.
pub async fn snapshot(
    client: &Client,
    zone: &str,
    topology_key: &str,
    opts: &Options,
) -> kube::Result<Snapshot> {
    let conc = opts.concurrency.max(1);
    let nodes = list_nodes(client).await?;
    let zone_nodes: Vec<String> = nodes
        .iter()
        .filter(|n| n.labels.get(topology_key).map(String::as_str) == Some(zone))
        .map(|n| n.name.clone())
        .collect();

    let pods: Vec<PodInfo> = stream::iter(zone_nodes.iter().cloned())
        .map(|node| pods_on_node(client, node))
        .buffer_unordered(conc)
        .try_fold(Vec::new(), |mut all, mut some| async move {
            all.append(&mut some);
            Ok(all)
        })
        .await?;

    let owners: BTreeSet<OwnerKey> = pods.iter().filter_map(|p| p.owner.clone()).collect();
    let workloads: HashMap<OwnerKey, WorkloadInfo> = stream::iter(owners)
        .map(|o| async move { workload(client, &o).await.map(|w| w.map(|w| (o, w))) })
        .buffer_unordered(conc)
        .try_filter_map(|x| async move { Ok(x) })
        .try_collect()
        .await?;

    let pvcs: BTreeSet<(String, String)> = pods
        .iter()
        .flat_map(|p| p.pvcs.iter().map(|c| (p.namespace.clone(), c.clone())))
        .collect();
    let pvc_topology: HashMap<String, VolumeTopology> = stream::iter(pvcs)
        .map(|(ns, pvc)| async move {
            volume_topology(client, &ns, &pvc, topology_key)
                .await
                .map(|t| t.map(|t| (format!("{ns}/{pvc}"), t)))
        })
        .buffer_unordered(conc)
        .try_filter_map(|x| async move { Ok(x) })
        .try_collect()
        .await?;

    let pdbs = Api::<PodDisruptionBudget>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|pdb| {
            let selector = Selector::try_from(pdb.spec.as_ref()?.selector.clone()?).ok()?;
            Some(PdbInfo {
                namespace: pdb.namespace().unwrap_or_default(),
                name: pdb.name_any(),
                selector,
                disruptions_allowed: pdb
                    .status
                    .as_ref()
                    .map(|s| s.disruptions_allowed)
                    .unwrap_or(0),
            })
        })
        .collect();

    let surviving_free = if opts.measure_capacity {
        let zone_set: BTreeSet<&str> = zone_nodes.iter().map(String::as_str).collect();
        Some(free_capacity(client, &nodes, |n| !zone_set.contains(n.name.as_str())).await?)
    } else {
        None
    };

    // Before the CRDs are installed there are no experiments (404), and
    // `firedrill plan` still works.
    let experiments = match Api::<DataCenterFailure>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(list) => list.items,
        Err(kube::Error::Api(e)) if e.code == 404 => vec![],
        Err(e) => return Err(e),
    };
    let active_experiments = experiments
        .into_iter()
        .filter(|e| Some(e.name_any()) != opts.experiment)
        .filter(|e| {
            matches!(
                e.status.as_ref().and_then(|s| s.phase),
                Some(Phase::Baseline | Phase::Injecting | Phase::ZoneDown | Phase::Restoring)
            )
        })
        .map(|e| e.name_any())
        .collect();

    let operator_nodes = match &opts.operator_pods {
        Some((ns, selector)) => Some(
            Api::<Pod>::namespaced(client.clone(), ns)
                .list(&ListParams::default().labels(selector))
                .await?
                .items
                .into_iter()
                .filter_map(|p| p.spec?.node_name)
                .collect(),
        ),
        None => None,
    };

    Ok(Snapshot {
        nodes,
        pods,
        workloads,
        pvc_topology,
        pdbs,
        surviving_free,
        active_experiments,
        operator_nodes,
    })
}

/// Every node, paginated.
pub async fn list_nodes(client: &Client) -> kube::Result<Vec<NodeInfo>> {
    let api = Api::<Node>::all(client.clone());
    let mut out = Vec::new();
    let mut lp = ListParams::default().limit(PAGE);
    loop {
        let page = api.list(&lp).await?;
        out.extend(page.items.iter().map(node_info));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => lp = lp.continue_token(&token),
            None => return Ok(out),
        }
    }
}

/// The pods bound to one node.
pub async fn pods_on_node(client: &Client, node: String) -> kube::Result<Vec<PodInfo>> {
    let lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
    Ok(Api::<Pod>::all(client.clone())
        .list(&lp)
        .await?
        .items
        .iter()
        .map(pod_info)
        .collect())
}

pub fn node_info(n: &Node) -> NodeInfo {
    let status = n.status.as_ref();
    let alloc = status.and_then(|s| s.allocatable.as_ref());
    NodeInfo {
        name: n.name_any(),
        labels: n.labels().clone(),
        unschedulable: n
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false),
        ready: status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
        cpu_millis: alloc
            .and_then(|a| a.get("cpu"))
            .map(cpu_millis)
            .unwrap_or(0),
        memory_bytes: alloc.and_then(|a| a.get("memory")).map(bytes).unwrap_or(0),
    }
}

pub fn pod_info(p: &Pod) -> PodInfo {
    let spec = p.spec.as_ref();
    let status = p.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("");
    let owner = p
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| OwnerKey {
            kind: o.kind.clone(),
            namespace: p.namespace().unwrap_or_default(),
            name: o.name.clone(),
        });
    let (cpu, mem) = spec
        .map(|s| {
            s.containers
                .iter()
                .filter_map(|c| c.resources.as_ref()?.requests.as_ref())
                .fold((0, 0), |(c, m), r| {
                    (
                        c + r.get("cpu").map(cpu_millis).unwrap_or(0),
                        m + r.get("memory").map(bytes).unwrap_or(0),
                    )
                })
        })
        .unwrap_or((0, 0));
    let required_terms = spec
        .and_then(|s| {
            s.affinity
                .as_ref()?
                .node_affinity
                .as_ref()?
                .required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|sel| {
            sel.node_selector_terms
                .iter()
                .map(|t| {
                    t.match_expressions
                        .iter()
                        .flatten()
                        .map(|e| Requirement {
                            key: e.key.clone(),
                            operator: e.operator.clone(),
                            values: e.values.clone().unwrap_or_default(),
                        })
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default();
    PodInfo {
        namespace: p.namespace().unwrap_or_default(),
        name: p.name_any(),
        node: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        labels: p.labels().clone(),
        owner,
        mirror: p.annotations().contains_key("kubernetes.io/config.mirror"),
        ready: status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
        finished: phase == "Succeeded" || phase == "Failed",
        node_selector: spec
            .and_then(|s| s.node_selector.clone())
            .unwrap_or_default(),
        required_terms,
        pvcs: spec
            .and_then(|s| s.volumes.as_ref())
            .map(|vs| {
                vs.iter()
                    .filter_map(|v| Some(v.persistent_volume_claim.as_ref()?.claim_name.clone()))
                    .collect()
            })
            .unwrap_or_default(),
        cpu_millis: cpu,
        memory_bytes: mem,
    }
}

/// Ready replicas of a pod's owner, and the name people know it by.
async fn workload(client: &Client, o: &OwnerKey) -> kube::Result<Option<WorkloadInfo>> {
    let ns = o.namespace.as_str();
    let found = match o.kind.as_str() {
        "ReplicaSet" => Api::<ReplicaSet>::namespaced(client.clone(), ns)
            .get_opt(&o.name)
            .await?
            .map(|rs| {
                let display = rs
                    .owner_references()
                    .iter()
                    .find(|r| r.kind == "Deployment")
                    .map(|r| r.name.clone())
                    .unwrap_or_else(|| o.name.clone());
                WorkloadInfo {
                    ready: rs.status.and_then(|s| s.ready_replicas).unwrap_or(0),
                    display,
                }
            }),
        "StatefulSet" => Api::<StatefulSet>::namespaced(client.clone(), ns)
            .get_opt(&o.name)
            .await?
            .map(|s| WorkloadInfo {
                ready: s.status.and_then(|s| s.ready_replicas).unwrap_or(0),
                display: o.name.clone(),
            }),
        "DaemonSet" => Api::<DaemonSet>::namespaced(client.clone(), ns)
            .get_opt(&o.name)
            .await?
            .map(|d| WorkloadInfo {
                ready: d.status.map(|s| s.number_ready).unwrap_or(0),
                display: o.name.clone(),
            }),
        "Job" => Api::<Job>::namespaced(client.clone(), ns)
            .get_opt(&o.name)
            .await?
            .map(|j| WorkloadInfo {
                ready: j.status.and_then(|s| s.ready).unwrap_or(0),
                display: o.name.clone(),
            }),
        _ => None,
    };
    Ok(found)
}

/// Where the PV bound to a PVC can be used, if it is restricted at all.
async fn volume_topology(
    client: &Client,
    ns: &str,
    pvc: &str,
    topology_key: &str,
) -> kube::Result<Option<VolumeTopology>> {
    let Some(claim) = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .get_opt(pvc)
        .await?
    else {
        return Ok(None);
    };
    let Some(volume) = claim
        .spec
        .and_then(|s| s.volume_name)
        .filter(|v| !v.is_empty())
    else {
        return Ok(None);
    };
    let Some(pv) = Api::<PersistentVolume>::all(client.clone())
        .get_opt(&volume)
        .await?
    else {
        return Ok(None);
    };
    Ok(pv_topology(&pv, topology_key))
}

pub fn pv_topology(pv: &PersistentVolume, topology_key: &str) -> Option<VolumeTopology> {
    let terms = &pv
        .spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?
        .node_selector_terms;
    let mut topo = VolumeTopology::default();
    let zone_keys = [
        topology_key,
        "topology.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/zone",
    ];
    for e in terms
        .iter()
        .flat_map(|t| t.match_expressions.iter().flatten())
    {
        if e.operator != "In" {
            continue;
        }
        let values = e.values.clone().unwrap_or_default();
        if zone_keys.contains(&e.key.as_str()) {
            topo.zones.extend(values);
        } else if e.key == "kubernetes.io/hostname" {
            topo.hostnames.extend(values);
        }
    }
    (!topo.zones.is_empty() || !topo.hostnames.is_empty()).then_some(topo)
}

/// Allocatable minus requested, over the schedulable Ready nodes `keep` selects.
/// Streams every running pod page by page; only sums are kept.
async fn free_capacity(
    client: &Client,
    nodes: &[NodeInfo],
    keep: impl Fn(&NodeInfo) -> bool,
) -> kube::Result<Capacity> {
    let survivors: HashMap<&str, ()> = nodes
        .iter()
        .filter(|n| keep(n) && !n.unschedulable && n.ready)
        .map(|n| (n.name.as_str(), ()))
        .collect();
    let mut free = Capacity::default();
    for n in nodes
        .iter()
        .filter(|n| survivors.contains_key(n.name.as_str()))
    {
        free.cpu_millis += n.cpu_millis;
        free.memory_bytes += n.memory_bytes;
    }
    let api = Api::<Pod>::all(client.clone());
    let mut lp = ListParams::default()
        .limit(PAGE)
        .fields("status.phase!=Succeeded,status.phase!=Failed");
    loop {
        let page = api.list(&lp).await?;
        for p in &page.items {
            let info = pod_info(p);
            if survivors.contains_key(info.node.as_str()) {
                free.cpu_millis -= info.cpu_millis;
                free.memory_bytes -= info.memory_bytes;
            }
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => lp = lp.continue_token(&token),
            None => return Ok(free),
        }
    }
}

/// CPU quantity in millicores: `250m`, `2`, `0.5`.
pub fn cpu_millis(q: &Quantity) -> i64 {
    parse_quantity(&q.0)
        .map(|v| (v * 1000.0).round() as i64)
        .unwrap_or(0)
}

/// Memory quantity in bytes: `64Mi`, `1G`, `1e9`, `129e6`.
pub fn bytes(q: &Quantity) -> i64 {
    parse_quantity(&q.0).map(|v| v.round() as i64).unwrap_or(0)
}

fn parse_quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    Some(n * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        let q = |s: &str| Quantity(s.into());
        assert_eq!(cpu_millis(&q("250m")), 250);
        assert_eq!(cpu_millis(&q("2")), 2000);
        assert_eq!(cpu_millis(&q("0.5")), 500);
        assert_eq!(bytes(&q("64Mi")), 64 << 20);
        assert_eq!(bytes(&q("1G")), 1_000_000_000);
        assert_eq!(bytes(&q("129e6")), 129_000_000);
        assert_eq!(bytes(&q("1Gi")), 1 << 30);
        assert_eq!(bytes(&q("bogus")), 0);
    }

    #[test]
    fn pod_info_reads_what_planning_needs() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "login-1", "namespace": "auth", "labels": {"app": "login"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "login-5d", "uid": "u", "controller": true}]},
            "spec": {"nodeName": "a1", "nodeSelector": {"topology.kubernetes.io/zone": "zone-a"},
                "containers": [{"name": "c", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
                               {"name": "d", "resources": {"requests": {"cpu": "1"}}}],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data-0"}}],
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["zone-a"]}]}]}}}},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        let info = pod_info(&pod);
        assert_eq!(info.key(), "auth/login-1");
        assert_eq!(info.node, "a1");
        assert_eq!(info.owner.unwrap().name, "login-5d");
        assert!(info.ready && !info.finished && !info.mirror);
        assert_eq!((info.cpu_millis, info.memory_bytes), (1100, 64 << 20));
        assert_eq!(info.pvcs, ["data-0"]);
        assert_eq!(info.required_terms[0][0].values, ["zone-a"]);
    }

    #[test]
    fn pv_topology_reads_zone_and_hostname_affinity() {
        let pv: PersistentVolume = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "pv"},
            "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["zone-a"]}]}]}}}
        }))
        .unwrap();
        assert_eq!(
            pv_topology(&pv, "topology.kubernetes.io/zone")
                .unwrap()
                .zones,
            ["zone-a"]
        );
        let none: PersistentVolume =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "pv"}, "spec": {}}))
                .unwrap();
        assert_eq!(pv_topology(&none, "topology.kubernetes.io/zone"), None);
    }
}
