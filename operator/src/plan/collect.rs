//! The I/O edge of planning: read what the planner needs from the cluster,
//! without keeping a copy of every pod. Nodes are listed once (small); pods
//! are listed node by node with a field selector, the zone's first; the rest
//! are read once for the capacity sums and the peers together, and only the
//! sums and slim peers are kept.

use super::cascade::{self, ConfigMapUse, Discovery, Reference, ServiceInfo};
use super::{
    Capacity, LabelSets, Labels, NodeInfo, OwnerKey, PdbInfo, PodInfo, PodTermInfo, Requested,
    Requirement, SloTarget, Snapshot, SpreadInfo, TaintInfo, Target, TolerationInfo,
    VolumeTopology, WorkloadInfo,
};
use crate::api::{DataCenterFailure, Phase, SloSpec, WorkloadKind};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, Node, PersistentVolume, PersistentVolumeClaim, Pod, PodAffinityTerm, PodSpec,
    Service,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, ListParams};
use kube::core::{Expression, Selector, SelectorExt};
use kube::{Client, ResourceExt};
use std::collections::{BTreeMap, BTreeSet, HashMap};

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
    /// The SLOs whose probes' targets the plan predicts for.
    pub slos: Vec<SloSpec>,
    /// This operator's own pod (namespace, name), when it runs in the cluster.
    pub leader_pod: Option<(String, String)>,
    /// Look for the nodes the API server runs on (for a PowerLoss).
    pub api_server: bool,
}

/// Read the snapshot for planning `zone`.
pub async fn snapshot(
    client: &Client,
    zone: &str,
    topology_key: &str,
    opts: &Options,
) -> kube::Result<Snapshot> {
    let conc = opts.concurrency.max(1);
    let started = std::time::Instant::now();
    let mut nodes = list_nodes(client).await?;
    let zone_nodes: Vec<String> = nodes
        .iter()
        .filter(|n| n.labels.get(topology_key).map(String::as_str) == Some(zone))
        .map(|n| n.name.clone())
        .collect();
    let mut label_sets = LabelSets::default();
    let discover = !opts.slos.is_empty();
    let mut discovery = Discovery::default();
    let pods = zone_pods(client, &zone_nodes, conc, &mut label_sets, &mut discovery).await?;
    let listed_zone = started.elapsed();
    let workloads = owner_workloads(client, &pods, conc).await?;
    let pvc_topology = pvc_topologies(client, &pods, topology_key, conc).await?;
    let pdbs = list_pdbs(client).await?;
    let slo_targets = slo_targets(client, &opts.slos).await?;
    // Every pod of the cluster is read at most once, node by node: for the
    // capacity sums and the peers together.
    let scan_started = std::time::Instant::now();
    let zone_set: BTreeSet<&str> = zone_nodes.iter().map(String::as_str).collect();
    let other_nodes: Vec<String> = nodes
        .iter()
        .filter(|n| !zone_set.contains(n.name.as_str()))
        .map(|n| n.name.clone())
        .collect();
    let scan = PodScan {
        queries: peer_queries(&pods, &slo_targets),
        requested: opts.measure_capacity.then(HashMap::new),
        peers: Vec::new(),
        label_sets,
        discovery: discover.then_some(discovery),
    };
    let scan = scan_pods(client, &pods, other_nodes, scan, conc).await?;
    let discovery = match scan.discovery {
        Some(mut d) => {
            d.finish();
            d.services = list_services(client).await?;
            read_config_maps(client, &mut d, conc).await?;
            d
        }
        None => Discovery::default(),
    };
    let scan_ms = scan_started.elapsed().as_millis() as u64;
    let peers = scan.peers;
    let surviving_free = scan.requested.map(|requested| {
        for n in nodes.iter_mut() {
            n.requested = Some(requested.get(&n.name).copied().unwrap_or_default());
        }
        surviving_capacity(&nodes, |n| !zone_set.contains(n.name.as_str()))
    });
    let leader_node = leader_node(client, opts).await?;
    let active_experiments = active_experiments(client, opts).await?;
    let operator_nodes = operator_nodes(client, opts).await?;
    let api_server_nodes = if opts.api_server {
        let (addresses, pod_nodes) = api_server_places(client).await?;
        super::api_server_nodes(&nodes, &addresses, &pod_nodes)
    } else {
        vec![]
    };
    tracing::debug!(
        nodes = nodes.len(),
        zone_pods = pods.len(),
        peers = peers.len(),
        zone_listed_ms = listed_zone.as_millis() as u64,
        scan_ms,
        total_ms = started.elapsed().as_millis() as u64,
        "planning snapshot read"
    );
    Ok(Snapshot {
        nodes,
        pods,
        workloads,
        pvc_topology,
        pdbs,
        surviving_free,
        active_experiments,
        operator_nodes,
        leader_node,
        api_server_nodes,
        peers,
        slo_targets,
        discovery,
    })
}

