//! PowerLoss on a real zone, cut off by the chart's node agent (the
//! DaemonSet of charts/firedrill, templates/agent.yaml, on the agent image
//! `make image` builds). Then, in order and measured: the nft table is in
//! the node's network namespace (the cut), the node lifecycle controller
//! marks the node NotReady, the pods' endpoints stop being ready, the pods
//! are evicted after their tolerations; at the end the power comes back,
//! the nodes are Ready again, and nothing of firedrill's is left on them.
//! The darkness is verified, never assumed: each node's agent acknowledges
//! the cut (measured here), and without the agent the drill aborts,
//! Inconclusive, naming the node, which was never cut.

use crate::workloads::{TOLERATION_SECONDS, login_and_chat, node_ready, pods_by_node};
use firedrill_e2e::*;
use serde_json::Value;
use std::time::{Duration, Instant};

const AGENT_NS: &str = "firedrill-system";
const TABLE: &str = "firedrill_power_loss";

/// The chart's agent DaemonSet on every real node, its image imported into
/// each node's containerd (never pulled).
fn install_agent() {
    let archive = agent_image_archive();
    testbed(&[
        "import",
        archive.to_str().unwrap(),
        "ghcr.io/firedrill/firedrill-agent",
    ])
    .expect_ok("importing the agent image into the real nodes");
    let chart = repo_root().join("charts/firedrill");
    let out = helm(
        &helm_bin(),
        &[
            "template",
            "firedrill",
            chart.to_str().unwrap(),
            "--namespace",
            AGENT_NS,
            "--show-only",
            "templates/agent.yaml",
            "--set",
            "agent.enabled=true",
            "--set",
            "agent.image.pullPolicy=Never",
        ],
    );
    assert!(out.ok, "helm template: {}", out.stderr);
    kubectl(&["create", "namespace", AGENT_NS], None);
    kubectl(&["apply", "-n", AGENT_NS, "-f", "-"], Some(&out.stdout))
        .expect_ok("the agent DaemonSet");
    let nodes = real_nodes();
    wait_for(
        "the agent Ready on every real node, and its label on each",
        Duration::from_secs(120),
        || {
            let ds = kubectl_json(&["-n", AGENT_NS, "get", "daemonset", "firedrill-agent"]);
            let ready = ds["status"]["numberReady"].as_u64().unwrap_or(0);
            let labelled = nodes.iter().all(|n| {
                !kubectl_json(&["get", "node", &n.name])["metadata"]["labels"]
                    ["chaos.firedrill.dev/agent"]
                    .is_null()
            });
            (ready == nodes.len() as u64 && labelled).then_some(())
        },
    );
}

/// The time of day of an RFC 3339 UTC timestamp (`2026-12-01T10:00:01.5Z`), in seconds.
fn seconds_of_day(t: &str) -> f64 {
    let time = t.split('T').nth(1).unwrap().trim_end_matches('Z');
    let f: Vec<f64> = time.split(':').map(|x| x.parse().unwrap()).collect();
    f[0] * 3600.0 + f[1] * 60.0 + f[2]
}

