//! Processes for the pods of KWOK nodes, as a container runtime would run
//! them. A pod labelled `testbed.firedrill.dev/serve=true` gets a test
//! server (`firedrill-testbed serve`) on its pod IP's loopback address once
//! KWOK has made it Running; it turns Ready only once that process answers;
//! the process is killed the moment the pod is deleted.
//!
//! Annotations configure the process: `testbed.firedrill.dev/port` (8080),
//! `testbed.firedrill.dev/depends-on` (comma-separated URLs, by Service
//! name), `testbed.firedrill.dev/startup` (how long it takes to start).
//! The process also depends on what the pod's containers carry as an
//! application would: every env var named `*_URL` whose value is an
//! `http://` URL (`TOKENS_URL=http://tokens.fleet.svc/healthz`).
//! A member of a stateful store (see `store.rs`):
//! `testbed.firedrill.dev/store` (its name; its records are kept in a file
//! named after the namespace, the store and the role, so they outlive the
//! pod), `testbed.firedrill.dev/store-role` (`primary` or `standby`),
//! `testbed.firedrill.dev/store-peer` (the other member's URL, by Service
//! name), `testbed.firedrill.dev/replication` (`sync`, `async:2s`).
//! A stateless server in front of a store: `testbed.firedrill.dev/store-url`
//! (the store's URL, by Service name; `/records` requests are passed on to it).

use crate::power::PoweredOff;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const SERVE_LABEL: &str = "testbed.firedrill.dev/serve";
const PORT: &str = "testbed.firedrill.dev/port";
const DEPENDS: &str = "testbed.firedrill.dev/depends-on";
const STARTUP: &str = "testbed.firedrill.dev/startup";
const STORE: &str = "testbed.firedrill.dev/store";
const STORE_ROLE: &str = "testbed.firedrill.dev/store-role";
const STORE_PEER: &str = "testbed.firedrill.dev/store-peer";
const REPLICATION: &str = "testbed.firedrill.dev/replication";
const STORE_URL: &str = "testbed.firedrill.dev/store-url";

struct Proc {
    child: std::process::Child,
    node: String,
    addr: String,
    pod: String,
    pid_file: PathBuf,
}

/// The running processes, by pod uid.
#[derive(Clone)]
pub struct Processes {
    procs: Arc<Mutex<HashMap<String, Proc>>>,
    marking: Arc<Mutex<HashSet<String>>>,
    dir: PathBuf,
    /// Where the list of processes is written (`ADDRESS:PORT namespace/name`).
    listing: Arc<Mutex<Option<PathBuf>>>,
}

fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

impl Processes {
    pub fn new(dir: PathBuf) -> Self {
        let _ = std::fs::create_dir_all(&dir);
        Processes {
            procs: Arc::default(),
            marking: Arc::default(),
            dir,
            listing: Arc::default(),
        }
    }

    /// Rewrite the list of running processes.
    fn write_listing(&self) {
        let Some(path) = self.listing.lock().unwrap().clone() else {
            return;
        };
        let mut text = String::new();
        for p in self.procs.lock().unwrap().values() {
            text.push_str(&format!("{} {}\n", p.addr, p.pod));
        }
        let tmp = path.with_extension("tmp");
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(tmp, path);
        }
    }

    /// Kill the processes a previous data plane left (their pid files).
    pub fn kill_leftovers(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            if let Some(pid) = std::fs::read_to_string(e.path())
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
            {
                let ours = std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.contains("serve"));
                if ours {
                    signal(pid, "KILL");
                }
            }
            let _ = std::fs::remove_file(e.path());
        }
    }

    pub fn kill_all(&self) {
        let uids: Vec<String> = self.procs.lock().unwrap().keys().cloned().collect();
        for uid in uids {
            self.kill(&uid);
        }
    }

    fn kill(&self, uid: &str) {
        let gone = self.procs.lock().unwrap().remove(uid);
        if let Some(mut p) = gone {
            let _ = p.child.kill();
            let _ = p.child.wait();
            let _ = std::fs::remove_file(&p.pid_file);
            tracing::info!(pod = %p.pod, addr = %p.addr, "process killed");
            self.write_listing();
        }
    }

    /// Stop (SIGSTOP) or continue (SIGCONT) every process on `node`.
    pub fn freeze_node(&self, node: &str, frozen: bool) {
        for p in self
            .procs
            .lock()
            .unwrap()
            .values()
            .filter(|p| p.node == node)
        {
            signal(p.child.id(), if frozen { "STOP" } else { "CONT" });
        }
    }
}