/// Every Service, as the dependency graph needs it (paged).
async fn list_services(client: &Client) -> kube::Result<Vec<ServiceInfo>> {
    let api = Api::<Service>::all(client.clone());
    let mut out = Vec::new();
    for_each_page(&api, ListParams::default(), |items| {
        out.extend(items.iter().map(service_info))
    })
    .await?;
    out.shrink_to_fit();
    Ok(out)
}

pub fn service_info(s: &Service) -> ServiceInfo {
    let spec = s.spec.as_ref();
    ServiceInfo {
        namespace: s.namespace().unwrap_or_default(),
        name: s.name_any(),
        selector: spec
            .and_then(|sp| sp.selector.clone())
            .filter(|m| !m.is_empty())
            .map(Selector::from_iter),
        external_name: spec
            .filter(|sp| sp.type_.as_deref() == Some("ExternalName"))
            .and_then(|sp| sp.external_name.clone()),
    }
}

/// Read each ConfigMap the callers use once, and add the hosts its values
/// name to each caller that uses it. One that cannot be read (gone, or not
/// allowed) adds nothing.
async fn read_config_maps(client: &Client, d: &mut Discovery, conc: usize) -> kube::Result<()> {
    let wanted: BTreeSet<(String, String)> = d
        .callers
        .iter()
        .flat_map(|c| {
            c.config_maps
                .iter()
                .map(|u| (c.namespace.clone(), u.name.clone()))
        })
        .collect();
    type Found = ((String, String), Option<BTreeMap<String, String>>);
    let found: Vec<Found> = stream::iter(wanted)
        .map(|(ns, name)| async move {
            let got = Api::<ConfigMap>::namespaced(client.clone(), &ns)
                .get_opt(&name)
                .await;
            let data = match got {
                Ok(cm) => cm.and_then(|cm| cm.data),
                Err(kube::Error::Api(e)) if e.code == 403 => None,
                Err(e) => return Err(e),
            };
            Ok(((ns, name), data))
        })
        .buffer_unordered(conc)
        .try_collect()
        .await?;
    let data: HashMap<(String, String), BTreeMap<String, String>> = found
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect();
    for c in &mut d.callers {
        for u in std::mem::take(&mut c.config_maps) {
            if let Some(values) = data.get(&(c.namespace.clone(), u.name.clone())) {
                c.refs
                    .extend(cascade::config_map_refs(&c.namespace, &u.name, values, &u));
            }
        }
    }
    Ok(())
}

/// The pods on the zone's nodes, listed node by node (`conc` lists in
/// flight), each label set shared.
async fn zone_pods(
    client: &Client,
    zone_nodes: &[String],
    conc: usize,
    label_sets: &mut LabelSets,
    discovery: &mut Discovery,
) -> kube::Result<Vec<PodInfo>> {
    let mut pods: Vec<PodInfo> = Vec::new();
    let mut lists = stream::iter(zone_nodes.iter().cloned())
        .map(|node| pods_on_node(client, node))
        .buffer_unordered(conc);
    while let Some(some) = lists.try_next().await? {
        pods.extend(some.into_iter().map(|mut p| {
            p.labels = label_sets.share(&p.labels);
            discovery.add(&mut p, true);
            p
        }));
    }
    pods.shrink_to_fit();
    Ok(pods)
}

/// Look up each of `keys`, `conc` at a time, and keep what is found.
async fn look_up_all<T, K, V, F>(
    keys: impl IntoIterator<Item = T>,
    conc: usize,
    look_up: impl FnMut(T) -> F,
) -> kube::Result<HashMap<K, V>>
where
    K: Eq + std::hash::Hash,
    F: Future<Output = kube::Result<Option<(K, V)>>>,
{
    stream::iter(keys)
        .map(look_up)
        .buffer_unordered(conc)
        .try_filter_map(|x| async move { Ok(x) })
        .try_collect()
        .await
}

