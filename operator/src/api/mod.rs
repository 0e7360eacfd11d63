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

/// The field manager of every server-side apply firedrill makes.
pub const MANAGER: &str = "firedrill";

/// Label that cuts a node's power (PowerLoss mode); its value is the Unix
/// second at which the node agent restores power on its own, even if it
/// cannot reach the API server (its dead-man timer).
pub const POWER_LABEL: &str = "chaos.firedrill.dev/power-loss";

/// Annotation the node agent writes on its node once its partition is in
/// place: the Unix second at which the partition ends (the label's deadline,
/// or earlier where the agent capped it). A PowerLoss drill counts a node as
/// cut off only when it carries this.
pub const POWER_ACK_ANNOTATION: &str = "chaos.firedrill.dev/power-loss-ack";

/// Annotation the node agent writes on its node when it will not or could
/// not cut it off: why (no live experiment, a deadline already past, a
/// control-plane node, `nft` failing). The drill aborts when it sees one.
pub const POWER_REFUSED_ANNOTATION: &str = "chaos.firedrill.dev/power-loss-refused";

/// Label of the control-plane nodes; the node agent never cuts one off.
pub const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane";

/// Label the node agent puts on each node it runs on: PowerLoss can only be
/// rehearsed where it is.
pub const AGENT_LABEL: &str = "chaos.firedrill.dev/agent";

/// Write the status of a firedrill resource by server-side apply under
/// [`MANAGER`], with the type's own apiVersion and kind (the API server refuses
/// an apply patch without them). With `resource_version`, the write is
/// conditional: it fails with a conflict if the object changed since it was read.
pub async fn write_status<K>(
    api: &kube::Api<K>,
    name: &str,
    resource_version: Option<&str>,
    status: &impl serde::Serialize,
) -> kube::Result<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut metadata = serde_json::json!({ "name": name });
    if let Some(rv) = resource_version {
        metadata["resourceVersion"] = rv.into();
    }
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": metadata,
        "status": status,
    });
    api.patch_status(
        name,
        &kube::api::PatchParams::apply(MANAGER).force(),
        &kube::api::Patch::Apply(&patch),
    )
    .await
}

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

/// Characters no header value or URL may carry: the ASCII control
/// characters, CR and LF above all (a value with a line break in it is two
/// header lines). The same regular expression in the CEL rules and in Rust.
pub const CONTROL_CHARACTERS: &str = "[[:cntrl:]]";

/// A URL with credentials in it (`http://user:password@host/`): an `@`
/// before the end of the authority.
pub const URL_CREDENTIALS: &str = "^[A-Za-z][-+.A-Za-z0-9]*://[^/?#]*@";

/// A tcp probe's host as a name or IPv4 address: no scheme, port or path.
pub const TCP_HOST_NAME: &str = "^[A-Za-z0-9_]([-A-Za-z0-9_.]*[A-Za-z0-9_.])?$";

/// A tcp probe's host as an IPv6 address (at least two colons, no brackets).
pub const TCP_HOST_V6: &str = "^[0-9A-Fa-f.]*:[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*$";

/// The CEL rule that an http(s) URL names a host (`http:///healthz` does not;
/// a browser would read it as `http://healthz/`).
pub(crate) fn url_host_rule() -> kube::core::Rule {
    kube::core::Rule::new(
        "!(isURL(self) && url(self).getScheme() in ['http', 'https']) || url(self).getHostname() != ''",
    )
    .message("url must name a host, as in http://host/path")
}

/// The CEL rule that a URL carries no credentials: they would sit in the
/// spec for anyone who can read it, and in every message naming the URL.
pub(crate) fn url_credentials_rule() -> kube::core::Rule {
    kube::core::Rule::new(format!("!self.matches('{URL_CREDENTIALS}')")).message(
        "url must not carry credentials (user:password@host): read them from a Secret instead",
    )
}

