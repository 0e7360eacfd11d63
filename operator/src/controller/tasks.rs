//! The long-running work of each experiment, in tasks of its own so that a
//! stuck API call never blocks the reconcile that would honour an abort, a
//! deletion or the timeout: the injection, the keeper that holds the zone
//! dark, and the probe runner. They live in memory only; everything they
//! decide is written to the cluster (marks, status, the saved recording), so
//! a restarted operator starts them again from there.

use super::runtime::Context;
use crate::api::DataCenterFailure;
use crate::fault::{self, Experiment, Injected, Keep, KeeperEnd, KeeperState};
use crate::plan::Scope;
use crate::spec::Checked;
use crate::{Result, probe, record, restore};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use std::sync::Arc;
use tokio::task::JoinHandle;

/// The tasks one experiment runs while this operator leads.
#[derive(Default)]
pub struct Tasks {
    pub injector: Option<JoinHandle<std::result::Result<Injected, String>>>,
    /// A finished injection whose outcome is not in the status yet.
    pub injected: Option<std::result::Result<Injected, String>>,
    pub keeper: Option<(JoinHandle<KeeperEnd>, Arc<KeeperState>)>,
    pub runner: Option<probe::Runner>,
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

impl Context {
    pub(super) fn with_tasks<T>(&self, uid: &str, f: impl FnOnce(&mut Tasks) -> T) -> T {
        f(self
            .tasks
            .lock()
            .unwrap()
            .entry(uid.to_string())
            .or_default())
    }

    pub(super) fn with_runner<T>(
        &self,
        uid: &str,
        f: impl FnOnce(&probe::Runner) -> T,
    ) -> Option<T> {
        self.tasks
            .lock()
            .unwrap()
            .get(uid)
            .and_then(|t| t.runner.as_ref())
            .map(f)
    }

    pub(super) async fn save_recording(&self, obj: &DataCenterFailure) {
        let Some(rec) = self.with_runner(&obj.uid().unwrap_or_default(), |r| r.recording()) else {
            return;
        };
        let ns = self.config.home_namespace();
        if let Err(e) = record::save_timeline(&self.client, &ns, obj, &rec).await {
            tracing::warn!(experiment = %obj.name_any(), error = %e, "cannot save the probe recording");
        }
    }

    /// Stop every task of an experiment.
    pub(super) fn stop_tasks(&self, uid: &str) {
        if let Some(mut t) = self.tasks.lock().unwrap().remove(uid) {
            t.stop();
        }
    }

    pub(super) fn stop_keeper(&self, uid: &str) -> Option<Arc<KeeperState>> {
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

    /// Start the probes of an experiment if they are not running, continuing
    /// from the saved recording (after an operator restart).
    pub(super) async fn ensure_runner(
        &self,
        obj: &DataCenterFailure,
        spec: &Checked,
    ) -> Result<()> {
        let uid = obj.uid().unwrap_or_default();
        if self.with_runner(&uid, |_| ()).is_some() {
            return Ok(());
        }
        let previous =
            record::load_timeline(&self.client, &self.config.home_namespace(), &uid).await?;
        let runner = probe::Runner::start(
            &self.client,
            &obj.name_any(),
            &uid,
            &spec.slos,
            previous,
            &self.config.probes,
            watched_services(obj, spec),
        );
        self.with_tasks(&uid, |t| {
            if t.runner.is_none() {
                t.runner = Some(runner);
            }
        });
        Ok(())
    }

    /// Make sure this experiment's keeper is running; returns its state.
    pub(super) fn ensure_keeper(
        &self,
        obj: &DataCenterFailure,
        scope: &Scope,
        rekilled: i64,
    ) -> Arc<KeeperState> {
        let uid = obj.uid().unwrap_or_default();
        self.with_tasks(&uid, |t| {
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
                concurrency: self.config.concurrency,
                metrics: self.metrics.clone(),
            };
            let task = tokio::spawn(keep_then_clean_up(
                self.clone_clients(),
                keep,
                state.clone(),
            ));
            t.keeper = Some((task, state.clone()));
            state
        })
    }

    fn clone_clients(&self) -> KeeperClients {
        KeeperClients {
            calls: self.client.clone(),
            watches: self.watch_client.clone(),
            concurrency: self.config.concurrency,
        }
    }
}

struct KeeperClients {
    calls: kube::Client,
    watches: kube::Client,
    concurrency: usize,
}

/// Keep the zone dark until the keeper is stopped or the experiment goes.
/// An experiment deleted without a cleanup (its finalizer removed by hand)
/// has nobody else to restore its nodes: the keeper does.
async fn keep_then_clean_up(c: KeeperClients, keep: Keep, st: Arc<KeeperState>) -> KeeperEnd {
    let exp = keep.exp.clone();
    let name = exp.name.clone();
    let end = fault::keep_dark(c.calls.clone(), c.watches, keep, st).await;
    if end == KeeperEnd::ExperimentGone {
        match restore::restore(&c.calls, &exp, c.concurrency).await {
            Ok(n) if n > 0 => {
                tracing::warn!(experiment = %name, nodes = n, "the experiment vanished while its zone was dark; restored its nodes")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(experiment = %name, error = %e, "the experiment vanished; restoring its nodes failed (the periodic sweep retries)")
            }
        }
    }
    end
}

/// The Services whose ready endpoints a drill records: every Service in the
/// target namespaces (or, targeting all, in the SLOs' probes' namespaces),
/// and every Service the plan's dependency graph names.
fn watched_services(obj: &DataCenterFailure, spec: &Checked) -> probe::endpoints::Watched {
    let mut namespaces: std::collections::BTreeSet<String> =
        spec.scope.namespaces.iter().cloned().collect();
    if namespaces.is_empty() {
        namespaces = obj
            .spec
            .slos
            .iter()
            .filter_map(crate::plan::collect::probe_namespace)
            .collect();
    }
    let services = obj
        .status
        .as_ref()
        .and_then(|s| s.plan.as_ref())
        .map(|p| p.dependency_services.iter().cloned().collect())
        .unwrap_or_default();
    probe::endpoints::Watched {
        namespaces,
        services,
    }
}