/// What the zone's pods' owners report about themselves.
async fn owner_workloads(
    client: &Client,
    pods: &[PodInfo],
    conc: usize,
) -> kube::Result<HashMap<OwnerKey, WorkloadInfo>> {
    let owners: BTreeSet<OwnerKey> = pods.iter().filter_map(|p| p.owner.clone()).collect();
    look_up_all(owners, conc, |o| async move {
        workload(client, &o).await.map(|w| w.map(|w| (o, w)))
    })
    .await
}

/// Where the volumes of the zone's pods' claims can be used, by
/// `namespace/pvc`, for those restricted at all.
async fn pvc_topologies(
    client: &Client,
    pods: &[PodInfo],
    topology_key: &str,
    conc: usize,
) -> kube::Result<HashMap<String, VolumeTopology>> {
    let pvcs: BTreeSet<(String, String)> = pods
        .iter()
        .flat_map(|p| p.pvcs.iter().map(|c| (p.namespace.clone(), c.clone())))
        .collect();
    look_up_all(pvcs, conc, |(ns, pvc)| async move {
        volume_topology(client, &ns, &pvc, topology_key)
            .await
            .map(|t| t.map(|t| (format!("{ns}/{pvc}"), t)))
    })
    .await
}

/// Every PodDisruptionBudget with a selector.
async fn list_pdbs(client: &Client) -> kube::Result<Vec<PdbInfo>> {
    Ok(Api::<PodDisruptionBudget>::all(client.clone())
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
        .collect())
}

/// Where the API server says it runs: the addresses of the `kubernetes`
/// Service's EndpointSlices in `default`, and the nodes of the
/// `component=kube-apiserver` pods in kube-system. What cannot be read (no
/// such objects, or no right to read them) adds nothing.
async fn api_server_places(client: &Client) -> kube::Result<(Vec<String>, Vec<String>)> {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let unreadable =
        |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 404 || s.code == 403);
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), "default")
        .list(&ListParams::default().labels("kubernetes.io/service-name=kubernetes"))
        .await;
    let addresses = match slices {
        Ok(l) => l
            .items
            .into_iter()
            .flat_map(|s| s.endpoints)
            .flat_map(|e| e.addresses)
            .collect(),
        Err(e) if unreadable(&e) => vec![],
        Err(e) => return Err(e),
    };
    let pods = Api::<Pod>::namespaced(client.clone(), "kube-system")
        .list(&ListParams::default().labels("component=kube-apiserver"))
        .await;
    let pod_nodes = match pods {
        Ok(l) => l
            .items
            .into_iter()
            .filter_map(|p| p.spec?.node_name)
            .collect(),
        Err(e) if unreadable(&e) => vec![],
        Err(e) => return Err(e),
    };
    Ok((addresses, pod_nodes))
}

/// The node the operator's own pod runs on, when it runs in the cluster.
async fn leader_node(client: &Client, opts: &Options) -> kube::Result<Option<String>> {
    Ok(match &opts.leader_pod {
        Some((ns, name)) => Api::<Pod>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await?
            .and_then(|p| p.spec?.node_name),
        None => None,
    })
}

/// The DataCenterFailures other than this one that are active.
async fn active_experiments(client: &Client, opts: &Options) -> kube::Result<Vec<String>> {
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
    Ok(experiments
        .into_iter()
        .filter(|e| Some(e.name_any()) != opts.experiment)
        .filter(|e| {
            matches!(
                e.status.as_ref().and_then(|s| s.phase),
                Some(Phase::Baseline | Phase::Injecting | Phase::ZoneDown | Phase::Restoring)
            )
        })
        .map(|e| e.name_any())
        .collect())
}

/// The nodes the operator's own pods run on, when it runs in the cluster.
async fn operator_nodes(client: &Client, opts: &Options) -> kube::Result<Option<Vec<String>>> {
    Ok(match &opts.operator_pods {
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
    })
}

