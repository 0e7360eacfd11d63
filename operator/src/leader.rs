//! Leader election on a `coordination.k8s.io/v1` Lease, so only one operator
//! acts on experiments at a time, even while a Deployment rolls or a partition
//! leaves an old pod running.
//!
//! Every write is conditional on the Lease's resourceVersion, so two
//! candidates never both win. Expiry is judged from the Lease's `renewTime`
//! against this process's clock: clocks must agree to well within the lease
//! duration. A leader that cannot renew for two thirds of the duration stops
//! acting (the process exits) before anyone else may take over. Every
//! attempt to renew has a timeout shorter than that deadline, so a hung call
//! cannot outlive it.
//!
//! The elector talks through its own client ([`Clients::lease`]), with a
//! connection pool of its own: a renewal never waits behind the operator's
//! bulk deletes on a connection. Each attempt's duration is in
//! `firedrill_lease_renew_seconds`, and each loss of leadership in
//! `firedrill_leadership_losses_total`.
//!
//! Standbys say they are there: each keeps a small Lease of its own
//! (`firedrill-operator-standby-…`, renewed as it waits). A leader that is
//! asked to stop checks for a live standby: if there is one (a rolling
//! update), it hands its experiments over untouched; only when no other
//! operator is left does it restore every zone it holds.

use crate::clients::Clients;
use crate::metrics::Metrics;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use std::sync::Arc;
use std::time::Duration;

/// What a candidate may do with a Lease, decided from its spec alone.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// We hold it: renew.
    Ours,
    /// Nobody holds it, or its holder stopped renewing: take it.
    Free,
    /// Someone else holds it for this much longer.
    Held {
        holder: String,
        expires_in: Duration,
    },
}

