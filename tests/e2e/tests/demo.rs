//! `make demo` tells the story it promises: authentication fails because it
//! is pinned to zone-a, messaging and payments pass with their times to
//! recover, and the HTML report is written. Runs the real demo script, which
//! starts (and stops) a testbed of its own.

use firedrill_e2e::firedrill_bin;
use std::process::Command;

#[test]
fn the_demo_shows_authentication_failing_and_the_others_passing() {
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
    let row = |slo: &str| {
        text.lines()
            .find(|l| l.starts_with(slo) && (l.contains(" Passed ") || l.contains(" Failed ")))
            .unwrap_or_else(|| panic!("no {slo} row:\n{text}"))
            .to_string()
    };
    let auth = row("authentication ");
    assert!(auth.contains("Failed") && auth.contains("never"), "{auth}");
    for slo in ["messaging ", "payments "] {
        let r = row(slo);
        assert!(r.contains("Passed") && r.contains("recovered in"), "{r}");
    }
    assert!(text.contains("verdict Failed"), "{text}");
    assert!(
        text.contains(
            "pinned to zone-a by nodeSelector topology.kubernetes.io/zone=zone-a: auth/login-"
        ),
        "the reason names the pinned pods:\n{text}"
    );
    assert!(text.contains("firedrill run exited 1"), "{text}");
    let html = out_dir.join("pangyo-zone-a.html");
    assert!(
        std::fs::read_to_string(&html)
            .unwrap()
            .contains("class=\"lane\""),
        "HTML report at {}",
        html.display()
    );
    assert!(
        text.contains("[testbed] stopped"),
        "the demo stops what it started:\n{text}"
    );
    let _ = std::fs::remove_dir_all(&out_dir);
}
