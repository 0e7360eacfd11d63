//! Baseline → Injecting: every SLO must be healthy, with at least one
//! sample each, for the whole baseline before anything is touched. A broken
//! steady state ends the experiment Aborted and Inconclusive, nothing changed.

use super::drill::{Drill, Step, elapsed, phase_entered};
use crate::api::{Phase, Verdict};
use crate::spec::Checked;
use crate::{Result, probe};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::EventType;
use std::time::Duration;

impl Drill<'_> {
    pub(super) async fn baseline(&mut self, spec: &Checked, now: Timestamp) -> Result<Step> {
        if self.has_slos() {
            let started = phase_entered(&self.st, Phase::Baseline).unwrap_or(now);
            self.ctx.ensure_runner(&self.obj, spec).await?;
            let (sampled, broken) = self
                .ctx
                .with_runner(&self.exp.uid, |r| {
                    baseline_check(r, started.as_millisecond(), now.as_millisecond())
                })
                .unwrap_or((false, None));
            if let Some(why) = broken {
                return self.steady_state_not_met(why, now).await;
            }
            let left = spec.baseline.saturating_sub(elapsed(started, now));
            if !left.is_zero() || !sampled {
                return Step::after(left.clamp(Duration::from_millis(200), Duration::from_secs(1)));
            }
            let msg = format!("every SLO healthy for {}", self.obj.spec.baseline);
            self.event(EventType::Normal, "SteadyState", msg).await;
        }
        let zone = self.obj.spec.zone.clone();
        self.enter(Phase::Injecting, now, format!("taking down {zone}"));
        self.fault().injected_at = Some(MicroTime(now));
        self.write().await?;
        Ok(Step::Next)
    }

    async fn steady_state_not_met(&mut self, why: String, now: Timestamp) -> Result<Step> {
        let msg = format!("steady state not met during the baseline: {why}; nothing was changed");
        self.st.verdict = Some(Verdict::Inconclusive);
        self.finish(Phase::Aborted, "SteadyStateNotMet", &msg, now);
        self.ctx.save_recording(&self.obj).await;
        self.ctx.stop_tasks(&self.exp.uid);
        self.write().await?;
        self.event(EventType::Warning, "SteadyStateNotMet", msg)
            .await;
        Ok(Step::Next)
    }
}

/// During the baseline: (every SLO has a sample, the first broken SLO and why).
pub(super) fn baseline_check(r: &probe::Runner, started: i64, now: i64) -> (bool, Option<String>) {
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
