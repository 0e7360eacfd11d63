//! CordonAndKill on a real zone: the drill ends with a verdict, the killed
//! pods' containers are gone from the node's containerd (not just from the
//! API), the replacements serve from the other zones, and afterwards the
//! zone's nodes are uncordoned and carry nothing of firedrill's.

use crate::workloads::{login_and_chat, pods_by_node};
use firedrill_e2e::*;
use serde_json::Value;
use std::time::{Duration, Instant};

#[test]
fn cordon_and_kill_on_a_real_zone_stops_the_killed_pods_containers_and_uncordons_after() {
    let _lock = zones_lock();
    install_crds();
    let sysctls = machine_sysctls();
    let ns = Namespace::create("real-kill");
    login_and_chat(&ns.0);
    let zone_a: Vec<RealNode> = real_nodes()
        .into_iter()
        .filter(|n| n.zone == "zone-a")
        .collect();
    assert!(!zone_a.is_empty(), "no real node in zone-a");
    let names: Vec<String> = zone_a.iter().map(|n| n.name.clone()).collect();
    // The containers of the pods in zone-a, as the API and containerd list them.
    let mut doomed = vec![];
    for app in ["login", "chat"] {
        for (pod, node, ids) in pods_by_node(&ns.0, app) {
            if names.contains(&node) {
                assert!(!ids.is_empty(), "{pod} has no container ID");
                doomed.push((pod, real_node(&node), ids));
            }
        }
    }
    assert_eq!(doomed.len(), 2, "one login and one chat in zone-a");
    for (pod, node, ids) in &doomed {
        let running: Vec<String> = node
            .tasks()
            .into_iter()
            .filter(|(_, status)| status == "RUNNING")
            .map(|(id, _)| id)
            .collect();
        for id in ids {
            assert!(
                running.contains(id),
                "{pod}'s container {id} is not a running task on {}: {running:?}",
                node.name
            );
        }
    }

    let _op = Operator::start(&[]);
    let _exp = Experiment("real-kill".into());
    let drill = Drill::new("real-kill", "zone-a")
        .duration("25s")
        .baseline("3s")
        .observe("2s")
        .namespace(&ns.0)
        .slo(
            Slo::new("login", "60s")
                .service(&ns.0, "login")
                .min_ready_endpoints(3)
                .interval("1s"),
        )
        .slo(
            Slo::new("chat", "60s")
                .service(&ns.0, "chat")
                .min_ready_endpoints(3)
                .interval("1s"),
        );
    apply(&drill.yaml()).expect_ok("the drill");
    wait_phase("real-kill", "ZoneDown", Duration::from_secs(90));
    assert_eq!(dcf_field("real-kill", ".status.fault.podsKilled"), "2");
    for n in &names {
        assert!(cordoned_nodes().contains(n), "{n} is not cordoned");
    }
    // Killed with grace 0: their tasks stop at once, and kubelet removes the
    // containers from containerd.
    let killed = Instant::now();
    for (pod, node, ids) in &doomed {
        wait_for(
            &format!("{pod}'s containers gone from {}'s containerd", node.name),
            Duration::from_secs(60),
            || {
                let tasks = node.tasks();
                let containers = node.containers();
                ids.iter()
                    .all(|id| {
                        !containers.contains(id)
                            && !tasks.iter().any(|(t, s)| t == id && s == "RUNNING")
                    })
                    .then_some(())
            },
        );
    }
    println!(
        "[real] killed pods' containers gone from containerd {:.1}s after ZoneDown was seen",
        killed.elapsed().as_secs_f64()
    );
    // Nothing of the namespace runs on the dark zone (the NoExecute taint).
    for (pod, node, _) in pods_by_node(&ns.0, "login")
        .into_iter()
        .chain(pods_by_node(&ns.0, "chat"))
    {
        assert!(!names.contains(&node), "{pod} runs on the dark {node}");
    }

    wait_completed("real-kill", 180);
    let st: Value = kubectl_json(&["get", "dcf", "real-kill"])["status"].clone();
    assert_eq!(st["verdict"], "Passed", "{:#}", st);
    for s in st["slos"].as_array().unwrap() {
        println!(
            "[real] CordonAndKill SLO {}: {} time to recover {}s, longest outage {}s",
            s["name"], s["verdict"], s["timeToRecoverSeconds"], s["longestOutageSeconds"]
        );
    }
    assert_zone_restored();
    for n in &names {
        assert!(!cordoned_nodes().contains(n), "{n} is still cordoned");
    }
    // The zone takes pods again (a Deployment does not move its pods back,
    // so a pod pinned there shows it).
    let probe = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: back-in-zone-a, namespace: {ns}}}\nspec:\n  nodeSelector: {{topology.kubernetes.io/zone: zone-a}}\n  containers: [{{name: serve, image: localhost/testbed/serve:1, imagePullPolicy: Never}}]\n",
        ns = ns.0
    );
    apply(&probe).expect_ok("a pod pinned to zone-a");
    wait_for(
        "a pod Running in zone-a again",
        Duration::from_secs(60),
        || {
            (kubectl(
                &[
                    "-n",
                    &ns.0,
                    "get",
                    "pod",
                    "back-in-zone-a",
                    "-o",
                    "jsonpath={.status.phase}",
                ],
                None,
            )
            .stdout
                == "Running")
                .then_some(())
        },
    );
    assert_eq!(machine_sysctls(), sysctls, "the machine's sysctls changed");
}
