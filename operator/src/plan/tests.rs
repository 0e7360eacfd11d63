use super::*;
use crate::api::GuardSpec;

const ZONE_KEY: &str = "topology.kubernetes.io/zone";

fn node(name: &str, zone: &str) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        labels: BTreeMap::from([
            (ZONE_KEY.to_string(), zone.to_string()),
            ("kubernetes.io/hostname".to_string(), name.to_string()),
        ]),
        unschedulable: false,
        ready: true,
        cpu_millis: 4000,
        memory_bytes: 8 << 30,
        ..Default::default()
    }
}

fn pod(ns: &str, name: &str, node: &str, owner: Option<(&str, &str)>) -> PodInfo {
    PodInfo {
        namespace: ns.into(),
        name: name.into(),
        node: node.into(),
        labels: Labels::new(BTreeMap::from([(
            "app".to_string(),
            name.split('-').next().unwrap().to_string(),
        )])),
        owner: owner.map(|(kind, n)| OwnerKey {
            kind: kind.into(),
            namespace: ns.into(),
            name: n.into(),
        }),
        ready: true,
        cpu_millis: 500,
        memory_bytes: 1 << 30,
        ..Default::default()
    }
}

/// Three zones of two nodes each.
fn cluster() -> Snapshot {
    Snapshot {
        nodes: vec![
            node("a1", "zone-a"),
            node("a2", "zone-a"),
            node("b1", "zone-b"),
            node("b2", "zone-b"),
            node("c1", "zone-c"),
            node("c2", "zone-c"),
        ],
        surviving_free: Some(Capacity {
            cpu_millis: 16000,
            memory_bytes: 32 << 30,
        }),
        ..Default::default()
    }
}

fn request(zone: &str) -> Request {
    Request {
        zone: zone.into(),
        topology_key: ZONE_KEY.into(),
        scope: Scope::default(),
        guards: GuardSpec::default(),
        power_loss: false,
        dependencies: Default::default(),
        primary_labels: vec![],
    }
}

#[test]
fn finds_the_zone_nodes_and_the_pods_in_scope() {
    let mut snap = cluster();
    snap.pods = vec![
        pod("shop", "web-1", "a1", Some(("ReplicaSet", "web-7f9"))),
        pod("kube-system", "dns-1", "a1", None),
        pod("shop", "web-2", "a2", Some(("ReplicaSet", "web-7f9"))),
        PodInfo {
            mirror: true,
            ..pod("shop", "etcd-a1", "a1", None)
        },
        PodInfo {
            finished: true,
            ..pod("shop", "job-1", "a2", Some(("Job", "job")))
        },
        pod("shop", "web-3", "b1", Some(("ReplicaSet", "web-7f9"))),
    ];
    let p = plan(&request("zone-a"), &snap);
    assert_eq!(p.nodes, ["a1", "a2"]);
    assert_eq!(p.pods_in_scope, ["shop/web-1", "shop/web-2"]);
    let spared: BTreeMap<_, _> = p.pods_spared.iter().cloned().collect();
    assert_eq!(spared["kube-system/dns-1"], "system namespace");
    assert_eq!(spared["shop/etcd-a1"], "static pod");
    assert_eq!(spared["shop/job-1"], "finished");
    assert_eq!(
        p.capacity_needed,
        Capacity {
            cpu_millis: 1000,
            memory_bytes: 2 << 30
        }
    );
}

#[test]
fn scope_honours_namespaces_selector_and_the_operator_namespace() {
    let mut snap = cluster();
    snap.pods = vec![
        pod("auth", "login-1", "a1", None),
        pod("shop", "web-1", "a1", None),
        pod("firedrill", "op-1", "a1", None),
    ];
    let mut req = request("zone-a");
    req.scope.operator_namespace = Some("firedrill".into());
    req.scope.namespaces = BTreeSet::from(["auth".to_string(), "firedrill".to_string()]);
    let p = plan(&req, &snap);
    assert_eq!(p.pods_in_scope, ["auth/login-1"]);
    let spared: BTreeMap<_, _> = p.pods_spared.iter().cloned().collect();
    assert_eq!(spared["shop/web-1"], "namespace not targeted");
    assert_eq!(spared["firedrill/op-1"], "the operator's namespace");

    req.scope.namespaces.clear();
    req.scope.selector = Some(Selector::from_iter([("app", "web")]));
    let p = plan(&req, &snap);
    assert_eq!(p.pods_in_scope, ["shop/web-1"]);
}

#[test]
fn pinned_by_node_selector_on_the_zone() {
    let mut snap = cluster();
    let mut login = pod("auth", "login-1", "a1", Some(("ReplicaSet", "login-5d")));
    login.node_selector = BTreeMap::from([(ZONE_KEY.to_string(), "zone-a".to_string())]);
    snap.pods = vec![login, pod("shop", "web-1", "a1", None)];
    let p = plan(&request("zone-a"), &snap);
    assert_eq!(
        p.pinned,
        [Pinned {
            pod: "auth/login-1".into(),
            reason: format!("nodeSelector {ZONE_KEY}=zone-a")
        }]
    );
}

#[test]
fn pinned_by_node_selector_on_a_hostname_in_the_zone() {
    let mut snap = cluster();
    let mut p1 = pod("db", "pg-0", "a2", None);
    p1.node_selector = BTreeMap::from([("kubernetes.io/hostname".to_string(), "a2".to_string())]);
    snap.pods = vec![p1];
    let p = plan(&request("zone-a"), &snap);
    assert_eq!(p.pinned.len(), 1);
    assert_eq!(p.pinned[0].reason, "nodeSelector kubernetes.io/hostname=a2");
}

#[test]
fn pinned_by_required_node_affinity() {
    let mut snap = cluster();
    let mut pinned = pod("auth", "login-1", "a1", None);
    pinned.required_terms = vec![vec![Requirement {
        key: ZONE_KEY.into(),
        operator: "In".into(),
        values: vec!["zone-a".into()],
    }]];
    // Affinity that also allows zone-b is not pinned.
    let mut flexible = pod("auth", "login-2", "a1", None);
    flexible.required_terms = vec![vec![Requirement {
        key: ZONE_KEY.into(),
        operator: "In".into(),
        values: vec!["zone-a".into(), "zone-b".into()],
    }]];
    // NotIn the other zones: pinned as well.
    let mut not_in = pod("auth", "login-3", "a2", None);
    not_in.required_terms = vec![vec![Requirement {
        key: ZONE_KEY.into(),
        operator: "NotIn".into(),
        values: vec!["zone-b".into(), "zone-c".into()],
    }]];
    snap.pods = vec![pinned, flexible, not_in];
    let p = plan(&request("zone-a"), &snap);
    let names: Vec<&str> = p.pinned.iter().map(|x| x.pod.as_str()).collect();
    assert_eq!(names, ["auth/login-1", "auth/login-3"]);
    assert_eq!(
        p.pinned[0].reason,
        "required node affinity matches no node outside zone-a"
    );
}

