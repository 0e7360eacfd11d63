//! SLO measurement on the testbed: kubernetes probes through a real zone
//! failure, the baseline, guard SLOs, and Secrets that never leak.

use firedrill_e2e::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An SLO that Service `ns/service` keeps `min` ready endpoints.
fn service_slo(name: &str, ns: &str, service: &str, min: u32) -> Slo {
    Slo::new(name, "60s")
        .interval("200ms")
        .service(ns, service)
        .min_ready_endpoints(min)
}

#[test]
fn spread_service_passes_and_pinned_service_fails_naming_the_pinned_pods() {
    let _lock = zones_lock();
    let ns = setup_chat_and_login("e2e-slo");
    let _op = Operator::start(&[]);
    let _exp = Experiment("slo".into());
    let drill = Drill::new("slo", "zone-a")
        .duration("12s")
        .baseline("2s")
        .observe("4s")
        .namespace(&ns.0)
        .slo(service_slo("messaging", &ns.0, "chat", 6).availability_objective(10.0))
        .slo(service_slo("authentication", &ns.0, "login", 1));
    assert!(apply(&drill.yaml()).ok);
    wait_completed("slo", 120);
    let status = kubectl_json(&["get", "dcf", "slo"])["status"].clone();
    assert_eq!(status["phase"], "Completed", "{status:#}");
    assert_eq!(status["verdict"], "Failed", "{status:#}");
    let slo = |n: &str| {
        status["slos"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == n)
            .unwrap()
            .clone()
    };

    let messaging = slo("messaging");
    assert_eq!(messaging["verdict"], "Passed", "{messaging:#}");
    let ttr = messaging["timeToRecoverSeconds"].as_f64().unwrap();
    assert!(
        ttr > 0.0 && ttr < 12.0,
        "the spread service dipped below 6 endpoints and came back: {messaging:#}"
    );
    assert!(messaging["failures"].as_i64().unwrap() > 0);

    let auth = slo("authentication");
    assert_eq!(auth["verdict"], "Failed", "{auth:#}");
    assert!(
        auth["timeToRecoverSeconds"].is_null(),
        "never recovered: {auth:#}"
    );
    assert!(
        auth["message"]
            .as_str()
            .unwrap()
            .contains("never recovered while zone-a was dark"),
        "{auth:#}"
    );
    // The observation window saw it come back once the zone was restored.
    assert!(
        auth["message"]
            .as_str()
            .unwrap()
            .contains("s after the restore"),
        "{auth:#}"
    );

    let reason = status["reason"].as_str().unwrap();
    assert!(reason.starts_with("Failed: authentication"), "{reason}");
    assert!(
        reason.contains(&format!(
            "pinned to zone-a by nodeSelector topology.kubernetes.io/zone=zone-a: {}/login-",
            ns.0
        )),
        "the reason names the pinned pods: {reason}"
    );
    assert_eq!(
        dcf_field("slo", ".status.conditions[?(@.type==\"Passed\")].status"),
        "False"
    );
    // The verdict shows in `kubectl get`.
    let row = kubectl(&["get", "dcf", "slo", "--no-headers"], None).stdout;
    assert!(
        row.contains("Completed") && row.contains("Failed") && row.contains("pinned to zone-a"),
        "{row}"
    );
    assert!(firedrill_traces_on_nodes().is_empty());
}

