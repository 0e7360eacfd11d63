//! A drill does exactly what its plan says, and nothing else: scope is
//! honoured by the mechanism, one zone is dark at a time, the spec cannot be
//! changed under a running drill, any valid name works, and the keeper dies
//! with its experiment. Every test takes the zones lock: they change nodes.

use firedrill_e2e::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const PIN_A: &str = "      nodeSelector: {topology.kubernetes.io/zone: zone-a}";

/// Pods of every given namespace: (namespace/name → uid).
fn uids_of(namespaces: &[&str]) -> BTreeMap<String, String> {
    namespaces
        .iter()
        .flat_map(|ns| {
            pod_uids(ns, "")
                .into_iter()
                .map(move |(p, u)| (format!("{ns}/{p}"), u))
        })
        .collect()
}

fn on_zone_a(ns: &str) -> BTreeSet<String> {
    let zone_a: BTreeSet<String> = nodes_in("zone-a").into_iter().collect();
    kubectl_json(&["-n", ns, "get", "pods"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| zone_a.contains(p["spec"]["nodeName"].as_str().unwrap_or("")))
        .map(|p| format!("{ns}/{}", p["metadata"]["name"].as_str().unwrap()))
        .collect()
}

fn daemonset(ns: &str, name: &str, labels: &str) -> String {
    format!(
        r#"---
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: {name}, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}{labels}}}}}
    spec:
      containers: [{{name: app, image: registry.invalid/{name}:1}}]
"#
    )
}

/// A Deployment whose pods carry `labels` (a flow-map fragment such as
/// `, tier: web`) besides `app: NAME`.
fn labelled(ns: &str, name: &str, replicas: u32, labels: &str, placement: &str) -> String {
    format!(
        r#"---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}{labels}}}}}
    spec:
{placement}
      containers: [{{name: app, image: registry.invalid/{name}:1}}]
"#
    )
}

/// The SLO of the drills on chat and login: chat keeps a ready endpoint.
fn chat_slo(ns: &str) -> Slo {
    Slo::new("chat", "30s")
        .interval("200ms")
        .service(ns, "chat")
}

fn bare_pod(ns: &str, name: &str, labels: &str, node: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}, labels: {{app: {name}{labels}}}}}
spec:
  nodeName: {node}
  containers: [{{name: app, image: registry.invalid/x:1}}]
"#
    )
}