#[test]
fn pinned_by_a_zonal_persistent_volume() {
    let mut snap = cluster();
    let mut db = pod("db", "pg-0", "a1", Some(("StatefulSet", "pg")));
    db.pvcs = vec!["data-pg-0".into()];
    let mut db2 = pod("db", "pg-1", "a2", Some(("StatefulSet", "pg")));
    db2.pvcs = vec!["data-pg-1".into()];
    let mut local = pod("db", "cache-0", "a2", None);
    local.pvcs = vec!["local".into()];
    snap.pods = vec![db, db2, local];
    snap.pvc_topology = HashMap::from([
        (
            "db/data-pg-0".to_string(),
            VolumeTopology {
                zones: vec!["zone-a".into()],
                hostnames: vec![],
            },
        ),
        // A regional disk usable in two zones does not pin.
        (
            "db/data-pg-1".to_string(),
            VolumeTopology {
                zones: vec!["zone-a".into(), "zone-b".into()],
                hostnames: vec![],
            },
        ),
        (
            "db/local".to_string(),
            VolumeTopology {
                zones: vec![],
                hostnames: vec!["a2".into()],
            },
        ),
    ]);
    let p = plan(&request("zone-a"), &snap);
    let pinned: Vec<(&str, &str)> = p
        .pinned
        .iter()
        .map(|x| (x.pod.as_str(), x.reason.as_str()))
        .collect();
    assert_eq!(
        pinned,
        [
            ("db/pg-0", "PVC data-pg-0 is bound to a volume in zone-a"),
            ("db/cache-0", "PVC local is bound to a volume in zone-a")
        ]
    );
}

#[test]
fn single_zone_workloads_lose_every_replica() {
    let mut snap = cluster();
    snap.pods = vec![
        pod("auth", "login-1", "a1", Some(("ReplicaSet", "login-5d"))),
        pod("auth", "login-2", "a2", Some(("ReplicaSet", "login-5d"))),
        pod("chat", "chat-1", "a1", Some(("ReplicaSet", "chat-9c"))),
        PodInfo {
            ready: false,
            ..pod("pay", "pay-1", "a1", Some(("ReplicaSet", "pay-1a")))
        },
    ];
    snap.workloads = HashMap::from([
        (
            OwnerKey {
                kind: "ReplicaSet".into(),
                namespace: "auth".into(),
                name: "login-5d".into(),
            },
            WorkloadInfo {
                ready: 2,
                display: "login".into(),
            },
        ),
        (
            OwnerKey {
                kind: "ReplicaSet".into(),
                namespace: "chat".into(),
                name: "chat-9c".into(),
            },
            WorkloadInfo {
                ready: 3,
                display: "chat".into(),
            },
        ),
        (
            OwnerKey {
                kind: "ReplicaSet".into(),
                namespace: "pay".into(),
                name: "pay-1a".into(),
            },
            WorkloadInfo {
                ready: 2,
                display: "pay".into(),
            },
        ),
    ]);
    let p = plan(&request("zone-a"), &snap);
    assert_eq!(
        p.lost_workloads,
        [LostWorkload {
            kind: "Deployment".into(),
            name: "auth/login".into(),
            ready_in_zone: 2,
            ready_total: 2
        }]
    );
}

#[test]
fn pdbs_a_fire_would_violate_are_reported() {
    let mut snap = cluster();
    snap.pods = vec![
        pod("chat", "chat-1", "a1", None),
        pod("chat", "chat-2", "a2", None),
    ];
    snap.pdbs = vec![
        PdbInfo {
            namespace: "chat".into(),
            name: "chat-pdb".into(),
            selector: Selector::from_iter([("app", "chat")]),
            disruptions_allowed: 1,
        },
        PdbInfo {
            namespace: "chat".into(),
            name: "roomy".into(),
            selector: Selector::from_iter([("app", "chat")]),
            disruptions_allowed: 5,
        },
    ];
    let p = plan(&request("zone-a"), &snap);
    assert_eq!(p.pdbs_violated, ["chat/chat-pdb"]);
}

#[test]
fn capacity_shortfall_is_refused() {
    let mut snap = cluster();
    snap.pods = (0..10)
        .map(|i| pod("shop", &format!("web-{i}"), "a1", None))
        .collect();
    snap.surviving_free = Some(Capacity {
        cpu_millis: 3000,
        memory_bytes: 64 << 30,
    });
    let req = request("zone-a");
    let p = plan(&req, &snap);
    assert_eq!(p.capacity_needed.cpu_millis, 5000);
    assert_eq!(p.capacity_sufficient(), Some(false));
    let refusal = check_guards(&req, &p, &snap).unwrap_err();
    assert!(
        refusal.0.contains("lack capacity") && refusal.0.contains("need 5000m CPU"),
        "{refusal}"
    );
    assert!(!p.summary().capacity.unwrap().sufficient);

    // With requireCapacity off, the same plan is allowed.
    let mut lax = req.clone();
    lax.guards.require_capacity = false;
    assert_eq!(check_guards(&lax, &p, &snap), Ok(()));
}

#[test]
fn daemonset_pods_are_spared_by_default_and_never_displaced() {
    let mut snap = cluster();
    snap.pods = vec![pod(
        "kube-proxy",
        "proxy-a1",
        "a1",
        Some(("DaemonSet", "proxy")),
    )];
    let p = plan(&request("zone-a"), &snap);
    assert!(p.pods_in_scope.is_empty());
    assert_eq!(
        p.pods_spared,
        [(
            "kube-proxy/proxy-a1".to_string(),
            "DaemonSet pod".to_string()
        )]
    );
    // Asked for, they are killed, but not counted as displaced capacity:
    // their node is gone with the zone.
    let mut req = request("zone-a");
    req.scope.include_daemon_sets = true;
    let p = plan(&req, &snap);
    assert_eq!(p.pods_in_scope, ["kube-proxy/proxy-a1"]);
    assert_eq!(p.capacity_needed, Capacity::default());
}

#[test]
fn system_namespaces_are_spared_unless_included_and_exclusions_add_to_them() {
    let mut snap = cluster();
    snap.pods = vec![
        pod("kube-system", "dns-1", "a1", None),
        pod("kube-node-lease", "x-1", "a1", None),
        pod("shop", "web-1", "a1", None),
        pod("batch", "job-1", "a1", None),
    ];
    let mut req = request("zone-a");
    req.scope.exclude_namespaces = BTreeSet::from(["batch".to_string()]);
    let p = plan(&req, &snap);
    assert_eq!(p.pods_in_scope, ["shop/web-1"]);
    let spared: BTreeMap<_, _> = p.pods_spared.iter().cloned().collect();
    assert_eq!(spared["kube-system/dns-1"], "system namespace");
    assert_eq!(spared["kube-node-lease/x-1"], "system namespace");
    assert_eq!(spared["batch/job-1"], "excluded namespace");
    req.scope.include_system_namespaces = true;
    let p = plan(&req, &snap);
    assert_eq!(
        p.pods_in_scope,
        ["kube-system/dns-1", "kube-node-lease/x-1", "shop/web-1"]
    );
}

