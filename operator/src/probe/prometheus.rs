//! The prometheus probe: an instant query whose single number must satisfy
//! `successWhen`.

use super::Env;
use super::hosts::with_hosts;
use super::http::{http_error, read_capped, same_origin_redirects};
use super::secret::secret_value;
use crate::api::{EmptyResult, PrometheusProbe};
use crate::slo::Outcome;
use kube::Client;
use std::time::Duration;

/// The most of a Prometheus answer that is read.
pub const PROMETHEUS_CAP: usize = 1024 * 1024;

/// A prometheus probe ready to run: comparison parsed, token read, client built.
pub struct Prometheus {
    client: reqwest::Client,
    url: String,
    query: String,
    op: Comparison,
    threshold: f64,
    token: Option<String>,
    empty: EmptyResult,
}

impl Prometheus {
    /// Parse `successWhen`, read the bearer token and build the client.
    pub(super) async fn build(
        p: &PrometheusProbe,
        timeout: Duration,
        client: &Client,
        env: &Env,
    ) -> Result<Prometheus, String> {
        let (op, threshold) = parse_comparison(&p.success_when)?;
        let token = match &p.bearer_token_secret_ref {
            Some(r) => {
                let host = super::policy::url_target(&p.url).0;
                Some(secret_value(client, env.policy(), r, Some(&host)).await?)
            }
            None => None,
        };
        let http = with_hosts(reqwest::Client::builder(), env, &p.url)?
            .timeout(timeout)
            .redirect(same_origin_redirects(false))
            .no_proxy()
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        Ok(Prometheus {
            client: http,
            url: p.url.trim_end_matches('/').to_string(),
            query: p.query.clone(),
            op,
            threshold,
            token,
            empty: p.empty_result,
        })
    }

    /// One query. Error when Prometheus cannot answer or the answer is not
    /// one number; Fail when the number does not satisfy the comparison.
    pub(super) async fn probe(&self) -> (Outcome, Option<String>) {
        let body = match self.query().await {
            Ok(v) => v,
            Err(why) => return (Outcome::Error, Some(why)),
        };
        let (op, threshold) = (self.op, self.threshold);
        match prometheus_value(&body) {
            Ok(Some(v)) if op.holds(v, threshold) => (Outcome::Ok, None),
            Ok(Some(v)) => (
                Outcome::Fail,
                Some(format!("{v} does not satisfy {op:?} {threshold}")),
            ),
            Ok(None) => {
                let why = Some("prometheus: the query returned no series".to_string());
                match self.empty {
                    EmptyResult::Fail => (Outcome::Fail, why),
                    EmptyResult::Ok => (Outcome::Ok, None),
                    EmptyResult::Error => (Outcome::Error, why),
                }
            }
            Err(e) => (Outcome::Error, Some(e)),
        }
    }

    /// The answer to the query, read up to [`PROMETHEUS_CAP`].
    async fn query(&self) -> Result<serde_json::Value, String> {
        let mut req = self
            .client
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", self.query.as_str())]);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        match req.send().await {
            Ok(mut r) if r.status().is_success() => match read_capped(&mut r, PROMETHEUS_CAP).await
            {
                Ok((_, true)) => Err(format!(
                    "prometheus: the answer is larger than {} MiB",
                    PROMETHEUS_CAP >> 20
                )),
                Ok((bytes, false)) => serde_json::from_slice(&bytes)
                    .map_err(|e| format!("prometheus answer: not JSON: {e}")),
                Err(e) => Err(format!("prometheus answer: {}", http_error(&e))),
            },
            Ok(r) => Err(format!("prometheus: HTTP {}", r.status().as_u16())),
            Err(e) => Err(format!("prometheus: {}", http_error(&e))),
        }
    }
}

/// `< 0.01`, `>= 3`, ...
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Comparison {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Comparison {
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::Lt => value < threshold,
            Comparison::Le => value <= threshold,
            Comparison::Gt => value > threshold,
            Comparison::Ge => value >= threshold,
            Comparison::Eq => value == threshold,
            Comparison::Ne => value != threshold,
        }
    }
}

/// Parse `successWhen`, e.g. `< 0.01`.
pub fn parse_comparison(s: &str) -> Result<(Comparison, f64), String> {
    let s = s.trim();
    let (op, rest) = [
        ("<=", Comparison::Le),
        (">=", Comparison::Ge),
        ("==", Comparison::Eq),
        ("!=", Comparison::Ne),
        ("<", Comparison::Lt),
        (">", Comparison::Gt),
    ]
    .into_iter()
    .find_map(|(p, op)| s.strip_prefix(p).map(|r| (op, r)))
    .ok_or_else(|| format!("successWhen {s:?} must start with <, <=, >, >=, == or !="))?;
    let v: f64 = rest
        .trim()
        .parse()
        .map_err(|_| format!("successWhen {s:?}: {:?} is not a number", rest.trim()))?;
    Ok((op, v))
}

/// The single number of an instant-query answer (scalar, or a one-element
/// vector); `None` when the vector is empty.
pub fn prometheus_value(body: &serde_json::Value) -> Result<Option<f64>, String> {
    if body["status"] != "success" {
        return Err(format!(
            "prometheus: {}",
            body["error"].as_str().unwrap_or("query failed")
        ));
    }
    let data = &body["data"];
    let value = match data["resultType"].as_str() {
        Some("scalar") => &data["result"][1],
        Some("vector") => {
            let result = data["result"].as_array().ok_or("prometheus: no result")?;
            match result.len() {
                0 => return Ok(None),
                1 => &result[0]["value"][1],
                n => {
                    return Err(format!(
                        "prometheus: the query returned {n} series; it must return one"
                    ));
                }
            }
        }
        other => return Err(format!("prometheus: unsupported result type {other:?}")),
    };
    value
        .as_str()
        .and_then(|s| s.parse().ok())
        .map(Some)
        .ok_or_else(|| "prometheus: the value is not a number".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons() {
        assert_eq!(parse_comparison("< 0.01"), Ok((Comparison::Lt, 0.01)));
        assert_eq!(parse_comparison(">=3"), Ok((Comparison::Ge, 3.0)));
        assert!(parse_comparison("about 3").is_err());
        assert!(Comparison::Lt.holds(0.001, 0.01));
        assert!(!Comparison::Lt.holds(0.2, 0.01));
    }

    #[test]
    fn prometheus_answers() {
        let v = serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1.0, "0.25"]}]}});
        assert_eq!(prometheus_value(&v), Ok(Some(0.25)));
        let s = serde_json::json!({"status": "success", "data": {"resultType": "scalar", "result": [1.0, "3"]}});
        assert_eq!(prometheus_value(&s), Ok(Some(3.0)));
        let empty = serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": []}});
        assert_eq!(prometheus_value(&empty), Ok(None));
        let err = serde_json::json!({"status": "error", "error": "parse error"});
        assert!(prometheus_value(&err).unwrap_err().contains("parse error"));
    }
}
