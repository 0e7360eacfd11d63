//! The http probe, and what every probe that speaks HTTP shares: bodies read
//! up to a cap, redirects only within the URL's own origin, errors that carry
//! nothing from the request.

use super::Env;
use super::hosts::with_hosts;
use super::secret::secret_value;
use crate::api::{HttpHeader, HttpMethod, HttpProbe, TlsConfig};
use crate::slo::Outcome;
use kube::Client;
use std::time::Duration;

/// The most of an http probe's body that is searched for `bodyContains`.
pub const BODY_CAP: usize = 64 * 1024;

/// An http probe ready to run: header Secrets read, client built.
pub struct Http {
    client: reqwest::Client,
    method: reqwest::Method,
    url: String,
    headers: Vec<(String, String)>,
    expected: Vec<u16>,
    body_contains: Option<String>,
}

impl Http {
    /// Read the Secrets `h` names and build its client.
    pub(super) async fn build(
        h: &HttpProbe,
        timeout: Duration,
        client: &Client,
        env: &Env,
    ) -> Result<Http, String> {
        let (client, headers) = client_and_headers(
            &h.url,
            &h.headers,
            h.tls.as_ref(),
            h.follow_redirects,
            timeout,
            client,
            env,
        )
        .await?;
        Ok(Http {
            client,
            method: method(h.method),
            url: h.url.clone(),
            headers,
            expected: h.expected_status.iter().map(|s| *s as u16).collect(),
            body_contains: h.body_contains.clone(),
        })
    }

    /// One request: Ok on an expected status (and body), Fail otherwise.
    pub(super) async fn probe(&self) -> (Outcome, Option<String>) {
        let mut req = self.client.request(self.method.clone(), &self.url);
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let mut resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return (Outcome::Fail, Some(http_error(&e))),
        };
        let status = resp.status().as_u16();
        let ok_status = if self.expected.is_empty() {
            (200..400).contains(&status)
        } else {
            self.expected.contains(&status)
        };
        if !ok_status {
            return (Outcome::Fail, Some(format!("HTTP {status}")));
        }
        if let Some(needle) = &self.body_contains {
            // Read no more than BODY_CAP: a huge or endless body is a
            // failed sample, never a full memory.
            match read_capped(&mut resp, BODY_CAP).await {
                Ok((body, _)) if String::from_utf8_lossy(&body).contains(needle.as_str()) => {}
                Ok((_, true)) => {
                    return (
                        Outcome::Fail,
                        Some(format!(
                            "HTTP {status}: no {needle:?} in the first {} KiB of the body",
                            BODY_CAP / 1024
                        )),
                    );
                }
                Ok(_) => {
                    return (
                        Outcome::Fail,
                        Some(format!("HTTP {status}: body does not contain {needle:?}")),
                    );
                }
                Err(e) => return (Outcome::Fail, Some(http_error(&e))),
            }
        }
        (Outcome::Ok, None)
    }
}

/// A client for requests to `url` (TLS as `tls` says, redirects only within
/// its origin when `follow`), and the headers with their Secrets read (each
/// Secret must consent to `url`'s host).
pub(super) async fn client_and_headers(
    url: &str,
    headers: &[HttpHeader],
    tls: Option<&TlsConfig>,
    follow: bool,
    timeout: Duration,
    client: &Client,
    env: &Env,
) -> Result<(reqwest::Client, Vec<(String, String)>), String> {
    let mut b = with_hosts(reqwest::Client::builder(), env, url)?
        .timeout(timeout)
        .redirect(same_origin_redirects(follow))
        .no_proxy();
    if let Some(tls) = tls {
        if tls.insecure_skip_verify {
            b = b.danger_accept_invalid_certs(true);
        }
        if let Some(ca) = &tls.ca_secret_ref {
            let pem = secret_value(client, env.policy(), ca, None).await?;
            let cert = reqwest::Certificate::from_pem(pem.as_bytes())
                .map_err(|e| format!("CA from secret {}/{}: {e}", ca.namespace, ca.name))?;
            b = b.add_root_certificate(cert);
        }
    }
    let host = super::policy::url_target(url).0;
    let mut out = vec![];
    for hd in headers {
        let value = match (&hd.value, &hd.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) => {
                secret_value(client, env.policy(), &from.secret_key_ref, Some(&host)).await?
            }
            (None, None) => String::new(),
        };
        out.push((hd.name.clone(), value));
    }
    let built = b.build().map_err(|e| format!("http client: {e}"))?;
    Ok((built, out))
}

fn method(m: HttpMethod) -> reqwest::Method {
    match m {
        HttpMethod::Get => reqwest::Method::GET,
        HttpMethod::Head => reqwest::Method::HEAD,
        HttpMethod::Post => reqwest::Method::POST,
        HttpMethod::Put => reqwest::Method::PUT,
        HttpMethod::Options => reqwest::Method::OPTIONS,
    }
}

/// A response body read up to `cap` bytes: (the bytes, whether there was more).
pub(super) async fn read_capped(
    resp: &mut reqwest::Response,
    cap: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = cap - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
        if body.len() == cap {
            return Ok((body, true));
        }
    }
    Ok((body, false))
}

/// Follow redirects only when asked, and then only to the same scheme, host
/// and port: a header carrying a Secret never leaves the URL's own origin.
pub(super) fn same_origin_redirects(follow: bool) -> reqwest::redirect::Policy {
    if !follow {
        return reqwest::redirect::Policy::none();
    }
    reqwest::redirect::Policy::custom(|attempt| {
        let first = attempt.previous().first();
        let same = first.is_some_and(|f| {
            f.scheme() == attempt.url().scheme()
                && f.host_str() == attempt.url().host_str()
                && f.port_or_known_default() == attempt.url().port_or_known_default()
        });
        if attempt.previous().len() > 5 || !same {
            attempt.stop()
        } else {
            attempt.follow()
        }
    })
}

/// An HTTP error without anything from the request (no headers, no token).
pub(super) fn http_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "bad response body"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}