#[test]
fn guards_refuse_with_a_reason_that_names_the_problem() {
    let snap = cluster();
    let req = request("zone-x");
    let p = plan(&req, &snap);
    assert_eq!(
        check_guards(&req, &p, &snap).unwrap_err().0,
        format!("no nodes with {ZONE_KEY}=zone-x")
    );

    // A zone holding every schedulable node.
    let mut lonely = cluster();
    for n in lonely.nodes.iter_mut().filter(|n| !n.name.starts_with('a')) {
        n.unschedulable = true;
    }
    let req = request("zone-a");
    let p = plan(&req, &lonely);
    assert!(
        check_guards(&req, &p, &lonely)
            .unwrap_err()
            .0
            .contains("holds every schedulable node")
    );

    let mut req = request("zone-a");
    req.guards.max_nodes = Some(1);
    let p = plan(&req, &snap);
    assert_eq!(
        check_guards(&req, &p, &snap).unwrap_err().0,
        "zone zone-a has 2 nodes, more than guards.maxNodes=1"
    );

    let mut req = request("zone-a");
    req.guards.max_node_percent = 30;
    assert!(
        check_guards(&req, &p, &snap)
            .unwrap_err()
            .0
            .contains("33% of the cluster's nodes")
    );

    let mut busy = cluster();
    busy.active_experiments = vec!["other".into()];
    let req = request("zone-a");
    assert!(
        check_guards(&req, &p, &busy)
            .unwrap_err()
            .0
            .contains("another DataCenterFailure is active (other)")
    );
    let mut req2 = req.clone();
    req2.guards.allow_overlap = true;
    assert_eq!(check_guards(&req2, &p, &busy), Ok(()));

    let mut hosted = cluster();
    hosted.operator_nodes = Some(vec!["a1".into()]);
    assert!(
        check_guards(&req, &p, &hosted)
            .unwrap_err()
            .0
            .contains("operator would be left with no replica")
    );
    hosted.operator_nodes = Some(vec!["a1".into(), "b1".into()]);
    assert_eq!(check_guards(&req, &p, &hosted), Ok(()));

    assert_eq!(check_guards(&req, &p, &snap), Ok(()));
}

#[test]
fn summary_is_bounded() {
    let mut snap = cluster();
    snap.pods = (0..500)
        .map(|i| {
            let mut p = pod("auth", &format!("login-{i}"), "a1", None);
            p.node_selector = BTreeMap::from([(ZONE_KEY.to_string(), "zone-a".to_string())]);
            p
        })
        .collect();
    let s = plan(&request("zone-a"), &snap).summary();
    assert_eq!(s.pinned_pods, 500);
    assert_eq!(s.pinned_pod_names.len(), MAX_LISTED);
    assert_eq!(s.pods_in_scope, 500);
}

#[test]
fn label_selectors_parse_like_kubectl() {
    let labels = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>()
    };
    let sel = parse_selector("app=web, tier!=db,env in (prod, staging),!legacy").unwrap();
    assert!(sel.matches(&labels(&[("app", "web"), ("tier", "fe"), ("env", "prod")])));
    assert!(!sel.matches(&labels(&[("app", "web"), ("tier", "db"), ("env", "prod")])));
    assert!(!sel.matches(&labels(&[("app", "web"), ("env", "dev")])));
    assert!(!sel.matches(&labels(&[("app", "web"), ("env", "prod"), ("legacy", "1")])));
    let sel = parse_selector("team,zone notin (zone-a)").unwrap();
    assert!(sel.matches(&labels(&[("team", "x"), ("zone", "zone-b")])));
    assert!(!sel.matches(&labels(&[("team", "x"), ("zone", "zone-a")])));
    assert!(parse_selector("env in prod").is_err());
}

// ---------------------------------------------------------------------------
// Placement: replacements that cannot be scheduled, and the rule.
// ---------------------------------------------------------------------------

/// `n` pods of Deployment `app` in `shop`, round-robin over the six nodes.
fn spread_pods(app: &str, n: usize) -> Vec<PodInfo> {
    let nodes = ["a1", "b1", "c1", "a2", "b2", "c2"];
    (0..n)
        .map(|i| PodInfo {
            labels: Labels::new(BTreeMap::from([("app".to_string(), app.to_string())])),
            ..pod(
                "shop",
                &format!("{app}-{i}"),
                nodes[i % 6],
                Some(("ReplicaSet", &format!("{app}-5d"))),
            )
        })
        .collect()
}

fn with_workload(snap: &mut Snapshot, app: &str, ready: i32) {
    snap.workloads.insert(
        OwnerKey {
            kind: "ReplicaSet".into(),
            namespace: "shop".into(),
            name: format!("{app}-5d"),
        },
        WorkloadInfo {
            ready,
            display: app.into(),
        },
    );
}

fn zone_spread(app: &str, max_skew: i32) -> SpreadInfo {
    SpreadInfo {
        max_skew,
        topology_key: ZONE_KEY.into(),
        selector: Selector::from_iter([("app".to_string(), app.to_string())]),
        min_domains: None,
        honor_node_affinity: true,
        honor_taints: false,
    }
}

/// A snapshot where `pods` run; the zone's pods and every peer are known.
fn scheduled(pods: Vec<PodInfo>) -> Snapshot {
    let mut snap = cluster();
    snap.peers = pods.clone();
    snap.pods = pods
        .into_iter()
        .filter(|p| p.node.starts_with('a'))
        .collect();
    snap
}

#[test]
fn do_not_schedule_zone_spread_blocks_every_replacement() {
    let mut pods = spread_pods("web", 6);
    for p in &mut pods {
        p.spread = vec![zone_spread("web", 1)];
    }
    let mut snap = scheduled(pods);
    with_workload(&mut snap, "web", 6);
    let p = plan(&request("zone-a"), &snap);
    assert_eq!(p.unplaceable.len(), 1);
    let u = &p.unplaceable[0];
    assert_eq!(u.workload, "Deployment shop/web");
    assert_eq!((u.lost, u.unplaceable), (2, 2));
    assert!(
        u.rule.starts_with("topology spread constraint (topology.kubernetes.io/zone, maxSkew 1, DoNotSchedule): zone-a still counts as a domain with 0 matching pods"),
        "{}",
        u.rule
    );
    assert_eq!(p.summary().replacements_unschedulable, 2);
}

#[test]
fn zone_spread_with_room_in_the_skew_places_some_replacements() {
    // maxSkew 2: zone-b and zone-c (2 each) can take one more each over zone-a's 0.
    let mut pods = spread_pods("web", 6);
    for p in &mut pods {
        p.spread = vec![zone_spread("web", 3)];
    }
    let mut snap = scheduled(pods);
    with_workload(&mut snap, "web", 6);
    let p = plan(&request("zone-a"), &snap);
    assert!(p.unplaceable.is_empty(), "{:?}", p.unplaceable);
    for p2 in &mut snap.pods {
        p2.spread = vec![zone_spread("web", 2)];
    }
    let p = plan(&request("zone-a"), &snap);
    assert_eq!(
        (p.unplaceable[0].lost, p.unplaceable[0].unplaceable),
        (2, 2),
        "b and c are already 2 over zone-a's 0"
    );
}