#[test]
fn a_scoped_drill_spares_by_mechanism_what_the_plan_spares() {
    let _lock = zones_lock();
    install_crds();
    let target = Namespace::create("e2e-scope-target");
    let bystander = Namespace::create("e2e-scope-bystander");
    let excluded = Namespace::create("e2e-scope-excluded");
    let home = Namespace::create("e2e-scope-operator");
    let zone_a = nodes_in("zone-a");
    // In scope: web (tier=web, pinned to zone-a). Spared: cache (tier=cache,
    // outside the selector), the agent DaemonSet (tier=web, but a DaemonSet),
    // other namespaces' pods, and the operator's own pod.
    let manifests = [
        labelled(&target.0, "web", 2, ", tier: web", PIN_A),
        labelled(&target.0, "cache", 1, ", tier: cache", PIN_A),
        daemonset(&target.0, "agent", ", tier: web"),
        labelled(&bystander.0, "other", 2, ", tier: web", PIN_A),
        labelled(&excluded.0, "batch", 1, ", tier: web", PIN_A),
        bare_pod(
            &home.0,
            "firedrill-operator",
            ", app.kubernetes.io/name: firedrill",
            &zone_a[0],
        ),
    ];
    for m in &manifests {
        apply(m).expect_ok("applying the workloads");
    }
    wait_for("every workload Ready", Duration::from_secs(120), || {
        (ready_pods(&target.0, "app=web").len() == 2
            && ready_pods(&target.0, "app=cache").len() == 1
            && ready_pods(&target.0, "app=agent").len() == node_zones().len()
            && ready_pods(&bystander.0, "app=other").len() == 2
            && ready_pods(&excluded.0, "app=batch").len() == 1
            && ready_pods(&home.0, "app=firedrill-operator").len() == 1)
            .then_some(())
    });
    let namespaces = [
        target.0.as_str(),
        bystander.0.as_str(),
        excluded.0.as_str(),
        home.0.as_str(),
    ];
    let before = uids_of(&namespaces);
    let web: BTreeSet<String> = ready_pods(&target.0, "app=web")
        .into_iter()
        .map(|(p, _)| format!("{}/{p}", target.0))
        .collect();
    let spared_on_a: BTreeSet<String> = namespaces
        .iter()
        .flat_map(|ns| on_zone_a(ns))
        .filter(|p| !web.contains(p))
        .collect();
    // cache 1, agent 2 (one per zone-a node), other 2, batch 1, operator 1.
    assert_eq!(spared_on_a.len(), 7, "{spared_on_a:?}");

    let _op = Operator::start(&["--namespace", &home.0]);
    let _exp = Experiment("scoped".into());
    let drill = Drill::new("scoped", "zone-a")
        .duration("8s")
        .baseline("0s")
        .namespace(&target.0)
        .namespace(&excluded.0)
        .exclude_namespace(&excluded.0)
        .match_labels("tier: web");
    apply(&drill.yaml()).expect_ok("applying the drill");
    wait_phase("scoped", "ZoneDown", Duration::from_secs(60));
    assert_eq!(
        dcf_field("scoped", ".status.fault.taintEffect"),
        "NoSchedule"
    );
    let taints = firedrill_taints();
    assert_eq!(taints.len(), zone_a.len(), "{taints:?}");
    assert!(
        taints.iter().all(|(_, effect, _)| effect == "NoSchedule"),
        "a scoped drill must not evict with NoExecute: {taints:?}"
    );
    assert_eq!(dcf_field("scoped", ".status.fault.podsKilled"), "2");
    let spared: usize = dcf_field("scoped", ".status.fault.podsSpared")
        .parse()
        .unwrap();
    assert!(spared >= 7, "podsSpared {spared}");
    wait_completed("scoped", 60);
    assert_zone_restored();

    // Every spared pod is the very pod it was before the drill.
    let after = uids_of(&namespaces);
    for pod in &spared_on_a {
        assert_eq!(
            after.get(pod),
            before.get(pod),
            "{pod} was killed or evicted although the plan spared it"
        );
    }
    for pod in &web {
        assert!(!after.contains_key(pod), "{pod} was in scope and survived");
    }
    for ns in namespaces {
        let evicted = events_with_reason(ns, "TaintManagerEviction");
        assert!(evicted.is_empty(), "taint eviction in {ns}: {evicted:?}");
    }
}

#[test]
fn only_a_whole_zone_drill_keeps_the_zone_dark_with_no_execute() {
    let _lock = zones_lock();
    install_crds();
    let ns = Namespace::create("e2e-whole");
    apply(&service_and_deployment(&ns.0, "web", 2, "", PIN_A)).expect_ok("web");
    wait_for("web Ready", Duration::from_secs(60), || {
        (ready_pods(&ns.0, "app=web").len() == 2).then_some(())
    });
    let _op = Operator::start(&[]);
    let _exp = Experiment("whole".into());
    let drill = Drill::new("whole", "zone-a")
        .duration("4s")
        .baseline("0s")
        .include_daemon_sets();
    apply(&drill.yaml()).expect_ok("applying the drill");
    wait_phase("whole", "ZoneDown", Duration::from_secs(60));
    assert_eq!(dcf_field("whole", ".status.fault.taintEffect"), "NoExecute");
    assert!(firedrill_taints().iter().all(|(_, e, _)| e == "NoExecute"));
    wait_completed("whole", 60);
    assert_zone_restored();
}

