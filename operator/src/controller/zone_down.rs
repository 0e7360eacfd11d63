//! ZoneDown → Restoring: keep the zone dark for the whole duration (the
//! keeper re-kills what lands there), keep the probes' recording saved, and
//! at the end note what the cluster shows of each SLO's pods before the
//! restore lets pinned pods come back.

use super::drill::{Drill, Step, elapsed};
use crate::Result;
use crate::api::Phase;
use crate::spec::Checked;
use k8s_openapi::jiff::Timestamp;
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
