//! What the drill saw, turned into the status: the causes observed as the
//! dark window ends, and the verdict per SLO over the dark window (the pure
//! judging is [`crate::verdict`]'s; this is the edge that feeds it).

use super::drill::{Count, Drill, phase_entered};
use crate::api::{Phase, SloStatus, Verdict};
use crate::plan::{self, collect};
use crate::probe::Recording;
use crate::spec::Checked;
use crate::{canary, probe, record, verdict};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ListParams};
use std::collections::BTreeMap;

impl Drill<'_> {
    /// What the cluster shows of the pods behind each SLO as the dark window
    /// ends (before the restore lets pinned pods come back): ready pods, and
    /// replacements the scheduler could not place, with its message. Kept in
    /// the status, so a restarted operator still has it for the verdict.
    pub(super) async fn observe_causes(&mut self) {
        if !self.has_slos() {
            return;
        }
        let client = &self.ctx.client;
        let targets = match collect::slo_targets(client, &self.obj.spec.slos).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(experiment = %self.exp.name, error = %e, "cannot read what the SLOs' probes depend on");
                return;
            }
        };
        let predictions = self.predictions();
        for t in targets {
            let observed = match &t.backing {
                Some(b) => observe(client, b).await,
                None => None,
            };
            let planned = predictions
                .iter()
                .find(|p| p.name == t.slo && p.verdict == Some(Verdict::Failed))
                .map(|p| p.why.as_str());
            let cause = verdict::cause(observed.as_ref(), planned);
            match self.st.slos.iter_mut().find(|s| s.name == t.slo) {
                Some(s) => s.cause = cause,
                None => self.st.slos.push(SloStatus {
                    name: t.slo.clone(),
                    cause,
                    ..Default::default()
                }),
            }
        }
    }

    fn predictions(&self) -> Vec<crate::api::SloPredictionStatus> {
        self.st
            .plan
            .as_ref()
            .map(|p| p.slo_predictions.clone())
            .unwrap_or_default()
    }

    /// The probes' recording: the runner's, or the saved one after a restart.
    /// The probes stop here.
    async fn final_recording(&self) -> Recording {
        let ctx = self.ctx;
        let uid = &self.exp.uid;
        let recording = match ctx.with_runner(uid, |r| r.recording()) {
            Some(r) => r,
            None => record::load_timeline(&ctx.client, &ctx.config.home_namespace(), uid)
                .await
                .unwrap_or_default(),
        };
        ctx.save_recording(&self.obj).await;
        ctx.stop_tasks(uid);
        recording
    }

    /// Measure every SLO over the dark window, set `st.slos` and `st.verdict`.
    /// Returns the overall verdict and reason, or None without SLOs.
    pub(super) async fn judge(
        &mut self,
        spec: &Checked,
        now: Timestamp,
    ) -> Option<(Verdict, String)> {
        if !self.has_slos() {
            return None;
        }
        let recording = self.final_recording().await;
        let start = self.injected_at().unwrap_or(now).as_millisecond();
        let end = phase_entered(&self.st, Phase::Restoring)
            .unwrap_or(now)
            .as_millisecond();
        let window = Window {
            start,
            end,
            now: now.as_millisecond(),
        };
        let losses = self.read_back(spec, &recording).await;
        let mut results: Vec<SloStatus> = spec
            .slos
            .iter()
            .map(|slo| {
                let mut r = self.judge_one(slo, &recording, window);
                if let Some(loss) = losses.get(slo.name()) {
                    verdict::judge_writes(&mut r, slo.rpo, loss);
                }
                r
            })
            .collect();
        let predictions = self.predictions();
        for r in &mut results {
            self.explain(r, &predictions);
            let lost = r.writes.as_ref().filter(|w| w.lost > 0);
            if let Some(range) = lost.and_then(verdict::lost_range) {
                let range = format!("acknowledged writes lost: {range}");
                r.cause = Some(match r.cause.take() {
                    Some(c) => format!("{range}; {c}"),
                    None => range,
                });
            }
        }
        let namespaces: BTreeMap<String, String> = self
            .obj
            .spec
            .slos
            .iter()
            .filter_map(|s| Some((s.name.clone(), collect::probe_namespace(s)?)))
            .collect();
        verdict::attribute(&self.obj.spec.slos, &mut results, &predictions, &namespaces);
        let outages = verdict::service_outages(&recording.services, start, end, window.now);
        let mut deps = slo_dependencies(spec, &predictions);
        for d in &mut deps {
            if d.own
                .as_ref()
                .is_some_and(|own| !recording.services.contains_key(own))
            {
                d.own = None;
            }
        }
        verdict::check_dependencies(&deps, &mut results, &outages);
        let (v, reason) = verdict::overall(&self.obj.spec.slos, &results);
        self.counts.extend(
            results
                .iter()
                .filter_map(|r| Some(Count::Recovered(r.name.clone(), r.time_to_recover_seconds?))),
        );
        self.st.slos = results;
        self.st.verdict = Some(v);
        Some((v, reason))
    }

    /// Read every write probe's acknowledged writes back (the probes have
    /// stopped): what each lost, by SLO. A probe that cannot be built to
    /// read leaves every write unverified, never lost.
    async fn read_back(
        &self,
        spec: &Checked,
        recording: &Recording,
    ) -> BTreeMap<String, canary::Loss> {
        let mut out = BTreeMap::new();
        for slo in spec.slos.iter().filter(|s| s.spec.probe.write.is_some()) {
            let log = recording
                .writes
                .get(slo.name())
                .cloned()
                .unwrap_or_default();
            let started = std::time::Instant::now();
            let loss =
                match probe::verify_writes(slo, &log, &self.ctx.client, &self.ctx.config.probes)
                    .await
                {
                    Ok(rb) => canary::loss(&log, &rb),
                    Err(e) => {
                        let all = log.acknowledged() + log.unlogged;
                        canary::Loss {
                            acknowledged: all,
                            unverified: all,
                            last_error: Some(e),
                            ..Default::default()
                        }
                    }
                };
            tracing::info!(experiment = %self.exp.name, slo = slo.name(), acknowledged = loss.acknowledged, lost = loss.lost, unverified = loss.unverified, read_ms = started.elapsed().as_millis() as u64, "writes read back");
            out.insert(slo.name().to_string(), loss);
        }
        out
    }

    /// One SLO over the dark window. With an observation window, a service
    /// that never recovered while dark says when it came back after the restore.
    fn judge_one(&self, slo: &crate::spec::Slo, recording: &Recording, w: Window) -> SloStatus {
        let tl = recording.slos.get(slo.name()).cloned().unwrap_or_default();
        let mut r = verdict::judge(
            &slo.spec,
            slo.rto,
            &tl.measure(w.start, w.end, w.now),
            &self.obj.spec.zone,
            tl.last_error.as_deref(),
        );
        if r.time_to_recover_seconds.is_none()
            && r.verdict == Some(Verdict::Failed)
            && self.obj.spec.observe.is_some()
        {
            let after = tl.measure(w.end, w.now + 1, w.now);
            if let (Some(ms), Some(msg)) = (after.time_to_recover_ms, r.message.as_mut()) {
                msg.push_str(&format!(
                    "; healthy again {:.1}s after the restore",
                    ms as f64 / 1000.0
                ));
            }
        }
        r
    }

    /// The plan's prediction, and for a failure the cause observed as the
    /// dark window ended.
    fn explain(&self, r: &mut SloStatus, predictions: &[crate::api::SloPredictionStatus]) {
        r.predicted = predictions
            .iter()
            .find(|p| p.name == r.name)
            .and_then(|p| p.verdict);
        if r.verdict != Some(Verdict::Passed) {
            r.cause = self
                .st
                .slos
                .iter()
                .find(|s| s.name == r.name)
                .and_then(|s| s.cause.clone());
        }
    }
}

