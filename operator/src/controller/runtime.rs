//! The operator process: its two clients, the [`Context`] every reconcile
//! shares, the controllers it runs, the sweep that restores nodes of
//! experiments that vanished, and the stand-down that leaves no zone dark
//! when the last operator stops.

use super::drill::{Drill, reconcile};
use super::tasks::Tasks;
use crate::api::{DataCenterFailure, Phase};
use crate::clients::Clients;
use crate::metrics::{ErrorLabel, Metrics};
use crate::{Error, Result, restore};
use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{EventType, Reporter};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    /// PowerLoss: how long after the zone's nodes were labelled every node
    /// agent must have acknowledged the cut.
    pub power_ack_timeout: Duration,
    /// PowerLoss: how long after the zone's nodes were labelled every node
    /// must be NotReady (the node lifecycle controller's
    /// node-monitor-grace-period, 50 s by default, plus margin).
    pub power_not_ready_timeout: Duration,
    /// Pause between node changes while injecting (for rehearsing an operator
    /// crash in the middle of injection).
    pub inject_pause: Option<Duration>,
    /// What probes may read and reach, and the hosts file they resolve with.
    pub probes: crate::probe::Env,
}

/// How long the node agents have to acknowledge a power cut: each sees its
/// label within a second (its watch), unless its watch is backing off,
/// which waits 30 s at most.
pub const DEFAULT_POWER_ACK_TIMEOUT: Duration = Duration::from_secs(45);

/// How long a cut node has to go NotReady: the node lifecycle controller
/// marks it after node-monitor-grace-period (50 s by default) without a
/// heartbeat, checking every node-monitor-period (5 s); measured on real
/// nodes, 41-50 s after the cut. Then a margin for a busy control plane.
pub const DEFAULT_POWER_NOT_READY_TIMEOUT: Duration = Duration::from_secs(90);

impl Default for Config {
    fn default() -> Self {
        Config {
            namespace: None,
            self_selector: None,
            concurrency: crate::fault::DEFAULT_WRITE_CONCURRENCY,
            restore_grace: Duration::from_secs(120),
            injection_timeout: Duration::from_secs(600),
            power_ack_timeout: DEFAULT_POWER_ACK_TIMEOUT,
            power_not_ready_timeout: DEFAULT_POWER_NOT_READY_TIMEOUT,
            inject_pause: None,
            probes: crate::probe::Env::default(),
        }
    }
}

impl Config {
    /// Where records and claims are kept.
    pub fn home_namespace(&self) -> String {
        self.namespace.clone().unwrap_or_else(|| "default".into())
    }
}

/// Built once, shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub watch_client: Client,
    pub recorder: crate::event::Events,
    pub config: Config,
    pub metrics: Arc<Metrics>,
    /// The tasks of each experiment this operator runs, by uid.
    pub(super) tasks: Mutex<HashMap<String, Tasks>>,
    /// Failed reconciles in a row, by uid (the retry backoff).
    pub(super) failures: Mutex<HashMap<String, u32>>,
    /// The unfinished experiments as last reconciled, by uid: what a leader
    /// that loses its lease leaves behind.
    pub(super) seen: Mutex<HashMap<String, Seen>>,
}

/// An unfinished experiment as last reconciled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub name: String,
    pub zone: String,
    pub phase: Phase,
}

impl Seen {
    /// Whether the experiment holds its zone (it began taking it down).
    pub fn holds_zone(&self) -> bool {
        matches!(
            self.phase,
            Phase::Injecting | Phase::ZoneDown | Phase::Restoring
        )
    }
}

