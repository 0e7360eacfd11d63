//! The testbed itself: the repository it runs from, its script, the CRDs,
//! and the workloads most drills run against.

use crate::cluster::{firedrill_traces_on_nodes, ready_endpoints, ready_pods};
use crate::guards::Namespace;
use crate::kubectl::{Output, apply, kubectl};
use crate::manifests::chat_and_login;
use crate::wait::wait_for;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// The repository root. Read at run time (cargo sets CARGO_MANIFEST_DIR for
/// test processes): a build cache shared between clones must not point a
/// test at another clone's files.
pub fn repo_root() -> PathBuf {
    let dir = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
    PathBuf::from(dir).join("../..")
}

/// Run `tests/testbed/testbed.sh` with `args` (the suite's own testbed).
pub fn testbed(args: &[&str]) -> Output {
    let out = Command::new(repo_root().join("tests/testbed/testbed.sh"))
        .args(args)
        .output()
        .expect("tests/testbed/testbed.sh");
    Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Install the committed CRDs (once per test process: no test removes them)
/// and wait until they are served.
pub fn install_crds() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let dir = repo_root().join("crds");
        kubectl(
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "-f",
                dir.to_str().unwrap(),
            ],
            None,
        )
        .expect_ok("installing crds/");
        kubectl(
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/datacenterfailures.chaos.firedrill.dev",
                "crd/datacenterfailureschedules.chaos.firedrill.dev",
            ],
            None,
        )
        .expect_ok("waiting for the CRDs");
    });
}

/// A namespace with [`chat_and_login`] running and Ready, on nodes that carry
/// no trace of an earlier experiment.
pub fn setup_chat_and_login(prefix: &str) -> Namespace {
    install_crds();
    let ns = Namespace::create(prefix);
    let out = apply(&chat_and_login(&ns.0));
    assert!(out.ok, "{}", out.stderr);
    wait_for(
        "chat and login Running/Ready",
        Duration::from_secs(120),
        || {
            (ready_pods(&ns.0, "app=chat").len() == 6 && ready_pods(&ns.0, "app=login").len() == 2)
                .then_some(())
        },
    );
    // The probes read EndpointSlices, which follow the pods a moment later.
    wait_for(
        "chat and login endpoints ready",
        Duration::from_secs(60),
        || {
            (ready_endpoints(&ns.0, "chat") == 6 && ready_endpoints(&ns.0, "login") == 2)
                .then_some(())
        },
    );
    assert!(
        firedrill_traces_on_nodes().is_empty(),
        "a previous test left traces: {:?}",
        firedrill_traces_on_nodes()
    );
    ns
}

/// The testbed's helm (built once from its Go module).
pub fn helm_bin() -> String {
    let out = Command::new(repo_root().join("tests/testbed/testbed.sh"))
        .arg("helm")
        .output()
        .expect("testbed.sh helm");
    assert!(
        out.status.success(),
        "building helm ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Run helm against the testbed, with its caches in the temp directory.
pub fn helm(bin: &str, args: &[&str]) -> Output {
    let out = Command::new(bin)
        .args(args)
        .env(
            "KUBECONFIG",
            std::env::var("FIREDRILL_TESTBED_KUBECONFIG").unwrap(),
        )
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("firedrill-helm-cache"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("firedrill-helm-config"),
        )
        .env(
            "HELM_DATA_HOME",
            std::env::temp_dir().join("firedrill-helm-data"),
        )
        .output()
        .unwrap();
    Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}