#[test]
fn honoured_taints_or_schedule_anyway_let_the_replacements_move() {
    let mut pods = spread_pods("web", 6);
    for p in &mut pods {
        let mut c = zone_spread("web", 1);
        c.honor_taints = true;
        p.spread = vec![c];
    }
    let mut snap = scheduled(pods);
    with_workload(&mut snap, "web", 6);
    let p = plan(&request("zone-a"), &snap);
    assert!(
        p.unplaceable.is_empty(),
        "the dark zone is no domain: {:?}",
        p.unplaceable
    );
}

#[test]
fn min_domains_counts_missing_domains_as_empty() {
    // Hostname spread, maxSkew 1, over 6 nodes with 1 pod each: losing
    // zone-a's two nodes leaves 4 domains at 1; minDomains 6 makes the
    // global minimum 0, so a second pod on any node is a skew of 2.
    let mut pods = spread_pods("db", 6);
    for p in &mut pods {
        p.spread = vec![SpreadInfo {
            topology_key: "kubernetes.io/hostname".into(),
            min_domains: Some(7),
            honor_taints: true,
            ..zone_spread("db", 1)
        }];
    }
    let mut snap = scheduled(pods);
    with_workload(&mut snap, "db", 6);
    let p = plan(&request("zone-a"), &snap);
    assert_eq!(p.unplaceable[0].unplaceable, 2, "{:?}", p.unplaceable);
    for p2 in &mut snap.pods {
        p2.spread[0].min_domains = None;
    }
    let p = plan(&request("zone-a"), &snap);
    assert!(p.unplaceable.is_empty(), "{:?}", p.unplaceable);
}

/// A required pod (anti-)affinity term on `app=<app>` in the pod's own namespace.
fn app_term(app: &str, key: &str) -> PodTermInfo {
    PodTermInfo {
        selector: Selector::from_iter([("app".to_string(), app.to_string())]),
        namespaces: vec![],
        all_namespaces: false,
        topology_key: key.into(),
    }
}

#[test]
fn required_anti_affinity_per_zone_and_per_host() {
    let term = |key: &str| app_term("cache", key);
    // One per zone: the zone-a replica has no zone to go to.
    let mut pods = spread_pods("cache", 3);
    for p in &mut pods {
        p.anti_affinity = vec![term(ZONE_KEY)];
    }
    let mut snap = scheduled(pods);
    with_workload(&mut snap, "cache", 3);
    let p = plan(&request("zone-a"), &snap);
    assert_eq!(p.unplaceable[0].unplaceable, 1);
    assert!(
        p.unplaceable[0]
            .rule
            .starts_with("required pod anti-affinity (topology.kubernetes.io/zone app=cache)"),
        "{}",
        p.unplaceable[0].rule
    );
    // One per host: there are free hosts outside zone-a.
    for p2 in &mut snap.pods {
        p2.anti_affinity = vec![term("kubernetes.io/hostname")];
    }
    for p2 in &mut snap.peers {
        p2.anti_affinity = vec![term("kubernetes.io/hostname")];
    }
    assert!(plan(&request("zone-a"), &snap).unplaceable.is_empty());
}

#[test]
fn each_placed_replacement_counts_for_the_next() {
    // Per-host anti-affinity; cache-0..4 on a1 b1 c1 a2 b2: losing zone-a
    // leaves one free host (c2) for two replacements. The first takes it;
    // the second must see it taken.
    let term = app_term("cache", "kubernetes.io/hostname");
    let mut pods = spread_pods("cache", 5);
    for p in &mut pods {
        p.anti_affinity = vec![term.clone()];
    }
    let mut snap = scheduled(pods);
    with_workload(&mut snap, "cache", 5);
    let p = plan(&request("zone-a"), &snap);
    assert_eq!(
        (p.unplaceable[0].lost, p.unplaceable[0].unplaceable),
        (2, 1),
        "{:?}",
        p.unplaceable
    );

    // Zone spread with maxSkew 1 and the dark zone not counted: b and c
    // start even at 1 and 1 (web-1 on b1, web-2 on c1), so the two
    // replacements must go one to each zone, never both to one.
    let mut pods = spread_pods("web", 4);
    for p in &mut pods {
        let mut c = zone_spread("web", 1);
        c.honor_taints = true;
        p.spread = vec![c];
    }
    pods[3].node = "a1".into();
    let mut snap = scheduled(pods);
    with_workload(&mut snap, "web", 4);
    let p = plan(&request("zone-a"), &snap);
    assert!(p.unplaceable.is_empty(), "{:?}", p.unplaceable);
    // Give zone-c no room: the second replacement would put zone-b 2 over
    // zone-c, so it stays Pending.
    for n in snap.nodes.iter_mut().filter(|n| n.name.starts_with('c')) {
        n.unschedulable = true;
    }
    let p = plan(&request("zone-a"), &snap);
    assert_eq!(p.unplaceable[0].unplaceable, 1, "{:?}", p.unplaceable);
}

#[test]
fn required_pod_affinity_to_pods_that_only_ran_in_the_zone() {
    let term = app_term("db", ZONE_KEY);
    let db = PodInfo {
        labels: Labels::new(BTreeMap::from([("app".to_string(), "db".to_string())])),
        required_terms: vec![vec![Requirement {
            key: ZONE_KEY.into(),
            operator: "In".into(),
            values: vec!["zone-a".into()],
        }]],
        ..pod("shop", "db-0", "a1", Some(("StatefulSet", "db")))
    };
    let api = PodInfo {
        affinity: vec![term],
        ..pod("shop", "api-0", "a2", Some(("ReplicaSet", "api-5d")))
    };
    let snap = scheduled(vec![db, api]);
    let p = plan(&request("zone-a"), &snap);
    let api = p
        .unplaceable
        .iter()
        .find(|u| u.workload.contains("api"))
        .unwrap();
    assert!(
        api.rule.starts_with("required pod affinity"),
        "{}",
        api.rule
    );
}

#[test]
fn taints_without_tolerations_and_per_pod_fit() {
    let mut snap = cluster();
    for n in snap.nodes.iter_mut().filter(|n| !n.name.starts_with('a')) {
        n.taints = vec![TaintInfo {
            key: "dedicated".into(),
            value: "gpu".into(),
            effect: "NoSchedule".into(),
        }];
    }
    let web = pod("shop", "web-1", "a1", Some(("ReplicaSet", "web-5d")));
    snap.pods = vec![web.clone()];
    snap.peers = vec![web.clone()];
    let p = plan(&request("zone-a"), &snap);
    assert_eq!(
        p.unplaceable[0].rule,
        "taints on every remaining node it may use, without tolerations"
    );
    snap.pods[0].tolerations = vec![TolerationInfo {
        key: "dedicated".into(),
        operator: "Exists".into(),
        ..Default::default()
    }];
    assert!(plan(&request("zone-a"), &snap).unplaceable.is_empty());

    // Per-pod fit: 3 CPUs free in total outside the zone, but no node has
    // 2 free at once.
    let mut snap = cluster();
    for n in snap.nodes.iter_mut() {
        n.requested = Some(Requested {
            cpu_millis: if n.name.starts_with('a') { 0 } else { 3250 },
            memory_bytes: 0,
            pods: 1,
        });
        n.max_pods = 110;
    }
    let big = PodInfo {
        cpu_millis: 2000,
        ..pod("shop", "big-1", "a1", Some(("ReplicaSet", "big-5d")))
    };
    snap.pods = vec![big.clone()];
    snap.peers = vec![big];
    snap.surviving_free = Some(collect::surviving_capacity(&snap.nodes, |n| {
        !n.name.starts_with('a')
    }));
    let p = plan(&request("zone-a"), &snap);
    assert_eq!(p.capacity_sufficient(), Some(true), "the sum says it fits");
    assert_eq!(
        p.unplaceable[0].rule,
        "no single node outside zone-a has 2000m CPU and 1024 MiB free for it"
    );
}

