//! Prometheus metrics (prefix `firedrill_`) and the operator's small HTTP
//! endpoint: `/metrics`, `/healthz`, `/readyz`.
//!
//! The metrics are a value ([`Metrics::new`]) that the operator hands to its
//! clients, its context and its endpoint; nothing is process-wide, so two
//! operators (or two tests) in one process count apart.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::TcpListener;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabel {
    pub verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SloLabel {
    pub slo: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabel {
    /// The HTTP method: GET (including lists and watches), PATCH, DELETE...
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnswerLabel {
    /// What a pod delete's answer said about the API server's load: fast,
    /// slow, throttled, failed, timed_out, neutral.
    pub answer: String,
}

pub struct Metrics {
    pub experiments: Family<VerdictLabel, Counter>,
    pub phase_transitions: Family<PhaseLabel, Counter>,
    pub pods_killed: Counter,
    pub pods_rekilled: Counter,
    pub nodes_cordoned: Counter,
    pub time_to_recover: Family<SloLabel, Histogram>,
    pub reconcile_errors: Family<ErrorLabel, Counter>,
    pub leader: Gauge,
    pub api_requests: Family<RequestLabel, Counter>,
    /// How long each attempt to take or renew the leader Lease took (an
    /// attempt that timed out counts as its limit).
    pub lease_renew: Histogram,
    /// Times this operator lost the leader Lease while leading.
    pub leadership_losses: Counter,
    /// Pod deletes the deleter allows in flight now (its paced window).
    pub delete_window: Gauge,
    /// Times the deleter halved its window because the API server pushed back.
    pub delete_window_halvings: Counter,
    /// Pod delete answers by what they said about the API server's load.
    pub delete_answers: Family<AnswerLabel, Counter>,
    /// Set once the controllers run (`/readyz`).
    pub ready: AtomicBool,
    registry: Registry,
}

fn ttr_histogram() -> Histogram {
    Histogram::new([
        0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
    ])
}

/// Lease round trips are short when all is well (milliseconds) and fatal
/// when they approach the renew deadline (seconds).
fn lease_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0,
    ])
}

impl Metrics {
    /// A fresh set of metrics in a registry of its own.
    pub fn new() -> std::sync::Arc<Metrics> {
        std::sync::Arc::new(registered())
    }

    /// Count one request to the API server.
    pub fn count_request(&self, method: &str) {
        self.api_requests
            .get_or_create(&RequestLabel {
                method: method.to_string(),
            })
            .inc();
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("metrics encode");
        out
    }

    /// Mark the operator ready (`/readyz` answers 200).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn registered() -> Metrics {
    let mut registry = Registry::with_prefix("firedrill");
    let m = Metrics {
        experiments: Family::default(),
        phase_transitions: Family::default(),
        pods_killed: Counter::default(),
        pods_rekilled: Counter::default(),
        nodes_cordoned: Counter::default(),
        time_to_recover: Family::new_with_constructor(ttr_histogram as fn() -> Histogram),
        reconcile_errors: Family::default(),
        leader: Gauge::default(),
        api_requests: Family::default(),
        lease_renew: lease_histogram(),
        leadership_losses: Counter::default(),
        delete_window: Gauge::default(),
        delete_window_halvings: Counter::default(),
        delete_answers: Family::default(),
        ready: AtomicBool::new(false),
        registry: Registry::default(),
    };
    registry.register(
        "experiments",
        "Finished experiments by verdict (or phase, without SLOs)",
        m.experiments.clone(),
    );
    registry.register(
        "phase_transitions",
        "Phase transitions of experiments",
        m.phase_transitions.clone(),
    );
    registry.register(
        "pods_killed",
        "Pods killed with grace period 0 when a zone went dark",
        m.pods_killed.clone(),
    );
    registry.register(
        "pods_rekilled",
        "Pods killed again because they landed on a dark zone",
        m.pods_rekilled.clone(),
    );
    registry.register(
        "nodes_cordoned",
        "Nodes cordoned by experiments",
        m.nodes_cordoned.clone(),
    );
    registry.register(
        "time_to_recover_seconds",
        "Measured time to recover per SLO",
        m.time_to_recover.clone(),
    );
    registry.register(
        "reconcile_errors",
        "Reconcile errors by kind",
        m.reconcile_errors.clone(),
    );
    registry.register(
        "leader",
        "1 while this operator holds the leader Lease (or runs without leader election)",
        m.leader.clone(),
    );
    registry.register(
        "api_requests",
        "Requests this operator sent to the Kubernetes API server, by method",
        m.api_requests.clone(),
    );
    registry.register(
        "lease_renew_seconds",
        "Duration of each attempt to take or renew the leader Lease (timeouts count as the attempt's limit)",
        m.lease_renew.clone(),
    );
    registry.register(
        "leadership_losses",
        "Times this operator lost the leader Lease while leading",
        m.leadership_losses.clone(),
    );
    registry.register(
        "delete_window",
        "Pod deletes the deleter allows in flight now (paced from the API server's answers)",
        m.delete_window.clone(),
    );
    registry.register(
        "delete_window_halvings",
        "Times the deleter halved its window because the API server pushed back (429, errors, timeouts, a window of mostly slow answers)",
        m.delete_window_halvings.clone(),
    );
    registry.register(
        "delete_answers",
        "Pod delete answers by what they said about the API server's load (fast, slow: over 2 s, throttled: 429, failed, timed_out, neutral)",
        m.delete_answers.clone(),
    );
    Metrics { registry, ..m }
}

