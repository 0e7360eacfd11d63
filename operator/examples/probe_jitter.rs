//! Benchmark: probe scheduling jitter at 100 probes/s in one process.
//!
//! Ten TCP SLOs probe ten loopback listeners every 100 ms for 30 s through
//! the operator's real probe runner. Each listener records when connections
//! arrive; jitter is how far the k-th arrival is from `first + k * interval`.
//! Prints p50, p99 and max. Target: p99 <= 10 ms.
//!
//!     cargo run --release -p firedrill --example probe_jitter [SECONDS]

use firedrill::api::{DataCenterFailure, DataCenterFailureSpec, Probe, SloSpec, TcpProbe};
use firedrill::probe::Runner;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

const SLOS: usize = 10;
const INTERVAL: Duration = Duration::from_millis(100);

#[tokio::main]
async fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let mut slos = vec![];
    let mut arrivals = vec![];
    for i in 0..SLOS {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::<Instant>::new()));
        arrivals.push(seen.clone());
        tokio::spawn(async move {
            loop {
                if let Ok((sock, _)) = listener.accept().await {
                    seen.lock().unwrap().push(Instant::now());
                    drop(sock);
                }
            }
        });
        slos.push(SloSpec {
            recovery_point_objective: None,
            name: format!("slo-{i}"),
            critical: true,
            probe: Probe {
                tcp: Some(TcpProbe {
                    host: "127.0.0.1".into(),
                    port: port as i32,
                }),
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
        });
    }
    let spec = DataCenterFailureSpec {
        zone: "zone-a".into(),
        topology_key: "topology.kubernetes.io/zone".into(),
        duration: "1m".into(),
        baseline: "0s".into(),
        observe: None,
        fault: Default::default(),
        target: Default::default(),
        guards: Default::default(),
        primary_labels: vec![],
        fault_only: false,
        dependencies: Default::default(),
        slos,
    };
    let obj = DataCenterFailure::new("jitter", spec);
    let client =
        kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
    let runner = Runner::start(
        &client,
        "jitter",
        "0a1b2c3d",
        &firedrill::spec::slos(&obj.spec).unwrap(),
        Default::default(),
        &Default::default(),
        Default::default(),
    );
    tokio::time::sleep(Duration::from_secs(secs)).await;
    drop(runner);

    let mut jitter_us: Vec<i64> = vec![];
    for seen in &arrivals {
        let seen = seen.lock().unwrap();
        let Some(first) = seen.first() else { continue };
        for (k, at) in seen.iter().enumerate() {
            let ideal = *first + INTERVAL * k as u32;
            jitter_us.push(
                (at.duration_since(ideal).as_micros() as i64)
                    - (ideal.duration_since(*at).as_micros() as i64),
            );
        }
    }
    let mut abs: Vec<i64> = jitter_us.iter().map(|j| j.abs()).collect();
    abs.sort_unstable();
    let pct = |p: f64| abs[((abs.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0;
    let rate = abs.len() as f64 / secs as f64;
    println!(
        "probes: {} in {secs}s ({rate:.0}/s) over {SLOS} SLOs at {INTERVAL:?}",
        abs.len()
    );
    println!(
        "RESULT jitter_p50_ms={:.3} jitter_p99_ms={:.3} jitter_max_ms={:.3}",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
}