#[test]
fn an_unreachable_probe_during_the_baseline_aborts_and_touches_nothing() {
    let _lock = zones_lock();
    install_crds();
    let _op = Operator::start(&[]);
    let _exp = Experiment("no-baseline".into());
    // A loopback port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let before = kubectl_json(&["get", "nodes"]);
    let drill = Drill::new("no-baseline", "zone-a")
        .duration("1m")
        .baseline("3s")
        .slo(
            Slo::new("db", "30s")
                .interval("200ms")
                .tcp("127.0.0.1", port),
        );
    assert!(apply(&drill.yaml()).ok);
    wait_completed("no-baseline", 60);
    assert_eq!(dcf_field("no-baseline", ".status.phase"), "Aborted");
    assert_eq!(
        dcf_field(
            "no-baseline",
            ".status.conditions[?(@.type==\"Completed\")].reason"
        ),
        "SteadyStateNotMet"
    );
    let reason = dcf_field("no-baseline", ".status.reason");
    assert!(
        reason.contains("steady state not met")
            && reason.contains("db:")
            && reason.contains("refused"),
        "{reason}"
    );
    let phases = dcf_field("no-baseline", ".status.transitions[*].phase");
    assert!(!phases.contains("Injecting"), "{phases}");
    assert_nodes_untouched(&before);
}

#[test]
fn a_breached_guard_slo_aborts_the_fault_and_restores_the_zone() {
    let _lock = zones_lock();
    let ns = setup_chat_and_login("e2e-guard");
    let _op = Operator::start(&[]);
    let _exp = Experiment("guarded".into());
    let drill = Drill::new("guarded", "zone-a")
        .duration("10m")
        .baseline("1s")
        .namespace(&ns.0)
        .slo(service_slo("authentication", &ns.0, "login", 1).guard_tolerance("2s"));
    assert!(apply(&drill.yaml()).ok);
    wait_completed("guarded", 90);
    assert_eq!(dcf_field("guarded", ".status.phase"), "Aborted");
    let reason = dcf_field("guarded", ".status.reason");
    assert!(
        reason.contains("guard SLO authentication breached") && reason.contains("zone restored"),
        "{reason}"
    );
    assert_zone_restored();
    assert_eq!(dcf_field("guarded", ".status.slos[0].verdict"), "Failed");
}

/// An HTTP server on loopback that answers 200 only with the right bearer
/// token, and remembers the Authorization headers it saw.
fn token_server(token: &'static str) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(vec![]));
    let record = seen.clone();
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(mut sock) = sock else { continue };
            let mut buf = [0u8; 8192];
            let n = sock.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let auth = req
                .lines()
                .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))
                .unwrap_or("")
                .to_string();
            let ok = auth.ends_with(token);
            record.lock().unwrap().push(auth);
            let resp = if ok {
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            } else {
                "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            };
            let _ = sock.write_all(resp.as_bytes());
        }
    });
    (port, seen)
}

