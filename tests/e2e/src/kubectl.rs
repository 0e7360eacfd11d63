//! Running the testbed's `kubectl`, after checking that its kubeconfig points
//! at a loopback API server.

use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The testbed's kubeconfig (`FIREDRILL_TESTBED_KUBECONFIG`), once its API
/// server is known to be on loopback; panics otherwise.
pub(crate) fn kubeconfig() -> &'static str {
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
