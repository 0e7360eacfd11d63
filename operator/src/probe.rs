//! Probes: http, tcp, prometheus and kubernetes, each SLO in its own task so
//! a slow or hanging probe never delays another. Every sample carries the
//! time the probe started. Samples go into a run-length-encoded
//! [`Timeline`], flushed to a ConfigMap per experiment so a restarted operator
//! continues the measurement and reports can draw it.
//!
//! Secret values (header values, bearer tokens) are read into memory only;
//! they never appear in samples, errors, status, events or logs.

use crate::api::{DataCenterFailure, HttpMethod, Probe, SecretKeyRef, SloSpec, parse_duration};
use crate::slo::{Outcome, Timeline};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::AbortHandle;

/// What probes may read and reach, from the installer's flags. A DataCenterFailure may be created by anyone allowed to create
/// one; these limits keep its probes from reading Secrets of other teams or
/// being turned into a scanner of the cluster's network.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Namespaces whose Secrets probes may read (header values, bearer
    /// tokens, CA bundles). Empty: none.
    pub secret_namespaces: std::collections::BTreeSet<String>,
    /// Allow link-local and cloud metadata addresses (169.254.0.0/16,
    /// fe80::/10, fd00:ec2::254).
    pub allow_link_local: bool,
    /// The Kubernetes API server's addresses (host, port): never a probe target.
    pub apiserver: Vec<(String, u16)>,
}

/// What the probes run with: the [`Policy`] and the hosts file (if any).
/// Built once at start-up and handed to everything that checks, builds or
/// runs probes; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Env {
    policy: Arc<Policy>,
    hosts: Option<Arc<HostsFile>>,
}

impl Env {
    /// Probes under `policy`, looking names up in `hosts_file` first (if any).
    pub fn new(policy: Policy, hosts_file: Option<std::path::PathBuf>) -> Env {
        Env {
            policy: Arc::new(policy),
            hosts: hosts_file.map(|path| Arc::new(HostsFile::new(path))),
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The address the hosts file gives `name`, if any.
    pub fn hosts_lookup(&self, name: &str) -> Option<std::net::IpAddr> {
        self.hosts.as_ref()?.lookup(name)
    }
}

/// Link-local or cloud metadata: never a probe target unless allowed.
pub fn is_link_local(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_link_local(),
        std::net::IpAddr::V6(v6) => {
            (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6 == "fd00:ec2::254".parse::<std::net::Ipv6Addr>().unwrap()
                || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_link_local())
        }
    }
}

/// Why a probe may not target `host:port`, if it may not.
pub fn refused_target(p: &Policy, host: &str, port: u16) -> Option<String> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let host = host.as_str();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>()
        && is_link_local(ip)
        && !p.allow_link_local
    {
        return Some(format!(
            "{host} is a link-local or cloud metadata address; the operator refuses those (it allows them only with --allow-link-local-probes)"
        ));
    }
    let api_names = [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ];
    if api_names.contains(&host)
        || p.apiserver
            .iter()
            .any(|(h, ap)| h.trim_start_matches('[').trim_end_matches(']') == bare && *ap == port)
    {
        return Some(format!(
            "{host}:{port} is the Kubernetes API server; probes may not target it"
        ));
    }
    None
}

/// Check what the schema cannot: every Secret a probe names is in a listed
/// namespace, and no probe targets a refused address. Err names the field.
pub fn check_spec(spec: &crate::api::DataCenterFailureSpec, env: &Env) -> Result<(), String> {
    check_spec_with(spec, env.policy())
}

