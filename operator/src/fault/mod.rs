//! The fault: cordon the zone, kill its pods with grace period 0, taint it,
//! and keep killing whatever lands there while it is dark.
//!
//! Every node change is recorded on the node itself, in the same atomic patch
//! that makes the change: a label naming the experiment (so the nodes can be
//! found with a label selector) and an annotation with the prior state. The
//! patch carries the node's resourceVersion, so it applies to exactly the
//! state it was computed from. A restarted operator restores from these marks
//! alone.
//!
//! Scope is honoured by the mechanism, not only by the kill list: the taint
//! that keeps the zone dark is `NoExecute` only when the experiment targets
//! the whole zone and nothing on it was spared; otherwise it is `NoSchedule`
//! (with the cordon and the keeper's re-kills), so a pod the plan spared is
//! never evicted by the taint manager.
//!
//! Submodules: [`mark`] the mark, the taint and their patches; [`node`]
//! patching nodes and finding the held ones; [`power`] how a power cut is
//! verified (acknowledged, NotReady); [`kill`](mod@kill) pods deleted
//! with grace period 0; [`inject`](mod@inject) taking the zone down; [`keep`]
//! keeping it dark; [`backoff`] how a watch that fails waits before it tries
//! again (the node agent's too). Undoing it is [`crate::restore`], which reads the marks
//! written here; nothing here uses it.

pub mod backoff;
pub mod inject;
pub mod keep;
pub mod kill;
pub mod mark;
pub mod node;
pub mod pace;
pub mod power;

#[cfg(test)]
pub(crate) mod fixtures;

pub use inject::{Injected, Injection, hold_nodes, inject, taint_nodes};
pub use keep::{Keep, KeeperEnd, KeeperState, keep_dark};
pub use kill::{KillError, KillReport, kill, kill_pods_on, retry_wait};
pub use mark::{
    DarkTaint, Experiment, Hold, MARK_ANNOTATION, MARK_LABEL, MarkError, NodeMark, TAINT_KEY,
    mark_patch, mark_value, taint_patch,
};
pub use node::{
    has_trace, held_counts, held_nodes, labelled_nodes, patch_node, patch_seen_node, traced_nodes,
};

/// API calls in flight at once for node patches and pod deletes, unless
/// `--concurrency` says otherwise. On the 2-CPU testbed, 10,000 pods of a
/// 30,000-pod cluster: 128 in flight took 36.7 s to kill them, 256 took
/// 32.3 s, an unthrottled deleter at its best (256) 35.6 s in all.
pub const DEFAULT_WRITE_CONCURRENCY: usize = 256;
