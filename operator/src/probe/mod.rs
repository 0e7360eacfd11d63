//! Probes: http, tcp, prometheus and kubernetes, each SLO in its own task so
//! a slow or hanging probe never delays another. Every sample carries the
//! time the probe started. Samples go into a run-length-encoded
//! [`Timeline`](crate::slo::Timeline), flushed to a ConfigMap per experiment
//! so a restarted operator continues the measurement and reports can draw it.
//!
//! The invariant this module keeps: a probe reads only what the [`Policy`]
//! lets it read and reaches only what it lets it reach. Secrets come only
//! from the namespaces the operator was installed for, and one that is sent
//! (a header value, a bearer token) goes only to a host the Secret itself
//! lists in [`CONSENT_ANNOTATION`]; link-local and cloud
//! metadata addresses (unless allowed) and the Kubernetes API server are
//! never targets as written in the spec ([`check_spec`]), and link-local
//! addresses are dropped again from whatever a probe's host name resolves
//! to; an HTTP probe follows redirects only within its URL's own origin and
//! reads bodies only up to a cap. Secret values (header values, bearer
//! tokens) are read into memory only; they never appear in samples, errors,
//! status, events or logs.
//!
//! What probes run with (the policy and the hosts file) is an [`Env`] built
//! once at start-up and passed to [`check_spec`], [`Prober::build`] and
//! [`Runner::start`]: no process-wide state.
//!
//! - `policy`: what probes may read and reach; checking a spec against it.
//! - `apiserver`: the API server's addresses, learned from the cluster.
//! - `hosts`: the hosts file names are looked up in first; the resolver.
//! - `secret`: reading the value a SecretKeyRef names; a Secret sent
//!   somewhere must list the host in its consent annotation.
//! - `http`, `tcp`, `prometheus`, `kubernetes`, `write`: one probe kind each
//!   (`write` also reads its acknowledged writes back after the drill).
//! - `runner`: one task per SLO, the timelines, the guard's abort.
//! - `endpoints`: one EndpointSlice watch, the ready-endpoint timeline of
//!   each Service the verdict may attribute a failure to.

mod apiserver;
pub mod endpoints;
mod hosts;
mod http;
mod kubernetes;
mod policy;
mod prometheus;
mod runner;
mod secret;
mod tcp;
mod write;

pub use hosts::parse_hosts;
pub use http::BODY_CAP;
pub use policy::{
    Policy, check_spec, check_spec_with, check_targets, is_link_local, refused_target,
};
pub use prometheus::{Comparison, PROMETHEUS_CAP, parse_comparison, prometheus_value};
pub use runner::{Recording, Runner, sample_cap};
pub use secret::{CONSENT_ANNOTATION, check_consent, consented_hosts, sent_secrets};

use crate::api::Probe;
use crate::canary::{Readback, WriteLog};
use crate::slo::Outcome;
use kube::Client;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the probes run with: the [`Policy`], the hosts file (if any) and
/// the API server's addresses as last learned. Built once at start-up and
/// handed to everything that checks, builds or runs probes; cheap to clone
/// (clones share what is learned).
#[derive(Clone, Debug, Default)]
pub struct Env {
    policy: Arc<Policy>,
    hosts: Option<Arc<hosts::HostsFile>>,
    apiserver: Arc<apiserver::Known>,
}

/// How long resolving a probe's host may take at planning.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

impl Env {
    /// Probes under `policy`, looking names up in `hosts_file` first (if any;
    /// re-read when it changes). The policy's API server addresses that are
    /// IP addresses are known at once; [`Env::learn`] adds the rest.
    pub fn new(policy: Policy, hosts_file: Option<std::path::PathBuf>) -> Env {
        let env = Env {
            policy: Arc::new(policy),
            hosts: hosts_file.map(|path| Arc::new(hosts::HostsFile::new(path))),
            apiserver: Default::default(),
        };
        let configured = env
            .policy
            .apiserver
            .iter()
            .filter_map(|(h, p)| {
                let ip = h
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse()
                    .ok()?;
                Some(apiserver::configured_places(std::net::SocketAddr::new(
                    ip, *p,
                )))
            })
            .flatten()
            .collect();
        env.apiserver
            .replace(apiserver::Source::Configured, configured);
        env
    }

