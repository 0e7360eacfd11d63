//! The DataCenterFailure controller.
//!
//! Two halves: [`runtime`] is the operator process (its clients, the
//! context every reconcile shares, the controllers it runs, the periodic
//! sweep for orphaned marks, standing down); the rest is the lifecycle state
//! machine of one experiment:
//!
//! Pending → Planning → Baseline → Injecting → ZoneDown → Restoring →
//! Completed (or Aborted / Failed). Each phase has a file of its own
//! ([`planning`], [`baseline`], [`injecting`], [`zone_down`], [`restoring`]),
//! and each phase function reads as a short list of steps. Progress lives in
//! the object's status and in the marks on the nodes, never only in memory:
//! every step is idempotent, so a restarted operator picks up wherever the
//! last one stopped.
//!
//! Two rules keep a stale view from redoing work: a reconcile acts on the
//! object as the API server has it now (a fresh read, not the watch cache),
//! and every status write is conditional on the resourceVersion it was
//! computed from, so a phase is entered once and a count is added once.
//!
//! Work that can take long (injection, keeping the zone dark, probing) runs
//! in tasks of its own ([`tasks`]), so a stuck API call never blocks the
//! reconcile that would honour an abort, a deletion or the timeout.

mod baseline;
mod drill;
mod injecting;
mod judge;
mod planning;
mod restoring;
pub mod runtime;
mod tasks;
mod zone_down;

#[cfg(test)]
mod tests;

pub use crate::clients::{CALL_TIMEOUT, Clients};
pub use drill::reconcile;
pub use runtime::{Config, Context, Seen, left_behind, run, run_with, stand_down};
