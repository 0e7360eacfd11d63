//! The zone failure engine on the testbed: the operator runs as a real
//! process, the cluster is driven and inspected with real kubectl.

use firedrill_e2e::*;
use std::collections::BTreeSet;
use std::time::Duration;

/// Pods of `app` in `ns` that are not being deleted: (name, node, phase).
fn pods(ns: &str, app: &str) -> Vec<(String, String, String)> {
    kubectl_json(&["-n", ns, "get", "pods", "-l", &format!("app={app}")])["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
                p["status"]["phase"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn zone_goes_dark_pods_move_pinned_pods_wait_and_everything_is_restored() {
    let _lock = zones_lock();
    let ns = setup_chat_and_login("e2e-dark");
    let zone_a = nodes_in("zone-a");
    // An admin cordoned one zone-a node before the drill: it must stay cordoned.
    let admin = AdminCordon::cordon(&zone_a[..1]);
    let before_chat: Vec<_> = pods(&ns.0, "chat");
    let doomed: BTreeSet<String> = before_chat
        .iter()
        .filter(|(_, n, _)| zone_a.contains(n))
        .map(|(p, _, _)| p.clone())
        .collect();
    assert!(!doomed.is_empty(), "the test needs chat pods in zone-a");

    let mut op = Operator::start(&[]);
    let _exp = Experiment("dark".into());
    let drill = Drill::new("dark", "zone-a").duration("8s").namespace(&ns.0);
    assert!(apply(&drill.yaml()).ok);

    wait_phase("dark", "ZoneDown", Duration::from_secs(60));
    let cordoned = cordoned_nodes();
    for n in &zone_a {
        assert!(cordoned.contains(n), "{n} is not cordoned during ZoneDown");
    }
    let tainted: Vec<String> = firedrill_traces_on_nodes()
        .into_iter()
        .filter(|(_, w)| w == "taint")
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        tainted.iter().cloned().collect::<BTreeSet<_>>(),
        zone_a.iter().cloned().collect(),
        "every zone-a node carries the taint"
    );

    // The zone's pods are gone; replacements run only in the other zones.
    let chat = wait_for(
        "6 chat pods Ready outside zone-a",
        Duration::from_secs(60),
        || {
            let now = ready_pods(&ns.0, "app=chat");
            (now.len() == 6 && now.iter().all(|(p, _)| !doomed.contains(p))).then_some(now)
        },
    );
    assert!(chat.iter().all(|(_, n)| !zone_a.contains(n)), "{chat:?}");
    // The pinned pods have nowhere to go.
    let login = wait_for("login pods Pending", Duration::from_secs(60), || {
        let now = pods(&ns.0, "login");
        (now.len() == 2
            && now
                .iter()
                .all(|(_, node, phase)| node.is_empty() && phase == "Pending"))
        .then_some(now)
    });
    assert_eq!(login.len(), 2);
    let killed: i64 = dcf_field("dark", ".status.fault.podsKilled")
        .parse()
        .unwrap();
    assert_eq!(
        killed as usize,
        doomed.len() + 2,
        "every chat pod in zone-a and both login pods were killed"
    );
    assert_eq!(dcf_field("dark", ".status.plan.pinnedPods"), "2");
    assert_eq!(
        dcf_field("dark", ".status.conditions[?(@.type==\"Injected\")].status"),
        "True"
    );

    // After the duration the zone comes back; kubectl wait works on the condition.
    wait_completed("dark", 60);
    assert_eq!(dcf_field("dark", ".status.phase"), "Completed");
    assert_eq!(
        dcf_field("dark", ".status.conditions[?(@.type==\"Restored\")].status"),
        "True"
    );
    let cordoned = cordoned_nodes();
    assert!(
        cordoned.contains(&zone_a[0]),
        "the node the admin cordoned was uncordoned"
    );
    for n in &zone_a[1..] {
        assert!(
            !cordoned.contains(n),
            "{n} is still cordoned after the drill"
        );
    }
    assert!(
        firedrill_traces_on_nodes().is_empty(),
        "{:?}",
        firedrill_traces_on_nodes()
    );
    // The pinned pods can run again.
    wait_for("login pods Running again", Duration::from_secs(60), || {
        (ready_pods(&ns.0, "app=login").len() == 2).then_some(())
    });
    let transitions = dcf_field("dark", ".status.transitions[*].phase");
    assert_eq!(
        transitions,
        "Planning Baseline Injecting ZoneDown Restoring Completed"
    );
    drop(admin);
    op.stop();
}

#[test]
fn deleting_the_experiment_during_zone_down_restores_the_zone() {
    let _lock = zones_lock();
    let ns = setup_chat_and_login("e2e-delete");
    let _op = Operator::start(&[]);
    let exp = Experiment("deleted".into());
    let drill = Drill::new("deleted", "zone-a")
        .duration("10m")
        .namespace(&ns.0);
    assert!(apply(&drill.yaml()).ok);
    wait_phase("deleted", "ZoneDown", Duration::from_secs(60));
    assert!(!firedrill_traces_on_nodes().is_empty());
    kubectl(&["delete", "dcf", "deleted", "--timeout=60s"], None).expect_ok("kubectl delete dcf");
    assert_zone_restored();
    drop(exp);
}

#[test]
fn abort_annotation_restores_the_zone() {
    let _lock = zones_lock();
    let ns = setup_chat_and_login("e2e-abort");
    let _op = Operator::start(&[]);
    let _exp = Experiment("aborted".into());
    let drill = Drill::new("aborted", "zone-a")
        .duration("10m")
        .namespace(&ns.0);
    assert!(apply(&drill.yaml()).ok);
    wait_phase("aborted", "ZoneDown", Duration::from_secs(60));
    kubectl(
        &[
            "annotate",
            "dcf",
            "aborted",
            "chaos.firedrill.dev/abort=rollback requested by on-call",
        ],
        None,
    )
    .expect_ok("annotate");
    wait_completed("aborted", 60);
    assert_eq!(dcf_field("aborted", ".status.phase"), "Aborted");
    let reason = dcf_field("aborted", ".status.reason");
    assert!(
        reason.contains("rollback requested by on-call") && reason.contains("zone restored"),
        "{reason}"
    );
    assert_zone_restored();
}

#[test]
fn operator_killed_during_injecting_and_zone_down_still_restores_everything() {
    let _lock = zones_lock();
    let ns = setup_chat_and_login("e2e-crash");
    let zone_a = nodes_in("zone-a");
    let exp = Experiment("crash".into());

    // Slow injection down so the crash lands in the middle of it.
    let mut op = Operator::start(&["--debug-inject-pause=2s"]);
    let drill = Drill::new("crash", "zone-a")
        .duration("15s")
        .namespace(&ns.0);
    assert!(apply(&drill.yaml()).ok);
    wait_phase("crash", "Injecting", Duration::from_secs(60));
    wait_for(
        "a first zone-a node marked",
        Duration::from_secs(30),
        || (!firedrill_traces_on_nodes().is_empty()).then_some(()),
    );
    op.crash();
    let marked: BTreeSet<String> = firedrill_traces_on_nodes()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(
        !marked.is_empty() && marked.len() < zone_a.len(),
        "crashed mid-injection: {marked:?}"
    );
    assert_eq!(dcf_field("crash", ".status.phase"), "Injecting");

    // A new operator finishes the injection from the cluster's state alone.
    let mut op = Operator::start(&[]);
    wait_phase("crash", "ZoneDown", Duration::from_secs(60));
    op.crash();
    let held: BTreeSet<String> = firedrill_traces_on_nodes()
        .into_iter()
        .filter(|(_, w)| w == "taint")
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        held,
        zone_a.iter().cloned().collect(),
        "every zone-a node held while the operator is down"
    );

    // And another one brings the zone back after the duration.
    let _op = Operator::start(&[]);
    wait_completed("crash", 90);
    assert_eq!(
        dcf_field("crash", ".status.phase"),
        "Completed",
        "{}",
        dcf_field("crash", ".status.reason")
    );
    assert_zone_restored();
    // Deleted while an operator runs to take its finalizer off.
    drop(exp);
    let _ = ns;
}

#[test]
fn a_zone_down_past_duration_plus_grace_is_ended_as_timed_out() {
    let _lock = zones_lock();
    let ns = setup_chat_and_login("e2e-timeout");
    let exp = Experiment("late".into());
    let mut op = Operator::start(&[]);
    let drill = Drill::new("late", "zone-a").duration("4s").namespace(&ns.0);
    assert!(apply(&drill.yaml()).ok);
    wait_phase("late", "ZoneDown", Duration::from_secs(60));
    op.crash();
    // Away for longer than duration (4s) + grace (1s); the zone stays held.
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(dcf_field("late", ".status.phase"), "ZoneDown");
    assert!(!firedrill_traces_on_nodes().is_empty());

    let _op = Operator::start(&["--restore-grace=1s"]);
    wait_phase("late", "Aborted", Duration::from_secs(60));
    let reason = dcf_field("late", ".status.reason");
    assert!(
        reason.contains("timed out: the zone was down longer than duration + 1s grace")
            && reason.contains("zone restored"),
        "{reason}"
    );
    let events = kubectl(
        &[
            "get",
            "events",
            "-A",
            "--field-selector",
            "involvedObject.name=late,reason=TimedOut",
            "-o",
            "name",
        ],
        None,
    );
    assert!(!events.stdout.trim().is_empty(), "a TimedOut event");
    assert_zone_restored();
    // Deleted while an operator runs to take its finalizer off.
    drop(exp);
}

/// An admission policy that refuses to take firedrill's taint off a node: a
/// real API-server refusal for the restore to run into.
const BLOCK_RESTORE: &str = r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: e2e-block-restore}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - {apiGroups: [""], apiVersions: [v1], operations: [UPDATE], resources: [nodes]}
  validations:
  - expression: >-
      !(has(oldObject.spec.taints) && oldObject.spec.taints.exists(t, t.key == 'chaos.firedrill.dev/zone-down')
        && !(has(object.spec.taints) && object.spec.taints.exists(t, t.key == 'chaos.firedrill.dev/zone-down')))
    message: e2e blocks the restore
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: e2e-block-restore}
spec:
  policyName: e2e-block-restore
  validationActions: [Deny]
