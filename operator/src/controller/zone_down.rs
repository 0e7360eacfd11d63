//! ZoneDown → Restoring: keep the zone dark for the whole duration (the
//! keeper re-kills what lands there), keep the probes' recording saved, and
//! at the end note what the cluster shows of each SLO's pods before the
//! restore lets pinned pods come back.
//!
//! Under PowerLoss the darkness is verified first ([`fault::power`]): every
//! node's agent must acknowledge the cut within `--power-ack-timeout` and
//! every node go NotReady within `--power-not-ready-timeout` of the nodes
//! being labelled. A node that does not (or whose agent refused) aborts the
//! drill: the zone is restored and the verdict is Inconclusive, naming it.

use super::drill::{Drill, Step, elapsed};
use crate::Result;
use crate::api::Phase;
use crate::fault::{self, power};
use crate::spec::Checked;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::EventType;
use std::sync::atomic::Ordering;
use std::time::Duration;

impl Drill<'_> {
    pub(super) async fn zone_down(&mut self, spec: &Checked, now: Timestamp) -> Result<Step> {
        let fs = self.st.fault.clone().unwrap_or_default();
        let dark_at = self.dark_at();
        if self.has_slos() {
            let armed = self.injected_at().or(dark_at).unwrap_or(now);
            self.arm_runner(spec, armed).await?;
            self.ctx.save_recording(&self.obj).await;
        }
        if self.obj.spec.fault.keep_dark && !self.power_loss() {
            self.follow_keeper(spec, fs.pods_rekilled).await?;
        }
        // Nothing says when the zone went dark: it has been dark long enough.
        let left = dark_at.map_or(Duration::ZERO, |at| {
            spec.duration.saturating_sub(elapsed(at, now))
        });
        if self.power_loss() && fs.dark_verified_at.is_none() {
            let waited = dark_at.map_or(Duration::MAX, |at| elapsed(at, now));
            if let Some(step) = self.verify_darkness(waited, left.is_zero(), now).await? {
                return Ok(step);
            }
        }
        if !left.is_zero() {
            return Step::after(left.min(Duration::from_secs(5)));
        }
        self.ctx
            .with_runner(&self.exp.uid, |r| r.mark(now.as_millisecond()));
        self.observe_causes().await;
        let (zone, duration) = (&self.obj.spec.zone, &self.obj.spec.duration);
        let reason = format!("{zone} was dark for {duration}; restoring");
        self.enter(Phase::Restoring, now, reason);
        self.write().await?;
        Ok(Step::Next)
    }

    /// PowerLoss: look at the zone's nodes until every one acknowledged the
    /// cut and went NotReady. Some(step): come back then, or the drill was
    /// aborted.
    async fn verify_darkness(
        &mut self,
        waited: Duration,
        window_over: bool,
        now: Timestamp,
    ) -> Result<Option<Step>> {
        let config = &self.ctx.config;
        let bounds = power::Bounds {
            acknowledge: config.power_ack_timeout,
            not_ready: config.power_not_ready_timeout,
        };
        let seen: Vec<power::Seen> = fault::held_nodes(&self.ctx.client, &self.exp.uid)
            .await?
            .iter()
            .map(power::Seen::of)
            .collect();
        let verdict = power::verify(&seen, waited, bounds, window_over);
        let acknowledged = seen.iter().filter(|s| s.acknowledged).count() as i32;
        let not_ready = seen.iter().filter(|s| !s.ready).count() as i32;
        let all = seen.len() as i32;
        let fs = self.fault();
        let changed = (fs.nodes_acknowledged, fs.nodes_not_ready) != (acknowledged, not_ready);
        fs.nodes_acknowledged = acknowledged;
        fs.nodes_not_ready = not_ready;
        let newly_acknowledged = acknowledged == all && fs.nodes_acknowledged_at.is_none();
        if newly_acknowledged {
            fs.nodes_acknowledged_at = Some(MicroTime(now));
        }
        let secs = waited.as_secs_f64();
        match verdict {
            power::Darkness::Waiting { .. } => {
                if changed || newly_acknowledged {
                    self.write().await?;
                }
                // Acknowledgements come within a second; NotReady takes ~50 s.
                let poll = if acknowledged < all { 1 } else { 2 };
                Ok(Some(Step::after(Duration::from_secs(poll))?))
            }
            power::Darkness::Dark => {
                self.fault().dark_verified_at = Some(MicroTime(now));
                self.write().await?;
                let zone = self.obj.spec.zone.clone();
                let msg = format!(
                    "every node of {zone} ({all}) acknowledged the power cut and went NotReady, {secs:.1}s after the cut"
                );
                self.event(EventType::Normal, "ZoneDark", msg).await;
                Ok(None)
            }
            power::Darkness::NotDark(why) => {
                self.fault().not_dark = Some(why.clone());
                let why = format!("the zone was not verified dark: {why}");
                Ok(Some(self.abort_fault(why, "NotDark", now).await?))
            }
        }
    }

    /// Make sure the keeper runs, and bring what it did (re-kills, zone
    /// changes) into the status when it changed.
    async fn follow_keeper(&mut self, spec: &Checked, rekilled_before: i32) -> Result<()> {
        let state = self
            .ctx
            .ensure_keeper(&self.obj, &spec.scope, rekilled_before as i64);
        let rekilled = state.rekilled.load(Ordering::Relaxed) as i32;
        let (notes, mark) = state.new_notes();
        let new_notes = self.note_zone_changes(&notes);
        if rekilled != rekilled_before || !new_notes.is_empty() {
            self.fault().pods_rekilled = rekilled;
            self.write().await?;
            self.warn_each("ZoneChanged", new_notes).await;
        }
        // In the status now: not counted again, however many there are.
        state.handed_over(mark);
        Ok(())
    }
}
