//! The fault: cordon the zone, taint it NoExecute, kill its pods with grace
//! period 0, and keep killing whatever lands there while it is dark.
//!
//! Every node change is recorded on the node itself, in the same atomic patch
//! that makes the change: a label naming the experiment (so the nodes can be
//! found with a label selector) and an annotation with the prior state. The
//! patch carries the node's resourceVersion, so it applies to exactly the
//! state it was computed from. A restarted operator restores from these marks
//! alone.

use crate::plan::{PodInfo, Scope, collect};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions, WatchEvent, WatchParams,
};
use kube::{Client, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Label on every node an experiment changed; its value is the experiment's name.
pub const MARK_LABEL: &str = "chaos.firedrill.dev/experiment";
/// Annotation with the node's state before the experiment changed it.
pub const MARK_ANNOTATION: &str = "chaos.firedrill.dev/prior-state";
/// Key of the NoExecute taint that keeps the zone dark; its value is the experiment's name.
pub const TAINT_KEY: &str = "chaos.firedrill.dev/zone-down";

/// Who is changing the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Experiment {
    pub name: String,
    pub uid: String,
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
}

impl NodeMark {
    pub fn read(node: &Node) -> Option<NodeMark> {
        serde_json::from_str(node.annotations().get(MARK_ANNOTATION)?).ok()
    }
}

/// Why a node cannot be marked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MarkError {
    #[error("node {node} is already held by experiment {other}")]
    HeldByOther { node: String, other: String },
}

/// The merge patch that marks one node and cordons it, or `None` when this
/// experiment already marked it (injection is idempotent). The taint comes
/// later ([`taint_patch`]), after the pods were killed: a fire kills with grace
/// period 0, it does not let taint-based eviction shut pods down gracefully.
pub fn mark_patch(node: &Node, exp: &Experiment, cordon: bool) -> Result<Option<Value>, MarkError> {
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
    };
    let spec = if mark.cordoned {
        json!({"unschedulable": true})
    } else {
        json!({})
    };
    Ok(Some(json!({
        "metadata": {
            "resourceVersion": node.resource_version(),
            "labels": { MARK_LABEL: exp.name },
            "annotations": { MARK_ANNOTATION: serde_json::to_string(&mark).unwrap() },
        },
        "spec": spec,
    })))
}

