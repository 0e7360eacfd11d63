//! The planner's own cost, without the API server: a synthetic snapshot
//! shaped like the scale benchmark's cluster (nodes in three zones,
//! Deployments with a DoNotSchedule zone spread, every replica a peer) and
//! the time `plan()` takes for losing one zone.
//!
//! `cargo run --release --example plan_bench -- [NODES] [PODS] [DEPLOYMENTS] [honor]`

use firedrill::api::GuardSpec;
use firedrill::plan::{
    Capacity, Labels, NodeInfo, OwnerKey, PodInfo, Request, Requested, Scope, Snapshot, SpreadInfo,
    parse_selector, plan,
};
use std::collections::BTreeMap;
use std::time::Instant;

const ZONE_KEY: &str = "topology.kubernetes.io/zone";
const ZONES: [&str; 3] = ["zone-a", "zone-b", "zone-c"];

fn main() {
    let arg = |i: usize, default: usize| {
        std::env::args()
            .nth(i)
            .map(|s| s.parse().expect("a number"))
            .unwrap_or(default)
    };
    let (nodes, pods, deployments) = (arg(1, 1000), arg(2, 30_000), arg(3, 30));
    // `honor`: nodeTaintsPolicy Honor, so the dark zone stops counting and
    // every replacement is placed (each placement updating the counts).
    let honor_taints = std::env::args().nth(4).as_deref() == Some("honor");
    let mut snap = Snapshot {
        surviving_free: Some(Capacity {
            cpu_millis: i64::MAX / 4,
            memory_bytes: i64::MAX / 4,
        }),
        ..Default::default()
    };
    for i in 0..nodes {
        let zone = ZONES[i % 3];
        snap.nodes.push(NodeInfo {
            name: format!("node-{i:05}"),
            labels: BTreeMap::from([
                (ZONE_KEY.to_string(), zone.to_string()),
                ("kubernetes.io/hostname".to_string(), format!("node-{i:05}")),
            ]),
            ready: true,
            cpu_millis: 32_000,
            memory_bytes: 256 << 30,
            max_pods: 110,
            requested: Some(Requested::default()),
            ..Default::default()
        });
    }
    let per = pods / deployments;
    let mut placed = vec![0i64; nodes];
    for d in 0..deployments {
        let app = format!("app-{d:02}");
        // One label set per Deployment, shared as the operator shares it.
        let labels = Labels::new(BTreeMap::from([("app".to_string(), app.clone())]));
        let spread = SpreadInfo {
            max_skew: 1,
            topology_key: ZONE_KEY.into(),
            selector: parse_selector(&format!("app={app}")).unwrap(),
            min_domains: None,
            honor_node_affinity: true,
            honor_taints,
        };
        for r in 0..per {
            let n = (d * per + r) % nodes;
            placed[n] += 1;
            let pod = PodInfo {
                namespace: "bench".into(),
                name: format!("{app}-{r:05}"),
                node: snap.nodes[n].name.clone(),
                labels: labels.clone(),
                owner: Some(OwnerKey {
                    kind: "ReplicaSet".into(),
                    namespace: "bench".into(),
                    name: format!("{app}-5d8f7"),
                }),
                ready: true,
                cpu_millis: 10,
                memory_bytes: 16 << 20,
                spread: vec![spread.clone()],
                ..Default::default()
            };
            // Peers are kept without their own scheduling rules.
            let peer = PodInfo {
                spread: Vec::new(),
                ..pod.clone()
            };
            if n % 3 == 0 {
                snap.pods.push(pod);
            }
            snap.peers.push(peer);
        }
    }
    for (n, count) in snap.nodes.iter_mut().zip(placed) {
        n.requested = Some(Requested {
            cpu_millis: 10 * count,
            memory_bytes: (16 << 20) * count,
            pods: count,
        });
    }
    let req = Request {
        zone: "zone-a".into(),
        topology_key: ZONE_KEY.into(),
        scope: Scope::default(),
        guards: GuardSpec::default(),
        power_loss: false,
        primary_labels: vec![],
    };
    println!(
        "{nodes} nodes, {} pods ({} in zone-a), {deployments} Deployments with a zone spread",
        snap.peers.len(),
        snap.pods.len()
    );
    for run in 1..=3 {
        let t0 = Instant::now();
        let p = plan(&req, &snap);
        println!(
            "run {run}: plan() in {:.3} s; {} pods to kill, {} workloads with unplaceable replicas",
            t0.elapsed().as_secs_f64(),
            p.pods_in_scope.len(),
            p.unplaceable.len()
        );
    }
}
