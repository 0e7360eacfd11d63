//! firedrill: rehearse the loss of a whole data center (availability zone) and
//! measure whether services fail over within their SLOs.
//!
//! The modules, named after what they do in the domain:
//! - [`api`]: the resources (`DataCenterFailure`, `DataCenterFailureSchedule`), their schema and CEL rules, the shared constants and the one status write.
//! - [`spec`]: the spec parsed once into typed, checked values (durations, objectives, scope).
//! - [`plan`]: what losing a zone would do (pure), with its I/O edge `plan::collect`.
//! - [`fault`]: taking the zone down (mark, cordon, taint, kill, power cut) and keeping it dark.
//! - [`restore`]: undoing exactly what an experiment changed, found from the marks alone.
//! - [`probe`]: the SLO probes (http, tcp, prometheus, kubernetes), their target policy and the runner.
//! - [`slo`]: the probe timeline and what it measures (pure).
//! - [`verdict`]: verdicts, causes and attribution per SLO (pure).
//! - [`clients`]: the two API clients (calls with a deadline, watches), counted in the metrics.
//! - [`controller`]: the operator runtime and the experiment's lifecycle state machine.
//! - [`schedule`]: the game-day schedule controller (cron, zone rotation, history).
//! - [`exclusion`]: one zone dark at a time, claimed through a Lease.
//! - [`record`]: what an experiment keeps in its ConfigMap (planned nodes, probe recording).
//! - [`leader`]: leader election, standby Leases and hand-over.
//! - [`agent`]: the node agent that cuts a node's network for a PowerLoss drill.
//! - [`event`]: Kubernetes Events through the one shared writer (names of any length).
//! - [`metrics`]: the operator's metrics and its `/metrics`, `/healthz`, `/readyz` endpoint.
//! - [`report`]: the table, JSON, JUnit and HTML reports.
//! - [`standdown`]: `firedrill stand-down`, ending every drill and lighting every zone before an uninstall.
//! - [`run`]: `firedrill run`, the release-pipeline gate that follows an experiment.
//! - [`cli`]: the command line.

pub mod agent;
pub mod api;
pub mod canary;
pub mod cli;
pub mod clients;
pub mod controller;
pub mod event;
pub mod exclusion;
pub mod fault;
pub mod leader;
pub mod metrics;
pub mod plan;
pub mod probe;
pub mod record;
pub mod report;
pub mod restore;
pub mod run;
pub mod schedule;
pub mod slo;
pub mod spec;
pub mod standdown;
pub mod verdict;

/// Everything that can go wrong in the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Mark(#[from] fault::MarkError),
    #[error("invalid spec: {0}")]
    Spec(String),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// The object changed since it was read (a conditional write lost).
    pub fn is_conflict(&self) -> bool {
        match self {
            Error::Kube(kube::Error::Api(e)) => e.code == 409,
            Error::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(inner)
                | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner.is_conflict(),
                _ => false,
            },
            _ => false,
        }
    }

    /// A short, bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Mark(_) => "mark",
            Error::Spec(_) => "spec",
            Error::Finalizer(_) => "finalizer",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A directory of a unit test's own, removed when it is dropped (also when
/// the test panics), so failed runs leave nothing in the temp directory.
#[cfg(test)]
pub(crate) struct Scratch(std::path::PathBuf);

#[cfg(test)]
impl Scratch {
    pub(crate) fn new(name: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "firedrill-test-{}-{}-{name}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

#[cfg(test)]
impl std::ops::Deref for Scratch {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

#[cfg(test)]
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
