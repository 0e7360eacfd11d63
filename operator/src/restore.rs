//! Restore: undo exactly what an experiment changed, found from the marks on
//! the nodes alone, so it works after a restart, after a deletion, and even
//! when the experiment never got past planning.

use crate::api::DataCenterFailure;
use crate::fault::{MARK_LABEL, NodeMark, held_nodes, patch_seen_node, restore_patch};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use std::collections::HashMap;

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
