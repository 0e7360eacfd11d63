//! The write probe against a loopback ledger with a scripted failover: its
//! primary is lost at t=2.0s and its standby, 500 ms behind, takes over at
//! t=3.0s; the writes acknowledged in the last 500 ms before the loss are
//! gone. The probe must find exactly those, with a recovery point within one
//! interval of the lag, count the refused writes as unavailability, and a
//! read-back that fails must leave writes unverified, never lost.

use firedrill::api::{DataCenterFailure, DataCenterFailureSpec, Probe, SloSpec, WriteProbe};
use firedrill::canary;
use firedrill::probe::{Recording, Runner, verify_writes};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, sleep_until};

const INTERVAL_MS: i64 = 100;
const LOST_AT_MS: i64 = 2000;
const PROMOTED_AT_MS: i64 = 3000;
const LAG_MS: i64 = 500;
const END_MS: i64 = 4000;

/// Records by id, with when (ms since t0) each was written.
type Ledger = Arc<Mutex<HashMap<String, i64>>>;

/// How the ledger answers reads.
#[derive(Clone, Copy, PartialEq)]
enum Reads {
    Answer,
    /// Every read of a record whose id ends in 7 answers 503.
    FailSome,
}

async fn ledger(t0: Instant, reads: Reads) -> (u16, Ledger) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let ledger: Ledger = Arc::default();
    let kept = ledger.clone();
    tokio::spawn(async move {
        loop {
            let (sock, _) = listener.accept().await.unwrap();
            let ledger = ledger.clone();
            tokio::spawn(answer(sock, t0, ledger, reads));
        }
    });
    (port, kept)
}