/// [`check_spec`] against a given policy.
pub fn check_spec_with(spec: &crate::api::DataCenterFailureSpec, p: &Policy) -> Result<(), String> {
    let secret_ok = |field: String, r: &SecretKeyRef| -> Result<(), String> {
        if p.secret_namespaces.contains(&r.namespace) {
            return Ok(());
        }
        let listed = if p.secret_namespaces.is_empty() {
            "none".to_string()
        } else {
            p.secret_namespaces
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        };
        Err(format!(
            "{field}.namespace: probes read Secrets only in the namespaces the operator was installed for ({listed}); {} is not one of them",
            r.namespace
        ))
    };
    for (i, slo) in spec.slos.iter().enumerate() {
        let at = format!("spec.slos[{i}].probe");
        if let Some(h) = &slo.probe.http {
            for (j, hd) in h.headers.iter().enumerate() {
                if let Some(v) = &hd.value_from {
                    secret_ok(
                        format!("{at}.http.headers[{j}].valueFrom.secretKeyRef"),
                        &v.secret_key_ref,
                    )?;
                }
            }
            if let Some(ca) = h.tls.as_ref().and_then(|t| t.ca_secret_ref.as_ref()) {
                secret_ok(format!("{at}.http.tls.caSecretRef"), ca)?;
            }
            let (host, port) = url_target(&h.url);
            if let Some(why) = refused_target(p, &host, port) {
                return Err(format!("{at}.http.url: {why}"));
            }
        }
        if let Some(t) = &slo.probe.tcp
            && let Some(why) = refused_target(p, &t.host, t.port as u16)
        {
            return Err(format!("{at}.tcp: {why}"));
        }
        if let Some(pr) = &slo.probe.prometheus {
            if let Some(r) = &pr.bearer_token_secret_ref {
                secret_ok(format!("{at}.prometheus.bearerTokenSecretRef"), r)?;
            }
            let (host, port) = url_target(&pr.url);
            if let Some(why) = refused_target(p, &host, port) {
                return Err(format!("{at}.prometheus.url: {why}"));
            }
        }
    }
    Ok(())
}

/// The host and port an http(s) URL connects to.
fn url_target(url: &str) -> (String, u16) {
    match reqwest::Url::parse(url) {
        Ok(u) => (
            u.host_str().unwrap_or("").to_string(),
            u.port_or_known_default().unwrap_or(0),
        ),
        Err(_) => (String::new(), 0),
    }
}

/// Addresses a probe may connect to: link-local ones dropped unless allowed.
fn allowed_addrs(
    p: &Policy,
    host: &str,
    addrs: Vec<std::net::SocketAddr>,
) -> std::io::Result<Vec<std::net::SocketAddr>> {
    if p.allow_link_local {
        return Ok(addrs);
    }
    let kept: Vec<_> = addrs
        .into_iter()
        .filter(|a| !is_link_local(a.ip()))
        .collect();
    if kept.is_empty() {
        return Err(std::io::Error::other(format!(
            "{host} resolves only to link-local or metadata addresses (refused)"
        )));
    }
    Ok(kept)
}

/// A response body read up to `cap` bytes: (the bytes, whether there was more).
async fn read_capped(
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

/// The most of an http probe's body that is searched for `bodyContains`.
pub const BODY_CAP: usize = 64 * 1024;
/// The most of a Prometheus answer that is read.
pub const PROMETHEUS_CAP: usize = 1024 * 1024;

/// A hosts file (`ADDRESS NAME...` lines) the probes look names up in first,
/// like `curl --resolve`: how an operator running outside the cluster
/// reaches in-cluster names. Re-read when it changes.
#[derive(Debug)]
struct HostsFile {
    path: std::path::PathBuf,
    /// The file's modification time when last read, and what it said.
    cache: Mutex<(
        Option<std::time::SystemTime>,
        BTreeMap<String, std::net::IpAddr>,
    )>,
}

impl HostsFile {
    fn new(path: std::path::PathBuf) -> HostsFile {
        HostsFile {
            path,
            cache: Mutex::new((None, BTreeMap::new())),
        }
    }

    /// The address the file gives `name`, if any.
    fn lookup(&self, name: &str) -> Option<std::net::IpAddr> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let mut cache = self.cache.lock().unwrap();
        if cache.0 != modified || modified.is_none() {
            let text = std::fs::read_to_string(&self.path).unwrap_or_default();
            cache.1 = parse_hosts(&text);
            cache.0 = modified;
        }
        cache.1.get(name.trim_end_matches('.')).copied()
    }
}

