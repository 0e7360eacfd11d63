//! Nodes on the server: patching one with optimistic concurrency, and
//! finding the ones an experiment holds or left a trace on.

use super::mark::{Experiment, MARK_ANNOTATION, MARK_LABEL, NodeMark, TAINT_KEY};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::Value;

/// Apply `compute` to a node with optimistic concurrency: on a conflict,
/// read the node again and recompute. Returns whether a patch was applied.
pub async fn patch_node<F>(nodes: &Api<Node>, name: &str, compute: F) -> Result<bool, crate::Error>
where
    F: Fn(&Node) -> Result<Option<Value>, crate::Error>,
{
    let Some(node) = nodes.get_opt(name).await? else {
        return Ok(false);
    };
    patch_seen_node(nodes, node, compute).await
}

/// [`patch_node`] starting from a node as it was just listed: the patch
/// carries that copy's resourceVersion, so a node changed since is read
/// again (a conflict) and nothing is applied to a state not seen.
pub async fn patch_seen_node<F>(
    nodes: &Api<Node>,
    seen: Node,
    compute: F,
) -> Result<bool, crate::Error>
where
    F: Fn(&Node) -> Result<Option<Value>, crate::Error>,
{
    let name = seen.name_any();
    let mut node = seen;
    let mut attempt = 0;
    loop {
        let Some(patch) = compute(&node)? else {
            return Ok(false);
        };
        match nodes
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 && attempt < 10 => attempt += 1,
            // The node went away between the read and the patch.
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        match nodes.get_opt(&name).await? {
            Some(n) => node = n,
            None => return Ok(false),
        }
    }
}

/// (cordoned, tainted) counts over the nodes this experiment holds.
pub async fn held_counts(client: &Client, exp: &Experiment) -> kube::Result<(i32, i32)> {
    let marks: Vec<NodeMark> = held_nodes(client, &exp.uid)
        .await?
        .iter()
        .filter_map(NodeMark::read)
        .collect();
    Ok((
        marks.iter().filter(|m| m.cordoned).count() as i32,
        marks.iter().filter(|m| m.tainted).count() as i32,
    ))
}

/// Nodes carrying this experiment's mark. Only marked nodes are listed (a
/// label selector on the mark's key); the experiment is told by the uid in
/// the mark, never by the label's value.
pub async fn held_nodes(client: &Client, uid: &str) -> kube::Result<Vec<Node>> {
    let lp = ListParams::default().labels(MARK_LABEL);
    Ok(Api::<Node>::all(client.clone())
        .list(&lp)
        .await?
        .items
        .into_iter()
        .filter(|n| NodeMark::read(n).is_some_and(|m| m.uid == uid))
        .collect())
}

/// Nodes carrying the mark label, whoever's (a label-selected list).
pub async fn labelled_nodes(client: &Client) -> kube::Result<Vec<Node>> {
    let lp = ListParams::default().labels(MARK_LABEL);
    Ok(Api::<Node>::all(client.clone()).list(&lp).await?.items)
}

/// Nodes listed in one page.
const PAGE: u32 = 500;

/// Every node carrying any trace of an experiment, whoever's: the mark
/// label, the mark annotation or the taint ([`has_trace`]). Neither the
/// annotation nor a taint can be selected on the server, so this is a full
/// node list, a page at a time: once per restore, never per node.
pub async fn traced_nodes(client: &Client) -> kube::Result<Vec<Node>> {
    let api = Api::<Node>::all(client.clone());
    let mut lp = ListParams::default().limit(PAGE);
    let mut traced = vec![];
    loop {
        let page = api.list(&lp).await?;
        traced.extend(page.items.into_iter().filter(has_trace));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => lp = lp.continue_token(&token),
            None => return Ok(traced),
        }
    }
}

/// Whether `node` carries the mark label, the mark annotation or the taint
/// of any experiment.
pub fn has_trace(node: &Node) -> bool {
    node.labels().contains_key(MARK_LABEL)
        || node.annotations().contains_key(MARK_ANNOTATION)
        || node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|ts| ts.iter().any(|t| t.key == TAINT_KEY))
}
