//! The write probe against a loopback ledger that fails over when the test
//! says so: its primary is lost, its standby (`LAG_MS` behind) takes over a
//! moment later, and the writes the primary acknowledged in its last
//! `LAG_MS` never reach the standby. The probe must find exactly those lost,
//! with a recovery point within one interval of the ledger's own truth;
//! refused writes are unavailability; a read-back that fails leaves writes
//! unverified, never lost. Driven by what the ledger has seen, not by the
//! clock, so a loaded machine only slows it down.

use firedrill::api::{DataCenterFailure, DataCenterFailureSpec};
use firedrill::canary;
use firedrill::probe::{Recording, Runner, verify_writes};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

const INTERVAL_MS: i64 = 100;
const LAG_MS: i64 = 500;

/// What the ledger is doing.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Phase {
    Serving,
    /// The primary is lost, its standby not yet promoted: writes refused.
    FailingOver,
    /// The standby serves, without what the primary acknowledged in its
    /// last `LAG_MS` before `lost_at`.
    Promoted,
}

#[derive(Default)]
struct State {
    phase: Option<Phase>,
    /// Records by id, with when (ms since t0) each was received.
    records: HashMap<String, i64>,
    /// When the primary was lost (ms since t0).
    lost_at: Option<i64>,
    refused: u64,
}

#[derive(Clone)]
struct Ledger {
    t0: Instant,
    state: Arc<Mutex<State>>,
    /// Every read of a record whose id ends in 7 answers 503.
    fail_reads: bool,
}

impl Ledger {
    fn now(&self) -> i64 {
        self.t0.elapsed().as_millis() as i64
    }
    fn phase(&self) -> Phase {
        self.state.lock().unwrap().phase.unwrap_or(Phase::Serving)
    }
    fn set(&self, phase: Phase) {
        let now = self.now();
        let mut s = self.state.lock().unwrap();
        if phase == Phase::FailingOver {
            s.lost_at = Some(now);
        }
        s.phase = Some(phase);
    }
    fn written(&self) -> usize {
        self.state.lock().unwrap().records.len()
    }
    fn refused(&self) -> u64 {
        self.state.lock().unwrap().refused
    }
    /// Whether a record received at `at` survived the failover.
    fn survived(&self, at: i64) -> bool {
        let s = self.state.lock().unwrap();
        match (s.phase, s.lost_at) {
            (Some(Phase::Promoted), Some(lost)) => !(lost - LAG_MS..lost).contains(&at),
            _ => true,
        }
    }
}

async fn ledger(fail_reads: bool) -> (u16, Ledger) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let ledger = Ledger {
        t0: Instant::now(),
        state: Arc::default(),
        fail_reads,
    };
    let served = ledger.clone();
    tokio::spawn(async move {
        loop {
            let (sock, _) = listener.accept().await.unwrap();
            tokio::spawn(answer(sock, served.clone()));
        }
    });
    (port, ledger)
}

