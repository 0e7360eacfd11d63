//! Prometheus metrics (prefix `firedrill_`) and the operator's small HTTP
//! endpoint: `/metrics`, `/healthz`, `/readyz`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

pub struct Metrics {
    pub experiments: Family<VerdictLabel, Counter>,
    pub phase_transitions: Family<PhaseLabel, Counter>,
    pub pods_killed: Counter,
    pub pods_rekilled: Counter,
    pub nodes_cordoned: Counter,
    pub time_to_recover: Family<SloLabel, Histogram>,
    pub reconcile_errors: Family<ErrorLabel, Counter>,
    pub leader: Gauge,
    registry: Registry,
}

fn ttr_histogram() -> Histogram {
    Histogram::new([
        0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
    ])
}

/// The operator's metrics, registered once.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
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
    Metrics { registry, ..m }
});

/// Set once the controllers run.
pub static READY: AtomicBool = AtomicBool::new(false);

/// The metrics in the Prometheus text format.
pub fn render() -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &METRICS.registry).expect("metrics encode");
    out
}

/// Serve `/metrics`, `/healthz` and `/readyz` on `listener` until the process ends.
pub async fn serve(listener: TcpListener) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            // Read the whole request head; it may arrive in several pieces.
            let mut buf = [0u8; 4096];
            let mut n = 0;
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
            while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") && n < buf.len() {
                match tokio::time::timeout_at(deadline, sock.read(&mut buf[n..])).await {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
                    Ok(Ok(k)) => n += k,
                }
            }
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("/");
            let (status, ctype, body) = match path.split('?').next().unwrap_or("") {
                "/metrics" => (
                    "200 OK",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    render(),
                ),
                "/healthz" => ("200 OK", "text/plain", "ok\n".to_string()),
                "/readyz" if READY.load(Ordering::Relaxed) => {
                    ("200 OK", "text/plain", "ready\n".to_string())
                }
                "/readyz" => (
                    "503 Service Unavailable",
                    "text/plain",
                    "starting\n".to_string(),
                ),
                _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_head_that_arrives_in_pieces_is_read_whole() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener));
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET ").await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        s.write_all(b"/healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
        assert!(out.ends_with("ok\n"));
    }

    #[test]
    fn metrics_are_named_with_the_prefix() {
        METRICS.pods_killed.inc_by(3);
        METRICS
            .experiments
            .get_or_create(&VerdictLabel {
                verdict: "Failed".into(),
            })
            .inc();
        METRICS
            .time_to_recover
            .get_or_create(&SloLabel {
                slo: "messaging".into(),
            })
            .observe(4.0);
        let text = render();
        assert!(text.contains("firedrill_pods_killed_total 3"), "{text}");
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