/// What each SLO's probe depends on: a Service's or workload's pods, a
/// Service named by an in-cluster DNS name (`name.namespace[.svc...]`), and
/// for Prometheus probes the Prometheus server's Service. Names that are not
/// in-cluster (loopback, external hosts) tell nothing.
pub async fn slo_targets(client: &Client, slos: &[SloSpec]) -> kube::Result<Vec<SloTarget>> {
    let mut out = vec![];
    for slo in slos {
        let p = &slo.probe;
        let mut t = SloTarget {
            slo: slo.name.clone(),
            backing: None,
            prober: None,
            need: 1,
        };
        if let Some(k) = &p.kubernetes {
            if let Some(s) = &k.service {
                t.backing = service_target(client, &s.namespace, &s.name).await?;
                t.need = s.min_ready_endpoints;
            }
            if let Some(w) = &k.workload {
                t.backing = workload_target(client, w.kind, &w.namespace, &w.name).await?;
                t.need = w.min_available;
            }
        }
        let host = p
            .http
            .as_ref()
            .map(|h| url_host(&h.url))
            .or_else(|| p.write.as_ref().map(|w| url_host(&w.url)))
            .or_else(|| p.tcp.as_ref().map(|t| t.host.clone()));
        if let Some((ns, name)) = host.as_deref().and_then(service_of_host) {
            t.backing = service_target(client, &ns, &name).await?;
        }
        if let Some((ns, name)) = p
            .prometheus
            .as_ref()
            .and_then(|pr| service_of_host(&url_host(&pr.url)))
        {
            t.prober = service_target(client, &ns, &name).await?;
        }
        out.push(t);
    }
    Ok(out)
}

/// The namespace an SLO's probe looks into, where it can be told (a
/// Service or workload check, or an in-cluster name).
pub fn probe_namespace(slo: &SloSpec) -> Option<String> {
    let p = &slo.probe;
    if let Some(k) = &p.kubernetes {
        return k
            .service
            .as_ref()
            .map(|s| s.namespace.clone())
            .or_else(|| k.workload.as_ref().map(|w| w.namespace.clone()));
    }
    let host = p
        .http
        .as_ref()
        .map(|h| url_host(&h.url))
        .or_else(|| p.write.as_ref().map(|w| url_host(&w.url)))
        .or_else(|| p.tcp.as_ref().map(|t| t.host.clone()))?;
    service_of_host(&host).map(|(ns, _)| ns)
}

/// The host of a URL, without port or credentials.
pub fn url_host(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    if let Some(v6) = host.strip_prefix('[') {
        return v6.split(']').next().unwrap_or("").to_string();
    }
    host.split(':').next().unwrap_or("").to_string()
}

/// `name.namespace`, `name.namespace.svc` or `name.namespace.svc.<domain>`.
pub fn service_of_host(host: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = host.trim_end_matches('.').split('.').collect();
    let dns_label = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !s.starts_with('-')
            && !s.chars().all(|c| c.is_ascii_digit())
    };
    match parts.as_slice() {
        [name, ns] | [name, ns, "svc", ..] if dns_label(name) && dns_label(ns) => {
            Some((ns.to_string(), name.to_string()))
        }
        _ => None,
    }
}

async fn service_target(client: &Client, ns: &str, name: &str) -> kube::Result<Option<Target>> {
    let svc = match Api::<Service>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
    {
        Ok(s) => s,
        // Not allowed to read it: the plan cannot tell, which is no reason to refuse.
        Err(kube::Error::Api(e)) if e.code == 403 => None,
        Err(e) => return Err(e),
    };
    Ok(svc.and_then(|s| {
        let selector = s.spec?.selector.filter(|m| !m.is_empty())?;
        Some(Target {
            what: format!("Service {ns}/{name}"),
            namespace: ns.to_string(),
            selector: Selector::from_iter(selector),
        })
    }))
}

async fn workload_target(
    client: &Client,
    kind: WorkloadKind,
    ns: &str,
    name: &str,
) -> kube::Result<Option<Target>> {
    let c = client.clone();
    let selector = match kind {
        WorkloadKind::Deployment => Api::<Deployment>::namespaced(c, ns)
            .get_opt(name)
            .await?
            .and_then(|d| Some(d.spec?.selector)),
        WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(c, ns)
            .get_opt(name)
            .await?
            .and_then(|d| Some(d.spec?.selector)),
        WorkloadKind::DaemonSet => Api::<DaemonSet>::namespaced(c, ns)
            .get_opt(name)
            .await?
            .and_then(|d| Some(d.spec?.selector)),
        WorkloadKind::ReplicaSet => Api::<ReplicaSet>::namespaced(c, ns)
            .get_opt(name)
            .await?
            .and_then(|d| Some(d.spec?.selector)),
    };
    Ok(selector
        .and_then(|s| Selector::try_from(s).ok())
        .map(|selector| Target {
            what: format!("{kind:?} {ns}/{name}"),
            namespace: ns.to_string(),
            selector,
        }))
}

