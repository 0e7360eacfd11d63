//! The DataCenterFailure controller: the lifecycle state machine.
//!
//! Pending → Planning → Baseline → Injecting → ZoneDown → Restoring →
//! Completed (or Aborted / Failed). Each phase has a function of its own
//! below ([`Drill::planning`], [`Drill::zone_down`], ...). Progress lives in
//! the object's status and in the marks on the nodes, never only in memory:
//! every step is idempotent, so a restarted operator picks up wherever the
//! last one stopped.
//!
//! Two rules keep a stale view from redoing work: a reconcile acts on the
//! object as the API server has it now (a fresh read, not the watch cache),
//! and every status write is conditional on the resourceVersion it was
//! computed from, so a phase is entered once and a count is added once.
//!
//! Work that can take long (injection, keeping the zone dark, probing) runs
//! in tasks of its own, so a stuck API call never blocks the reconcile that
//! would honour an abort, a deletion or the timeout.

use crate::api::{
    ABORT_ANNOTATION, DataCenterFailure, DataCenterFailureSpec, DataCenterFailureStatus, FINALIZER,
    FaultMode, FaultStatus, MAX_LISTED, Phase, PhaseTransition, Verdict, parse_duration,
};
use crate::event::publish;
use crate::exclusion;
use crate::fault::{self, Experiment, Injected, Injection, Keep, KeeperEnd, KeeperState};
use crate::metrics::{ErrorLabel, METRICS, PhaseLabel, SloLabel, VerdictLabel};
use crate::plan::{self, Request, Scope, collect};
use crate::{Error, Result, probe, record, restore, verdict};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// Operator settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// The operator's own namespace: its pods are never killed; recordings
    /// and the drills' claims live there.
    pub namespace: Option<String>,
    /// Label selector of the operator's own pods, when it runs in the cluster
    /// (for the `protectOperator` guard).
    pub self_selector: Option<String>,
    /// API calls in flight at once for node patches and pod deletes.
    pub concurrency: usize,
    /// How long past `spec.duration` an experiment may take before it is
    /// ended and restored regardless.
    pub restore_grace: Duration,
    /// How long taking the zone down may take before the experiment is aborted.
    pub injection_timeout: Duration,
    /// Pause between node changes while injecting (for rehearsing an operator
    /// crash in the middle of injection).
    pub inject_pause: Option<Duration>,
    /// What probes may read and reach, and the hosts file they resolve with.
    pub probes: probe::Env,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            namespace: None,
            self_selector: None,
            concurrency: crate::fault::DEFAULT_WRITE_CONCURRENCY,
            restore_grace: Duration::from_secs(120),
            injection_timeout: Duration::from_secs(600),
            inject_pause: None,
            probes: probe::Env::default(),
        }
    }
}

impl Config {
    /// Where records and claims are kept.
    pub fn home_namespace(&self) -> String {
        self.namespace.clone().unwrap_or_else(|| "default".into())
    }
}

/// The two clients the operator talks through: one whose every call has a
/// deadline, and one for long-running watches (which have idle timeouts of
/// their own).
#[derive(Clone)]
pub struct Clients {
    pub calls: Client,
    pub watches: Client,
    /// Where the API server is (host, port), from the configuration.
    pub apiserver: (String, u16),
}

/// How long a restore after a power loss waits for the zone's nodes to be Ready again.
const POWER_BACK_WAIT: Duration = Duration::from_secs(180);

/// How long one ordinary API call may take before it fails.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl Clients {
    /// Build both from the usual configuration (KUBECONFIG, ~/.kube/config or in-cluster).
    pub async fn infer() -> Result<Self, kube::Error> {
        let config = kube::Config::infer()
            .await
            .map_err(kube::Error::InferConfig)?;
        Self::from_config(config)
    }

    pub fn from_config(config: kube::Config) -> Result<Self, kube::Error> {
        let apiserver = (
            config.cluster_url.host().unwrap_or("").to_string(),
            config.cluster_url.port_u16().unwrap_or(
                if config.cluster_url.scheme_str() == Some("http") {
                    80
                } else {
                    443
                },
            ),
        );
        let mut calls = config.clone();
        calls.read_timeout = Some(CALL_TIMEOUT);
        calls.reset_reader_on_write = true;
        calls.connect_timeout = Some(Duration::from_secs(10));
        let mut watches = config;
        watches.connect_timeout = Some(Duration::from_secs(10));
        Ok(Clients {
            calls: counted(calls)?,
            watches: counted(watches)?,
            apiserver,
        })
    }
}

/// A client whose every request is counted in `firedrill_api_requests_total`.
fn counted(config: kube::Config) -> Result<Client, kube::Error> {
    let count = tower::util::MapRequestLayer::new(|req: http::Request<kube::client::Body>| {
        crate::metrics::count_request(req.method().as_str());
        req
    });
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&count)
        .build())
}

/// The tasks one experiment runs while this operator leads.
#[derive(Default)]
struct Tasks {
    injector: Option<JoinHandle<std::result::Result<Injected, String>>>,
    /// A finished injection whose outcome is not in the status yet.
    injected: Option<std::result::Result<Injected, String>>,
    keeper: Option<(JoinHandle<KeeperEnd>, Arc<KeeperState>)>,
    runner: Option<probe::Runner>,
}

impl Tasks {
    fn stop(&mut self) {
        if let Some(h) = self.injector.take() {
            h.abort();
        }
        if let Some((h, _)) = self.keeper.take() {
            h.abort();
        }
        self.runner = None;
    }
}

