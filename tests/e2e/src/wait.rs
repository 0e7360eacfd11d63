//! Polling: for any condition, and for a DataCenterFailure's phase or end.

use crate::cluster::dcf_field;
use crate::kubectl::kubectl;
use std::time::{Duration, Instant};

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

/// Wait until the experiment reaches `phase`.
pub fn wait_phase(name: &str, phase: &str, timeout: Duration) {
    let mut last = String::new();
    let deadline = Instant::now() + timeout;
    loop {
        let now = dcf_field(name, ".status.phase");
        if now == phase {
            return;
        }
        if now != last {
            last = now;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {name} to reach {phase}; it is {last:?}: {}",
            dcf_field(name, ".status.reason")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `kubectl wait --for=condition=Completed` on a DataCenterFailure, as a
/// pipeline would; panics if it does not end in time.
pub fn wait_completed(name: &str, timeout_secs: u64) {
    kubectl(
        &[
            "wait",
            "--for=condition=Completed",
            &format!("dcf/{name}"),
            &format!("--timeout={timeout_secs}s"),
        ],
        None,
    )
    .expect_ok(&format!("kubectl wait: {name} Completed"));
}
