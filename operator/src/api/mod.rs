//! The firedrill API: `DataCenterFailure` and `DataCenterFailureSchedule`
//! (group `chaos.firedrill.dev`, version `v1alpha1`).
//!
//! Validation lives in the generated OpenAPI schema and in CEL rules
//! (`x-kubernetes-validations`), so a bad spec is refused by `kubectl apply`
//! before the operator ever sees it. Durations are kept as strings on the wire
//! (Go duration syntax: `90s`, `10m`, `1h30m`, `250ms`) and parsed with
//! [`parse_duration`] by the operator, so one malformed object that slipped
//! past an old schema still deserializes and can be failed with a reason.

// `#[kube(printcolumn(...), printcolumn(...))]` repeats keys by design.
#![allow(clippy::duplicated_attributes)]

mod experiment;
mod schedule;

pub use experiment::*;
pub use schedule::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of every firedrill resource.
pub const GROUP: &str = "chaos.firedrill.dev";

/// Finalizer put on a `DataCenterFailure` before anything in the cluster is changed.
pub const FINALIZER: &str = "chaos.firedrill.dev/restore";

/// Annotation that asks a running experiment to stop and restore the zone now.
pub const ABORT_ANNOTATION: &str = "chaos.firedrill.dev/abort";

/// The CEL rule bounding a duration field. It only evaluates `duration()` on
/// strings that match the schema's pattern, so a malformed value gets the one
/// clear pattern error instead of a CEL conversion error on top.
pub(crate) fn duration_rule(min: Option<&str>, max: &str, field: &str) -> kube::core::Rule {
    const WELL_FORMED: &str = "self.matches('^([0-9]+(ms|s|m|h))+$')";
    let (rule, message) = match min {
        Some(min) => (
            format!(
                "!{WELL_FORMED} || (duration(self) >= duration('{min}') && duration(self) <= duration('{max}'))"
            ),
            format!("{field} must be between {min} and {max}"),
        ),
        None => (
            format!("!{WELL_FORMED} || duration(self) <= duration('{max}')"),
            format!("{field} must be at most {max}"),
        ),
    };
    kube::core::Rule::new(rule).message(message.as_str())
}

/// Every CRD that firedrill serves, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![DataCenterFailure::crd(), DataCenterFailureSchedule::crd()]
}

/// All CRDs as one multi-document YAML stream.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for (_, yaml) in crd_files()? {
        out.push_str("---\n");
        out.push_str(&yaml);
    }
    Ok(out)
}

/// One `(file name, YAML)` per CRD, as committed under `crds/`.
pub fn crd_files() -> Result<Vec<(String, String)>, serde_yaml::Error> {
    crds()
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            Ok((format!("{name}.yaml"), serde_yaml::to_string(&crd)?))
        })
        .collect()
}

/// Error from [`parse_duration`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    #[error("{0:?} is not a duration like 90s, 10m or 1h30m")]
    Malformed(String),
    #[error("{0:?} is negative")]
    Negative(String),
}

/// Parse a duration string the way the API server's CEL `duration()` does
/// (Go's `time.ParseDuration`): `250ms`, `90s`, `10m`, `1h30m`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, DurationError> {
    let d: kube::core::Duration = s
        .trim()
        .parse()
        .map_err(|_| DurationError::Malformed(s.to_string()))?;
    if d.is_negative() {
        return Err(DurationError::Negative(s.to_string()));
    }
    Ok(d.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(matches!(
            parse_duration("ten minutes"),
            Err(DurationError::Malformed(_))
        ));
        assert!(matches!(
            parse_duration("10"),
            Err(DurationError::Malformed(_))
        ));
        assert!(matches!(
            parse_duration("-5s"),
            Err(DurationError::Negative(_))
        ));
    }
}
