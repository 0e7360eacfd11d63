//! Restore: undo exactly what an experiment changed, found from the marks on
//! the nodes alone, so it works after a restart, after a deletion, and even
//! when the experiment never got past planning. A node is found by any trace
//! the experiment left on it (the mark label, the mark annotation, the
//! taint), so one whose label was removed by hand is restored too.

use crate::api::{DataCenterFailure, POWER_ACK_ANNOTATION, POWER_LABEL, POWER_REFUSED_ANNOTATION};
use crate::fault::mark::{Experiment, MARK_ANNOTATION, MARK_LABEL, NodeMark, TAINT_KEY};
use crate::fault::node::{labelled_nodes, patch_seen_node, traced_nodes};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Node, Taint};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashSet};

/// The merge patch that undoes exactly what `exp` did to `node`, and removes
/// its traces. `None` when the node carries nothing of it.
///
/// With the experiment's record on the node (the mark annotation, told by
/// the uid), everything it says is undone: the mark label, the cordon (a
/// node an admin cordoned before stays cordoned), the taint, the power-loss
/// label, the node agent's answer to it, and the record itself. Where the record was lost, the label and
/// the taint are told by their value (the experiment's name, or its uid
/// for a long name), and only they (and the power-loss label that came with
/// the label) are removed: the cordon is left as it is, since nothing says
/// whether it was there before. A record of another experiment keeps its
/// label and its taint, even when they carry the same value.
pub fn restore_patch(node: &Node, exp: &Experiment) -> Option<Value> {
    let record = NodeMark::read(node);
    let ours = record.as_ref().filter(|m| m.uid == exp.uid);
    let theirs = record
        .as_ref()
        .filter(|m| m.uid != exp.uid)
        .map(NodeMark::taint_value);
    let value = ours
        .map(NodeMark::taint_value)
        .unwrap_or_else(|| exp.mark_value());
    let label = node.labels().get(MARK_LABEL);
    let our_label =
        label.is_some() && (ours.is_some() || (theirs.is_none() && label == Some(&value)));

    let mut labels = serde_json::Map::new();
    let mut annotations = serde_json::Map::new();
    let mut spec = serde_json::Map::new();
    if our_label {
        labels.insert(MARK_LABEL.into(), Value::Null);
    }
    if node.labels().contains_key(POWER_LABEL) && (ours.is_some() || our_label) {
        labels.insert(POWER_LABEL.into(), Value::Null);
    }
    // The node agent's answer to our cut (it removes it too once the label
    // is gone; an agent that is gone does not).
    if ours.is_some() || our_label {
        for key in [POWER_ACK_ANNOTATION, POWER_REFUSED_ANNOTATION] {
            if node.annotations().contains_key(key) {
                annotations.insert(key.into(), Value::Null);
            }
        }
    }
    if let Some(mark) = ours {
        annotations.insert(MARK_ANNOTATION.into(), Value::Null);
        if mark.cordoned {
            spec.insert("unschedulable".into(), Value::Null);
        }
    }
    let taints: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let kept: Vec<&Taint> = taints
        .iter()
        .filter(|t| {
            let v = t.value.as_deref();
            !(t.key == TAINT_KEY && v == Some(value.as_str()) && v != theirs.as_deref())
        })
        .collect();
    if kept.len() != taints.len() {
        spec.insert("taints".into(), serde_json::to_value(kept).unwrap());
    }
    if labels.is_empty() && annotations.is_empty() && spec.is_empty() {
        return None;
    }
    Some(json!({
        "metadata": {
            "resourceVersion": node.resource_version(),
            "labels": labels,
            "annotations": annotations,
        },
        "spec": spec,
    }))
}

/// Restore every node the experiment left a trace on: first the nodes that
/// still carry the mark label (a label-selected list, so the zone comes back
/// without waiting for more), then any other node with its record or its
/// taint (a label removed by hand), from one full node list. Returns how many
/// nodes were restored.
pub async fn restore(
    client: &Client,
    exp: &Experiment,
    concurrency: usize,
) -> Result<i32, crate::Error> {
    let labelled = restore_labelled(client, exp, concurrency).await?;
    let rest = traced_nodes(client).await?;
    Ok(labelled + restore_among(client, rest, exp, concurrency).await?)
}