/// What to look for among the cluster's pods: the pods the zone's pods'
/// spread constraints and pod (anti-)affinity terms count, and the pods
/// behind the SLOs' probes. Keyed by (namespace or every namespace, the
/// selector written out), so each is looked for once.
type PeerQueries = BTreeMap<(Option<String>, String), Selector>;

fn peer_queries(pods: &[PodInfo], targets: &[SloTarget]) -> PeerQueries {
    let mut queries = PeerQueries::new();
    let mut add = |ns: Option<&str>, sel: &Selector| {
        queries
            .entry((ns.map(str::to_string), sel.to_string()))
            .or_insert_with(|| sel.clone());
    };
    for t in targets
        .iter()
        .flat_map(|t| t.backing.iter().chain(&t.prober))
    {
        add(Some(&t.namespace), &t.selector);
    }
    for p in pods {
        for c in &p.spread {
            add(Some(&p.namespace), &c.selector);
        }
        for t in p.affinity.iter().chain(&p.anti_affinity) {
            if t.all_namespaces {
                add(None, &t.selector);
            } else if t.namespaces.is_empty() {
                add(Some(&p.namespace), &t.selector);
            } else {
                for ns in &t.namespaces {
                    add(Some(ns), &t.selector);
                }
            }
        }
    }
    queries
}

/// What one pass over the cluster's pods found.
struct PodScan {
    queries: PeerQueries,
    /// What the running pods request, per node, when asked for.
    requested: Option<HashMap<String, Requested>>,
    /// The pods some query matches, with only what counting them needs.
    peers: Vec<PodInfo>,
    label_sets: LabelSets,
    /// The cascade discovery, fed the pods outside the zone.
    discovery: Option<Discovery>,
}

impl PodScan {
    fn add(&mut self, info: &PodInfo) {
        if info.finished {
            return;
        }
        if let Some(requested) = self.requested.as_mut()
            && !info.node.is_empty()
        {
            let r = requested.entry(info.node.clone()).or_default();
            r.cpu_millis = r.cpu_millis.saturating_add(info.cpu_millis);
            r.memory_bytes = r.memory_bytes.saturating_add(info.memory_bytes);
            r.pods += 1;
        }
        let wanted = self.queries.iter().any(|((ns, _), sel)| {
            ns.as_ref().is_none_or(|ns| *ns == info.namespace) && sel.matches(&info.labels)
        });
        if wanted {
            let mut peer = slim(info);
            peer.labels = self.label_sets.share(&info.labels);
            self.peers.push(peer);
        }
    }
}

/// One pass over every pod not finished: the requests summed per node when
/// asked, the pods the queries match, kept in a slim form, and each
/// workload's configuration fed to the cascade discovery when asked. The zone's
/// pods are already read; the rest are listed node by node (`conc` lists in
/// flight), plus the pods not yet scheduled, each list reduced as it
/// arrives. Skipped when there is nothing to sum, discover or look for.
///
/// Per-node lists are answered from the API server's watch cache through
/// its index on `spec.nodeName`, in parallel; a paged list of every pod is
/// sequential and one label-selector list per query costs far more (each
/// later page is read by scanning everything after the previous one).
async fn scan_pods(
    client: &Client,
    zone_pods: &[PodInfo],
    other_nodes: Vec<String>,
    mut scan: PodScan,
    conc: usize,
) -> kube::Result<PodScan> {
    if scan.requested.is_none() && scan.queries.is_empty() && scan.discovery.is_none() {
        return Ok(scan);
    }
    for p in zone_pods {
        scan.add(p);
    }
    // "" lists the pods no node has taken yet.
    let mut lists = stream::iter(other_nodes.into_iter().chain([String::new()]))
        .map(|node| pods_on_node(client, node))
        .buffer_unordered(conc);
    while let Some(mut pods) = lists.try_next().await? {
        for p in &mut pods {
            if let Some(d) = scan.discovery.as_mut() {
                p.labels = scan.label_sets.share(&p.labels);
                d.add(p, false);
            }
            scan.add(p);
        }
    }
    scan.peers.shrink_to_fit();
    Ok(scan)
}

