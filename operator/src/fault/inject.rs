//! Taking the zone down: mark and cordon (or cut the power), kill, taint.

use super::kill::{KillReport, kill_pods_on};
use super::mark::{DarkTaint, Experiment, Hold, mark_patch, taint_patch};
use super::node::{held_nodes, patch_node, patch_seen_node};
use crate::plan::Scope;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::Api;
use std::time::{Duration, Instant};

/// Mark every node in `nodes`, and cordon it or cut its power.
pub async fn hold_nodes(
    client: &Client,
    exp: &Experiment,
    nodes: &[String],
    how: Hold,
    concurrency: usize,
) -> Result<(), crate::Error> {
    let api = Api::<Node>::all(client.clone());
    stream::iter(nodes.iter().cloned())
        .map(|name| {
            let api = api.clone();
            async move {
                patch_node(&api, &name, |n| {
                    mark_patch(n, exp, how).map_err(crate::Error::from)
                })
                .await
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// Taint every node this experiment holds.
pub async fn taint_nodes(
    client: &Client,
    exp: &Experiment,
    effect: DarkTaint,
    concurrency: usize,
) -> Result<(), crate::Error> {
    let api = Api::<Node>::all(client.clone());
    let held = held_nodes(client, &exp.uid).await?;
    stream::iter(held)
        .map(|node| {
            let api = api.clone();
            async move { patch_seen_node(&api, node, |n| Ok(taint_patch(n, exp, effect))).await }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// What [`inject`] is asked to do.
#[derive(Clone, Debug)]
pub struct Injection {
    pub exp: Experiment,
    /// Exactly these nodes (the list taken, and guarded, at Injecting).
    pub nodes: Vec<String>,
    pub cordon: bool,
    pub kill_pods: bool,
    pub keep_dark: bool,
    /// PowerLoss mode: cut the nodes' power until this Unix second at the
    /// latest; nothing is cordoned, killed or tainted.
    pub power_loss_until: Option<i64>,
    pub scope: Scope,
    pub concurrency: usize,
    /// Pause between node changes (to rehearse an operator crash mid-injection).
    pub pause: Option<Duration>,
    /// Where the deleter shows its window.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

/// What [`inject`] did.
#[derive(Clone, Debug, Default)]
pub struct Injected {
    pub kills: KillReport,
    pub taint: Option<DarkTaint>,
    pub hold_ms: u64,
    pub kill_ms: u64,
    pub taint_ms: u64,
}

/// Take the zone down: mark and cordon, then kill with grace period 0 and
/// taint. A drill that does not take the whole zone gets its NoSchedule
/// taint while the pods are killed (it evicts nothing). A whole-zone drill's
/// taint waits for the kill (NoExecute, or NoSchedule when a pod was
/// spared: the pods die as in a fire, not by graceful taint eviction), and
/// is not put on when a pod could not be killed. The caller then aborts,
/// and the restore takes off whatever went on. `taint_ms` of a taint put on
/// during the kill overlaps `kill_ms`.
pub async fn inject(client: &Client, job: &Injection) -> Result<Injected, crate::Error> {
    let t0 = Instant::now();
    let how = match job.power_loss_until {
        Some(until) => Hold::PowerLoss { until },
        None => Hold::Cordon(job.cordon),
    };
    match job.pause {
        Some(pause) => {
            for node in &job.nodes {
                hold_nodes(client, &job.exp, std::slice::from_ref(node), how, 1).await?;
                tokio::time::sleep(pause).await;
            }
        }
        None => hold_nodes(client, &job.exp, &job.nodes, how, job.concurrency).await?,
    }
    let t1 = Instant::now();
    if job.power_loss_until.is_some() {
        return Ok(Injected {
            hold_ms: (t1 - t0).as_millis() as u64,
            ..Default::default()
        });
    }
    // A NoSchedule taint evicts nothing, so it goes on while the pods are
    // killed. Only a NoExecute one (a whole-zone scope whose pods were all
    // killed) waits for the kill: put on earlier, it would evict them
    // gracefully, by the book, not as in a fire.
    let early = job.keep_dark && !(job.kill_pods && job.scope.targets_whole_zone());
    // Each side timed on its own; an error on either stops the other (the
    // caller aborts, and the restore takes off whatever went on).
    let kill = async {
        if !job.kill_pods {
            return Ok((KillReport::default(), Duration::ZERO));
        }
        let started = Instant::now();
        let kills = kill_pods_on(
            client,
            &job.nodes,
            &job.scope,
            job.concurrency,
            &job.metrics,
        )
        .await?;
        Ok::<_, crate::Error>((kills, started.elapsed()))
    };
    let early_taint = async {
        let started = Instant::now();
        if early {
            taint_nodes(client, &job.exp, DarkTaint::NoSchedule, job.concurrency).await?;
        }
        Ok::<_, crate::Error>(started.elapsed())
    };
    let ((kills, kill_took), mut taint_took) = tokio::try_join!(kill, early_taint)?;
    let t2 = Instant::now();
    let mut taint = early.then_some(DarkTaint::NoSchedule);
    if job.keep_dark && !early && kills.failed == 0 {
        let effect = DarkTaint::for_scope(&job.scope, kills.spared);
        taint_nodes(client, &job.exp, effect, job.concurrency).await?;
        taint = Some(effect);
        taint_took = t2.elapsed();
    }
    let ms = |d: Duration| d.as_millis() as u64;
    Ok(Injected {
        kills,
        taint,
        hold_ms: ms(t1 - t0),
        kill_ms: ms(kill_took),
        taint_ms: ms(taint_took),
    })
}
