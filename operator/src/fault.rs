//! The fault: cordon the zone, kill its pods with grace period 0, taint it,
//! and keep killing whatever lands there while it is dark.
//!
//! Every node change is recorded on the node itself, in the same atomic patch
//! that makes the change: a label naming the experiment (so the nodes can be
//! found with a label selector) and an annotation with the prior state. The
//! patch carries the node's resourceVersion, so it applies to exactly the
//! state it was computed from. A restarted operator restores from these marks
//! alone.
//!
//! Scope is honoured by the mechanism, not only by the kill list: the taint
//! that keeps the zone dark is `NoExecute` only when the experiment targets
//! the whole zone and nothing on it was spared; otherwise it is `NoSchedule`
//! (with the cordon and the keeper's re-kills), so a pod the plan spared is
//! never evicted by the taint manager.

use crate::api::{DataCenterFailure, Phase};
use crate::plan::{PodInfo, Scope, collect};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions, WatchEvent, WatchParams,
};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Label on every node an experiment changed; its value is the experiment's
/// name, or its uid when the name is longer than a label value may be.
pub const MARK_LABEL: &str = "chaos.firedrill.dev/experiment";
/// Annotation with the node's state before the experiment changed it.
pub const MARK_ANNOTATION: &str = "chaos.firedrill.dev/prior-state";
/// Key of the taint that keeps the zone dark; its value is the same as the mark label's.
pub const TAINT_KEY: &str = "chaos.firedrill.dev/zone-down";
use crate::api::POWER_LABEL;

/// The longest label (and taint) value Kubernetes accepts.
const MAX_LABEL_VALUE: usize = 63;

/// Who is changing the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Experiment {
    pub name: String,
    pub uid: String,
}

impl Experiment {
    pub fn of(obj: &DataCenterFailure) -> Self {
        Experiment {
            name: obj.name_any(),
            uid: obj.uid().unwrap_or_default(),
        }
    }

    /// The value of the mark label and of the taint: the name when it fits a
    /// label value (an object name is a DNS subdomain, so it is a valid label
    /// value up to 63 characters), else the uid.
    pub fn mark_value(&self) -> String {
        mark_value(&self.name, &self.uid)
    }
}

/// A label value that names an object: its name when that fits a label value,
/// else its uid.
pub fn mark_value(name: &str, uid: &str) -> String {
    if name.len() <= MAX_LABEL_VALUE {
        name.to_string()
    } else {
        uid.to_string()
    }
}

/// What the experiment did to one node, and what was there before.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeMark {
    pub experiment: String,
    pub uid: String,
    /// `spec.unschedulable` before the experiment.
    pub prior_unschedulable: bool,
    /// The experiment set `spec.unschedulable` (it was false before).
    pub cordoned: bool,
    /// The experiment added its taint.
    pub tainted: bool,
    /// The effect of that taint: `NoExecute` or `NoSchedule`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taint_effect: Option<String>,
    /// The experiment cut the node's power (PowerLoss mode).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub power_loss: bool,
}

impl NodeMark {
    pub fn read(node: &Node) -> Option<NodeMark> {
        serde_json::from_str(node.annotations().get(MARK_ANNOTATION)?).ok()
    }

    /// The value this mark's taint carries.
    fn taint_value(&self) -> String {
        mark_value(&self.experiment, &self.uid)
    }
}

/// Whether `node` carries the taint of the experiment that marked it.
fn has_own_taint(node: &Node, mark: &NodeMark) -> bool {
    let value = mark.taint_value();
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| {
            ts.iter()
                .any(|t| t.key == TAINT_KEY && t.value.as_deref() == Some(value.as_str()))
        })
}

/// Why a node cannot be marked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MarkError {
    #[error("node {node} is already held by experiment {other}")]
    HeldByOther { node: String, other: String },
}

/// How a node is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// Marked, and cordoned if asked (CordonAndKill).
    Cordon(bool),
    /// Marked and its power cut until `until` (Unix seconds) at the latest.
    PowerLoss { until: i64 },
}

/// The merge patch that marks one node and cordons it (or cuts its power),
/// or `None` when this experiment already marked it (injection is
/// idempotent). The taint comes later ([`taint_patch`]), after the pods were
/// killed: a fire kills with grace period 0, it does not let taint-based
/// eviction shut pods down gracefully.
pub fn mark_patch(node: &Node, exp: &Experiment, how: Hold) -> Result<Option<Value>, MarkError> {
    let cordon = matches!(how, Hold::Cordon(true));
    if let Some(mark) = NodeMark::read(node) {
        if mark.uid == exp.uid {
            return Ok(None);
        }
        return Err(MarkError::HeldByOther {
            node: node.name_any(),
            other: mark.experiment,
        });
    }
    let prior = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    let mark = NodeMark {
        experiment: exp.name.clone(),
        uid: exp.uid.clone(),
        prior_unschedulable: prior,
        cordoned: cordon && !prior,
        tainted: false,
        taint_effect: None,
        power_loss: matches!(how, Hold::PowerLoss { .. }),
    };
    let spec = if mark.cordoned {
        json!({"unschedulable": true})
    } else {
        json!({})
    };
    let mut labels = serde_json::Map::new();
    labels.insert(MARK_LABEL.into(), exp.mark_value().into());
    if let Hold::PowerLoss { until } = how {
        labels.insert(POWER_LABEL.into(), until.to_string().into());
    }
    Ok(Some(json!({
        "metadata": {
            "resourceVersion": node.resource_version(),
            "labels": labels,
            "annotations": { MARK_ANNOTATION: serde_json::to_string(&mark).unwrap() },
        },
        "spec": spec,
    })))
}