/// Whether the endpoint of `pod` in Service `svc` is ready.
fn endpoint_ready(ns: &str, svc: &str, pod: &str) -> bool {
    kubectl_json(&[
        "-n",
        ns,
        "get",
        "endpointslices",
        "-l",
        &format!("kubernetes.io/service-name={svc}"),
    ])["items"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .any(|e| e["targetRef"]["name"] == pod && e["conditions"]["ready"] == true)
}

/// An RFC 3339 time from the API server, in Unix seconds.
fn unix(ts: &str) -> Option<i64> {
    let ts = ts.trim();
    if ts.is_empty() {
        return None;
    }
    let out = std::process::Command::new("date")
        .args(["-u", "-d", ts, "+%s"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn deletion_requested(ns: &str, pod: &str) -> bool {
    let p = kubectl(&["-n", ns, "get", "pod", pod, "-o", "json"], None);
    // Gone altogether, or marked for deletion.
    !p.ok
        || serde_json::from_str::<Value>(&p.stdout)
            .map(|v| !v["metadata"]["deletionTimestamp"].is_null())
            .unwrap_or(false)
}

#[test]
fn power_loss_on_a_real_zone_cuts_its_nodes_off_until_the_end_and_leaves_nothing_behind() {
    let _lock = zones_lock();
    install_crds();
    let sysctls = machine_sysctls();
    install_agent();
    let ns = Namespace::create("real-power");
    login_and_chat(&ns.0);
    let nodes = real_nodes();
    let dark: Vec<&RealNode> = nodes.iter().filter(|n| n.zone == "zone-a").collect();
    let lit: Vec<&RealNode> = nodes.iter().filter(|n| n.zone != "zone-a").collect();
    assert_eq!(dark.len(), 1, "one real node in zone-a");
    let node = dark[0];
    let (login_pod, _, login_ids) = pods_by_node(&ns.0, "login")
        .into_iter()
        .find(|(_, n, _)| *n == node.name)
        .expect("a login pod in zone-a");
    assert!(
        !node.nft(&["list", "table", "inet", TABLE]).0,
        "a table before the drill"
    );

    let _op = Operator::start(&[]);
    let _exp = Experiment("real-power".into());
    let drill = Drill::new("real-power", "zone-a")
        .duration("110s")
        .baseline("3s")
        .observe("2s")
        .namespace(&ns.0)
        .slo(
            Slo::new("login", "150s")
                .service(&ns.0, "login")
                .min_ready_endpoints(3)
                .interval("1s"),
        )
        .slo(
            Slo::new("chat", "150s")
                .service(&ns.0, "chat")
                .min_ready_endpoints(3)
                .interval("1s"),
        );
    let yaml = drill.yaml().replace(
        "  duration: 110s\n",
        "  duration: 110s\n  fault: {mode: PowerLoss}\n",
    );
    assert!(yaml.contains("mode: PowerLoss"), "{yaml}");
    apply(&yaml).expect_ok("the drill");

    // The timeline, seen from outside: the cut is the nft table appearing
    // in the node's own network namespace.
    let cut = wait_for(
        "the agent's nft table on the zone-a node",
        Duration::from_secs(90),
        || {
            node.nft(&["list", "table", "inet", TABLE])
                .0
                .then(Instant::now)
        },
    );
    let (mut not_ready, mut endpoint_gone, mut evicted) = (None, None, None);
    let mut acked = None;
    let deadline = cut + Duration::from_secs(140);
    while (not_ready.is_none() || endpoint_gone.is_none() || evicted.is_none())
        && Instant::now() < deadline
    {
        if acked.is_none()
            && !kubectl_json(&["get", "node", &node.name])["metadata"]["annotations"]
                ["chaos.firedrill.dev/power-loss-ack"]
                .is_null()
        {
            acked = Some(cut.elapsed());
        }
        if not_ready.is_none() && node_ready(&node.name) != "True" {
            not_ready = Some(cut.elapsed());
        }
        if endpoint_gone.is_none() && !endpoint_ready(&ns.0, "login", &login_pod) {
            endpoint_gone = Some(cut.elapsed());
        }
        if evicted.is_none() && deletion_requested(&ns.0, &login_pod) {
            evicted = Some(cut.elapsed());
        }
        for n in &lit {
            assert_eq!(node_ready(&n.name), "True", "{} went dark too", n.name);
            assert!(
                !n.nft(&["list", "table", "inet", TABLE]).0,
                "{} was cut off too",
                n.name
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let secs = |d: Option<Duration>| {
        d.map(|d| format!("{:.1}s", d.as_secs_f64()))
            .unwrap_or("never".into())
    };
    println!(
        "[real] PowerLoss on {}: cut -> acknowledged {}, cut -> NotReady {}, cut -> endpoint not ready {}, cut -> eviction {}",
        node.name,
        secs(acked),
        secs(not_ready),
        secs(endpoint_gone),
        secs(evicted)
    );
    let acked = acked.expect("the cut node's agent never acknowledged the cut");
    assert!(
        acked < Duration::from_secs(10),
        "acknowledged after {acked:?}"
    );
    let not_ready = not_ready.expect("the cut node never went NotReady");
    let endpoint_gone = endpoint_gone.expect("the cut node's endpoint stayed ready");
    let evicted = evicted.expect("the cut node's pod was never evicted");
    // The node lifecycle controller's grace period (50 s) bounds NotReady;
    // the endpoint follows it; eviction follows the tolerations.
    assert!(
        not_ready < Duration::from_secs(80),
        "NotReady after {not_ready:?}"
    );
    assert!(
        endpoint_gone >= not_ready.saturating_sub(Duration::from_secs(5)),
        "the endpoint went before the node"
    );
    // Eviction follows the tolerations, judged by the API server's own
    // times (the node's Ready transition, the pod's deletion timestamp):
    // polling here can lag by seconds on a loaded machine.
    let dark_since = kubectl(
        &[
            "get",
            "node",
            &node.name,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].lastTransitionTime}",
        ],
        None,
    )
    .stdout;
    let deleted_at = kubectl(
        &[
            "-n",
            &ns.0,
            "get",
            "pod",
            &login_pod,
            "-o",
            "jsonpath={.metadata.deletionTimestamp}",
        ],
        None,
    )
    .stdout;
    if let (Some(dark), Some(deleted)) = (unix(&dark_since), unix(&deleted_at)) {
        assert!(
            deleted - dark >= i64::from(TOLERATION_SECONDS) - 2,
            "evicted {}s after NotReady ({deleted_at} vs {dark_since}), before the {TOLERATION_SECONDS}s tolerations ran out",
            deleted - dark
        );
    } else {
        assert!(
            evicted >= not_ready + Duration::from_secs(u64::from(TOLERATION_SECONDS) - 5),
            "evicted {evicted:?} before the {TOLERATION_SECONDS}s tolerations ran out (NotReady at {not_ready:?})"
        );
    }
    // While the node is dark its containers still run: a power cut seen
    // from the control plane, not a kill.
    let running: Vec<String> = node
        .tasks()
        .into_iter()
        .filter(|(_, s)| s == "RUNNING")
        .map(|(id, _)| id)
        .collect();
    assert!(
        login_ids.iter().all(|id| running.contains(id)),
        "the dark node's container stopped: {running:?}"
    );
    assert_eq!(dcf_field("real-power", ".status.fault.podsKilled"), "0");

    wait_completed("real-power", 300);
    let st: Value = kubectl_json(&["get", "dcf", "real-power"])["status"].clone();
    println!(
        "[real] PowerLoss verdict {}: {}",
        st["verdict"], st["reason"]
    );
    for s in st["slos"].as_array().unwrap() {
        println!(
            "[real] PowerLoss SLO {}: {} time to recover {}s, longest outage {}s",
            s["name"], s["verdict"], s["timeToRecoverSeconds"], s["longestOutageSeconds"]
        );
    }
    // login and chat both fail over within their 150 s objective: the
    // kubelet-less node's pods are evicted after 30 s of tolerations and
    // start elsewhere (measured 72-81 s).
    assert_eq!(st["verdict"], "Passed", "{st:#}");
    // The operator saw the zone dark, and says when.
    let fault = &st["fault"];
    let at = |f: &str| {
        let t = fault[f]
            .as_str()
            .unwrap_or_else(|| panic!("no {f}: {fault:#}"));
        seconds_of_day(t)
    };
    let dark_at = at("zoneDarkAt");
    let since = |f: &str| (at(f) - dark_at).rem_euclid(86_400.0);
    println!(
        "[real] PowerLoss as the operator saw it: labelled -> every node acknowledged {:.1}s, -> verified dark (NotReady) {:.1}s",
        since("nodesAcknowledgedAt"),
        since("darkVerifiedAt")
    );
    assert!(fault["notDark"].is_null(), "{fault:#}");
    assert_eq!(fault["nodesAcknowledged"], 1, "{fault:#}");
    assert!(
        !st["fault"]["nodesReadyAgainAt"].is_null(),
        "{:#}",
        st["fault"]
    );
    // Power back: Ready again, the table gone, no mark, label or taint left,
    // and the evicted pod's container finally stopped by its kubelet.
    wait_for(
        "the zone-a node Ready again",
        Duration::from_secs(60),
        || (node_ready(&node.name) == "True").then_some(()),
    );
    for n in &nodes {
        let (present, out) = n.nft(&["list", "table", "inet", TABLE]);
        assert!(
            !present,
            "{}: the agent's table is still there: {out}",
            n.name
        );
    }
    assert_zone_restored();
    wait_for(
        "the evicted pod's containers stopped",
        Duration::from_secs(90),
        || {
            let tasks = node.tasks();
            login_ids
                .iter()
                .all(|id| !tasks.iter().any(|(t, s)| t == id && s == "RUNNING"))
                .then_some(())
        },
    );
    assert_eq!(machine_sysctls(), sysctls, "the machine's sysctls changed");
}

/// The agent DaemonSet gone, as if uninstalled, while the nodes still carry
/// the label it left (`chaos.firedrill.dev/agent`), so the planner lets the
/// drill through.
fn uninstall_agent() {
    kubectl(
        &[
            "-n",
            AGENT_NS,
            "delete",
            "daemonset",
            "firedrill-agent",
            "--ignore-not-found",
            "--wait=true",
        ],
        None,
    )
    .expect_ok("deleting the agent DaemonSet");
    wait_for("no agent pod left", Duration::from_secs(90), || {
        let pods = kubectl_json(&[
            "-n",
            AGENT_NS,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/component=agent",
        ]);
        pods["items"]
            .as_array()
            .is_none_or(|p| p.is_empty())
            .then_some(())
    });
    for n in real_nodes() {
        kubectl(
            &[
                "label",
                "node",
                &n.name,
                "--overwrite",
                "chaos.firedrill.dev/agent=0.1.0",
            ],
            None,
        )
        .expect_ok("the agent's label left behind");
    }
}

#[test]
fn power_loss_without_the_agent_is_never_assumed_dark_it_aborts_inconclusive_naming_the_node() {
    let _lock = zones_lock();
    install_crds();
    uninstall_agent();
    let nodes = real_nodes();
    let node = nodes
        .iter()
        .find(|n| n.zone == "zone-a")
        .expect("a real node in zone-a");

    let _op = Operator::start(&["--power-ack-timeout=15s"]);
    let _exp = Experiment("real-no-agent".into());
    let yaml = Drill::new("real-no-agent", "zone-a")
        .duration("60s")
        .baseline("0s")
        .yaml()
        .replace(
            "  duration: 60s\n",
            "  duration: 60s\n  fault: {mode: PowerLoss}\n",
        );
    assert!(yaml.contains("mode: PowerLoss"), "{yaml}");
    let started = Instant::now();
    apply(&yaml).expect_ok("the drill");

    // Until it ends: never cut, never NotReady.
    while dcf_field("real-no-agent", ".status.phase") != "Aborted" {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "not aborted in 120s: phase {}",
            dcf_field("real-no-agent", ".status.phase")
        );
        for n in &nodes {
            let (present, out) = n.nft(&["list", "table", "inet", TABLE]);
            assert!(!present, "{} was cut off: {out}", n.name);
            assert_eq!(node_ready(&n.name), "True", "{} went NotReady", n.name);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let took = started.elapsed();
    wait_completed("real-no-agent", 60);
    let st: Value = kubectl_json(&["get", "dcf", "real-no-agent"])["status"].clone();
    println!(
        "[real] PowerLoss without the agent: {} after {:.1}s: {}",
        st["verdict"],
        took.as_secs_f64(),
        st["reason"]
    );
    assert_eq!(st["phase"], "Aborted", "{st:#}");
    assert_eq!(st["verdict"], "Inconclusive", "{st:#}");
    let why = format!(
        "node {} never acknowledged the power cut within 15s: no firedrill agent cut it off (is the agent DaemonSet running there?)",
        node.name
    );
    assert_eq!(st["fault"]["notDark"], why.as_str(), "{:#}", st["fault"]);
    assert!(
        st["reason"].as_str().unwrap().contains(&why),
        "{}",
        st["reason"]
    );
    assert!(st["fault"]["darkVerifiedAt"].is_null());
    // The ack bound, not the duration, ended it.
    assert!(took < Duration::from_secs(50), "aborted after {took:?}");
    assert_zone_restored();
    for n in &nodes {
        assert!(!n.nft(&["list", "table", "inet", TABLE]).0, "{}", n.name);
        assert_eq!(node_ready(&n.name), "True", "{}", n.name);
    }
}

/// Takes a hand-made power-loss label (and the agent's answer) off a node
/// however the test ends.
struct StrayLabel(String);

impl Drop for StrayLabel {
    fn drop(&mut self) {
        kubectl(
            &["label", "node", &self.0, "chaos.firedrill.dev/power-loss-"],
            None,
        );
        kubectl(
            &[
                "annotate",
                "node",
                &self.0,
                "chaos.firedrill.dev/power-loss-refused-",
                "chaos.firedrill.dev/power-loss-ack-",
            ],
            None,
        );
    }
}

#[test]
fn a_stray_power_loss_label_on_a_real_node_is_refused_and_the_refusal_is_on_the_node() {
    let _lock = zones_lock();
    install_crds();
    install_agent();
    let nodes = real_nodes();
    let node = nodes
        .iter()
        .find(|n| n.zone == "zone-a")
        .expect("a real node in zone-a");
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let _label = StrayLabel(node.name.clone());
    // A label alone, no experiment's mark: someone's typo, or a leftover.
    kubectl(
        &[
            "label",
            "node",
            &node.name,
            &format!("chaos.firedrill.dev/power-loss={deadline}"),
        ],
        None,
    )
    .expect_ok("the stray label");
    let refusal = |n: &str| {
        kubectl_json(&["get", "node", n])["metadata"]["annotations"]
            ["chaos.firedrill.dev/power-loss-refused"]
            .as_str()
            .map(String::from)
    };
    let why = wait_for(
        "the agent's refusal on the node",
        Duration::from_secs(30),
        || refusal(&node.name),
    );
    assert!(why.contains("a stray label is not obeyed"), "{why}");
    // Never cut: no table, and the kubelet keeps the node Ready.
    let until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < until {
        let (present, out) = node.nft(&["list", "table", "inet", TABLE]);
        assert!(!present, "cut off by a stray label: {out}");
        assert_eq!(node_ready(&node.name), "True");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        kubectl_json(&["get", "node", &node.name])["metadata"]["annotations"]
            ["chaos.firedrill.dev/power-loss-ack"]
            .is_null(),
        "acknowledged a cut it did not make"
    );
    // The label gone, the agent takes its word back.
    kubectl(
        &[
            "label",
            "node",
            &node.name,
            "chaos.firedrill.dev/power-loss-",
        ],
        None,
    )
    .expect_ok("removing the stray label");
    wait_for(
        "the refusal gone with the label",
        Duration::from_secs(30),
        || refusal(&node.name).is_none().then_some(()),
    );
    assert_zone_restored();
}