    /// Learn where the API server is: the policy's addresses resolved, the
    /// `kubernetes` Service's ClusterIPs and hosts entries, its endpoints.
    /// What cannot be read keeps what was known of it, with a warning.
    pub async fn learn(&self, client: &Client) {
        use apiserver::Source;
        use k8s_openapi::api::core::v1::Service;
        use k8s_openapi::api::discovery::v1::EndpointSlice;
        use kube::api::{Api, ListParams};
        let mut configured = vec![];
        for (host, port) in &self.policy.apiserver {
            match self.lookup(host, *port).await {
                Ok(addrs) => {
                    configured.extend(addrs.into_iter().flat_map(apiserver::configured_places))
                }
                Err(e) => {
                    tracing::warn!(host, error = %e, "cannot resolve the API server's address; probes are refused its name and port only")
                }
            }
        }
        if !configured.is_empty() {
            self.apiserver.replace(Source::Configured, configured);
        }
        match Api::<Service>::namespaced(client.clone(), "default")
            .get_opt("kubernetes")
            .await
        {
            Ok(svc) => {
                let places = svc
                    .map(|s| apiserver::service_places(&s, |n| self.hosts_lookup(n)))
                    .unwrap_or_default();
                self.apiserver.replace(Source::ClusterIp, places.clone());
                self.apiserver.replace(Source::HostsEntry, places);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the kubernetes Service; probes are refused its addresses as last known")
            }
        }
        let slices = ListParams::default().labels("kubernetes.io/service-name=kubernetes");
        match Api::<EndpointSlice>::namespaced(client.clone(), "default")
            .list(&slices)
            .await
        {
            Ok(list) => self
                .apiserver
                .replace(Source::Endpoint, apiserver::endpoint_places(&list.items)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the kubernetes Service's endpoints; probes are refused them as last known")
            }
        }
        tracing::debug!(addresses = ?self.apiserver.list(), "the API server's addresses");
    }

    /// The API server's addresses as last learned, for the log.
    pub fn api_server_addresses(&self) -> Vec<String> {
        self.apiserver.list()
    }

