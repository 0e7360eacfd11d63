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
    }
}

fn pod(ns: &str, name: &str, node: &str, owner: Option<(&str, &str)>) -> PodInfo {
    PodInfo {
        namespace: ns.into(),
        name: name.into(),
        node: node.into(),
        labels: BTreeMap::from([(
            "app".to_string(),
            name.split('-').next().unwrap().to_string(),
        )]),
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
        scope: Scope {
            exclude_namespaces: BTreeSet::from(["kube-system".to_string()]),
            ..Default::default()
        },
        guards: GuardSpec::default(),
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
    assert_eq!(spared["kube-system/dns-1"], "excluded namespace");
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
fn daemonset_pods_are_not_displaced() {
    let mut snap = cluster();
    snap.pods = vec![pod(
        "kube-proxy",
        "proxy-a1",
        "a1",
        Some(("DaemonSet", "proxy")),
    )];
    let p = plan(&request("zone-a"), &snap);
    assert_eq!(p.pods_in_scope, ["kube-proxy/proxy-a1"]);
    assert_eq!(p.capacity_needed, Capacity::default());
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
