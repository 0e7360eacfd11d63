//! The workloads of the real-node drills: `login`, three replicas of the
//! testbed's serving image (one per zone), and `chat`, which answers only
//! while login answers through its Service's ClusterIP (real kube-proxy).
//! Both are gated on real readiness probes, so an endpoint is ready exactly
//! while its container answers.

use firedrill_e2e::*;
use std::time::Duration;

/// Pods tolerate an unreachable or not-ready node this long (the default
/// would be 300 s): eviction comes 30 s after the node goes NotReady.
pub const TOLERATION_SECONDS: u32 = 30;

fn deployment(ns: &str, name: &str, args: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 5
      topologySpreadConstraints:
      - {{maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway, labelSelector: {{matchLabels: {{app: {name}}}}}}}
      tolerations:
      - {{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: {TOLERATION_SECONDS}}}
      - {{key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: {TOLERATION_SECONDS}}}
      containers:
      - name: serve
        image: localhost/testbed/serve:1
        imagePullPolicy: Never
        args: [{args}]
        ports: [{{containerPort: 8080}}]
        readinessProbe: {{httpGet: {{path: /, port: 8080}}, periodSeconds: 1, failureThreshold: 2, timeoutSeconds: 1}}
        resources: {{requests: {{cpu: 10m, memory: 16Mi}}, limits: {{memory: 32Mi}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec: {{selector: {{app: {name}}}, ports: [{{port: 80, targetPort: 8080}}]}}
"#
    )
}

/// login and chat in `ns`, every replica Ready, one of each in every zone.
pub fn login_and_chat(ns: &str) {
    apply(&deployment(ns, "login", "")).expect_ok("login");
    let ip = kubectl(
        &[
            "-n",
            ns,
            "get",
            "service",
            "login",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
        None,
    )
    .expect_ok("login's ClusterIP");
    apply(&deployment(ns, "chat", &format!("-depends, http://{ip}/"))).expect_ok("chat");
    wait_for(
        "login and chat Ready on the real nodes",
        Duration::from_secs(120),
        || (ready_endpoints(ns, "login") == 3 && ready_endpoints(ns, "chat") == 3).then_some(()),
    );
    for app in ["login", "chat"] {
        let zones: std::collections::BTreeSet<String> = pods_by_node(ns, app)
            .iter()
            .map(|(_, node, _)| real_node(node).zone)
            .collect();
        assert_eq!(zones.len(), 3, "{app} is not in every zone: {zones:?}");
    }
}

/// (pod, node, containerd IDs of its containers) for the pods of `app`.
pub fn pods_by_node(ns: &str, app: &str) -> Vec<(String, String, Vec<String>)> {
    kubectl_json(&["-n", ns, "get", "pods", "-l", &format!("app={app}")])["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let ids = p["status"]["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .filter_map(|c| c["containerID"].as_str())
                .map(|id| id.trim_start_matches("containerd://").to_string())
                .collect();
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
                ids,
            )
        })
        .collect()
}

/// The node's Ready condition status ("True", "False", "Unknown").
pub fn node_ready(node: &str) -> String {
    kubectl(
        &[
            "get",
            "node",
            node,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ],
        None,
    )
    .stdout
}