/// At most this many connections are served at once; more wait in the backlog.
const MAX_CONNECTIONS: usize = 64;
/// A request head must arrive within this, and a whole exchange finish within
/// `EXCHANGE_TIMEOUT`; slow or idle clients are dropped.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
const EXCHANGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What one endpoint serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Paths {
    /// `/metrics`, `/healthz` and `/readyz`.
    All,
    /// `/healthz` and `/readyz` only (a port of their own for the kubelet).
    Health,
}

fn respond(m: &Metrics, path: &str, paths: Paths) -> (u16, &'static str, String) {
    match (path, paths) {
        ("/metrics", Paths::All) => (
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            m.render(),
        ),
        ("/healthz", _) => (200, "text/plain", "ok\n".to_string()),
        ("/readyz", _) if m.ready.load(Ordering::Relaxed) => {
            (200, "text/plain", "ready\n".to_string())
        }
        ("/readyz", _) => (503, "text/plain", "starting\n".to_string()),
        _ => (404, "text/plain", "not found\n".to_string()),
    }
}

/// Serve `paths` on `listener` until the process ends, with hyper: request
/// heads must arrive within 5 s, an exchange must end within 30 s, at most
/// 64 connections at once, and accept errors (out of file descriptors, say)
/// back off instead of spinning.
pub async fn serve(listener: TcpListener, paths: Paths, metrics: std::sync::Arc<Metrics>) {
    use http_body_util::Full;
    use hyper::body::Bytes;
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = std::time::Duration::from_millis(10);
    loop {
        let permit = slots.clone().acquire_owned().await.expect("never closed");
        let sock = match listener.accept().await {
            Ok((sock, _)) => {
                backoff = std::time::Duration::from_millis(10);
                sock
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "metrics endpoint: accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let metrics = metrics.clone();
                    async move {
                        let (status, ctype, body) = if req.method() == hyper::Method::GET
                            || req.method() == hyper::Method::HEAD
                        {
                            respond(&metrics, req.uri().path(), paths)
                        } else {
                            (405, "text/plain", "method not allowed\n".to_string())
                        };
                        let resp = hyper::Response::builder()
                            .status(status)
                            .header("content-type", ctype)
                            .body(Full::new(Bytes::from(body)))
                            .expect("a valid response");
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(sock), service);
            let _ = tokio::time::timeout(EXCHANGE_TIMEOUT, conn).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn server(paths: Paths) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, paths, Metrics::new()));
        addr
    }

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn a_silent_client_is_dropped_and_does_not_block_others() {
        let addr = server(Paths::All).await;
        // Connects and says nothing.
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let started = std::time::Instant::now();
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200 OK"));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        let mut buf = vec![];
        let n = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            silent.read_to_end(&mut buf),
        )
        .await
        .expect("dropped after the header timeout")
        .unwrap_or(0);
        assert!(n == 0 || String::from_utf8_lossy(&buf).contains("408"));
    }

    #[tokio::test]
    async fn the_health_port_serves_no_metrics() {
        let addr = server(Paths::Health).await;
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200 OK"));
        assert!(get(addr, "/metrics").await.starts_with("HTTP/1.1 404"));
    }

    #[tokio::test]
    async fn a_request_head_that_arrives_in_pieces_is_read_whole() {
        let addr = server(Paths::All).await;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET ").await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        s.write_all(b"/healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
        assert!(out.ends_with("ok\n"), "{out}");
    }

    #[test]
    fn metrics_are_named_with_the_prefix() {
        let m = Metrics::new();
        m.pods_killed.inc_by(3);
        m.experiments
            .get_or_create(&VerdictLabel {
                verdict: "Failed".into(),
            })
            .inc();
        m.time_to_recover
            .get_or_create(&SloLabel {
                slo: "messaging".into(),
            })
            .observe(4.0);
        m.lease_renew.observe(0.02);
        m.leadership_losses.inc();
        let text = m.render();
        assert!(text.contains("firedrill_pods_killed_total 3"), "{text}");
        assert!(
            text.contains("firedrill_lease_renew_seconds_bucket{le=\"0.025\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("firedrill_lease_renew_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.contains("firedrill_leadership_losses_total 1"),
            "{text}"
        );
        assert!(
            text.contains("firedrill_experiments_total{verdict=\"Failed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "firedrill_time_to_recover_seconds_bucket{le=\"5.0\",slo=\"messaging\"} 1"
            ),
            "{text}"
        );
    }
}
