//! The kubernetes probes, read from the API: a Service's ready endpoints and
//! a workload's available replicas.

use crate::api::{ServiceCheck, WorkloadCheck, WorkloadKind};
use crate::slo::Outcome;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, ListParams};

/// Healthy while the Service has at least `min_ready` ready endpoints.
pub struct Service {
    client: Client,
    namespace: String,
    name: String,
    min_ready: usize,
}

impl Service {
    pub(super) fn build(s: &ServiceCheck, client: &Client) -> Service {
        Service {
            client: client.clone(),
            namespace: s.namespace.clone(),
            name: s.name.clone(),
            min_ready: s.min_ready_endpoints.max(0) as usize,
        }
    }

    /// Count the ready endpoints in the Service's EndpointSlices.
    pub(super) async fn probe(&self) -> (Outcome, Option<String>) {
        let Service {
            client,
            namespace,
            name,
            min_ready,
        } = self;
        let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={name}"));
        match Api::<EndpointSlice>::namespaced(client.clone(), namespace)
            .list(&lp)
            .await
        {
            Ok(list) => {
                let ready = list
                    .items
                    .iter()
                    .flat_map(|s| s.endpoints.iter())
                    .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))
                    .count();
                if ready >= *min_ready {
                    (Outcome::Ok, None)
                } else {
                    (
                        Outcome::Fail,
                        Some(format!("{ready} ready endpoints, need {min_ready}")),
                    )
                }
            }
            Err(e) => (
                Outcome::Error,
                Some(format!("listing EndpointSlices of {namespace}/{name}: {e}")),
            ),
        }
    }
}

/// Healthy while the workload has at least `min_available` available replicas.
pub struct Workload {
    client: Client,
    kind: WorkloadKind,
    namespace: String,
    name: String,
    min_available: i32,
}

impl Workload {
    pub(super) fn build(w: &WorkloadCheck, client: &Client) -> Workload {
        Workload {
            client: client.clone(),
            kind: w.kind,
            namespace: w.namespace.clone(),
            name: w.name.clone(),
            min_available: w.min_available,
        }
    }

    /// Read the workload's available replicas from its status.
    pub(super) async fn probe(&self) -> (Outcome, Option<String>) {
        let Workload {
            client,
            kind,
            namespace,
            name,
            min_available,
        } = self;
        let available = workload_available(client, *kind, namespace, name).await;
        match available {
            Ok(Some(n)) if n >= *min_available => (Outcome::Ok, None),
            Ok(Some(n)) => (
                Outcome::Fail,
                Some(format!("{n} available replicas, need {min_available}")),
            ),
            Ok(None) => (
                Outcome::Fail,
                Some(format!("{kind:?} {namespace}/{name} not found")),
            ),
            Err(e) => (
                Outcome::Error,
                Some(format!("reading {kind:?} {namespace}/{name}: {e}")),
            ),
        }
    }
}

async fn workload_available(
    client: &Client,
    kind: WorkloadKind,
    ns: &str,
    name: &str,
) -> kube::Result<Option<i32>> {
    let c = client.clone();
    Ok(match kind {
        WorkloadKind::Deployment => Api::<Deployment>::namespaced(c, ns)
            .get_opt(name)
            .await?
            .map(|d| d.status.and_then(|s| s.available_replicas).unwrap_or(0)),
        WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(c, ns)
            .get_opt(name)
            .await?
            .map(|d| d.status.and_then(|s| s.available_replicas).unwrap_or(0)),
        WorkloadKind::DaemonSet => Api::<DaemonSet>::namespaced(c, ns)
            .get_opt(name)
            .await?
            .map(|d| d.status.and_then(|s| s.number_available).unwrap_or(0)),
        WorkloadKind::ReplicaSet => Api::<ReplicaSet>::namespaced(c, ns)
            .get_opt(name)
            .await?
            .map(|d| d.status.and_then(|s| s.available_replicas).unwrap_or(0)),
    })
}