/// Run processes for served pods until cancelled.
pub async fn run(
    client: Client,
    procs: Processes,
    hosts: PathBuf,
    powered_off: PoweredOff,
    listing: PathBuf,
) -> anyhow::Result<()> {
    *procs.listing.lock().unwrap() = Some(listing);
    procs.write_listing();
    let api = Api::<Pod>::all(client.clone());
    let cfg = watcher::Config::default().labels(&format!("{SERVE_LABEL}=true"));
    let mut events = std::pin::pin!(watcher(api, cfg).backoff(crate::QuickBackoff::default()));
    while let Some(ev) = events.next().await {
        match ev {
            Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                sync(&client, &procs, &hosts, &powered_off, &p)
            }
            Ok(watcher::Event::Delete(p)) => procs.kill(&p.uid().unwrap_or_default()),
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "pod watch error; it retries"),
        }
    }
    Ok(())
}

fn sync(client: &Client, procs: &Processes, hosts: &PathBuf, powered_off: &PoweredOff, p: &Pod) {
    let uid = p.uid().unwrap_or_default();
    let status = p.status.clone().unwrap_or_default();
    if p.metadata.deletion_timestamp.is_some() {
        procs.kill(&uid);
        return;
    }
    let Some(ip) = status.pod_ip.clone() else {
        return;
    };
    if status.phase.as_deref() != Some("Running") {
        return;
    }
    let Some(addr_ip) = crate::loopback_of(&ip) else {
        return;
    };
    let node = p
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default();
    let port: u16 = p
        .annotations()
        .get(PORT)
        .and_then(|v| v.parse().ok())
        .unwrap_or(8080);
    let addr = format!("{addr_ip}:{port}");
    let started = procs.procs.lock().unwrap().contains_key(&uid);
    if !started {
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.arg("serve")
            .arg("--listen")
            .arg(&addr)
            .arg("--name")
            .arg(format!(
                "{}/{}",
                p.namespace().unwrap_or_default(),
                p.name_any()
            ))
            .arg("--hosts")
            .arg(hosts);
        for url in depends_on(p) {
            cmd.arg("--depends").arg(url);
        }
        if let Some(s) = p.annotations().get(STARTUP) {
            cmd.arg("--startup").arg(s);
        }
        if let Some(url) = p.annotations().get(STORE_URL) {
            cmd.arg("--store-url").arg(url);
        }
        if let Some(store) = p.annotations().get(STORE) {
            let role = p
                .annotations()
                .get(STORE_ROLE)
                .cloned()
                .unwrap_or_else(|| "primary".into());
            let dir = procs.dir.join("stores");
            let _ = std::fs::create_dir_all(&dir);
            let file = format!("{}-{store}-{role}", p.namespace().unwrap_or_default());
            cmd.arg("--store-role")
                .arg(&role)
                .arg("--data")
                .arg(dir.join(file));
            if let Some(peer) = p.annotations().get(STORE_PEER) {
                cmd.arg("--store-peer").arg(peer);
            }
            if let Some(r) = p.annotations().get(REPLICATION) {
                cmd.arg("--replication").arg(r);
            }
        }
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        match cmd.spawn() {
            Ok(child) => {
                let pid_file = procs.dir.join(&uid);
                let _ = std::fs::write(&pid_file, child.id().to_string());
                tracing::info!(pod = %format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()), %addr, pid = child.id(), "process started");
                if powered_off.contains(&node) {
                    crate::runtime::signal(child.id(), "STOP");
                }
                procs.procs.lock().unwrap().insert(
                    uid.clone(),
                    Proc {
                        child,
                        node: node.clone(),
                        addr: addr.clone(),
                        pod: format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()),
                        pid_file,
                    },
                );
                procs.write_listing();
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a pod's process");
                return;
            }
        }
    }
    let ready = status
        .conditions
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if ready || powered_off.contains(&node) || !procs.marking.lock().unwrap().insert(uid.clone()) {
        return;
    }
    // Ready once the process answers.
    let (client, procs, ns, name) = (
        client.clone(),
        procs.clone(),
        p.namespace().unwrap_or_default(),
        p.name_any(),
    );
    tokio::spawn(async move {
        let url = format!("http://{addr}/healthz");
        let empty = HashMap::new();
        for _ in 0..1200 {
            if !procs.procs.lock().unwrap().contains_key(&uid) {
                break;
            }
            if let Ok(Ok(_)) = tokio::time::timeout(
                Duration::from_secs(2),
                crate::serve::get_status(&url, &empty),
            )
            .await
            {
                if let Err(e) = mark_ready(&client, &ns, &name).await {
                    tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "cannot mark the pod Ready");
                } else {
                    tracing::info!(pod = %format!("{ns}/{name}"), "Ready: its process answers");
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        procs.marking.lock().unwrap().remove(&uid);
    });
}

/// Set the pod's Ready and ContainersReady conditions, and its containers ready.
async fn mark_ready(client: &Client, ns: &str, name: &str) -> anyhow::Result<()> {
    let api = Api::<Pod>::namespaced(client.clone(), ns);
    let pod = api.get_status(name).await?;
    let now = k8s_openapi::jiff::Timestamp::now();
    let mut conditions = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    for kind in ["Ready", "ContainersReady"] {
        match conditions.iter_mut().find(|c| c.type_ == kind) {
            Some(c) if c.status != "True" => {
                c.status = "True".into();
                c.reason = None;
                c.message = None;
                c.last_transition_time =
                    Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
            }
            Some(_) => {}
            None => conditions.push(k8s_openapi::api::core::v1::PodCondition {
                type_: kind.into(),
                status: "True".into(),
                last_transition_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    now,
                )),
                ..Default::default()
            }),
        }
    }
    let mut containers = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    for c in &mut containers {
        c.ready = true;
    }
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(
            &json!({"status": {"conditions": conditions, "containerStatuses": containers}}),
        ),
    )
    .await?;
    Ok(())
}

