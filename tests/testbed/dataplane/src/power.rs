//! Power loss on fake nodes: the testbed's stand-in for firedrill's node
//! agent. A node labelled `chaos.firedrill.dev/power-loss=<deadline, Unix
//! seconds>` loses power:
//! - its Lease is labelled `testbed.firedrill.dev/powered-off`, and the
//!   testbed's ValidatingAdmissionPolicy refuses every renewal of a Lease
//!   that keeps that label, so KWOK's heartbeats stop and the real node
//!   lifecycle controller marks the node NotReady and taints it, as for a
//!   real power cut;
//! - the node and its pods are annotated `testbed.firedrill.dev/powered-off`,
//!   which the testbed's KWOK stages leave alone (no re-initialising the
//!   node, no making its pods Ready again, no finishing their deletion: a
//!   pod on a dead node stays Terminating);
//! - its pods' processes are stopped (SIGSTOP: connections hang, as traffic
//!   to a dark node is dropped, not refused).
//!
//! Power comes back when the label goes, or at the deadline even if nobody
//! removes it (the agent's dead-man timer).
//!
//! Like the real agent, it acknowledges the cut on the node once the node is
//! dark (`chaos.firedrill.dev/power-loss-ack=<deadline>`, in the same patch
//! that marks the node powered off), and removes the acknowledgement when
//! the power comes back: a PowerLoss drill counts a node as cut off only
//! when it carries one.

use crate::runtime::Processes;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const POWER_LABEL: &str = "chaos.firedrill.dev/power-loss";
/// What firedrill's agent writes on a node once it is cut off: the deadline.
const POWER_ACK: &str = "chaos.firedrill.dev/power-loss-ack";
/// What firedrill's real node agent puts on the nodes it runs on.
const AGENT_LABEL: &str = "chaos.firedrill.dev/agent";
const KWOK_ANNOTATION: &str = "kwok.x-k8s.io/node";
/// On the node, its pods and its Lease while the power is off.
const OFF: &str = "testbed.firedrill.dev/powered-off";

/// Nodes whose power is off now.
#[derive(Clone, Default)]
pub struct PoweredOff(Arc<Mutex<HashSet<String>>>);

impl PoweredOff {
    pub fn contains(&self, node: &str) -> bool {
        self.0.lock().unwrap().contains(node)
    }
}

fn now_secs() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_second()
}

/// Mark (or unmark) the node, its Lease and its pods as powered off; a
/// node powered off until `deadline` acknowledges the cut.
async fn set_power(client: &Client, name: &str, on: bool, deadline: i64) -> kube::Result<()> {
    let (value, ack) = if on {
        (serde_json::Value::Null, serde_json::Value::Null)
    } else {
        ("true".into(), deadline.to_string().into())
    };
    let pp = PatchParams::default();
    let ann = serde_json::json!({"metadata": {"annotations": {OFF: value.clone()}}});
    let node_ann =
        serde_json::json!({"metadata": {"annotations": {OFF: value.clone(), POWER_ACK: ack}}});
    let label = serde_json::json!({"metadata": {"labels": {OFF: value}}});
    let leases = Api::<Lease>::namespaced(client.clone(), "kube-node-lease");
    let pods = Api::<Pod>::all(client.clone());
    let nodes = Api::<Node>::all(client.clone());
    let on_node = pods
        .list(&ListParams::default().fields(&format!("spec.nodeName={name}")))
        .await?
        .items;
    if on {
        // Heartbeats first, then the node, then its pods.
        leases.patch(name, &pp, &Patch::Merge(&label)).await?;
        nodes.patch(name, &pp, &Patch::Merge(&node_ann)).await?;
    } else {
        nodes.patch(name, &pp, &Patch::Merge(&node_ann)).await?;
        leases.patch(name, &pp, &Patch::Merge(&label)).await?;
    }
    for p in on_node {
        let api = Api::<Pod>::namespaced(client.clone(), &p.namespace().unwrap_or_default());
        match api.patch(&p.name_any(), &pp, &Patch::Merge(&ann)).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn power(
    client: &Client,
    procs: &Processes,
    off: &PoweredOff,
    name: &str,
    on: bool,
    deadline: i64,
) {
    let was_off = off.contains(name);
    if on != was_off {
        return;
    }
    if !on {
        // Stop the processes first: from this moment the node is dark.
        off.0.lock().unwrap().insert(name.to_string());
        procs.freeze_node(name, true);
    }
    match set_power(client, name, on, deadline).await {
        Ok(()) => {
            if on {
                off.0.lock().unwrap().remove(name);
                procs.freeze_node(name, false);
            }
            tracing::info!(node = name, on, "node power");
        }
        Err(kube::Error::Api(e)) if e.code == 404 => {
            off.0.lock().unwrap().remove(name);
            procs.freeze_node(name, false);
        }
        Err(e) => {
            if !on {
                // Not cut after all: the periodic check tries again.
                off.0.lock().unwrap().remove(name);
                procs.freeze_node(name, false);
            }
            tracing::warn!(node = name, error = %e, "cannot switch the node's power; retrying")
        }
    }
}

/// Say, on every fake node, that an agent runs there (this data plane).
async fn announce(client: Client, nodes: Api<Node>) -> anyhow::Result<()> {
    let metas = Api::<kube::core::PartialObjectMeta<Node>>::all(client);
    let mut events = std::pin::pin!(
        watcher(metas, watcher::Config::default()).backoff(crate::QuickBackoff::default())
    );
    while let Some(ev) = events.next().await {
        let n = match ev {
            Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n)) => n,
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "node watch error; it retries");
                continue;
            }
        };
        let fake = n.annotations().get(KWOK_ANNOTATION).is_some();
        if fake && !n.labels().contains_key(AGENT_LABEL) {
            let patch = serde_json::json!({"metadata": {"labels": {AGENT_LABEL: "testbed"}}});
            if let Err(e) = nodes
                .patch(
                    &n.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                tracing::debug!(node = %n.name_any(), error = %e, "cannot label the node");
            }
        }
    }
    Ok(())
}

