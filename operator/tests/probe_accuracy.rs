//! Probe accuracy against loopback servers with a scripted outage: down at
//! t=2.0s, up at t=5.0s, the fault "injected" at t=1.0s. The measured time to
//! recover must be within one probe interval of the truth (4.0s), and the
//! availability must be what the sample counts say.

use firedrill::api::{
    DataCenterFailure, DataCenterFailureSpec, HttpProbe, Probe, SloSpec, TcpProbe,
};
use firedrill::probe::{Runner, now_ms};
use firedrill::slo::Measurement;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::{Instant, sleep_until};

const INTERVAL_MS: i64 = 100;
const INJECT_MS: i64 = 1000;
const DOWN_MS: i64 = 2000;
const UP_MS: i64 = 5000;
const END_MS: i64 = 6500;

fn slo(name: &str, probe: Probe) -> SloSpec {
    SloSpec {
        recovery_point_objective: None,
        name: name.into(),
        critical: true,
        probe,
        interval: format!("{INTERVAL_MS}ms"),
        timeout: "500ms".into(),
        recovery_time_objective: "10s".into(),
        availability_objective: None,
        guard: None,
        max_error_percent: 10.0,
        min_coverage_percent: 90.0,
        depends_on: vec![],
    }
}

/// An HTTP server answering 200, or 503 during the outage.
async fn http_server(t0: Instant) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = 0;
                while !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf[got..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got += n,
                    }
                }
                let t = t0.elapsed().as_millis() as i64;
                let down = (DOWN_MS..UP_MS).contains(&t);
                let resp: &[u8] = if down {
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n\r\ndown"
                } else {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nhealthy"
                };
                let _ = sock.write_all(resp).await;
            });
        }
    });
    port
}

/// A TCP server that stops listening during the outage (connections refused).
async fn tcp_server(t0: Instant) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let serve = |l: TcpListener, until: Instant| async move {
            loop {
                tokio::select! {
                    r = l.accept() => { drop(r); }
                    _ = sleep_until(until) => return,
                }
            }
        };
        serve(listener, t0 + Duration::from_millis(DOWN_MS as u64)).await;
        sleep_until(t0 + Duration::from_millis(UP_MS as u64)).await;
        let again = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("rebind the port after the outage");
        serve(again, t0 + Duration::from_secs(60)).await;
    });
    port
}

fn check(name: &str, m: &Measurement) {
    let truth = UP_MS - INJECT_MS;
    let ttr = m
        .time_to_recover_ms
        .unwrap_or_else(|| panic!("{name}: never recovered: {m:?}"));
    assert!(
        (ttr - truth).abs() <= INTERVAL_MS,
        "{name}: time to recover {ttr} ms, truth {truth} ms, interval {INTERVAL_MS} ms"
    );
    let first = m.first_failure_at.unwrap();
    assert!(
        first >= 0 && first - DOWN_MS <= INTERVAL_MS && first >= DOWN_MS - INTERVAL_MS,
        "{name}: first failure at {first} ms"
    );
    assert_eq!(
        m.longest_outage_ms,
        m.recovered_at.unwrap() - first,
        "{name}"
    );
    // Availability is the share of the window's time the service was up,
    // and the counts are what the script says.
    let answered = m.ok + m.failed;
    assert_eq!(m.samples(), answered, "{name}: no probe errors expected");
    let avail = m.availability_percent().unwrap();
    let truth_avail = 100.0 * (1.0 - (UP_MS - DOWN_MS) as f64 / (END_MS - INJECT_MS) as f64);
    assert!(
        (avail - truth_avail).abs()
            < 100.0 * 2.0 * INTERVAL_MS as f64 / (END_MS - INJECT_MS) as f64,
        "{name}: availability {avail:.2}%, truth {truth_avail:.2}%"
    );
    let expect_failed = (UP_MS - DOWN_MS) / INTERVAL_MS; // 30
    let expect_total = (END_MS - INJECT_MS) / INTERVAL_MS; // 55
    assert!(
        (m.failed as i64 - expect_failed).abs() <= 2,
        "{name}: {} failed samples, expected about {expect_failed}",
        m.failed
    );
    assert!(
        (answered as i64 - expect_total).abs() <= 3,
        "{name}: {answered} samples, expected about {expect_total}"
    );
    eprintln!(
        "{name}: ttr {ttr} ms (truth {truth}), {answered} samples, {} failed, availability {avail:.1}%",
        m.failed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_tcp_outage_is_measured_within_one_interval() {
    let t0 = Instant::now();
    let t0_ms = now_ms();
    let http = http_server(t0).await;
    let tcp = tcp_server(t0).await;
    let spec = DataCenterFailureSpec {
        zone: "zone-a".into(),
        topology_key: "topology.kubernetes.io/zone".into(),
        duration: "10s".into(),
        baseline: "0s".into(),
        observe: None,
        fault: Default::default(),
        target: Default::default(),
        guards: Default::default(),
        primary_labels: vec![],
        fault_only: false,
        dependencies: Default::default(),
        slos: vec![
            slo(
                "web",
                Probe {
                    http: Some(HttpProbe {
                        url: format!("http://127.0.0.1:{http}/healthz"),
                        method: Default::default(),
                        headers: vec![],
                        expected_status: vec![200],
                        body_contains: Some("healthy".into()),
                        tls: None,
                        follow_redirects: false,
                    }),
                    ..Default::default()
                },
            ),
            slo(
                "db",
                Probe {
                    tcp: Some(TcpProbe {
                        host: "127.0.0.1".into(),
                        port: tcp as i32,
                    }),
                    ..Default::default()
                },
            ),
        ],
    };
    let obj = DataCenterFailure::new("accuracy", spec);
    // The kube client is never used by http and tcp probes.
    let client =
        kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
    let runner = Runner::start(
        &client,
        "accuracy",
        "0a1b2c3d",
        &firedrill::spec::slos(&obj.spec).unwrap(),
        Default::default(),
        &Default::default(),
        Default::default(),
    );
    sleep_until(t0 + Duration::from_millis(END_MS as u64)).await;
    let rec = runner.recording();
    drop(runner);
    for name in ["web", "db"] {
        let tl = &rec.slos[name];
        // Shift the window so that times are relative to t0.
        let m = tl.measure(t0_ms + INJECT_MS, t0_ms + END_MS, t0_ms + END_MS);
        let rel = Measurement {
            first_failure_at: m.first_failure_at.map(|t| t - t0_ms),
            recovered_at: m.recovered_at.map(|t| t - t0_ms),
            ..m
        };
        check(name, &rel);
        assert!(
            tl.last_error.is_some(),
            "{name}: the failure reason is kept"
        );
    }
    assert_eq!(rec.slos["web"].last_error.as_deref(), Some("HTTP 503"));
    assert!(
        rec.slos["db"]
            .last_error
            .as_deref()
            .unwrap()
            .contains("refused"),
        "{:?}",
        rec.slos["db"].last_error
    );
}
