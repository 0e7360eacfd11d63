//! `firedrill stand-down`: end every running drill and make sure every zone
//! is lit again, before the operator goes away (the chart's pre-delete hook
//! runs it on `helm uninstall`, while the operator and its RBAC still exist).
//!
//! Each running drill is asked to abort (the abort annotation), so the
//! operator restores its zone and ends it Aborted as it would for any abort.
//! Drills that have not ended by the deadline, or that no operator is left to
//! end, are restored here from the traces on the nodes (the same restore the
//! operator runs) and marked Aborted; traces of drills that no longer exist
//! are restored too. Progress is printed a line at a time.

use crate::api::{ABORT_ANNOTATION, DataCenterFailure, Phase};
use crate::fault::mark::Experiment;
use crate::fault::node::traced_nodes;
use crate::restore;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How a stand-down runs.
pub struct Options {
    /// Why the drills are ended (the abort annotation's value).
    pub reason: String,
    /// How long to wait for the operator to end the drills before restoring
    /// their nodes here.
    pub timeout: Duration,
    /// How often to look again (and print a progress line).
    pub poll: Duration,
    /// Node patches in flight at once in a restore done here.
    pub concurrency: usize,
}

/// What a stand-down did.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    /// Drills asked to abort.
    pub aborted: Vec<String>,
    /// Drills the operator ended in time (Aborted, or ended on their own).
    pub ended: Vec<String>,
    /// Drills restored here and marked Aborted because no operator ended them in time.
    pub restored_here: Vec<String>,
    /// Nodes restored here (of drills restored here, or of drills that no longer exist).
    pub nodes_restored: Vec<String>,
}

/// The phase of a drill; a drill without a status has not started (Pending).
fn phase(d: &DataCenterFailure) -> Phase {
    d.status
        .as_ref()
        .and_then(|s| s.phase)
        .unwrap_or(Phase::Pending)
}

/// The drills still running (not in a terminal phase), by uid, with their name.
pub fn running(drills: &[DataCenterFailure]) -> BTreeMap<String, String> {
    drills
        .iter()
        .filter(|d| !phase(d).is_terminal())
        .map(|d| (d.uid().unwrap_or_default(), d.name_any()))
        .collect()
}

/// The running drills not yet asked to abort.
pub fn to_abort(drills: &[DataCenterFailure]) -> Vec<String> {
    drills
        .iter()
        .filter(|d| !phase(d).is_terminal() && !d.annotations().contains_key(ABORT_ANNOTATION))
        .map(ResourceExt::name_any)
        .collect()
}

/// One progress line: the drills still waited for, with their phases.
pub fn progress_line(waiting: &[(String, Phase)], elapsed: Duration, timeout: Duration) -> String {
    let names: Vec<String> = waiting.iter().map(|(n, p)| format!("{n} ({p})")).collect();
    format!(
        "[{:>3}s/{}s] waiting for {} drill(s) to be restored and end: {}",
        elapsed.as_secs(),
        timeout.as_secs(),
        waiting.len(),
        names.join(", ")
    )
}

/// List the drills; none when their CRD is not installed.
async fn list(api: &Api<DataCenterFailure>) -> kube::Result<Vec<DataCenterFailure>> {
    match api.list(&ListParams::default()).await {
        Ok(l) => Ok(l.items),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(vec![]),
        Err(e) => Err(e),
    }
}