pub async fn run(client: Client, procs: Processes, off: PoweredOff) -> anyhow::Result<()> {
    let nodes = Api::<Node>::all(client.clone());
    tokio::spawn(announce(client.clone(), nodes.clone()));
    // Power back nodes a previous data plane left without it.
    for n in nodes.list(&ListParams::default()).await?.items {
        let deadline = n
            .labels()
            .get(POWER_LABEL)
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0);
        if n.annotations().contains_key(OFF) && deadline <= now_secs() {
            let _ = set_power(&client, &n.name_any(), true, 0).await;
        }
    }
    let mut events = std::pin::pin!(
        watcher(
            nodes.clone(),
            watcher::Config::default().labels(POWER_LABEL)
        )
        .backoff(crate::QuickBackoff::default())
    );
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut labelled: HashSet<String> = HashSet::new();
    let mut deadlines: std::collections::HashMap<String, i64> = Default::default();
    loop {
        tokio::select! {
            ev = events.next() => {
                let Some(ev) = ev else { return Ok(()) };
                match ev {
                    Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n)) => {
                        let name = n.name_any();
                        let deadline = n.labels().get(POWER_LABEL).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
                        labelled.insert(name.clone());
                        deadlines.insert(name.clone(), deadline);
                        if deadline > now_secs() {
                            power(&client, &procs, &off, &name, false, deadline).await;
                        }
                    }
                    Ok(watcher::Event::Delete(n)) => {
                        let name = n.name_any();
                        labelled.remove(&name);
                        deadlines.remove(&name);
                        power(&client, &procs, &off, &name, true, 0).await;
                    }
                    Ok(watcher::Event::Init) => labelled.clear(),
                    Ok(watcher::Event::InitDone) => {
                        let stale: Vec<String> = off.0.lock().unwrap().iter().filter(|n| !labelled.contains(*n)).cloned().collect();
                        for n in stale {
                            power(&client, &procs, &off, &n, true, 0).await;
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "node watch error; it retries"),
                }
            }
            _ = tick.tick() => {
                // The dead-man timer: power comes back at the deadline, label
                // or not; and whatever failed to switch is tried again.
                let now = now_secs();
                for (n, d) in deadlines.clone() {
                    if d > now && !off.contains(&n) {
                        power(&client, &procs, &off, &n, false, d).await;
                    } else if d <= now && off.contains(&n) {
                        tracing::warn!(node = %n, "power-loss deadline passed; powering the node back on");
                        power(&client, &procs, &off, &n, true, 0).await;
                    }
                }
                let unlabelled: Vec<String> = off.0.lock().unwrap().iter().filter(|n| !labelled.contains(*n)).cloned().collect();
                for n in unlabelled {
                    power(&client, &procs, &off, &n, true, 0).await;
                }
            }
        }
    }
}