/// The URLs a pod's process depends on: its depends-on annotation's, and
/// the `http://` values of its containers' `*_URL` env vars.
fn depends_on(p: &Pod) -> Vec<String> {
    let mut urls: Vec<String> = p
        .annotations()
        .get(DEPENDS)
        .map(|d| {
            d.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let containers = p.spec.iter().flat_map(|s| &s.containers);
    for e in containers.flat_map(|c| c.env.iter().flatten()) {
        if let Some(v) = e.value.as_deref()
            && e.name.ends_with("_URL")
            && v.starts_with("http://")
            && !urls.iter().any(|u| u == v)
        {
            urls.push(v.to_string());
        }
    }
    urls
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_depends_on_its_annotation_and_its_url_env_vars() {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "gw", "annotations": {DEPENDS: "http://a.x.svc/healthz, http://b.x.svc"}},
            "spec": {"containers": [{"name": "c", "env": [
                {"name": "TOKENS_URL", "value": "http://tokens.fleet.svc/healthz"},
                {"name": "B_URL", "value": "http://b.x.svc"},
                {"name": "NOTE", "value": "http://never.x.svc"},
                {"name": "TLS_URL", "value": "https://elsewhere.example"}
            ]}]}
        }))
        .unwrap();
        assert_eq!(
            depends_on(&p),
            [
                "http://a.x.svc/healthz",
                "http://b.x.svc",
                "http://tokens.fleet.svc/healthz"
            ]
        );
    }
}
