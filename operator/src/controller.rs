//! The DataCenterFailure controller: the lifecycle state machine.
//!
//! Pending → Planning → Baseline → Injecting → ZoneDown → Restoring →
//! Completed (or Aborted / Failed). Progress lives in the object's status and
//! in the marks on the nodes, never only in memory: every step is idempotent,
//! so a restarted operator picks up wherever the last one stopped.

use crate::api::Verdict;
use crate::api::{
    ABORT_ANNOTATION, DataCenterFailure, DataCenterFailureStatus, FINALIZER, FaultStatus, Phase,
    PhaseTransition, parse_duration,
};
use crate::fault::{self, Experiment};
use crate::metrics::{ErrorLabel, METRICS, PhaseLabel, SloLabel, VerdictLabel};
use crate::plan::{self, Request, Scope, collect};
use crate::{Error, Result, restore};
use crate::{probe, verdict};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::AbortHandle;

/// The field manager for everything the operator writes.
pub const MANAGER: &str = "firedrill";

/// Operator settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// The operator's own namespace: its pods are never killed.
    pub namespace: Option<String>,
    /// Label selector of the operator's own pods, when it runs in the cluster
    /// (for the `protectOperator` guard).
    pub self_selector: Option<String>,
    /// API calls in flight at once for node patches and pod deletes.
    pub concurrency: usize,
    /// How long past `spec.duration` an experiment may take before it is
    /// ended and restored regardless.
    pub restore_grace: Duration,
    /// Pause between node changes while injecting (for rehearsing an operator
    /// crash in the middle of injection).
    pub inject_pause: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            namespace: None,
            self_selector: None,
            concurrency: 64,
            restore_grace: Duration::from_secs(120),
            inject_pause: None,
        }
    }
}

struct Keeper {
    handle: AbortHandle,
    rekilled: Arc<AtomicI64>,
}

/// Built once, shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub config: Config,
    keepers: Mutex<HashMap<String, Keeper>>,
    runners: Mutex<HashMap<String, probe::Runner>>,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, config: Config) -> Arc<Self> {
        let reporter = Reporter {
            controller: "firedrill".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Arc::new(Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            config,
            keepers: Mutex::default(),
            runners: Mutex::default(),
            failures: Mutex::default(),
        })
    }

    async fn event(&self, obj: &DataCenterFailure, type_: EventType, reason: &str, note: String) {
        publish(&self.recorder, &obj.object_ref(&()), type_, reason, note).await;
    }

    /// Where probe recordings are kept.
    fn recording_namespace(&self) -> String {
        self.config
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into())
    }

    fn with_runner<T>(&self, uid: &str, f: impl FnOnce(&probe::Runner) -> T) -> Option<T> {
        self.runners.lock().unwrap().get(uid).map(f)
    }

    async fn save_recording(&self, obj: &DataCenterFailure) {
        let Some(rec) = self.with_runner(&obj.uid().unwrap_or_default(), |r| r.recording()) else {
            return;
        };
        if let Err(e) = probe::save(&self.client, &self.recording_namespace(), obj, &rec).await {
            tracing::warn!(experiment = %obj.name_any(), error = %e, "cannot save the probe recording");
        }
    }

    /// Stop probing and save what was recorded.
    async fn stop_runner(&self, uid: &str, obj: &DataCenterFailure) {
        self.save_recording(obj).await;
        self.runners.lock().unwrap().remove(uid);
    }

    fn stop_keeper(&self, uid: &str) {
        if let Some(k) = self.keepers.lock().unwrap().remove(uid) {
            k.handle.abort();
        }
    }
}

/// Publish an Event through the one shared recorder. Notes over 1 kB are
/// rejected by the API server, so longer ones are cut.
pub(crate) async fn publish(
    recorder: &Recorder,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    reason: &str,
    mut note: String,
) {
    if note.len() > 1000 {
        let mut cut = 997;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
        note.push_str("...");
    }
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: reason.into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&ev, reference).await {
        tracing::warn!(error = %e, "cannot publish event");
    }
}

/// Record a finished restore of `n` nodes in the status.
fn record_restored(
    st: &mut DataCenterFailureStatus,
    n: i32,
    now: Timestamp,
    generation: Option<i64>,
) {
    let fs = st.fault.get_or_insert_with(FaultStatus::default);
    fs.nodes_restored += n;
    if n > 0 || fs.restored_at.is_none() {
        fs.restored_at = Some(MicroTime(now));
    }
    set_condition(
        st,
        "Restored",
        true,
        "Restored",
        &format!("{n} nodes restored"),
        now,
        generation,
    );
}