"#;

#[test]
fn a_refused_restore_is_reported_and_retried_until_it_succeeds() {
    let _lock = zones_lock();
    let ns = setup_chat_and_login("e2e-retry");
    let zone_a = nodes_in("zone-a");
    let _op = Operator::start(&[]);
    let _exp = Experiment("retry".into());
    // Dropped before the experiment, so a failing test still restores.
    let block = Cleanup(vec![
        "validatingadmissionpolicybinding/e2e-block-restore".into(),
        "validatingadmissionpolicy/e2e-block-restore".into(),
    ]);
    assert!(apply(BLOCK_RESTORE).ok);
    let drill = Drill::new("retry", "zone-a")
        .duration("3s")
        .namespace(&ns.0);
    assert!(apply(&drill.yaml()).ok);
    wait_phase("retry", "Restoring", Duration::from_secs(60));
    let failed = wait_for("the restore to be refused", Duration::from_secs(60), || {
        let c = dcf_field(
            "retry",
            ".status.conditions[?(@.type==\"Restored\")].message",
        );
        c.contains("restore failed").then_some(c)
    });
    assert!(
        failed.contains("retrying with backoff") && failed.contains("e2e blocks the restore"),
        "{failed}"
    );
    // Still held, and still Restoring: the zone is not declared restored.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(dcf_field("retry", ".status.phase"), "Restoring");
    let held: BTreeSet<String> = firedrill_traces_on_nodes()
        .into_iter()
        .filter(|(_, w)| w == "taint")
        .map(|(n, _)| n)
        .collect();
    assert_eq!(held, zone_a.iter().cloned().collect());
    let events = kubectl(
        &[
            "get",
            "events",
            "-A",
            "--field-selector",
            "involvedObject.name=retry,reason=RestoreFailed",
            "-o",
            "name",
        ],
        None,
    );
    assert!(!events.stdout.trim().is_empty(), "a RestoreFailed event");

    // The refusal goes away; a retry restores the zone.
    drop(block);
    wait_completed("retry", 90);
    assert_eq!(dcf_field("retry", ".status.phase"), "Completed");
    assert_eq!(
        dcf_field(
            "retry",
            ".status.conditions[?(@.type==\"Restored\")].status"
        ),
        "True"
    );
    assert_zone_restored();
}

