//! The benchmark's "limit" contender: the fastest way this machine's API
//! server and etcd let one client cordon a zone and delete its pods. No
//! planning, no safety, no recording, no client-side throttling: cordon every
//! node of the zone and delete every pod on them with grace period 0, with
//! `--concurrency` requests in flight. Prints one JSON line of timings.
//!
//!   cargo run --release --example bench_deleter -- --zone zone-a --concurrency 256

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let zone = arg("--zone", "zone-a");
    let key = arg("--topology-key", "topology.kubernetes.io/zone");
    let concurrency: usize = arg("--concurrency", "256").parse()?;
    let client = kube::Client::try_default().await?;
    let requests = AtomicU64::new(0);
    let start = Instant::now();

    let nodes: Api<Node> = Api::all(client.clone());
    let names: Vec<String> = nodes
        .list(&ListParams::default().labels(&format!("{key}={zone}")))
        .await?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    requests.fetch_add(1, Ordering::Relaxed);

    let cordon = serde_json::json!({"spec": {"unschedulable": true}});
    stream::iter(names.iter())
        .map(|n| {
            let nodes = nodes.clone();
            let cordon = cordon.clone();
            let requests = &requests;
            async move {
                requests.fetch_add(1, Ordering::Relaxed);
                nodes
                    .patch(n, &PatchParams::default(), &Patch::Merge(&cordon))
                    .await
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    let cordoned = start.elapsed();

    let pods: Api<Pod> = Api::all(client.clone());
    let on_nodes: Vec<Vec<(String, String)>> = stream::iter(names.iter())
        .map(|n| {
            let pods = pods.clone();
            let requests = &requests;
            async move {
                requests.fetch_add(1, Ordering::Relaxed);
                let list = pods
                    .list(&ListParams::default().fields(&format!("spec.nodeName={n}")))
                    .await?;
                Ok::<_, kube::Error>(
                    list.items
                        .into_iter()
                        .map(|p| {
                            (
                                p.metadata.namespace.unwrap_or_default(),
                                p.metadata.name.unwrap_or_default(),
                            )
                        })
                        .collect(),
                )
            }
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await?;
    let listed = start.elapsed();

    let grace0 = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    let all: Vec<(String, String)> = on_nodes.into_iter().flatten().collect();
    let deleted = AtomicU64::new(0);
    stream::iter(all.iter())
        .map(|(ns, name)| {
            let api: Api<Pod> = Api::namespaced(client.clone(), ns);
            let grace0 = grace0.clone();
            let (requests, deleted) = (&requests, &deleted);
            async move {
                requests.fetch_add(1, Ordering::Relaxed);
                match api.delete(name, &grace0).await {
                    Ok(_) => {
                        deleted.fetch_add(1, Ordering::Relaxed);
                        Ok(())
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                    Err(e) => Err(e),
                }
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    let done = start.elapsed();
    println!(
        "{}",
        serde_json::json!({
            "nodes": names.len(),
            "pods": all.len(),
            "deleted": deleted.load(Ordering::Relaxed),
            "concurrency": concurrency,
            "cordonSeconds": cordoned.as_secs_f64(),
            "listSeconds": (listed - cordoned).as_secs_f64(),
            "deleteSeconds": (done - listed).as_secs_f64(),
            "totalSeconds": done.as_secs_f64(),
            "requests": requests.load(Ordering::Relaxed),
        })
    );
    Ok(())
}
