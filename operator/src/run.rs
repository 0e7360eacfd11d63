//! `firedrill run` and `firedrill report`: the release-pipeline gate.
//!
//! Exit codes: 0 Passed, 1 Failed, 2 Aborted or Inconclusive, 3 usage error
//! or cluster unreachable.

use crate::api::{ABORT_ANNOTATION, DataCenterFailure, Phase, Verdict};
use crate::probe::{self, Recording};
use crate::report;
use crate::slo::Outcome;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const EXIT_PASSED: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_ABORTED: u8 = 2;
pub const EXIT_USAGE: u8 = 3;

/// Where to write reports.
#[derive(Clone, Debug, Default)]
pub struct Outputs {
    pub junit: Option<PathBuf>,
    pub json: Option<PathBuf>,
    pub html: Option<PathBuf>,
}

/// A failure that maps to exit code 3.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The exit code for a finished experiment.
pub fn exit_code(exp: &DataCenterFailure) -> u8 {
    let st = exp.status.clone().unwrap_or_default();
    match (st.phase, st.verdict) {
        (Some(Phase::Completed), Some(Verdict::Passed) | None) => EXIT_PASSED,
        (Some(Phase::Completed), Some(Verdict::Failed)) => EXIT_FAILED,
        // A guard SLO breach or a failed critical SLO measured before an abort is still a failure.
        (Some(Phase::Aborted), Some(Verdict::Failed)) => EXIT_FAILED,
        _ => EXIT_ABORTED,
    }
}

/// Read an experiment from a YAML file (`-` for standard input).
pub fn read_experiment(path: &str) -> Result<DataCenterFailure, UsageError> {
    let text = if path == "-" {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| UsageError(format!("reading standard input: {e}")))?
    } else {
        std::fs::read_to_string(path).map_err(|e| UsageError(format!("reading {path}: {e}")))?
    };
    let exp: DataCenterFailure = serde_yaml::from_str(&text)
        .map_err(|e| UsageError(format!("{path} is not a DataCenterFailure: {e}")))?;
    if exp.metadata.name.as_deref().unwrap_or("").is_empty() {
        return Err(UsageError(format!("{path}: metadata.name is required")));
    }
    Ok(exp)
}

/// The probe recording of an experiment, wherever the operator keeps it.
pub async fn recording(exp: &DataCenterFailure, client: &Client) -> Recording {
    crate::record::find_timeline(client, &exp.uid().unwrap_or_default()).await
}

/// Write the requested report files and return the terminal table.
pub fn write_reports(
    exp: &DataCenterFailure,
    rec: &Recording,
    out: &Outputs,
) -> anyhow::Result<String> {
    let input = report::Input::new(exp, rec);
    let mut written = vec![];
    if let Some(p) = &out.junit {
        std::fs::write(p, report::junit(&input))?;
        written.push(format!("JUnit: {}", p.display()));
    }
    if let Some(p) = &out.json {
        std::fs::write(
            p,
            serde_json::to_string_pretty(&report::json(&input))? + "\n",
        )?;
        written.push(format!("JSON: {}", p.display()));
    }
    if let Some(p) = &out.html {
        std::fs::write(p, report::html(&input))?;
        written.push(format!("HTML report: {}", p.display()));
    }
    let mut table = report::table(&input);
    for w in written {
        table.push_str(&format!("\n{w}"));
    }
    Ok(table)
}