#[test]
fn pinned_pods_and_zonal_volumes_of_statefulsets_are_never_replaced() {
    let mut snap = cluster();
    let db = PodInfo {
        pvcs: vec!["data-db-0".into()],
        ..pod("shop", "db-0", "a1", Some(("StatefulSet", "db")))
    };
    snap.pods = vec![db.clone()];
    snap.peers = vec![db];
    snap.pvc_topology.insert(
        "shop/data-db-0".into(),
        VolumeTopology {
            zones: vec!["zone-a".into()],
            hostnames: vec![],
        },
    );
    let p = plan(&request("zone-a"), &snap);
    assert_eq!(
        p.unplaceable,
        vec![placement::Unplaceable {
            workload: "StatefulSet shop/db".into(),
            lost: 1,
            unplaceable: 1,
            rule: "PVC data-db-0 is bound to a volume in zone-a".into(),
        }]
    );
    // A bare pod has no controller to replace it: not a scheduling question.
    let mut snap = cluster();
    snap.pods = vec![pod("shop", "debug", "a1", None)];
    assert!(plan(&request("zone-a"), &snap).unplaceable.is_empty());
}

// ---------------------------------------------------------------------------
// Predictions per SLO: only from the pods behind that SLO's probe.
// ---------------------------------------------------------------------------

fn target(slo: &str, app: &str, need: i32) -> SloTarget {
    SloTarget {
        slo: slo.into(),
        backing: Some(Target {
            what: format!("Service shop/{app}"),
            namespace: "shop".into(),
            selector: Selector::from_iter([("app".to_string(), app.to_string())]),
        }),
        prober: None,
        need,
    }
}

#[test]
fn an_slo_is_predicted_from_the_pods_behind_its_probe_only() {
    // cart: pinned to zone-a. web: spread DoNotSchedule. api: spread, free to move.
    let mut pods = spread_pods("web", 6);
    for p in &mut pods {
        p.spread = vec![zone_spread("web", 1)];
    }
    pods.extend(spread_pods("api", 3));
    let cart = PodInfo {
        labels: Labels::new(BTreeMap::from([("app".to_string(), "cart".to_string())])),
        node_selector: BTreeMap::from([(ZONE_KEY.to_string(), "zone-a".to_string())]),
        ..pod("shop", "cart-0", "a1", Some(("ReplicaSet", "cart-5d")))
    };
    pods.push(cart);
    let mut snap = scheduled(pods);
    with_workload(&mut snap, "web", 6);
    with_workload(&mut snap, "api", 3);
    with_workload(&mut snap, "cart", 1);
    snap.slo_targets = vec![
        target("checkout", "cart", 1),
        target("frontend", "web", 6),
        target("api", "api", 2),
        SloTarget {
            slo: "external".into(),
            backing: None,
            prober: None,
            need: 1,
        },
    ];
    let p = plan(&request("zone-a"), &snap);
    let by: BTreeMap<&str, &SloPrediction> = p
        .slo_predictions
        .iter()
        .map(|x| (x.slo.as_str(), x))
        .collect();
    assert_eq!(by["checkout"].verdict, Some(Verdict::Failed));
    assert_eq!(
        by["checkout"].why,
        "Service shop/cart keeps 0 ready pods outside zone-a (needs 1); 1 replacements cannot be scheduled, pinned to zone-a by nodeSelector topology.kubernetes.io/zone=zone-a: shop/cart-0"
    );
    assert_eq!(
        by["checkout"].rule.as_deref(),
        Some("pinned to zone-a by nodeSelector topology.kubernetes.io/zone=zone-a")
    );
    assert_eq!(by["checkout"].target.as_deref(), Some("Service shop/cart"));
    let summary = p.summary();
    let cart = summary
        .slo_predictions
        .iter()
        .find(|x| x.name == "checkout")
        .unwrap();
    assert_eq!(
        cart.rule, by["checkout"].rule,
        "the rule reaches the status"
    );
    assert_eq!(by["frontend"].verdict, Some(Verdict::Failed));
    assert!(
        by["frontend"].why.contains("topology spread constraint")
            && !by["frontend"].why.contains("cart"),
        "never blamed on pods that do not back it: {}",
        by["frontend"].why
    );
    assert_eq!(by["api"].verdict, Some(Verdict::Passed));
    assert_eq!(
        by["api"].why,
        "2 ready pods of Service shop/api keep serving outside zone-a"
    );
    assert_eq!(by["external"].verdict, None);
    assert!(
        p.warnings
            .iter()
            .any(|w| w == "SLO checkout: every pod behind Service shop/cart runs in zone-a")
    );
    let summary = p.summary();
    assert_eq!(summary.slo_predictions.len(), 4);
}

#[test]
fn a_prometheus_that_runs_only_in_the_zone_makes_the_slo_unmeasurable() {
    let prom = PodInfo {
        labels: Labels::new(BTreeMap::from([(
            "app".to_string(),
            "prometheus".to_string(),
        )])),
        ..pod(
            "monitoring",
            "prometheus-0",
            "a1",
            Some(("StatefulSet", "prometheus")),
        )
    };
    let mut snap = scheduled(vec![prom]);
    snap.slo_targets = vec![SloTarget {
        slo: "checkout".into(),
        backing: None,
        prober: Some(Target {
            what: "Service monitoring/prometheus".into(),
            namespace: "monitoring".into(),
            selector: Selector::from_iter([("app".to_string(), "prometheus".to_string())]),
        }),
        need: 1,
    }];
    let p = plan(&request("zone-a"), &snap);
    assert_eq!(p.slo_predictions[0].verdict, Some(Verdict::Inconclusive));
    assert_eq!(
        p.warnings,
        [
            "SLO checkout: its probe's Service monitoring/prometheus runs only in zone-a: the probe cannot answer while the zone is dark"
        ]
    );
}

// ---------------------------------------------------------------------------
// PowerLoss: needs the agent, never strands the leader, spares nothing.
// ---------------------------------------------------------------------------

fn power_request(zone: &str) -> Request {
    Request {
        power_loss: true,
        ..request(zone)
    }
}

fn with_agents(mut snap: Snapshot) -> Snapshot {
    for n in &mut snap.nodes {
        n.labels
            .insert(crate::api::AGENT_LABEL.into(), "0.1.0".into());
    }
    snap
}

