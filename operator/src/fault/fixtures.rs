//! Nodes, merge patches and an unavailable API server for the unit tests of
//! the fault, of restore and of the node agent.

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
            } else if v.is_object() {
                // A new object keeps none of the patch's nulls.
                let slot = t.entry(k.clone()).or_insert_with(|| json!({}));
                if !slot.is_object() {
                    *slot = json!({});
                }
                merge(slot, v);
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

/// A client whose API server answers every request with HTTP 503, and how
/// many requests it was sent. After `budget` requests it stops answering
/// (they hang), so a client that retries at once stalls there rather than
/// spinning forever, and a test on paused time still gets to its end.
pub(crate) fn unavailable(
    budget: usize,
) -> (kube::Client, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let asked = std::sync::Arc::new(AtomicUsize::new(0));
    let count = asked.clone();
    let svc = tower::service_fn(move |_: http::Request<kube::client::Body>| {
        let n = count.fetch_add(1, Ordering::SeqCst);
        async move {
            if n >= budget {
                std::future::pending::<()>().await;
            }
            let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "reason": "ServiceUnavailable",
                "message": "the API server is unavailable", "code": 503});
            Ok::<_, std::convert::Infallible>(
                http::Response::builder()
                    .status(503)
                    .header("content-type", "application/json")
                    .body(kube::client::Body::from(body.to_string().into_bytes()))
                    .unwrap(),
            )
        }
    });
    (kube::Client::new(svc, "default"), asked)
}