/// The taint that keeps a zone dark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DarkTaint {
    /// Evicts every pod that does not tolerate it: only for a whole-zone scope.
    NoExecute,
    /// Keeps new pods off; pods already there stay (spared pods survive).
    NoSchedule,
}

impl DarkTaint {
    pub fn as_str(self) -> &'static str {
        match self {
            DarkTaint::NoExecute => "NoExecute",
            DarkTaint::NoSchedule => "NoSchedule",
        }
    }

    /// Which taint a zone may get: NoExecute only when the scope is the whole
    /// zone and no pod on it was spared.
    pub fn for_scope(scope: &Scope, spared_on_zone: i64) -> Self {
        if scope.targets_whole_zone() && spared_on_zone == 0 {
            DarkTaint::NoExecute
        } else {
            DarkTaint::NoSchedule
        }
    }
}

/// The merge patch that adds the experiment's taint to a node it holds,
/// recording that in the mark. `None` when the node is not held by this
/// experiment or already tainted.
pub fn taint_patch(node: &Node, exp: &Experiment, effect: DarkTaint) -> Option<Value> {
    let mut mark = NodeMark::read(node).filter(|m| m.uid == exp.uid)?;
    let mut taints: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let has = has_own_taint(node, &mark);
    if has && mark.tainted {
        return None;
    }
    if !has {
        taints.push(Taint {
            key: TAINT_KEY.into(),
            value: Some(exp.mark_value()),
            effect: effect.as_str().into(),
            time_added: None,
        });
    }
    mark.tainted = true;
    mark.taint_effect = Some(effect.as_str().into());
    Some(json!({
        "metadata": {
            "resourceVersion": node.resource_version(),
            "annotations": { MARK_ANNOTATION: serde_json::to_string(&mark).unwrap() },
        },
        "spec": { "taints": taints },
    }))
}

/// The merge patch that undoes exactly what `mark` says was done, and removes
/// the mark. A node an admin cordoned before the experiment stays cordoned.
/// `None` when the node carries no mark of this experiment.
pub fn restore_patch(node: &Node, uid: &str) -> Option<Value> {
    let mark = match NodeMark::read(node) {
        Some(m) if m.uid == uid => Some(m),
        Some(_) => return None,
        // A label whose record was lost: only the label can be removed.
        None if node.labels().contains_key(MARK_LABEL) => None,
        None => return None,
    };
    let mut spec = serde_json::Map::new();
    let mut labels = serde_json::Map::new();
    labels.insert(MARK_LABEL.into(), Value::Null);
    if mark.as_ref().is_none_or(|m| m.power_loss) || node.labels().contains_key(POWER_LABEL) {
        labels.insert(POWER_LABEL.into(), Value::Null);
    }
    if let Some(mark) = &mark {
        if mark.cordoned {
            spec.insert("unschedulable".into(), Value::Null);
        }
        let value = mark.taint_value();
        let taints: Vec<Taint> = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let kept: Vec<&Taint> = taints
            .iter()
            .filter(|t| !(t.key == TAINT_KEY && t.value.as_deref() == Some(value.as_str())))
            .collect();
        if kept.len() != taints.len() {
            spec.insert("taints".into(), serde_json::to_value(kept).unwrap());
        }
    }
    Some(json!({
        "metadata": {
            "resourceVersion": node.resource_version(),
            "labels": labels,
            "annotations": { MARK_ANNOTATION: null },
        },
        "spec": spec,
    }))
}

/// Apply `compute` to a node with optimistic concurrency: on a conflict,
/// read the node again and recompute. Returns whether a patch was applied.
pub async fn patch_node<F>(nodes: &Api<Node>, name: &str, compute: F) -> Result<bool, crate::Error>
where
    F: Fn(&Node) -> Result<Option<Value>, crate::Error>,
{
    let Some(node) = nodes.get_opt(name).await? else {
        return Ok(false);
    };
    patch_seen_node(nodes, node, compute).await
}

/// [`patch_node`] starting from a node as it was just listed: the patch
/// carries that copy's resourceVersion, so a node changed since is read
/// again (a conflict) and nothing is applied to a state not seen.
pub async fn patch_seen_node<F>(
    nodes: &Api<Node>,
    seen: Node,
    compute: F,
) -> Result<bool, crate::Error>
where
    F: Fn(&Node) -> Result<Option<Value>, crate::Error>,
{
    let name = seen.name_any();
    let mut node = seen;
    let mut attempt = 0;
    loop {
        let Some(patch) = compute(&node)? else {
            return Ok(false);
        };
        match nodes
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 && attempt < 10 => attempt += 1,
            // The node went away between the read and the patch.
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        match nodes.get_opt(&name).await? {
            Some(n) => node = n,
            None => return Ok(false),
        }
    }
}