#[test]
fn power_loss_needs_the_agent_on_every_node_of_the_zone() {
    let mut snap = with_agents(cluster());
    snap.nodes[1].labels.remove(crate::api::AGENT_LABEL);
    let req = power_request("zone-a");
    let p = plan(&req, &snap);
    let refusal = check_guards(&req, &p, &snap).unwrap_err().0;
    assert!(
        refusal.starts_with("1 nodes of zone-a run no firedrill agent (a2)"),
        "{refusal}"
    );
    // Cordon and kill needs no agent.
    assert_eq!(check_guards(&request("zone-a"), &p, &snap), Ok(()));
}

#[test]
fn power_loss_refuses_while_the_leader_runs_in_the_zone() {
    let mut snap = with_agents(cluster());
    snap.leader_node = Some("a1".into());
    let req = power_request("zone-a");
    let p = plan(&req, &snap);
    let refusal = check_guards(&req, &p, &snap).unwrap_err().0;
    assert!(
        refusal.starts_with("the operator's leader runs on a1 in zone-a"),
        "{refusal}"
    );
    snap.leader_node = Some("b1".into());
    assert_eq!(check_guards(&req, &plan(&req, &snap), &snap), Ok(()));
}

#[test]
fn under_power_loss_nothing_is_spared_and_statefulset_pods_stay_stuck() {
    let db = PodInfo {
        labels: Labels::new(BTreeMap::from([("app".to_string(), "db".to_string())])),
        ..pod("shop", "db-0", "a1", Some(("StatefulSet", "db")))
    };
    let system = pod("kube-system", "dns-1", "a1", None);
    let mut snap = with_agents(scheduled(vec![db, system]));
    snap.slo_targets = vec![target("orders", "db", 1)];
    let p = plan(&power_request("zone-a"), &snap);
    assert_eq!(p.pods_in_scope, ["shop/db-0", "kube-system/dns-1"]);
    assert_eq!(
        p.unplaceable[0].rule,
        "a StatefulSet pod on an unreachable node is not replaced until zone-a has power again"
    );
    assert_eq!(p.slo_predictions[0].verdict, Some(Verdict::Failed));
}

#[test]
fn equal_label_sets_are_held_once() {
    let mut sets = LabelSets::default();
    let web = || Labels::new(BTreeMap::from([("app".to_string(), "web".to_string())]));
    let (a, b) = (sets.share(&web()), sets.share(&web()));
    assert!(std::sync::Arc::ptr_eq(&a, &b));
    let db = sets.share(&Labels::new(BTreeMap::from([(
        "app".to_string(),
        "db".to_string(),
    )])));
    assert!(!std::sync::Arc::ptr_eq(&a, &db));
    assert_eq!(db.get("app").map(String::as_str), Some("db"));
}
#[test]
fn a_request_is_what_the_spec_asks_for_in_the_scope_given() {
    let spec: crate::api::DataCenterFailureSpec = serde_json::from_value(serde_json::json!({
        "zone": "zone-a", "topologyKey": "example.com/dc",
        "fault": {"mode": "PowerLoss"}, "guards": {"maxNodePercent": 20}
    }))
    .unwrap();
    let scope = Scope {
        operator_namespace: Some("firedrill".into()),
        ..Default::default()
    };
    let req = Request::from_spec(&spec, scope);
    assert_eq!(req.zone, "zone-a");
    assert_eq!(req.topology_key, "example.com/dc");
    assert_eq!(req.guards, spec.guards);
    assert!(req.power_loss);
    assert_eq!(req.scope.operator_namespace.as_deref(), Some("firedrill"));
    let mut spec = spec;
    spec.fault.mode = crate::api::FaultMode::CordonAndKill;
    assert!(!Request::from_spec(&spec, Scope::default()).power_loss);
}

// ---------------------------------------------------------------------------
// PowerLoss never cuts the API server's own node off, unless allowed.
// ---------------------------------------------------------------------------

#[test]
fn the_api_servers_nodes_are_found_by_endpoint_address_and_by_static_pod() {
    let mut nodes = cluster().nodes;
    nodes[0].addresses = vec!["10.0.0.1".into()];
    nodes[2].addresses = vec!["10.0.0.3".into(), "fd00::3".into()];
    let by_address = api_server_nodes(&nodes, &["fd00::3".into(), "10.9.9.9".into()], &[]);
    assert_eq!(by_address, [nodes[2].name.clone()]);
    let by_pod = api_server_nodes(&nodes, &[], &[nodes[0].name.clone(), "gone".into()]);
    assert_eq!(
        by_pod,
        [nodes[0].name.clone()],
        "a node not in the list is left out"
    );
    // Both, each once, sorted; an address behind a relay matches no node.
    let both = api_server_nodes(
        &nodes,
        &["10.0.0.1".into()],
        &[nodes[0].name.clone(), nodes[2].name.clone()],
    );
    let mut expected = vec![nodes[0].name.clone(), nodes[2].name.clone()];
    expected.sort();
    assert_eq!(both, expected);
    assert!(api_server_nodes(&nodes, &["10.77.0.1".into()], &[]).is_empty());
}

#[test]
fn power_loss_refuses_the_zone_holding_the_api_server_unless_allowed() {
    let mut snap = with_agents(cluster());
    snap.api_server_nodes = vec!["a1".into()];
    let req = power_request("zone-a");
    let p = plan(&req, &snap);
    assert_eq!(
        check_guards(&req, &p, &snap),
        Err(Refusal(
            "the API server runs on a1 in zone-a: a power loss would cut the control plane off, and with it the drill's restore; set guards.allowApiServerZone to rehearse that anyway".into()
        ))
    );
    // Cordon and kill leaves the API server's node running.
    assert_eq!(check_guards(&request("zone-a"), &p, &snap), Ok(()));
    // Another zone's API server is no concern.
    let req_b = power_request("zone-b");
    assert_eq!(check_guards(&req_b, &plan(&req_b, &snap), &snap), Ok(()));
    // Allowed explicitly.
    let mut allowed = power_request("zone-a");
    allowed.guards.allow_api_server_zone = true;
    assert_eq!(
        check_guards(&allowed, &plan(&allowed, &snap), &snap),
        Ok(())
    );
}

// Cascades: a Service the zone takes down fails the SLOs of its callers.
// ---------------------------------------------------------------------------

fn app_pod(ns: &str, app: &str, i: usize, node: &str) -> PodInfo {
    PodInfo {
        labels: Labels::new(BTreeMap::from([
            ("app".to_string(), app.to_string()),
            ("pod-template-hash".to_string(), "5d".to_string()),
        ])),
        ..pod(
            ns,
            &format!("{app}-{i}"),
            node,
            Some(("ReplicaSet", &format!("{app}-5d"))),
        )
    }
}

