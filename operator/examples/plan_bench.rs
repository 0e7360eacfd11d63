//! The planner's own cost, without the API server: a synthetic snapshot
//! shaped like the scale benchmark's cluster (nodes in three zones,
//! Deployments with a DoNotSchedule zone spread, every replica a peer) and
//! the time `plan()` takes for losing one zone.
//!
//! With `cascade`, every pod names the next Deployment's Service in an env
//! URL (a chain through every Deployment), each SLO's target is a
//! Deployment's Service, and the time also covers what discovery costs:
//! reading the pods' configuration as they are listed (a pod list parsed
//! as the API server writes it) and the dependency graph.
//!
//! `cargo run --release --example plan_bench -- [NODES] [PODS] [DEPLOYMENTS] [honor|cascade]`

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
    let cascade = std::env::args().nth(4).as_deref() == Some("cascade");
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
            let next = format!("app-{:02}", (d + 1) % deployments);
            let refs = if cascade {
                firedrill::plan::cascade::env_refs(
                    "NEXT_URL",
                    &format!("http://{next}.bench.svc:8080/v1"),
                )
            } else {
                vec![]
            };
            let pod = PodInfo {
                refs,
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
            let mut pod = pod;
            if cascade {
                snap.discovery.add(&mut pod, n % 3 == 0);
            }
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
        dependencies: Default::default(),
        primary_labels: vec![],
    };
    if cascade {
        snap.discovery.finish();
        for d in 0..deployments {
            let app = format!("app-{d:02}");
            snap.discovery
                .services
                .push(firedrill::plan::cascade::ServiceInfo {
                    namespace: "bench".into(),
                    name: app.clone(),
                    selector: Some(parse_selector(&format!("app={app}")).unwrap()),
                    external_name: None,
                });
            snap.slo_targets.push(firedrill::plan::SloTarget {
                slo: app.clone(),
                backing: Some(firedrill::plan::Target {
                    what: format!("Service bench/{app}"),
                    namespace: "bench".into(),
                    selector: parse_selector(&format!("app={app}")).unwrap(),
                }),
                prober: None,
                need: 1,
            });
        }
        println!(
            "discovery kept {} callers and {} label-set counts for {} pods",
            snap.discovery.callers.len(),
            snap.discovery.ready_outside.len(),
            snap.peers.len()
        );
        parse_cost(pods);
    }
    println!(
        "{nodes} nodes, {} pods ({} in zone-a), {deployments} Deployments with a zone spread",
        snap.peers.len(),
        snap.pods.len()
    );
    for run in 1..=3 {
        let t0 = Instant::now();
        let p = plan(&req, &snap);
        println!(
            "run {run}: plan() in {:.3} s; {} pods to kill, {} workloads with unplaceable replicas, {} dependency edges",
            t0.elapsed().as_secs_f64(),
            p.pods_in_scope.len(),
            p.unplaceable.len(),
            p.dependencies.edges.len()
        );
    }
}

/// Parse `pods` pods as the API server lists them, with and without three
/// env vars and a ConfigMap volume each, into what planning keeps, feeding
/// the discovery: what reading the configuration adds to listing.
fn parse_cost(pods: usize) {
    let item = |i: usize, env: bool| {
        let config = if env {
            r#","env":[{"name":"TOKENS_URL","value":"http://tokens.bench.svc:8080/v1"},{"name":"LOG_LEVEL","value":"info"},{"name":"DB","valueFrom":{"secretKeyRef":{"name":"db","key":"url"}}}],"args":["--listen=:8080"]"#
        } else {
            ""
        };
        let volumes = if env {
            r#","volumes":[{"name":"cfg","configMap":{"name":"app"}}]"#
        } else {
            ""
        };
        format!(
            r#"{{"metadata":{{"name":"app-{i}","namespace":"bench","labels":{{"app":"app-{}","pod-template-hash":"5d8f7"}},"ownerReferences":[{{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"app-{}-5d8f7","uid":"u","controller":true}}]}},"spec":{{"nodeName":"node-{}","containers":[{{"name":"app","image":"registry.invalid/app:1","resources":{{"requests":{{"cpu":"10m","memory":"16Mi"}}}}{config}}}]{volumes}}},"status":{{"phase":"Running","conditions":[{{"type":"Ready","status":"True"}}]}}}}"#,
            i % 30,
            i % 30,
            i % 1000
        )
    };
    for env in [false, true] {
        // Node by node, as the planner lists: pages of 30 pods.
        let pages: Vec<String> = (0..pods / 30)
            .map(|p| {
                let items: Vec<String> = (0..30).map(|i| item(p * 30 + i, env)).collect();
                format!(r#"{{"items":[{}]}}"#, items.join(","))
            })
            .collect();
        let t0 = Instant::now();
        let mut d = firedrill::plan::cascade::Discovery::default();
        let mut kept = 0usize;
        for page in &pages {
            for pod in firedrill::plan::lite::parse_list(page).unwrap() {
                let mut info = firedrill::plan::collect::pod_info(&pod);
                d.add(&mut info, false);
                kept += info.refs.len();
            }
        }
        d.finish();
        println!(
            "parse {pods} pods {}: {:.3} s, {} callers kept, {kept} references left on pods",
            if env {
                "with env, args and a ConfigMap volume"
            } else {
                "without configuration"
            },
            t0.elapsed().as_secs_f64(),
            d.callers.len()
        );
    }
}
