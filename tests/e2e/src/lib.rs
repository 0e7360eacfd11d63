//! Helpers for the end-to-end tests: real `kubectl` against the testbed.
//!
//! The tests run only against a testbed on loopback: `FIREDRILL_TESTBED_KUBECONFIG`
//! must name its kubeconfig (`make test` sets it), and the API server in it
//! must be on 127.0.0.0/8 or [::1]. Anything else panics before a single
//! command is sent, so these tests can never touch a real cluster.

use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn kubeconfig() -> &'static str {
    static KUBECONFIG: OnceLock<String> = OnceLock::new();
    KUBECONFIG.get_or_init(|| {
        let path = std::env::var("FIREDRILL_TESTBED_KUBECONFIG").unwrap_or_else(|_| {
            panic!(
                "FIREDRILL_TESTBED_KUBECONFIG is not set. The end-to-end tests run against the \
                 testbed: use `make test`, or start one with `tests/testbed/testbed.sh up` and \
                 export FIREDRILL_TESTBED_KUBECONFIG=.testbed/admin.kubeconfig"
            )
        });
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read kubeconfig {path}: {e}"));
        let server = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("server:"))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no server in {path}"));
        let loopback = [
            "https://127.",
            "http://127.",
            "https://[::1]",
            "https://localhost",
        ];
        assert!(
            loopback.iter().any(|p| server.starts_with(p)),
            "refusing to run end-to-end tests against {server}: only a loopback testbed is allowed"
        );
        path
    })
}

/// The result of one kubectl call.
#[derive(Debug)]
pub struct Output {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// stdout, or panic with everything kubectl said.
    pub fn expect_ok(self, what: &str) -> String {
        assert!(self.ok, "{what} failed:\n{}\n{}", self.stdout, self.stderr);
        self.stdout
    }
}

/// Run the testbed's kubectl with `args`, optionally feeding `stdin`.
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd =
        Command::new(std::env::var("FIREDRILL_KUBECTL").unwrap_or_else(|_| "kubectl".into()));
    cmd.arg("--kubeconfig")
        .arg(kubeconfig())
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .expect("kubectl must be on PATH (the testbed's bin directory)");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `kubectl ... -o json`, parsed.
pub fn kubectl_json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = kubectl(&all, None).expect_ok(&format!("kubectl {}", args.join(" ")));
    serde_json::from_str(&out).expect("kubectl printed JSON")
}

/// `kubectl apply -f -` with `yaml`.
pub fn apply(yaml: &str) -> Output {
    kubectl(&["apply", "-f", "-"], Some(yaml))
}

/// Poll `check` every 250 ms until it returns `Some`, or panic after `timeout`
/// with the last value `describe` gives.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Install the committed CRDs (once per test binary) and wait until they are served.
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

/// A namespace that is deleted when the test ends, pass or fail.
pub struct Namespace(pub String);

impl Namespace {
    pub fn create(prefix: &str) -> Self {
        let name = format!("{prefix}-{}", std::process::id());
        kubectl(
            &[
                "delete",
                "namespace",
                &name,
                "--ignore-not-found",
                "--wait=true",
            ],
            None,
        );
        kubectl(&["create", "namespace", &name], None).expect_ok("creating the test namespace");
        wait_for(
            "the namespace's default service account",
            Duration::from_secs(60),
            || {
                kubectl(&["-n", &name, "get", "serviceaccount", "default"], None)
                    .ok
                    .then_some(())
            },
        );
        Namespace(name)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        kubectl(
            &[
                "delete",
                "namespace",
                &self.0,
                "--ignore-not-found",
                "--wait=false",
            ],
            None,
        );
    }
}

/// A cluster-scoped object deleted when the test ends.
pub struct Cleanup(pub Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for what in &self.0 {
            kubectl(
                &["delete", what, "--ignore-not-found", "--wait=false"],
                None,
            );
        }
    }
}

/// Serializes the tests that change nodes with the tests that need every zone
/// schedulable, within one test binary.
pub fn zones_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Node name → zone, for every node.
pub fn node_zones() -> std::collections::BTreeMap<String, String> {
    kubectl_json(&["get", "nodes"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let name = n["metadata"]["name"].as_str().unwrap().to_string();
            let zone = n["metadata"]["labels"]["topology.kubernetes.io/zone"]
                .as_str()
                .unwrap_or("")
                .to_string();
            (name, zone)
        })
        .collect()
}

/// Pods of a namespace that are Running with condition Ready=True, as (pod, node).
pub fn ready_pods(namespace: &str, selector: &str) -> Vec<(String, String)> {
    kubectl_json(&["-n", namespace, "get", "pods", "-l", selector])["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| p["status"]["phase"] == "Running")
        .filter(|p| {
            p["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        })
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}
