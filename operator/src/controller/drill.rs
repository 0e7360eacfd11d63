//! One reconcile of one experiment: the entry point ([`reconcile`], under the
//! finalizer), the [`Drill`] that carries the object and the status being
//! built, its bookkeeping (phase transitions, conditions, events, the
//! conditional status write), and the dispatch to the phase functions.

use super::runtime::Context;
use crate::api::{
    ABORT_ANNOTATION, DataCenterFailure, DataCenterFailureStatus, FINALIZER, FaultMode,
    FaultStatus, MAX_LISTED, Phase, PhaseTransition, Verdict,
};
use crate::event::publish;
use crate::fault::Experiment;
use crate::metrics::{PhaseLabel, SloLabel, VerdictLabel};
use crate::plan::Request;
use crate::spec::Checked;
use crate::{Error, Result, exclusion, probe, restore, spec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

pub async fn reconcile(obj: Arc<DataCenterFailure>, ctx: Arc<Context>) -> Result<Action> {
    let api = Api::<DataCenterFailure>::all(ctx.client.clone());
    let uid = obj.uid().unwrap_or_default();
    let deleting = obj.metadata.deletion_timestamp.is_some();
    ctx.note(&obj);
    let action = finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Finalizer::Apply(obj) => apply(&obj, &ctx).await,
            Finalizer::Cleanup(obj) => cleanup(&obj, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))?;
    // A success starts the next failure's backoff from the beginning.
    ctx.forget_failures(&uid);
    if deleting {
        ctx.forget(&uid);
    }
    Ok(action)
}

/// Deleted: stop keeping the zone dark and restore it. Works whatever the
/// phase, including when nothing was ever changed.
async fn cleanup(obj: &DataCenterFailure, ctx: &Context) -> Result<Action> {
    // Only an experiment that began its fault can have left traces other
    // than its label (a full node list is not free at 5,000 nodes).
    let began = obj
        .status
        .as_ref()
        .and_then(|s| s.fault.as_ref())
        .is_some_and(|f| f.injected_at.is_some());
    let traces = if began { Traces::All } else { Traces::Labelled };
    let n = let_go(ctx, &Experiment::of(obj), traces).await?;
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
    Ok(Action::await_change())
}

/// Which nodes letting go looks at.
enum Traces {
    /// Every node with any trace of the experiment (label, annotation, taint).
    All,
    /// Only the nodes carrying its mark label (cheap; for repeated looks).
    Labelled,
}

/// Let go of an experiment: stop its tasks, restore every node it still
/// holds, give its turn back, forget its failures. Returns the nodes restored.
async fn let_go(ctx: &Context, exp: &Experiment, traces: Traces) -> Result<i32> {
    let uid = exp.uid.as_str();
    ctx.stop_tasks(uid);
    let (client, concurrency) = (&ctx.client, ctx.config.concurrency);
    let n = match traces {
        Traces::All => restore::restore(client, exp, concurrency).await?,
        Traces::Labelled => restore::restore_labelled(client, exp, concurrency).await?,
    };
    exclusion::release(client, &ctx.config.home_namespace(), uid).await?;
    ctx.forget_failures(uid);
    Ok(n)
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

/// How long after its end an experiment is looked at again for nodes still held.
const SETTLE: Duration = Duration::from_secs(60);

/// What a phase function wants next.
pub(super) enum Step {
    /// The status moved on: run the next phase now.
    Next,
    /// Come back later (or on a change).
    Wait(Action),
}

impl Step {
    /// Come back after `d`.
    pub(super) fn after(d: Duration) -> Result<Step> {
        Ok(Step::Wait(Action::requeue(d)))
    }
}

/// One reconcile of one experiment: the object as read, the status being
/// built, and the resourceVersion every write is conditional on.
pub(super) struct Drill<'a> {
    pub ctx: &'a Context,
    pub api: Api<DataCenterFailure>,
    pub obj: DataCenterFailure,
    pub st: DataCenterFailureStatus,
    pub rv: Option<String>,
    pub exp: Experiment,
    pub generation: Option<i64>,
    /// Metrics of what this reconcile changed, counted only once its status
    /// write succeeds: a write refused (a conflict) is retried from the
    /// start, and must not count the same transition twice.
    pub counts: Vec<Count>,
}

