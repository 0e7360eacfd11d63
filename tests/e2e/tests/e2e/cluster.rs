//! The testbed behaves like a real cluster where firedrill relies on it:
//! the scheduler spreads pods over zones, EndpointSlices follow readiness, and
//! after a zone is cordoned and its pods killed, ReplicaSets recreate the pods
//! in the surviving zones only.

use firedrill_e2e::*;
use std::collections::BTreeSet;
use std::time::Duration;

fn deployment(ns: &str, name: &str, replicas: u32, when_unsatisfiable: &str) -> String {
    let placement = [
        "      terminationGracePeriodSeconds: 30".to_string(),
        spread_over_zones(name, when_unsatisfiable),
    ]
    .join("\n");
    service_and_deployment(ns, name, replicas, "", &placement)
}

fn zones_of(pods: &[(String, String)]) -> BTreeSet<String> {
    let zones = node_zones();
    pods.iter().map(|(_, node)| zones[node].clone()).collect()
}

#[test]
fn spread_deployment_runs_in_all_three_zones_with_ready_endpoints() {
    let _zones = zones_lock();
    let ns = Namespace::create("e2e-spread");
    let out = apply(&deployment(&ns.0, "web", 6, "DoNotSchedule"));
    assert!(out.ok, "{}", out.stderr);

    let pods = wait_for("6 Running/Ready pods", Duration::from_secs(120), || {
        let pods = ready_pods(&ns.0, "app=web");
        (pods.len() == 6).then_some(pods)
    });
    let zones = zones_of(&pods);
    assert_eq!(
        zones,
        BTreeSet::from(["zone-a".into(), "zone-b".into(), "zone-c".into()]),
        "pods: {pods:?}"
    );

    // Pods have IPs from KWOK and the EndpointSlice controller marks them ready.
    wait_for(
        "6 ready endpoints behind the Service",
        Duration::from_secs(60),
        || (ready_endpoints(&ns.0, "web") == 6).then_some(()),
    );
}

#[test]
fn killed_zone_pods_come_back_in_the_other_zones_only() {
    let _zones = zones_lock();
    let ns = Namespace::create("e2e-zonekill");
    let out = apply(&deployment(&ns.0, "chat", 6, "ScheduleAnyway"));
    assert!(out.ok, "{}", out.stderr);
    let before = wait_for("6 Running/Ready pods", Duration::from_secs(120), || {
        let pods = ready_pods(&ns.0, "app=chat");
        (pods.len() == 6).then_some(pods)
    });
    assert!(
        zones_of(&before).contains("zone-a"),
        "the test needs pods in zone-a first: {before:?}"
    );

    // Cordon every node of zone-a, then kill its pods with grace period 0.
    let zone_a = nodes_in("zone-a");
    // Cordon (and, when the test ends, uncordon) only the nodes that were
    // schedulable before.
    let already = cordoned_nodes();
    let mine: Vec<String> = zone_a
        .iter()
        .filter(|n| !already.contains(*n))
        .cloned()
        .collect();
    let _restore = AdminCordon::cordon(&mine);
    let killed: Vec<String> = before
        .iter()
        .filter(|(_, node)| zone_a.contains(node))
        .map(|(pod, _)| pod.clone())
        .collect();
    let mut args = vec![
        "-n",
        ns.0.as_str(),
        "delete",
        "pod",
        "--grace-period=0",
        "--force",
        "--wait=false",
    ];
    args.extend(killed.iter().map(String::as_str));
    kubectl(&args, None).expect_ok("deleting zone-a's pods");

    let after = wait_for(
        "6 Ready replacement pods outside zone-a",
        Duration::from_secs(120),
        || {
            let pods = ready_pods(&ns.0, "app=chat");
            let fresh = pods.iter().all(|(p, _)| !killed.contains(p));
            (pods.len() == 6 && fresh).then_some(pods)
        },
    );
    let zones = zones_of(&after);
    assert!(
        !zones.contains("zone-a"),
        "a replacement landed in the dark zone: {after:?}"
    );
    assert_eq!(
        zones,
        BTreeSet::from(["zone-b".into(), "zone-c".into()]),
        "{after:?}"
    );
    // The killed pods are gone for good, not stuck terminating.
    wait_for(
        "the killed pods to be gone",
        Duration::from_secs(60),
        || {
            let names: BTreeSet<String> = kubectl_json(&["-n", &ns.0, "get", "pods"])["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
                .collect();
            killed.iter().all(|k| !names.contains(k)).then_some(())
        },
    );
}