/// End every running drill and restore every zone; see the module's doc.
pub async fn stand_down(client: &Client, opts: &Options) -> anyhow::Result<Outcome> {
    let api = Api::<DataCenterFailure>::all(client.clone());
    let started = Instant::now();
    let mut out = Outcome::default();
    // uid -> name of every drill waited for.
    let mut waited: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let drills = list(&api).await?;
        // New drills too (a schedule may start one while this runs).
        for name in to_abort(&drills) {
            let patch = json!({"metadata": {"annotations": {ABORT_ANNOTATION: opts.reason}}});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    println!("{name}: asked to abort ({})", opts.reason);
                    out.aborted.push(name);
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        let now_running = running(&drills);
        for (uid, name) in &now_running {
            waited.entry(uid.clone()).or_insert_with(|| name.clone());
        }
        for (uid, name) in &waited {
            if !now_running.contains_key(uid) && !out.ended.contains(name) {
                let how = drills
                    .iter()
                    .find(|d| d.uid().as_deref() == Some(uid.as_str()))
                    .map(|d| phase(d).to_string())
                    .unwrap_or_else(|| "deleted".into());
                println!("{name}: ended ({how})");
                out.ended.push(name.clone());
            }
        }
        if now_running.is_empty() {
            break;
        }
        if started.elapsed() >= opts.timeout {
            break;
        }
        let waiting: Vec<(String, Phase)> = drills
            .iter()
            .filter(|d| now_running.contains_key(&d.uid().unwrap_or_default()))
            .map(|d| (d.name_any(), phase(d)))
            .collect();
        println!(
            "{}",
            progress_line(&waiting, started.elapsed(), opts.timeout)
        );
        tokio::time::sleep(opts.poll).await;
    }

    // The last resort: drills no operator ended in time are restored here,
    // by every trace they left, and marked Aborted.
    let drills = list(&api).await?;
    for d in drills.iter().filter(|d| !phase(d).is_terminal()) {
        let name = d.name_any();
        println!(
            "{name}: not ended by an operator within {}s ({}); restoring its nodes here",
            opts.timeout.as_secs(),
            phase(d)
        );
        let exp = Experiment::of(d);
        let n = restore::restore(client, &exp, opts.concurrency).await?;
        let why = format!(
            "{}; no operator ended the drill within {}s, so `firedrill stand-down` restored {n} node(s)",
            opts.reason,
            opts.timeout.as_secs()
        );
        let status = json!({"status": {
            "phase": "Aborted",
            "reason": why,
            "abortReason": opts.reason,
        }});
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
        println!("{name}: {n} node(s) restored here; marked Aborted");
        out.restored_here.push(name);
    }
    // Traces no running drill accounts for: of drills that no longer exist
    // (restore_orphans), and of ended drills whose restore left something.
    let mut traced = traced_nodes(client).await?;
    if !traced.is_empty() {
        for name in restore::restore_orphans(client, true).await? {
            println!("{name}: restored (its drill no longer exists)");
            out.nodes_restored.push(name);
        }
        for d in &drills {
            let n = restore::restore(client, &Experiment::of(d), opts.concurrency).await?;
            if n > 0 {
                println!("{}: {n} more node(s) of it restored here", d.name_any());
            }
        }
        traced = traced_nodes(client).await?;
    }
    if !traced.is_empty() {
        let names: Vec<String> = traced.iter().map(ResourceExt::name_any).collect();
        anyhow::bail!(
            "nodes still carry firedrill's marks or taint: {}",
            names.join(", ")
        );
    }
    println!(
        "stand-down done in {:.1}s: {} drill(s) asked to abort, {} ended by the operator, {} restored here; no node carries firedrill's marks or taint",
        started.elapsed().as_secs_f64(),
        out.aborted.len(),
        out.ended.len(),
        out.restored_here.len()
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::DataCenterFailureStatus;

    fn drill(name: &str, phase: Option<Phase>, aborted: bool) -> DataCenterFailure {
        let mut d: DataCenterFailure = serde_json::from_value(json!({
            "apiVersion": "chaos.firedrill.dev/v1alpha1",
            "kind": "DataCenterFailure",
            "metadata": {"name": name, "uid": format!("uid-{name}")},
            "spec": {"zone": "zone-a", "duration": "1m"},
        }))
        .unwrap();
        if aborted {
            d.metadata.annotations =
                Some([(ABORT_ANNOTATION.to_string(), "earlier".to_string())].into());
        }
        d.status = phase.map(|p| DataCenterFailureStatus {
            phase: Some(p),
            ..Default::default()
        });
        d
    }

    #[test]
    fn every_drill_not_ended_is_aborted_once_and_waited_for() {
        let drills = vec![
            drill("new", None, false),
            drill("dark", Some(Phase::ZoneDown), false),
            drill("asked", Some(Phase::Restoring), true),
            drill("done", Some(Phase::Completed), false),
            drill("failed", Some(Phase::Failed), false),
            drill("aborted", Some(Phase::Aborted), true),
        ];
        assert_eq!(to_abort(&drills), vec!["new", "dark"]);
        let waited: Vec<String> = running(&drills).into_values().collect();
        assert_eq!(waited, vec!["asked", "dark", "new"], "by uid");
        // One being deleted is waited for until it is gone: its operator's
        // finalizer restores it, and only then may the operator go.
        let mut deleting = drill("deleting", Some(Phase::ZoneDown), true);
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        let waited: Vec<String> = running(&[deleting]).into_values().collect();
        assert_eq!(waited, vec!["deleting"]);
    }

    #[test]
    fn a_progress_line_names_each_drill_and_its_phase() {
        let line = progress_line(
            &[
                ("dark".into(), Phase::ZoneDown),
                ("other".into(), Phase::Restoring),
            ],
            Duration::from_secs(4),
            Duration::from_secs(150),
        );
        assert_eq!(
            line,
            "[  4s/150s] waiting for 2 drill(s) to be restored and end: dark (ZoneDown), other (Restoring)"
        );
    }
}