/// Decide from a Lease spec (None: the Lease does not exist yet).
pub fn decide(spec: Option<&LeaseSpec>, me: &str, now: Timestamp) -> Decision {
    let Some(spec) = spec else {
        return Decision::Free;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder.is_empty() {
        return Decision::Free;
    }
    if holder == me {
        return Decision::Ours;
    }
    let (Some(renewed), Some(secs)) = (spec.renew_time.as_ref(), spec.lease_duration_seconds)
    else {
        // A holder that never said when it renews cannot be waited out.
        return Decision::Free;
    };
    let expires = renewed.0 + SignedDuration::from_secs(secs.max(0) as i64);
    match Duration::try_from(expires.duration_since(now)) {
        Ok(left) if !left.is_zero() => Decision::Held {
            holder: holder.to_string(),
            expires_in: left,
        },
        _ => Decision::Free,
    }
}

/// The spec to write when taking or renewing.
pub fn claim(
    current: Option<&LeaseSpec>,
    me: &str,
    duration: Duration,
    now: Timestamp,
) -> LeaseSpec {
    let ours = current.and_then(|s| s.holder_identity.as_deref()) == Some(me);
    let transitions = current.and_then(|s| s.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(me.to_string()),
        lease_duration_seconds: Some(duration.as_secs().max(1) as i32),
        acquire_time: if ours {
            current.and_then(|s| s.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if ours || current.is_none() {
            transitions
        } else {
            transitions + 1
        }),
        ..Default::default()
    }
}

/// One operator's candidacy for one Lease.
#[derive(Clone)]
pub struct Elector {
    api: Api<Lease>,
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub duration: Duration,
    metrics: Arc<Metrics>,
}

impl Elector {
    /// A candidate that talks through `clients.lease` (never the bulk
    /// `calls` client) and records in `clients.metrics`.
    pub fn new(
        clients: &Clients,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        Elector {
            api: Api::namespaced(clients.lease.clone(), namespace),
            metrics: clients.metrics.clone(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            identity: identity.to_string(),
            duration,
        }
    }

    /// One attempt to take or renew. Ok(Held) when someone else has it.
    pub async fn try_once(&self) -> Result<Decision, kube::Error> {
        let now = Timestamp::now();
        let current = self.api.get_opt(&self.name).await?;
        let decision = decide(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.identity,
            now,
        );
        if let Decision::Held { .. } = decision {
            return Ok(decision);
        }
        let spec = claim(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.identity,
            self.duration,
            now,
        );
        let result = match current {
            Some(mut lease) => {
                // Conditional on the resourceVersion just read.
                lease.spec = Some(spec);
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                    .map(|_| ())
            }
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        namespace: Some(self.namespace.clone()),
                        labels: Some(
                            [(
                                "app.kubernetes.io/name".to_string(),
                                "firedrill".to_string(),
                            )]
                            .into(),
                        ),
                        ..Default::default()
                    },
                    spec: Some(spec),
                };
                self.api
                    .create(&PostParams::default(), &lease)
                    .await
                    .map(|_| ())
            }
        };
        match result {
            Ok(()) => Ok(Decision::Ours),
            // Another candidate wrote first: it holds the lease now.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Decision::Held {
                holder: "another candidate".into(),
                expires_in: self.duration,
            }),
            Err(e) => Err(e),
        }
    }

    /// One attempt, bounded by `limit`; its duration is recorded.
    async fn attempt(&self, limit: Duration) -> Result<Decision, String> {
        let started = tokio::time::Instant::now();
        let out = match tokio::time::timeout(limit, self.try_once()).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {limit:?}")),
        };
        self.metrics
            .lease_renew
            .observe(started.elapsed().min(limit).as_secs_f64());
        out
    }

    /// How long one attempt may take: well inside the renew deadline.
    fn attempt_limit(&self) -> Duration {
        (self.duration / 4).max(Duration::from_millis(250))
    }

    /// Wait until this candidate holds the lease, saying meanwhile that a
    /// standby is there.
    /// `metrics` turns ready once this operator reaches the API server as a standby.
    pub async fn acquire(&self, metrics: &crate::metrics::Metrics) {
        let retry = (self.duration / 5).max(Duration::from_millis(500));
        let mut last_holder = String::new();
        loop {
            match self.attempt(self.attempt_limit()).await {
                Ok(Decision::Ours) => {
                    tracing::info!(lease = %format!("{}/{}", self.namespace, self.name), identity = %self.identity, "became the leader");
                    return;
                }
                Ok(Decision::Held { holder, expires_in }) => {
                    // A standby that reaches the API server is ready to lead.
                    metrics.set_ready();
                    match tokio::time::timeout(self.attempt_limit(), self.heartbeat()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::warn!(error = %e, "cannot renew the standby lease"),
                        Err(_) => tracing::warn!("renewing the standby lease timed out"),
                    }
                    if holder != last_holder {
                        tracing::info!(lease = %format!("{}/{}", self.namespace, self.name), %holder, expires_in = ?expires_in, "standing by: another operator is the leader");
                        last_holder = holder;
                    }
                }
                Ok(Decision::Free) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "leader election: cannot read or write the lease; retrying")
                }
            }
            tokio::time::sleep(retry).await;
        }
    }

    /// Renew until renewing fails for two thirds of the lease duration (or
    /// someone else holds the lease); then count the loss and return why
    /// leadership is lost.
    pub async fn hold(&self) -> String {
        let why = self.renew_until_lost().await;
        self.metrics.leadership_losses.inc();
        why
    }

    async fn renew_until_lost(&self) -> String {
        let every = (self.duration / 3).max(Duration::from_millis(300));
        let retry = (self.duration / 10).max(Duration::from_millis(200));
        let deadline = self.duration * 2 / 3;
        let mut renewed = tokio::time::Instant::now();
        let mut wait = every;
        loop {
            tokio::time::sleep(wait).await;
            wait = retry;
            match self.attempt(self.attempt_limit()).await {
                Ok(Decision::Ours) => {
                    renewed = tokio::time::Instant::now();
                    wait = every;
                }
                Ok(Decision::Held { holder, .. }) => {
                    return format!("the lease is held by {holder}");
                }
                Ok(Decision::Free) => {}
                Err(e) => tracing::warn!(error = %e, "leader election: renewing the lease failed"),
            }
            if renewed.elapsed() > deadline {
                return format!("the lease could not be renewed for {:?}", renewed.elapsed());
            }
        }
    }

    fn standby_name(&self) -> String {
        // FNV-1a: a short, stable name per identity.
        let mut h: u64 = 0xcbf29ce484222325;
        for b in self.identity.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x100000001b3);
        }
        format!("{}-standby-{h:016x}", self.name)
    }

    /// Renew this standby's own Lease.
    async fn heartbeat(&self) -> Result<(), kube::Error> {
        let name = self.standby_name();
        let spec = LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs().max(1) as i32),
            renew_time: Some(MicroTime(Timestamp::now())),
            ..Default::default()
        };
        match self.api.get_opt(&name).await? {
            Some(mut lease) => {
                lease.spec = Some(spec);
                self.api
                    .replace(&name, &PostParams::default(), &lease)
                    .await?;
            }
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name),
                        namespace: Some(self.namespace.clone()),
                        labels: Some(
                            [
                                (
                                    "app.kubernetes.io/name".to_string(),
                                    "firedrill".to_string(),
                                ),
                                (STANDBY_LABEL.to_string(), self.name.clone()),
                            ]
                            .into(),
                        ),
                        ..Default::default()
                    },
                    spec: Some(spec),
                };
                self.api.create(&PostParams::default(), &lease).await?;
            }
        }
        Ok(())
    }

    /// Stop saying this candidate stands by (it leads now, or it stops).
    pub async fn retire_standby(&self) {
        let _ = self
            .api
            .delete(&self.standby_name(), &DeleteParams::default())
            .await;
    }

    /// Other operators standing by now (their standby Lease is fresh).
    /// Expired standby Leases of crashed operators are cleaned up on the way.
    pub async fn standbys(&self) -> Result<Vec<String>, kube::Error> {
        let now = Timestamp::now();
        let lp = ListParams::default().labels(&format!("{STANDBY_LABEL}={}", self.name));
        let mut alive = vec![];
        for lease in self.api.list(&lp).await?.items {
            let Some(spec) = lease.spec.as_ref() else {
                continue;
            };
            let holder = spec.holder_identity.clone().unwrap_or_default();
            if holder == self.identity {
                continue;
            }
            match decide(Some(spec), &self.identity, now) {
                Decision::Held { .. } => alive.push(holder),
                _ => {
                    let stale = spec
                        .renew_time
                        .as_ref()
                        .is_some_and(|t| now.duration_since(t.0) > SignedDuration::from_secs(3600));
                    if stale && let Some(name) = &lease.metadata.name {
                        let _ = self.api.delete(name, &DeleteParams::default()).await;
                    }
                }
            }
        }
        Ok(alive)
    }

    /// Give the lease up so a standby takes over at once (only if still ours).
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        spec.lease_duration_seconds = Some(1);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!("released the leader lease"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot release the leader lease; a standby takes over when it expires")
            }
        }
    }
}