/// The CEL rule that a URL has no spaces or control characters in it.
pub(crate) fn url_space_rule() -> kube::core::Rule {
    kube::core::Rule::new(format!(
        "!self.matches('[[:space:]]') && !self.matches('{CONTROL_CHARACTERS}')"
    ))
    .message("url must not contain spaces or control characters")
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
/// (Go's `time.ParseDuration`): `250ms`, `90s`, `10m`, `1h30m`, `1.5h`; at
/// most 2562047h47m16.854775807s (what fits in an int64 of nanoseconds).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, DurationError> {
    let malformed = || DurationError::Malformed(s.to_string());
    let text = s.trim();
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(malformed());
    }
    const MAX_NANOS: u128 = i64::MAX as u128;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let digits = |t: &str| t.bytes().take_while(u8::is_ascii_digit).count();
        let whole_len = digits(rest);
        let (whole, after) = rest.split_at(whole_len);
        let (frac, after) = match after.strip_prefix('.') {
            Some(a) => {
                let n = digits(a);
                a.split_at(n)
            }
            None => ("", after),
        };
        if whole.is_empty() && frac.is_empty() {
            return Err(malformed());
        }
        let unit_len = after
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map_or(after.len(), |(i, _)| i);
        let (unit, after) = after.split_at(unit_len);
        let nanos_per: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(malformed()),
        };
        // Whole part, exactly; any more than 19 digits overflows anyway.
        let mut value: u128 = 0;
        for b in whole.bytes() {
            value = value * 10 + u128::from(b - b'0');
            if value > MAX_NANOS {
                return Err(malformed());
            }
        }
        let mut nanos = value.checked_mul(nanos_per).ok_or_else(malformed)?;
        // The fraction, as Go does it: digits scaled by the unit, truncated.
        if !frac.is_empty() {
            let kept = &frac[..frac.len().min(18)];
            let f: u128 = kept.parse().map_err(|_| malformed())?;
            nanos += f * nanos_per / 10u128.pow(kept.len() as u32);
        }
        total = total.checked_add(nanos).ok_or_else(malformed)?;
        if total > MAX_NANOS {
            return Err(malformed());
        }
        rest = after;
    }
    if negative && total > 0 {
        return Err(DurationError::Negative(s.to_string()));
    }
    Ok(std::time::Duration::from_nanos(total as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The CEL rules on `field` of the DataCenterFailure schema, by the
    /// field's path under `spec`.
    fn rules(path: &[&str]) -> Vec<String> {
        let crd = serde_json::to_value(DataCenterFailure::crd()).unwrap();
        let mut at = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        for p in path {
            at = match *p {
                "[]" => &at["items"],
                name => &at["properties"][name],
            };
        }
        assert!(at.is_object(), "no field spec.{}", path.join("."));
        at["x-kubernetes-validations"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| r["rule"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn header_values_and_urls_refuse_line_breaks_and_control_characters() {
        let value = rules(&["slos", "[]", "probe", "http", "headers", "[]", "value"]);
        assert!(
            value.iter().any(|r| r.contains(CONTROL_CHARACTERS)),
            "{value:?}"
        );
        for kind in ["http", "prometheus"] {
            let url = rules(&["slos", "[]", "probe", kind, "url"]);
            assert!(
                url.iter().any(|r| r.contains(CONTROL_CHARACTERS)),
                "{url:?}"
            );
        }
        let cel = regex::Regex::new(CONTROL_CHARACTERS).unwrap();
        for bad in ["x\r\nX-Injected: 1", "x\n", "x\r", "\tx", "x\u{7f}", "\0"] {
            assert!(cel.is_match(bad), "{bad:?}");
        }
        for good in ["Bearer abc.def-ghi", "a value with spaces", "caf\u{e9}"] {
            assert!(!cel.is_match(good), "{good:?}");
        }
    }

    #[test]
    fn probe_urls_must_name_a_host_and_carry_no_credentials() {
        for kind in ["http", "prometheus"] {
            let url = rules(&["slos", "[]", "probe", kind, "url"]);
            assert!(
                url.iter().any(|r| r.contains("getHostname() != ''")),
                "{url:?}"
            );
            assert!(url.iter().any(|r| r.contains(URL_CREDENTIALS)), "{url:?}");
        }
        let prometheus = rules(&["slos", "[]", "probe", "prometheus", "url"]);
        assert!(
            prometheus.iter().any(|r| r.contains("[?#]")),
            "{prometheus:?}"
        );
        let cel = regex::Regex::new(URL_CREDENTIALS).unwrap();
        for bad in [
            "http://probe:s3cret@web.shop.svc/",
            "https://token@web.shop.svc",
            "http://a@b@web.shop.svc:8080/x",
        ] {
            assert!(cel.is_match(bad), "{bad}");
        }
        for good in [
            "http://web.shop.svc/users/@me",
            "http://web.shop.svc/?next=a@b",
            "http://web.shop.svc#a@b",
            "http://[fd12::7]:8080/",
        ] {
            assert!(!cel.is_match(good), "{good}");
        }
    }

    #[test]
    fn a_tcp_host_is_a_name_or_an_address_without_scheme_port_or_path() {
        let host = rules(&["slos", "[]", "probe", "tcp", "host"]);
        assert!(
            host.iter()
                .any(|r| r.contains(TCP_HOST_NAME) && r.contains(TCP_HOST_V6)),
            "{host:?}"
        );
        let name = regex::Regex::new(TCP_HOST_NAME).unwrap();
        let v6 = regex::Regex::new(TCP_HOST_V6).unwrap();
        let ok = |h: &str| name.is_match(h) || v6.is_match(h);
        for good in [
            "db.payments.svc",
            "db.payments.svc.cluster.local.",
            "localhost",
            "10.0.0.7",
            "::1",
            "fd12:3456::7",
            "::ffff:10.0.0.7",
            "redis_primary.cache",
        ] {
            assert!(ok(good), "{good}");
        }
        for bad in [
            "http://db.payments.svc",
            "tcp://db:5432",
            "db.payments.svc:5432",
            "cafe:80",
            "db.payments.svc/health",
            "[::1]",
            "db payments",
            "-db",
            "db\n",
        ] {
            assert!(!ok(bad), "{bad}");
        }
    }

    /// The regular expressions sit in single-quoted CEL strings as they are.
    #[test]
    fn the_regular_expressions_need_no_escaping_in_cel() {
        for re in [
            CONTROL_CHARACTERS,
            URL_CREDENTIALS,
            TCP_HOST_NAME,
            TCP_HOST_V6,
        ] {
            assert!(!re.contains(['\'', '\\']), "{re}");
        }
    }

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
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("-0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("+3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5.s"), Ok(Duration::from_secs(5)));
        assert_eq!(
            parse_duration("1h1m1s1ms1us1ns"),
            Ok(Duration::new(3661, 1_001_001))
        );
        assert_eq!(parse_duration("3µs"), Ok(Duration::from_micros(3)));
        assert_eq!(
            parse_duration("2562047h47m16.854775807s"),
            Ok(Duration::from_nanos(i64::MAX as u64))
        );
        for bad in [
            "",
            "s",
            ".",
            ".s",
            "1",
            "1x",
            "1.2.3s",
            "1s2",
            "2562047h47m16.854775808s",
            "9223372036854775808ns",
            "74444444444444444444444444444444444444444m7m76.",
            "1e3s",
            " - 1s",
            "--1s",
        ] {
            assert!(
                matches!(parse_duration(bad), Err(DurationError::Malformed(_))),
                "{bad:?}: {:?}",
                parse_duration(bad)
            );
        }
    }
}