/// One metric update waiting for the status write that makes it true.
pub(super) enum Count {
    Phase(String),
    Experiment(String),
    Recovered(String, f64),
}

impl<'a> Drill<'a> {
    pub fn new(ctx: &'a Context, obj: DataCenterFailure) -> Self {
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
            counts: vec![],
        }
    }

    pub fn phase(&self) -> Phase {
        self.st.phase.unwrap_or(Phase::Pending)
    }

    /// Write the status, conditional on the resourceVersion it was computed
    /// from: if anything changed the object meanwhile, the write fails with a
    /// conflict and the reconcile starts again from a fresh read.
    pub async fn write(&mut self) -> Result<()> {
        let written =
            crate::api::write_status(&self.api, &self.exp.name, self.rv.as_deref(), &self.st)
                .await?;
        self.rv = written.resource_version();
        self.count_written();
        // What a leader that loses its lease would leave, as of this write.
        self.ctx.note(&written);
        Ok(())
    }

    /// Apply the metric updates the written status makes true.
    fn count_written(&mut self) {
        let m = &self.ctx.metrics;
        for c in self.counts.drain(..) {
            match c {
                Count::Phase(phase) => {
                    m.phase_transitions
                        .get_or_create(&PhaseLabel { phase })
                        .inc();
                }
                Count::Experiment(verdict) => {
                    m.experiments.get_or_create(&VerdictLabel { verdict }).inc();
                }
                Count::Recovered(slo, seconds) => {
                    m.time_to_recover
                        .get_or_create(&SloLabel { slo })
                        .observe(seconds);
                }
            }
        }
    }

    pub async fn event(&self, type_: EventType, reason: &str, note: String) {
        publish(
            &self.ctx.recorder,
            &self.obj.object_ref(&()),
            type_,
            reason,
            note,
        )
        .await;
    }

    /// Publish one warning per note.
    pub async fn warn_each(&self, reason: &str, notes: Vec<String>) {
        for n in notes {
            self.event(EventType::Warning, reason, n).await;
        }
    }

    pub fn enter(&mut self, phase: Phase, now: Timestamp, reason: impl Into<String>) {
        self.st.phase = Some(phase);
        self.st.reason = Some(reason.into());
        self.counts.push(Count::Phase(phase.to_string()));
        self.st.transitions.push(PhaseTransition {
            phase,
            time: MicroTime(now),
        });
    }

    pub fn condition(
        &mut self,
        type_: &str,
        ok: bool,
        reason: &str,
        message: &str,
        now: Timestamp,
    ) {
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
    pub fn finish(&mut self, phase: Phase, reason: &str, message: &str, now: Timestamp) {
        self.enter(phase, now, message);
        self.condition("Completed", true, reason, message, now);
        let outcome = self
            .st
            .verdict
            .map(|v| v.to_string())
            .unwrap_or_else(|| phase.to_string());
        self.counts.push(Count::Experiment(outcome));
    }

    /// The fault part of the status, created on first use.
    pub fn fault(&mut self) -> &mut FaultStatus {
        self.st.fault.get_or_insert_with(FaultStatus::default)
    }

    /// Record a finished restore of `n` nodes in the status.
    pub fn record_restored(&mut self, n: i32, now: Timestamp) {
        let fs = self.fault();
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

    /// Add notes about the zone changing behind the plan's back: each is
    /// counted, and the first [`MAX_LISTED`] are listed. Returns the new ones
    /// (those not listed already). Only the listed ones can be told apart
    /// here: a source that may hand over more than that (the keeper) hands
    /// each note over once.
    pub fn note_zone_changes(&mut self, notes: &[String]) -> Vec<String> {
        let fs = self.fault();
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

    pub async fn release_turn(&self) {
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

    /// The spec, parsed and checked against the probe policy.
    fn parse(&self) -> std::result::Result<Checked, String> {
        let checked = spec::parse(&self.obj.spec, self.ctx.config.namespace.clone())?;
        probe::check_spec(&self.obj.spec, &self.ctx.config.probes)?;
        Ok(checked)
    }

    pub fn power_loss(&self) -> bool {
        self.obj.spec.fault.mode == FaultMode::PowerLoss
    }

    pub fn request(&self, spec: &Checked) -> Request {
        Request::from_spec(&self.obj.spec, spec.scope.clone())
    }

    pub fn has_slos(&self) -> bool {
        !self.obj.spec.slos.is_empty()
    }

    /// When the zone went down (injection started), if it did.
    pub fn injected_at(&self) -> Option<Timestamp> {
        self.st
            .fault
            .as_ref()
            .and_then(|f| f.injected_at.as_ref())
            .map(|t| t.0)
    }

    /// When the zone went dark: `zoneDarkAt`, or where a status lacks it,
    /// when the injection started or ZoneDown was entered (never "now",
    /// which would keep it dark forever). None: nothing says.
    pub fn dark_at(&self) -> Option<Timestamp> {
        let fs = self.st.fault.as_ref();
        fs.and_then(|f| f.zone_dark_at.as_ref())
            .map(|t| t.0)
            .or_else(|| self.injected_at())
            .or_else(|| phase_entered(&self.st, Phase::ZoneDown))
    }

    /// One step of the state machine.
    pub async fn step(&mut self) -> Result<Step> {
        let now = Timestamp::now();
        let phase = self.phase();
        if phase.is_terminal() {
            return self.ended(now).await;
        }
        if let Some(why) = abort_requested(&self.obj)
            && let Some(step) = self.abort_requested(phase, why, now).await?
        {
            return Ok(step);
        }
        let spec = match self.parse() {
            Ok(s) => s,
            Err(msg) => return self.spec_unreadable(phase, msg, now).await,
        };
        if let Some(why) = self.timed_out(phase, &spec, now) {
            return self.abort_fault(why, "TimedOut", now).await;
        }
        match phase {
            Phase::Pending => self.pending(now).await,
            Phase::Planning => self.planning(&spec, now).await,
            Phase::Baseline => self.baseline(&spec, now).await,
            Phase::Injecting => self.injecting(&spec, now).await,
            Phase::ZoneDown => self.zone_down(&spec, now).await,
            Phase::Restoring => self.restoring(&spec, now).await,
            Phase::Completed | Phase::Aborted | Phase::Failed => unreachable!("handled above"),
        }
    }

    /// The spec cannot be read (an operator restarted with a narrower probe
    /// policy, say): before the fault nothing is touched and the experiment
    /// fails; during the fault it ends and the zone is restored; while
    /// restoring, the zone is restored and the experiment ends without a verdict.
    async fn spec_unreadable(&mut self, phase: Phase, msg: String, now: Timestamp) -> Result<Step> {
        match phase {
            Phase::Injecting | Phase::ZoneDown => {
                // Restore first: a status write that the API server refuses
                // (a spec the new schema no longer accepts) must not keep
                // the zone dark.
                if let Some(h) = self.ctx.with_tasks(&self.exp.uid, |t| t.injector.take()) {
                    h.abort();
                }
                let (client, concurrency) = (&self.ctx.client, self.ctx.config.concurrency);
                restore::restore(client, &self.exp, concurrency).await?;
                let why = format!("the spec can no longer be used: {msg}");
                self.abort_fault(why, "InvalidSpec", now).await
            }
            Phase::Restoring => {
                self.drain_keeper().await?;
                self.restore_nodes(now).await?;
                self.ctx.save_recording(&self.obj).await;
                self.ctx.stop_tasks(&self.exp.uid);
                if self.has_slos() {
                    self.st.verdict = Some(Verdict::Inconclusive);
                }
                let msg = format!("{msg}; zone restored, no verdict");
                self.fail(Phase::Aborted, "InvalidSpec", msg, now).await
            }
            _ => {
                self.ctx.stop_tasks(&self.exp.uid);
                self.fail(Phase::Failed, "InvalidSpec", msg, now).await
            }
        }
    }

    /// End in a terminal phase with a warning.
    pub async fn fail(
        &mut self,
        phase: Phase,
        reason: &str,
        msg: String,
        now: Timestamp,
    ) -> Result<Step> {
        self.finish(phase, reason, &msg, now);
        self.write().await?;
        self.event(EventType::Warning, reason, msg).await;
        Ok(Step::Next)
    }

    /// The abort annotation: before the fault nothing is changed, during it
    /// the zone is restored. None: nothing to abort in this phase.
    async fn abort_requested(
        &mut self,
        phase: Phase,
        why: String,
        now: Timestamp,
    ) -> Result<Option<Step>> {
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
                Ok(Some(Step::Next))
            }
            Phase::Injecting | Phase::ZoneDown => {
                Ok(Some(self.abort_fault(why, "Aborting", now).await?))
            }
            _ => Ok(None),
        }
    }

    /// Why the fault must end now: it has lasted longer than it may. The
    /// zone may be dark for the duration and the grace from the moment it
    /// went dark, however long taking it down took; taking it down has a
    /// deadline of its own (the injection task's), which this bounds across
    /// operator restarts (each starts the task again).
    fn timed_out(&self, phase: Phase, spec: &Checked, now: Timestamp) -> Option<String> {
        let config = &self.ctx.config;
        let grace = config.restore_grace;
        match phase {
            Phase::Injecting => {
                let limit = config.injection_timeout + grace;
                (elapsed(self.injected_at()?, now) > limit).then(|| {
                    format!(
                        "timed out: taking the zone down took longer than {}s + {}s grace",
                        config.injection_timeout.as_secs(),
                        grace.as_secs()
                    )
                })
            }
            // The node agents bring the power back at injectedAt + duration +
            // grace on their own: a PowerLoss window must not outlast that.
            Phase::ZoneDown if self.power_loss() => {
                (elapsed(self.injected_at()?, now) > spec.duration + grace).then(|| {
                    format!(
                        "timed out: the zone was down longer than duration + {}s grace",
                        grace.as_secs()
                    )
                })
            }
            Phase::ZoneDown => (elapsed(self.dark_at()?, now) > spec.duration + grace).then(|| {
                format!(
                    "timed out: the zone was down longer than duration + {}s grace",
                    grace.as_secs()
                )
            }),
            _ => None,
        }
    }

    /// End the fault early (abort annotation, guard breach, timeout, an
    /// injection that failed): stop injecting, then restore.
    pub async fn abort_fault(&mut self, why: String, event: &str, now: Timestamp) -> Result<Step> {
        if let Some(h) = self.ctx.with_tasks(&self.exp.uid, |t| t.injector.take()) {
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
        // A finished injection's outcome is dropped only once the abort is
        // written: a lost write must not make the injection look unstarted.
        self.ctx.with_tasks(&self.exp.uid, |t| t.injected = None);
        self.event(EventType::Warning, event, why).await;
        Ok(Step::Next)
    }

    /// A finished experiment holds no node and no turn (a safety net: the
    /// phases that end it restore first, and look for every trace; this runs
    /// on every reconcile of a finished experiment, so it looks only at the
    /// labelled nodes, where a write that raced the restore leaves its mark).
    /// For a minute after the end it looks
    /// again every few seconds: a node patch of an aborted injection that was
    /// still in flight can land after the restore listed the held nodes.
    async fn ended(&mut self, now: Timestamp) -> Result<Step> {
        let n = let_go(self.ctx, &self.exp, Traces::Labelled).await?;
        if n > 0 {
            self.event(
                EventType::Warning,
                "Restored",
                format!("restored {n} nodes still held after the experiment ended"),
            )
            .await;
        }
        if let Some(ended_at) = phase_entered(&self.st, self.phase())
            && elapsed(ended_at, now) < SETTLE
        {
            return Step::after(Duration::from_secs(10));
        }
        Ok(Step::Wait(Action::await_change()))
    }
}

pub(super) fn set_condition(
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

pub(super) fn elapsed(since: Timestamp, now: Timestamp) -> Duration {
    Duration::try_from(now.duration_since(since)).unwrap_or(Duration::ZERO)
}

/// When the experiment last entered `phase`.
pub(super) fn phase_entered(st: &DataCenterFailureStatus, phase: Phase) -> Option<Timestamp> {
    st.transitions
        .iter()
        .rev()
        .find(|t| t.phase == phase)
        .map(|t| t.time.0)
}