/// A peer as the planner counts it: where it runs, its labels, whether it
/// is leaving, what owns it. Its own scheduling rules are dropped.
fn slim(p: &PodInfo) -> PodInfo {
    PodInfo {
        namespace: p.namespace.clone(),
        name: p.name.clone(),
        node: p.node.clone(),
        labels: p.labels.clone(),
        owner: p.owner.clone(),
        node_selector: BTreeMap::new(),
        required_terms: Vec::new(),
        pvcs: Vec::new(),
        tolerations: Vec::new(),
        spread: Vec::new(),
        affinity: Vec::new(),
        anti_affinity: Vec::new(),
        refs: Vec::new(),
        config_maps: Vec::new(),
        ..*p
    }
}

/// Lists `lp` page by page ([`PAGE`] objects at a time), handing each page
/// to `f`, so no more than one page of full objects is held.
async fn for_each_page<K>(
    api: &Api<K>,
    lp: ListParams,
    mut f: impl FnMut(Vec<K>),
) -> kube::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut lp = lp.limit(PAGE);
    loop {
        let page = api.list(&lp).await?;
        f(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => lp = lp.continue_token(&token),
            None => return Ok(()),
        }
    }
}

/// Every node, paginated.
pub async fn list_nodes(client: &Client) -> kube::Result<Vec<NodeInfo>> {
    let api = Api::<Node>::all(client.clone());
    let mut out = Vec::new();
    for_each_page(&api, ListParams::default(), |items| {
        out.extend(items.iter().map(node_info))
    })
    .await?;
    Ok(out)
}

/// The pods bound to one node (`""`: the pods not scheduled yet), from the
/// API server's cache.
pub async fn pods_on_node(client: &Client, node: String) -> kube::Result<Vec<PodInfo>> {
    Ok(super::lite::pods_on_node(client, &node, true)
        .await?
        .iter()
        .map(pod_info)
        .collect())
}

