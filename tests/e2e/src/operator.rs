//! The `firedrill` binary: its command line, and the operator as a real
//! process with its log and metrics endpoint.

use crate::kubectl::kubeconfig;
use crate::wait::wait_for;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The `firedrill` binary built next to the tests (`cargo build -p firedrill`).
pub fn firedrill_bin() -> PathBuf {
    if let Ok(p) = std::env::var("FIREDRILL_BIN") {
        return PathBuf::from(p);
    }
    // target/debug/deps/<test> → target/debug/firedrill
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("firedrill")
}

/// Run `firedrill` with `args` against the testbed.
pub fn firedrill(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(firedrill_bin())
        .args(args)
        .env("KUBECONFIG", kubeconfig())
        .output()
        .expect("the firedrill binary (cargo build -p firedrill)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running `firedrill operator`. Dropping it sends SIGTERM (and SIGKILL if
/// it does not stop within 20 s); `crash()` SIGKILLs it like a node failure.
pub struct Operator {
    child: Option<std::process::Child>,
    pub log: PathBuf,
}

impl Operator {
    pub fn start(extra: &[&str]) -> Self {
        Self::start_logging(extra, "info,firedrill=debug,kube=warn")
    }

    /// Start it with log filter `filter` (`""`: the operator's own default,
    /// as a user runs it).
    pub fn start_logging(extra: &[&str], filter: &str) -> Self {
        let log = std::env::temp_dir().join(format!(
            "firedrill-operator-{}-{}.log",
            std::process::id(),
            now_nanos()
        ));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(firedrill_bin());
        cmd.arg("operator")
            .arg("--metrics-bind=127.0.0.1:0")
            .args(extra)
            .env("KUBECONFIG", kubeconfig());
        if filter.is_empty() {
            cmd.env_remove("RUST_LOG");
        } else {
            cmd.env("RUST_LOG", filter);
        }
        let child = cmd
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("the firedrill binary (cargo build -p firedrill)");
        Operator {
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILL: no chance to clean up.
    pub fn crash(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }

    /// SIGTERM, then wait for a graceful stop.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()
            .ok();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        c.kill().ok();
        c.wait().ok()
    }

    /// How it ended, if it has (without waiting).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Where it serves /metrics, /healthz and /readyz (from its start-up log).
    pub fn metrics_addr(&self) -> String {
        wait_for(
            "the operator to report its metrics address",
            Duration::from_secs(30),
            || {
                let log = self.log_text();
                log.split("metrics=").nth(1).map(|rest| {
                    rest.split_whitespace()
                        .next()
                        .unwrap()
                        .trim_matches('"')
                        .to_string()
                })
            },
        )
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "--- operator log ({}):\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A plain HTTP/1.1 GET; the whole response, head and body.
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}
