//! A fire, not a drain: the Pangyo services (with login already spread over
//! three zones) under both fault modes. Under CordonAndKill the zone's pods
//! are deleted through the API and messaging fails over in seconds; under
//! PowerLoss the zone's nodes stop heartbeating and their pods stop
//! answering (time-outs, not resets) until the real node lifecycle
//! controller marks the nodes NotReady, so the same services take about a
//! minute, and a StatefulSet member in the zone is never replaced. After the
//! power comes back every node is Ready and nothing of firedrill is left.

use firedrill_e2e::*;
use serde_json::Value;
use std::time::Duration;

fn pangyo_with_fix() -> String {
    let root = repo_root();
    let workloads = std::fs::read_to_string(root.join("examples/pangyo/workloads.yaml")).unwrap();
    let fix = std::fs::read_to_string(root.join("examples/pangyo/login-fix.yaml")).unwrap();
    let ledger_fix = std::fs::read_to_string(root.join("examples/pangyo/ledger-fix.yaml")).unwrap();
    // Replace the pinned login Deployment with the spread one, and the
    // asynchronous ledger's Deployments with the synchronous ones.
    let fixed = |d: &str| {
        d.contains("kind: Deployment")
            && [
                "name: login,",
                "name: ledger-primary,",
                "name: ledger-standby,",
            ]
            .iter()
            .any(|n| d.contains(n))
    };
    let docs: Vec<&str> = workloads.split("\n---\n").filter(|d| !fixed(d)).collect();
    format!("{}\n---\n{fix}\n---\n{ledger_fix}", docs.join("\n---\n"))
}

/// The example's Pangyo drill itself (examples/pangyo/drill.yaml, not built
/// with `Drill`: this test runs what the example ships), renamed, with
/// another duration, a fault mode and a shorter observation.
fn pangyo_drill(name: &str, mode: &str, duration: &str) -> String {
    let base = std::fs::read_to_string(repo_root().join("examples/pangyo/drill.yaml")).unwrap();
    base.replace("name: pangyo-zone-a", &format!("name: {name}"))
        .replace(
            "duration: 30s",
            &format!("duration: {duration}\n  fault: {{mode: {mode}}}"),
        )
        .replace("observe: 5s", "observe: 2s")
}

fn slo<'a>(st: &'a Value, name: &str) -> &'a Value {
    st["slos"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap()
}

const STATEFULSET: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: journal, namespace: payments}
spec: {clusterIP: None, selector: {app: journal}, ports: [{port: 5432}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: journal, namespace: payments}
spec:
  serviceName: journal
  replicas: 3
  selector: {matchLabels: {app: journal}}
  template:
    metadata: {labels: {app: journal}}
    spec:
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: journal}}}
      containers: [{name: db, image: registry.invalid/journal:1, ports: [{containerPort: 5432}]}]
"#;