pub fn node_info(n: &Node) -> NodeInfo {
    let status = n.status.as_ref();
    let alloc = status.and_then(|s| s.allocatable.as_ref());
    NodeInfo {
        addresses: status
            .and_then(|s| s.addresses.as_ref())
            .map(|a| {
                a.iter()
                    .filter(|a| a.type_ == "InternalIP")
                    .map(|a| a.address.clone())
                    .collect()
            })
            .unwrap_or_default(),
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
        max_pods: alloc
            .and_then(|a| a.get("pods"))
            .and_then(|q| parse_quantity(&q.0))
            .map(clamp_quantity)
            .unwrap_or(0),
        taints: n
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .map(|ts| {
                ts.iter()
                    .map(|t| TaintInfo {
                        key: t.key.clone(),
                        value: t.value.clone().unwrap_or_default(),
                        effect: t.effect.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        requested: None,
    }
}

/// A pod (anti-)affinity term as the planner reads it.
fn pod_term(t: &PodAffinityTerm, labels: &BTreeMap<String, String>) -> Option<PodTermInfo> {
    let mut selector = Selector::try_from(t.label_selector.clone().unwrap_or_default()).ok()?;
    add_label_keys(&mut selector, t.match_label_keys.as_deref(), labels);
    let all_namespaces = t.namespace_selector.as_ref().is_some_and(|ns| {
        ns.match_labels.as_ref().is_none_or(|m| m.is_empty())
            && ns.match_expressions.as_ref().is_none_or(|e| e.is_empty())
    });
    Some(PodTermInfo {
        selector,
        namespaces: t.namespaces.clone().unwrap_or_default(),
        all_namespaces,
        topology_key: t.topology_key.clone(),
    })
}

/// `matchLabelKeys`: the selector also requires the pod's own value of each
/// key it has.
fn add_label_keys(
    selector: &mut Selector,
    keys: Option<&[String]>,
    labels: &BTreeMap<String, String>,
) {
    for key in keys.into_iter().flatten() {
        if let Some(v) = labels.get(key) {
            selector.extend([Expression::In(key.clone(), [v.clone()].into())]);
        }
    }
}

pub fn pod_info(p: &Pod) -> PodInfo {
    let spec = p.spec.as_ref();
    let status = p.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("");
    let (cpu, mem) = spec.map(requests).unwrap_or((0, 0));
    let labels = Labels::new(p.labels().clone());
    let affinity = spec.and_then(|s| s.affinity.as_ref());
    let pod_affinity = required_pod_terms(
        affinity
            .and_then(|a| a.pod_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            }),
        &labels,
    );
    let pod_anti_affinity = required_pod_terms(
        affinity
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            }),
        &labels,
    );
    let (refs, config_maps) = spec.map(references).unwrap_or_default();
    PodInfo {
        tolerations: spec.map(tolerations).unwrap_or_default(),
        spread: spec.map(|s| spread(s, &labels)).unwrap_or_default(),
        affinity: pod_affinity,
        anti_affinity: pod_anti_affinity,
        terminating: p.metadata.deletion_timestamp.is_some(),
        namespace: p.namespace().unwrap_or_default(),
        name: p.name_any(),
        node: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        labels,
        owner: controller_owner(p),
        mirror: p.annotations().contains_key(super::lite::MIRROR_ANNOTATION),
        ready: status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
        finished: phase == "Succeeded" || phase == "Failed",
        node_selector: spec
            .and_then(|s| s.node_selector.clone())
            .unwrap_or_default(),
        required_terms: spec.map(required_node_terms).unwrap_or_default(),
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
        refs,
        config_maps,
    }
}

/// The hosts a pod's containers name in their env values, args and
/// command, and the ConfigMaps they read (a Secret's values never).
pub fn references(s: &PodSpec) -> (Vec<Reference>, Vec<ConfigMapUse>) {
    let mut refs = vec![];
    let mut cms = vec![];
    for c in &s.containers {
        for e in c.env.iter().flatten() {
            if let Some(v) = &e.value {
                refs.extend(cascade::env_refs(&e.name, v));
            }
            if let Some(k) = e
                .value_from
                .as_ref()
                .and_then(|f| f.config_map_key_ref.as_ref())
            {
                cms.push(ConfigMapUse {
                    name: k.name.clone(),
                    key: Some(k.key.clone()),
                    via: format!("env {}", e.name),
                });
            }
        }
        for f in c.env_from.iter().flatten() {
            if let Some(r) = &f.config_map_ref {
                cms.push(ConfigMapUse {
                    name: r.name.clone(),
                    key: None,
                    via: "envFrom".into(),
                });
            }
        }
        refs.extend(cascade::args_refs(
            "args",
            c.args.as_deref().unwrap_or_default(),
        ));
        refs.extend(cascade::args_refs(
            "command",
            c.command.as_deref().unwrap_or_default(),
        ));
    }
    for v in s.volumes.iter().flatten() {
        if let Some(cm) = &v.config_map {
            cms.push(ConfigMapUse {
                name: cm.name.clone(),
                key: None,
                via: format!("volume {}", v.name),
            });
        }
    }
    refs.sort();
    refs.dedup();
    cms.sort();
    cms.dedup();
    (refs, cms)
}

/// The owner that controls the pod, if any.
fn controller_owner(p: &Pod) -> Option<OwnerKey> {
    p.owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| OwnerKey {
            kind: o.kind.clone(),
            namespace: p.namespace().unwrap_or_default(),
            name: o.name.clone(),
        })
}

/// What the pod's containers request: CPU in millicores, memory in bytes.
fn requests(s: &PodSpec) -> (i64, i64) {
    s.containers
        .iter()
        .filter_map(|c| c.resources.as_ref()?.requests.as_ref())
        .fold((0, 0), |(c, m), r| {
            (
                c + r.get("cpu").map(cpu_millis).unwrap_or(0),
                m + r.get("memory").map(bytes).unwrap_or(0),
            )
        })
}

/// Required node affinity: its terms, each a list of requirements.
fn required_node_terms(s: &PodSpec) -> Vec<Vec<Requirement>> {
    s.affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
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
        .unwrap_or_default()
}

/// Required pod (anti-)affinity terms, as the planner reads them.
fn required_pod_terms(
    terms: Option<&Vec<PodAffinityTerm>>,
    labels: &BTreeMap<String, String>,
) -> Vec<PodTermInfo> {
    terms
        .into_iter()
        .flatten()
        .filter_map(|t| pod_term(t, labels))
        .collect()
}