/// Built once, shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub watch_client: Client,
    pub recorder: Recorder,
    pub config: Config,
    tasks: Mutex<HashMap<String, Tasks>>,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(clients: Clients, config: Config) -> Arc<Self> {
        let reporter = Reporter {
            controller: "firedrill".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Arc::new(Context {
            recorder: Recorder::new(clients.calls.clone(), reporter),
            client: clients.calls,
            watch_client: clients.watches,
            config,
            tasks: Mutex::default(),
            failures: Mutex::default(),
        })
    }

    fn with_tasks<T>(&self, uid: &str, f: impl FnOnce(&mut Tasks) -> T) -> T {
        f(self
            .tasks
            .lock()
            .unwrap()
            .entry(uid.to_string())
            .or_default())
    }

    fn with_runner<T>(&self, uid: &str, f: impl FnOnce(&probe::Runner) -> T) -> Option<T> {
        self.tasks
            .lock()
            .unwrap()
            .get(uid)
            .and_then(|t| t.runner.as_ref())
            .map(f)
    }

    async fn save_recording(&self, obj: &DataCenterFailure) {
        let Some(rec) = self.with_runner(&obj.uid().unwrap_or_default(), |r| r.recording()) else {
            return;
        };
        let ns = self.config.home_namespace();
        if let Err(e) = record::save_timeline(&self.client, &ns, obj, &rec).await {
            tracing::warn!(experiment = %obj.name_any(), error = %e, "cannot save the probe recording");
        }
    }

    /// Stop every task of an experiment.
    fn stop_tasks(&self, uid: &str) {
        if let Some(mut t) = self.tasks.lock().unwrap().remove(uid) {
            t.stop();
        }
    }

    fn stop_keeper(&self, uid: &str) -> Option<Arc<KeeperState>> {
        let mut tasks = self.tasks.lock().unwrap();
        let (h, state) = tasks.get_mut(uid)?.keeper.take()?;
        h.abort();
        Some(state)
    }

    /// Save every recording and stop every task (before this operator hands
    /// its experiments to another one).
    pub async fn save_all(&self) {
        let api = Api::<DataCenterFailure>::all(self.client.clone());
        let uids: Vec<String> = self.tasks.lock().unwrap().keys().cloned().collect();
        if !uids.is_empty()
            && let Ok(list) = api.list(&ListParams::default()).await
        {
            for obj in list.items {
                if uids.contains(&obj.uid().unwrap_or_default()) {
                    self.save_recording(&obj).await;
                }
            }
        }
        for uid in uids {
            self.stop_tasks(&uid);
        }
    }
}

/// Run the experiment and schedule controllers until `stop` resolves. The
/// caller then either hands over ([`Context::save_all`]) or stands down
/// ([`stand_down`]).
pub async fn run(
    clients: Clients,
    config: Config,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Arc<Context>> {
    let client = clients.calls.clone();
    let restored = restore::restore_orphans(&client).await?;
    if !restored.is_empty() {
        tracing::warn!(nodes = ?restored, "restored nodes held by experiments that no longer exist");
    }
    let ctx = Context::new(clients.clone(), config);
    crate::metrics::READY.store(true, Ordering::Relaxed);
    let api = Api::<DataCenterFailure>::all(clients.watches.clone());
    let experiments = Controller::new(api, watcher::Config::default().any_semantic())
        .graceful_shutdown_on(stopped(stop.clone()))
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(experiment = %obj.name, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile failed"),
            }
        });
    let orphans = async {
        // Nodes whose experiment vanished without a cleanup (its finalizer
        // removed by hand, say) are restored within a minute.
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        tick.tick().await;
        loop {
            tick.tick().await;
            match restore::restore_orphans(&client).await {
                Ok(nodes) if !nodes.is_empty() => {
                    tracing::warn!(
                        ?nodes,
                        "restored nodes held by experiments that no longer exist"
                    )
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot look for orphaned node marks"),
            }
        }
    };
    tokio::select! {
        _ = async { tokio::join!(experiments, crate::schedule::run(clients.clone(), stopped(stop.clone()))) } => {}
        _ = orphans => {}
    }
    Ok(ctx)
}

