//! Manifests the tests apply: DataCenterFailures, the workloads drills run
//! against, and testbed nodes.

/// A DataCenterFailure manifest: `extra` is added under `spec:` (indented
/// two spaces). Without SLOs in `extra`, it is a fault-only drill.
pub fn drill_yaml(name: &str, zone: &str, duration: &str, extra: &str) -> String {
    let fault_only = if extra.contains("slos:") {
        ""
    } else {
        "  faultOnly: true\n"
    };
    format!(
        "apiVersion: chaos.firedrill.dev/v1alpha1\nkind: DataCenterFailure\nmetadata:\n  name: {name}\nspec:\n  zone: {zone}\n  duration: {duration}\n  baseline: 0s\n{fault_only}{extra}"
    )
}

/// A Deployment of `replicas` placeholder pods labelled `app: NAME` and a
/// Service in front of them. `pod_meta` is added to the pod template's
/// metadata flow map (e.g. `, annotations: {...}`), `placement` to its spec
/// (lines indented six spaces).
pub fn service_and_deployment(
    ns: &str,
    name: &str,
    replicas: u32,
    pod_meta: &str,
    placement: &str,
) -> String {
    format!(
        r#"---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}{pod_meta}}}
    spec:
{placement}
      containers: [{{name: app, image: registry.invalid/{name}:1, ports: [{{containerPort: 8080}}], resources: {{requests: {{cpu: 100m, memory: 64Mi}}}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec: {{selector: {{app: {name}}}, ports: [{{port: 80, targetPort: 8080}}]}}
"#
    )
}

/// Spread over the zones by a topology spread constraint on `app: NAME`.
pub fn spread_over_zones(name: &str, when_unsatisfiable: &str) -> String {
    format!(
        "      topologySpreadConstraints: [{{maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: {when_unsatisfiable}, labelSelector: {{matchLabels: {{app: {name}}}}}}}]"
    )
}

/// Two services in `ns`: `chat` (6 replicas spread over the zones) and
/// `login` (2 replicas pinned to zone-a by nodeSelector), each behind a
/// Service of the same name.
pub fn chat_and_login(ns: &str) -> String {
    let pinned = "      nodeSelector: {topology.kubernetes.io/zone: zone-a}";
    format!(
        "{}{}",
        // A replacement chat pod takes 2 s to turn Ready, as a real container
        // would, so losing a zone is a dip an SLO probe can see.
        service_and_deployment(
            ns,
            "chat",
            6,
            ", annotations: {pod-ready.stage.kwok.x-k8s.io/delay: 2s}",
            &spread_over_zones("chat", "ScheduleAnyway"),
        ),
        service_and_deployment(ns, "login", 2, "", pinned)
    )
}

/// A KWOK node manifest like the testbed's own.
pub fn kwok_node_yaml(name: &str, zone: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Node
metadata:
  name: {name}
  annotations: {{kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}}
  labels: {{type: kwok, kubernetes.io/arch: amd64, kubernetes.io/os: linux, kubernetes.io/hostname: {name}, topology.kubernetes.io/zone: {zone}, topology.kubernetes.io/region: testbed}}
status:
  allocatable: {{cpu: "16", memory: 64Gi, pods: "110"}}
  capacity: {{cpu: "16", memory: 64Gi, pods: "110"}}
  nodeInfo: {{architecture: amd64, operatingSystem: linux, kubeletVersion: fake, kubeProxyVersion: fake}}
"#
    )
}