/// Mark every node in `nodes`, and cordon it or cut its power.
pub async fn hold_nodes(
    client: &Client,
    exp: &Experiment,
    nodes: &[String],
    how: Hold,
    concurrency: usize,
) -> Result<(), crate::Error> {
    let api = Api::<Node>::all(client.clone());
    stream::iter(nodes.iter().cloned())
        .map(|name| {
            let api = api.clone();
            async move {
                patch_node(&api, &name, |n| {
                    mark_patch(n, exp, how).map_err(crate::Error::from)
                })
                .await
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// Taint every node this experiment holds.
pub async fn taint_nodes(
    client: &Client,
    exp: &Experiment,
    effect: DarkTaint,
    concurrency: usize,
) -> Result<(), crate::Error> {
    let api = Api::<Node>::all(client.clone());
    let held = held_nodes(client, &exp.uid).await?;
    stream::iter(held)
        .map(|node| {
            let api = api.clone();
            async move { patch_seen_node(&api, node, |n| Ok(taint_patch(n, exp, effect))).await }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// (cordoned, tainted) counts over the nodes this experiment holds.
pub async fn held_counts(client: &Client, exp: &Experiment) -> kube::Result<(i32, i32)> {
    let marks: Vec<NodeMark> = held_nodes(client, &exp.uid)
        .await?
        .iter()
        .filter_map(NodeMark::read)
        .collect();
    Ok((
        marks.iter().filter(|m| m.cordoned).count() as i32,
        marks.iter().filter(|m| m.tainted).count() as i32,
    ))
}

/// Nodes carrying this experiment's mark. Only marked nodes are listed (a
/// label selector on the mark's key); the experiment is told by the uid in
/// the mark, never by the label's value.
pub async fn held_nodes(client: &Client, uid: &str) -> kube::Result<Vec<Node>> {
    let lp = ListParams::default().labels(MARK_LABEL);
    Ok(Api::<Node>::all(client.clone())
        .list(&lp)
        .await?
        .items
        .into_iter()
        .filter(|n| NodeMark::read(n).is_some_and(|m| m.uid == uid))
        .collect())
}

/// API calls in flight at once for node patches and pod deletes, unless
/// `--concurrency` says otherwise. On the 2-CPU testbed, 10,000 pods of a
/// 30,000-pod cluster: 128 in flight took 36.7 s to kill them, 256 took
/// 32.3 s, an unthrottled deleter at its best (256) 35.6 s in all.
pub const DEFAULT_WRITE_CONCURRENCY: usize = 256;

/// How often a pod delete that fails (a server error, a lost connection) is
/// tried before the pod counts as not killed.
const KILL_ATTEMPTS: u32 = 5;

/// How long one pod's delete may wait in total while the API server throttles
/// it (HTTP 429) before the pod counts as not killed. Throttling is the API
/// server's priority and fairness at work, not a failure: it is waited out
/// rather than counted against [`KILL_ATTEMPTS`].
const THROTTLE_BUDGET: Duration = Duration::from_secs(120);

/// Why a pod could not be killed.
#[derive(Debug, thiserror::Error)]
#[error("{pod}: {why}")]
pub struct KillError {
    pub pod: String,
    pub why: String,
}

/// The wait before retry `attempt` (1-based): doubling from 100 ms up to
/// `cap`, with up to half of it taken off by a jitter derived from `seed`, so
/// deletes throttled together do not come back together.
pub fn retry_wait(attempt: u32, cap: Duration, seed: u64) -> Duration {
    let full = Duration::from_millis(100)
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(cap);
    // splitmix64: a well-spread value from (seed, attempt) without a random source.
    let mut z = seed ^ (u64::from(attempt)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let off = full.as_micros() as u64 / 2 * (z % 1024) / 1024;
    full - Duration::from_micros(off)
}

fn seed_of(pod: &PodInfo) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    pod.namespace.hash(&mut h);
    pod.name.hash(&mut h);
    h.finish()
}

/// Delete one pod with grace period 0, only if it is still the pod we saw.
/// Returns whether this call killed it. Server errors and lost connections
/// are retried with backoff, at most [`KILL_ATTEMPTS`] times; throttling
/// (429) is waited out for up to [`THROTTLE_BUDGET`].
pub async fn kill(client: &Client, pod: &PodInfo, uid: Option<String>) -> Result<bool, KillError> {
    let api = Api::<Pod>::namespaced(client.clone(), &pod.namespace);
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: uid.map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..Default::default()
    };
    let seed = seed_of(pod);
    let mut failures = 0;
    let mut throttles = 0;
    let mut throttled_for = Duration::ZERO;
    loop {
        let (why, wait) = match api.delete(&pod.name, &dp).await {
            Ok(_) => return Ok(true),
            // Gone already, or replaced by a new pod of the same name: nothing to kill.
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => return Ok(false),
            Err(kube::Error::Api(e)) if e.code == 429 => {
                throttles += 1;
                let wait = retry_wait(throttles, Duration::from_secs(5), seed);
                if throttled_for + wait > THROTTLE_BUDGET {
                    return Err(KillError {
                        pod: pod.key(),
                        why: format!(
                            "HTTP 429: {} (throttled for {} s)",
                            e.message,
                            throttled_for.as_secs()
                        ),
                    });
                }
                throttled_for += wait;
                tokio::time::sleep(wait).await;
                continue;
            }
            Err(kube::Error::Api(e)) if e.code >= 500 => {
                failures += 1;
                (
                    format!("HTTP {}: {}", e.code, e.message),
                    retry_wait(failures, Duration::from_secs(2), seed),
                )
            }
            Err(kube::Error::Api(e)) => {
                return Err(KillError {
                    pod: pod.key(),
                    why: format!("HTTP {}: {}", e.code, e.message),
                });
            }
            Err(e) => {
                failures += 1;
                (
                    e.to_string(),
                    retry_wait(failures, Duration::from_secs(2), seed),
                )
            }
        };
        if failures >= KILL_ATTEMPTS {
            return Err(KillError {
                pod: pod.key(),
                why: format!("{why} (after {failures} attempts)"),
            });
        }
        tokio::time::sleep(wait).await;
    }
}

/// What one pass over the zone's pods did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KillReport {
    pub killed: i64,
    /// Pods on the nodes that the scope spares (finished pods not counted).
    pub spared: i64,
    /// Pods that could not be deleted, and the first reason.
    pub failed: i64,
    pub first_failure: Option<String>,
}

/// Kill every in-scope pod on `nodes`. Pods are listed per node (field
/// selector), never cluster-wide, and each node's pods are deleted as soon
/// as its list arrives, so the first kills do not wait for the last list.
/// A pod that cannot be deleted is counted and reported; the others are
/// still killed.
pub async fn kill_pods_on(
    client: &Client,
    nodes: &[String],
    scope: &Scope,
    concurrency: usize,
) -> Result<KillReport, crate::Error> {
    enum Found {
        Victim(Box<PodInfo>, Option<String>),
        Spared,
        ListFailed(kube::Error),
    }
    enum Done {
        Kill(Result<bool, KillError>),
        Spared,
        ListFailed(kube::Error),
    }
    let conc = concurrency.max(1);
    let found = stream::iter(nodes.iter().cloned())
        .map(|node| {
            let client = client.clone();
            async move { crate::plan::lite::pods_on_node(&client, &node, false).await }
        })
        .buffer_unordered(conc.min(32))
        .flat_map(|list| {
            let found: Vec<Found> = match list {
                Err(e) => vec![Found::ListFailed(e)],
                Ok(list) => list
                    .into_iter()
                    .filter_map(|p| {
                        let info = collect::pod_info(&p);
                        if info.finished {
                            None
                        } else if scope.in_scope(&info) {
                            Some(Found::Victim(Box::new(info), p.metadata.uid))
                        } else {
                            Some(Found::Spared)
                        }
                    })
                    .collect(),
            };
            stream::iter(found)
        });
    let mut done = found
        .map(|f| async move {
            match f {
                Found::Victim(info, uid) => Done::Kill(kill(client, &info, uid).await),
                Found::Spared => Done::Spared,
                Found::ListFailed(e) => Done::ListFailed(e),
            }
        })
        .buffer_unordered(conc);
    let mut report = KillReport::default();
    while let Some(d) = done.next().await {
        match d {
            Done::Kill(Ok(true)) => report.killed += 1,
            Done::Kill(Ok(false)) => {}
            Done::Kill(Err(e)) => {
                report.failed += 1;
                report.first_failure.get_or_insert_with(|| e.to_string());
            }
            Done::Spared => report.spared += 1,
            Done::ListFailed(e) => return Err(e.into()),
        }
    }
    Ok(report)
}

/// What [`inject`] is asked to do.
#[derive(Clone, Debug)]
pub struct Injection {
    pub exp: Experiment,
    /// Exactly these nodes (the list taken, and guarded, at Injecting).
    pub nodes: Vec<String>,
    pub cordon: bool,
    pub kill_pods: bool,
    pub keep_dark: bool,
    /// PowerLoss mode: cut the nodes' power until this Unix second at the
    /// latest; nothing is cordoned, killed or tainted.
    pub power_loss_until: Option<i64>,
    pub scope: Scope,
    pub concurrency: usize,
    /// Pause between node changes (to rehearse an operator crash mid-injection).
    pub pause: Option<Duration>,
}

/// What [`inject`] did.
#[derive(Clone, Debug, Default)]
pub struct Injected {
    pub kills: KillReport,
    pub taint: Option<DarkTaint>,
    pub hold_ms: u64,
    pub kill_ms: u64,
    pub taint_ms: u64,
}

/// Take the zone down: mark and cordon, then kill with grace period 0, then
/// taint (the pods die as in a fire, not by graceful taint eviction). When a
/// pod could not be killed, the taint is not put on: the caller aborts.
pub async fn inject(client: &Client, job: &Injection) -> Result<Injected, crate::Error> {
    let t0 = Instant::now();
    let how = match job.power_loss_until {
        Some(until) => Hold::PowerLoss { until },
        None => Hold::Cordon(job.cordon),
    };
    match job.pause {
        Some(pause) => {
            for node in &job.nodes {
                hold_nodes(client, &job.exp, std::slice::from_ref(node), how, 1).await?;
                tokio::time::sleep(pause).await;
            }
        }
        None => hold_nodes(client, &job.exp, &job.nodes, how, job.concurrency).await?,
    }
    let t1 = Instant::now();
    if job.power_loss_until.is_some() {
        return Ok(Injected {
            hold_ms: (t1 - t0).as_millis() as u64,
            ..Default::default()
        });
    }
    let kills = if job.kill_pods {
        kill_pods_on(client, &job.nodes, &job.scope, job.concurrency).await?
    } else {
        KillReport::default()
    };
    let t2 = Instant::now();
    let mut taint = None;
    if job.keep_dark && kills.failed == 0 {
        // Without kills, a NoExecute taint would do the killing by eviction:
        // only a whole-zone scope whose pods were all killed may have it.
        let effect = if job.kill_pods {
            DarkTaint::for_scope(&job.scope, kills.spared)
        } else {
            DarkTaint::NoSchedule
        };
        taint_nodes(client, &job.exp, effect, job.concurrency).await?;
        taint = Some(effect);
    }
    let ms = |d: Duration| d.as_millis() as u64;
    Ok(Injected {
        kills,
        taint,
        hold_ms: ms(t1 - t0),
        kill_ms: ms(t2 - t1),
        taint_ms: ms(t2.elapsed()),
    })
}

// ---------------------------------------------------------------------------
// The keeper: keeps the zone dark while the experiment holds it.
// ---------------------------------------------------------------------------

/// At most this many notes about node changes are kept per experiment.
const MAX_NOTES: usize = 100;

/// What the keeper saw, shared with the controller.
#[derive(Debug, Default)]
pub struct KeeperState {
    pub rekilled: AtomicI64,
    notes: Mutex<Vec<String>>,
    /// Names of held nodes that were deleted while dark.
    pub deleted: Mutex<BTreeSet<String>>,
}

impl KeeperState {
    pub fn with_rekilled(n: i64) -> Self {
        KeeperState {
            rekilled: AtomicI64::new(n),
            ..Default::default()
        }
    }

    fn note(&self, note: String) {
        tracing::warn!("{note}");
        let mut notes = self.notes.lock().unwrap();
        if notes.len() < MAX_NOTES && !notes.contains(&note) {
            notes.push(note);
        }
    }

    /// Every note so far, oldest first.
    pub fn notes(&self) -> Vec<String> {
        self.notes.lock().unwrap().clone()
    }
}

/// Why the keeper stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeeperEnd {
    /// The experiment was deleted, replaced (another uid), or left the dark phases.
    ExperimentGone,
    ExperimentDone(Phase),
}

/// What the keeper watches.
#[derive(Clone, Debug)]
pub struct Keep {
    pub exp: Experiment,
    pub topology_key: String,
    pub zone: String,
    pub scope: Scope,
    /// Kill in-scope pods that land on the dark nodes.
    pub kill_pods: bool,
    pub concurrency: usize,
}

/// Keep the zone dark until the experiment is gone or done.
///
/// - It follows the nodes carrying this experiment's mark *and* taint (a
///   watch on marked nodes only), so it kills only on nodes that are dark at
///   that moment: a node restored, unmarked or deleted by anyone is left
///   alone from then on. Node changes are noted (deleted, moved to another
///   zone, mark removed by hand).
/// - It follows the experiment itself, and stops when it is deleted (even if
///   its finalizer was removed by hand, so no reconcile ever comes),
///   replaced, or leaves ZoneDown.
/// - With `kill_pods`, it watches every pod from the current
///   resourceVersion (no initial list, nothing cached) and kills any
///   in-scope pod bound to a dark node; on start and after every watch
///   restart, the dark nodes are swept once with per-node lists.
pub async fn keep_dark(
    client: Client,
    watch_client: Client,
    keep: Keep,
    state: Arc<KeeperState>,
) -> KeeperEnd {
    let dark: Arc<RwLock<BTreeSet<String>>> = Arc::default();
    let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);
    let nodes = follow_nodes(
        watch_client.clone(),
        &keep,
        dark.clone(),
        state.clone(),
        ready_tx,
    );
    let experiment = follow_experiment(watch_client.clone(), &keep.exp);
    let pods = async {
        if !keep.kill_pods {
            return std::future::pending().await;
        }
        let mut ready = ready_rx;
        let _ = ready.wait_for(|r| *r).await;
        rekill(&client, &watch_client, &keep, &dark, &state).await
    };
    tokio::select! {
        end = experiment => end,
        _ = nodes => KeeperEnd::ExperimentGone,
        _ = pods => KeeperEnd::ExperimentGone,
    }
}

/// Until the experiment is gone or leaves the dark phases.
async fn follow_experiment(watch_client: Client, exp: &Experiment) -> KeeperEnd {
    let api = Api::<DataCenterFailure>::all(watch_client);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={}", exp.name));
    let mut events = std::pin::pin!(watcher(api, cfg));
    let mut seen = false;
    while let Some(ev) = events.next().await {
        let obj = match ev {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => o,
            Ok(watcher::Event::Delete(_)) => return KeeperEnd::ExperimentGone,
            Ok(watcher::Event::Init) => {
                seen = false;
                continue;
            }
            Ok(watcher::Event::InitDone) if !seen => return KeeperEnd::ExperimentGone,
            Ok(watcher::Event::InitDone) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "keep-dark: experiment watch error; it retries");
                continue;
            }
        };
        seen = true;
        if obj.uid().as_deref() != Some(exp.uid.as_str()) {
            return KeeperEnd::ExperimentGone;
        }
        if obj.metadata.deletion_timestamp.is_some() {
            return KeeperEnd::ExperimentGone;
        }
        if let Some(p @ (Phase::Restoring | Phase::Completed | Phase::Aborted | Phase::Failed)) =
            obj.status.and_then(|s| s.phase)
        {
            return KeeperEnd::ExperimentDone(p);
        }
    }
    KeeperEnd::ExperimentGone
}

/// Keep `dark` equal to the nodes that carry this experiment's mark and taint.
async fn follow_nodes(
    watch_client: Client,
    keep: &Keep,
    dark: Arc<RwLock<BTreeSet<String>>>,
    state: Arc<KeeperState>,
    ready: tokio::sync::watch::Sender<bool>,
) {
    let api = Api::<Node>::all(watch_client);
    let mut events = std::pin::pin!(watcher(
        api.clone(),
        watcher::Config::default().labels(MARK_LABEL)
    ));
    let mut listing: BTreeSet<String> = BTreeSet::new();
    let mut moved: BTreeSet<String> = BTreeSet::new();
    let is_dark =
        |n: &Node| NodeMark::read(n).is_some_and(|m| m.uid == keep.exp.uid && has_own_taint(n, &m));
    while let Some(ev) = events.next().await {
        match ev {
            Ok(watcher::Event::Init) => listing.clear(),
            Ok(watcher::Event::InitApply(n)) => {
                if is_dark(&n) {
                    listing.insert(n.name_any());
                }
            }
            Ok(watcher::Event::InitDone) => {
                let mut d = dark.write().unwrap();
                for gone in d.difference(&listing) {
                    state.note(format!(
                        "node {gone} no longer carries the drill's mark and taint; its pods are left alone"
                    ));
                }
                *d = std::mem::take(&mut listing);
                drop(d);
                let _ = ready.send(true);
            }
            Ok(watcher::Event::Apply(n)) => {
                let name = n.name_any();
                let ours = NodeMark::read(&n).is_some_and(|m| m.uid == keep.exp.uid);
                if ours
                    && n.labels().get(&keep.topology_key) != Some(&keep.zone)
                    && moved.insert(name.clone())
                {
                    state.note(format!(
                        "node {name} was relabelled out of {} ({}={}) while dark; it stays held and is restored with the zone",
                        keep.zone,
                        keep.topology_key,
                        n.labels().get(&keep.topology_key).map(String::as_str).unwrap_or("")
                    ));
                }
                let mut d = dark.write().unwrap();
                if is_dark(&n) {
                    d.insert(name);
                } else if d.remove(&name) {
                    state.note(format!(
                        "node {name} no longer carries the drill's mark and taint; its pods are left alone"
                    ));
                }
            }
            Ok(watcher::Event::Delete(n)) => {
                let name = n.name_any();
                let was = dark.write().unwrap().remove(&name);
                let ours = NodeMark::read(&n).is_some_and(|m| m.uid == keep.exp.uid);
                // The watch says "deleted" both when the node is gone and
                // when it merely stopped matching (its mark label was taken
                // off), with the last state it saw either way: ask.
                let now = api.get_opt(&name).await.ok().flatten();
                let gone = match &now {
                    None => true,
                    Some(current) => current.uid() != n.uid(),
                };
                if ours && gone {
                    state.deleted.lock().unwrap().insert(name.clone());
                    state.note(format!(
                        "node {name} was deleted while dark; nothing of the drill is left on it"
                    ));
                } else if was {
                    state.note(format!(
                        "node {name} no longer carries the drill's mark and taint; its pods are left alone"
                    ));
                }
            }
            Err(e) => tracing::debug!(error = %e, "keep-dark: node watch error; it retries"),
        }
    }
}

/// Kill in-scope pods that land on dark nodes, until cancelled.
async fn rekill(
    client: &Client,
    watch_client: &Client,
    keep: &Keep,
    dark: &RwLock<BTreeSet<String>>,
    state: &KeeperState,
) {
    let api = Api::<Pod>::all(client.clone());
    let watch_api = Api::<Pod>::all(watch_client.clone());
    let count = |n: i64| {
        if n > 0 {
            state.rekilled.fetch_add(n, Ordering::Relaxed);
            crate::metrics::METRICS.pods_rekilled.inc_by(n as u64);
        }
    };
    loop {
        // Where the watch starts: the collection's current resourceVersion.
        let rv = match api.list_metadata(&ListParams::default().limit(1)).await {
            Ok(list) => list.metadata.resource_version.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %e, "keep-dark: cannot read the pod list version; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        let nodes: Vec<String> = dark.read().unwrap().iter().cloned().collect();
        match kill_pods_on(client, &nodes, &keep.scope, keep.concurrency).await {
            Ok(r) => {
                count(r.killed);
                if r.killed > 0 {
                    tracing::info!(
                        pods = r.killed,
                        "keep-dark: killed pods that landed on the dark zone"
                    );
                }
                if let Some(why) = r.first_failure {
                    tracing::warn!(
                        failed = r.failed,
                        "keep-dark: pods could not be killed: {why}"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "keep-dark: sweep failed"),
        }
        let wp = WatchParams::default().timeout(290);
        let stream = match watch_api.watch(&wp, &rv).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "keep-dark: watch failed; restarting");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut stream = std::pin::pin!(stream);
        // The server ends the watch after 290 s; a silent connection is dropped a little later.
        while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(300), stream.next()).await
        {
            let pod = match ev {
                Ok(WatchEvent::Added(p) | WatchEvent::Modified(p)) => p,
                Ok(WatchEvent::Error(e)) => {
                    tracing::debug!(code = e.code, "keep-dark: watch ended: {}", e.message);
                    break;
                }
                Ok(_) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "keep-dark: watch stream error");
                    break;
                }
            };
            let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_ref()) else {
                continue;
            };
            if pod.metadata.deletion_timestamp.is_some() || !dark.read().unwrap().contains(node) {
                continue;
            }
            let info = collect::pod_info(&pod);
            if !keep.scope.in_scope(&info) {
                continue;
            }
            match kill(client, &info, pod.metadata.uid.clone()).await {
                Ok(true) => {
                    count(1);
                    tracing::info!(pod = %info.key(), node = %info.node, "keep-dark: killed a pod that landed on the dark zone");
                }
                Ok(false) => {}
                Err(e) => tracing::warn!("keep-dark: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(unschedulable: Option<bool>, taints: Vec<Taint>) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "a1", "resourceVersion": "42", "labels": {"topology.kubernetes.io/zone": "zone-a"}},
            "spec": {"unschedulable": unschedulable, "taints": taints},
        }))
        .unwrap()
    }

    fn exp() -> Experiment {
        Experiment {
            name: "drill".into(),
            uid: "uid-1".into(),
        }
    }

    /// Apply a merge patch the way the API server does (RFC 7386).
    fn merge(target: &mut Value, patch: &Value) {
        if let (Some(t), Some(p)) = (target.as_object_mut(), patch.as_object()) {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else if v.is_object() && t.get(k).is_some_and(Value::is_object) {
                    merge(t.get_mut(k).unwrap(), v);
                } else {
                    t.insert(k.clone(), v.clone());
                }
            }
        } else {
            *target = patch.clone();
        }
    }

    fn applied(node: &Node, patch: &Value) -> Node {
        let mut v = serde_json::to_value(node).unwrap();
        merge(&mut v, patch);
        serde_json::from_value(v).unwrap()
    }

    fn take_down(n: &Node) -> Node {
        let held = applied(
            n,
            &mark_patch(n, &exp(), Hold::Cordon(true)).unwrap().unwrap(),
        );
        applied(
            &held,
            &taint_patch(&held, &exp(), DarkTaint::NoExecute).unwrap(),
        )
    }

    #[test]
    fn mark_records_the_prior_state_with_the_change() {
        let before = node(None, vec![]);
        let patch = mark_patch(&before, &exp(), Hold::Cordon(true))
            .unwrap()
            .unwrap();
        assert_eq!(
            patch["metadata"]["resourceVersion"], "42",
            "the patch is conditional on the state it was computed from"
        );
        let cordoned = applied(&before, &patch);
        assert!(
            cordoned
                .spec
                .as_ref()
                .unwrap()
                .taints
                .clone()
                .unwrap_or_default()
                .is_empty(),
            "no taint before the pods are killed"
        );
        assert!(!NodeMark::read(&cordoned).unwrap().tainted);
        let after = applied(
            &cordoned,
            &taint_patch(&cordoned, &exp(), DarkTaint::NoExecute).unwrap(),
        );
        assert_eq!(
            taint_patch(&after, &exp(), DarkTaint::NoExecute),
            None,
            "tainting twice is a no-op"
        );
        assert_eq!(after.spec.as_ref().unwrap().unschedulable, Some(true));
        let taints = after.spec.as_ref().unwrap().taints.clone().unwrap();
        assert_eq!(taints.len(), 1);
        assert_eq!(
            (taints[0].key.as_str(), taints[0].effect.as_str()),
            (TAINT_KEY, "NoExecute")
        );
        assert_eq!(after.labels()[MARK_LABEL], "drill");
        let mark = NodeMark::read(&after).unwrap();
        assert_eq!(
            mark,
            NodeMark {
                experiment: "drill".into(),
                uid: "uid-1".into(),
                prior_unschedulable: false,
                cordoned: true,
                tainted: true,
                taint_effect: Some("NoExecute".into()),
                power_loss: false,
            }
        );
        // Marking again is a no-op.
        assert_eq!(
            mark_patch(&after, &exp(), Hold::Cordon(true)).unwrap(),
            None
        );
        // Another experiment cannot take the node.
        let other = Experiment {
            name: "other".into(),
            uid: "uid-2".into(),
        };
        assert!(matches!(
            mark_patch(&after, &other, Hold::Cordon(true)),
            Err(MarkError::HeldByOther { .. })
        ));
        assert_eq!(taint_patch(&after, &other, DarkTaint::NoExecute), None);
    }

    #[test]
    fn restore_undoes_exactly_what_was_done() {
        let admin_taint = Taint {
            key: "dedicated".into(),
            value: Some("gpu".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        };
        let before = node(None, vec![admin_taint.clone()]);
        let down = take_down(&before);
        let up = applied(&down, &restore_patch(&down, "uid-1").unwrap());
        assert_eq!(up.spec.as_ref().unwrap().unschedulable, None);
        assert_eq!(
            up.spec.as_ref().unwrap().taints.clone().unwrap(),
            vec![admin_taint]
        );
        assert!(!up.labels().contains_key(MARK_LABEL));
        assert!(!up.annotations().contains_key(MARK_ANNOTATION));
        assert_eq!(restore_patch(&up, "uid-1"), None, "nothing left to restore");
    }

    #[test]
    fn a_node_cordoned_by_an_admin_stays_cordoned() {
        let before = node(Some(true), vec![]);
        let down = take_down(&before);
        let mark = NodeMark::read(&down).unwrap();
        assert!(mark.prior_unschedulable && !mark.cordoned);
        let up = applied(&down, &restore_patch(&down, "uid-1").unwrap());
        assert_eq!(up.spec.as_ref().unwrap().unschedulable, Some(true));
    }

    #[test]
    fn restore_ignores_other_experiments_marks() {
        let before = node(None, vec![]);
        let down = take_down(&before);
        assert_eq!(restore_patch(&down, "some-other-uid"), None);
    }

    #[test]
    fn cordon_and_taint_can_be_switched_off() {
        let before = node(None, vec![]);
        let down = applied(
            &before,
            &mark_patch(&before, &exp(), Hold::Cordon(false))
                .unwrap()
                .unwrap(),
        );
        assert_eq!(down.spec.as_ref().unwrap().unschedulable, None);
        assert!(
            down.spec
                .as_ref()
                .unwrap()
                .taints
                .clone()
                .unwrap_or_default()
                .is_empty()
        );
        assert!(
            NodeMark::read(&down).is_some(),
            "the node is still marked, so restore finds it"
        );
    }

    #[test]
    fn a_name_longer_than_a_label_value_is_marked_by_uid() {
        let long = Experiment {
            name: "x".repeat(70),
            uid: "0b7e8f3c-1111-2222-3333-444455556666".into(),
        };
        assert_eq!(long.mark_value(), long.uid);
        let before = node(None, vec![]);
        let held = applied(
            &before,
            &mark_patch(&before, &long, Hold::Cordon(true))
                .unwrap()
                .unwrap(),
        );
        assert_eq!(held.labels()[MARK_LABEL], long.uid);
        let down = applied(
            &held,
            &taint_patch(&held, &long, DarkTaint::NoSchedule).unwrap(),
        );
        let taint = &down.spec.as_ref().unwrap().taints.as_ref().unwrap()[0];
        assert_eq!(taint.value.as_deref(), Some(long.uid.as_str()));
        assert_eq!(taint.effect, "NoSchedule");
        let up = applied(&down, &restore_patch(&down, &long.uid).unwrap());
        assert!(
            up.spec
                .as_ref()
                .unwrap()
                .taints
                .clone()
                .unwrap_or_default()
                .is_empty()
        );
        assert!(!up.labels().contains_key(MARK_LABEL));
        // A 63-character name still fits and stays readable.
        let fits = Experiment {
            name: "y".repeat(63),
            uid: "u".into(),
        };
        assert_eq!(fits.mark_value(), fits.name);
    }

    #[test]
    fn only_a_whole_zone_scope_with_nothing_spared_gets_no_execute() {
        let whole = Scope {
            include_daemon_sets: true,
            ..Default::default()
        };
        assert_eq!(DarkTaint::for_scope(&whole, 0), DarkTaint::NoExecute);
        assert_eq!(
            DarkTaint::for_scope(&whole, 1),
            DarkTaint::NoSchedule,
            "a spared pod (system namespace, the operator) on the zone would be evicted"
        );
        let scoped = Scope {
            namespaces: ["shop".to_string()].into(),
            include_daemon_sets: true,
            ..Default::default()
        };
        assert_eq!(DarkTaint::for_scope(&scoped, 0), DarkTaint::NoSchedule);
        assert_eq!(
            DarkTaint::for_scope(&Scope::default(), 0),
            DarkTaint::NoSchedule,
            "DaemonSet pods are spared by default"
        );
    }

    #[test]
    fn power_loss_labels_the_node_until_a_deadline_and_restore_removes_it() {
        let before = node(Some(false), vec![]);
        let patch = mark_patch(
            &before,
            &exp(),
            Hold::PowerLoss {
                until: 1_900_000_000,
            },
        )
        .unwrap()
        .unwrap();
        let down = applied(&before, &patch);
        assert_eq!(down.labels()[POWER_LABEL], "1900000000");
        assert_eq!(
            down.spec.as_ref().unwrap().unschedulable,
            Some(false),
            "a power loss cordons nothing"
        );
        assert!(NodeMark::read(&down).unwrap().power_loss);
        let up = applied(&down, &restore_patch(&down, "uid-1").unwrap());
        assert!(!up.labels().contains_key(POWER_LABEL));
        assert!(!up.labels().contains_key(MARK_LABEL));
    }

    #[test]
    fn retries_back_off_up_to_a_cap_with_jitter() {
        let cap = Duration::from_secs(5);
        for attempt in 1..40 {
            let full = Duration::from_millis(100)
                .saturating_mul(1 << (attempt - 1).min(16))
                .min(cap);
            for seed in 0..50u64 {
                let w = retry_wait(attempt, cap, seed);
                assert!(
                    w <= full && w >= full / 2,
                    "attempt {attempt}: {w:?} vs {full:?}"
                );
            }
        }
        // Pods throttled together come back at different times.
        let waits: BTreeSet<Duration> = (0..100u64).map(|s| retry_wait(3, cap, s)).collect();
        assert!(waits.len() > 50, "{} distinct waits", waits.len());
    }

    /// Kill [`victim`] against a server that answers the n-th request
    /// (0-based) with `respond(n)`; the outcome and the requests seen.
    async fn kill_with(
        respond: impl Fn(usize) -> (u16, String) + Send + 'static,
    ) -> (Result<bool, KillError>, usize) {
        let (svc, mut handle) = tower_test::mock::pair::<
            http::Request<kube::client::Body>,
            http::Response<kube::client::Body>,
        >();
        let server = tokio::spawn(async move {
            let mut n = 0;
            while let Some((req, send)) = handle.next_request().await {
                assert_eq!(req.method(), http::Method::DELETE);
                let (code, body) = respond(n);
                n += 1;
                send.send_response(
                    http::Response::builder()
                        .status(code)
                        .body(kube::client::Body::from(body.into_bytes()))
                        .unwrap(),
                );
            }
            n
        });
        let client = Client::new(svc, "default");
        let out = kill(&client, &victim(), Some("u1".into())).await;
        drop(client);
        (out, server.await.unwrap())
    }

    fn status(code: u16, reason: &str) -> String {
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": reason, "reason": reason, "code": code})
            .to_string()
    }

    fn victim() -> PodInfo {
        PodInfo {
            namespace: "shop".into(),
            name: "cart-1".into(),
            ..Default::default()
        }
    }

    const DELETED: &str =
        r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"cart-1","namespace":"shop"}}"#;

    #[tokio::test(start_paused = true)]
    async fn throttling_is_waited_out_and_does_not_use_up_the_attempts() {
        let throttled = status(429, "TooManyRequests");
        let (out, seen) = kill_with(move |n| {
            if n < 12 {
                (429, throttled.clone())
            } else {
                (200, DELETED.to_string())
            }
        })
        .await;
        assert!(out.unwrap(), "the pod is killed once the throttling stops");
        assert_eq!(seen, 13);
    }

    #[tokio::test(start_paused = true)]
    async fn endless_throttling_gives_up_within_its_budget() {
        let throttled = status(429, "TooManyRequests");
        let start = tokio::time::Instant::now();
        let (out, seen) = kill_with(move |_| (429, throttled.clone())).await;
        let err = out.unwrap_err().to_string();
        assert!(err.starts_with("shop/cart-1: HTTP 429"), "{err}");
        assert!(start.elapsed() <= THROTTLE_BUDGET, "{:?}", start.elapsed());
        assert!(
            start.elapsed() >= THROTTLE_BUDGET / 2,
            "{:?}",
            start.elapsed()
        );
        assert!(seen > KILL_ATTEMPTS as usize);
    }

    #[tokio::test(start_paused = true)]
    async fn server_errors_are_retried_a_bounded_number_of_times() {
        let broken = status(503, "ServiceUnavailable");
        let (out, seen) = kill_with(move |_| (503, broken.clone())).await;
        let err = out.unwrap_err().to_string();
        assert!(
            err.contains("HTTP 503") && err.contains("after 5 attempts"),
            "{err}"
        );
        assert_eq!(seen, KILL_ATTEMPTS as usize);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pod_gone_or_replaced_is_not_a_kill_and_a_refusal_is_not_retried() {
        let gone = status(404, "NotFound");
        let (out, seen) = kill_with(move |_| (404, gone.clone())).await;
        assert!(!out.unwrap());
        assert_eq!(seen, 1);
        let denied = status(403, "Forbidden");
        let (out, seen) = kill_with(move |_| (403, denied.clone())).await;
        assert!(out.unwrap_err().to_string().contains("HTTP 403"));
        assert_eq!(seen, 1);
    }
}