/// Restore the nodes the experiment left a trace on that still carry the
/// mark label (one label-selected list). Where the label may have been
/// removed by hand, [`restore`] is the one that finds them.
pub async fn restore_labelled(
    client: &Client,
    exp: &Experiment,
    concurrency: usize,
) -> Result<i32, crate::Error> {
    let labelled = labelled_nodes(client).await?;
    restore_among(client, labelled, exp, concurrency).await
}

/// Restore what `exp` left on `nodes` (as listed). Returns how many were restored.
async fn restore_among(
    client: &Client,
    nodes: Vec<Node>,
    exp: &Experiment,
    concurrency: usize,
) -> Result<i32, crate::Error> {
    let api = Api::<Node>::all(client.clone());
    stream::iter(nodes)
        .filter(|n| std::future::ready(restore_patch(n, exp).is_some()))
        .map(|node| {
            let api = api.clone();
            async move { patch_seen_node(&api, node, |n| Ok(restore_patch(n, exp))).await }
        })
        .buffer_unordered(concurrency.max(1))
        .try_fold(0, |n, done| async move { Ok(n + done as i32) })
        .await
}

/// Restore nodes whose experiment no longer exists (deleted while no operator
/// was running, its finalizer removed by hand, or recreated under the same
/// name). Returns the nodes restored. A trace is an orphan when its
/// experiment is gone: the record (the mark annotation) by its uid, a label
/// or taint whose record was lost by its value (no experiment's name, nor
/// uid for a long name). With `all_traces`, every node is listed (nodes whose
/// label was removed by hand are found too); else only the labelled ones,
/// which is cheap enough to do often.
pub async fn restore_orphans(
    client: &Client,
    all_traces: bool,
) -> Result<Vec<String>, crate::Error> {
    let nodes = Api::<Node>::all(client.clone());
    let traced = if all_traces {
        traced_nodes(client).await?
    } else {
        labelled_nodes(client).await?
    };
    if traced.is_empty() {
        return Ok(vec![]);
    }
    let live: Vec<Experiment> = Api::<DataCenterFailure>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(Experiment::of)
        .collect();
    let live_uids: HashSet<&str> = live.iter().map(|e| e.uid.as_str()).collect();
    let live_values: HashSet<String> = live.iter().map(Experiment::mark_value).collect();
    let mut restored = vec![];
    for node in traced {
        let record = NodeMark::read(&node);
        let mut gone = vec![];
        if let Some(m) = &record
            && !live_uids.contains(m.uid.as_str())
        {
            gone.push(Experiment {
                name: m.experiment.clone(),
                uid: m.uid.clone(),
            });
        }
        // Traces whose record was lost, by their value.
        let recorded = record.as_ref().map(NodeMark::taint_value);
        for value in trace_values(&node) {
            if Some(&value) != recorded.as_ref() && !live_values.contains(&value) {
                gone.push(Experiment {
                    name: value,
                    uid: String::new(),
                });
            }
        }
        let name = node.name_any();
        for exp in gone {
            tracing::warn!(node = %name, experiment = %exp.name, "restoring a node held by an experiment that no longer exists");
            if patch_seen_node(&nodes, node.clone(), |n| Ok(restore_patch(n, &exp))).await?
                && restored.last() != Some(&name)
            {
                restored.push(name.clone());
            }
        }
    }
    Ok(restored)
}