    /// Why `addr` is the API server, if it is.
    pub fn api_server_at(&self, addr: std::net::SocketAddr) -> Option<&'static str> {
        self.apiserver.at(addr)
    }

    /// The addresses `host` (a name or an IP address, IPv6 in brackets or
    /// not) resolves to on `port`: an address as itself; a name through the
    /// hosts file, then the system resolver (which also reads decimal and
    /// hex IPv4 forms such as `2130706433` and `0x7f000001`).
    pub(super) async fn lookup(
        &self,
        host: &str,
        port: u16,
    ) -> std::io::Result<Vec<std::net::SocketAddr>> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse() {
            return Ok(vec![std::net::SocketAddr::new(ip, port)]);
        }
        if let Some(ip) = self.hosts_lookup(bare) {
            return Ok(vec![std::net::SocketAddr::new(ip, port)]);
        }
        Ok(tokio::net::lookup_host((bare, port)).await?.collect())
    }

    /// The addresses a probe of `host:port` may connect to, of `addrs`
    /// (what it resolved to; their ports are ignored): none if one is the
    /// API server; link-local ones dropped unless allowed.
    pub(super) fn connectable(
        &self,
        host: &str,
        port: u16,
        addrs: Vec<std::net::SocketAddr>,
    ) -> std::io::Result<Vec<std::net::SocketAddr>> {
        for a in &addrs {
            let at = std::net::SocketAddr::new(a.ip(), port);
            if let Some(from) = self.api_server_at(at) {
                return Err(std::io::Error::other(format!(
                    "{host}:{port} resolves to {}, the Kubernetes API server ({from}); refused",
                    a.ip()
                )));
            }
        }
        policy::allowed_addrs(&self.policy, host, addrs)
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The address the hosts file gives `name`, if any.
    pub fn hosts_lookup(&self, name: &str) -> Option<std::net::IpAddr> {
        self.hosts.as_ref()?.lookup(name)
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_millisecond()
}

/// A probe ready to run: Secrets resolved, clients built.
pub enum Prober {
    Http(http::Http),
    Tcp(tcp::Tcp),
    Prometheus(prometheus::Prometheus),
    Service(kubernetes::Service),
    Workload(kubernetes::Workload),
    Write(write::Write),
}

/// What a probe that did not answer within its timeout means. For the
/// service's own endpoints (http, tcp), the service failed. For an
/// instrument (Prometheus, the Kubernetes API) the instrument failed: an
/// error, counted against `maxErrorPercent`, never a failure of the service.
pub fn timeout_outcome(probe: &Probe) -> Outcome {
    if probe.http.is_some() || probe.tcp.is_some() || probe.write.is_some() {
        Outcome::Fail
    } else {
        Outcome::Error
    }
}

impl Prober {
    /// Resolve Secrets and build clients. An error means the probe cannot
    /// run. A write probe logs its acknowledged writes in `log`.
    pub async fn build(
        probe: &Probe,
        timeout: Duration,
        client: &Client,
        env: &Env,
        log: Option<&Arc<Mutex<WriteLog>>>,
    ) -> Result<Prober, String> {
        if let Some(w) = &probe.write {
            let log = log.ok_or("a write probe without a write log")?;
            return Ok(Prober::Write(
                write::Write::build(w, timeout, client, env, log.clone()).await?,
            ));
        }
        if let Some(h) = &probe.http {
            return Ok(Prober::Http(
                http::Http::build(h, timeout, client, env).await?,
            ));
        }
        if let Some(t) = &probe.tcp {
            return Ok(Prober::Tcp(tcp::Tcp::build(t, env)));
        }
        if let Some(p) = &probe.prometheus {
            return Ok(Prober::Prometheus(
                prometheus::Prometheus::build(p, timeout, client, env).await?,
            ));
        }
        if let Some(k) = &probe.kubernetes {
            if let Some(s) = &k.service {
                return Ok(Prober::Service(kubernetes::Service::build(s, client)));
            }
            if let Some(w) = &k.workload {
                return Ok(Prober::Workload(kubernetes::Workload::build(w, client)));
            }
        }
        Err("no probe kind is set".into())
    }

    /// One probe. Fail: the service is not healthy. Error: the probe could not tell.
    pub async fn probe(&self) -> (Outcome, Option<String>) {
        match self {
            Prober::Http(p) => p.probe().await,
            Prober::Tcp(p) => p.probe().await,
            Prober::Prometheus(p) => p.probe().await,
            Prober::Service(p) => p.probe().await,
            Prober::Workload(p) => p.probe().await,
            Prober::Write(p) => p.probe().await,
        }
    }
}

/// Read every acknowledged write of `log` back through `slo`'s write probe,
/// within its read deadline. Err: the probe cannot be built (a Secret
/// missing, say), so nothing could be verified.
pub async fn verify_writes(
    slo: &crate::spec::Slo,
    log: &WriteLog,
    client: &Client,
    env: &Env,
) -> Result<Readback, String> {
    let w = slo.spec.probe.write.as_ref().ok_or("not a write probe")?;
    let shared = Arc::new(Mutex::new(log.clone()));
    let writer = write::Write::build(w, slo.timeout, client, env, shared).await?;
    let deadline = slo.read_deadline.unwrap_or(Duration::from_secs(120));
    Ok(writer.verify(log, deadline).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(v: serde_json::Value) -> Probe {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_timed_out_service_failed_a_timed_out_instrument_erred() {
        let http = probe(serde_json::json!({"http": {"url": "http://a.b/"}}));
        let tcp = probe(serde_json::json!({"tcp": {"host": "a.b", "port": 5432}}));
        let prom = probe(
            serde_json::json!({"prometheus": {"url": "http://p:9090", "query": "up", "successWhen": "> 0"}}),
        );
        let kube =
            probe(serde_json::json!({"kubernetes": {"service": {"namespace": "a", "name": "b"}}}));
        let write = probe(
            serde_json::json!({"write": {"url": "http://a.b/r", "readUrl": "http://a.b/r/{{id}}"}}),
        );
        assert_eq!(timeout_outcome(&write), Outcome::Fail);
        assert_eq!(timeout_outcome(&http), Outcome::Fail);
        assert_eq!(timeout_outcome(&tcp), Outcome::Fail);
        assert_eq!(timeout_outcome(&prom), Outcome::Error);
        assert_eq!(timeout_outcome(&kube), Outcome::Error);
    }
}
