//! No hang, no stale writes: a pod delete stuck in an admission webhook never
//! holds the zone dark past an abort, a deletion or the timeout; status
//! writes never redo a phase; a rolling update hands the drill over; and an
//! API server outage mid-drill only delays it.

use firedrill_e2e::*;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A TCP listener on loopback that accepts connections and never answers:
/// a webhook that hangs until the API server's timeout.
struct BlackHole {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl BlackHole {
    fn start() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        std::thread::spawn(move || {
            let mut held = vec![];
            while !s.load(Ordering::Relaxed) {
                if let Ok((c, _)) = l.accept() {
                    held.push(c);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        BlackHole { port, stop }
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A port nothing listens on.
fn dead_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A validating webhook on pod DELETE in `ns` only, failurePolicy Fail,
/// served at `port` on loopback. Removed when the test ends.
fn pod_delete_webhook(ns: &str, port: u16, timeout_secs: u32) -> Cleanup {
    let name = format!("{ns}-stuck-delete");
    let yaml = format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {{name: {name}}}
webhooks:
- name: stuck.firedrill.test
  clientConfig: {{url: "https://127.0.0.1:{port}/validate"}}
  rules: [{{operations: [DELETE], apiGroups: [""], apiVersions: [v1], resources: [pods]}}]
  namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {ns}}}}}
  failurePolicy: Fail
  sideEffects: None
  admissionReviewVersions: [v1]
  timeoutSeconds: {timeout_secs}
"#
    );
    apply(&yaml).expect_ok("creating the pod-delete webhook");
    Cleanup(vec![format!("validatingwebhookconfiguration/{name}")])
}

/// A fault-only drill of zone-a scoped to `ns`, with no baseline.
fn scoped(name: &str, duration: &str, ns: &str) -> String {
    Drill::new(name, "zone-a")
        .duration(duration)
        .baseline("0s")
        .namespace(ns)
        .yaml()
}

/// Wait until injection is under way: the zone's nodes carry our marks.
fn wait_marked() {
    wait_for("the zone's nodes marked", Duration::from_secs(60), || {
        (!firedrill_traces_on_nodes().is_empty()).then_some(())
    });
}

#[test]
fn a_stuck_pod_delete_never_outlives_an_abort_a_deletion_or_the_timeout() {
    let _lock = zones_lock();
    let ns = setup_chat_and_login("e2e-stuck");
    let hole = BlackHole::start();
    let _hook = pod_delete_webhook(&ns.0, hole.port, 30);
    let op = Operator::start(&["--restore-grace=1s"]);

    // The abort annotation, while every kill hangs in the webhook.
    {
        let _exp = Experiment("stuck-abort".into());
        apply(&scoped("stuck-abort", "10m", &ns.0)).expect_ok("drill");
        wait_phase("stuck-abort", "Injecting", Duration::from_secs(60));
        wait_marked();
        std::thread::sleep(Duration::from_secs(2));
        let asked = Instant::now();
        kubectl(
            &[
                "annotate",
                "dcf",
                "stuck-abort",
                "chaos.firedrill.dev/abort=on-call says stop",
            ],
            None,
        )
        .expect_ok("annotate");
        wait_completed("stuck-abort", 30);
        assert!(
            asked.elapsed() < Duration::from_secs(20),
            "the abort took {:?}",
            asked.elapsed()
        );
        assert_eq!(dcf_field("stuck-abort", ".status.phase"), "Aborted");
        assert!(dcf_field("stuck-abort", ".status.reason").contains("on-call says stop"));
        assert_zone_restored();
    }
    // A deletion.
    {
        let _exp = Experiment("stuck-delete".into());
        apply(&scoped("stuck-delete", "10m", &ns.0)).expect_ok("drill");
        wait_phase("stuck-delete", "Injecting", Duration::from_secs(60));
        wait_marked();
        std::thread::sleep(Duration::from_secs(2));
        let asked = Instant::now();
        kubectl(&["delete", "dcf", "stuck-delete", "--timeout=30s"], None)
            .expect_ok("deleting a drill whose kills are stuck");
        assert!(asked.elapsed() < Duration::from_secs(20));
        assert_zone_restored();
    }
    drop(op);
    // The injection's own timeout (3 s; the dark window's timeout only
    // starts once the zone is dark, which a stuck injection never makes it).
    {
        let _op = Operator::start(&["--restore-grace=1s", "--injection-timeout=3s"]);
        let _exp = Experiment("stuck-timeout".into());
        apply(&scoped("stuck-timeout", "2s", &ns.0)).expect_ok("drill");
        wait_phase("stuck-timeout", "Injecting", Duration::from_secs(60));
        wait_completed("stuck-timeout", 30);
        assert_eq!(dcf_field("stuck-timeout", ".status.phase"), "Aborted");
        let reason = dcf_field("stuck-timeout", ".status.reason");
        assert!(
            reason.contains("did not finish within 3s") || reason.contains("timed out"),
            "{reason}"
        );
        assert_zone_restored();
    }
}

#[test]
fn pods_that_cannot_be_killed_abort_the_drill_with_the_reason() {
    let _lock = zones_lock();
    let ns = setup_chat_and_login("e2e-refused-kill");
    let _hook = pod_delete_webhook(&ns.0, dead_port(), 5);
    let _op = Operator::start(&[]);
    let _exp = Experiment("no-kill".into());
    let started = Instant::now();
    apply(&scoped("no-kill", "10m", &ns.0)).expect_ok("drill");
    wait_completed("no-kill", 120);
    assert_eq!(dcf_field("no-kill", ".status.phase"), "Aborted");
    let reason = dcf_field("no-kill", ".status.reason");
    assert!(
        reason.contains("pods could not be killed") && reason.contains("webhook"),
        "{reason}"
    );
    assert_ne!(dcf_field("no-kill", ".status.fault.podsNotKilled"), "0");
    assert_eq!(dcf_field("no-kill", ".status.fault.taintEffect"), "");
    assert!(
        started.elapsed() < Duration::from_secs(100),
        "retries are bounded"
    );
    assert_zone_restored();
}

#[test]
fn status_writes_never_redo_a_phase_while_the_object_churns() {
    let _lock = zones_lock();
    let ns = setup_chat_and_login("e2e-churn-status");
    let zone_a = nodes_in("zone-a");
    let in_zone = ready_pods(&ns.0, "app=chat")
        .iter()
        .filter(|(_, n)| zone_a.contains(n))
        .count()
        + 2; // both login pods are pinned to zone-a
    let _op = Operator::start(&[]);
    let _exp = Experiment("churned".into());
    // Annotate the experiment every 100 ms for the whole drill: every status
    // write races a metadata change.
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let churn = std::thread::spawn(move || {
        let mut i = 0;
        while !s.load(Ordering::Relaxed) {
            kubectl(
                &[
                    "annotate",
                    "--overwrite",
                    "dcf",
                    "churned",
                    &format!("e2e/churn={i}"),
                ],
                None,
            );
            i += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        i
    });
    apply(&scoped("churned", "5s", &ns.0)).expect_ok("drill");
    wait_completed("churned", 120);
    stop.store(true, Ordering::Relaxed);
    let writes = churn.join().unwrap();
    assert!(writes > 20, "the churn ran ({writes} annotations)");
    assert_eq!(
        dcf_field("churned", ".status.transitions[*].phase"),
        "Planning Baseline Injecting ZoneDown Restoring Completed"
    );
    assert_eq!(
        dcf_field("churned", ".status.fault.podsKilled"),
        in_zone.to_string(),
        "every pod in the zone counted once"
    );
    let killed_events = kubectl_json(&[
        "get",
        "events",
        "-n",
        "default",
        "--field-selector",
        "reason=PodsKilled,involvedObject.name=churned",
    ])["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["count"].as_i64().unwrap_or(1).max(1))
        .sum::<i64>();
    assert_eq!(killed_events, 1, "PodsKilled reported once");
    assert_zone_restored();
}

#[test]
fn a_rolling_update_hands_the_drill_over_and_only_the_last_operator_restores() {
    let _lock = zones_lock();
    let ns = setup_chat_and_login("e2e-rolling");
    // Declared first, dropped last: an operator that lets the experiments'
    // finalizers run when the test deletes them.
    let cleaner: std::cell::OnceCell<Operator> = std::cell::OnceCell::new();
    let lease = ["--leader-elect-lease-duration=4s"];
    let mut old = Operator::start(&lease);
    wait_for(
        "the first operator to lead",
        Duration::from_secs(30),
        || old.log_text().contains("became the leader").then_some(()),
    );
    let mut new = Operator::start(&lease);
    wait_for(
        "the second operator to stand by",
        Duration::from_secs(30),
        || new.log_text().contains("standing by").then_some(()),
    );
    let _exp = Experiment("rolled".into());
    apply(&scoped("rolled", "15s", &ns.0)).expect_ok("drill");
    wait_phase("rolled", "ZoneDown", Duration::from_secs(60));
    let held = firedrill_traces_on_nodes();
    // The rolling update stops the old pod while the new one stands by.
    let status = old.stop().expect("the old operator stops");
    assert!(status.success(), "{status:?}");
    assert!(
        old.log_text().contains("handing the experiments over"),
        "{}",
        old.log_text()
    );
    assert_eq!(
        dcf_field("rolled", ".status.phase"),
        "ZoneDown",
        "the drill was not aborted"
    );
    assert_eq!(firedrill_traces_on_nodes(), held, "the zone stayed dark");
    wait_for("the new operator to lead", Duration::from_secs(15), || {
        new.log_text().contains("became the leader").then_some(())
    });
    wait_completed("rolled", 60);
    assert_eq!(dcf_field("rolled", ".status.phase"), "Completed");
    assert_zone_restored();

    // With no other operator left, a stop restores and aborts.
    let _exp2 = Experiment("last".into());
    apply(&scoped("last", "10m", &ns.0)).expect_ok("drill");
    wait_phase("last", "ZoneDown", Duration::from_secs(60));
    new.stop();
    assert_eq!(dcf_field("last", ".status.phase"), "Aborted");
    assert!(dcf_field("last", ".status.reason").contains("no other replica"));
    assert_zone_restored();
    let _ = cleaner.set(Operator::start(&[]));
}

#[test]
fn an_api_server_outage_mid_drill_only_delays_it() {
    let _lock = zones_lock();
    let ns = setup_chat_and_login("e2e-outage");
    let op = Operator::start(&["--leader-elect=false"]);
    let _exp = Experiment("outage".into());
    apply(&scoped("outage", "40s", &ns.0)).expect_ok("drill");
    wait_phase("outage", "ZoneDown", Duration::from_secs(60));
    let dark_at = Instant::now();
    let _guard = ApiServerBack;
    // 20 s while dark.
    std::thread::sleep(Duration::from_secs(3));
    testbed(&["apiserver", "stop"]).expect_ok("stopping the apiserver");
    std::thread::sleep(Duration::from_secs(20));
    testbed(&["apiserver", "start"]).expect_ok("starting the apiserver");
    assert_eq!(dcf_field("outage", ".status.phase"), "ZoneDown");
    // 20 s again across the end of the duration, so the restore waits for it.
    let until = Duration::from_secs(38).saturating_sub(dark_at.elapsed());
    std::thread::sleep(until);
    testbed(&["apiserver", "stop"]).expect_ok("stopping the apiserver");
    std::thread::sleep(Duration::from_secs(20));
    testbed(&["apiserver", "start"]).expect_ok("starting the apiserver");
    wait_completed("outage", 120);
    assert_eq!(dcf_field("outage", ".status.phase"), "Completed");
    assert_zone_restored();
    assert!(
        op.log_text().contains("zone down"),
        "the same operator process finished the drill"
    );
}

/// A process's CPU time so far (user + system), from /proc/PID/stat.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command (which may hold spaces) start at field 3:
    // utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(") ").unwrap().1;
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|f| f.parse().unwrap())
        .collect();
    let ticks = String::from_utf8(
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse::<u64>()
    .unwrap();
    Duration::from_millis((fields[0] + fields[1]) * 1000 / ticks)
}

#[test]
fn a_minute_long_api_server_outage_in_zone_down_costs_few_log_lines_and_little_cpu() {
    const OUTAGE: Duration = Duration::from_secs(60);
    let _lock = zones_lock();
    let ns = setup_chat_and_login("e2e-quiet-outage");
    // At the operator's own log level, as a user runs it: what an SRE's log
    // pipeline would receive.
    let op = Operator::start_logging(&["--leader-elect=false"], "");
    let _exp = Experiment("quiet-outage".into());
    apply(&scoped("quiet-outage", "80s", &ns.0)).expect_ok("drill");
    wait_phase("quiet-outage", "ZoneDown", Duration::from_secs(60));
    let _guard = ApiServerBack;
    std::thread::sleep(Duration::from_secs(3));
    testbed(&["apiserver", "stop"]).expect_ok("stopping the apiserver");
    let (lines_before, cpu_before, at) = (
        op.log_text().lines().count(),
        cpu_time(op.pid()),
        Instant::now(),
    );
    std::thread::sleep(OUTAGE);
    let (lines, cpu, took) = (
        op.log_text().lines().count() - lines_before,
        cpu_time(op.pid()) - cpu_before,
        at.elapsed(),
    );
    testbed(&["apiserver", "start"]).expect_ok("starting the apiserver");
    let per_second = lines as f64 / took.as_secs_f64();
    let share = cpu.as_secs_f64() / took.as_secs_f64() * 100.0;
    eprintln!(
        "API server outage of {:.0}s in ZoneDown: the operator wrote {lines} log lines ({per_second:.2}/s) and used {:.2}s of CPU ({share:.2}% of a core)",
        took.as_secs_f64(),
        cpu.as_secs_f64()
    );
    let outage_log: Vec<String> = op
        .log_text()
        .lines()
        .skip(lines_before)
        .take(lines)
        .map(String::from)
        .collect();
    assert!(
        per_second <= 2.0,
        "{per_second:.2} log lines a second; the first of them:\n{}",
        outage_log
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(share <= 5.0, "{share:.2}% of a core");
    wait_completed("quiet-outage", 120);
    assert_eq!(
        dcf_field("quiet-outage", ".status.phase"),
        "Completed",
        "{}",
        dcf_field("quiet-outage", ".status.reason")
    );
    assert_zone_restored();
}

/// Starts the apiserver again if a test stopped it and failed.
struct ApiServerBack;

impl Drop for ApiServerBack {
    fn drop(&mut self) {
        if !testbed(&["status"])
            .stdout
            .contains("kube-apiserver: running")
        {
            testbed(&["apiserver", "start"]);
        }
    }
}