/// The values of the mark label and of the taints on `node`, each once.
fn trace_values(node: &Node) -> BTreeSet<String> {
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_ref());
    node.labels()
        .get(MARK_LABEL)
        .cloned()
        .into_iter()
        .chain(
            taints
                .into_iter()
                .flatten()
                .filter(|t| t.key == TAINT_KEY)
                .filter_map(|t| t.value.clone()),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::fixtures::{applied, exp, node, take_down};
    use crate::fault::mark::{DarkTaint, Experiment, Hold, mark_patch, taint_patch};

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
        let up = applied(&down, &restore_patch(&down, &exp()).unwrap());
        assert_eq!(up.spec.as_ref().unwrap().unschedulable, None);
        assert_eq!(
            up.spec.as_ref().unwrap().taints.clone().unwrap(),
            vec![admin_taint]
        );
        assert!(!up.labels().contains_key(MARK_LABEL));
        assert!(!up.annotations().contains_key(MARK_ANNOTATION));
        assert_eq!(restore_patch(&up, &exp()), None, "nothing left to restore");
    }

    #[test]
    fn a_node_cordoned_by_an_admin_stays_cordoned() {
        let before = node(Some(true), vec![]);
        let down = take_down(&before);
        let mark = NodeMark::read(&down).unwrap();
        assert!(mark.prior_unschedulable && !mark.cordoned);
        let up = applied(&down, &restore_patch(&down, &exp()).unwrap());
        assert_eq!(up.spec.as_ref().unwrap().unschedulable, Some(true));
    }

    #[test]
    fn restore_ignores_other_experiments_marks() {
        let before = node(None, vec![]);
        let down = take_down(&before);
        let other = Experiment {
            name: "other".into(),
            uid: "some-other-uid".into(),
        };
        assert_eq!(restore_patch(&down, &other), None);
        // Not even when it has the same name (one deleted and created again).
        let same_name = Experiment {
            name: "drill".into(),
            uid: "some-other-uid".into(),
        };
        assert_eq!(restore_patch(&down, &same_name), None);
    }

    /// `node` without the label or the annotation `key`.
    fn without(node: &Node, labels: &[&str], annotations: &[&str]) -> Node {
        let mut n = node.clone();
        for k in labels {
            n.metadata.labels.as_mut().unwrap().remove(*k);
        }
        for k in annotations {
            n.metadata.annotations.as_mut().unwrap().remove(*k);
        }
        n
    }

    #[test]
    fn a_node_whose_label_was_removed_is_restored_from_its_record() {
        let admin_taint = Taint {
            key: "dedicated".into(),
            value: Some("gpu".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        };
        let down = without(
            &take_down(&node(None, vec![admin_taint.clone()])),
            &[MARK_LABEL],
            &[],
        );
        let up = applied(&down, &restore_patch(&down, &exp()).unwrap());
        assert_eq!(up.spec.as_ref().unwrap().unschedulable, None);
        assert_eq!(
            up.spec.as_ref().unwrap().taints.clone().unwrap(),
            vec![admin_taint]
        );
        assert!(!up.annotations().contains_key(MARK_ANNOTATION));
        assert_eq!(restore_patch(&up, &exp()), None);
        // An admin's cordon is still left alone.
        let admins = without(&take_down(&node(Some(true), vec![])), &[MARK_LABEL], &[]);
        let up = applied(&admins, &restore_patch(&admins, &exp()).unwrap());
        assert_eq!(up.spec.as_ref().unwrap().unschedulable, Some(true));
        assert!(up.spec.as_ref().unwrap().taints.clone().unwrap().is_empty());
    }

    #[test]
    fn with_its_record_lost_only_the_label_and_the_taint_go_and_the_cordon_stays() {
        // Cordoned and tainted by the drill; the label and the record were removed by hand.
        let tainted = without(
            &take_down(&node(None, vec![])),
            &[MARK_LABEL],
            &[MARK_ANNOTATION],
        );
        let patch = restore_patch(&tainted, &exp()).unwrap();
        assert_eq!(patch["spec"].get("unschedulable"), None, "{patch}");
        let up = applied(&tainted, &patch);
        assert_eq!(
            up.spec.as_ref().unwrap().unschedulable,
            Some(true),
            "nothing says whether the node was cordoned before"
        );
        assert!(up.spec.as_ref().unwrap().taints.clone().unwrap().is_empty());
        assert_eq!(restore_patch(&up, &exp()), None);
        // Only the record removed: the label and the taint go.
        let labelled = without(&take_down(&node(None, vec![])), &[], &[MARK_ANNOTATION]);
        let up = applied(&labelled, &restore_patch(&labelled, &exp()).unwrap());
        assert!(!up.labels().contains_key(MARK_LABEL));
        assert!(up.spec.as_ref().unwrap().taints.clone().unwrap().is_empty());
        assert_eq!(up.spec.as_ref().unwrap().unschedulable, Some(true));
        // Another experiment's label or taint is not ours to remove.
        let other = Experiment {
            name: "other".into(),
            uid: "uid-2".into(),
        };
        assert_eq!(restore_patch(&tainted, &other), None);
        assert_eq!(restore_patch(&labelled, &other), None);
        // Nothing of ours at all.
        assert_eq!(restore_patch(&node(Some(true), vec![]), &exp()), None);
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
        let up = applied(&down, &restore_patch(&down, &long).unwrap());
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
        let up = applied(&down, &restore_patch(&down, &exp()).unwrap());
        assert!(!up.labels().contains_key(POWER_LABEL));
        assert!(!up.labels().contains_key(MARK_LABEL));
    }
}