/// `ADDRESS NAME...` lines; `#` starts a comment.
pub fn parse_hosts(text: &str) -> BTreeMap<String, std::net::IpAddr> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let Some(ip) = words.next().and_then(|a| a.parse().ok()) else {
            continue;
        };
        for name in words {
            out.insert(name.to_string(), ip);
        }
    }
    out
}

/// Resolves through the hosts file first, then the system resolver.
struct HostsResolver(Env);

impl reqwest::dns::Resolve for HostsResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        let env = self.0.clone();
        Box::pin(async move {
            let found: Vec<std::net::SocketAddr> = match env.hosts_lookup(&host) {
                Some(ip) => vec![std::net::SocketAddr::new(ip, 0)],
                None => tokio::net::lookup_host((host.as_str(), 0)).await?.collect(),
            };
            let addrs: reqwest::dns::Addrs =
                Box::new(allowed_addrs(env.policy(), &host, found)?.into_iter());
            Ok(addrs)
        })
    }
}

/// Every probe's HTTP client resolves through the hosts file (if any) and
/// drops refused addresses.
fn with_hosts(b: reqwest::ClientBuilder, env: &Env) -> reqwest::ClientBuilder {
    b.dns_resolver(Arc::new(HostsResolver(env.clone())))
}

/// Follow redirects only when asked, and then only to the same scheme, host
/// and port: a header carrying a Secret never leaves the URL's own origin.
fn same_origin_redirects(follow: bool) -> reqwest::redirect::Policy {
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

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_millisecond()
}

