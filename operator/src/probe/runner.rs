//! The runner: one task per SLO, timelines shared with the controller.

use super::{Env, Prober, now_ms};
use crate::api::DataCenterFailure;
use crate::canary::WriteLog;
use crate::slo::{Outcome, Timeline};
use crate::spec::Slo;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::AbortHandle;

/// Stored per experiment in the ConfigMap `firedrill-<name>`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Recording {
    pub slos: BTreeMap<String, Timeline>,
    /// Each watched Service's ready endpoints (`namespace/name`): Ok while
    /// it has one, Fail while it has none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub services: BTreeMap<String, Timeline>,
    /// The write probes' logs of acknowledged writes, by SLO.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub writes: BTreeMap<String, WriteLog>,
}

/// The probes of one experiment while they run.
pub struct Runner {
    pub timelines: BTreeMap<String, Arc<Mutex<Timeline>>>,
    /// The watched Services' ready endpoints.
    pub services: super::endpoints::Timelines,
    /// The write probes' logs, by SLO.
    pub writes: BTreeMap<String, Arc<Mutex<WriteLog>>>,
    /// Guard SLOs only act once the fault is in place: Unix ms, 0 = not armed.
    pub armed_at: Arc<AtomicI64>,
    tasks: Vec<AbortHandle>,
}

impl Drop for Runner {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Runner {
    /// Start probing every SLO of the experiment named `experiment` (uid
    /// `uid`), continuing `previous` timelines and write logs.
    pub fn start(
        client: &Client,
        experiment: &str,
        uid: &str,
        slos: &[Slo],
        previous: Recording,
        env: &Env,
        watched: super::endpoints::Watched,
    ) -> Runner {
        let armed_at = Arc::new(AtomicI64::new(0));
        let mut timelines = BTreeMap::new();
        let mut writes = BTreeMap::new();
        let mut tasks = vec![];
        for slo in slos {
            let mut kept = previous.slos.get(slo.name()).cloned().unwrap_or_default();
            kept.cap_ms = sample_cap(slo).as_millis() as i64;
            let tl = Arc::new(Mutex::new(kept));
            timelines.insert(slo.name().to_string(), tl.clone());
            let log = slo.spec.probe.write.is_some().then(|| {
                let interval = slo.interval.as_millis() as i64;
                let log = match previous.writes.get(slo.name()) {
                    Some(saved) => {
                        let mut log = saved.clone();
                        log.resume(interval, now_ms());
                        log
                    }
                    None => WriteLog::new(uid, interval, now_ms()),
                };
                let log = Arc::new(Mutex::new(log));
                writes.insert(slo.name().to_string(), log.clone());
                log
            });
            let task = tokio::spawn(run_slo(
                client.clone(),
                experiment.to_string(),
                slo.clone(),
                tl,
                log,
                armed_at.clone(),
                env.clone(),
            ));
            tasks.push(task.abort_handle());
        }
        let services = Arc::new(Mutex::new(previous.services));
        if !watched.is_empty() {
            let task = tokio::spawn(super::endpoints::run(
                client.clone(),
                watched,
                services.clone(),
            ));
            tasks.push(task.abort_handle());
        }
        Runner {
            timelines,
            services,
            writes,
            armed_at,
            tasks,
        }
    }

    /// A window edge at `t` (injection, start of the restore) on every SLO.
    pub fn mark(&self, t: i64) {
        for tl in self.timelines.values() {
            tl.lock().unwrap().mark(t);
        }
        for tl in self.services.lock().unwrap().values_mut() {
            tl.mark(t);
        }
    }

    pub fn recording(&self) -> Recording {
        Recording {
            slos: self
                .timelines
                .iter()
                .map(|(k, v)| (k.clone(), v.lock().unwrap().clone()))
                .collect(),
            services: self.services.lock().unwrap().clone(),
            writes: self
                .writes
                .iter()
                .map(|(k, v)| (k.clone(), v.lock().unwrap().clone()))
                .collect(),
        }
    }
}

/// The longest time one sample stands for: the longer of the interval and
/// the timeout (a probe that hangs delays the next one), plus one interval.
pub fn sample_cap(slo: &Slo) -> Duration {
    slo.interval.max(slo.timeout) + slo.interval
}

async fn run_slo(
    client: Client,
    experiment: String,
    slo: Slo,
    timeline: Arc<Mutex<Timeline>>,
    log: Option<Arc<Mutex<WriteLog>>>,
    armed_at: Arc<AtomicI64>,
    env: Env,
) {
    let interval = slo.interval.max(Duration::from_millis(100));
    let timeout = slo.timeout;
    let tolerance = slo.tolerance.map(|t| t.as_millis() as i64);
    let tripped = AtomicBool::new(false);
    let mut prober: Option<Prober> = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticker.tick().await;
        let at = now_ms();
        if prober.is_none() {
            match Prober::build(&slo.spec.probe, timeout, &client, &env, log.as_ref()).await {
                Ok(p) => prober = Some(p),
                Err(e) => {
                    let mut tl = timeline.lock().unwrap();
                    tl.push(at, Outcome::Error);
                    tl.set_error(e);
                    continue;
                }
            }
        }
        let p = prober.as_ref().unwrap();
        let (outcome, why) = match tokio::time::timeout(timeout, p.probe()).await {
            Ok(r) => r,
            Err(_) => (
                super::timeout_outcome(&slo.spec.probe),
                Some(format!("timed out after {timeout:?}")),
            ),
        };
        let failing_ms = {
            let mut tl = timeline.lock().unwrap();
            tl.push(at, outcome);
            if let Some(why) = why {
                tl.set_error(why);
            }
            tl.failing_for(now_ms())
        };
        // A guard SLO ends the fault once breached past its tolerance.
        let armed = armed_at.load(Ordering::Relaxed);
        if let Some(tol) = tolerance
            && armed > 0
            && outcome != Outcome::Ok
            && failing_ms > tol
            && now_ms() - armed > tol
            && !tripped.swap(true, Ordering::Relaxed)
        {
            request_abort(&client, &experiment, slo.name(), failing_ms, tol, &tripped).await;
        }
    }
}

/// Ask for the experiment's abort: a guard SLO `slo` has failed for
/// `failing_ms`, past its tolerance `tol`. If the request fails, `tripped` is
/// cleared so the next breached sample asks again.
async fn request_abort(
    client: &Client,
    experiment: &str,
    slo: &str,
    failing_ms: i64,
    tol: i64,
    tripped: &AtomicBool,
) {
    let why = format!(
        "guard SLO {} breached for {:.1}s (tolerance {}s)",
        slo,
        failing_ms as f64 / 1000.0,
        tol as f64 / 1000.0
    );
    tracing::warn!(experiment = %experiment, "{why}; aborting");
    let patch =
        serde_json::json!({"metadata": {"annotations": {crate::api::ABORT_ANNOTATION: why}}});
    if let Err(e) = Api::<DataCenterFailure>::all(client.clone())
        .patch(experiment, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        tracing::error!(experiment = %experiment, error = %e, "cannot request the abort for a breached guard");
        tripped.store(false, Ordering::Relaxed);
    }
}
