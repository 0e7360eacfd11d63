//! Nodes and merge patches for the unit tests of the fault and of restore.

use super::mark::{DarkTaint, Experiment, Hold, mark_patch, taint_patch};
use k8s_openapi::api::core::v1::{Node, Taint};
use serde_json::{Value, json};

/// Node `a1` in zone-a at resourceVersion 42.
pub(crate) fn node(unschedulable: Option<bool>, taints: Vec<Taint>) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": "a1", "resourceVersion": "42", "labels": {"topology.kubernetes.io/zone": "zone-a"}},
        "spec": {"unschedulable": unschedulable, "taints": taints},
    }))
    .unwrap()
}

/// The experiment the tests take nodes down for.
pub(crate) fn exp() -> Experiment {
    Experiment {
        name: "drill".into(),
        uid: "uid-1".into(),
    }
}

/// Apply a merge patch the way the API server does (RFC 7386).
pub(crate) fn merge(target: &mut Value, patch: &Value) {
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

/// `node` after the server applied `patch` to it.
pub(crate) fn applied(node: &Node, patch: &Value) -> Node {
    let mut v = serde_json::to_value(node).unwrap();
    merge(&mut v, patch);
    serde_json::from_value(v).unwrap()
}

/// `n` marked, cordoned and tainted `NoExecute` by [`exp`].
pub(crate) fn take_down(n: &Node) -> Node {
    let held = applied(
        n,
        &mark_patch(n, &exp(), Hold::Cordon(true)).unwrap().unwrap(),
    );
    applied(
        &held,
        &taint_patch(&held, &exp(), DarkTaint::NoExecute).unwrap(),
    )
}