async fn answer(mut sock: TcpStream, t0: Instant, ledger: Ledger, reads: Reads) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = String::from_utf8_lossy(&buf[head_end..]).to_string();
    let mut words = head.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let t = t0.elapsed().as_millis() as i64;
    let (status, text) = if method == "POST" {
        if (LOST_AT_MS..PROMOTED_AT_MS).contains(&t) {
            ("503 Service Unavailable", String::new())
        } else {
            let id = body
                .split("\"id\":\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            ledger.lock().unwrap().insert(id.to_string(), t);
            ("201 Created", String::new())
        }
    } else {
        let id = path.rsplit('/').next().unwrap_or("");
        if reads == Reads::FailSome && id.ends_with('7') {
            ("503 Service Unavailable", String::new())
        } else {
            match ledger.lock().unwrap().get(id) {
                // The standby never received what the primary acknowledged
                // in its last LAG_MS.
                Some(at) if !(LOST_AT_MS - LAG_MS..LOST_AT_MS).contains(at) => {
                    ("200 OK", format!("{{\"id\":\"{id}\"}}"))
                }
                _ => ("404 Not Found", String::new()),
            }
        }
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = sock.write_all(resp.as_bytes()).await;
}

fn experiment(port: u16) -> DataCenterFailure {
    let slo: SloSpec = serde_json::from_value(serde_json::json!({
        "name": "payments",
        "interval": format!("{INTERVAL_MS}ms"),
        "timeout": "500ms",
        "recoveryTimeObjective": "10s",
        "recoveryPointObjective": "0s",
        "probe": {"write": {
            "url": format!("http://127.0.0.1:{port}/records"),
            "readUrl": format!("http://127.0.0.1:{port}/records/{{{{id}}}}"),
            "readDeadline": "20s",
        }},
    }))
    .unwrap();
    assert!(matches!(
        slo.probe,
        Probe {
            write: Some(WriteProbe { .. }),
            ..
        }
    ));
    let spec: DataCenterFailureSpec = serde_json::from_value(serde_json::json!({
        "zone": "zone-a", "duration": "2s", "baseline": "0s", "slos": [slo],
    }))
    .unwrap();
    DataCenterFailure::new("canary", spec)
}

fn client() -> kube::Client {
    // Never used: the probe reads no Secret.
    kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap()
}

/// Run the write probe from `t0` until `until_ms`, continuing `previous`.
async fn run(
    obj: &DataCenterFailure,
    t0: Instant,
    until_ms: i64,
    previous: Recording,
) -> Recording {
    let slos = firedrill::spec::slos(&obj.spec).unwrap();
    let runner = Runner::start(
        &client(),
        "canary",
        "4e5f6a7b-1111",
        &slos,
        previous,
        &Default::default(),
    );
    sleep_until(t0 + Duration::from_millis(until_ms as u64)).await;
    let rec = runner.recording();
    drop(runner);
    rec
}

async fn read_back(obj: &DataCenterFailure, rec: &Recording) -> canary::Loss {
    let slos = firedrill::spec::slos(&obj.spec).unwrap();
    let log = &rec.writes["payments"];
    let rb = verify_writes(&slos[0], log, &client(), &Default::default())
        .await
        .unwrap();
    canary::loss(log, &rb)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writes_acknowledged_in_the_standbys_lag_are_found_lost() {
    let t0 = Instant::now();
    let (port, ledger) = ledger(t0, Reads::Answer).await;
    let obj = experiment(port);
    let rec = run(&obj, t0, END_MS, Recording::default()).await;
    let loss = read_back(&obj, &rec).await;

    // The truth, from the ledger's own times.
    let truth: Vec<i64> = {
        let l = ledger.lock().unwrap();
        l.values()
            .copied()
            .filter(|t| (LOST_AT_MS - LAG_MS..LOST_AT_MS).contains(t))
            .collect()
    };
    let written = ledger.lock().unwrap().len() as u64;
    assert_eq!(loss.acknowledged, written);
    assert_eq!(loss.lost, truth.len() as u64, "{loss:?}");
    assert_eq!(loss.unverified, 0);
    let rp = loss.recovery_point_ms.unwrap();
    eprintln!(
        "lost {} of {} acknowledged writes; recovery point {rp} ms, lag {LAG_MS} ms",
        loss.lost, loss.acknowledged
    );
    assert!(
        (rp - LAG_MS).abs() <= INTERVAL_MS,
        "recovery point {rp} ms, lag {LAG_MS} ms"
    );
    let first = loss.first.as_ref().unwrap();
    assert!(first.id.starts_with("fd-4e5f6a7b-"), "{}", first.id);

    // Writes refused while the standby was not yet promoted are
    // unavailability: failed samples, about 1 s of them.
    let tl = &rec.slos["payments"];
    let m = tl.measure(
        tl.segments[0].start,
        tl.segments.last().unwrap().end,
        tl.segments.last().unwrap().end,
    );
    let refused = m.failed as i64;
    let expected = (PROMOTED_AT_MS - LOST_AT_MS) / INTERVAL_MS;
    assert!(
        (refused - expected).abs() <= 2,
        "{refused} refused, {expected} expected"
    );
    assert_eq!(tl.last_error.as_deref(), Some("write answered HTTP 503"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_operator_verifies_the_writes_of_before_and_after() {
    let t0 = Instant::now();
    let (port, ledger) = ledger(t0, Reads::Answer).await;
    let obj = experiment(port);
    // The operator stops at t=1.0s (its recording saved) and is back at 1.3s.
    let saved = run(&obj, t0, 1000, Recording::default()).await;
    let saved: Recording = serde_json::from_str(&serde_json::to_string(&saved).unwrap()).unwrap();
    sleep_until(t0 + Duration::from_millis(1300)).await;
    let rec = run(&obj, t0, END_MS, saved.clone()).await;
    let log = &rec.writes["payments"];
    // Both runs' writes are in the log, with no number used twice.
    assert!(log.ranges.len() >= 3, "{:?}", log.ranges);
    assert!(log.ranges[1].first > saved.writes["payments"].next);
    let loss = read_back(&obj, &rec).await;
    assert_eq!(loss.acknowledged, ledger.lock().unwrap().len() as u64);
    assert!(loss.lost >= (LAG_MS / INTERVAL_MS - 1) as u64, "{loss:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_that_fail_leave_writes_unverified_never_lost() {
    let t0 = Instant::now();
    let (port, _) = ledger(t0, Reads::FailSome).await;
    let obj = experiment(port);
    let rec = run(&obj, t0, 1000, Recording::default()).await;
    let loss = read_back(&obj, &rec).await;
    assert_eq!(loss.lost, 0, "{loss:?}");
    assert!(loss.unverified >= 1, "{loss:?}");
    assert_eq!(loss.last_error.as_deref(), Some("read answered HTTP 503"));
}