#[test]
fn a_zone_with_no_nodes_fails_and_nothing_is_touched() {
    let _lock = zones_lock();
    install_crds();
    let _op = Operator::start(&[]);
    let _exp = Experiment("nowhere".into());
    let before = kubectl_json(&["get", "nodes"]);
    let drill = Drill::new("nowhere", "zone-x")
        .duration("1m")
        .namespace("default");
    assert!(apply(&drill.yaml()).ok);
    wait_phase("nowhere", "Failed", Duration::from_secs(60));
    let reason = dcf_field("nowhere", ".status.reason");
    assert!(
        reason.contains("no nodes with topology.kubernetes.io/zone=zone-x"),
        "{reason}"
    );
    assert_eq!(
        dcf_field(
            "nowhere",
            ".status.conditions[?(@.type==\"Completed\")].status"
        ),
        "True",
        "kubectl wait returns"
    );
    assert_nodes_untouched(&before);
}

#[test]
fn a_zone_holding_every_node_fails_and_nothing_is_touched() {
    let _lock = zones_lock();
    install_crds();
    let _op = Operator::start(&[]);
    let _exp = Experiment("everything".into());
    let before = kubectl_json(&["get", "nodes"]);
    // Every testbed node is in region "testbed".
    let drill = Drill::new("everything", "testbed")
        .topology_key("topology.kubernetes.io/region")
        .duration("1m")
        .namespace("default")
        .guards("maxNodePercent: 100");
    assert!(apply(&drill.yaml()).ok);
    wait_phase("everything", "Failed", Duration::from_secs(60));
    let reason = dcf_field("everything", ".status.reason");
    assert!(reason.contains("holds every schedulable node"), "{reason}");
    assert_nodes_untouched(&before);
}