/// Run the controller until a shutdown signal.
pub async fn run(client: Client, config: Config) -> Result<()> {
    let restored = restore::restore_orphans(&client).await?;
    if !restored.is_empty() {
        tracing::warn!(nodes = ?restored, "restored nodes held by experiments that no longer exist");
    }
    let ctx = Context::new(client.clone(), config);
    crate::metrics::READY.store(true, std::sync::atomic::Ordering::Relaxed);
    let api = Api::<DataCenterFailure>::all(client.clone());
    let experiments = Controller::new(api, watcher::Config::default().any_semantic())
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(experiment = %obj.name, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "reconcile failed"),
            }
        });
    tokio::join!(experiments, crate::schedule::run(client.clone()));
    stand_down(&ctx).await;
    Ok(())
}

/// On a graceful shutdown, no zone is left dark without an operator watching
/// it: every experiment that holds nodes is restored and ends Aborted.
async fn stand_down(ctx: &Context) {
    let api = Api::<DataCenterFailure>::all(ctx.client.clone());
    let Ok(list) = api.list(&ListParams::default()).await else {
        tracing::error!(
            "shutting down: cannot list experiments; a restarted operator will restore them"
        );
        return;
    };
    for obj in list.items {
        let mut st = obj.status.clone().unwrap_or_default();
        let phase = st.phase.unwrap_or(Phase::Pending);
        if phase.is_terminal() {
            continue;
        }
        let uid = obj.uid().unwrap_or_default();
        ctx.stop_keeper(&uid);
        match restore::restore(&ctx.client, &obj.name_any(), &uid, ctx.config.concurrency).await {
            Ok(n) => {
                let now = Timestamp::now();
                record_restored(&mut st, n, now, obj.metadata.generation);
                finish(
                    &mut st,
                    Phase::Aborted,
                    "OperatorShutdown",
                    "the operator shut down during the experiment; the zone was restored",
                    now,
                    obj.metadata.generation,
                );
                if let Err(e) = write_status(&api, &obj.name_any(), &st).await {
                    tracing::error!(experiment = %obj.name_any(), error = %e, "cannot record the abort");
                }
                ctx.event(
                    &obj,
                    EventType::Warning,
                    "Aborted",
                    "operator shut down; zone restored".into(),
                )
                .await;
            }
            Err(e) => {
                tracing::error!(experiment = %obj.name_any(), error = %e, "shutting down: restore failed; a restarted operator will restore it")
            }
        }
    }
}

fn error_policy(obj: Arc<DataCenterFailure>, err: &Error, ctx: Arc<Context>) -> Action {
    let uid = obj.uid().unwrap_or_default();
    let n = {
        let mut f = ctx.failures.lock().unwrap();
        let n = f.entry(uid).or_default();
        *n += 1;
        *n
    };
    let delay = retry_delay(n);
    METRICS
        .reconcile_errors
        .get_or_create(&ErrorLabel {
            error: err.metric_label().into(),
        })
        .inc();
    tracing::warn!(experiment = %obj.name_any(), error = %err, attempt = n, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Wait before retry `n` (1-based) of a failed reconcile: 1 s doubling, capped
/// low because a failed restore is retried with it, and every minute of it is
/// a minute the zone stays dark for nothing.
fn retry_delay(n: u32) -> Duration {
    let delay = Duration::from_millis(500) * 2u32.saturating_pow(n.min(6));
    delay.min(Duration::from_secs(30))
}

pub async fn reconcile(obj: Arc<DataCenterFailure>, ctx: Arc<Context>) -> Result<Action> {
    let api = Api::<DataCenterFailure>::all(ctx.client.clone());
    let uid = obj.uid().unwrap_or_default();
    let action = finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Finalizer::Apply(obj) => apply(&obj, &ctx).await,
            Finalizer::Cleanup(obj) => cleanup(&obj, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))?;
    // A success starts the next failure's backoff from the beginning.
    ctx.failures.lock().unwrap().remove(&uid);
    Ok(action)
}

/// Deleted: stop keeping the zone dark and restore it. Works whatever the
/// phase, including when nothing was ever changed.
async fn cleanup(obj: &DataCenterFailure, ctx: &Context) -> Result<Action> {
    let uid = obj.uid().unwrap_or_default();
    ctx.stop_keeper(&uid);
    ctx.runners.lock().unwrap().remove(&uid);
    let n = restore::restore(&ctx.client, &obj.name_any(), &uid, ctx.config.concurrency).await?;
    if n > 0 {
        ctx.event(
            obj,
            EventType::Normal,
            "Restored",
            format!("experiment deleted: restored {n} nodes"),
        )
        .await;
    }
    ctx.failures.lock().unwrap().remove(&uid);
    Ok(Action::await_change())
}

fn enter(
    st: &mut DataCenterFailureStatus,
    phase: Phase,
    now: Timestamp,
    reason: impl Into<String>,
) {
    st.phase = Some(phase);
    st.reason = Some(reason.into());
    METRICS
        .phase_transitions
        .get_or_create(&PhaseLabel {
            phase: phase.to_string(),
        })
        .inc();
    st.transitions.push(PhaseTransition {
        phase,
        time: MicroTime(now),
    });
}

fn set_condition(
    st: &mut DataCenterFailureStatus,
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    now: Timestamp,
    generation: Option<i64>,
) {
    let status = if ok { "True" } else { "False" };
    if let Some(c) = st.conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status {
            c.last_transition_time = Time(now);
        }
        c.status = status.into();
        c.reason = reason.into();
        c.message = message.into();
        c.observed_generation = generation;
        return;
    }
    st.conditions.push(Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: Time(now),
        observed_generation: generation,
    });
}