/// What checking each SLO's dependencies needs: its interval, the Service
/// behind its probe and behind each SLO it declares it depends on.
fn slo_dependencies(
    spec: &Checked,
    predictions: &[crate::api::SloPredictionStatus],
) -> Vec<verdict::SloDependencies> {
    let service = |slo: &str| {
        predictions
            .iter()
            .find(|p| p.name == slo)
            .and_then(|p| p.target.as_deref()?.strip_prefix("Service "))
            .map(str::to_string)
    };
    spec.slos
        .iter()
        .map(|s| verdict::SloDependencies {
            name: s.name().to_string(),
            interval_ms: s.interval.as_millis() as i64,
            // An SLO the plan expected to fail on its own is not blamed on
            // another Service that merely went down with the zone.
            own: service(s.name()).filter(|_| {
                !predictions
                    .iter()
                    .any(|p| p.name == s.name() && verdict::fails_on_its_own(p))
            }),
            declared: s
                .spec
                .depends_on
                .iter()
                .map(|d| (d.clone(), service(d)))
                .collect(),
            via: predictions
                .iter()
                .find(|p| p.name == s.name())
                .map(|p| p.via.clone())
                .unwrap_or_default(),
        })
        .collect()
}

/// The dark window and the moment of judging, in Unix milliseconds.
#[derive(Clone, Copy)]
struct Window {
    start: i64,
    end: i64,
    now: i64,
}

/// The pods behind one SLO, as they are now.
async fn observe(client: &Client, target: &plan::Target) -> Option<verdict::Observed> {
    let lp = ListParams::default().labels(&target.selector.to_string());
    let pods = Api::<Pod>::namespaced(client.clone(), &target.namespace)
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
        count_pod(&mut o, p);
    }
    Some(o)
}

/// Count one live pod: ready, or a replacement the scheduler refused.
fn count_pod(o: &mut verdict::Observed, p: &Pod) {
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
