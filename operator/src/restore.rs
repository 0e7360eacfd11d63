//! Restore: undo exactly what an experiment changed, found from the marks on
//! the nodes alone, so it works after a restart, after a deletion, and even
//! when the experiment never got past planning.

use crate::api::{DataCenterFailure, POWER_LABEL};
use crate::fault::mark::{MARK_ANNOTATION, MARK_LABEL, NodeMark, TAINT_KEY};
use crate::fault::node::{held_nodes, patch_seen_node};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Node, Taint};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use std::collections::HashMap;

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

/// Restore every node the experiment with this uid holds. Returns how many were restored.
pub async fn restore(client: &Client, uid: &str, concurrency: usize) -> Result<i32, crate::Error> {
    let api = Api::<Node>::all(client.clone());
    let held = held_nodes(client, uid).await?;
    let restored = stream::iter(held)
        .map(|node| {
            let api = api.clone();
            async move { patch_seen_node(&api, node, |n| Ok(restore_patch(n, uid))).await }
        })
        .buffer_unordered(concurrency.max(1))
        .try_fold(0, |n, done| async move { Ok(n + done as i32) })
        .await?;
    Ok(restored)
}

/// Restore nodes whose experiment no longer exists (deleted while no operator
/// was running, its finalizer removed by hand, or recreated under the same
/// name). Returns the nodes restored. Only marked nodes are listed, so this is
/// cheap enough to run periodically.
pub async fn restore_orphans(client: &Client) -> Result<Vec<String>, crate::Error> {
    let nodes = Api::<Node>::all(client.clone());
    let marked = nodes
        .list(&ListParams::default().labels(MARK_LABEL))
        .await?
        .items;
    if marked.is_empty() {
        return Ok(vec![]);
    }
    let live: HashMap<String, String> = Api::<DataCenterFailure>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|e| (e.uid().unwrap_or_default(), e.name_any()))
        .collect();
    let mut restored = vec![];
    for node in marked {
        let (uid, experiment) = match NodeMark::read(&node) {
            Some(m) => (m.uid, m.experiment),
            None => (String::new(), node.labels()[MARK_LABEL].clone()),
        };
        if live.contains_key(&uid) {
            continue;
        }
        let name = node.name_any();
        tracing::warn!(node = %name, experiment = %experiment, "restoring a node held by an experiment that no longer exists");
        if patch_seen_node(&nodes, node, |n| Ok(restore_patch(n, &uid))).await? {
            restored.push(name);
        }
    }
    Ok(restored)
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
}
