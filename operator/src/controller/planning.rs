//! Pending → Planning → Baseline: read the cluster, plan the loss of the
//! zone, check the guards, claim the one-zone-at-a-time turn. Nothing in the
//! cluster is changed here; a refusal ends the experiment Failed with the
//! reason, and a dry run ends Completed with the plan.

use super::drill::{Drill, Step};
use crate::api::Phase;
use crate::plan::{self, Plan, Request, collect};
use crate::spec::Checked;
use crate::{Result, exclusion, probe, record};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::EventType;

impl Drill<'_> {
    pub(super) async fn pending(&mut self, now: Timestamp) -> Result<Step> {
        let zone = self.obj.spec.zone.clone();
        self.enter(Phase::Planning, now, format!("planning the loss of {zone}"));
        self.write().await?;
        Ok(Step::Next)
    }

    pub(super) async fn planning(&mut self, spec: &Checked, now: Timestamp) -> Result<Step> {
        let req = self.request(spec);
        let snap = collect::snapshot(
            &self.ctx.client,
            &req.zone,
            &req.topology_key,
            &self.snapshot_options(),
        )
        .await?;
        let (req, snap, mut p) = plan::plan_off_runtime(req, snap).await;
        p.warnings.extend(spec.warnings());
        self.st.plan = Some(p.summary());
        let mut refusal = plan::check_guards(&req, &p, &snap).err().map(|r| r.0);
        if refusal.is_none() {
            refusal = self.check_probe_targets().await.err();
        }
        if refusal.is_none() {
            refusal =
                probe::check_consent(&self.ctx.client, &self.obj.spec, &self.ctx.config.probes)
                    .await?
                    .err();
        }
        if refusal.is_none() {
            refusal = self.claim_turn(&req).await?;
        }
        if let Some(refusal) = refusal {
            let msg = format!("refused: {refusal}; nothing was changed");
            self.finish(Phase::Failed, "Refused", &msg, now);
            self.write().await?;
            self.event(EventType::Warning, "Refused", refusal).await;
            return Ok(Step::Next);
        }
        self.planned(&p, now).await
    }

    /// No probe may reach the API server by any address its host resolves
    /// to; where the API server is is learned again first. A drill without
    /// network probes reads nothing for this.
    async fn check_probe_targets(&self) -> std::result::Result<(), String> {
        let spec = &self.obj.spec;
        let env = &self.ctx.config.probes;
        let networked = spec.slos.iter().any(|s| {
            let p = &s.probe;
            p.http.is_some() || p.tcp.is_some() || p.prometheus.is_some() || p.write.is_some()
        });
        if !networked {
            return Ok(());
        }
        env.learn(&self.ctx.client).await;
        probe::check_targets(spec, env).await
    }

    /// What planning reads of the cluster.
    fn snapshot_options(&self) -> collect::Options {
        let config = &self.ctx.config;
        collect::Options {
            measure_capacity: self.obj.spec.guards.require_capacity,
            experiment: Some(self.exp.name.clone()),
            operator_pods: config.namespace.clone().zip(config.self_selector.clone()),
            concurrency: config.concurrency.min(collect::DEFAULT_CONCURRENCY),
            slos: self.obj.spec.slos.clone(),
            leader_pod: config
                .namespace
                .clone()
                .zip(std::env::var("POD_NAME").ok().filter(|n| !n.is_empty())),
            api_server: self.power_loss(),
        }
    }

    /// One zone dark at a time, race-free: claim a turn before anything is
    /// touched (a dry run touches nothing and claims none). Some(refusal)
    /// when another experiment holds the turn.
    async fn claim_turn(&self, req: &Request) -> Result<Option<String>> {
        if self.obj.spec.guards.dry_run {
            return Ok(None);
        }
        let me = exclusion::Claim {
            name: self.exp.name.clone(),
            zone: req.zone.clone(),
            exclusive: !self.obj.spec.guards.allow_overlap,
        };
        let ns = self.ctx.config.home_namespace();
        Ok(
            match exclusion::claim(&self.ctx.client, &ns, &self.exp.uid, &me).await? {
                Ok(()) => None,
                Err(blocking) => Some(format!(
                    "another DataCenterFailure is active ({}); set guards.allowOverlap to run both",
                    blocking.join(", ")
                )),
            },
        )
    }

    /// The plan passed the guards: a dry run ends here; otherwise the nodes
    /// planned are recorded and the baseline starts.
    async fn planned(&mut self, p: &Plan, now: Timestamp) -> Result<Step> {
        let planned = format!(
            "{} nodes, {} pods in scope ({} spared), {} workloads lose every replica, {} pods pinned to the zone",
            p.nodes.len(),
            p.pods_in_scope.len(),
            p.pods_spared.len(),
            p.lost_workloads.len(),
            p.pinned.len()
        );
        if self.obj.spec.guards.dry_run {
            let msg = format!("dry run: {planned}; nothing was changed");
            self.finish(Phase::Completed, "DryRun", &msg, now);
        } else {
            let ns = self.ctx.config.home_namespace();
            record::save_planned_nodes(&self.ctx.client, &ns, &self.obj, &p.nodes).await?;
            self.enter(Phase::Baseline, now, format!("planned: {planned}"));
        }
        self.write().await?;
        self.event(EventType::Normal, "Planned", planned).await;
        Ok(Step::Next)
    }
}