/// What a leader that stops acting leaves behind, in one sentence: the
/// experiments mid-drill, the zones they hold, and that they resume when an
/// operator leads again.
pub fn left_behind(seen: &[Seen]) -> String {
    let mut held: Vec<&Seen> = seen.iter().filter(|s| s.holds_zone()).collect();
    let mut waiting: Vec<&Seen> = seen.iter().filter(|s| !s.holds_zone()).collect();
    held.sort_by(|a, b| a.name.cmp(&b.name));
    waiting.sort_by(|a, b| a.name.cmp(&b.name));
    let list = |v: &[&Seen]| {
        v.iter()
            .map(|s| format!("{} ({}, zone {})", s.name, s.phase, s.zone))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = if held.is_empty() {
        "no experiment holds a zone".to_string()
    } else {
        format!(
            "left mid-drill with the zone held: {}; each resumes from the cluster's state (and restores its zone) when an operator leads again",
            list(&held)
        )
    };
    if !waiting.is_empty() {
        out.push_str(&format!(
            "; not yet begun, nothing changed: {}",
            list(&waiting)
        ));
    }
    out
}

impl Context {
    pub fn new(clients: Clients, config: Config) -> Arc<Self> {
        let reporter = Reporter {
            controller: "firedrill".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Arc::new(Context {
            recorder: crate::event::Events::new(clients.calls.clone(), reporter),
            metrics: clients.metrics,
            client: clients.calls,
            watch_client: clients.watches,
            config,
            tasks: Mutex::default(),
            failures: Mutex::default(),
            seen: Mutex::default(),
        })
    }

    /// Note an experiment as reconciled now (forgotten once it is finished
    /// or gone).
    pub(super) fn note(&self, obj: &DataCenterFailure) {
        let uid = obj.uid().unwrap_or_default();
        let phase = obj
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .unwrap_or(Phase::Pending);
        let mut seen = self.seen.lock().unwrap();
        if phase.is_terminal() {
            seen.remove(&uid);
        } else {
            seen.insert(
                uid,
                Seen {
                    name: obj.name_any(),
                    zone: obj.spec.zone.clone(),
                    phase,
                },
            );
        }
    }

    pub(super) fn forget(&self, uid: &str) {
        self.seen.lock().unwrap().remove(uid);
    }

    /// Stop acting at once (leadership is lost): every task of every
    /// experiment is stopped, nothing is written. The unfinished
    /// experiments, as last reconciled.
    pub fn abandon(&self) -> Vec<Seen> {
        let uids: Vec<String> = self.tasks.lock().unwrap().keys().cloned().collect();
        for uid in uids {
            self.stop_tasks(&uid);
        }
        let mut seen: Vec<Seen> = self.seen.lock().unwrap().values().cloned().collect();
        seen.sort_by(|a, b| a.name.cmp(&b.name));
        seen
    }

    /// Forget the failures of an experiment: its next failure starts the
    /// backoff from the beginning.
    pub(super) fn forget_failures(&self, uid: &str) {
        self.failures.lock().unwrap().remove(uid);
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
    let ctx = Context::new(clients.clone(), config);
    run_with(ctx.clone(), clients, stop).await?;
    Ok(ctx)
}

/// [`run`] with a context the caller built (and keeps, to [`Context::abandon`]
/// it when leadership is lost).
pub async fn run_with(
    ctx: Arc<Context>,
    clients: Clients,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let client = clients.calls.clone();
    let restored = restore::restore_orphans(&client, true).await?;
    if !restored.is_empty() {
        tracing::warn!(nodes = ?restored, "restored nodes held by experiments that no longer exist");
    }
    ctx.metrics.set_ready();
    let api = Api::<DataCenterFailure>::all(clients.watches.clone());
    let experiments = Controller::new(api, watcher::Config::default().any_semantic())
        .trigger_backoff(crate::fault::backoff::Backoff::new())
        .graceful_shutdown_on(stopped(stop.clone()))
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(experiment = %obj.name, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile failed"),
            }
        });
    let schedules = crate::schedule::run(clients.clone(), stopped(stop.clone()));
    tokio::select! {
        _ = async { tokio::join!(experiments, schedules) } => {}
        _ = sweep_orphans(&client) => {}
    }
    Ok(())
}

/// Nodes whose experiment vanished without a cleanup (its finalizer removed
/// by hand, say) are restored within a minute; those whose label was also
/// removed by hand (found only by a full node list) within five. Runs until
/// dropped.
async fn sweep_orphans(client: &Client) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    tick.tick().await;
    for sweep in 1u64.. {
        tick.tick().await;
        match restore::restore_orphans(client, sweep % ALL_TRACES_EVERY == 0).await {
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
}

/// One sweep in this many (every 5 minutes) lists every node, for traces
/// without the mark label.
const ALL_TRACES_EVERY: u64 = 10;

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
        if !phase.is_terminal() {
            stand_down_one(Drill::new(ctx, obj)).await;
        }
    }
}

/// Restore one experiment's zone and end it Aborted.
async fn stand_down_one(mut d: Drill<'_>) {
    let ctx = d.ctx;
    match restore::restore(&ctx.client, &d.exp, ctx.config.concurrency).await {
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

fn error_policy(obj: Arc<DataCenterFailure>, err: &Error, ctx: Arc<Context>) -> Action {
    let uid = obj.uid().unwrap_or_default();
    let n = {
        let mut f = ctx.failures.lock().unwrap();
        let n = f.entry(uid).or_default();
        *n += 1;
        *n
    };
    let delay = retry_delay(n);
    ctx.metrics
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
pub(super) fn retry_delay(n: u32) -> Duration {
    let delay = Duration::from_millis(500) * 2u32.saturating_pow(n.min(6));
    delay.min(Duration::from_secs(30))
}
