//! firedrill: rehearse the loss of a whole data center (availability zone) and
//! measure whether services fail over within their SLOs.
//!
//! Modules are named after what they do: [`api`] (the resources), [`plan`]
//! (what losing a zone would do; pure, plus its I/O edge `plan::collect`),
//! [`fault`] (taking the zone down and keeping it dark), [`restore`] (undoing
//! exactly what was changed), [`controller`] (the lifecycle state machine).

pub mod agent;
pub mod api;
pub mod cli;
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
