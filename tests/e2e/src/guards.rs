//! Guards: the lock that keeps tests from disturbing one another's drills,
//! and objects that are undone when the test ends, pass or fail.

use crate::kubectl::{kubectl, kubectl_json};
use crate::manifests::kwok_node_yaml;
use crate::wait::wait_for;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Serializes the tests that change nodes with the tests that need every zone
/// schedulable, within one test binary.
pub fn zones_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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

/// Deletes a DataCenterFailure when the test ends and waits until it is gone
/// (its finalizer restores the zone), so the next test starts clean.
pub struct Experiment(pub String);

impl Drop for Experiment {
    fn drop(&mut self) {
        kubectl(
            &[
                "delete",
                "dcf",
                &self.0,
                "--ignore-not-found",
                "--wait=true",
                "--timeout=60s",
            ],
            None,
        );
    }
}

/// Uncordons, when the test ends, nodes the test itself cordoned.
pub struct AdminCordon(pub Vec<String>);

impl AdminCordon {
    pub fn cordon(nodes: &[String]) -> Self {
        for n in nodes {
            kubectl(&["cordon", n], None).expect_ok("kubectl cordon");
        }
        AdminCordon(nodes.to_vec())
    }
}

impl Drop for AdminCordon {
    fn drop(&mut self) {
        for n in &self.0 {
            kubectl(&["uncordon", n], None);
        }
    }
}

/// A node added for one test, deleted when the test ends.
pub struct ExtraNode(pub String);

impl ExtraNode {
    pub fn add(name: &str, zone: &str) -> Self {
        kubectl(
            &["apply", "--server-side", "-f", "-"],
            Some(&kwok_node_yaml(name, zone)),
        )
        .expect_ok("adding a node");
        // Ready, and the node lifecycle controller's start-up taint gone.
        wait_for(
            "the new node Ready and untainted",
            Duration::from_secs(60),
            || {
                let n = kubectl_json(&["get", "node", name]);
                let ready = n["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                });
                let untainted = n["spec"]["taints"].as_array().is_none_or(|t| t.is_empty());
                (ready && untainted).then_some(())
            },
        );
        ExtraNode(name.to_string())
    }
}

impl Drop for ExtraNode {
    fn drop(&mut self) {
        kubectl(
            &[
                "delete",
                "node",
                &self.0,
                "--ignore-not-found",
                "--wait=false",
            ],
            None,
        );
    }
}
