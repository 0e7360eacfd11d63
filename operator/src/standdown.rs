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
//!
//! The API server being busy (429), failing (5xx) or out of reach is waited
//! out, every call tried again until the timeout plus [`RETRY_GRACE`]: an
//! uninstall should not stop because the API server blinked. Anything else
//! (a refusal, say) ends it at once, and the uninstall with it.

use crate::api::{ABORT_ANNOTATION, DataCenterFailure, Phase};
use crate::fault::mark::Experiment;
use crate::fault::node::traced_nodes;
use crate::restore;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

/// How long past its timeout a stand-down keeps trying calls that failed
/// for a transient reason (with the chart's 210 s timeout, within the 5 minutes
/// `helm uninstall` waits for a hook by default).
pub const RETRY_GRACE: Duration = Duration::from_secs(60);

/// Errors worth another try: the API server busy, failing or out of reach.
pub trait Transient {
    fn transient(&self) -> bool;
}

impl Transient for kube::Error {
    fn transient(&self) -> bool {
        match self {
            kube::Error::Api(e) => e.code == 429 || e.code >= 500,
            kube::Error::HyperError(_) | kube::Error::Service(_) => true,
            _ => false,
        }
    }
}

impl Transient for crate::Error {
    fn transient(&self) -> bool {
        matches!(self, crate::Error::Kube(e) if e.transient())
    }
}

/// `call` until it succeeds, fails for a reason that is not transient, or
/// `until` would pass; a line is printed for each retry.
pub async fn retrying<T, E, F, Fut>(
    what: &str,
    until: Instant,
    first_wait: Duration,
    mut call: F,
) -> Result<T, E>
where
    E: Transient + std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut wait = first_wait;
    loop {
        match call().await {
            Err(e) if e.transient() && Instant::now() + wait < until => {
                println!("{what}: {e}; trying again in {:.1}s", wait.as_secs_f64());
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            done => return done,
        }
    }
}

/// Whether a write to a drill took: a drill deleted meanwhile is no error.
fn unless_gone<T>(written: kube::Result<T>) -> kube::Result<bool> {
    match written {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

/// The first wait before a retry.
const FIRST_WAIT: Duration = Duration::from_millis(500);

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
    let until = started + opts.timeout + RETRY_GRACE;
    let list_drills = || retrying("listing the drills", until, FIRST_WAIT, || list(&api));
    let mut out = Outcome::default();
    // uid -> name of every drill waited for.
    let mut waited: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let drills = list_drills().await?;
        // New drills too (a schedule may start one while this runs).
        for name in to_abort(&drills) {
            let patch = json!({"metadata": {"annotations": {ABORT_ANNOTATION: opts.reason}}});
            let (pp, merge) = (PatchParams::default(), Patch::Merge(&patch));
            let asked = retrying(
                &format!("{name}: asking to abort"),
                until,
                FIRST_WAIT,
                || api.patch(&name, &pp, &merge),
            )
            .await;
            if unless_gone(asked)? {
                println!("{name}: asked to abort ({})", opts.reason);
                out.aborted.push(name);
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
    let drills = list_drills().await?;
    for d in drills.iter().filter(|d| !phase(d).is_terminal()) {
        let name = d.name_any();
        println!(
            "{name}: not ended by an operator within {}s ({}); restoring its nodes here",
            opts.timeout.as_secs(),
            phase(d)
        );
        let exp = Experiment::of(d);
        let n = retrying(&format!("{name}: restoring"), until, FIRST_WAIT, || {
            restore::restore(client, &exp, opts.concurrency)
        })
        .await?;
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
        let (pp, merge) = (PatchParams::default(), Patch::Merge(&status));
        let marked = retrying(
            &format!("{name}: marking Aborted"),
            until,
            FIRST_WAIT,
            || api.patch_status(&name, &pp, &merge),
        )
        .await;
        unless_gone(marked)?;
        println!("{name}: {n} node(s) restored here; marked Aborted");
        out.restored_here.push(name);
    }
    // Traces no running drill accounts for: of drills that no longer exist
    // (restore_orphans), and of ended drills whose restore left something.
    let traced_now = || {
        retrying("finding traced nodes", until, FIRST_WAIT, || {
            traced_nodes(client)
        })
    };
    let mut traced = traced_now().await?;
    if !traced.is_empty() {
        let orphans = retrying("restoring orphaned nodes", until, FIRST_WAIT, || {
            restore::restore_orphans(client, true)
        })
        .await?;
        for name in orphans {
            println!("{name}: restored (its drill no longer exists)");
            out.nodes_restored.push(name);
        }
        for d in &drills {
            let exp = Experiment::of(d);
            let n = retrying(
                &format!("{}: restoring", d.name_any()),
                until,
                FIRST_WAIT,
                || restore::restore(client, &exp, opts.concurrency),
            )
            .await?;
            if n > 0 {
                println!("{}: {n} more node(s) of it restored here", d.name_any());
            }
        }
        traced = traced_now().await?;
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

    fn status(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(
            serde_json::from_value(
                json!({"status": "Failure", "message": "m", "reason": "r", "code": code}),
            )
            .unwrap(),
        ))
    }

    #[test]
    fn busy_failing_and_unreachable_are_transient_refusals_are_not() {
        for code in [429, 500, 503, 504] {
            assert!(status(code).transient(), "{code}");
            assert!(crate::Error::Kube(status(code)).transient(), "{code}");
        }
        for code in [400, 401, 403, 404, 409, 422] {
            assert!(!status(code).transient(), "{code}");
        }
        assert!(!crate::Error::Spec("x".into()).transient());
    }

    #[tokio::test]
    async fn transient_failures_are_tried_again_and_a_refusal_is_not() {
        let far = Instant::now() + Duration::from_secs(60);
        let calls = std::cell::Cell::new(0);
        let got: Result<u32, kube::Error> = retrying("x", far, Duration::from_millis(1), || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move { if n < 3 { Err(status(503)) } else { Ok(n) } }
        })
        .await;
        assert_eq!(got.unwrap(), 3);

        calls.set(0);
        let got: Result<u32, kube::Error> = retrying("x", far, Duration::from_millis(1), || {
            calls.set(calls.get() + 1);
            async { Err(status(403)) }
        })
        .await;
        assert!(got.is_err());
        assert_eq!(calls.get(), 1, "a refusal is not tried again");

        // Past the deadline, the transient error is returned.
        calls.set(0);
        let soon = Instant::now() + Duration::from_millis(20);
        let got: Result<u32, kube::Error> = retrying("x", soon, Duration::from_millis(4), || {
            calls.set(calls.get() + 1);
            async { Err(status(500)) }
        })
        .await;
        assert!(got.is_err());
        assert!((2..=5).contains(&calls.get()), "{} calls", calls.get());
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