async fn answer(mut sock: TcpStream, ledger: Ledger) {
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
    let (status, text) = if method == "POST" {
        if ledger.phase() == Phase::FailingOver {
            ledger.state.lock().unwrap().refused += 1;
            ("503 Service Unavailable", String::new())
        } else {
            let id = body
                .split("\"id\":\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            let now = ledger.now();
            ledger
                .state
                .lock()
                .unwrap()
                .records
                .insert(id.to_string(), now);
            ("201 Created", String::new())
        }
    } else {
        let id = path.rsplit('/').next().unwrap_or("");
        let at = ledger.state.lock().unwrap().records.get(id).copied();
        if ledger.fail_reads && id.ends_with('7') {
            ("503 Service Unavailable", String::new())
        } else {
            match at {
                Some(at) if ledger.survived(at) => ("200 OK", format!("{{\"id\":\"{id}\"}}")),
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
    let spec: DataCenterFailureSpec = serde_json::from_value(serde_json::json!({
        "zone": "zone-a", "duration": "2s", "baseline": "0s",
        "slos": [{
            "name": "payments",
            "interval": format!("{INTERVAL_MS}ms"),
            "timeout": "2s",
            "recoveryTimeObjective": "10s",
            "recoveryPointObjective": "0s",
            "probe": {"write": {
                "url": format!("http://127.0.0.1:{port}/records"),
                "readUrl": format!("http://127.0.0.1:{port}/records/{{{{id}}}}"),
                "readDeadline": "60s",
            }},
        }],
    }))
    .unwrap();
    DataCenterFailure::new("canary", spec)
}

fn client() -> kube::Client {
    // Never used: the probe reads no Secret.
    kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap()
}

fn start(obj: &DataCenterFailure, previous: Recording) -> Runner {
    let slos = firedrill::spec::slos(&obj.spec).unwrap();
    Runner::start(
        &client(),
        "canary",
        "4e5f6a7b-1111",
        &slos,
        previous,
        &Default::default(),
        Default::default(),
    )
}

/// Wait (at most a minute) until `done`.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes acknowledged, the primary lost, writes refused, the standby
/// promoted, writes acknowledged again.
async fn fail_over(ledger: &Ledger) {
    until("20 writes", || ledger.written() >= 20).await;
    ledger.set(Phase::FailingOver);
    until("5 refused writes", || ledger.refused() >= 5).await;
    let before = ledger.written();
    ledger.set(Phase::Promoted);
    until("10 writes after the failover", || {
        ledger.written() >= before + 10
    })
    .await;
}

async fn read_back(obj: &DataCenterFailure, rec: &Recording) -> canary::Loss {
    let slos = firedrill::spec::slos(&obj.spec).unwrap();
    let log = &rec.writes["payments"];
    let rb = verify_writes(&slos[0], log, &client(), &Default::default())
        .await
        .unwrap();
    canary::loss(log, &rb)
}

/// The ledger's truth: the records lost, and the span from the last kept
/// record received before them to the last lost one.
fn truth(ledger: &Ledger) -> (u64, i64) {
    let s = ledger.state.lock().unwrap();
    let lost_at = s.lost_at.unwrap();
    let mut times: Vec<i64> = s.records.values().copied().collect();
    times.sort();
    let lost: Vec<i64> = times
        .iter()
        .copied()
        .filter(|t| (lost_at - LAG_MS..lost_at).contains(t))
        .collect();
    let kept_before = times
        .iter()
        .copied()
        .filter(|t| *t < lost_at - LAG_MS)
        .max()
        .unwrap();
    (lost.len() as u64, lost.last().unwrap() - kept_before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writes_acknowledged_in_the_standbys_lag_are_found_lost() {
    let (port, ledger) = ledger(false).await;
    let obj = experiment(port);
    let runner = start(&obj, Recording::default());
    fail_over(&ledger).await;
    let rec = runner.recording();
    drop(runner);
    let loss = read_back(&obj, &rec).await;
    let (lost, span) = truth(&ledger);
    let rp = loss.recovery_point_ms.unwrap();
    eprintln!(
        "lost {} of {} acknowledged writes (truth {lost}); recovery point {rp} ms (truth {span} ms, lag {LAG_MS} ms)",
        loss.lost, loss.acknowledged
    );
    // A write in flight as the probe stopped may be in the ledger only.
    let written = ledger.written() as u64;
    assert!(
        written - loss.acknowledged <= 1,
        "{loss:?}, {written} written"
    );
    assert_eq!(loss.lost, lost, "{loss:?}");
    assert_eq!(loss.unverified, 0);
    assert!(
        (rp - span).abs() <= INTERVAL_MS,
        "recovery point {rp} ms, truth {span} ms"
    );
    assert!(loss.first.unwrap().id.starts_with("fd-4e5f6a7b-"));

    // The refused writes are failed samples (unavailability), not losses.
    let tl = &rec.slos["payments"];
    let end = tl.segments.last().unwrap().end;
    let m = tl.measure(tl.segments[0].start, end, end);
    assert_eq!(m.failed, ledger.refused(), "{m:?}");
    assert_eq!(tl.last_error.as_deref(), Some("write answered HTTP 503"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_operator_verifies_the_writes_of_before_and_after() {
    let (port, ledger) = ledger(false).await;
    let obj = experiment(port);
    // The operator stops after 10 writes (its recording saved) and comes back.
    let runner = start(&obj, Recording::default());
    until("10 writes", || ledger.written() >= 10).await;
    let saved = runner.recording();
    drop(runner);
    let saved: Recording = serde_json::from_str(&serde_json::to_string(&saved).unwrap()).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let runner = start(&obj, saved.clone());
    fail_over(&ledger).await;
    let rec = runner.recording();
    drop(runner);
    let log = &rec.writes["payments"];
    // Both runs' writes are in the log, with no number used twice.
    assert!(log.ranges.len() >= 3, "{:?}", log.ranges);
    let resumed = log
        .ranges
        .iter()
        .find(|r| r.first > saved.writes["payments"].ranges.last().unwrap().last)
        .unwrap();
    assert!(
        resumed.first >= saved.writes["payments"].next,
        "{:?}",
        log.ranges
    );
    let loss = read_back(&obj, &rec).await;
    // A write in flight as each run stopped may be in the ledger only.
    let written = ledger.written() as u64;
    assert!(
        written - loss.acknowledged <= 2,
        "{loss:?}, {written} written"
    );
    assert_eq!(loss.lost, truth(&ledger).0, "{loss:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_that_fail_leave_writes_unverified_never_lost() {
    let (port, ledger) = ledger(true).await;
    let obj = experiment(port);
    let runner = start(&obj, Recording::default());
    until("20 writes", || ledger.written() >= 20).await;
    let rec = runner.recording();
    drop(runner);
    let loss = read_back(&obj, &rec).await;
    assert_eq!(loss.lost, 0, "{loss:?}");
    // Ids are consecutive numbers: two in every twenty end in 7.
    assert!(loss.unverified >= 1, "{loss:?}");
    assert_eq!(loss.last_error.as_deref(), Some("read answered HTTP 503"));
}
