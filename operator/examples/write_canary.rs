//! Benchmark: the write probe's memory over a long dark window.
//!
//! One write SLO writes a record every 100 ms (10 writes/s) through the
//! operator's real probe runner to a store at URL (`POST URL/records`) for
//! MINUTES (default 10), then reads every acknowledged write back (`GET
//! URL/records/{id}`) as the judge would. Every minute it prints the
//! process's resident memory (VmRSS, from /proc/self/status), the writes
//! acknowledged so far and the size of what the probe keeps: the write log
//! (ranges of acknowledged writes; bounded by `canary::MAX_RANGES`) and the
//! SLO's timeline, as JSON the way they are saved. Target: RSS flat, the
//! log bounded.
//!
//!     cargo run --release -p firedrill --example write_canary URL [MINUTES]
//!
//! `tests/bench/write-canary.sh` starts the testbed's store for it.

use firedrill::api::{DataCenterFailure, DataCenterFailureSpec, Probe, SloSpec, WriteProbe};
use firedrill::probe::{Env, Runner, verify_writes};
use std::time::{Duration, Instant};

const INTERVAL: Duration = Duration::from_millis(100);

/// A line of /proc/self/status, in KiB (`VmRSS`, `VmHWM`).
fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix(key)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let Some(base) = args.next() else {
        eprintln!("usage: write_canary URL [MINUTES]");
        std::process::exit(2);
    };
    let base = base.trim_end_matches('/').to_string();
    let minutes: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10.0);
    let write: WriteProbe = serde_json::from_value(serde_json::json!({
        "url": format!("{base}/records"),
        "readUrl": format!("{base}/records/{{{{id}}}}"),
        "readDeadline": "10m",
    }))
    .unwrap();
    let slo = SloSpec {
        recovery_point_objective: Some("0s".into()),
        name: "ledger".into(),
        critical: true,
        probe: Probe {
            write: Some(write),
            ..Default::default()
        },
        interval: "100ms".into(),
        timeout: "1s".into(),
        recovery_time_objective: "1m".into(),
        availability_objective: None,
        guard: None,
        max_error_percent: 10.0,
        min_coverage_percent: 90.0,
        depends_on: vec![],
    };
    let spec = DataCenterFailureSpec {
        zone: "zone-a".into(),
        topology_key: "topology.kubernetes.io/zone".into(),
        duration: "10m".into(),
        baseline: "0s".into(),
        observe: None,
        fault: Default::default(),
        target: Default::default(),
        guards: Default::default(),
        primary_labels: vec![],
        fault_only: false,
        dependencies: Default::default(),
        slos: vec![slo],
    };
    let obj = DataCenterFailure::new("write-canary", spec);
    let slos = firedrill::spec::slos(&obj.spec).unwrap();
    // Never called: the probe reads no Secret.
    let client =
        kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
    let env = Env::default();
    println!(
        "writing to {base}/records every {INTERVAL:?} for {minutes} min; RSS at start {:.1} MiB",
        mib(status_kib("VmRSS"))
    );
    println!(
        "{:>6} {:>9} {:>9} {:>8} {:>7} {:>10} {:>13}",
        "minute", "rss_mib", "writes", "acked", "ranges", "log_bytes", "timeline_bytes"
    );
    let runner = Runner::start(
        &client,
        "write-canary",
        "0a1b2c3d-0000-0000-0000-000000000000",
        &slos,
        Default::default(),
        &env,
        Default::default(),
    );
    let started = Instant::now();
    let total = Duration::from_secs_f64(minutes * 60.0);
    let mut rss = vec![];
    let mut minute = 0u64;
    loop {
        let next = Duration::from_secs(60 * (minute + 1)).min(total);
        tokio::time::sleep(next.saturating_sub(started.elapsed())).await;
        minute += 1;
        let rec = runner.recording();
        let log = &rec.writes["ledger"];
        let tl = &rec.slos["ledger"];
        let kib = status_kib("VmRSS");
        rss.push(kib);
        println!(
            "{:>6} {:>9.1} {:>9} {:>8} {:>7} {:>10} {:>13}",
            format!("{:.1}", next.as_secs_f64() / 60.0),
            mib(kib),
            log.next - log.ranges.first().map_or(log.next, |r| r.first),
            log.acknowledged(),
            log.ranges.len(),
            serde_json::to_vec(log).unwrap().len(),
            serde_json::to_vec(tl).unwrap().len(),
        );
        if next >= total {
            break;
        }
    }
    let rec = runner.recording();
    drop(runner);
    let log = rec.writes["ledger"].clone();
    let failed = rec.slos["ledger"].last_error.clone();
    let read_start = Instant::now();
    let rb = verify_writes(&slos[0], &log, &client, &env).await.unwrap();
    let read_secs = read_start.elapsed().as_secs_f64();
    let loss = firedrill::canary::loss(&log, &rb);
    let first = rss[0];
    let max = *rss.iter().max().unwrap();
    println!(
        "read back {} acknowledged writes in {read_secs:.1}s: {} found, {} lost, {} unverified",
        loss.acknowledged, rb.found, loss.lost, loss.unverified
    );
    if let Some(e) = failed {
        println!("last write error: {e}");
    }
    println!(
        "RESULT writes_per_s={:.1} acknowledged={} log_ranges={} rss_first_minute_mib={:.1} rss_max_mib={:.1} rss_growth_mib={:.1} peak_rss_mib={:.1} lost={}",
        log.acknowledged() as f64 / (minutes * 60.0),
        log.acknowledged(),
        log.ranges.len(),
        mib(first),
        mib(max),
        mib(max) - mib(first),
        mib(status_kib("VmHWM")),
        loss.lost,
    );
}