/// Apply the experiment with server-side apply. A finished experiment of the
/// same name is replaced; a running one is followed.
pub async fn apply(client: &Client, exp: &DataCenterFailure) -> anyhow::Result<DataCenterFailure> {
    let api = Api::<DataCenterFailure>::all(client.clone());
    let name = exp.name_any();
    if let Some(old) = api.get_opt(&name).await? {
        let phase = old.status.as_ref().and_then(|s| s.phase);
        if phase.is_some_and(Phase::is_terminal) {
            eprintln!("{name}: replacing the finished run ({})", phase.unwrap());
            api.delete(&name, &DeleteParams::default()).await?;
            let deadline = Instant::now() + Duration::from_secs(120);
            while api.get_opt(&name).await?.is_some() {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "{name}: the finished run was not deleted within 2m (is the operator running?)"
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        } else if old.status.is_some() {
            if let Some(fields) = spec_differs(&old, exp) {
                return Err(UsageError(format!(
                    "{name}: a run of that name is in progress ({}) with a different spec ({fields} differ); its result would not be this file's. Wait for it to end, abort it (kubectl annotate datacenterfailure {name} {ABORT_ANNOTATION}='replaced'), or give this run another name",
                    phase.map(|p| p.to_string()).unwrap_or_default()
                ))
                .into());
            }
            eprintln!(
                "{name}: already running ({}); following it",
                phase.map(|p| p.to_string()).unwrap_or_default()
            );
            return Ok(old);
        }
    }
    let mut body = serde_json::to_value(exp)?;
    body["apiVersion"] = DataCenterFailure::api_version(&()).into();
    body["kind"] = DataCenterFailure::kind(&()).into();
    if let Some(m) = body["metadata"].as_object_mut() {
        for k in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "managedFields",
        ] {
            m.remove(k);
        }
    }
    body.as_object_mut().unwrap().remove("status");
    let applied = api
        .patch(
            &name,
            &PatchParams::apply("firedrill-cli"),
            &Patch::Apply(&body),
        )
        .await
        .map_err(|e| match e {
            kube::Error::Api(ae) if ae.code == 422 || ae.code == 400 => {
                anyhow::Error::new(UsageError(ae.message))
            }
            e => e.into(),
        })?;
    Ok(applied)
}

/// The spec fields (top level) in which `running` differs from `wanted`,
/// comma-separated; None when they are the same. Both are compared as the
/// operator reads them, defaults filled in.
pub fn spec_differs(running: &DataCenterFailure, wanted: &DataCenterFailure) -> Option<String> {
    let a = serde_json::to_value(&running.spec).unwrap_or_default();
    let b = serde_json::to_value(&wanted.spec).unwrap_or_default();
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return (a != b).then(|| "spec".to_string());
    };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let differ: Vec<String> = keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("spec.{k}"))
        .collect();
    (!differ.is_empty()).then(|| differ.join(", "))
}

/// One line (or screen) of progress.
fn progress(exp: &DataCenterFailure, rec: &Recording, started: Instant) -> Vec<String> {
    let st = exp.status.clone().unwrap_or_default();
    let phase = st
        .phase
        .map(|p| p.to_string())
        .unwrap_or_else(|| "Pending".into());
    let mut head = format!(
        "[{:>4}s] {} {phase}",
        started.elapsed().as_secs(),
        exp.name_any()
    );
    if let Some(f) = &st.fault {
        head.push_str(&format!(
            ": {} nodes cordoned, {} pods killed",
            f.nodes_cordoned, f.pods_killed
        ));
        if f.pods_rekilled > 0 {
            head.push_str(&format!(" (+{} re-killed)", f.pods_rekilled));
        }
    }
    let mut lines = vec![head];
    let now = probe::now_ms();
    for slo in &exp.spec.slos {
        let Some(tl) = rec.slos.get(&slo.name) else {
            lines.push(format!("    {:<16} waiting for samples", slo.name));
            continue;
        };
        let segs = tl.segments_until(now);
        let total: u64 = segs.iter().map(|g| g.counts.iter().sum::<u64>()).sum();
        let failed: u64 = segs.iter().map(|g| g.counts[1]).sum();
        let state = match tl.pending.map(|(_, o)| o) {
            Some(Outcome::Ok) => "healthy".to_string(),
            Some(Outcome::Fail) => {
                format!("FAILING for {:.0}s", tl.failing_for(now) as f64 / 1000.0)
            }
            Some(Outcome::Error) => format!(
                "probe cannot run: {}",
                tl.last_error.clone().unwrap_or_default()
            ),
            None => "waiting".into(),
        };
        lines.push(format!(
            "    {:<16} {state} ({failed}/{total} samples failed)",
            slo.name
        ));
    }
    lines
}