/// `n` replicas of `app` in `fleet`, one per zone in turn, each naming `env`.
fn fleet_app(app: &str, n: usize, env: &[(&str, &str)]) -> Vec<PodInfo> {
    let nodes = ["a1", "b1", "c1", "a2", "b2", "c2"];
    (0..n)
        .map(|i| PodInfo {
            refs: env
                .iter()
                .flat_map(|(k, v)| cascade::env_refs(k, v))
                .collect(),
            ..app_pod("fleet", app, i, nodes[i % 6])
        })
        .collect()
}

fn pinned(mut pods: Vec<PodInfo>) -> Vec<PodInfo> {
    for p in &mut pods {
        p.node = "a1".into();
        p.node_selector = BTreeMap::from([(ZONE_KEY.to_string(), "zone-a".to_string())]);
    }
    pods
}

fn service(ns: &str, name: &str) -> cascade::ServiceInfo {
    cascade::ServiceInfo {
        namespace: ns.into(),
        name: name.into(),
        selector: Some(Selector::from_iter([("app".to_string(), name.to_string())])),
        external_name: None,
    }
}

/// The snapshot as `collect` builds it: the zone's pods kept, every pod fed
/// to the discovery as it is listed.
fn discovered(pods: Vec<PodInfo>, services: &[&str]) -> Snapshot {
    let mut snap = cluster();
    snap.peers = pods.clone();
    for mut p in pods {
        let in_zone = p.node.starts_with('a');
        snap.discovery.add(&mut p, in_zone);
        if in_zone {
            snap.pods.push(p);
        }
    }
    snap.discovery.finish();
    snap.discovery.services = services.iter().map(|s| service("fleet", s)).collect();
    snap
}

fn fleet_target(slo: &str, app: &str) -> SloTarget {
    SloTarget {
        slo: slo.into(),
        backing: Some(Target {
            what: format!("Service fleet/{app}"),
            namespace: "fleet".into(),
            selector: Selector::from_iter([("app".to_string(), app.to_string())]),
        }),
        prober: None,
        need: 1,
    }
}

fn prediction<'a>(p: &'a Plan, slo: &str) -> &'a SloPrediction {
    p.slo_predictions.iter().find(|x| x.slo == slo).unwrap()
}

#[test]
fn a_caller_of_a_service_pinned_to_the_zone_is_predicted_failed_with_the_path() {
    let mut pods = fleet_app(
        "gateway",
        3,
        &[("TOKENS_URL", "http://tokens.fleet.svc:8080/v1")],
    );
    pods.extend(pinned(fleet_app("tokens", 1, &[])));
    let mut snap = discovered(pods, &["gateway", "tokens"]);
    snap.slo_targets = vec![fleet_target("gateway", "gateway")];
    let p = plan(&request("zone-a"), &snap);
    let g = prediction(&p, "gateway");
    assert_eq!(g.verdict, Some(Verdict::Failed));
    assert_eq!(
        g.why,
        "predicted Failed via tokens.fleet.svc (env TOKENS_URL of Deployment fleet/gateway): Service fleet/tokens keeps 0 ready pods outside zone-a, and its 1 replacements cannot be scheduled (nodeSelector topology.kubernetes.io/zone=zone-a)"
    );
    assert_eq!(g.rule.as_deref(), Some("cascade"));
    assert_eq!(g.via, ["fleet/tokens"]);
    assert_eq!(p.dependencies.edges.len(), 1);
    let e = &p.dependencies.edges[0];
    assert_eq!(
        (e.from.as_str(), e.to.as_str(), e.via.as_str(), e.strong),
        (
            "Deployment fleet/gateway",
            "fleet/tokens",
            "env TOKENS_URL",
            true
        )
    );
    let dot = p.dependencies.dot("zone-a");
    assert!(
        dot.contains(
            "\"Deployment fleet/gateway\" -> \"Service fleet/tokens\" [label=\"env TOKENS_URL\"]"
        ),
        "{dot}"
    );
    assert!(dot.contains("\"Service fleet/tokens\" [color=red"), "{dot}");
    assert!(p.summary().dependencies[0].contains("LOST"));
}

#[test]
fn a_cascade_two_hops_deep_is_followed_and_its_path_told() {
    let mut pods = fleet_app("web", 3, &[("API", "api:8080")]);
    pods.extend(fleet_app(
        "api",
        3,
        &[("DB_HOST", "db.fleet.svc.cluster.local")],
    ));
    pods.extend(pinned(fleet_app("db", 1, &[])));
    let mut snap = discovered(pods, &["web", "api", "db"]);
    snap.slo_targets = vec![fleet_target("web", "web"), fleet_target("api", "api")];
    let p = plan(&request("zone-a"), &snap);
    let web = prediction(&p, "web");
    assert_eq!(web.verdict, Some(Verdict::Failed));
    assert!(
        web.why.starts_with("predicted Failed via api (env API of Deployment fleet/web) -> db.fleet.svc.cluster.local (env DB_HOST of Deployment fleet/api): Service fleet/db keeps 0 ready pods"),
        "{}",
        web.why
    );
    assert_eq!(web.via, ["fleet/api", "fleet/db"]);
    assert_eq!(prediction(&p, "api").verdict, Some(Verdict::Failed));
    assert_eq!(prediction(&p, "api").via, ["fleet/db"]);
    assert_eq!(
        p.summary().slo_predictions[0].via,
        ["fleet/api", "fleet/db"]
    );
}

#[test]
fn no_cascade_from_a_service_that_keeps_serving_or_is_only_named_in_prose() {
    let mut pods = fleet_app(
        "gateway",
        3,
        &[
            ("CACHE_URL", "http://cache.fleet:6379"),
            ("NOTE", "tokens.fleet.svc is being retired"),
            ("MOTD", "ask tokens.fleet.svc for help"),
            ("EXTERNAL", "https://api.example.com/v1"),
        ],
    );
    pods.extend(fleet_app("cache", 3, &[]));
    pods.extend(pinned(fleet_app("tokens", 1, &[])));
    let mut snap = discovered(pods, &["gateway", "cache", "tokens"]);
    snap.slo_targets = vec![fleet_target("gateway", "gateway")];
    let p = plan(&request("zone-a"), &snap);
    let g = prediction(&p, "gateway");
    assert_eq!(g.verdict, Some(Verdict::Passed), "{}", g.why);
    assert!(!g.why.contains("via"), "{}", g.why);
    let at_risk: Vec<&String> = p
        .warnings
        .iter()
        .filter(|w| w.contains("at risk"))
        .collect();
    assert_eq!(at_risk.len(), 1, "{:?}", p.warnings);
    assert!(
        at_risk[0].starts_with("SLO gateway at risk via tokens.fleet.svc (env "),
        "{}",
        at_risk[0]
    );
    let cache = p
        .dependencies
        .services
        .iter()
        .find(|s| s.name == "fleet/cache")
        .unwrap();
    assert_eq!((cache.ready_outside, cache.lost.is_none()), (2, true));
    assert!(p.dependencies.edges.iter().all(|e| e.to != "com/example"));
}