/// The merge patch that adds the experiment's NoExecute taint to a node it
/// holds, recording that in the mark. `None` when the node is not held by this
/// experiment or already tainted.
pub fn taint_patch(node: &Node, exp: &Experiment) -> Option<Value> {
    let mut mark = NodeMark::read(node).filter(|m| m.uid == exp.uid)?;
    let mut taints: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let has = taints
        .iter()
        .any(|t| t.key == TAINT_KEY && t.value.as_deref() == Some(&exp.name));
    if has && mark.tainted {
        return None;
    }
    if !has {
        taints.push(Taint {
            key: TAINT_KEY.into(),
            value: Some(exp.name.clone()),
            effect: "NoExecute".into(),
            time_added: None,
        });
    }
    mark.tainted = true;
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
    if let Some(mark) = &mark {
        if mark.cordoned {
            spec.insert("unschedulable".into(), Value::Null);
        }
        let taints: Vec<Taint> = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let kept: Vec<&Taint> = taints
            .iter()
            .filter(|t| !(t.key == TAINT_KEY && t.value.as_deref() == Some(&mark.experiment)))
            .collect();
        if kept.len() != taints.len() {
            spec.insert("taints".into(), serde_json::to_value(kept).unwrap());
        }
    }
    Some(json!({
        "metadata": {
            "resourceVersion": node.resource_version(),
            "labels": { MARK_LABEL: null },
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
    for attempt in 0.. {
        let Some(node) = nodes.get_opt(name).await? else {
            return Ok(false);
        };
        let Some(patch) = compute(&node)? else {
            return Ok(false);
        };
        match nodes
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 && attempt < 10 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    unreachable!()
}

/// Mark and cordon every node in `nodes`.
pub async fn hold_nodes(
    client: &Client,
    exp: &Experiment,
    nodes: &[String],
    cordon: bool,
    concurrency: usize,
) -> Result<(), crate::Error> {
    let api = Api::<Node>::all(client.clone());
    stream::iter(nodes.iter().cloned())
        .map(|name| {
            let api = api.clone();
            async move {
                patch_node(&api, &name, |n| {
                    mark_patch(n, exp, cordon).map_err(crate::Error::from)
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
    concurrency: usize,
) -> Result<(), crate::Error> {
    let api = Api::<Node>::all(client.clone());
    let held: Vec<String> = held_nodes(client, &exp.name, &exp.uid)
        .await?
        .iter()
        .map(|n| n.name_any())
        .collect();
    stream::iter(held)
        .map(|name| {
            let api = api.clone();
            async move { patch_node(&api, &name, |n| Ok(taint_patch(n, exp))).await }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// (cordoned, tainted) counts over the nodes this experiment holds.
pub async fn held_counts(client: &Client, exp: &Experiment) -> kube::Result<(i32, i32)> {
    let marks: Vec<NodeMark> = held_nodes(client, &exp.name, &exp.uid)
        .await?
        .iter()
        .filter_map(NodeMark::read)
        .collect();
    Ok((
        marks.iter().filter(|m| m.cordoned).count() as i32,
        marks.iter().filter(|m| m.tainted).count() as i32,
    ))
}

/// Nodes carrying this experiment's mark.
pub async fn held_nodes(client: &Client, name: &str, uid: &str) -> kube::Result<Vec<Node>> {
    let lp = ListParams::default().labels(&format!("{MARK_LABEL}={name}"));
    Ok(Api::<Node>::all(client.clone())
        .list(&lp)
        .await?
        .items
        .into_iter()
        .filter(|n| NodeMark::read(n).is_some_and(|m| m.uid == uid))
        .collect())
}

/// Delete one pod with grace period 0, only if it is still the pod we saw.
/// Returns whether this call killed it. Retries when the API server asks us to slow down.
pub async fn kill(
    client: &Client,
    pod: &PodInfo,
    uid: Option<String>,
) -> Result<bool, crate::Error> {
    let api = Api::<Pod>::namespaced(client.clone(), &pod.namespace);
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: uid.map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..Default::default()
    };
    let mut backoff = Duration::from_millis(50);
    loop {
        match api.delete(&pod.name, &dp).await {
            Ok(_) => return Ok(true),
            // Gone already, or replaced by a new pod of the same name: nothing to kill.
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => return Ok(false),
            Err(kube::Error::Api(e)) if e.code == 429 || e.code >= 500 => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Kill every in-scope pod on `nodes`. Pods are listed per node (field
/// selector), never cluster-wide. Returns how many this call killed.
pub async fn kill_pods_on(
    client: &Client,
    nodes: &[String],
    scope: &Scope,
    concurrency: usize,
) -> Result<i64, crate::Error> {
    let conc = concurrency.max(1);
    let pods = Api::<Pod>::all(client.clone());
    let victims: Vec<(PodInfo, Option<String>)> = stream::iter(nodes.iter().cloned())
        .map(|node| {
            let pods = pods.clone();
            async move {
                let lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
                pods.list(&lp).await
            }
        })
        .buffer_unordered(conc.min(32))
        .map_ok(|list| stream::iter(list.items.into_iter().map(Ok::<_, kube::Error>)))
        .try_flatten()
        .try_filter_map(|p| {
            let info = collect::pod_info(&p);
            let uid = p.metadata.uid.clone();
            async move { Ok(scope.in_scope(&info).then_some((info, uid))) }
        })
        .try_collect()
        .await?;
    let killed = stream::iter(victims)
        .map(|(info, uid)| async move { kill(client, &info, uid).await })
        .buffer_unordered(conc)
        .try_fold(0i64, |n, k| async move { Ok(n + k as i64) })
        .await?;
    Ok(killed)
}

/// Keep the zone dark: watch every pod in the cluster from now on (no initial
/// list, nothing cached) and kill any in-scope pod bound to a zone node. On
/// start and after every watch restart, the zone's nodes are swept once with
/// per-node lists, so nothing that landed in between is missed.
/// Runs until cancelled; `rekilled` counts the kills.
pub async fn keep_dark(
    client: Client,
    nodes: BTreeSet<String>,
    scope: Scope,
    rekilled: Arc<AtomicI64>,
    concurrency: usize,
) {
    let api = Api::<Pod>::all(client.clone());
    let node_list: Vec<String> = nodes.iter().cloned().collect();
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
        match kill_pods_on(&client, &node_list, &scope, concurrency).await {
            Ok(n) if n > 0 => {
                rekilled.fetch_add(n, Ordering::Relaxed);
                crate::metrics::METRICS.pods_rekilled.inc_by(n as u64);
                tracing::info!(
                    pods = n,
                    "keep-dark: killed pods that landed on the dark zone"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "keep-dark: sweep failed"),
        }
        let wp = WatchParams::default().timeout(290);
        let stream = match api.watch(&wp, &rv).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "keep-dark: watch failed; restarting");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
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
            let on_zone = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .is_some_and(|n| nodes.contains(n));
            if !on_zone || pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let info = collect::pod_info(&pod);
            if !scope.in_scope(&info) {
                continue;
            }
            match kill(&client, &info, pod.metadata.uid.clone()).await {
                Ok(true) => {
                    rekilled.fetch_add(1, Ordering::Relaxed);
                    crate::metrics::METRICS.pods_rekilled.inc();
                    tracing::info!(pod = %info.key(), node = %info.node, "keep-dark: killed a pod that landed on the dark zone");
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(pod = %info.key(), error = %e, "keep-dark: kill failed"),
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
        let held = applied(n, &mark_patch(n, &exp(), true).unwrap().unwrap());
        applied(&held, &taint_patch(&held, &exp()).unwrap())
    }

    #[test]
    fn mark_records_the_prior_state_with_the_change() {
        let before = node(None, vec![]);
        let patch = mark_patch(&before, &exp(), true).unwrap().unwrap();
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
        let after = applied(&cordoned, &taint_patch(&cordoned, &exp()).unwrap());
        assert_eq!(
            taint_patch(&after, &exp()),
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
                tainted: true
            }
        );
        // Marking again is a no-op.
        assert_eq!(mark_patch(&after, &exp(), true).unwrap(), None);
        // Another experiment cannot take the node.
        let other = Experiment {
            name: "other".into(),
            uid: "uid-2".into(),
        };
        assert!(matches!(
            mark_patch(&after, &other, true),
            Err(MarkError::HeldByOther { .. })
        ));
        assert_eq!(taint_patch(&after, &other), None);
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
            &mark_patch(&before, &exp(), false).unwrap().unwrap(),
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
}