/// Enter a terminal phase and mark the experiment Completed for `kubectl wait`.
fn finish(
    st: &mut DataCenterFailureStatus,
    phase: Phase,
    reason: &str,
    message: &str,
    now: Timestamp,
    generation: Option<i64>,
) {
    enter(st, phase, now, message);
    set_condition(st, "Completed", true, reason, message, now, generation);
    let outcome = st
        .verdict
        .map(|v| v.to_string())
        .unwrap_or_else(|| phase.to_string());
    METRICS
        .experiments
        .get_or_create(&VerdictLabel { verdict: outcome })
        .inc();
}

async fn write_status(
    api: &Api<DataCenterFailure>,
    name: &str,
    st: &DataCenterFailureStatus,
) -> Result<()> {
    let patch = json!({
        "apiVersion": "chaos.firedrill.dev/v1alpha1",
        "kind": "DataCenterFailure",
        "status": st,
    });
    api.patch_status(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// The parts of the spec that the schema cannot fully check.
struct Parsed {
    duration: Duration,
    scope: Scope,
}

fn parse_spec(obj: &DataCenterFailure, ctx: &Context) -> std::result::Result<Parsed, String> {
    let spec = &obj.spec;
    let duration = parse_duration(&spec.duration).map_err(|e| format!("spec.duration: {e}"))?;
    parse_duration(&spec.baseline).map_err(|e| format!("spec.baseline: {e}"))?;
    for slo in &spec.slos {
        for (field, value) in [
            ("interval", &slo.interval),
            ("timeout", &slo.timeout),
            ("recoveryTimeObjective", &slo.recovery_time_objective),
        ] {
            parse_duration(value).map_err(|e| format!("spec.slos[{}].{field}: {e}", slo.name))?;
        }
    }
    let scope = Scope::from_target(&spec.target, ctx.config.namespace.clone())?;
    Ok(Parsed { duration, scope })
}

fn zone_selector(obj: &DataCenterFailure) -> String {
    format!("{}={}", obj.spec.topology_key, obj.spec.zone)
}

async fn zone_nodes(client: &Client, obj: &DataCenterFailure) -> Result<Vec<String>> {
    let lp = ListParams::default().labels(&zone_selector(obj));
    Ok(Api::<Node>::all(client.clone())
        .list_metadata(&lp)
        .await?
        .items
        .into_iter()
        .map(|n| n.name_any())
        .collect())
}

fn abort_requested(obj: &DataCenterFailure) -> Option<String> {
    let value = obj.annotations().get(ABORT_ANNOTATION)?;
    let value = value.trim();
    Some(if value.is_empty() || value == "true" {
        format!("aborted by annotation {ABORT_ANNOTATION}")
    } else {
        format!("aborted: {value}")
    })
}

async fn apply(obj: &DataCenterFailure, ctx: &Context) -> Result<Action> {
    let api = Api::<DataCenterFailure>::all(ctx.client.clone());
    let name = obj.name_any();
    let uid = obj.uid().unwrap_or_default();
    let generation = obj.metadata.generation;
    let exp = Experiment {
        name: name.clone(),
        uid: uid.clone(),
    };
    let mut st = obj.status.clone().unwrap_or_default();
    st.observed_generation = generation;

    loop {
        let now = Timestamp::now();
        let phase = st.phase.unwrap_or(Phase::Pending);

        if phase.is_terminal() {
            // A safety net: a finished experiment holds no node.
            ctx.stop_keeper(&uid);
            ctx.runners.lock().unwrap().remove(&uid);
            let n = restore::restore(&ctx.client, &name, &uid, ctx.config.concurrency).await?;
            if n > 0 {
                ctx.event(
                    obj,
                    EventType::Warning,
                    "Restored",
                    format!("restored {n} nodes still held after the experiment ended"),
                )
                .await;
            }
            ctx.failures.lock().unwrap().remove(&uid);
            return Ok(Action::await_change());
        }

        if let Some(why) = abort_requested(obj) {
            match phase {
                Phase::Pending | Phase::Planning | Phase::Baseline => {
                    finish(
                        &mut st,
                        Phase::Aborted,
                        "Aborted",
                        &format!("{why}; nothing was changed"),
                        now,
                        generation,
                    );
                    write_status(&api, &name, &st).await?;
                    ctx.event(obj, EventType::Warning, "Aborted", why).await;
                    continue;
                }
                Phase::Injecting | Phase::ZoneDown => {
                    st.abort_reason = Some(why.clone());
                    enter(
                        &mut st,
                        Phase::Restoring,
                        now,
                        format!("{why}; restoring the zone"),
                    );
                    write_status(&api, &name, &st).await?;
                    ctx.event(obj, EventType::Warning, "Aborting", why).await;
                    continue;
                }
                _ => {}
            }
        }

        let parsed = match parse_spec(obj, ctx) {
            Ok(p) => p,
            Err(msg) if matches!(phase, Phase::Pending | Phase::Planning) => {
                finish(&mut st, Phase::Failed, "InvalidSpec", &msg, now, generation);
                write_status(&api, &name, &st).await?;
                ctx.event(obj, EventType::Warning, "InvalidSpec", msg).await;
                continue;
            }
            Err(msg) => return Err(Error::Spec(msg)),
        };

        // Timed out: the fault has lasted longer than it may.
        if matches!(phase, Phase::Injecting | Phase::ZoneDown)
            && let Some(injected) = st.fault.as_ref().and_then(|f| f.injected_at.as_ref())
        {
            let limit = parsed.duration + ctx.config.restore_grace;
            if elapsed(injected.0, now) > limit {
                let why = format!(
                    "timed out: the zone was down longer than duration + {}s grace",
                    ctx.config.restore_grace.as_secs()
                );
                st.abort_reason = Some(why.clone());
                enter(&mut st, Phase::Restoring, now, why.clone());
                write_status(&api, &name, &st).await?;
                ctx.event(obj, EventType::Warning, "TimedOut", why).await;
                continue;
            }
        }

        match phase {
            Phase::Pending => {
                enter(
                    &mut st,
                    Phase::Planning,
                    now,
                    format!("planning the loss of {}", obj.spec.zone),
                );
                write_status(&api, &name, &st).await?;
            }
            Phase::Planning => {
                let req = Request {
                    zone: obj.spec.zone.clone(),
                    topology_key: obj.spec.topology_key.clone(),
                    scope: parsed.scope.clone(),
                    guards: obj.spec.guards.clone(),
                };
                let opts = collect::Options {
                    measure_capacity: obj.spec.guards.require_capacity,
                    experiment: Some(name.clone()),
                    operator_pods: ctx
                        .config
                        .namespace
                        .clone()
                        .zip(ctx.config.self_selector.clone()),
                    concurrency: ctx.config.concurrency.min(collect::DEFAULT_CONCURRENCY),
                };
                let snap =
                    collect::snapshot(&ctx.client, &req.zone, &req.topology_key, &opts).await?;
                let p = plan::plan(&req, &snap);
                st.plan = Some(p.summary());
                if let Err(refusal) = plan::check_guards(&req, &p, &snap) {
                    let msg = format!("refused: {refusal}; nothing was changed");
                    finish(&mut st, Phase::Failed, "Refused", &msg, now, generation);
                    write_status(&api, &name, &st).await?;
                    ctx.event(obj, EventType::Warning, "Refused", refusal.0)
                        .await;
                    continue;
                }
                let planned = format!(
                    "{} nodes, {} pods in scope, {} workloads lose every replica, {} pods pinned to the zone",
                    p.nodes.len(),
                    p.pods_in_scope.len(),
                    p.lost_workloads.len(),
                    p.pinned.len()
                );
                ctx.event(obj, EventType::Normal, "Planned", planned.clone())
                    .await;
                if obj.spec.guards.dry_run {
                    finish(
                        &mut st,
                        Phase::Completed,
                        "DryRun",
                        &format!("dry run: {planned}; nothing was changed"),
                        now,
                        generation,
                    );
                } else {
                    enter(&mut st, Phase::Baseline, now, format!("planned: {planned}"));
                }
                write_status(&api, &name, &st).await?;
            }
            Phase::Baseline => {
                if !obj.spec.slos.is_empty() {
                    let started = phase_entered(&st, Phase::Baseline).unwrap_or(now);
                    let baseline = parse_duration(&obj.spec.baseline).unwrap_or_default();
                    ensure_runner(ctx, obj).await?;
                    let (sampled, broken) = ctx
                        .with_runner(&uid, |r| {
                            baseline_check(r, started.as_millisecond(), now.as_millisecond())
                        })
                        .unwrap_or((false, None));
                    if let Some(why) = broken {
                        let msg = format!(
                            "steady state not met during the baseline: {why}; nothing was changed"
                        );
                        st.verdict = Some(Verdict::Inconclusive);
                        finish(
                            &mut st,
                            Phase::Aborted,
                            "SteadyStateNotMet",
                            &msg,
                            now,
                            generation,
                        );
                        ctx.stop_runner(&uid, obj).await;
                        write_status(&api, &name, &st).await?;
                        ctx.event(obj, EventType::Warning, "SteadyStateNotMet", msg)
                            .await;
                        continue;
                    }
                    let left = baseline.saturating_sub(elapsed(started, now));
                    if !left.is_zero() || !sampled {
                        return Ok(Action::requeue(
                            left.clamp(Duration::from_millis(200), Duration::from_secs(1)),
                        ));
                    }
                    ctx.event(
                        obj,
                        EventType::Normal,
                        "SteadyState",
                        format!("every SLO healthy for {}", obj.spec.baseline),
                    )
                    .await;
                }
                enter(
                    &mut st,
                    Phase::Injecting,
                    now,
                    format!("taking down {}", obj.spec.zone),
                );
                st.fault
                    .get_or_insert_with(FaultStatus::default)
                    .injected_at = Some(MicroTime(now));
                write_status(&api, &name, &st).await?;
            }
            Phase::Injecting => {
                let injected = st
                    .fault
                    .as_ref()
                    .and_then(|f| f.injected_at.as_ref())
                    .map(|t| t.0)
                    .unwrap_or(now);
                if !obj.spec.slos.is_empty() {
                    ensure_runner(ctx, obj).await?;
                    ctx.with_runner(&uid, |r| {
                        r.armed_at
                            .store(injected.as_millisecond(), Ordering::Relaxed)
                    });
                }
                let nodes = zone_nodes(&ctx.client, obj).await?;
                let hold_start = std::time::Instant::now();
                let fault = &obj.spec.fault;
                // Mark and cordon, then kill with grace period 0, then taint:
                // the pods die as in a fire, not by graceful taint eviction.
                match ctx.config.inject_pause {
                    Some(pause) => {
                        for node in &nodes {
                            fault::hold_nodes(
                                &ctx.client,
                                &exp,
                                std::slice::from_ref(node),
                                fault.cordon,
                                1,
                            )
                            .await?;
                            tokio::time::sleep(pause).await;
                        }
                    }
                    None => {
                        fault::hold_nodes(
                            &ctx.client,
                            &exp,
                            &nodes,
                            fault.cordon,
                            ctx.config.concurrency,
                        )
                        .await?
                    }
                }
                let held_at = std::time::Instant::now();
                let hold_ms = (held_at - hold_start).as_millis() as u64;
                let killed = if fault.kill_pods {
                    fault::kill_pods_on(&ctx.client, &nodes, &parsed.scope, ctx.config.concurrency)
                        .await?
                } else {
                    0
                };
                let kill_time = held_at.elapsed();
                if fault.keep_dark {
                    fault::taint_nodes(&ctx.client, &exp, ctx.config.concurrency).await?;
                }
                tracing::info!(experiment = %name, nodes = nodes.len(), killed, kill_ms = kill_time.as_millis() as u64, taint_ms = (held_at.elapsed() - kill_time).as_millis() as u64, hold_ms, "zone down");
                let (cordoned, tainted) = fault::held_counts(&ctx.client, &exp).await?;
                ctx.event(
                    obj,
                    EventType::Normal,
                    "ZoneCordoned",
                    format!(
                        "{cordoned} nodes cordoned, {tainted} tainted {}=NoExecute",
                        fault::TAINT_KEY
                    ),
                )
                .await;
                ctx.event(
                    obj,
                    EventType::Normal,
                    "PodsKilled",
                    format!(
                        "{killed} pods killed with grace period 0 in {:.1}s",
                        kill_time.as_secs_f64()
                    ),
                )
                .await;
                let now = Timestamp::now();
                let fs = st.fault.get_or_insert_with(FaultStatus::default);
                METRICS
                    .nodes_cordoned
                    .inc_by((cordoned - fs.nodes_cordoned).max(0) as u64);
                METRICS.pods_killed.inc_by(killed as u64);
                fs.nodes_cordoned = cordoned;
                fs.nodes_tainted = tainted;
                fs.pods_killed += killed as i32;
                fs.zone_dark_at = Some(MicroTime(now));
                set_condition(
                    &mut st,
                    "Injected",
                    true,
                    "ZoneDown",
                    &format!("{} nodes down, {killed} pods killed", nodes.len()),
                    now,
                    generation,
                );
                enter(
                    &mut st,
                    Phase::ZoneDown,
                    now,
                    format!("{} is dark for {}", obj.spec.zone, obj.spec.duration),
                );
                write_status(&api, &name, &st).await?;
            }
            Phase::ZoneDown => {
                let fs = st.fault.clone().unwrap_or_default();
                let dark_at = fs.zone_dark_at.as_ref().map(|t| t.0).unwrap_or(now);
                if !obj.spec.slos.is_empty() {
                    ensure_runner(ctx, obj).await?;
                    let injected = fs.injected_at.as_ref().map(|t| t.0).unwrap_or(dark_at);
                    ctx.with_runner(&uid, |r| {
                        r.armed_at
                            .store(injected.as_millisecond(), Ordering::Relaxed)
                    });
                    ctx.save_recording(obj).await;
                }
                if obj.spec.fault.keep_dark && obj.spec.fault.kill_pods {
                    let rekilled =
                        ensure_keeper(ctx, obj, &parsed.scope, fs.pods_rekilled as i64).await?;
                    if rekilled as i32 != fs.pods_rekilled {
                        st.fault
                            .get_or_insert_with(FaultStatus::default)
                            .pods_rekilled = rekilled as i32;
                        write_status(&api, &name, &st).await?;
                    }
                }
                let left = parsed.duration.saturating_sub(elapsed(dark_at, now));
                if !left.is_zero() {
                    return Ok(Action::requeue(left.min(Duration::from_secs(5))));
                }
                enter(
                    &mut st,
                    Phase::Restoring,
                    now,
                    format!(
                        "{} was dark for {}; restoring",
                        obj.spec.zone, obj.spec.duration
                    ),
                );
                write_status(&api, &name, &st).await?;
            }
            Phase::Restoring => {
                ctx.stop_keeper(&uid);
                let already = st
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Restored" && c.status == "True");
                if !already {
                    let n = match restore::restore(&ctx.client, &name, &uid, ctx.config.concurrency)
                        .await
                    {
                        Ok(n) => n,
                        Err(e) => {
                            let msg = format!("restore failed, retrying with backoff: {e}");
                            set_condition(
                                &mut st,
                                "Restored",
                                false,
                                "RestoreFailed",
                                &msg,
                                now,
                                generation,
                            );
                            write_status(&api, &name, &st).await.ok();
                            ctx.event(obj, EventType::Warning, "RestoreFailed", msg)
                                .await;
                            return Err(e);
                        }
                    };
                    record_restored(&mut st, n, now, generation);
                    ctx.event(
                        obj,
                        EventType::Normal,
                        "Restored",
                        format!("{} restored: {n} nodes", obj.spec.zone),
                    )
                    .await;
                    write_status(&api, &name, &st).await?;
                }
                // The optional observation window: probes keep running after the restore.
                let observe = obj
                    .spec
                    .observe
                    .as_deref()
                    .and_then(|o| parse_duration(o).ok())
                    .unwrap_or_default();
                let restored_at = st
                    .fault
                    .as_ref()
                    .and_then(|f| f.restored_at.as_ref())
                    .map(|t| t.0)
                    .unwrap_or(now);
                if !obj.spec.slos.is_empty() && !observe.is_zero() {
                    ensure_runner(ctx, obj).await?;
                    let left = observe.saturating_sub(elapsed(restored_at, now));
                    if !left.is_zero() {
                        ctx.save_recording(obj).await;
                        return Ok(Action::requeue(left.min(Duration::from_secs(5))));
                    }
                }
                let verdict_reason = judge(ctx, obj, &mut st, now).await;
                if let Some((verdict, reason)) = &verdict_reason {
                    set_condition(
                        &mut st,
                        "Passed",
                        *verdict == Verdict::Passed,
                        &verdict.to_string(),
                        reason,
                        now,
                        generation,
                    );
                    ctx.event(
                        obj,
                        if *verdict == Verdict::Passed {
                            EventType::Normal
                        } else {
                            EventType::Warning
                        },
                        &format!("Verdict{verdict}"),
                        reason.clone(),
                    )
                    .await;
                }
                match st.abort_reason.clone() {
                    Some(why) => finish(
                        &mut st,
                        Phase::Aborted,
                        "Aborted",
                        &format!("{why}; zone restored"),
                        now,
                        generation,
                    ),
                    None => finish(
                        &mut st,
                        Phase::Completed,
                        "Completed",
                        &format!(
                            "{} was dark for {} and is restored",
                            obj.spec.zone, obj.spec.duration
                        ),
                        now,
                        generation,
                    ),
                }
                if let Some((verdict, reason)) = verdict_reason
                    && st.phase == Some(Phase::Completed)
                {
                    st.reason = Some(format!("{verdict}: {reason}"));
                }
                write_status(&api, &name, &st).await?;
                ctx.event(
                    obj,
                    EventType::Normal,
                    "Completed",
                    st.reason.clone().unwrap_or_default(),
                )
                .await;
            }
            Phase::Completed | Phase::Aborted | Phase::Failed => unreachable!("handled above"),
        }
    }
}

fn elapsed(since: Timestamp, now: Timestamp) -> Duration {
    Duration::try_from(now.duration_since(since)).unwrap_or(Duration::ZERO)
}

/// Make sure this experiment's keep-dark watch is running; returns the re-kill count.
async fn ensure_keeper(
    ctx: &Context,
    obj: &DataCenterFailure,
    scope: &Scope,
    base: i64,
) -> Result<i64> {
    let uid = obj.uid().unwrap_or_default();
    if let Some(k) = ctx.keepers.lock().unwrap().get(&uid) {
        return Ok(k.rekilled.load(Ordering::Relaxed));
    }
    let held: BTreeSet<String> = fault::held_nodes(&ctx.client, &obj.name_any(), &uid)
        .await?
        .iter()
        .map(|n| n.name_any())
        .collect();
    let rekilled = Arc::new(AtomicI64::new(base));
    let task = tokio::spawn(fault::keep_dark(
        ctx.client.clone(),
        held,
        scope.clone(),
        rekilled.clone(),
        ctx.config.concurrency,
    ));
    let mut keepers = ctx.keepers.lock().unwrap();
    if let Some(existing) = keepers.get(&uid) {
        task.abort();
        return Ok(existing.rekilled.load(Ordering::Relaxed));
    }
    keepers.insert(
        uid,
        Keeper {
            handle: task.abort_handle(),
            rekilled: rekilled.clone(),
        },
    );
    Ok(base)
}

/// When the experiment last entered `phase`.
fn phase_entered(st: &DataCenterFailureStatus, phase: Phase) -> Option<Timestamp> {
    st.transitions
        .iter()
        .rev()
        .find(|t| t.phase == phase)
        .map(|t| t.time.0)
}

/// Start the probes of an experiment if they are not running, continuing
/// from the saved recording (after an operator restart).
async fn ensure_runner(ctx: &Context, obj: &DataCenterFailure) -> Result<()> {
    let uid = obj.uid().unwrap_or_default();
    if ctx.runners.lock().unwrap().contains_key(&uid) {
        return Ok(());
    }
    let previous = probe::load(&ctx.client, &ctx.recording_namespace(), &obj.name_any()).await?;
    let runner = probe::Runner::start(&ctx.client, obj, previous);
    ctx.runners.lock().unwrap().entry(uid).or_insert(runner);
    Ok(())
}

/// During the baseline: (every SLO has a sample, the first broken SLO and why).
fn baseline_check(r: &probe::Runner, started: i64, now: i64) -> (bool, Option<String>) {
    let mut sampled = true;
    for (name, tl) in &r.timelines {
        let tl = tl.lock().unwrap();
        let m = tl.measure(started, now + 1);
        sampled &= m.samples() > 0;
        if m.failed + m.errors > 0 {
            let why = tl.last_error.clone().unwrap_or_else(|| "unhealthy".into());
            return (
                sampled,
                Some(format!(
                    "{name}: {} of {} probes failed ({why})",
                    m.failed + m.errors,
                    m.samples()
                )),
            );
        }
    }
    (sampled, None)
}

/// Measure every SLO over the dark window, set `st.slos` and `st.verdict`.
/// Returns the overall verdict and reason, or None without SLOs.
async fn judge(
    ctx: &Context,
    obj: &DataCenterFailure,
    st: &mut DataCenterFailureStatus,
    now: Timestamp,
) -> Option<(Verdict, String)> {
    if obj.spec.slos.is_empty() {
        return None;
    }
    let uid = obj.uid().unwrap_or_default();
    let recording = match ctx.with_runner(&uid, |r| r.recording()) {
        Some(r) => r,
        None => probe::load(&ctx.client, &ctx.recording_namespace(), &obj.name_any())
            .await
            .unwrap_or_default(),
    };
    ctx.stop_runner(&uid, obj).await;
    let start = st
        .fault
        .as_ref()
        .and_then(|f| f.injected_at.as_ref())
        .map(|t| t.0)
        .unwrap_or(now)
        .as_millisecond();
    let end = phase_entered(st, Phase::Restoring)
        .unwrap_or(now)
        .as_millisecond();
    let results: Vec<_> = obj
        .spec
        .slos
        .iter()
        .map(|slo| {
            let tl = recording.slos.get(&slo.name).cloned().unwrap_or_default();
            let rto = parse_duration(&slo.recovery_time_objective).unwrap_or_default();
            let mut r = verdict::judge(
                slo,
                rto,
                &tl.measure(start, end),
                &obj.spec.zone,
                tl.last_error.as_deref(),
            );
            // With an observation window: when did a service that never
            // recovered while dark come back after the restore?
            if r.time_to_recover_seconds.is_none()
                && r.verdict == Some(Verdict::Failed)
                && obj.spec.observe.is_some()
            {
                let after = tl.measure(end, now.as_millisecond() + 1);
                if let (Some(ms), Some(msg)) = (after.time_to_recover_ms, r.message.as_mut()) {
                    msg.push_str(&format!(
                        "; healthy again {:.1}s after the restore",
                        ms as f64 / 1000.0
                    ));
                }
            }
            r
        })
        .collect();
    let pinned = st
        .plan
        .as_ref()
        .map(|p| p.pinned_pod_names.clone())
        .unwrap_or_default();
    let (v, reason) = verdict::overall(&obj.spec.slos, &results, &obj.spec.zone, &pinned);
    for r in &results {
        if let Some(t) = r.time_to_recover_seconds {
            METRICS
                .time_to_recover
                .get_or_create(&SloLabel {
                    slo: r.name.clone(),
                })
                .observe(t);
        }
    }
    st.slos = results;
    st.verdict = Some(v);
    Some((v, reason))
}

#[cfg(test)]
mod tests {
    use super::retry_delay;
    use std::time::Duration;

    #[test]
    fn retries_back_off_from_one_second_to_at_most_thirty() {
        let secs: Vec<u64> = (1..=8).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(retry_delay(u32::MAX), Duration::from_secs(30));
    }
}