fn journal_in(zone: &[String]) -> Option<(String, String, bool)> {
    kubectl_json(&["-n", "payments", "get", "pods", "-l", "app=journal"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| zone.contains(&p["spec"]["nodeName"].as_str().unwrap_or("").to_string()))
        .map(|p| {
            let ready = p["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                p["metadata"]["uid"].as_str().unwrap().to_string(),
                ready,
            )
        })
}

fn node_ready(node: &str) -> String {
    kubectl(
        &[
            "get",
            "node",
            node,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ],
        None,
    )
    .stdout
}

#[test]
fn the_same_services_fail_over_in_seconds_under_cordon_and_kill_and_in_about_a_minute_under_power_loss()
 {
    let _lock = zones_lock();
    install_crds();
    let _cleanup = Cleanup(vec![
        "namespace/auth".into(),
        "namespace/messaging".into(),
        "namespace/payments".into(),
    ]);
    apply(&pangyo_with_fix()).expect_ok("the Pangyo services with the fix");
    apply(STATEFULSET).expect_ok("a StatefulSet, one member per zone");
    wait_for("the services Ready", Duration::from_secs(120), || {
        (ready_endpoints("auth", "login") == 3
            && ready_endpoints("messaging", "chat") == 6
            && ready_endpoints("payments", "checkout") == 4
            && ready_pods("payments", "app=journal").len() == 3)
            .then_some(())
    });
    let zone_a = nodes_in("zone-a");
    let _op = Operator::start(&[]);

    // 1. Cordon and kill.
    let _e1 = Experiment("pangyo-kill".into());
    apply(&pangyo_drill("pangyo-kill", "CordonAndKill", "25s")).expect_ok("drill");
    wait_completed("pangyo-kill", 120);
    let kill = kubectl_json(&["get", "dcf", "pangyo-kill"])["status"].clone();
    assert_eq!(kill["verdict"], "Passed", "{}", kill["reason"]);
    assert_zone_restored();

    // 2. Power loss, with the plan first.
    let file = std::env::temp_dir().join(format!("firedrill-power-{}.yaml", std::process::id()));
    let power_yaml = pangyo_drill("pangyo-power", "PowerLoss", "85s");
    std::fs::write(&file, &power_yaml).unwrap();
    let (code, out, err) = firedrill(&["plan", "-f", file.to_str().unwrap(), "-o", "json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let plan: Value = serde_json::from_str(&out).unwrap();
    let stuck = plan["plan"]["unplaceable"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["workload"] == "StatefulSet payments/journal")
        .unwrap_or_else(|| {
            panic!(
                "the plan misses the StatefulSet: {:#}",
                plan["plan"]["unplaceable"]
            )
        })
        .clone();
    assert!(
        stuck["rule"]
            .as_str()
            .unwrap()
            .contains("StatefulSet pod on an unreachable node is not replaced"),
        "{stuck}"
    );
    let (journal_pod, journal_uid, _) = journal_in(&zone_a).expect("a journal member in zone-a");

    let _e2 = Experiment("pangyo-power".into());
    apply(&power_yaml).expect_ok("drill");
    wait_phase("pangyo-power", "ZoneDown", Duration::from_secs(60));
    assert_eq!(dcf_field("pangyo-power", ".status.fault.podsKilled"), "0");
    assert!(cordoned_nodes().is_empty(), "a power loss cordons nothing");
    // The node lifecycle controller notices after node-monitor-grace-period.
    wait_for("zone-a NotReady", Duration::from_secs(80), || {
        zone_a.iter().all(|n| node_ready(n) != "True").then_some(())
    });
    let taints = kubectl_json(&["get", "node", &zone_a[0]])["spec"]["taints"].to_string();
    assert!(
        taints.contains("node.kubernetes.io/unreachable"),
        "{taints}"
    );
    std::thread::sleep(Duration::from_secs(5));
    let (name, uid, ready) =
        journal_in(&zone_a).expect("the journal member is still bound to zone-a");
    assert_eq!(
        (name.as_str(), uid.as_str()),
        (journal_pod.as_str(), journal_uid.as_str()),
        "not replaced"
    );
    assert!(!ready, "the member on the dark node is not Ready");
    assert_eq!(
        ready_pods("payments", "app=journal").len(),
        2,
        "the StatefulSet stays one short"
    );

    wait_completed("pangyo-power", 240);
    let power = kubectl_json(&["get", "dcf", "pangyo-power"])["status"].clone();
    // The stand-in acknowledged every cut as the real agent does, and the
    // drill saw the zone dark before it counted it so.
    assert!(
        power["fault"]["notDark"].is_null() && !power["fault"]["darkVerifiedAt"].is_null(),
        "{:#}",
        power["fault"]
    );
    assert_eq!(
        power["fault"]["nodesAcknowledged"],
        zone_a.len(),
        "{:#}",
        power["fault"]
    );
    // After the restore: every node Ready again, nothing of ours left.
    assert!(
        !power["fault"]["nodesReadyAgainAt"].is_null(),
        "{:#}",
        power["fault"]
    );
    for n in &zone_a {
        assert_eq!(node_ready(n), "True", "{n}");
    }
    assert_zone_restored();
    wait_for("the journal whole again", Duration::from_secs(60), || {
        (ready_pods("payments", "app=journal").len() == 3).then_some(())
    });

    let ttr = |st: &Value, s: &str| slo(st, s)["timeToRecoverSeconds"].as_f64();
    let (k, p) = (ttr(&kill, "messaging"), ttr(&power, "messaging"));
    eprintln!(
        "messaging: {:?}s to recover under CordonAndKill ({}), {:?}s under PowerLoss ({}); payments: {:?}s vs {:?}s; authentication: {:?}s vs {:?}s",
        k,
        slo(&kill, "messaging")["verdict"],
        p,
        slo(&power, "messaging")["verdict"],
        ttr(&kill, "payments"),
        ttr(&power, "payments"),
        ttr(&kill, "authentication"),
        ttr(&power, "authentication"),
    );
    let k = k.expect("messaging recovered under cordon and kill");
    assert!(k < 15.0, "cordon and kill: {k}s");
    // None: it never recovered while dark, slower still.
    if let Some(p) = p {
        assert!(p > 30.0 && p > k * 3.0, "power loss: {p}s against {k}s");
    }
    assert_eq!(
        slo(&power, "messaging")["verdict"],
        "Failed",
        "a 20s RTO passes the drain-like fault and fails the fire"
    );
}