#[test]
fn plan_shows_what_would_break_and_changes_nothing() {
    let _lock = zones_lock();
    let ns = setup_chat_and_login("e2e-plan");
    let before = kubectl_json(&["get", "nodes"]);
    let (code, out, err) = firedrill(&["plan", "--zone", "zone-a", "-n", &ns.0, "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let pinned: Vec<&str> = v["plan"]["pinned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pod"].as_str().unwrap())
        .collect();
    assert_eq!(pinned.len(), 2, "{out}");
    assert!(
        pinned
            .iter()
            .all(|p| p.starts_with(&format!("{}/login-", ns.0)))
    );
    let lost: Vec<&str> = v["plan"]["lostWorkloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(lost, [format!("{}/login", ns.0)]);
    assert!(v["refusal"].is_null());

    let (code, table, _) = firedrill(&["plan", "--zone", "zone-a", "-n", &ns.0]);
    assert_eq!(code, 0);
    assert!(
        table.contains("PODS PINNED TO THE ZONE: cannot run anywhere else (2)"),
        "{table}"
    );
    assert!(
        table.contains("nodeSelector topology.kubernetes.io/zone=zone-a"),
        "{table}"
    );

    let (code, table, _) = firedrill(&["plan", "--zone", "zone-x"]);
    assert_eq!(code, 1, "a plan the guards refuse exits 1");
    assert!(
        table.contains("would refuse: no nodes with topology.kubernetes.io/zone=zone-x"),
        "{table}"
    );
    assert_nodes_untouched(&before);
}

#[test]
fn pods_that_land_on_the_dark_zone_are_killed_again() {
    let _lock = zones_lock();
    let ns = setup_chat_and_login("e2e-rekill");
    let zone_a = nodes_in("zone-a");
    let _op = Operator::start(&[]);
    let _exp = Experiment("rekill".into());
    let drill = Drill::new("rekill", "zone-a")
        .duration("10m")
        .namespace(&ns.0);
    assert!(apply(&drill.yaml()).ok);
    wait_phase("rekill", "ZoneDown", Duration::from_secs(60));

    // Bound straight to a dark node, tolerating every taint (as DaemonSet pods
    // often do): neither the scheduler nor taint eviction stops it; only the
    // experiment's watch can.
    let intruder = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: intruder, namespace: {}, labels: {{app: intruder}}}}
spec:
  nodeName: {}
  tolerations: [{{operator: Exists}}]
  containers: [{{name: app, image: registry.invalid/x:1}}]
"#,
        ns.0, zone_a[0]
    );
    assert!(apply(&intruder).ok);
    wait_for("the intruder to be killed", Duration::from_secs(30), || {
        pods(&ns.0, "intruder").is_empty().then_some(())
    });
    wait_for(
        "the re-kill to be counted in status",
        Duration::from_secs(30),
        || (dcf_field("rekill", ".status.fault.podsRekilled") == "1").then_some(()),
    );
    // A pod outside the target namespaces is left alone, even on the dark zone.
    let bystander = Namespace::create("e2e-bystander");
    assert!(apply(&intruder.replace(&ns.0, &bystander.0)).ok);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        pods(&bystander.0, "intruder").len(),
        1,
        "an out-of-scope pod was killed"
    );
    assert_eq!(dcf_field("rekill", ".status.fault.podsRekilled"), "1");
}
