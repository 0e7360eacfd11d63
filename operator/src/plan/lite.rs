//! Pods as the planner and the kill read them: a list of the pods on one node
//! is deserialised into only the fields [`super::collect::pod_info`] looks
//! at. Managed fields, container statuses, images, probes and the rest of a
//! pod are skipped by the parser without being allocated, which is most of
//! what a pod weighs once parsed; at 30,000 pods the planner and the kill
//! read every pod at least once.

use k8s_openapi::api::core::v1::{
    Affinity, ConfigMapVolumeSource, Container, EnvFromSource, EnvVar,
    PersistentVolumeClaimVolumeSource, Pod, PodCondition, PodSpec, PodStatus, ResourceRequirements,
    Toleration, TopologySpreadConstraint, Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::Client;
use kube::api::ListParams;
use serde::Deserialize;
use serde::de::IgnoredAny;
use std::collections::BTreeMap;

/// The annotation a static pod's mirror carries.
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

#[derive(Deserialize, Default)]
#[serde(default)]
struct List {
    items: Vec<LitePod>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LitePod {
    metadata: Meta,
    spec: Option<Spec>,
    status: Option<Status>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Meta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    /// Only whether the mirror annotation is there is kept.
    annotations: Option<BTreeMap<String, IgnoredAny>>,
    owner_references: Option<Vec<OwnerReference>>,
    deletion_timestamp: Option<Time>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Spec {
    node_name: Option<String>,
    node_selector: Option<BTreeMap<String, String>>,
    affinity: Option<Affinity>,
    tolerations: Option<Vec<Toleration>>,
    topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    volumes: Option<Vec<LiteVolume>>,
    containers: Vec<LiteContainer>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct LiteVolume {
    name: String,
    persistent_volume_claim: Option<PersistentVolumeClaimVolumeSource>,
    config_map: Option<ConfigMapVolumeSource>,
}

/// A container: its requests, and the configuration that may name the
/// Services it calls (the cascade discovery reads it, then drops it).
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct LiteContainer {
    name: String,
    resources: Option<Resources>,
    env: Option<Vec<EnvVar>>,
    env_from: Option<Vec<EnvFromSource>>,
    args: Option<Vec<String>>,
    command: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Resources {
    requests: Option<BTreeMap<String, Quantity>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Status {
    phase: Option<String>,
    conditions: Option<Vec<Condition>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Condition {
    #[serde(rename = "type")]
    type_: String,
    status: String,
}

impl LitePod {
    /// A `Pod` holding only what was read.
    fn into_pod(self) -> Pod {
        let m = self.metadata;
        let mirror = m
            .annotations
            .is_some_and(|a| a.contains_key(MIRROR_ANNOTATION));
        Pod {
            metadata: ObjectMeta {
                name: m.name,
                namespace: m.namespace,
                uid: m.uid,
                labels: m.labels,
                annotations: mirror
                    .then(|| BTreeMap::from([(MIRROR_ANNOTATION.to_string(), String::new())])),
                owner_references: m.owner_references,
                deletion_timestamp: m.deletion_timestamp,
                ..ObjectMeta::default()
            },
            spec: self.spec.map(|s| PodSpec {
                node_name: s.node_name,
                node_selector: s.node_selector,
                affinity: s.affinity,
                tolerations: s.tolerations,
                topology_spread_constraints: s.topology_spread_constraints,
                volumes: s.volumes.map(|vs| {
                    vs.into_iter()
                        .map(|v| Volume {
                            name: v.name,
                            persistent_volume_claim: v.persistent_volume_claim,
                            config_map: v.config_map,
                            ..Volume::default()
                        })
                        .collect()
                }),
                containers: s
                    .containers
                    .into_iter()
                    .map(|c| Container {
                        name: c.name,
                        resources: c.resources.map(|r| ResourceRequirements {
                            requests: r.requests,
                            ..ResourceRequirements::default()
                        }),
                        env: c.env,
                        env_from: c.env_from,
                        args: c.args,
                        command: c.command,
                        ..Container::default()
                    })
                    .collect(),
                ..PodSpec::default()
            }),
            status: self.status.map(|s| PodStatus {
                phase: s.phase,
                conditions: s.conditions.map(|cs| {
                    cs.into_iter()
                        .map(|c| PodCondition {
                            type_: c.type_,
                            status: c.status,
                            ..PodCondition::default()
                        })
                        .collect()
                }),
                ..PodStatus::default()
            }),
        }
    }
}

/// Parse a pod list (the API server's JSON) keeping only what planning and
/// killing read.
pub fn parse_list(json: &str) -> serde_json::Result<Vec<Pod>> {
    let list: List = serde_json::from_str(json)?;
    Ok(list.items.into_iter().map(LitePod::into_pod).collect())
}

/// The pods bound to `node` (`""`: not scheduled yet), each holding only
/// what planning and killing read. `any_version`: whatever the API server's
/// cache holds (planning); else a consistent read (killing).
pub async fn pods_on_node(
    client: &Client,
    node: &str,
    any_version: bool,
) -> kube::Result<Vec<Pod>> {
    let mut lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
    if any_version {
        lp = lp.match_any();
    }
    let request = kube::core::Request::new("/api/v1/pods")
        .list(&lp)
        .map_err(kube::Error::BuildRequest)?;
    let text = client.request_text(request).await?;
    parse_list(&text).map_err(kube::Error::SerdeError)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::collect::pod_info;

    /// A pod as the API server writes it, with the fields planning skips.
    const POD: &str = r#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"9"},"items":[{
      "metadata":{"name":"web-1","namespace":"shop","uid":"u-1","labels":{"app":"web"},
        "annotations":{"kubernetes.io/config.mirror":"x","big":"y"},
        "ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"web-5d","uid":"r","controller":true}],
        "deletionTimestamp":"2026-01-01T00:00:00Z",
        "managedFields":[{"manager":"kube-controller-manager","operation":"Update","fieldsV1":{"f:metadata":{}}}]},
      "spec":{"nodeName":"n1","nodeSelector":{"disk":"ssd"},
        "affinity":{"podAntiAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":[{"labelSelector":{"matchLabels":{"app":"web"}},"topologyKey":"kubernetes.io/hostname"}]}},
        "tolerations":[{"key":"k","operator":"Exists","effect":"NoSchedule"}],
        "topologySpreadConstraints":[{"maxSkew":1,"topologyKey":"topology.kubernetes.io/zone","whenUnsatisfiable":"DoNotSchedule","labelSelector":{"matchLabels":{"app":"web"}}}],
        "volumes":[{"name":"data","persistentVolumeClaim":{"claimName":"data-web-1"}},{"name":"tmp","emptyDir":{}}],
        "containers":[{"name":"web","image":"registry.invalid/web:1","resources":{"requests":{"cpu":"250m","memory":"64Mi"},"limits":{"cpu":"1"}},
          "readinessProbe":{"httpGet":{"path":"/","port":80}}}]},
      "status":{"phase":"Running","conditions":[{"type":"Ready","status":"True","lastTransitionTime":"2026-01-01T00:00:00Z"}],
        "containerStatuses":[{"name":"web","ready":true,"restartCount":0,"image":"i","imageID":"","started":true,"state":{"running":{}}}]}
    }]}"#;

    #[test]
    fn a_lite_pod_reads_as_the_full_pod_does() {
        let full: k8s_openapi::List<Pod> = serde_json::from_str(POD).unwrap();
        let lite = parse_list(POD).unwrap();
        assert_eq!(lite.len(), 1);
        assert_eq!(pod_info(&lite[0]), pod_info(&full.items[0]));
        assert_eq!(lite[0].metadata.uid.as_deref(), Some("u-1"));
        let info = pod_info(&lite[0]);
        assert!(info.mirror && info.terminating && info.ready && !info.finished);
        assert_eq!(info.pvcs, vec!["data-web-1".to_string()]);
        assert_eq!((info.cpu_millis, info.memory_bytes), (250, 64 << 20));
        assert_eq!(info.spread.len(), 1);
        assert_eq!(info.anti_affinity.len(), 1);
        // Nothing planning skips is kept.
        assert!(lite[0].metadata.managed_fields.is_none());
        assert!(
            lite[0]
                .status
                .as_ref()
                .unwrap()
                .container_statuses
                .is_none()
        );
    }

    #[test]
    fn an_empty_or_sparse_list_parses() {
        assert!(parse_list(r#"{"items":[]}"#).unwrap().is_empty());
        assert!(parse_list(r#"{"kind":"PodList"}"#).unwrap().is_empty());
        let bare = parse_list(r#"{"items":[{"metadata":{"name":"p"}}]}"#).unwrap();
        let info = pod_info(&bare[0]);
        assert_eq!((info.name.as_str(), info.node.as_str()), ("p", ""));
        assert!(parse_list("not json").is_err());
    }
}