/// The topology spread constraints with `whenUnsatisfiable: DoNotSchedule`.
fn spread(s: &PodSpec, labels: &BTreeMap<String, String>) -> Vec<SpreadInfo> {
    s.topology_spread_constraints
        .iter()
        .flatten()
        .filter(|c| c.when_unsatisfiable == "DoNotSchedule")
        .filter_map(|c| {
            let mut selector =
                Selector::try_from(c.label_selector.clone().unwrap_or_default()).ok()?;
            add_label_keys(&mut selector, c.match_label_keys.as_deref(), labels);
            Some(SpreadInfo {
                max_skew: c.max_skew,
                topology_key: c.topology_key.clone(),
                selector,
                min_domains: c.min_domains,
                honor_node_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
                honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
            })
        })
        .collect()
}

fn tolerations(s: &PodSpec) -> Vec<TolerationInfo> {
    s.tolerations
        .iter()
        .flatten()
        .map(|t| TolerationInfo {
            key: t.key.clone().unwrap_or_default(),
            operator: t.operator.clone().unwrap_or_else(|| "Equal".into()),
            value: t.value.clone().unwrap_or_default(),
            effect: t.effect.clone().unwrap_or_default(),
        })
        .collect()
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
    // The zone keys in use: the experiment's, the standard one, its
    // deprecated form, and the ones CSI drivers put on the volumes they make.
    let zone_keys = [
        topology_key,
        "topology.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/zone",
        "topology.gke.io/zone",
        "topology.disk.csi.azure.com/zone",
        "topology.ebs.csi.aws.com/zone",
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
pub fn surviving_capacity(nodes: &[NodeInfo], keep: impl Fn(&NodeInfo) -> bool) -> Capacity {
    let mut free = Capacity::default();
    for n in nodes
        .iter()
        .filter(|n| keep(n) && !n.unschedulable && n.ready)
    {
        let r = n.requested.unwrap_or_default();
        free.cpu_millis = free
            .cpu_millis
            .saturating_add(n.cpu_millis.saturating_sub(r.cpu_millis));
        free.memory_bytes = free
            .memory_bytes
            .saturating_add(n.memory_bytes.saturating_sub(r.memory_bytes));
    }
    free
}

/// The largest quantity the planner counts (2^53, where f64 stops being
/// exact); negative or unreadable quantities count as 0. Sums saturate.
const MAX_QUANTITY: f64 = 9_007_199_254_740_992.0;

fn clamp_quantity(v: f64) -> i64 {
    if v.is_nan() {
        0
    } else {
        v.round().clamp(0.0, MAX_QUANTITY) as i64
    }
}

/// CPU quantity in millicores: `250m`, `2`, `0.5`.
pub fn cpu_millis(q: &Quantity) -> i64 {
    parse_quantity(&q.0)
        .map(|v| clamp_quantity(v * 1000.0))
        .unwrap_or(0)
}

/// Memory quantity in bytes: `64Mi`, `1G`, `1e9`, `129e6`.
pub fn bytes(q: &Quantity) -> i64 {
    parse_quantity(&q.0).map(clamp_quantity).unwrap_or(0)
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
    fn in_cluster_names_name_a_service() {
        assert_eq!(
            url_host("https://user:pw@login.auth.svc:8443/healthz?x"),
            "login.auth.svc"
        );
        assert_eq!(url_host("http://[::1]:80/"), "::1");
        let svc = |h: &str| service_of_host(h);
        assert_eq!(svc("login.auth"), Some(("auth".into(), "login".into())));
        assert_eq!(
            svc("login.auth.svc.cluster.local"),
            Some(("auth".into(), "login".into()))
        );
        assert_eq!(
            svc("prometheus.monitoring.svc."),
            Some(("monitoring".into(), "prometheus".into()))
        );
        assert_eq!(svc("127.0.0.1"), None);
        assert_eq!(svc("localhost"), None);
        assert_eq!(svc("api.example.com"), None);
    }

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
        for key in [
            "topology.gke.io/zone",
            "topology.disk.csi.azure.com/zone",
            "topology.ebs.csi.aws.com/zone",
            "failure-domain.beta.kubernetes.io/zone",
        ] {
            let csi: PersistentVolume = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "pv"},
                "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": key, "operator": "In", "values": ["zone-a"]}]}]}}}
            }))
            .unwrap();
            assert_eq!(
                pv_topology(&csi, "topology.kubernetes.io/zone")
                    .unwrap()
                    .zones,
                ["zone-a"],
                "{key}"
            );
        }
        let none: PersistentVolume =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "pv"}, "spec": {}}))
                .unwrap();
        assert_eq!(pv_topology(&none, "topology.kubernetes.io/zone"), None);
    }
}
