//! The release-pipeline gate: `firedrill run --wait` exit codes, reports that
//! CI servers and browsers read, Ctrl-C restoring before exit, and the
//! operator's metrics endpoint.

use firedrill_e2e::*;
use std::process::Command;
use std::time::Duration;

/// A drill of zone-a in `ns` whose one SLO is that `service` keeps a ready
/// endpoint.
fn drill(name: &str, ns: &str, service: &str, duration: &str) -> Drill {
    let slo = Slo::new(service, "30s")
        .interval("200ms")
        .service(ns, service)
        .min_ready_endpoints(1);
    Drill::new(name, "zone-a")
        .duration(duration)
        .baseline("1s")
        .namespace(ns)
        .slo(slo)
}

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("firedrill-gate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn python(script: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn run_wait_exits_0_when_slos_pass_and_1_when_they_fail_with_reports() {
    let _lock = zones_lock();
    let ns = setup_chat_and_login("e2e-gate");
    let _op = Operator::start(&[]);

    // Passing: the spread service keeps an endpoint.
    let pass = tmp("pass.yaml");
    std::fs::write(&pass, drill("gate-pass", &ns.0, "chat", "5s").yaml()).unwrap();
    let _e1 = Experiment("gate-pass".into());
    let (code, out, err) = firedrill(&["run", "-f", pass.to_str().unwrap(), "--wait"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("verdict Passed"), "{out}");
    assert!(err.contains("ZoneDown"), "progress shows the phases: {err}");

    // Failing: the pinned service never recovers. Reports are written.
    let fail = tmp("fail.yaml");
    std::fs::write(&fail, drill("gate-fail", &ns.0, "login", "5s").yaml()).unwrap();
    let _e2 = Experiment("gate-fail".into());
    let (junit, json, html) = (tmp("r.xml"), tmp("r.json"), tmp("r.html"));
    let (code, out, err) = firedrill(&[
        "run",
        "-f",
        fail.to_str().unwrap(),
        "--wait",
        "--junit",
        junit.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("login") && out.contains("never"), "{out}");

    // JUnit as CI servers read it (junitparser).
    let (ok, text) = python(
        "import sys, junitparser\nxml = junitparser.JUnitXml.fromfile(sys.argv[1])\nfor suite in xml:\n  for case in suite:\n    print(suite.name, case.name, [type(r).__name__ + ':' + (r.message or '') for r in case.result])\n  print('tests', suite.tests, 'failures', suite.failures)",
        &[junit.to_str().unwrap()],
    );
    assert!(ok, "{text}");
    assert!(
        text.contains(
            "firedrill.gate-fail login ['Failure:login: never recovered while zone-a was dark"
        ),
        "{text}"
    );
    assert!(text.contains("tests 1 failures 1"), "{text}");

    // JSON with the documented schema.
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["schema"], "firedrill.dev/report/v1");
    assert_eq!(v["verdict"], "Failed");
    assert!(v["timeline"]["login"].as_array().unwrap().len() >= 2);

    // The HTML renders in headless Chromium: not blank, with the SVG lanes in the DOM.
    let png = tmp("r.png");
    let profile = tmp("chromium-profile");
    let chromium = |extra: &[&str]| {
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(format!("file://{}", html.display()))
            .output()
            .expect("chromium is installed (make test runs tests/deps.sh)")
    };
    let shot = chromium(&[
        "--window-size=1040,900",
        &format!("--screenshot={}", png.display()),
    ]);
    assert!(
        png.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&shot.stderr)
    );
    let (ok, text) = python(
        "import sys\nfrom PIL import Image\nim = Image.open(sys.argv[1]).convert('RGB')\ncolors = im.getcolors(1 << 24)\nprint(len(colors), im.size)\nred = sum(n for n, c in colors if c[0] > 180 and c[1] < 80 and c[2] < 80)\ngreen = sum(n for n, c in colors if c[1] > 130 and c[0] < 80 and c[2] < 110)\nprint('red', red, 'green', green)",
        &[png.to_str().unwrap()],
    );
    assert!(ok, "{text}");
    let distinct: usize = text.split_whitespace().next().unwrap().parse().unwrap();
    assert!(distinct > 50, "the screenshot looks blank: {text}");
    let red: usize = text
        .split("red ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(red > 2000, "the failing lane is drawn in red: {text}");
    let dom = String::from_utf8_lossy(&chromium(&["--dump-dom"]).stdout).to_string();
    assert!(
        dom.contains("<svg id=\"timeline\""),
        "no timeline in the DOM"
    );
    assert_eq!(dom.matches("class=\"lane\"").count(), 1, "one lane per SLO");
    assert!(dom.contains("class=\"dark-window\"") && dom.contains("class=\"rto\""));

    // `firedrill report` renders the same experiment afterwards.
    let (code, out, _) = firedrill(&["report", "gate-fail"]);
    assert_eq!(code, 0);
    assert!(out.contains("verdict Failed"), "{out}");
}

#[test]
fn ctrl_c_during_zone_down_restores_the_zone_before_run_exits() {
    let _lock = zones_lock();
    let ns = setup_chat_and_login("e2e-sigint");
    let _op = Operator::start(&[]);
    let file = tmp("long.yaml");
    std::fs::write(&file, drill("gate-sigint", &ns.0, "chat", "10m").yaml()).unwrap();
    let _exp = Experiment("gate-sigint".into());
    let mut run = Command::new(firedrill_bin())
        .args(["run", "-f", file.to_str().unwrap(), "--wait"])
        .env(
            "KUBECONFIG",
            std::env::var("FIREDRILL_TESTBED_KUBECONFIG").unwrap(),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_phase("gate-sigint", "ZoneDown", Duration::from_secs(60));
    assert!(!firedrill_traces_on_nodes().is_empty());
    Command::new("kill")
        .args(["-INT", &run.id().to_string()])
        .status()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = run.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "firedrill run did not exit after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // By the time the process has exited, the zone is back.
    let traces = firedrill_traces_on_nodes();
    let out = run.wait_with_output().unwrap();
    assert!(traces.is_empty(), "exited before the restore: {traces:?}");
    assert_eq!(
        status.code(),
        Some(2),
        "aborted: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(dcf_field("gate-sigint", ".status.phase"), "Aborted");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("interrupted; aborting and waiting for the zone to be restored")
    );
}

#[test]
fn run_timeout_aborts_the_drill_and_waits_for_the_restore() {
    let _lock = zones_lock();
    let ns = setup_chat_and_login("e2e-run-timeout");
    let _op = Operator::start(&[]);
    let file = tmp("timeout.yaml");
    std::fs::write(&file, drill("gate-timeout", &ns.0, "chat", "10m").yaml()).unwrap();
    let _exp = Experiment("gate-timeout".into());
    let started = std::time::Instant::now();
    let (code, _, err) = firedrill(&[
        "run",
        "-f",
        file.to_str().unwrap(),
        "--wait",
        "--timeout",
        "8s",
    ]);
    let took = started.elapsed();
    // By the time the process has exited, the zone is back.
    assert!(
        firedrill_traces_on_nodes().is_empty(),
        "exited before the restore: {:?}",
        firedrill_traces_on_nodes()
    );
    assert!(cordoned_nodes().is_empty(), "{:?}", cordoned_nodes());
    assert_eq!(code, 2, "aborted: {err}");
    assert!(
        err.contains(
            "gate-timeout: timed out after 8s; aborting and waiting for the zone to be restored"
        ),
        "{err}"
    );
    assert!(
        took >= Duration::from_secs(8) && took < Duration::from_secs(120),
        "{took:?}"
    );
    assert_eq!(dcf_field("gate-timeout", ".status.phase"), "Aborted");
    let reason = dcf_field("gate-timeout", ".status.reason");
    assert!(
        reason.contains("firedrill run --timeout expired"),
        "{reason}"
    );
    assert!(
        dcf_field("gate-timeout", ".status.transitions[*].phase").contains("ZoneDown"),
        "the zone went dark before the timeout"
    );
}

#[test]
fn usage_errors_exit_3() {
    // The API server refuses the drill: nothing is created.
    let _shared = zones_lock_shared();
    let (code, _, err) = firedrill(&["run", "-f", "/nonexistent/drill.yaml", "--wait"]);
    assert_eq!(code, 3, "{err}");
    let bad = tmp("bad.yaml");
    std::fs::write(&bad, Drill::new("bad", "zone-a").duration("48h").yaml()).unwrap();
    install_crds();
    let (code, _, err) = firedrill(&["run", "-f", bad.to_str().unwrap(), "--wait"]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("duration must be between 1s and 24h"),
        "the API server's message is shown: {err}"
    );
}

#[test]
fn metrics_health_and_readiness_are_served() {
    let _lock = zones_lock();
    install_crds();
    let op = Operator::start(&[]);
    let addr = op.metrics_addr();
    let get = |path: &str| http_get(&addr, path);
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    assert!(get("/healthz").starts_with("HTTP/1.1 200"));
    wait_for("readiness", Duration::from_secs(30), || {
        get("/readyz").starts_with("HTTP/1.1 200").then_some(())
    });
    let _exp = Experiment("metered".into());
    assert!(apply(&Drill::new("metered", "zone-x").duration("5s").yaml()).ok);
    wait_phase("metered", "Failed", Duration::from_secs(60));
    let metrics = get("/metrics");
    assert!(
        metrics.contains("firedrill_phase_transitions_total{phase=\"Planning\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("firedrill_experiments_total{verdict=\"Failed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("firedrill_pods_killed_total 0")
            && metrics.contains("firedrill_nodes_cordoned_total 0"),
        "{metrics}"
    );
}

#[test]
fn on_a_terminal_progress_is_redrawn_in_place() {
    let _lock = zones_lock();
    let ns = setup_chat_and_login("e2e-tty");
    let _op = Operator::start(&[]);
    let file = tmp("tty.yaml");
    std::fs::write(&file, drill("gate-tty", &ns.0, "chat", "3s").yaml()).unwrap();
    let _exp = Experiment("gate-tty".into());
    // `script` gives the command a real pseudo-terminal.
    let cmd = format!(
        "{} run -f {} --wait",
        firedrill_bin().display(),
        file.display()
    );
    let out = Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .env(
            "KUBECONFIG",
            std::env::var("FIREDRILL_TESTBED_KUBECONFIG").unwrap(),
        )
        .output()
        .expect("script (util-linux)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("\x1b[2K") && text.contains("A\x1b[2K"),
        "the block is redrawn with cursor movements: {text:?}"
    );
    assert!(text.contains("verdict Passed"), "{text}");
}

#[test]
fn kubectl_finds_firedrill_as_a_plugin() {
    // A plan only reads the cluster.
    let _shared = zones_lock_shared();
    let bin_dir = firedrill_bin().parent().unwrap().to_path_buf();
    assert!(
        bin_dir.join("kubectl-firedrill").exists(),
        "cargo build -p firedrill builds kubectl-firedrill"
    );
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("kubectl")
        .args(["firedrill", "plan", "--zone", "zone-x"])
        .env("PATH", &path)
        .env(
            "KUBECONFIG",
            std::env::var("FIREDRILL_TESTBED_KUBECONFIG").unwrap(),
        )
        .output()
        .expect("kubectl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "plan exits 1 when the guards refuse: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("would refuse: no nodes with topology.kubernetes.io/zone=zone-x"),
        "{text}"
    );
    let list = Command::new("kubectl")
        .args(["plugin", "list"])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains("kubectl-firedrill"));
}