/// Label on standby Leases; its value is the leader Lease's name.
pub const STANDBY_LABEL: &str = "chaos.firedrill.dev/standby-for";

/// This process's identity: the pod name in a cluster, else host and pid.
pub fn identity() -> String {
    let host = std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "unknown-host".into())
        });
    format!("{host}_{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed: Timestamp, secs: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(renewed)),
            lease_duration_seconds: Some(secs),
            lease_transitions: Some(3),
            acquire_time: Some(MicroTime(renewed)),
            ..Default::default()
        }
    }

    #[test]
    fn a_missing_or_empty_lease_is_free() {
        let now = Timestamp::now();
        assert_eq!(decide(None, "me", now), Decision::Free);
        let released = LeaseSpec {
            holder_identity: None,
            ..spec("x", now, 15)
        };
        assert_eq!(decide(Some(&released), "me", now), Decision::Free);
    }

    #[test]
    fn our_own_lease_is_renewed_even_when_expired() {
        let now = Timestamp::now();
        let old = now - SignedDuration::from_secs(60);
        assert_eq!(
            decide(Some(&spec("me", old, 15)), "me", now),
            Decision::Ours
        );
    }

    #[test]
    fn another_holder_is_waited_out_until_its_lease_expires() {
        let now = Timestamp::now();
        let renewed = now - SignedDuration::from_secs(10);
        assert_eq!(
            decide(Some(&spec("other", renewed, 15)), "me", now),
            Decision::Held {
                holder: "other".into(),
                expires_in: Duration::from_secs(5)
            }
        );
        let stale = now - SignedDuration::from_secs(15);
        assert_eq!(
            decide(Some(&spec("other", stale, 15)), "me", now),
            Decision::Free
        );
    }

    #[test]
    fn taking_over_counts_a_transition_and_renewing_does_not() {
        let now = Timestamp::now();
        let before = now - SignedDuration::from_secs(30);
        let taken = claim(
            Some(&spec("other", before, 15)),
            "me",
            Duration::from_secs(15),
            now,
        );
        assert_eq!(taken.holder_identity.as_deref(), Some("me"));
        assert_eq!(taken.lease_transitions, Some(4));
        assert_eq!(taken.acquire_time, Some(MicroTime(now)));
        let renewed = claim(
            Some(&spec("me", before, 15)),
            "me",
            Duration::from_secs(15),
            now,
        );
        assert_eq!(renewed.lease_transitions, Some(3));
        assert_eq!(renewed.acquire_time, Some(MicroTime(before)));
        assert_eq!(renewed.renew_time, Some(MicroTime(now)));
        let first = claim(None, "me", Duration::from_secs(15), now);
        assert_eq!(first.lease_transitions, Some(0));
        assert_eq!(first.lease_duration_seconds, Some(15));
    }

    /// An API server on loopback that answers over HTTP/1.1 keep-alive and
    /// notes, for each request, which connection carried it.
    async fn apiserver() -> (
        http::Uri,
        Arc<std::sync::Mutex<Vec<(usize, String, String)>>>,
    ) {
        use http_body_util::{BodyExt, Full};
        use hyper::body::Bytes;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(std::sync::Mutex::new(vec![]));
        let log = seen.clone();
        tokio::spawn(async move {
            for conn in 0.. {
                let (sock, _) = listener.accept().await.unwrap();
                let log = log.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let log = log.clone();
                            async move {
                                let method = req.method().to_string();
                                let path = req.uri().path().to_string();
                                log.lock()
                                    .unwrap()
                                    .push((conn, method.clone(), path.clone()));
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                let (code, out) = if path == "/version" {
                                    (200, r#"{"major":"1","minor":"35","gitVersion":"v1.35.0","gitCommit":"","gitTreeState":"","buildDate":"","goVersion":"","compiler":"","platform":""}"#.as_bytes().to_vec())
                                } else if method == "GET" {
                                    (404, br#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#.to_vec())
                                } else {
                                    (201, body.to_vec())
                                };
                                Ok::<_, std::convert::Infallible>(
                                    hyper::Response::builder()
                                        .status(code)
                                        .header("content-type", "application/json")
                                        .body(Full::new(Bytes::from(out)))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                        .await;
                });
            }
        });
        (format!("http://{addr}").parse().unwrap(), seen)
    }

    /// The connections that carried requests whose path contains `part`.
    fn connections(seen: &[(usize, String, String)], part: &str) -> BTreeSet<usize> {
        seen.iter()
            .filter(|(_, _, p)| p.contains(part))
            .map(|(c, _, _)| *c)
            .collect()
    }

    use std::collections::BTreeSet;

    #[tokio::test]
    async fn the_elector_talks_on_connections_the_bulk_calls_never_use() {
        let (url, seen) = apiserver().await;
        let config = kube::Config::new(url);
        let clients = Clients::from_config(config).unwrap();
        let idle = || tokio::time::sleep(Duration::from_millis(100));
        clients.calls.apiserver_version().await.unwrap();
        idle().await;
        // The control: another request through the calls client reuses its
        // idle connection, so sharing a pool would show.
        clients.calls.clone().apiserver_version().await.unwrap();
        idle().await;
        let elector = Elector::new(&clients, "ops", "lead", "me", Duration::from_secs(15));
        assert_eq!(
            elector.attempt(Duration::from_secs(5)).await.unwrap(),
            Decision::Ours
        );
        idle().await;
        clients.calls.apiserver_version().await.unwrap();
        let seen = seen.lock().unwrap().clone();
        let calls = connections(&seen, "/version");
        let lease = connections(&seen, "/leases");
        assert_eq!(
            calls.len(),
            1,
            "the calls client keeps its connection: {seen:?}"
        );
        assert!(!lease.is_empty(), "{seen:?}");
        assert!(
            calls.is_disjoint(&lease),
            "a lease request went over a connection of the calls client: {seen:?}"
        );
        // The attempt was timed.
        assert!(
            clients
                .metrics
                .render()
                .contains("firedrill_lease_renew_seconds_count 1"),
            "{}",
            clients.metrics.render()
        );
    }
}
