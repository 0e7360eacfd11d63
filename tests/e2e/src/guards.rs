//! Guards: the lock that keeps tests from disturbing one another's drills,
//! and objects that are undone when the test ends, pass or fail.

use crate::kubectl::{kubectl, kubectl_json};
use crate::manifests::kwok_node_yaml;
use crate::wait::wait_for;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

/// The testbed, as the tests share it: all of them run in one process.
static TESTBED: RwLock<()> = RwLock::new(());

/// The testbed to this test alone while the guard lives: no other test that
/// takes this lock or [`zones_lock_shared`] runs meanwhile.
///
/// Tests run in parallel threads of one process, whatever module they are
/// in. A test takes this lock when it changes nodes or other cluster-wide
/// state (cordons, taints, admission policies, the API server itself), runs
/// an operator, creates objects an operator would act on, lists or counts
/// things cluster-wide, needs every zone schedulable, or has timing that a
/// busy machine would upset.
pub fn zones_lock() -> RwLockWriteGuard<'static, ()> {
    TESTBED
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The testbed shared with the other tests that take this guard, and with
/// none that holds [`zones_lock`]: for a test that changes nothing a drill
/// could notice (an apply the API server refuses, a read-only plan, work on
/// local files) but must not run during one (while the API server is
/// stopped, or beside a drill's timing).
pub fn zones_lock_shared() -> RwLockReadGuard<'static, ()> {
    TESTBED
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A namespace that is deleted when the test ends, pass or fail. Named
/// `PREFIX-PID`: every test of the process uses a prefix of its own.
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
