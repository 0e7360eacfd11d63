//! `make demo` tells the story it promises. Before the fix, authentication
//! fails because it is pinned to zone-a, and messaging and payments fail with
//! it although their own replicas fail over: their journeys call login. No
//! `dependsOn` says so: the plan predicts all three failures from the
//! workloads' LOGIN_URL, and the verdict names login as the cause from the
//! endpoints it watched. Payments is measured by a write probe: its ledger
//! replicates asynchronously 2 s behind, so it also loses the acknowledged
//! payments of the last 2 s before the ledger's primary went with zone-a.
//! After the fix (login in every zone, the ledger synchronous), the same
//! drill passes and loses nothing. Runs the real demo script, which starts
//! (and stops) a testbed of its own.

use firedrill_e2e::{firedrill_bin, zones_lock};
use serde_json::Value;
use std::process::Command;

/// The ledger's replication lag (examples/pangyo/workloads.yaml).
const LAG_S: f64 = 2.0;

#[test]
fn the_demo_shows_the_cascade_and_then_the_fix() {
    // A second testbed and operator, and verdicts that hang on timing: the
    // machine to itself.
    let _lock = zones_lock();
    let root = firedrill_e2e::repo_root();
    let target = firedrill_bin()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let state = std::env::temp_dir().join(format!("firedrill-demo-testbed-{}", std::process::id()));
    let out_dir = std::env::temp_dir().join(format!("firedrill-demo-out-{}", std::process::id()));
    let out = Command::new("bash")
        .arg(root.join("examples/demo.sh"))
        .env("CARGO_TARGET_DIR", &target)
        .env("FIREDRILL_TESTBED_DIR", &state)
        .env("FIREDRILL_DEMO_DIR", &out_dir)
        .env_remove("FIREDRILL_DEMO_KEEP")
        .output()
        .expect("bash");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&state);
    assert!(out.status.success(), "the demo failed:\n{text}");
    let (before, after) = text
        .split_once("== Run 2")
        .unwrap_or_else(|| panic!("no second run:\n{text}"));
    let row = |part: &str, slo: &str| {
        part.lines()
            .find(|l| l.starts_with(slo) && (l.contains(" Passed ") || l.contains(" Failed ")))
            .unwrap_or_else(|| panic!("no {slo} row:\n{part}"))
            .to_string()
    };
    // Run 1: all three fail, and the plan predicted each.
    for slo in ["authentication ", "messaging ", "payments "] {
        let r = row(before, slo);
        assert!(r.contains("Failed") && r.contains(" yes "), "{r}");
    }
    assert!(before.contains("verdict Failed"), "{before}");
    assert!(
        before.contains("pinned to zone-a by nodeSelector topology.kubernetes.io/zone=zone-a"),
        "the reason names the pin:\n{before}"
    );
    let causes = before
        .lines()
        .filter(|l| {
            l.contains("cause: ")
                && l.contains("failed with Service auth/login (observed, not declared)")
        })
        .count();
    assert_eq!(
        causes, 2,
        "messaging's and payments' cause is login:\n{before}"
    );
    assert!(before.contains("firedrill run exited 1"), "{before}");
    // Payments lost the ledger's last 2 s of acknowledged writes: its RPO
    // failed beside its availability, and the cause names the lost writes.
    let payments = |name: &str| -> Value {
        let path = out_dir.join(format!("{name}.json"));
        let report: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        report["slos"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "payments")
            .unwrap_or_else(|| panic!("no payments in {}", path.display()))
            .clone()
    };
    let p = payments("pangyo-before-fix");
    let w = &p["writes"];
    assert_eq!(p["verdict"], "Failed", "{p:#}");
    assert!(w["lost"].as_i64().unwrap() > 0, "{p:#}");
    assert_eq!(w["unverified"], 0, "{p:#}");
    let rp = w["recoveryPointSeconds"].as_f64().unwrap();
    assert!(
        (rp - LAG_S).abs() <= 0.5,
        "recovery point {rp}s, lag {LAG_S}s: {p:#}"
    );
    assert!(
        w["refusedWhileDark"].as_i64().unwrap() > 0,
        "login was down: {p:#}"
    );
    assert!(
        p["cause"]
            .as_str()
            .unwrap()
            .contains("acknowledged writes lost: fd-"),
        "{p:#}"
    );
    let r = row(before, "payments ");
    assert!(
        r.contains(&format!("/0s ({} lost)", w["lost"])),
        "the table shows the loss: {r}"
    );
    // Run 2, after the fix: all three pass.
    for slo in ["authentication ", "messaging ", "payments "] {
        let r = row(after, slo);
        assert!(r.contains("Passed") && r.contains('/'), "{r}");
    }
    assert!(after.contains("verdict Passed"), "{after}");
    // The ledger synchronous: nothing lost, every write read back.
    let p = payments("pangyo-after-fix");
    let w = &p["writes"];
    assert_eq!(p["verdict"], "Passed", "{p:#}");
    assert_eq!(w["lost"], 0, "{p:#}");
    assert_eq!(w["unverified"], 0, "{p:#}");
    assert!(w["acknowledged"].as_i64().unwrap() > 100, "{p:#}");
    assert!(
        text.contains("before the fix: firedrill run exited 1; after the fix: 0"),
        "{text}"
    );
    for name in ["pangyo-before-fix", "pangyo-after-fix"] {
        let html = out_dir.join(format!("{name}.html"));
        assert!(
            std::fs::read_to_string(&html)
                .unwrap()
                .contains("class=\"lane\""),
            "HTML report at {}",
            html.display()
        );
    }
    assert!(
        text.contains("[testbed] stopped"),
        "the demo stops what it started:\n{text}"
    );
    let _ = std::fs::remove_dir_all(&out_dir);
}
