//! firedrill: rehearse the loss of a whole data center (availability zone) and
//! measure whether services fail over within their SLOs.
//!
//! Modules are named after what they do: [`api`] (the resources), [`plan`]
//! (what losing a zone would do; pure, plus its I/O edge `plan::collect`),
//! [`fault`] (taking the zone down and keeping it dark), [`restore`] (undoing
//! exactly what was changed), [`controller`] (the lifecycle state machine).

pub mod api;
pub mod cli;
pub mod controller;
pub mod fault;
pub mod leader;
pub mod metrics;
pub mod plan;
pub mod probe;
pub mod report;
pub mod restore;
pub mod run;
pub mod schedule;
pub mod slo;
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