/// A probe ready to run: Secrets resolved, clients built.
pub enum Prober {
    Http {
        client: reqwest::Client,
        method: reqwest::Method,
        url: String,
        headers: Vec<(String, String)>,
        expected: Vec<u16>,
        body_contains: Option<String>,
    },
    Tcp {
        host: String,
        port: u16,
        env: Env,
    },
    Prometheus {
        client: reqwest::Client,
        url: String,
        query: String,
        op: Comparison,
        threshold: f64,
        token: Option<String>,
        empty: crate::api::EmptyResult,
    },
    Service {
        client: Client,
        namespace: String,
        name: String,
        min_ready: usize,
    },
    Workload {
        client: Client,
        kind: crate::api::WorkloadKind,
        namespace: String,
        name: String,
        min_available: i32,
    },
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

async fn secret_value(client: &Client, p: &Policy, r: &SecretKeyRef) -> Result<String, String> {
    if !p.secret_namespaces.contains(&r.namespace) {
        return Err(format!(
            "secret {}/{}: probes read Secrets only in the namespaces the operator was installed for",
            r.namespace, r.name
        ));
    }
    let secret = Api::<Secret>::namespaced(client.clone(), &r.namespace)
        .get_opt(&r.name)
        .await
        .map_err(|e| format!("reading secret {}/{}: {e}", r.namespace, r.name))?
        .ok_or_else(|| format!("secret {}/{} not found", r.namespace, r.name))?;
    let bytes = secret
        .data
        .and_then(|d| d.get(&r.key).cloned())
        .ok_or_else(|| format!("secret {}/{} has no key {}", r.namespace, r.name, r.key))?;
    String::from_utf8(bytes.0)
        .map(|s| s.trim_end_matches('\n').to_string())
        .map_err(|_| {
            format!(
                "secret {}/{} key {} is not text",
                r.namespace, r.name, r.key
            )
        })
}

impl Prober {
    /// Resolve Secrets and build clients. An error means the probe cannot run.
    pub async fn build(
        probe: &Probe,
        timeout: Duration,
        client: &Client,
        env: &Env,
    ) -> Result<Prober, String> {
        if let Some(h) = &probe.http {
            let mut b = with_hosts(reqwest::Client::builder(), env)
                .timeout(timeout)
                .redirect(same_origin_redirects(h.follow_redirects))
                .no_proxy();
            if let Some(tls) = &h.tls {
                if tls.insecure_skip_verify {
                    b = b.danger_accept_invalid_certs(true);
                }
                if let Some(ca) = &tls.ca_secret_ref {
                    let pem = secret_value(client, env.policy(), ca).await?;
                    let cert = reqwest::Certificate::from_pem(pem.as_bytes())
                        .map_err(|e| format!("CA from secret {}/{}: {e}", ca.namespace, ca.name))?;
                    b = b.add_root_certificate(cert);
                }
            }
            let mut headers = vec![];
            for hd in &h.headers {
                let value = match (&hd.value, &hd.value_from) {
                    (Some(v), _) => v.clone(),
                    (None, Some(from)) => {
                        secret_value(client, env.policy(), &from.secret_key_ref).await?
                    }
                    (None, None) => String::new(),
                };
                headers.push((hd.name.clone(), value));
            }
            let method = match h.method {
                HttpMethod::Get => reqwest::Method::GET,
                HttpMethod::Head => reqwest::Method::HEAD,
                HttpMethod::Post => reqwest::Method::POST,
                HttpMethod::Put => reqwest::Method::PUT,
                HttpMethod::Options => reqwest::Method::OPTIONS,
            };
            return Ok(Prober::Http {
                client: b.build().map_err(|e| format!("http client: {e}"))?,
                method,
                url: h.url.clone(),
                headers,
                expected: h.expected_status.iter().map(|s| *s as u16).collect(),
                body_contains: h.body_contains.clone(),
            });
        }
        if let Some(t) = &probe.tcp {
            return Ok(Prober::Tcp {
                host: t.host.clone(),
                port: t.port as u16,
                env: env.clone(),
            });
        }
        if let Some(p) = &probe.prometheus {
            let (op, threshold) = parse_comparison(&p.success_when)?;
            let token = match &p.bearer_token_secret_ref {
                Some(r) => Some(secret_value(client, env.policy(), r).await?),
                None => None,
            };
            let http = with_hosts(reqwest::Client::builder(), env)
                .timeout(timeout)
                .redirect(same_origin_redirects(false))
                .no_proxy()
                .build()
                .map_err(|e| format!("http client: {e}"))?;
            return Ok(Prober::Prometheus {
                client: http,
                url: p.url.trim_end_matches('/').to_string(),
                query: p.query.clone(),
                op,
                threshold,
                token,
                empty: p.empty_result,
            });
        }
        if let Some(k) = &probe.kubernetes {
            if let Some(s) = &k.service {
                return Ok(Prober::Service {
                    client: client.clone(),
                    namespace: s.namespace.clone(),
                    name: s.name.clone(),
                    min_ready: s.min_ready_endpoints.max(0) as usize,
                });
            }
            if let Some(w) = &k.workload {
                return Ok(Prober::Workload {
                    client: client.clone(),
                    kind: w.kind,
                    namespace: w.namespace.clone(),
                    name: w.name.clone(),
                    min_available: w.min_available,
                });
            }
        }
        Err("no probe kind is set".into())
    }