#[test]
fn a_service_whose_replacements_can_start_elsewhere_is_no_cascade() {
    let mut pods = fleet_app("gateway", 3, &[("TOKENS_URL", "http://tokens.fleet.svc")]);
    // In zone-a, but free to move.
    pods.extend(fleet_app("tokens", 1, &[]));
    let mut snap = discovered(pods, &["gateway", "tokens"]);
    snap.slo_targets = vec![fleet_target("gateway", "gateway")];
    let p = plan(&request("zone-a"), &snap);
    assert_eq!(prediction(&p, "gateway").verdict, Some(Verdict::Passed));
}

#[test]
fn spec_dependencies_add_and_drop_edges() {
    let mut pods = fleet_app("gateway", 3, &[("TOKENS_URL", "http://tokens.fleet.svc")]);
    pods.extend(fleet_app("audit", 3, &[]));
    pods.extend(pinned(fleet_app("tokens", 1, &[])));
    let mut snap = discovered(pods, &["gateway", "audit", "tokens"]);
    snap.slo_targets = vec![
        fleet_target("gateway", "gateway"),
        fleet_target("audit", "audit"),
    ];
    let mut req = request("zone-a");
    req.dependencies.drop = vec![crate::api::DependencyEdge {
        from: "fleet/gateway".into(),
        to: "*".into(),
    }];
    req.dependencies.add = vec![crate::api::DependencyEdge {
        from: "fleet/audit".into(),
        to: "fleet/tokens".into(),
    }];
    let p = plan(&req, &snap);
    assert_eq!(prediction(&p, "gateway").verdict, Some(Verdict::Passed));
    let audit = prediction(&p, "audit");
    assert_eq!(audit.verdict, Some(Verdict::Failed));
    assert!(
        audit.why.starts_with(
            "predicted Failed via fleet/tokens (spec.dependencies of Deployment fleet/audit)"
        ),
        "{}",
        audit.why
    );
}

#[test]
fn an_external_name_service_leads_to_the_service_it_names() {
    let mut pods = fleet_app("gateway", 3, &[("AUTH", "auth.fleet:443")]);
    pods.extend(pinned(fleet_app("tokens", 1, &[])));
    let mut snap = discovered(pods, &["gateway", "tokens"]);
    snap.discovery.services.push(cascade::ServiceInfo {
        namespace: "fleet".into(),
        name: "auth".into(),
        selector: None,
        external_name: Some("tokens.fleet.svc.cluster.local".into()),
    });
    snap.discovery.services.push(cascade::ServiceInfo {
        namespace: "fleet".into(),
        name: "pay".into(),
        selector: None,
        external_name: Some("pay.example.com".into()),
    });
    snap.slo_targets = vec![fleet_target("gateway", "gateway")];
    let p = plan(&request("zone-a"), &snap);
    let g = prediction(&p, "gateway");
    assert!(
        g.why.starts_with("predicted Failed via auth.fleet (ExternalName fleet/auth) (env AUTH of Deployment fleet/gateway): Service fleet/tokens"),
        "{}",
        g.why
    );
}

#[test]
fn discovery_keeps_one_caller_per_workload_and_no_pod_keeps_its_references() {
    let pods = fleet_app("gateway", 6, &[("TOKENS_URL", "http://tokens.fleet.svc")]);
    let snap = discovered(pods, &["gateway"]);
    assert_eq!(snap.discovery.callers.len(), 1);
    assert_eq!(
        snap.discovery.callers[0].workload,
        "Deployment fleet/gateway"
    );
    assert!(snap.pods.iter().all(|p| p.refs.is_empty()));
    // Four of six outside zone-a, all ready, one label set.
    assert_eq!(snap.discovery.ready_outside.values().sum::<i32>(), 4);
    assert_eq!(snap.discovery.ready_outside.len(), 1);
}

#[test]
fn a_primary_in_the_zone_is_named_one_outside_it_is_not() {
    let mut snap = cluster();
    let member = |name: &str, node: &str, role: &str| {
        let mut p = pod("pay", name, node, Some(("StatefulSet", "pg")));
        p.labels = Labels::new(BTreeMap::from([
            ("cnpg.io/cluster".to_string(), "pg".to_string()),
            ("cnpg.io/instanceRole".to_string(), role.to_string()),
        ]));
        p
    };
    snap.pods = vec![
        member("pg-1", "a1", "primary"),
        member("pg-2", "b1", "replica"),
    ];
    let warned = |p: &Plan| {
        p.warnings
            .iter()
            .filter(|w| w.starts_with("primary of"))
            .count()
    };
    let p = plan(&request("zone-a"), &snap);
    assert_eq!(warned(&p), 1, "{:?}", p.warnings);
    assert!(p.warnings.contains(&"primary of CloudNativePG cluster pay/pg in zone-a (pod pay/pg-1): failover expected; measure it with a write probe".to_string()));
    assert_eq!(warned(&plan(&request("zone-b"), &snap)), 0);
    // A drill's own label, read from its spec.
    snap.pods = vec![PodInfo {
        labels: Labels::new(BTreeMap::from([(
            "store-role".to_string(),
            "primary".to_string(),
        )])),
        ..pod("pay", "ledger-1", "a2", None)
    }];
    let spec: crate::api::DataCenterFailureSpec = serde_json::from_value(serde_json::json!({
        "zone": "zone-a", "faultOnly": true, "primaryLabels": ["store-role=primary"]}))
    .unwrap();
    let req = Request {
        topology_key: ZONE_KEY.into(),
        ..Request::from_spec(&spec, Scope::default())
    };
    assert_eq!(
        warned(&plan(&req, &snap)),
        1,
        "{:?}",
        plan(&req, &snap).warnings
    );
}

// Off the async runtime.
// ---------------------------------------------------------------------------

/// A runtime with a single thread keeps running its other tasks (here a
/// 2 ms ticker, standing for timers, watches and Lease renewals) while a
/// large plan is computed: planning runs on the blocking pool. Planned on
/// the runtime's own thread, the ticker would not tick at all meanwhile.
#[test]
fn a_large_plan_leaves_the_runtime_free() {
    let mut pods = spread_pods("web", 12000);
    for p in &mut pods {
        p.spread = vec![zone_spread("web", 1)];
    }
    let mut snap = scheduled(pods);
    with_workload(&mut snap, "web", 12000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let (ticks, took, planned) = rt.block_on(async move {
        let ticks = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counter = ticks.clone();
        let ticker = tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_millis(2));
            loop {
                every.tick().await;
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        // Let the ticker start.
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let before = ticks.load(std::sync::atomic::Ordering::Relaxed);
        let started = std::time::Instant::now();
        let (_, _, p) = plan_off_runtime(request("zone-a"), snap).await;
        let took = started.elapsed();
        let during = ticks.load(std::sync::atomic::Ordering::Relaxed) - before;
        ticker.abort();
        (during, took, p)
    });
    assert!(
        took >= std::time::Duration::from_millis(40),
        "the plan is too small to show anything: {took:?}"
    );
    assert_eq!(planned.unplaceable.len(), 1, "{:?}", planned.unplaceable);
    let expected = (took.as_millis() / 2) as u32;
    assert!(
        ticks >= expected / 4,
        "the runtime ticked {ticks} times in the {took:?} of planning (about {expected} expected)"
    );
}