#[test]
fn names_of_70_and_253_characters_run_and_delete() {
    let _lock = zones_lock();
    let ns = setup_chat_and_login("e2e-names");
    let _op = Operator::start(&[]);
    for name in [
        format!("seventy-{}", "y".repeat(62)),
        format!("long-{}", "x".repeat(248)),
    ] {
        assert!(name.len() == 70 || name.len() == 253);
        let _exp = Experiment(name.clone());
        let drill = Drill::new(&name, "zone-a")
            .duration("3s")
            .baseline("0s")
            .namespace(&ns.0)
            .slo(chat_slo(&ns.0));
        let out = apply(&drill.yaml());
        assert!(
            out.ok,
            "a valid name of {} characters was refused: {}",
            name.len(),
            out.stderr
        );
        wait_phase(&name, "ZoneDown", Duration::from_secs(60));
        let uid = dcf_field(&name, ".metadata.uid");
        let marks: BTreeSet<String> =
            kubectl_json(&["get", "nodes", "-l", "chaos.firedrill.dev/experiment"])["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| {
                    n["metadata"]["labels"]["chaos.firedrill.dev/experiment"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect();
        assert_eq!(
            marks,
            BTreeSet::from([uid.clone()]),
            "the mark names the experiment by uid"
        );
        wait_completed(&name, 60);
        assert_eq!(dcf_field(&name, ".status.phase"), "Completed");
        assert_eq!(dcf_field(&name, ".status.slos[0].name"), "chat");
        assert!(
            dcf_field(&name, ".status.slos[0].samples")
                .parse::<i64>()
                .unwrap()
                > 0,
            "the probe recording works for a long name"
        );
        assert_zone_restored();
        // Its Events were written (an Event's own name must fit in 253
        // characters too), each about this experiment.
        let selector = format!("involvedObject.name={name}");
        let events = kubectl_json(&[
            "-n",
            "default",
            "get",
            "events",
            "--field-selector",
            &selector,
        ]);
        let events = events["items"].as_array().unwrap();
        let reasons: BTreeSet<&str> = events
            .iter()
            .map(|e| e["reason"].as_str().unwrap_or(""))
            .collect();
        for reason in ["Planned", "ZoneCordoned", "Completed"] {
            assert!(
                reasons.contains(reason),
                "no {reason} event for the name of {} characters: {reasons:?}",
                name.len()
            );
        }
        for e in events {
            assert_eq!(e["involvedObject"]["uid"].as_str(), Some(uid.as_str()));
            assert!(e["metadata"]["name"].as_str().unwrap().len() <= 253);
        }
        let started = Instant::now();
        kubectl(&["delete", "dcf", &name, "--timeout=60s"], None)
            .expect_ok("deleting an experiment with a long name");
        assert!(started.elapsed() < Duration::from_secs(30));
        assert!(
            !kubectl(&["get", "dcf", &name], None).ok,
            "{name} still exists"
        );
    }
}

#[test]
fn the_spec_cannot_change_mid_baseline_or_mid_zone_down() {
    let _lock = zones_lock();
    let ns = setup_chat_and_login("e2e-immutable");
    let zone_b = nodes_in("zone-b");
    let _op = Operator::start(&[]);
    let _exp = Experiment("steady".into());
    let drill = Drill::new("steady", "zone-a")
        .duration("8s")
        .baseline("6s")
        .namespace(&ns.0)
        .slo(chat_slo(&ns.0));
    apply(&drill.yaml()).expect_ok("applying the drill");
    for phase in ["Baseline", "ZoneDown"] {
        wait_phase("steady", phase, Duration::from_secs(60));
        let moved = apply(&drill.clone().zone("zone-b").yaml());
        assert!(!moved.ok, "the zone was changed mid-{phase}");
        assert!(
            moved.stderr.contains("spec is immutable"),
            "{}",
            moved.stderr
        );
        let patched = kubectl(
            &[
                "patch",
                "dcf",
                "steady",
                "--type=merge",
                "-p",
                r#"{"spec":{"duration":"1h"}}"#,
            ],
            None,
        );
        assert!(
            !patched.ok && patched.stderr.contains("spec is immutable"),
            "{}",
            patched.stderr
        );
        assert_eq!(dcf_field("steady", ".spec.zone"), "zone-a");
        // Metadata is not spec: the abort annotation and labels still work.
        kubectl(&["label", "dcf", "steady", "team=sre", "--overwrite"], None)
            .expect_ok("labelling a running experiment");
    }
    let traces: BTreeSet<String> = firedrill_traces_on_nodes()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(
        zone_b.iter().all(|n| !traces.contains(n)),
        "zone-b was touched: {traces:?}"
    );
    wait_completed("steady", 60);
    assert_zone_restored();
}

/// Samples the zones marked by firedrill every 50 ms until dropped; remembers
/// the most zones ever dark at once.
struct DarkZoneSampler {
    stop: Arc<AtomicBool>,
    most: Arc<AtomicUsize>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl DarkZoneSampler {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let most = Arc::new(AtomicUsize::new(0));
        let (s, m) = (stop.clone(), most.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let zones = marked_zones().len();
                m.fetch_max(zones, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        DarkZoneSampler {
            stop,
            most,
            handle: Some(handle),
        }
    }

    fn most(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap();
        self.most.load(Ordering::Relaxed)
    }
}

/// When an experiment held its zone: [Injecting entered, Restoring's end].
fn dark_window(name: &str) -> Option<(String, String)> {
    let phases = dcf_field(name, ".status.transitions[*].phase");
    let times = dcf_field(name, ".status.transitions[*].time");
    let pairs: Vec<(&str, &str)> = phases.split(' ').zip(times.split(' ')).collect();
    let start = pairs.iter().find(|(p, _)| *p == "Injecting")?.1.to_string();
    let end = pairs.last()?.1.to_string();
    Some((start, end))
}

#[test]
fn two_drills_created_at_the_same_instant_never_darken_two_zones() {
    let _lock = zones_lock();
    install_crds();
    let _op = Operator::start(&[]);
    let rounds = 20;
    let mut refused = 0;
    for round in 0..rounds {
        let (a, b) = (format!("race-a-{round}"), format!("race-b-{round}"));
        let _ea = Experiment(a.clone());
        let _eb = Experiment(b.clone());
        let sampler = DarkZoneSampler::start();
        let both = format!(
            "{}---\n{}",
            Drill::new(&a, "zone-a")
                .duration("1s")
                .baseline("0s")
                .yaml(),
            Drill::new(&b, "zone-b")
                .duration("1s")
                .baseline("0s")
                .yaml()
        );
        apply(&both).expect_ok("creating both drills at once");
        for n in [&a, &b] {
            wait_completed(n, 60);
        }
        let most = sampler.most();
        assert!(most <= 1, "round {round}: {most} zones were dark at once");
        let (pa, pb) = (
            dcf_field(&a, ".status.phase"),
            dcf_field(&b, ".status.phase"),
        );
        let reasons = [
            dcf_field(&a, ".status.reason"),
            dcf_field(&b, ".status.reason"),
        ];
        match (pa.as_str(), pb.as_str()) {
            ("Completed", "Completed") => {
                // One ran after the other: their dark windows must not overlap.
                let (wa, wb) = (dark_window(&a).unwrap(), dark_window(&b).unwrap());
                assert!(
                    wa.1 <= wb.0 || wb.1 <= wa.0,
                    "round {round}: dark windows overlap: {wa:?} {wb:?}"
                );
            }
            ("Completed", "Failed") | ("Failed", "Completed") => {
                refused += 1;
                assert!(
                    reasons
                        .iter()
                        .any(|r| r.contains("another DataCenterFailure is active")),
                    "round {round}: {reasons:?}"
                );
            }
            other => panic!("round {round}: unexpected phases {other:?}: {reasons:?}"),
        }
        assert_zone_restored();
    }
    eprintln!(
        "{rounds} rounds: {refused} refused by the overlap guard, the rest ran one after the other; never two zones dark"
    );
}

#[test]
fn two_schedules_firing_on_the_same_tick_never_darken_two_zones() {
    let _lock = zones_lock();
    install_crds();
    let _op = Operator::start(&[]);
    let schedule = |name: &str, zone: &str| {
        format!(
            r#"apiVersion: chaos.firedrill.dev/v1alpha1
kind: DataCenterFailureSchedule
metadata: {{name: {name}}}
spec:
  schedule: '* * * * *'
  zones: [{zone}]
  template:
    spec:
      zone: {zone}
      duration: 3s
      baseline: 0s
      faultOnly: true
"#
        )
    };
    let _cleanup = Cleanup(vec!["dcfs/tick-a".into(), "dcfs/tick-b".into()]);
    let sampler = DarkZoneSampler::start();
    apply(&format!(
        "{}---\n{}",
        schedule("tick-a", "zone-a"),
        schedule("tick-b", "zone-b")
    ))
    .expect_ok("creating two schedules");
    let runs = wait_for("both schedules to fire", Duration::from_secs(100), || {
        let items = kubectl_json(&["get", "dcf", "-l", "chaos.firedrill.dev/schedule"])["items"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let done: Vec<Value> = items
            .into_iter()
            .filter(|e| {
                matches!(
                    e["status"]["phase"].as_str(),
                    Some("Completed" | "Failed" | "Aborted")
                )
            })
            .collect();
        (done.len() >= 2).then_some(done)
    });
    kubectl(
        &[
            "delete",
            "dcfs",
            "tick-a",
            "tick-b",
            "--wait=true",
            "--timeout=60s",
        ],
        None,
    );
    let most = sampler.most();
    assert!(most <= 1, "{most} zones were dark at once");
    let phases: Vec<&str> = runs
        .iter()
        .filter_map(|r| r["status"]["phase"].as_str())
        .collect();
    assert!(
        phases.contains(&"Completed"),
        "one of the two runs darkens its zone: {phases:?}"
    );
    wait_for(
        "the runs to be deleted with their schedules",
        Duration::from_secs(60),
        || {
            kubectl_json(&["get", "dcf", "-l", "chaos.firedrill.dev/schedule"])["items"]
                .as_array()
                .unwrap()
                .is_empty()
                .then_some(())
        },
    );
    assert_zone_restored();
}

#[test]
fn the_keeper_kills_only_on_nodes_that_are_dark_at_that_moment() {
    let _lock = zones_lock();
    let ns = setup_chat_and_login("e2e-keeper");
    let zone_a = nodes_in("zone-a");
    assert!(zone_a.len() >= 2);
    let (rescued, dark) = (zone_a[0].clone(), zone_a[1].clone());
    let _op = Operator::start(&[]);
    let _exp = Experiment("keeper".into());
    let drill = Drill::new("keeper", "zone-a")
        .duration("10m")
        .baseline("0s")
        .namespace(&ns.0);
    apply(&drill.yaml()).expect_ok("applying the drill");
    wait_phase("keeper", "ZoneDown", Duration::from_secs(60));
    // An admin takes one node back by hand: mark, record and taint removed, uncordoned.
    kubectl(
        &["label", "node", &rescued, "chaos.firedrill.dev/experiment-"],
        None,
    )
    .expect_ok("unlabel");
    kubectl(
        &[
            "annotate",
            "node",
            &rescued,
            "chaos.firedrill.dev/prior-state-",
        ],
        None,
    )
    .expect_ok("unannotate");
    kubectl(
        &["taint", "node", &rescued, "chaos.firedrill.dev/zone-down-"],
        None,
    )
    .expect_ok("untaint");
    kubectl(&["uncordon", &rescued], None).expect_ok("uncordon");
    std::thread::sleep(Duration::from_secs(2));
    // A pod on the rescued node is left alone; one on a node still dark is killed.
    apply(&bare_pod(&ns.0, "rescued", "", &rescued)).expect_ok("a pod on the rescued node");
    let intruder = bare_pod(&ns.0, "intruder", "", &dark)
        .replace("spec:\n", "spec:\n  tolerations: [{operator: Exists}]\n");
    apply(&intruder).expect_ok("a pod on a dark node");
    wait_for(
        "the intruder on the dark node to be killed",
        Duration::from_secs(30),
        || pod_uids(&ns.0, "app=intruder").is_empty().then_some(()),
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        pod_uids(&ns.0, "app=rescued").len(),
        1,
        "a pod was killed on a node the drill no longer holds"
    );
    wait_for(
        "the change noted in the status",
        Duration::from_secs(30),
        || {
            dcf_field("keeper", ".status.fault.zoneChanges")
                .contains(&format!(
                    "node {rescued} no longer carries the drill's mark and taint"
                ))
                .then_some(())
        },
    );
    kubectl(&["delete", "dcf", "keeper", "--timeout=60s"], None).expect_ok("delete");
    assert_zone_restored();
}

#[test]
fn a_drill_deleted_with_its_finalizer_removed_by_hand_leaves_nothing_behind() {
    let _lock = zones_lock();
    let ns = setup_chat_and_login("e2e-vanish");
    let zone_a = nodes_in("zone-a");
    let _op = Operator::start(&[]);
    let _exp = Experiment("vanish".into());
    let drill = Drill::new("vanish", "zone-a")
        .duration("10m")
        .baseline("0s")
        .namespace(&ns.0);
    apply(&drill.yaml()).expect_ok("applying the drill");
    wait_phase("vanish", "ZoneDown", Duration::from_secs(60));
    // The "stuck delete" remedy people reach for: delete, then strip the finalizer.
    kubectl(&["delete", "dcf", "vanish", "--wait=false"], None).expect_ok("delete");
    kubectl(
        &[
            "patch",
            "dcf",
            "vanish",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ],
        None,
    );
    wait_for("the experiment to be gone", Duration::from_secs(30), || {
        (!kubectl(&["get", "dcf", "vanish"], None).ok).then_some(())
    });
    for n in &zone_a {
        kubectl(&["uncordon", n], None);
    }
    // Whoever saw it go (the cleanup, the keeper, or the sweep for nodes of
    // vanished experiments), the nodes are restored and nothing kills on them.
    wait_for("no firedrill traces left", Duration::from_secs(60), || {
        firedrill_traces_on_nodes().is_empty().then_some(())
    });
    apply(&bare_pod(&ns.0, "newcomer", "", &zone_a[0])).expect_ok("a pod on a former dark node");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        pod_uids(&ns.0, "app=newcomer").len(),
        1,
        "a pod was killed on a node after its experiment was gone"
    );
    assert_zone_restored();
}

#[test]
fn nodes_deleted_re_registered_or_relabelled_mid_drill_end_consistent_and_explained() {
    let _lock = zones_lock();
    let ns = setup_chat_and_login("e2e-churn");
    let zone_a = nodes_in("zone-a");
    assert!(zone_a.len() >= 2);
    let (gone, moved) = (zone_a[0].clone(), zone_a[1].clone());
    let _op = Operator::start(&[]);
    let _exp = Experiment("churn".into());
    let drill = Drill::new("churn", "zone-a")
        .duration("12s")
        .baseline("0s")
        .namespace(&ns.0);
    apply(&drill.yaml()).expect_ok("applying the drill");
    wait_phase("churn", "ZoneDown", Duration::from_secs(60));
    // Relabel one dark node into zone-b; delete another and register it again.
    kubectl(
        &[
            "label",
            "node",
            &moved,
            "topology.kubernetes.io/zone=zone-b",
            "--overwrite",
        ],
        None,
    )
    .expect_ok("relabelling");
    let _restore_label = RelabelBack(moved.clone());
    kubectl(&["delete", "node", &gone, "--wait=true"], None).expect_ok("deleting a dark node");
    std::thread::sleep(Duration::from_secs(2));
    kubectl(
        &["apply", "--server-side", "-f", "-"],
        Some(&kwok_node_yaml(&gone, "zone-a")),
    )
    .expect_ok("registering the node again");
    wait_completed("churn", 90);
    assert_eq!(dcf_field("churn", ".status.phase"), "Completed");
    let changes = dcf_field("churn", ".status.fault.zoneChanges");
    assert!(
        changes.contains(&format!("node {moved} was relabelled out of zone-a")),
        "{changes}"
    );
    assert!(
        changes.contains(&format!("node {gone} was deleted while dark")),
        "{changes}"
    );
    assert!(
        changes.contains(&format!("node {gone} registered again under the same name")),
        "{changes}"
    );
    let events = events_with_reason("default", "ZoneChanged");
    assert!(!events.is_empty(), "the changes are Events too");
    // The relabelled node was restored with the zone; the new node was never touched.
    assert_zone_restored();
}

/// Puts a node back into zone-a when the test ends.
struct RelabelBack(String);

impl Drop for RelabelBack {
    fn drop(&mut self) {
        kubectl(
            &[
                "label",
                "node",
                &self.0,
                "topology.kubernetes.io/zone=zone-a",
                "--overwrite",
            ],
            None,
        );
    }
}

#[test]
fn nodes_that_join_the_zone_after_planning_are_guarded_again() {
    let _lock = zones_lock();
    let ns = setup_chat_and_login("e2e-join");
    let zone_a = nodes_in("zone-a");
    let _op = Operator::start(&[]);
    let drill = |name: &str, guards: &str| {
        Drill::new(name, "zone-a")
            .duration("3s")
            .baseline("5s")
            .namespace(&ns.0)
            .guards(guards)
            .slo(chat_slo(&ns.0))
    };
    // 1. Taken too, and said so.
    {
        let _exp = Experiment("joined".into());
        apply(&drill("joined", "").yaml()).expect_ok("drill");
        wait_phase("joined", "Baseline", Duration::from_secs(60));
        let extra = ExtraNode::add("node-zone-a-late", "zone-a");
        wait_phase("joined", "ZoneDown", Duration::from_secs(60));
        assert_eq!(
            dcf_field("joined", ".status.fault.nodesTaken"),
            (zone_a.len() + 1).to_string()
        );
        assert_eq!(
            dcf_field("joined", ".status.plan.nodesInZone"),
            zone_a.len().to_string()
        );
        let changes = dcf_field("joined", ".status.fault.zoneChanges");
        assert!(
            changes.contains("1 nodes joined zone-a after planning") && changes.contains(&extra.0),
            "{changes}"
        );
        assert!(cordoned_nodes().contains(&extra.0));
        wait_completed("joined", 60);
        assert_zone_restored();
    }
    // 2. Refused when the guards no longer pass with them; nothing touched.
    let before = kubectl_json(&["get", "nodes"]);
    let _exp = Experiment("outgrown".into());
    let max = format!("maxNodes: {}", zone_a.len());
    apply(&drill("outgrown", &max).yaml()).expect_ok("drill");
    wait_phase("outgrown", "Baseline", Duration::from_secs(60));
    let _extra = ExtraNode::add("node-zone-a-later", "zone-a");
    let before_extra = kubectl_json(&["get", "nodes"]);
    wait_completed("outgrown", 60);
    assert_eq!(dcf_field("outgrown", ".status.phase"), "Aborted");
    let reason = dcf_field("outgrown", ".status.reason");
    assert!(
        reason.contains("refused at injection")
            && reason.contains(&format!("more than guards.maxNodes={}", zone_a.len())),
        "{reason}"
    );
    assert_eq!(dcf_field("outgrown", ".status.fault.podsKilled"), "0");
    assert_nodes_untouched(&before_extra);
    drop(before);
}