    /// One probe. Fail: the service is not healthy. Error: the probe could not tell.
    pub async fn probe(&self) -> (Outcome, Option<String>) {
        match self {
            Prober::Http {
                client,
                method,
                url,
                headers,
                expected,
                body_contains,
            } => {
                let mut req = client.request(method.clone(), url);
                for (k, v) in headers {
                    req = req.header(k, v);
                }
                let mut resp = match req.send().await {
                    Ok(r) => r,
                    Err(e) => return (Outcome::Fail, Some(http_error(&e))),
                };
                let status = resp.status().as_u16();
                let ok_status = if expected.is_empty() {
                    (200..400).contains(&status)
                } else {
                    expected.contains(&status)
                };
                if !ok_status {
                    return (Outcome::Fail, Some(format!("HTTP {status}")));
                }
                if let Some(needle) = body_contains {
                    // Read no more than BODY_CAP: a huge or endless body is a
                    // failed sample, never a full memory.
                    match read_capped(&mut resp, BODY_CAP).await {
                        Ok((body, _))
                            if String::from_utf8_lossy(&body).contains(needle.as_str()) => {}
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
            Prober::Tcp { host, port, env } => {
                let connected = async {
                    let found: Vec<std::net::SocketAddr> = match env.hosts_lookup(host) {
                        Some(ip) => vec![std::net::SocketAddr::new(ip, *port)],
                        None => tokio::net::lookup_host((host.as_str(), *port))
                            .await?
                            .collect(),
                    };
                    let addrs = allowed_addrs(env.policy(), host, found)?;
                    tokio::net::TcpStream::connect(&addrs[..]).await
                }
                .await;
                match connected {
                    Ok(_) => (Outcome::Ok, None),
                    Err(e) => (Outcome::Fail, Some(format!("connect {host}:{port}: {e}"))),
                }
            }
            Prober::Prometheus {
                client,
                url,
                query,
                op,
                threshold,
                token,
                empty,
            } => {
                let mut req = client
                    .get(format!("{url}/api/v1/query"))
                    .query(&[("query", query.as_str())]);
                if let Some(t) = token {
                    req = req.bearer_auth(t);
                }
                let body: serde_json::Value = match req.send().await {
                    Ok(mut r) if r.status().is_success() => {
                        match read_capped(&mut r, PROMETHEUS_CAP).await {
                            Ok((_, true)) => {
                                return (
                                    Outcome::Error,
                                    Some(format!(
                                        "prometheus: the answer is larger than {} MiB",
                                        PROMETHEUS_CAP >> 20
                                    )),
                                );
                            }
                            Ok((bytes, false)) => match serde_json::from_slice(&bytes) {
                                Ok(v) => v,
                                Err(e) => {
                                    return (
                                        Outcome::Error,
                                        Some(format!("prometheus answer: not JSON: {e}")),
                                    );
                                }
                            },
                            Err(e) => {
                                return (
                                    Outcome::Error,
                                    Some(format!("prometheus answer: {}", http_error(&e))),
                                );
                            }
                        }
                    }
                    Ok(r) => {
                        return (
                            Outcome::Error,
                            Some(format!("prometheus: HTTP {}", r.status().as_u16())),
                        );
                    }
                    Err(e) => {
                        return (
                            Outcome::Error,
                            Some(format!("prometheus: {}", http_error(&e))),
                        );
                    }
                };
                match prometheus_value(&body) {
                    Ok(Some(v)) if op.holds(v, *threshold) => (Outcome::Ok, None),
                    Ok(Some(v)) => (
                        Outcome::Fail,
                        Some(format!("{v} does not satisfy {op:?} {threshold}")),
                    ),
                    Ok(None) => {
                        let why = Some("prometheus: the query returned no series".to_string());
                        match empty {
                            crate::api::EmptyResult::Fail => (Outcome::Fail, why),
                            crate::api::EmptyResult::Ok => (Outcome::Ok, None),
                            crate::api::EmptyResult::Error => (Outcome::Error, why),
                        }
                    }
                    Err(e) => (Outcome::Error, Some(e)),
                }
            }
            Prober::Service {
                client,
                namespace,
                name,
                min_ready,
            } => {
                let lp =
                    ListParams::default().labels(&format!("kubernetes.io/service-name={name}"));
                match Api::<EndpointSlice>::namespaced(client.clone(), namespace)
                    .list(&lp)
                    .await
                {
                    Ok(list) => {
                        let ready = list
                            .items
                            .iter()
                            .flat_map(|s| s.endpoints.iter())
                            .filter(|e| {
                                e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false)
                            })
                            .count();
                        if ready >= *min_ready {
                            (Outcome::Ok, None)
                        } else {
                            (
                                Outcome::Fail,
                                Some(format!("{ready} ready endpoints, need {min_ready}")),
                            )
                        }
                    }
                    Err(e) => (
                        Outcome::Error,
                        Some(format!("listing EndpointSlices of {namespace}/{name}: {e}")),
                    ),
                }
            }
            Prober::Workload {
                client,
                kind,
                namespace,
                name,
                min_available,
            } => {
                let available = workload_available(client, *kind, namespace, name).await;
                match available {
                    Ok(Some(n)) if n >= *min_available => (Outcome::Ok, None),
                    Ok(Some(n)) => (
                        Outcome::Fail,
                        Some(format!("{n} available replicas, need {min_available}")),
                    ),
                    Ok(None) => (
                        Outcome::Fail,
                        Some(format!("{kind:?} {namespace}/{name} not found")),
                    ),
                    Err(e) => (
                        Outcome::Error,
                        Some(format!("reading {kind:?} {namespace}/{name}: {e}")),
                    ),
                }
            }
        }
    }
}

/// An HTTP error without anything from the request (no headers, no token).
fn http_error(e: &reqwest::Error) -> String {
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

async fn workload_available(
    client: &Client,
    kind: crate::api::WorkloadKind,
    ns: &str,
    name: &str,
) -> kube::Result<Option<i32>> {
    use crate::api::WorkloadKind::*;
    let c = client.clone();
    Ok(match kind {
        Deployment => Api::<self::Deployment>::namespaced(c, ns)
            .get_opt(name)
            .await?
            .map(|d| d.status.and_then(|s| s.available_replicas).unwrap_or(0)),
        StatefulSet => Api::<self::StatefulSet>::namespaced(c, ns)
            .get_opt(name)
            .await?
            .map(|d| d.status.and_then(|s| s.available_replicas).unwrap_or(0)),
        DaemonSet => Api::<self::DaemonSet>::namespaced(c, ns)
            .get_opt(name)
            .await?
            .map(|d| d.status.and_then(|s| s.number_available).unwrap_or(0)),
        ReplicaSet => Api::<self::ReplicaSet>::namespaced(c, ns)
            .get_opt(name)
            .await?
            .map(|d| d.status.and_then(|s| s.available_replicas).unwrap_or(0)),
    })
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

// ---------------------------------------------------------------------------
// The runner: one task per SLO, timelines shared with the controller.
// ---------------------------------------------------------------------------

/// Stored per experiment in the ConfigMap `firedrill-<name>`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Recording {
    pub slos: BTreeMap<String, Timeline>,
}

/// The probes of one experiment while they run.
pub struct Runner {
    pub timelines: BTreeMap<String, Arc<Mutex<Timeline>>>,
    /// Guard SLOs only act once the fault is in place: Unix ms, 0 = not armed.
    pub armed_at: Arc<AtomicI64>,
    tasks: Vec<AbortHandle>,
}

impl Drop for Runner {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Runner {
    /// Start probing every SLO, continuing `previous` timelines.
    pub fn start(
        client: &Client,
        obj: &DataCenterFailure,
        previous: Recording,
        env: &Env,
    ) -> Runner {
        let armed_at = Arc::new(AtomicI64::new(0));
        let mut timelines = BTreeMap::new();
        let mut tasks = vec![];
        for slo in &obj.spec.slos {
            let mut kept = previous.slos.get(&slo.name).cloned().unwrap_or_default();
            kept.cap_ms = sample_cap(slo).as_millis() as i64;
            let tl = Arc::new(Mutex::new(kept));
            timelines.insert(slo.name.clone(), tl.clone());
            let task = tokio::spawn(run_slo(
                client.clone(),
                obj.name_any(),
                slo.clone(),
                tl,
                armed_at.clone(),
                env.clone(),
            ));
            tasks.push(task.abort_handle());
        }
        Runner {
            timelines,
            armed_at,
            tasks,
        }
    }

    /// A window edge at `t` (injection, start of the restore) on every SLO.
    pub fn mark(&self, t: i64) {
        for tl in self.timelines.values() {
            tl.lock().unwrap().mark(t);
        }
    }

    pub fn recording(&self) -> Recording {
        Recording {
            slos: self
                .timelines
                .iter()
                .map(|(k, v)| (k.clone(), v.lock().unwrap().clone()))
                .collect(),
        }
    }
}

/// The longest time one sample stands for: the longer of the interval and
/// the timeout (a probe that hangs delays the next one), plus one interval.
pub fn sample_cap(slo: &SloSpec) -> Duration {
    let interval = parse_duration(&slo.interval).unwrap_or(Duration::from_secs(1));
    let timeout = parse_duration(&slo.timeout).unwrap_or(Duration::from_secs(1));
    interval.max(timeout) + interval
}

async fn run_slo(
    client: Client,
    experiment: String,
    slo: SloSpec,
    timeline: Arc<Mutex<Timeline>>,
    armed_at: Arc<AtomicI64>,
    env: Env,
) {
    let interval = parse_duration(&slo.interval)
        .unwrap_or(Duration::from_secs(1))
        .max(Duration::from_millis(100));
    let timeout = parse_duration(&slo.timeout).unwrap_or(Duration::from_secs(1));
    let tolerance = slo
        .guard
        .as_ref()
        .map(|g| parse_duration(&g.tolerance).unwrap_or_default().as_millis() as i64);
    let tripped = AtomicBool::new(false);
    let mut prober: Option<Prober> = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticker.tick().await;
        let at = now_ms();
        if prober.is_none() {
            match Prober::build(&slo.probe, timeout, &client, &env).await {
                Ok(p) => prober = Some(p),
                Err(e) => {
                    let mut tl = timeline.lock().unwrap();
                    tl.push(at, Outcome::Error);
                    tl.set_error(e);
                    continue;
                }
            }
        }
        let p = prober.as_ref().unwrap();
        let (outcome, why) = match tokio::time::timeout(timeout, p.probe()).await {
            Ok(r) => r,
            Err(_) => (Outcome::Fail, Some(format!("timed out after {timeout:?}"))),
        };
        let failing_ms = {
            let mut tl = timeline.lock().unwrap();
            tl.push(at, outcome);
            if let Some(why) = why {
                tl.set_error(why);
            }
            tl.failing_for(now_ms())
        };
        // A guard SLO ends the fault once breached past its tolerance.
        let armed = armed_at.load(Ordering::Relaxed);
        if let Some(tol) = tolerance
            && armed > 0
            && outcome != Outcome::Ok
            && failing_ms > tol
            && now_ms() - armed > tol
            && !tripped.swap(true, Ordering::Relaxed)
        {
            let why = format!(
                "guard SLO {} breached for {:.1}s (tolerance {}s)",
                slo.name,
                failing_ms as f64 / 1000.0,
                tol as f64 / 1000.0
            );
            tracing::warn!(experiment = %experiment, "{why}; aborting");
            let patch = serde_json::json!({"metadata": {"annotations": {crate::api::ABORT_ANNOTATION: why}}});
            if let Err(e) = Api::<DataCenterFailure>::all(client.clone())
                .patch(&experiment, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                tracing::error!(experiment = %experiment, error = %e, "cannot request the abort for a breached guard");
                tripped.store(false, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(probe: serde_json::Value) -> crate::api::DataCenterFailureSpec {
        serde_json::from_value(serde_json::json!({
            "zone": "zone-a",
            "slos": [{"name": "x", "recoveryTimeObjective": "30s", "probe": probe}],
        }))
        .unwrap()
    }

    fn policy_for(ns: &[&str]) -> Policy {
        Policy {
            secret_namespaces: ns.iter().map(|s| s.to_string()).collect(),
            allow_link_local: false,
            apiserver: vec![("127.0.0.1".into(), 6443)],
        }
    }

    #[test]
    fn secrets_are_read_only_in_the_listed_namespaces() {
        let header = spec(
            serde_json::json!({"http": {"url": "http://api.shop.svc/", "headers": [
            {"name": "Authorization", "valueFrom": {"secretKeyRef": {"namespace": "kube-system", "name": "admin", "key": "token"}}}]}}),
        );
        let err = check_spec_with(&header, &policy_for(&["shop"])).unwrap_err();
        assert_eq!(
            err,
            "spec.slos[0].probe.http.headers[0].valueFrom.secretKeyRef.namespace: probes read Secrets only in the namespaces the operator was installed for (shop); kube-system is not one of them"
        );
        assert_eq!(
            check_spec_with(&header, &policy_for(&["kube-system"])),
            Ok(())
        );
        let token = spec(
            serde_json::json!({"prometheus": {"url": "http://prom.monitoring:9090", "query": "up", "successWhen": "> 0",
            "bearerTokenSecretRef": {"namespace": "other", "name": "t", "key": "k"}}}),
        );
        assert!(
            check_spec_with(&token, &policy_for(&[]))
                .unwrap_err()
                .starts_with("spec.slos[0].probe.prometheus.bearerTokenSecretRef.namespace")
        );
        let ca = spec(
            serde_json::json!({"http": {"url": "https://api.shop.svc/", "tls": {"caSecretRef": {"namespace": "x", "name": "ca", "key": "ca.crt"}}}}),
        );
        assert!(
            check_spec_with(&ca, &policy_for(&["shop"]))
                .unwrap_err()
                .contains("tls.caSecretRef")
        );
    }

    #[test]
    fn metadata_link_local_and_the_api_server_are_never_targets() {
        let p = policy_for(&[]);
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00:ec2::254]/latest/meta-data/",
            "http://[fe80::1]:8080/",
        ] {
            let err =
                check_spec_with(&spec(serde_json::json!({"http": {"url": url}})), &p).unwrap_err();
            assert!(
                err.starts_with("spec.slos[0].probe.http.url:") && err.contains("link-local"),
                "{url}: {err}"
            );
        }
        let tcp = spec(serde_json::json!({"tcp": {"host": "169.254.169.254", "port": 80}}));
        assert!(
            check_spec_with(&tcp, &p)
                .unwrap_err()
                .starts_with("spec.slos[0].probe.tcp:")
        );
        let allowed = Policy {
            allow_link_local: true,
            ..p.clone()
        };
        assert_eq!(check_spec_with(&tcp, &allowed), Ok(()));
        for url in [
            "https://127.0.0.1:6443/api",
            "https://kubernetes.default.svc/healthz",
        ] {
            let err =
                check_spec_with(&spec(serde_json::json!({"http": {"url": url}})), &p).unwrap_err();
            assert!(err.contains("is the Kubernetes API server"), "{url}: {err}");
        }
        let api =
            spec(serde_json::json!({"tcp": {"host": "Kubernetes.Default.svc.", "port": 443}}));
        assert!(
            check_spec_with(&api, &p)
                .unwrap_err()
                .contains("is the Kubernetes API server")
        );
        // The same host on another port is fine (the testbed runs everything on loopback).
        assert_eq!(
            check_spec_with(
                &spec(serde_json::json!({"http": {"url": "http://127.0.0.1:8080/"}})),
                &p
            ),
            Ok(())
        );
        assert!(is_link_local("169.254.1.1".parse().unwrap()));
        assert!(!is_link_local("10.0.0.1".parse().unwrap()));
        assert!(is_link_local("::ffff:169.254.169.254".parse().unwrap()));
    }

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
