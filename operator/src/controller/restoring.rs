//! Restoring → Completed (or Aborted): drain the keeper, restore exactly what
//! was changed, wait for the power to come back (PowerLoss), keep observing
//! for the optional window, then judge and conclude. Every step is
//! idempotent: a restore already recorded is not redone.

use super::drill::{Drill, Step, elapsed};
use crate::api::{Phase, Verdict};
use crate::plan::collect;
use crate::spec::Checked;
use crate::{Result, restore};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::events::EventType;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How long a restore after a power loss waits for the zone's nodes to be Ready again.
const POWER_BACK_WAIT: Duration = Duration::from_secs(180);

impl Drill<'_> {
    pub(super) async fn restoring(&mut self, spec: &Checked, now: Timestamp) -> Result<Step> {
        self.drain_keeper().await?;
        self.restore_nodes(now).await?;
        if let Some(wait) = self.await_power_back(now).await? {
            return Ok(wait);
        }
        if let Some(wait) = self.observe_window(spec, now).await? {
            return Ok(wait);
        }
        self.conclude(spec, now).await
    }

    /// Stop the keeper and bring its last counts and notes into the status.
    pub(super) async fn drain_keeper(&mut self) -> Result<()> {
        let Some(state) = self.ctx.stop_keeper(&self.exp.uid) else {
            return Ok(());
        };
        // The keeper is stopped: its notes not handed over yet are the last.
        let (mut notes, _) = state.new_notes();
        let deleted: Vec<String> = state.deleted.lock().unwrap().iter().cloned().collect();
        let nodes = Api::<Node>::all(self.ctx.client.clone());
        for name in deleted {
            if nodes.get_opt(&name).await?.is_some() {
                notes.push(format!(
                    "node {name} registered again under the same name while dark; it carries nothing of the drill and was left as it is"
                ));
            }
        }
        self.fault().pods_rekilled = state.rekilled.load(Ordering::Relaxed) as i32;
        let new = self.note_zone_changes(&notes);
        self.warn_each("ZoneChanged", new).await;
        Ok(())
    }

    /// Restore every node this experiment holds, once.
    pub(super) async fn restore_nodes(&mut self, now: Timestamp) -> Result<()> {
        let already = self
            .st
            .conditions
            .iter()
            .any(|c| c.type_ == "Restored" && c.status == "True");
        if already {
            return Ok(());
        }
        let ctx = self.ctx;
        let started = std::time::Instant::now();
        let n = match restore::restore(&ctx.client, &self.exp, ctx.config.concurrency).await {
            Ok(n) => n,
            Err(e) => {
                let msg = format!("restore failed, retrying with backoff: {e}");
                self.condition("Restored", false, "RestoreFailed", &msg, now);
                self.write().await.ok();
                self.event(EventType::Warning, "RestoreFailed", msg).await;
                return Err(e);
            }
        };
        tracing::info!(experiment = %self.exp.name, nodes = n, restore_ms = started.elapsed().as_millis() as u64, "zone restored");
        self.record_restored(n, now);
        self.write().await?;
        let msg = format!("{} restored: {n} nodes", self.obj.spec.zone);
        self.event(EventType::Normal, "Restored", msg).await;
        Ok(())
    }

    /// When the restore happened (now, if the status does not say).
    fn restored_at(&self, now: Timestamp) -> Timestamp {
        self.st
            .fault
            .as_ref()
            .and_then(|f| f.restored_at.as_ref())
            .map(|t| t.0)
            .unwrap_or(now)
    }

    /// After a power loss the nodes take a moment to report Ready again: the
    /// experiment ends once they have (or says that they did not, after
    /// [`POWER_BACK_WAIT`]). Some(step): come back later.
    async fn await_power_back(&mut self, now: Timestamp) -> Result<Option<Step>> {
        let waiting = self
            .st
            .fault
            .as_ref()
            .is_some_and(|f| f.nodes_ready_again_at.is_none());
        if !self.power_loss() || !waiting {
            return Ok(None);
        }
        let since = self.restored_at(now);
        let (zone, key) = (&self.obj.spec.zone, &self.obj.spec.topology_key);
        let not_ready: Vec<String> = collect::list_nodes(&self.ctx.client)
            .await?
            .into_iter()
            .filter(|n| n.labels.get(key) == Some(zone) && !n.ready)
            .map(|n| n.name)
            .collect();
        let took = elapsed(since, now);
        if !not_ready.is_empty() && took < POWER_BACK_WAIT {
            return Ok(Some(Step::after(Duration::from_secs(2))?));
        }
        let zone = zone.clone();
        if not_ready.is_empty() {
            let msg = format!(
                "every node of {zone} is Ready again, {:.1}s after the restore",
                took.as_secs_f64()
            );
            self.event(EventType::Normal, "PowerBack", msg).await;
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
            let new = self.note_zone_changes(&[note]);
            self.warn_each("ZoneChanged", new).await;
        }
        self.fault().nodes_ready_again_at = Some(MicroTime(now));
        self.write().await?;
        Ok(None)
    }

    /// The optional observation window: probes keep running after the
    /// restore. Some(step): come back later.
    async fn observe_window(&mut self, spec: &Checked, now: Timestamp) -> Result<Option<Step>> {
        if !self.has_slos() || spec.observe.is_zero() {
            return Ok(None);
        }
        self.ctx.ensure_runner(&self.obj, spec).await?;
        let left = spec
            .observe
            .saturating_sub(elapsed(self.restored_at(now), now));
        if left.is_zero() {
            return Ok(None);
        }
        self.ctx.save_recording(&self.obj).await;
        Ok(Some(Step::after(left.min(Duration::from_secs(5)))?))
    }

    /// Judge the SLOs, end the experiment, and say so.
    async fn conclude(&mut self, spec: &Checked, now: Timestamp) -> Result<Step> {
        let mut verdict = self.judge(spec, now).await;
        // A power cut that was not verified proves nothing, whatever the probes saw.
        if let Some(why) = self.st.fault.as_ref().and_then(|f| f.not_dark.clone()) {
            let reason = format!("the zone was not verified dark: {why}");
            self.st.verdict = Some(Verdict::Inconclusive);
            verdict = Some((Verdict::Inconclusive, reason));
        }
        if let Some((v, reason)) = &verdict {
            self.condition("Passed", *v == Verdict::Passed, &v.to_string(), reason, now);
        }
        let (zone, duration) = (&self.obj.spec.zone, &self.obj.spec.duration);
        let completed = format!("{zone} was dark for {duration} and is restored");
        match self.st.abort_reason.clone() {
            Some(why) => self.finish(
                Phase::Aborted,
                "Aborted",
                &format!("{why}; zone restored"),
                now,
            ),
            None => self.finish(Phase::Completed, "Completed", &completed, now),
        }
        if let Some((v, reason)) = &verdict
            && self.st.phase == Some(Phase::Completed)
        {
            self.st.reason = Some(format!("{v}: {reason}"));
        }
        self.write().await?;
        if let Some((v, reason)) = verdict {
            let type_ = if v == Verdict::Passed {
                EventType::Normal
            } else {
                EventType::Warning
            };
            self.event(type_, &format!("Verdict{v}"), reason).await;
        }
        let reason = self.st.reason.clone().unwrap_or_default();
        self.event(EventType::Normal, "Completed", reason).await;
        Ok(Step::Next)
    }
}
