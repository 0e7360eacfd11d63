//! What the tests read from the cluster: nodes and their zones, Ready pods
//! and endpoints, events, a DataCenterFailure's fields, and the traces
//! firedrill leaves on nodes; with the assertions built on them.

use crate::kubectl::{kubectl, kubectl_json};
use serde_json::Value;
use std::collections::BTreeSet;

/// Node name → zone, for every node.
pub fn node_zones() -> std::collections::BTreeMap<String, String> {
    kubectl_json(&["get", "nodes"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let name = n["metadata"]["name"].as_str().unwrap().to_string();
            let zone = n["metadata"]["labels"]["topology.kubernetes.io/zone"]
                .as_str()
                .unwrap_or("")
                .to_string();
            (name, zone)
        })
        .collect()
}

/// Pods of a namespace that are Running with condition Ready=True, as (pod, node).
pub fn ready_pods(namespace: &str, selector: &str) -> Vec<(String, String)> {
    kubectl_json(&["-n", namespace, "get", "pods", "-l", selector])["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| p["status"]["phase"] == "Running")
        .filter(|p| {
            p["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        })
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Ready endpoints in the EndpointSlices of a Service.
pub fn ready_endpoints(ns: &str, service: &str) -> usize {
    kubectl_json(&[
        "-n",
        ns,
        "get",
        "endpointslices",
        "-l",
        &format!("kubernetes.io/service-name={service}"),
    ])["items"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["conditions"]["ready"] == true)
        .count()
}

/// Nodes of one zone.
pub fn nodes_in(zone: &str) -> Vec<String> {
    node_zones()
        .into_iter()
        .filter(|(_, z)| z == zone)
        .map(|(n, _)| n)
        .collect()
}

/// Names of unschedulable nodes.
pub fn cordoned_nodes() -> BTreeSet<String> {
    kubectl_json(&["get", "nodes"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["spec"]["unschedulable"] == true)
        .map(|n| n["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

/// Pod name → uid for the pods of a namespace matching `selector` (all if empty).
pub fn pod_uids(ns: &str, selector: &str) -> std::collections::BTreeMap<String, String> {
    let mut args = vec!["-n", ns, "get", "pods"];
    if !selector.is_empty() {
        args.extend(["-l", selector]);
    }
    kubectl_json(&args)["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                p["metadata"]["uid"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Events with `reason` in namespace `ns` (all namespaces if empty), as JSON.
pub fn events_with_reason(ns: &str, reason: &str) -> Vec<Value> {
    let selector = format!("reason={reason}");
    let mut args = vec!["get", "events", "--field-selector", &selector];
    if ns.is_empty() {
        args.push("-A");
    } else {
        args.extend(["-n", ns]);
    }
    kubectl_json(&args)["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A field of a DataCenterFailure, by JSONPath.
pub fn dcf_field(name: &str, path: &str) -> String {
    kubectl(
        &["get", "dcf", name, "-o", &format!("jsonpath={{{path}}}")],
        None,
    )
    .stdout
}

/// Every trace firedrill can leave on a node: (node, what). The node
/// agent's own label (`chaos.firedrill.dev/agent`, put there by the agent,
/// here the testbed's data plane) is no trace of an experiment.
pub fn firedrill_traces_on_nodes() -> Vec<(String, String)> {
    let mut out = vec![];
    for n in kubectl_json(&["get", "nodes"])["items"].as_array().unwrap() {
        let name = n["metadata"]["name"].as_str().unwrap().to_string();
        if n["metadata"]["labels"].as_object().is_some_and(|l| {
            l.keys()
                .any(|k| k.starts_with("chaos.firedrill.dev/") && k != "chaos.firedrill.dev/agent")
        }) {
            out.push((name.clone(), "label".into()));
        }
        if n["metadata"]["annotations"]
            .as_object()
            .is_some_and(|a| a.keys().any(|k| k.starts_with("chaos.firedrill.dev/")))
        {
            out.push((name.clone(), "annotation".into()));
        }
        if n["spec"]["taints"].as_array().is_some_and(|ts| {
            ts.iter().any(|t| {
                t["key"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("chaos.firedrill.dev/")
            })
        }) {
            out.push((name.clone(), "taint".into()));
        }
    }
    out
}

/// Nodes that carry a firedrill mark, with the zone label they have now.
pub fn marked_zones() -> BTreeSet<String> {
    kubectl_json(&["get", "nodes", "-l", "chaos.firedrill.dev/experiment"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            n["metadata"]["labels"]["topology.kubernetes.io/zone"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

/// The taints firedrill put on nodes: (node, effect, value).
pub fn firedrill_taints() -> Vec<(String, String, String)> {
    let mut out = vec![];
    for n in kubectl_json(&["get", "nodes"])["items"].as_array().unwrap() {
        for t in n["spec"]["taints"].as_array().cloned().unwrap_or_default() {
            if t["key"] == "chaos.firedrill.dev/zone-down" {
                out.push((
                    n["metadata"]["name"].as_str().unwrap().to_string(),
                    t["effect"].as_str().unwrap_or("").to_string(),
                    t["value"].as_str().unwrap_or("").to_string(),
                ));
            }
        }
    }
    out
}

/// No node carries a firedrill mark or taint, and none is cordoned.
pub fn assert_zone_restored() {
    let traces = firedrill_traces_on_nodes();
    assert!(traces.is_empty(), "firedrill traces left: {traces:?}");
    let cordoned = cordoned_nodes();
    assert!(cordoned.is_empty(), "nodes left cordoned: {cordoned:?}");
}

/// No node changed since `before` (`kubectl get nodes` as JSON): the same
/// spec and labels on every node, and no firedrill traces.
pub fn assert_nodes_untouched(before: &Value) {
    let after = kubectl_json(&["get", "nodes"]);
    let specs = |v: &Value| -> Vec<(String, String, String)> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["metadata"]["name"].to_string(),
                    n["spec"].to_string(),
                    n["metadata"]["labels"].to_string(),
                )
            })
            .collect()
    };
    assert_eq!(specs(before), specs(&after), "a node was changed");
    assert!(firedrill_traces_on_nodes().is_empty());
}
