//! The mark and the taint: what an experiment writes on a node, and the
//! merge patches that write it.

use crate::api::{DataCenterFailure, POWER_ACK_ANNOTATION, POWER_LABEL, POWER_REFUSED_ANNOTATION};
use crate::plan::Scope;
use k8s_openapi::api::core::v1::{Node, Taint};
use kube::ResourceExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Label on every node an experiment changed; its value is the experiment's
/// name, or its uid when the name is longer than a label value may be.
pub const MARK_LABEL: &str = "chaos.firedrill.dev/experiment";
/// Annotation with the node's state before the experiment changed it.
pub const MARK_ANNOTATION: &str = "chaos.firedrill.dev/prior-state";
/// Key of the taint that keeps the zone dark; its value is the same as the mark label's.
pub const TAINT_KEY: &str = "chaos.firedrill.dev/zone-down";

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
    pub(crate) fn taint_value(&self) -> String {
        mark_value(&self.experiment, &self.uid)
    }
}

/// Whether `node` carries the taint of the experiment that marked it.
pub(super) fn has_own_taint(node: &Node, mark: &NodeMark) -> bool {
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
/// idempotent). The taint comes later ([`taint_patch`]): a NoExecute one
/// after the pods were killed (a fire kills with grace period 0, it does not
/// let taint-based eviction shut pods down gracefully), a NoSchedule one
/// while they are killed.
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
    let mut annotations = serde_json::Map::new();
    annotations.insert(
        MARK_ANNOTATION.into(),
        serde_json::to_string(&mark).unwrap().into(),
    );
    if let Hold::PowerLoss { until } = how {
        labels.insert(POWER_LABEL.into(), until.to_string().into());
        // Whatever the node agent said before is not about this cut: only
        // an answer written after this patch counts.
        annotations.insert(POWER_ACK_ANNOTATION.into(), Value::Null);
        annotations.insert(POWER_REFUSED_ANNOTATION.into(), Value::Null);
    }
    Ok(Some(json!({
        "metadata": {
            "resourceVersion": node.resource_version(),
            "labels": labels,
            "annotations": annotations,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::fixtures::{applied, exp, node};

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
}