#[test]
fn a_secret_used_in_a_probe_header_never_appears_anywhere() {
    const TOKEN: &str = "s3cr3t-7f1c9e-do-not-print";
    let _lock = zones_lock();
    let ns = setup_chat_and_login("e2e-secret");
    let (port, seen) = token_server(TOKEN);
    kubectl(
        &[
            "-n",
            &ns.0,
            "create",
            "secret",
            "generic",
            "probe-token",
            &format!("--from-literal=token=Bearer {TOKEN}"),
        ],
        None,
    )
    .expect_ok("create secret");
    let op = Operator::start(&["--secret-namespaces", &ns.0]);
    let drill = |name: &str| {
        Drill::new(name, "zone-a")
            .duration("4s")
            .baseline("1s")
            .namespace(&ns.0)
            .slo(
                Slo::new("api", "30s")
                    .interval("200ms")
                    .http(&format!("http://127.0.0.1:{port}/healthz"))
                    .header_from_secret("Authorization", &ns.0, "probe-token", "token"),
            )
            .yaml()
    };

    // The Secret does not list the probe's host: the experiment is refused
    // before anything is touched, and the value is never sent.
    let _refused = Experiment("secret-unlisted".into());
    assert!(apply(&drill("secret-unlisted")).ok);
    wait_completed("secret-unlisted", 60);
    assert_eq!(dcf_field("secret-unlisted", ".status.phase"), "Failed");
    let reason = dcf_field("secret-unlisted", ".status.reason");
    assert!(
        reason.contains(&format!(
            "secret {}/probe-token may not be sent to 127.0.0.1",
            ns.0
        )) && reason.contains("chaos.firedrill.dev/probe-hosts")
            && reason.contains("nothing was changed"),
        "{reason}"
    );
    assert!(
        cordoned_nodes().is_empty(),
        "a refused drill touched a node"
    );
    assert!(
        !seen.lock().unwrap().iter().any(|h| h.contains(TOKEN)),
        "the value went to a host its Secret does not list"
    );

    // Its owner lists the host: now it is sent there.
    kubectl(
        &[
            "-n",
            &ns.0,
            "annotate",
            "secret",
            "probe-token",
            "chaos.firedrill.dev/probe-hosts=login.auth.svc,127.0.0.1",
        ],
        None,
    )
    .expect_ok("annotate secret");
    let _exp = Experiment("secret".into());
    assert!(apply(&drill("secret")).ok);
    wait_completed("secret", 90);
    assert_eq!(
        dcf_field("secret", ".status.verdict"),
        "Passed",
        "{}",
        dcf_field("secret", ".status.reason")
    );
    assert!(
        seen.lock().unwrap().iter().any(|h| h.ends_with(TOKEN)),
        "the probe sent the Secret's value"
    );

    let everywhere = [
        kubectl(&["get", "dcf", "secret", "-o", "yaml"], None).stdout,
        kubectl(&["get", "events", "-A", "-o", "yaml"], None).stdout,
        kubectl(
            &[
                "get",
                "configmaps",
                "-A",
                "-l",
                "app.kubernetes.io/managed-by=firedrill",
                "-o",
                "yaml",
            ],
            None,
        )
        .stdout,
        op.log_text(),
    ];
    for (i, text) in everywhere.iter().enumerate() {
        assert!(
            !text.is_empty() || i == 3,
            "nothing to search in source {i}"
        );
        assert!(
            !text.contains(TOKEN),
            "the Secret's value leaked into source {i}"
        );
    }
}

#[test]
fn a_window_the_operator_did_not_probe_is_inconclusive_not_passed() {
    let _lock = zones_lock();
    let ns = setup_chat_and_login("e2e-coverage");
    // One operator, no lease to lose while it is stopped.
    let op = Operator::start(&["--leader-elect=false"]);
    let _exp = Experiment("unwatched".into());
    // All six chat pods must be ready: losing zone-a's two is a dip of a
    // few seconds (replacements take 2 s to turn Ready), inside the RTO.
    let drill = Drill::new("unwatched", "zone-a")
        .duration("20s")
        .baseline("1s")
        .namespace(&ns.0)
        .slo(service_slo("chat", &ns.0, "chat", 6));
    assert!(apply(&drill.yaml()).ok);
    wait_phase("unwatched", "ZoneDown", Duration::from_secs(60));
    // The operator stops (SIGSTOP) for most of the dark window: the dip
    // and the recovery happen while nobody probes.
    let pid = op.pid().to_string();
    let signal = |s: &str| {
        let ok = std::process::Command::new("kill")
            .args([s, &pid])
            .status()
            .is_ok_and(|st| st.success());
        assert!(ok, "kill {s} {pid}");
    };
    signal("-STOP");
    std::thread::sleep(Duration::from_secs(15));
    signal("-CONT");
    wait_completed("unwatched", 90);
    assert_zone_restored();
    let slo = kubectl_json(&["get", "dcf", "unwatched"])["status"]["slos"][0].clone();
    assert_eq!(slo["verdict"], "Inconclusive", "{slo:#}");
    let msg = slo["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("the probe's samples cover only") && msg.contains("minCoveragePercent 90%"),
        "{msg}"
    );
    // The gap is named, and it is about as long as the stop.
    let gap: f64 = msg
        .split("the longest gap: ")
        .nth(1)
        .and_then(|r| r.split('s').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no gap named: {msg}"));
    assert!((12.0..=20.0).contains(&gap), "gap {gap}s: {msg}");
    assert_eq!(dcf_field("unwatched", ".status.verdict"), "Inconclusive");
}