/// A future that resolves once `stop` turns true (Send + Sync, as the
/// controller's graceful shutdown wants).
async fn stopped(stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// On a stop with no other operator to take over, no zone is left dark
/// without an operator watching it: every experiment that holds nodes is
/// restored and ends Aborted.
pub async fn stand_down(ctx: &Context) {
    ctx.save_all().await;
    let api = Api::<DataCenterFailure>::all(ctx.client.clone());
    let Ok(list) = api.list(&ListParams::default()).await else {
        tracing::error!(
            "shutting down: cannot list experiments; a restarted operator will restore them"
        );
        return;
    };
    for obj in list.items {
        let phase = obj
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .unwrap_or(Phase::Pending);
        if phase.is_terminal() {
            continue;
        }
        let mut d = Drill::new(ctx, obj);
        let uid = d.exp.uid.clone();
        match restore::restore(&ctx.client, &uid, ctx.config.concurrency).await {
            Ok(n) => {
                let now = Timestamp::now();
                d.record_restored(n, now);
                d.finish(
                    Phase::Aborted,
                    "OperatorShutdown",
                    "the operator shut down during the experiment with no other replica to take over; the zone was restored",
                    now,
                );
                if let Err(e) = d.write().await {
                    tracing::error!(experiment = %d.exp.name, error = %e, "cannot record the abort");
                }
                d.event(
                    EventType::Warning,
                    "Aborted",
                    "operator shut down; zone restored".into(),
                )
                .await;
                d.release_turn().await;
            }
            Err(e) => {
                tracing::error!(experiment = %d.exp.name, error = %e, "shutting down: restore failed; a restarted operator will restore it")
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
    if err.is_conflict() {
        tracing::debug!(experiment = %obj.name_any(), "status changed meanwhile; reconciling again");
        return Action::requeue(Duration::from_millis(200));
    }
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
    ctx.stop_tasks(&uid);
    let n = restore::restore(&ctx.client, &uid, ctx.config.concurrency).await?;
    if n > 0 {
        publish(
            &ctx.recorder,
            &obj.object_ref(&()),
            EventType::Normal,
            "Restored",
            format!("experiment deleted: restored {n} nodes"),
        )
        .await;
    }
    exclusion::release(&ctx.client, &ctx.config.home_namespace(), &uid).await?;
    ctx.failures.lock().unwrap().remove(&uid);
    Ok(Action::await_change())
}

async fn apply(cached: &DataCenterFailure, ctx: &Context) -> Result<Action> {
    // The watch cache may be behind our own last write: act on the object as
    // the API server has it now.
    let api = Api::<DataCenterFailure>::all(ctx.client.clone());
    let Some(obj) = api.get_opt(&cached.name_any()).await? else {
        return Ok(Action::await_change());
    };
    if obj.uid() != cached.uid() {
        return Ok(Action::await_change());
    }
    let mut drill = Drill::new(ctx, obj);
    loop {
        match drill.step().await? {
            Step::Next => continue,
            Step::Wait(action) => return Ok(action),
        }
    }
}

/// What a phase function wants next.
enum Step {
    /// The status moved on: run the next phase now.
    Next,
    /// Come back later (or on a change).
    Wait(Action),
}

/// The parts of the spec that the schema cannot fully check.
pub struct Parsed {
    pub duration: Duration,
    pub scope: Scope,
}

/// Check everything about a spec that the API server's schema cannot: the
/// durations, the target's selector, the probes against the probe policy.
/// The first problem, naming the field.
pub fn parse_spec(
    spec: &DataCenterFailureSpec,
    operator_namespace: Option<String>,
    probes: &probe::Env,
) -> std::result::Result<Parsed, String> {
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
    let scope = Scope::from_target(&spec.target, operator_namespace)?;
    probe::check_spec(spec, probes)?;
    Ok(Parsed { duration, scope })
}

/// One reconcile of one experiment: the object as read, the status being
/// built, and the resourceVersion every write is conditional on.
struct Drill<'a> {
    ctx: &'a Context,
    api: Api<DataCenterFailure>,
    obj: DataCenterFailure,
    st: DataCenterFailureStatus,
    rv: Option<String>,
    exp: Experiment,
    generation: Option<i64>,
}

impl<'a> Drill<'a> {
    fn new(ctx: &'a Context, obj: DataCenterFailure) -> Self {
        let mut st = obj.status.clone().unwrap_or_default();
        st.observed_generation = obj.metadata.generation;
        Drill {
            ctx,
            api: Api::all(ctx.client.clone()),
            rv: obj.resource_version(),
            exp: Experiment::of(&obj),
            generation: obj.metadata.generation,
            st,
            obj,
        }
    }

    fn phase(&self) -> Phase {
        self.st.phase.unwrap_or(Phase::Pending)
    }

    /// Write the status, conditional on the resourceVersion it was computed
    /// from: if anything changed the object meanwhile, the write fails with a
    /// conflict and the reconcile starts again from a fresh read.
    async fn write(&mut self) -> Result<()> {
        let written =
            crate::api::write_status(&self.api, &self.exp.name, self.rv.as_deref(), &self.st)
                .await?;
        self.rv = written.resource_version();
        Ok(())
    }

    async fn event(&self, type_: EventType, reason: &str, note: String) {
        publish(
            &self.ctx.recorder,
            &self.obj.object_ref(&()),
            type_,
            reason,
            note,
        )
        .await;
    }

    fn enter(&mut self, phase: Phase, now: Timestamp, reason: impl Into<String>) {
        self.st.phase = Some(phase);
        self.st.reason = Some(reason.into());
        METRICS
            .phase_transitions
            .get_or_create(&PhaseLabel {
                phase: phase.to_string(),
            })
            .inc();
        self.st.transitions.push(PhaseTransition {
            phase,
            time: MicroTime(now),
        });
    }

    fn condition(&mut self, type_: &str, ok: bool, reason: &str, message: &str, now: Timestamp) {
        set_condition(
            &mut self.st,
            type_,
            ok,
            reason,
            message,
            now,
            self.generation,
        );
    }

    /// Enter a terminal phase and mark the experiment Completed for `kubectl wait`.
    fn finish(&mut self, phase: Phase, reason: &str, message: &str, now: Timestamp) {
        self.enter(phase, now, message);
        self.condition("Completed", true, reason, message, now);
        let outcome = self
            .st
            .verdict
            .map(|v| v.to_string())
            .unwrap_or_else(|| phase.to_string());
        METRICS
            .experiments
            .get_or_create(&VerdictLabel { verdict: outcome })
            .inc();
    }

    /// Record a finished restore of `n` nodes in the status.
    fn record_restored(&mut self, n: i32, now: Timestamp) {
        let fs = self.st.fault.get_or_insert_with(FaultStatus::default);
        fs.nodes_restored += n;
        if n > 0 || fs.restored_at.is_none() {
            fs.restored_at = Some(MicroTime(now));
        }
        self.condition(
            "Restored",
            true,
            "Restored",
            &format!("{n} nodes restored"),
            now,
        );
    }

    /// Add notes about the zone changing behind the plan's back, bounded.
    fn note_zone_changes(&mut self, notes: &[String]) -> Vec<String> {
        let fs = self.st.fault.get_or_insert_with(FaultStatus::default);
        let mut new = vec![];
        for n in notes {
            if fs.zone_changes.contains(n) {
                continue;
            }
            fs.zone_changes_total += 1;
            if fs.zone_changes.len() < MAX_LISTED {
                fs.zone_changes.push(n.clone());
            }
            new.push(n.clone());
        }
        new
    }

    /// What the cluster shows of the pods behind each SLO as the dark window
    /// ends (before the restore lets pinned pods come back): ready pods, and
    /// replacements the scheduler could not place, with its message. Kept in
    /// the status, so a restarted operator still has it for the verdict.
    async fn observe_causes(&mut self) {
        let ctx = self.ctx;
        if self.obj.spec.slos.is_empty() {
            return;
        }
        let targets = match collect::slo_targets(&ctx.client, &self.obj.spec.slos).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(experiment = %self.exp.name, error = %e, "cannot read what the SLOs' probes depend on");
                return;
            }
        };
        let predictions = self
            .st
            .plan
            .as_ref()
            .map(|p| p.slo_predictions.clone())
            .unwrap_or_default();
        for t in targets {
            let observed = match &t.backing {
                Some(b) => observe(&ctx.client, b).await,
                None => None,
            };
            let planned = predictions
                .iter()
                .find(|p| p.name == t.slo && p.verdict == Some(Verdict::Failed))
                .map(|p| p.why.as_str());
            let cause = verdict::cause(observed.as_ref(), planned);
            match self.st.slos.iter_mut().find(|s| s.name == t.slo) {
                Some(s) => s.cause = cause,
                None => self.st.slos.push(crate::api::SloStatus {
                    name: t.slo.clone(),
                    cause,
                    ..Default::default()
                }),
            }
        }
    }

    async fn release_turn(&self) {
        if let Err(e) = exclusion::release(
            &self.ctx.client,
            &self.ctx.config.home_namespace(),
            &self.exp.uid,
        )
        .await
        {
            tracing::warn!(experiment = %self.exp.name, error = %e, "cannot release the drill's turn; the next claim prunes it");
        }
    }

    fn parse(&self) -> std::result::Result<Parsed, String> {
        parse_spec(
            &self.obj.spec,
            self.ctx.config.namespace.clone(),
            &self.ctx.config.probes,
        )
    }

    fn power_loss(&self) -> bool {
        self.obj.spec.fault.mode == FaultMode::PowerLoss
    }

    fn request(&self, scope: &Scope) -> Request {
        Request {
            zone: self.obj.spec.zone.clone(),
            topology_key: self.obj.spec.topology_key.clone(),
            scope: scope.clone(),
            guards: self.obj.spec.guards.clone(),
            power_loss: self.power_loss(),
        }
    }

    /// One step of the state machine.
    async fn step(&mut self) -> Result<Step> {
        let now = Timestamp::now();
        let phase = self.phase();
        if phase.is_terminal() {
            return self.ended().await;
        }
        if let Some(why) = abort_requested(&self.obj) {
            match phase {
                Phase::Pending | Phase::Planning | Phase::Baseline => {
                    self.ctx.stop_tasks(&self.exp.uid);
                    self.finish(
                        Phase::Aborted,
                        "Aborted",
                        &format!("{why}; nothing was changed"),
                        now,
                    );
                    self.write().await?;
                    self.event(EventType::Warning, "Aborted", why).await;
                    return Ok(Step::Next);
                }
                Phase::Injecting | Phase::ZoneDown => {
                    return self.abort_fault(why, "Aborting", now).await;
                }
                _ => {}
            }
        }
        let parsed = match self.parse() {
            Ok(p) => p,
            Err(msg) if matches!(phase, Phase::Pending | Phase::Planning) => {
                self.finish(Phase::Failed, "InvalidSpec", &msg, now);
                self.write().await?;
                self.event(EventType::Warning, "InvalidSpec", msg).await;
                return Ok(Step::Next);
            }
            Err(msg) => return Err(Error::Spec(msg)),
        };
        // Timed out: the fault has lasted longer than it may.
        if matches!(phase, Phase::Injecting | Phase::ZoneDown)
            && let Some(injected) = self.st.fault.as_ref().and_then(|f| f.injected_at.as_ref())
        {
            let limit = parsed.duration + self.ctx.config.restore_grace;
            if elapsed(injected.0, now) > limit {
                let why = format!(
                    "timed out: the zone was down longer than duration + {}s grace",
                    self.ctx.config.restore_grace.as_secs()
                );
                return self.abort_fault(why, "TimedOut", now).await;
            }
        }
        match phase {
            Phase::Pending => self.pending(now).await,
            Phase::Planning => self.planning(&parsed, now).await,
            Phase::Baseline => self.baseline(now).await,
            Phase::Injecting => self.injecting(&parsed, now).await,
            Phase::ZoneDown => self.zone_down(&parsed, now).await,
            Phase::Restoring => self.restoring(now).await,
            Phase::Completed | Phase::Aborted | Phase::Failed => unreachable!("handled above"),
        }
    }

    /// End the fault early (abort annotation, guard breach, timeout, an
    /// injection that failed): stop injecting, then restore.
    async fn abort_fault(&mut self, why: String, event: &str, now: Timestamp) -> Result<Step> {
        if let Some(h) = self.ctx.with_tasks(&self.exp.uid, |t| {
            t.injected = None;
            t.injector.take()
        }) {
            h.abort();
        }
        self.st.abort_reason = Some(why.clone());
        self.ctx
            .with_runner(&self.exp.uid, |r| r.mark(now.as_millisecond()));
        if self.phase() == Phase::ZoneDown {
            self.observe_causes().await;
        }
        self.enter(Phase::Restoring, now, format!("{why}; restoring the zone"));
        self.write().await?;
        self.event(EventType::Warning, event, why).await;
        Ok(Step::Next)
    }

    /// A finished experiment holds no node and no turn (a safety net: the
    /// phases that end it restore first).
    async fn ended(&mut self) -> Result<Step> {
        self.ctx.stop_tasks(&self.exp.uid);
        let n =
            restore::restore(&self.ctx.client, &self.exp.uid, self.ctx.config.concurrency).await?;
        if n > 0 {
            self.event(
                EventType::Warning,
                "Restored",
                format!("restored {n} nodes still held after the experiment ended"),
            )
            .await;
        }
        exclusion::release(
            &self.ctx.client,
            &self.ctx.config.home_namespace(),
            &self.exp.uid,
        )
        .await?;
        self.ctx.failures.lock().unwrap().remove(&self.exp.uid);
        Ok(Step::Wait(Action::await_change()))
    }

    async fn pending(&mut self, now: Timestamp) -> Result<Step> {
        let zone = self.obj.spec.zone.clone();
        self.enter(Phase::Planning, now, format!("planning the loss of {zone}"));
        self.write().await?;
        Ok(Step::Next)
    }

    async fn planning(&mut self, parsed: &Parsed, now: Timestamp) -> Result<Step> {
        let ctx = self.ctx;
        let req = self.request(&parsed.scope);
        let opts = collect::Options {
            measure_capacity: self.obj.spec.guards.require_capacity,
            experiment: Some(self.exp.name.clone()),
            operator_pods: ctx
                .config
                .namespace
                .clone()
                .zip(ctx.config.self_selector.clone()),
            concurrency: ctx.config.concurrency.min(collect::DEFAULT_CONCURRENCY),
            slos: self.obj.spec.slos.clone(),
            leader_pod: ctx
                .config
                .namespace
                .clone()
                .zip(std::env::var("POD_NAME").ok().filter(|n| !n.is_empty())),
        };
        let snap = collect::snapshot(&ctx.client, &req.zone, &req.topology_key, &opts).await?;
        let p = plan::plan(&req, &snap);
        self.st.plan = Some(p.summary());
        let mut refusal = plan::check_guards(&req, &p, &snap).err().map(|r| r.0);
        // One zone dark at a time, race-free: claim a turn before anything
        // is touched (a dry run touches nothing and claims none).
        if refusal.is_none() && !self.obj.spec.guards.dry_run {
            let me = exclusion::Claim {
                name: self.exp.name.clone(),
                zone: req.zone.clone(),
                exclusive: !self.obj.spec.guards.allow_overlap,
            };
            if let Err(blocking) = exclusion::claim(
                &ctx.client,
                &ctx.config.home_namespace(),
                &self.exp.uid,
                &me,
            )
            .await?
            {
                refusal = Some(format!(
                    "another DataCenterFailure is active ({}); set guards.allowOverlap to run both",
                    blocking.join(", ")
                ));
            }
        }
        if let Some(refusal) = refusal {
            let msg = format!("refused: {refusal}; nothing was changed");
            self.finish(Phase::Failed, "Refused", &msg, now);
            self.write().await?;
            self.event(EventType::Warning, "Refused", refusal).await;
            return Ok(Step::Next);
        }
        let planned = format!(
            "{} nodes, {} pods in scope ({} spared), {} workloads lose every replica, {} pods pinned to the zone",
            p.nodes.len(),
            p.pods_in_scope.len(),
            p.pods_spared.len(),
            p.lost_workloads.len(),
            p.pinned.len()
        );
        if self.obj.spec.guards.dry_run {
            self.finish(
                Phase::Completed,
                "DryRun",
                &format!("dry run: {planned}; nothing was changed"),
                now,
            );
        } else {
            record::save_planned_nodes(
                &ctx.client,
                &ctx.config.home_namespace(),
                &self.obj,
                &p.nodes,
            )
            .await?;
            self.enter(Phase::Baseline, now, format!("planned: {planned}"));
        }
        self.write().await?;
        self.event(EventType::Normal, "Planned", planned).await;
        Ok(Step::Next)
    }

    async fn baseline(&mut self, now: Timestamp) -> Result<Step> {
        let ctx = self.ctx;
        let uid = self.exp.uid.clone();
        if !self.obj.spec.slos.is_empty() {
            let started = phase_entered(&self.st, Phase::Baseline).unwrap_or(now);
            let baseline = parse_duration(&self.obj.spec.baseline).unwrap_or_default();
            ensure_runner(ctx, &self.obj).await?;
            let (sampled, broken) = ctx
                .with_runner(&uid, |r| {
                    baseline_check(r, started.as_millisecond(), now.as_millisecond())
                })
                .unwrap_or((false, None));
            if let Some(why) = broken {
                let msg =
                    format!("steady state not met during the baseline: {why}; nothing was changed");
                self.st.verdict = Some(Verdict::Inconclusive);
                self.finish(Phase::Aborted, "SteadyStateNotMet", &msg, now);
                ctx.save_recording(&self.obj).await;
                ctx.stop_tasks(&uid);
                self.write().await?;
                self.event(EventType::Warning, "SteadyStateNotMet", msg)
                    .await;
                return Ok(Step::Next);
            }
            let left = baseline.saturating_sub(elapsed(started, now));
            if !left.is_zero() || !sampled {
                return Ok(Step::Wait(Action::requeue(
                    left.clamp(Duration::from_millis(200), Duration::from_secs(1)),
                )));
            }
            self.event(
                EventType::Normal,
                "SteadyState",
                format!("every SLO healthy for {}", self.obj.spec.baseline),
            )
            .await;
        }
        let zone = self.obj.spec.zone.clone();
        self.enter(Phase::Injecting, now, format!("taking down {zone}"));
        self.st
            .fault
            .get_or_insert_with(FaultStatus::default)
            .injected_at = Some(MicroTime(now));
        self.write().await?;
        Ok(Step::Next)
    }

    /// The zone's nodes as they are now, guarded again: nodes may have joined
    /// or left the zone since planning. Returns the nodes to take, or a refusal.
    async fn take_zone(
        &mut self,
        parsed: &Parsed,
    ) -> Result<std::result::Result<Vec<String>, String>> {
        let ctx = self.ctx;
        let req = self.request(&parsed.scope);
        let mut nodes = collect::list_nodes(&ctx.client).await?;
        // Our own cordons (a restart mid-injection) are not the admin's.
        for held in fault::held_nodes(&ctx.client, &self.exp.uid).await? {
            if let (Some(mark), Some(n)) = (
                fault::NodeMark::read(&held),
                nodes.iter_mut().find(|n| n.name == held.name_any()),
            ) {
                n.unschedulable = mark.prior_unschedulable;
            }
        }
        let snap = plan::Snapshot {
            nodes,
            ..Default::default()
        };
        let p = plan::plan(&req, &snap);
        if let Err(r) = plan::check_node_guards(&req, &p) {
            return Ok(Err(r.0));
        }
        let planned =
            record::load_planned_nodes(&ctx.client, &ctx.config.home_namespace(), &self.exp.uid)
                .await?
                .map(|pn| pn.nodes.into_iter().collect::<BTreeSet<String>>());
        if let Some(planned) = planned {
            let now: BTreeSet<String> = p.nodes.iter().cloned().collect();
            let joined: Vec<String> = now.difference(&planned).cloned().collect();
            let left: Vec<String> = planned.difference(&now).cloned().collect();
            let mut notes = vec![];
            let names = |v: &[String]| {
                let mut s = v.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
                if v.len() > 5 {
                    s.push_str(&format!(" and {} more", v.len() - 5));
                }
                s
            };
            if !joined.is_empty() {
                notes.push(format!(
                    "{} nodes joined {} after planning; the guards were checked again with them and they were taken down too: {}",
                    joined.len(),
                    req.zone,
                    names(&joined)
                ));
            }
            if !left.is_empty() {
                notes.push(format!(
                    "{} planned nodes were no longer in {} at injection and were left alone: {}",
                    left.len(),
                    req.zone,
                    names(&left)
                ));
            }
            for n in self.note_zone_changes(&notes) {
                self.event(EventType::Warning, "ZoneChanged", n).await;
            }
        }
        Ok(Ok(p.nodes))
    }

    async fn injecting(&mut self, parsed: &Parsed, now: Timestamp) -> Result<Step> {
        let ctx = self.ctx;
        let uid = self.exp.uid.clone();
        let injected_at = self
            .st
            .fault
            .as_ref()
            .and_then(|f| f.injected_at.as_ref())
            .map(|t| t.0)
            .unwrap_or(now);
        if !self.obj.spec.slos.is_empty() {
            ensure_runner(ctx, &self.obj).await?;
            ctx.with_runner(&uid, |r| {
                r.armed_at
                    .store(injected_at.as_millisecond(), Ordering::Relaxed);
                r.mark(injected_at.as_millisecond());
            });
        }
        // Collect a finished injection, or start one.
        let finished = ctx.with_tasks(&uid, |t| {
            if t.injected.is_none() && t.injector.as_ref().is_some_and(|h| h.is_finished()) {
                t.injector.take()
            } else {
                None
            }
        });
        if let Some(h) = finished {
            let result = h
                .await
                .unwrap_or_else(|e| Err(format!("the injection task ended: {e}")));
            ctx.with_tasks(&uid, |t| t.injected = Some(result));
        }
        let outcome = ctx.with_tasks(&uid, |t| (t.injected.clone(), t.injector.is_some()));
        let injected = match outcome {
            (Some(result), _) => result,
            (None, true) => return Ok(Step::Wait(Action::requeue(Duration::from_millis(500)))),
            (None, false) => {
                let nodes = match self.take_zone(parsed).await? {
                    Ok(nodes) => nodes,
                    Err(refusal) => {
                        let why = format!("refused at injection: {refusal}");
                        return self.abort_fault(why, "Refused", now).await;
                    }
                };
                self.st
                    .fault
                    .get_or_insert_with(FaultStatus::default)
                    .nodes_taken = nodes.len() as i32;
                // What was taken (and any zone change) is in the status
                // before anything is touched.
                self.write().await?;
                let job = Injection {
                    exp: self.exp.clone(),
                    nodes,
                    cordon: self.obj.spec.fault.cordon,
                    kill_pods: self.obj.spec.fault.kill_pods,
                    keep_dark: self.obj.spec.fault.keep_dark,
                    power_loss_until: self.power_loss().then(|| {
                        injected_at.as_second()
                            + (parsed.duration + ctx.config.restore_grace).as_secs() as i64
                    }),
                    scope: parsed.scope.clone(),
                    concurrency: ctx.config.concurrency,
                    pause: ctx.config.inject_pause,
                };
                let client = ctx.client.clone();
                let deadline = ctx.config.injection_timeout;
                let task = tokio::spawn(async move {
                    match tokio::time::timeout(deadline, fault::inject(&client, &job)).await {
                        Ok(Ok(done)) => Ok(done),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err(format!(
                            "taking the zone down did not finish within {}s",
                            deadline.as_secs()
                        )),
                    }
                });
                ctx.with_tasks(&uid, |t| t.injector = Some(task));
                return Ok(Step::Wait(Action::requeue(Duration::from_millis(200))));
            }
        };
        let done = match injected {
            Ok(done) if done.kills.failed == 0 => done,
            Ok(done) => {
                let fs = self.st.fault.get_or_insert_with(FaultStatus::default);
                fs.pods_killed += done.kills.killed as i32;
                fs.pods_not_killed = done.kills.failed as i32;
                let why = format!(
                    "injection failed: {} pods could not be killed ({}); a zone whose pods cannot be taken down is not a fire",
                    done.kills.failed,
                    done.kills.first_failure.clone().unwrap_or_default()
                );
                ctx.with_tasks(&uid, |t| t.injected = None);
                return self.abort_fault(why, "InjectionFailed", now).await;
            }
            Err(e) => {
                ctx.with_tasks(&uid, |t| t.injected = None);
                return self
                    .abort_fault(format!("injection failed: {e}"), "InjectionFailed", now)
                    .await;
            }
        };
        let (cordoned, tainted) = fault::held_counts(&ctx.client, &self.exp).await?;
        let killed = done.kills.killed;
        let taint = done.taint.map(|t| t.as_str().to_string());
        let fs = self.st.fault.get_or_insert_with(FaultStatus::default);
        METRICS
            .nodes_cordoned
            .inc_by((cordoned - fs.nodes_cordoned).max(0) as u64);
        METRICS.pods_killed.inc_by(killed as u64);
        fs.nodes_cordoned = cordoned;
        fs.nodes_tainted = tainted;
        fs.taint_effect = taint.clone();
        fs.pods_killed += killed as i32;
        fs.pods_spared = done.kills.spared as i32;
        fs.zone_dark_at = Some(MicroTime(now));
        let taken = fs.nodes_taken;
        self.condition(
            "Injected",
            true,
            "ZoneDown",
            &format!("{taken} nodes down, {killed} pods killed"),
            now,
        );
        let (zone, duration) = (self.obj.spec.zone.clone(), self.obj.spec.duration.clone());
        self.enter(
            Phase::ZoneDown,
            now,
            format!("{zone} is dark for {duration}"),
        );
        self.write().await?;
        ctx.with_tasks(&uid, |t| t.injected = None);
        tracing::info!(experiment = %self.exp.name, nodes = taken, killed, spared = done.kills.spared, hold_ms = done.hold_ms, kill_ms = done.kill_ms, taint_ms = done.taint_ms, taint = ?taint, "zone down");
        if self.power_loss() {
            let until = injected_at.as_second()
                + (parsed.duration + ctx.config.restore_grace).as_secs() as i64;
            self.event(
                EventType::Normal,
                "PowerCut",
                format!(
                    "{taken} nodes lost power; the node agents restore it on their own at {} if the zone is not restored before",
                    k8s_openapi::jiff::Timestamp::from_second(until).map(|t| t.to_string()).unwrap_or_default()
                ),
            )
            .await;
            return Ok(Step::Next);
        }
        let taint_note = match &taint {
            Some(effect) => format!(", tainted {}={effect}", fault::TAINT_KEY),
            None => String::new(),
        };
        self.event(
            EventType::Normal,
            "ZoneCordoned",
            format!("{cordoned} nodes cordoned, {tainted} tainted{taint_note}"),
        )
        .await;
        self.event(
            EventType::Normal,
            "PodsKilled",
            format!(
                "{killed} pods killed with grace period 0 in {:.1}s; {} pods out of scope left running",
                done.kill_ms as f64 / 1000.0,
                done.kills.spared
            ),
        )
        .await;
        Ok(Step::Next)
    }

    async fn zone_down(&mut self, parsed: &Parsed, now: Timestamp) -> Result<Step> {
        let ctx = self.ctx;
        let uid = self.exp.uid.clone();
        let fs = self.st.fault.clone().unwrap_or_default();
        let dark_at = fs.zone_dark_at.as_ref().map(|t| t.0).unwrap_or(now);
        if !self.obj.spec.slos.is_empty() {
            ensure_runner(ctx, &self.obj).await?;
            let injected = fs.injected_at.as_ref().map(|t| t.0).unwrap_or(dark_at);
            ctx.with_runner(&uid, |r| {
                r.armed_at
                    .store(injected.as_millisecond(), Ordering::Relaxed);
                r.mark(injected.as_millisecond());
            });
            ctx.save_recording(&self.obj).await;
        }
        if self.obj.spec.fault.keep_dark && !self.power_loss() {
            let state = ensure_keeper(ctx, &self.obj, &parsed.scope, fs.pods_rekilled as i64);
            let rekilled = state.rekilled.load(Ordering::Relaxed) as i32;
            let new_notes = self.note_zone_changes(&state.notes());
            if rekilled != fs.pods_rekilled || !new_notes.is_empty() {
                self.st
                    .fault
                    .get_or_insert_with(FaultStatus::default)
                    .pods_rekilled = rekilled;
                self.write().await?;
                for n in new_notes {
                    self.event(EventType::Warning, "ZoneChanged", n).await;
                }
            }
        }
        let left = parsed.duration.saturating_sub(elapsed(dark_at, now));
        if !left.is_zero() {
            return Ok(Step::Wait(Action::requeue(
                left.min(Duration::from_secs(5)),
            )));
        }
        let (zone, duration) = (self.obj.spec.zone.clone(), self.obj.spec.duration.clone());
        ctx.with_runner(&uid, |r| r.mark(now.as_millisecond()));
        self.observe_causes().await;
        self.enter(
            Phase::Restoring,
            now,
            format!("{zone} was dark for {duration}; restoring"),
        );
        self.write().await?;
        Ok(Step::Next)
    }

    async fn restoring(&mut self, now: Timestamp) -> Result<Step> {
        let ctx = self.ctx;
        let uid = self.exp.uid.clone();
        if let Some(state) = ctx.stop_keeper(&uid) {
            let mut notes = state.notes();
            let deleted: Vec<String> = state.deleted.lock().unwrap().iter().cloned().collect();
            let nodes = Api::<Node>::all(ctx.client.clone());
            for name in deleted {
                if nodes.get_opt(&name).await?.is_some() {
                    notes.push(format!(
                        "node {name} registered again under the same name while dark; it carries nothing of the drill and was left as it is"
                    ));
                }
            }
            let rekilled = state.rekilled.load(Ordering::Relaxed) as i32;
            self.st
                .fault
                .get_or_insert_with(FaultStatus::default)
                .pods_rekilled = rekilled;
            for n in self.note_zone_changes(&notes) {
                self.event(EventType::Warning, "ZoneChanged", n).await;
            }
        }
        let already = self
            .st
            .conditions
            .iter()
            .any(|c| c.type_ == "Restored" && c.status == "True");
        if !already {
            let started = std::time::Instant::now();
            let n = match restore::restore(&ctx.client, &uid, ctx.config.concurrency).await {
                Ok(n) => {
                    tracing::info!(experiment = %self.exp.name, nodes = n, restore_ms = started.elapsed().as_millis() as u64, "zone restored");
                    n
                }
                Err(e) => {
                    let msg = format!("restore failed, retrying with backoff: {e}");
                    self.condition("Restored", false, "RestoreFailed", &msg, now);
                    self.write().await.ok();
                    self.event(EventType::Warning, "RestoreFailed", msg).await;
                    return Err(e);
                }
            };
            self.record_restored(n, now);
            self.write().await?;
            let zone = self.obj.spec.zone.clone();
            self.event(
                EventType::Normal,
                "Restored",
                format!("{zone} restored: {n} nodes"),
            )
            .await;
        }
        // After a power loss the nodes take a moment to report Ready again:
        // the experiment ends once they have (or says that they did not).
        if self.power_loss()
            && self
                .st
                .fault
                .as_ref()
                .is_some_and(|f| f.nodes_ready_again_at.is_none())
        {
            let since = self
                .st
                .fault
                .as_ref()
                .and_then(|f| f.restored_at.as_ref())
                .map(|t| t.0)
                .unwrap_or(now);
            let zone = self.obj.spec.zone.clone();
            let key = self.obj.spec.topology_key.clone();
            let not_ready: Vec<String> = collect::list_nodes(&ctx.client)
                .await?
                .into_iter()
                .filter(|n| n.labels.get(&key) == Some(&zone) && !n.ready)
                .map(|n| n.name)
                .collect();
            if !not_ready.is_empty() && elapsed(since, now) < POWER_BACK_WAIT {
                return Ok(Step::Wait(Action::requeue(Duration::from_secs(2))));
            }
            if not_ready.is_empty() {
                self.st
                    .fault
                    .get_or_insert_with(FaultStatus::default)
                    .nodes_ready_again_at = Some(MicroTime(now));
                let took = elapsed(since, now).as_secs_f64();
                self.event(
                    EventType::Normal,
                    "PowerBack",
                    format!("every node of {zone} is Ready again, {took:.1}s after the restore"),
                )
                .await;
            } else {
                let note = format!(
                    "{} nodes of {zone} were still NotReady {}s after the power came back: {}",
                    not_ready.len(),
                    POWER_BACK_WAIT.as_secs(),
                    not_ready
                        .iter()
                        .take(5)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                for n in self.note_zone_changes(&[note]) {
                    self.event(EventType::Warning, "ZoneChanged", n).await;
                }
                self.st
                    .fault
                    .get_or_insert_with(FaultStatus::default)
                    .nodes_ready_again_at = Some(MicroTime(now));
            }
            self.write().await?;
        }
        // The optional observation window: probes keep running after the restore.
        let observe = self
            .obj
            .spec
            .observe
            .as_deref()
            .and_then(|o| parse_duration(o).ok())
            .unwrap_or_default();
        let restored_at = self
            .st
            .fault
            .as_ref()
            .and_then(|f| f.restored_at.as_ref())
            .map(|t| t.0)
            .unwrap_or(now);
        if !self.obj.spec.slos.is_empty() && !observe.is_zero() {
            ensure_runner(ctx, &self.obj).await?;
            let left = observe.saturating_sub(elapsed(restored_at, now));
            if !left.is_zero() {
                ctx.save_recording(&self.obj).await;
                return Ok(Step::Wait(Action::requeue(
                    left.min(Duration::from_secs(5)),
                )));
            }
        }
        let verdict_reason = judge(ctx, &self.obj, &mut self.st, now).await;
        if let Some((verdict, reason)) = &verdict_reason {
            self.condition(
                "Passed",
                *verdict == Verdict::Passed,
                &verdict.to_string(),
                reason,
                now,
            );
        }
        let (zone, duration) = (self.obj.spec.zone.clone(), self.obj.spec.duration.clone());
        match self.st.abort_reason.clone() {
            Some(why) => self.finish(
                Phase::Aborted,
                "Aborted",
                &format!("{why}; zone restored"),
                now,
            ),
            None => self.finish(
                Phase::Completed,
                "Completed",
                &format!("{zone} was dark for {duration} and is restored"),
                now,
            ),
        }
        if let Some((verdict, reason)) = &verdict_reason
            && self.st.phase == Some(Phase::Completed)
        {
            self.st.reason = Some(format!("{verdict}: {reason}"));
        }
        self.write().await?;
        if let Some((verdict, reason)) = verdict_reason {
            self.event(
                if verdict == Verdict::Passed {
                    EventType::Normal
                } else {
                    EventType::Warning
                },
                &format!("Verdict{verdict}"),
                reason,
            )
            .await;
        }
        self.event(
            EventType::Normal,
            "Completed",
            self.st.reason.clone().unwrap_or_default(),
        )
        .await;
        Ok(Step::Next)
    }
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

fn abort_requested(obj: &DataCenterFailure) -> Option<String> {
    let value = obj.annotations().get(ABORT_ANNOTATION)?;
    let value = value.trim();
    Some(if value.is_empty() || value == "true" {
        format!("aborted by annotation {ABORT_ANNOTATION}")
    } else {
        format!("aborted: {value}")
    })
}

fn elapsed(since: Timestamp, now: Timestamp) -> Duration {
    Duration::try_from(now.duration_since(since)).unwrap_or(Duration::ZERO)
}

/// Make sure this experiment's keeper is running; returns its state.
fn ensure_keeper(
    ctx: &Context,
    obj: &DataCenterFailure,
    scope: &Scope,
    rekilled: i64,
) -> Arc<KeeperState> {
    let uid = obj.uid().unwrap_or_default();
    ctx.with_tasks(&uid, |t| {
        if let Some((h, state)) = &t.keeper
            && !h.is_finished()
        {
            return state.clone();
        }
        let state = Arc::new(KeeperState::with_rekilled(rekilled));
        let keep = Keep {
            exp: Experiment::of(obj),
            topology_key: obj.spec.topology_key.clone(),
            zone: obj.spec.zone.clone(),
            scope: scope.clone(),
            kill_pods: obj.spec.fault.kill_pods,
            concurrency: ctx.config.concurrency,
        };
        let (client, watch_client) = (ctx.client.clone(), ctx.watch_client.clone());
        let concurrency = ctx.config.concurrency;
        let st = state.clone();
        let task = tokio::spawn(async move {
            let uid = keep.exp.uid.clone();
            let name = keep.exp.name.clone();
            let end = fault::keep_dark(client.clone(), watch_client, keep, st).await;
            if end == KeeperEnd::ExperimentGone {
                // Deleted without a cleanup (its finalizer removed by hand):
                // nobody else will restore these nodes.
                match restore::restore(&client, &uid, concurrency).await {
                    Ok(n) if n > 0 => tracing::warn!(experiment = %name, nodes = n, "the experiment vanished while its zone was dark; restored its nodes"),
                    Ok(_) => {}
                    Err(e) => tracing::error!(experiment = %name, error = %e, "the experiment vanished; restoring its nodes failed (the periodic sweep retries)"),
                }
            }
            end
        });
        t.keeper = Some((task, state.clone()));
        state
    })
}

/// The pods behind one SLO, as they are now.
async fn observe(client: &Client, target: &plan::Target) -> Option<verdict::Observed> {
    let lp = ListParams::default().labels(&target.selector.to_string());
    let pods =
        Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), &target.namespace)
            .list(&lp)
            .await
            .ok()?
            .items;
    let mut o = verdict::Observed {
        what: target.what.clone(),
        ..Default::default()
    };
    for p in pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        o.total += 1;
        let conds = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        if conds
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
        {
            o.ready += 1;
        }
        if let Some(c) = conds.iter().find(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        }) {
            o.unschedulable += 1;
            if o.scheduler_message.is_none() {
                o.scheduler_message = c.message.clone();
            }
        }
    }
    Some(o)
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
    if ctx.with_runner(&uid, |_| ()).is_some() {
        return Ok(());
    }
    let previous = record::load_timeline(&ctx.client, &ctx.config.home_namespace(), &uid).await?;
    let runner = probe::Runner::start(&ctx.client, obj, previous, &ctx.config.probes);
    ctx.with_tasks(&uid, |t| {
        if t.runner.is_none() {
            t.runner = Some(runner);
        }
    });
    Ok(())
}

