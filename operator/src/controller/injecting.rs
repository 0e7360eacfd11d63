//! Injecting → ZoneDown: guard the zone's nodes again as they are now, then
//! take the zone down in a task of its own (cordon, taint, kill with grace 0,
//! or cut the power), and record what was done once it is.

use super::drill::{Drill, Step};
use crate::api::Phase;
use crate::fault::{self, Injected, Injection};
use crate::plan::{self, collect};
use crate::spec::Checked;
use crate::{Result, record};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::events::EventType;
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Where the injection task is.
enum Progress {
    /// Finished, with this outcome (not yet in the status).
    Done(std::result::Result<Injected, String>),
    /// Still running.
    Running,
    /// Not started.
    NotStarted,
}

impl Drill<'_> {
    pub(super) async fn injecting(&mut self, spec: &Checked, now: Timestamp) -> Result<Step> {
        let injected_at = self.injected_at().unwrap_or(now);
        self.arm_runner(spec, injected_at).await?;
        let injected = match self.injection_progress().await {
            Progress::Done(result) => result,
            Progress::Running => return Step::after(Duration::from_millis(500)),
            Progress::NotStarted => return self.start_injection(spec, injected_at, now).await,
        };
        // A failed injection is cleared by the abort; a finished one once
        // its outcome is in the status (a lost write collects it again).
        let done = match injected {
            Ok(done) if done.kills.failed == 0 => done,
            Ok(done) => {
                let fs = self.fault();
                fs.pods_killed += done.kills.killed as i32;
                fs.pods_not_killed = done.kills.failed as i32;
                let why = format!(
                    "injection failed: {} pods could not be killed ({}); a zone whose pods cannot be taken down is not a fire",
                    done.kills.failed,
                    done.kills.first_failure.clone().unwrap_or_default()
                );
                return self.abort_fault(why, "InjectionFailed", now).await;
            }
            Err(e) => {
                let why = format!("injection failed: {e}");
                return self.abort_fault(why, "InjectionFailed", now).await;
            }
        };
        self.zone_is_down(&done, now).await?;
        self.ctx.with_tasks(&self.exp.uid, |t| t.injected = None);
        self.announce(&done, spec, injected_at).await;
        Ok(Step::Next)
    }

    /// Probes measure from the moment the injection started.
    pub(super) async fn arm_runner(&self, spec: &Checked, injected_at: Timestamp) -> Result<()> {
        if !self.has_slos() {
            return Ok(());
        }
        self.ctx.ensure_runner(&self.obj, spec).await?;
        let at = injected_at.as_millisecond();
        self.ctx.with_runner(&self.exp.uid, |r| {
            r.armed_at.store(at, Ordering::Relaxed);
            r.mark(at);
        });
        Ok(())
    }

    /// Collect a finished injection task, or say where it is.
    async fn injection_progress(&self) -> Progress {
        let uid = &self.exp.uid;
        let finished = self.ctx.with_tasks(uid, |t| {
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
            self.ctx.with_tasks(uid, |t| t.injected = Some(result));
        }
        match self
            .ctx
            .with_tasks(uid, |t| (t.injected.clone(), t.injector.is_some()))
        {
            (Some(result), _) => Progress::Done(result),
            (None, true) => Progress::Running,
            (None, false) => Progress::NotStarted,
        }
    }

    /// Guard the zone again, record what will be taken, and start the
    /// injection task.
    async fn start_injection(
        &mut self,
        spec: &Checked,
        injected_at: Timestamp,
        now: Timestamp,
    ) -> Result<Step> {
        let nodes = match self.take_zone(spec).await? {
            Ok(nodes) => nodes,
            Err(refusal) => {
                let why = format!("refused at injection: {refusal}");
                return self.abort_fault(why, "Refused", now).await;
            }
        };
        self.fault().nodes_taken = nodes.len() as i32;
        // What was taken (and any zone change) is in the status before
        // anything is touched.
        self.write().await?;
        let config = &self.ctx.config;
        let job = Injection {
            exp: self.exp.clone(),
            nodes,
            cordon: self.obj.spec.fault.cordon,
            kill_pods: self.obj.spec.fault.kill_pods,
            keep_dark: self.obj.spec.fault.keep_dark,
            power_loss_until: self
                .power_loss()
                .then(|| self.power_back_at(spec, injected_at)),
            scope: spec.scope.clone(),
            concurrency: config.concurrency,
            pause: config.inject_pause,
            metrics: self.ctx.metrics.clone(),
        };
        let client = self.ctx.client.clone();
        let deadline = config.injection_timeout;
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
        self.ctx
            .with_tasks(&self.exp.uid, |t| t.injector = Some(task));
        Step::after(Duration::from_millis(200))
    }

    /// The Unix second at which the node agents restore power on their own.
    fn power_back_at(&self, spec: &Checked, injected_at: Timestamp) -> i64 {
        injected_at.as_second() + (spec.duration + self.ctx.config.restore_grace).as_secs() as i64
    }

    /// The zone's nodes as they are now, guarded again: nodes may have joined
    /// or left the zone since planning. Returns the nodes to take, or a refusal.
    async fn take_zone(
        &mut self,
        spec: &Checked,
    ) -> Result<std::result::Result<Vec<String>, String>> {
        let client = &self.ctx.client;
        let req = self.request(spec);
        let mut nodes = collect::list_nodes(client).await?;
        // Our own cordons (a restart mid-injection) are not the admin's.
        for held in fault::held_nodes(client, &self.exp.uid).await? {
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
        let (req, _, p) = plan::plan_off_runtime(req, snap).await;
        if let Err(r) = plan::check_node_guards(&req, &p) {
            return Ok(Err(r.0));
        }
        let ns = self.ctx.config.home_namespace();
        if let Some(planned) = record::load_planned_nodes(client, &ns, &self.exp.uid).await? {
            let planned: BTreeSet<String> = planned.nodes.into_iter().collect();
            let notes = zone_change_notes(&planned, &p.nodes, &req.zone);
            let new = self.note_zone_changes(&notes);
            self.warn_each("ZoneChanged", new).await;
        }
        Ok(Ok(p.nodes))
    }

    /// Record the zone down: counts, the Injected condition, phase ZoneDown.
    async fn zone_is_down(&mut self, done: &Injected, now: Timestamp) -> Result<()> {
        let (cordoned, tainted) = fault::held_counts(&self.ctx.client, &self.exp).await?;
        let killed = done.kills.killed;
        let metrics = self.ctx.metrics.clone();
        let fs = self.fault();
        metrics
            .nodes_cordoned
            .inc_by((cordoned - fs.nodes_cordoned).max(0) as u64);
        metrics.pods_killed.inc_by(killed as u64);
        fs.nodes_cordoned = cordoned;
        fs.nodes_tainted = tainted;
        fs.taint_effect = done.taint.map(|t| t.as_str().to_string());
        fs.pods_killed += killed as i32;
        fs.pods_spared = done.kills.spared as i32;
        fs.zone_dark_at = Some(MicroTime(now));
        let taken = fs.nodes_taken;
        let msg = format!("{taken} nodes down, {killed} pods killed");
        self.condition("Injected", true, "ZoneDown", &msg, now);
        let (zone, duration) = (&self.obj.spec.zone, &self.obj.spec.duration);
        let reason = format!("{zone} is dark for {duration}");
        self.enter(Phase::ZoneDown, now, reason);
        self.write().await?;
        tracing::info!(experiment = %self.exp.name, nodes = taken, killed, spared = done.kills.spared, hold_ms = done.hold_ms, kill_ms = done.kill_ms, taint_ms = done.taint_ms, taint = ?done.taint.map(|t| t.as_str()), "zone down");
        Ok(())
    }

    /// The events that say what was done to the zone.
    async fn announce(&self, done: &Injected, spec: &Checked, injected_at: Timestamp) {
        let fs = self.st.fault.clone().unwrap_or_default();
        if self.power_loss() {
            let until = self.power_back_at(spec, injected_at);
            let at = Timestamp::from_second(until)
                .map(|t| t.to_string())
                .unwrap_or_default();
            let msg = format!(
                "{} nodes lost power; the node agents restore it on their own at {at} if the zone is not restored before",
                fs.nodes_taken
            );
            self.event(EventType::Normal, "PowerCut", msg).await;
            return;
        }
        let taint_note = match &fs.taint_effect {
            Some(effect) => format!(", tainted {}={effect}", fault::TAINT_KEY),
            None => String::new(),
        };
        let (cordoned, tainted) = (fs.nodes_cordoned, fs.nodes_tainted);
        let msg = format!("{cordoned} nodes cordoned, {tainted} tainted{taint_note}");
        self.event(EventType::Normal, "ZoneCordoned", msg).await;
        let msg = format!(
            "{} pods killed with grace period 0 in {:.1}s; {} pods out of scope left running",
            done.kills.killed,
            done.kill_ms as f64 / 1000.0,
            done.kills.spared
        );
        self.event(EventType::Normal, "PodsKilled", msg).await;
    }
}

/// Notes on nodes that joined or left the zone between planning and injection.
fn zone_change_notes(planned: &BTreeSet<String>, now: &[String], zone: &str) -> Vec<String> {
    let now: BTreeSet<String> = now.iter().cloned().collect();
    let joined: Vec<String> = now.difference(planned).cloned().collect();
    let left: Vec<String> = planned.difference(&now).cloned().collect();
    let names = |v: &[String]| {
        let mut s = v.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
        if v.len() > 5 {
            s.push_str(&format!(" and {} more", v.len() - 5));
        }
        s
    };
    let mut notes = vec![];
    if !joined.is_empty() {
        notes.push(format!(
            "{} nodes joined {zone} after planning; the guards were checked again with them and they were taken down too: {}",
            joined.len(),
            names(&joined)
        ));
    }
    if !left.is_empty() {
        notes.push(format!(
            "{} planned nodes were no longer in {zone} at injection and were left alone: {}",
            left.len(),
            names(&left)
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::zone_change_notes;
    use std::collections::BTreeSet;

    #[test]
    fn joined_and_left_nodes_are_named_at_most_five_at_a_time() {
        let planned: BTreeSet<String> = ["a", "b"].map(String::from).into();
        let now: Vec<String> = ["b", "c", "d", "e", "f", "g", "h"].map(String::from).into();
        let notes = zone_change_notes(&planned, &now, "zone-a");
        assert_eq!(notes.len(), 2);
        assert!(
            notes[0].starts_with("6 nodes joined zone-a after planning")
                && notes[0].ends_with(": c, d, e, f, g and 1 more"),
            "{}",
            notes[0]
        );
        assert_eq!(
            notes[1],
            "1 planned nodes were no longer in zone-a at injection and were left alone: a"
        );
        assert!(zone_change_notes(&planned, &["a".into(), "b".into()], "zone-a").is_empty());
    }
}
