//! The prometheus probe against a real Prometheus (Debian's package, started
//! on loopback by this test and stopped by PID), scraping a small exporter
//! whose error ratio the test controls. A breach during the dark window and
//! the recovery are both measured by a real experiment.

use firedrill_e2e::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Unix ms of an RFC 3339 UTC time such as `2026-11-22T04:36:05.750726Z`.
fn rfc3339_ms(s: &str) -> i64 {
    let (date, time) = s.trim_end_matches('Z').split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    let ms: i64 = format!("{frac:0<3}")[..3].parse().unwrap();
    // Days from the civil date (proleptic Gregorian).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    ((days * 24 + t[0]) * 60 + t[1]) * 60_000 + t[2] * 1000 + ms
}

/// A `/metrics` endpoint serving one gauge whose value the test sets; `None`
/// serves no series at all (the service and its metrics are gone).
fn exporter(value: Arc<Mutex<f64>>) -> u16 {
    let shown = Arc::new(Mutex::new(Some(0.0)));
    let (v, sh) = (value, shown.clone());
    std::thread::spawn(move || {
        loop {
            *sh.lock().unwrap() = Some(*v.lock().unwrap()).filter(|x| !x.is_nan());
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    exporter_of(shown)
}

fn exporter_of(value: Arc<Mutex<Option<f64>>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(mut sock) = sock else { continue };
            let mut buf = [0u8; 4096];
            let _ = sock.read(&mut buf);
            let body = match *value.lock().unwrap() {
                Some(v) => format!("# TYPE checkout_error_ratio gauge\ncheckout_error_ratio {v}\n"),
                None => String::new(),
            };
            let _ = write!(
                sock,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.starts_with("HTTP/1.1 200").then_some(out)
}

/// A Prometheus server on loopback, stopped by PID when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Prometheus {
    fn start(target_port: u16) -> Self {
        let dir = std::env::temp_dir().join(format!("firedrill-prometheus-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let config = format!(
            r#"global: {{scrape_interval: 1s, evaluation_interval: 1s}}
scrape_configs:
- job_name: checkout
  static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]
"#
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus is installed (make test runs tests/deps.sh)");
        let p = Prometheus { child, port, dir };
        wait_for("Prometheus to be ready", Duration::from_secs(60), || {
            http_get(p.port, "/-/ready").map(|_| ())
        });
        p
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_breach_and_a_recovery_are_measured_through_prometheus() {
    let _lock = zones_lock();
    install_crds();
    let error_ratio = Arc::new(Mutex::new(0.0));
    let exporter_port = exporter(error_ratio.clone());
    let prom = Prometheus::start(exporter_port);
    wait_for("the first scrape", Duration::from_secs(30), || {
        http_get(prom.port, "/api/v1/query?query=checkout_error_ratio")
            .filter(|b| b.contains("\"value\""))
            .map(|_| ())
    });

    let _op = Operator::start(&[]);
    let _exp = Experiment("prom".into());
    let drill = Drill::new("prom", "zone-a")
        .duration("14s")
        .baseline("2s")
        .namespace("default")
        .slo(error_ratio_slo("payments", prom.port));
    assert!(apply(&drill.yaml()).ok);
    wait_phase("prom", "ZoneDown", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(1));
    *error_ratio.lock().unwrap() = 0.4;
    std::thread::sleep(Duration::from_secs(5));
    *error_ratio.lock().unwrap() = 0.0;
    let recovered = now_ms();

    wait_completed("prom", 60);
    let status = kubectl_json(&["get", "dcf", "prom"])["status"].clone();
    let slo = &status["slos"][0];
    assert_eq!(slo["verdict"], "Passed", "{status:#}");
    assert!(
        slo["failures"].as_i64().unwrap() >= 8,
        "the breach was sampled: {slo:#}"
    );
    let injected = rfc3339_ms(status["fault"]["injectedAt"].as_str().unwrap());
    let truth = (recovered - injected) as f64 / 1000.0;
    let ttr = slo["timeToRecoverSeconds"].as_f64().expect("recovered");
    // Prometheus sees the change at its next scrape (1s), the probe at its next tick (0.25s).
    assert!(
        ttr >= truth - 0.3 && ttr <= truth + 2.5,
        "time to recover {ttr}s, truth {truth:.2}s"
    );
    assert!(
        slo["message"].as_str().unwrap().starts_with("recovered in"),
        "{slo:#}"
    );
    eprintln!(
        "prometheus: ttr {ttr}s, truth {truth:.2}s, {} samples, {} failed",
        slo["samples"], slo["failures"]
    );
}

/// An SLO that the checkout error ratio, as the Prometheus on `prom_port`
/// has it, stays below 5 %.
fn error_ratio_slo(name: &str, prom_port: u16) -> Slo {
    Slo::new(name, "30s").interval("250ms").prometheus(
        &format!("http://127.0.0.1:{prom_port}"),
        "max(checkout_error_ratio)",
        "< 0.05",
    )
}

/// A 10 s drill of zone-a measured by the checkout error ratio.
fn drill(name: &str, prom_port: u16) -> Drill {
    Drill::new(name, "zone-a")
        .duration("10s")
        .baseline("2s")
        .namespace("default")
        .slo(error_ratio_slo("checkout", prom_port))
}

#[test]
fn series_that_vanish_with_the_service_are_a_failure_not_a_pass() {
    let _lock = zones_lock();
    install_crds();
    // NaN: the exporter serves no series at all.
    let ratio = Arc::new(Mutex::new(0.0));
    let prom = Prometheus::start(exporter(ratio.clone()));
    wait_for("the first scrape", Duration::from_secs(30), || {
        http_get(prom.port, "/api/v1/query?query=checkout_error_ratio")
            .filter(|b| b.contains("\"value\""))
            .map(|_| ())
    });
    let _op = Operator::start(&[]);
    let _exp = Experiment("vanish-series".into());
    apply(&drill("vanish-series", prom.port).yaml()).expect_ok("drill");
    wait_phase("vanish-series", "ZoneDown", Duration::from_secs(60));
    *ratio.lock().unwrap() = f64::NAN;
    wait_completed("vanish-series", 60);
    let slo = kubectl_json(&["get", "dcf", "vanish-series"])["status"]["slos"][0].clone();
    assert_eq!(slo["verdict"], "Failed", "{slo:#}");
    assert!(slo["timeToRecoverSeconds"].is_null(), "{slo:#}");
    assert_eq!(
        slo["errors"], 0,
        "an empty answer is a failed sample: {slo:#}"
    );
    assert!(
        slo["message"].as_str().unwrap().contains("never recovered"),
        "{slo:#}"
    );
}

#[test]
fn a_prometheus_that_dies_with_the_zone_makes_the_drill_inconclusive_and_the_gate_exit_2() {
    let _lock = zones_lock();
    install_crds();
    let ratio = Arc::new(Mutex::new(0.0));
    let mut prom = Prometheus::start(exporter(ratio));
    wait_for("the first scrape", Duration::from_secs(30), || {
        http_get(prom.port, "/api/v1/query?query=checkout_error_ratio")
            .filter(|b| b.contains("\"value\""))
            .map(|_| ())
    });
    let _op = Operator::start(&[]);
    let _exp = Experiment("dead-prom".into());
    let dir = std::env::temp_dir().join(format!("firedrill-dead-prom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("drill.yaml");
    std::fs::write(&file, drill("dead-prom", prom.port).yaml()).unwrap();
    let gate =
        std::thread::spawn(move || firedrill(&["run", "-f", file.to_str().unwrap(), "--wait"]));
    wait_phase("dead-prom", "ZoneDown", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(1));
    // Prometheus ran in the dark zone: it is gone for the rest of the window.
    let _ = prom.child.kill();
    let _ = prom.child.wait();
    let (code, out, err) = gate.join().unwrap();
    let slo = kubectl_json(&["get", "dcf", "dead-prom"])["status"]["slos"][0].clone();
    assert_eq!(slo["verdict"], "Inconclusive", "{slo:#}");
    assert!(
        slo["message"]
            .as_str()
            .unwrap()
            .contains("could not run for"),
        "{slo:#}"
    );
    assert!(slo["errorPercent"].as_f64().unwrap() > 10.0, "{slo:#}");
    assert_eq!(code, 2, "Inconclusive exits 2:\n{out}\n{err}");
    let _ = std::fs::remove_dir_all(dir);
}