/// During the baseline: (every SLO has a sample, the first broken SLO and why).
fn baseline_check(r: &probe::Runner, started: i64, now: i64) -> (bool, Option<String>) {
    let mut sampled = true;
    for (name, tl) in &r.timelines {
        let tl = tl.lock().unwrap();
        let m = tl.measure(started, now + 1, now);
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
        None => record::load_timeline(&ctx.client, &ctx.config.home_namespace(), &uid)
            .await
            .unwrap_or_default(),
    };
    ctx.save_recording(obj).await;
    ctx.stop_tasks(&uid);
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
                &tl.measure(start, end, now.as_millisecond()),
                &obj.spec.zone,
                tl.last_error.as_deref(),
            );
            // With an observation window: when did a service that never
            // recovered while dark come back after the restore?
            if r.time_to_recover_seconds.is_none()
                && r.verdict == Some(Verdict::Failed)
                && obj.spec.observe.is_some()
            {
                let after = tl.measure(end, now.as_millisecond() + 1, now.as_millisecond());
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
    let predictions = st
        .plan
        .as_ref()
        .map(|p| p.slo_predictions.clone())
        .unwrap_or_default();
    let mut results = results;
    for r in &mut results {
        r.predicted = predictions
            .iter()
            .find(|p| p.name == r.name)
            .and_then(|p| p.verdict);
        if r.verdict != Some(Verdict::Passed) {
            r.cause = st
                .slos
                .iter()
                .find(|s| s.name == r.name)
                .and_then(|s| s.cause.clone());
        }
    }
    let namespaces: std::collections::BTreeMap<String, String> = obj
        .spec
        .slos
        .iter()
        .filter_map(|s| Some((s.name.clone(), collect::probe_namespace(s)?)))
        .collect();
    verdict::attribute(&obj.spec.slos, &mut results, &predictions, &namespaces);
    let (v, reason) = verdict::overall(&obj.spec.slos, &results);
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