/// Follow an experiment to its end, printing progress; on Ctrl-C or timeout,
/// abort it and keep following until the zone is restored.
pub async fn follow(
    client: &Client,
    name: &str,
    timeout: Option<Duration>,
) -> anyhow::Result<DataCenterFailure> {
    let api = Api::<DataCenterFailure>::all(client.clone());
    let started = Instant::now();
    let mut printer = Printer {
        tty: std::io::stderr().is_terminal(),
        last: vec![],
        drawn: 0,
    };
    let mut aborting = false;
    let mut interrupts = 0;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let exp = api.get(name).await?;
        let done = exp
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(Phase::is_terminal);
        let rec = if exp.spec.slos.is_empty() {
            Recording::default()
        } else {
            recording(&exp, client).await
        };
        printer.show(progress(&exp, &rec, started));
        if done {
            return Ok(exp);
        }
        let timed_out = timeout.is_some_and(|t| started.elapsed() > t);
        if timed_out && !aborting {
            eprintln!(
                "{name}: timed out after {:?}; aborting and waiting for the zone to be restored",
                timeout.unwrap()
            );
            request_abort(&api, name, "firedrill run --timeout expired").await?;
            aborting = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = &mut ctrl_c => {
                interrupts += 1;
                if interrupts > 1 {
                    anyhow::bail!("{name}: interrupted twice; not waiting for the restore (the operator still restores the zone)");
                }
                eprintln!("\n{name}: interrupted; aborting and waiting for the zone to be restored (Ctrl-C again to stop waiting)");
                request_abort(&api, name, "interrupted (firedrill run)").await?;
                aborting = true;
                ctrl_c.set(tokio::signal::ctrl_c());
            }
        }
    }
}

/// Prints the progress block on standard error.
struct Printer {
    /// A terminal: the block is redrawn in place.
    tty: bool,
    /// The block printed last.
    last: Vec<String>,
    /// How many lines the terminal shows of it.
    drawn: usize,
}

impl Printer {
    fn show(&mut self, lines: Vec<String>) {
        if self.tty {
            // Redraw the block in place.
            let mut out = String::new();
            if self.drawn > 0 {
                out.push_str(&format!("\x1b[{}A", self.drawn));
            }
            for l in &lines {
                out.push_str(&format!("\x1b[2K{l}\n"));
            }
            eprint!("{out}");
            self.drawn = lines.len();
        } else if changes(&lines) != changes(&self.last) {
            // Plain lines, only when the phase, the fault counts or an SLO's
            // state changes (not for every new sample).
            for l in &lines {
                eprintln!("{l}");
            }
        }
        self.last = lines;
    }
}

/// What of the progress lines counts as a change: each line without its
/// elapsed time, sample counts and durations.
fn changes(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            let l = l.split_once("] ").map(|x| x.1).unwrap_or(l);
            let l = l.split(" (").next().unwrap_or(l);
            l.split(" for ").next().unwrap_or(l).to_string()
        })
        .collect()
}

async fn request_abort(api: &Api<DataCenterFailure>, name: &str, why: &str) -> kube::Result<()> {
    let patch = serde_json::json!({"metadata": {"annotations": {ABORT_ANNOTATION: why}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exp(v: serde_json::Value) -> DataCenterFailure {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "chaos.firedrill.dev/v1alpha1", "kind": "DataCenterFailure",
            "metadata": {"name": "gate"}, "spec": v
        }))
        .unwrap()
    }

    fn spec(duration: &str) -> serde_json::Value {
        serde_json::json!({"zone": "zone-a", "duration": duration,
            "slos": [{"name": "login", "recoveryTimeObjective": "30s",
                      "probe": {"tcp": {"host": "login", "port": 80}}}]})
    }

    #[test]
    fn a_running_experiment_with_another_spec_is_named_not_followed() {
        assert_eq!(spec_differs(&exp(spec("5m")), &exp(spec("5m"))), None);
        assert_eq!(
            spec_differs(&exp(spec("5m")), &exp(spec("10m"))).as_deref(),
            Some("spec.duration")
        );
        let mut other = spec("10m");
        other["zone"] = "zone-b".into();
        assert_eq!(
            spec_differs(&exp(spec("5m")), &exp(other)).as_deref(),
            Some("spec.duration, spec.zone")
        );
    }

    #[test]
    fn defaults_written_out_are_the_same_spec() {
        // The API server fills in defaults; a file that leaves them out asks
        // for the same run.
        let mut explicit = spec("5m");
        explicit["slos"][0]["interval"] = "1s".into();
        explicit["slos"][0]["maxErrorPercent"] = 10.0.into();
        assert_eq!(spec_differs(&exp(explicit), &exp(spec("5m"))), None);
    }
}
