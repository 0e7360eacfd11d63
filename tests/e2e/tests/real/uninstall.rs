//! `helm uninstall --wait` while a drill holds a real zone dark: the chart's
//! pre-delete hook (a Job running `firedrill stand-down` on the operator's
//! image, on a real node) aborts the drill and waits while the operator,
//! itself a pod of the chart on a real node, restores the zone. Afterwards
//! the drill ended Aborted (its CRD stays: Helm does not delete crds/), no
//! node is cordoned, tainted or marked, and nothing of the release is left.
//! The uninstall's duration is measured.

use crate::workloads::login_and_chat;
use firedrill_e2e::*;
use std::time::{Duration, Instant};

const NS: &str = "firedrill-system";
const RELEASE: &str = "standdown";

/// Uninstalls the release (without its hooks) if the test left it behind.
struct Release;

impl Drop for Release {
    fn drop(&mut self) {
        let _ = helm(
            &helm_bin(),
            &["uninstall", RELEASE, "-n", NS, "--no-hooks", "--wait"],
        );
    }
}

/// The logs of the stand-down hook's pods (kept when the hook failed).
fn hook_logs() -> String {
    kubectl(
        &[
            "-n",
            NS,
            "logs",
            "-l",
            "app.kubernetes.io/component=stand-down",
            "--tail=100",
        ],
        None,
    )
    .stdout
}

#[test]
fn helm_uninstall_during_zone_down_restores_the_zone_and_ends_the_drill_aborted() {
    let _lock = zones_lock();
    install_crds();
    let sysctls = machine_sysctls();
    let ns = Namespace::create("real-uninstall");
    login_and_chat(&ns.0);

    // The operator's image in every real node's containerd (never pulled),
    // and the chart with one operator replica outside the drilled zone.
    testbed(&[
        "import",
        image_archive().to_str().unwrap(),
        "ghcr.io/firedrill/firedrill",
    ])
    .expect_ok("importing the operator image into the real nodes");
    let bin = helm_bin();
    let chart = repo_root().join("charts/firedrill");
    let _release = Release;
    let install = helm(
        &bin,
        &[
            "install",
            RELEASE,
            chart.to_str().unwrap(),
            "-n",
            NS,
            "--create-namespace",
            "--set",
            "replicas=1",
            "--set",
            "image.pullPolicy=Never",
            "--set",
            "nodeSelector.topology\\.kubernetes\\.io/zone=zone-b",
            "--set",
            "operator.logFormat=text",
            "--wait",
            "--timeout",
            "3m",
        ],
    );
    assert!(install.ok, "{}{}", install.stdout, install.stderr);
    let operator_log = || {
        kubectl(
            &[
                "-n",
                NS,
                "logs",
                "-l",
                "app.kubernetes.io/component=operator",
                "--tail=60",
            ],
            None,
        )
        .stdout
    };

    let _exp = Experiment("real-uninstall".into());
    let drill = Drill::new("real-uninstall", "zone-a")
        .duration("10m")
        .baseline("3s")
        .namespace(&ns.0)
        .slo(
            Slo::new("login", "60s")
                .service(&ns.0, "login")
                .min_ready_endpoints(2)
                .interval("1s"),
        );
    apply(&drill.yaml()).expect_ok("the drill");
    let dark = std::panic::catch_unwind(|| {
        wait_phase("real-uninstall", "ZoneDown", Duration::from_secs(120))
    });
    assert!(
        dark.is_ok(),
        "the chart's operator did not take the zone down: {}\n{}",
        dcf_field("real-uninstall", ".status.reason"),
        operator_log()
    );
    let zone_a = nodes_in("zone-a");
    assert!(!zone_a.is_empty());
    for n in &zone_a {
        assert!(cordoned_nodes().contains(n), "{n} is not cordoned");
    }
    assert!(
        !firedrill_traces_on_nodes().is_empty(),
        "no trace of the drill"
    );

    let started = Instant::now();
    let uninstall = helm(
        &bin,
        &["uninstall", RELEASE, "-n", NS, "--wait", "--timeout", "5m"],
    );
    let took = started.elapsed();
    assert!(
        uninstall.ok,
        "{}{}\nthe hook said:\n{}",
        uninstall.stdout,
        uninstall.stderr,
        hook_logs()
    );
    println!(
        "[real] helm uninstall --wait during ZoneDown took {:.1}s",
        took.as_secs_f64()
    );

    // The drill ended Aborted, its zone restored by the operator.
    let phase = dcf_field("real-uninstall", ".status.phase");
    let reason = dcf_field("real-uninstall", ".status.reason");
    assert_eq!(phase, "Aborted", "{reason}");
    assert!(
        reason.contains("zone restored"),
        "the operator restored the zone itself: {reason}"
    );
    assert!(
        dcf_field("real-uninstall", ".status.abortReason")
            .contains(&format!("helm uninstall of release {RELEASE}")),
        "{}",
        dcf_field("real-uninstall", ".status.abortReason")
    );
    assert_zone_restored();
    assert!(firedrill_taints().is_empty());
    // Nothing of the release is left, the hook's own objects included.
    for (kind, name, namespaced) in [
        ("deployment", "standdown-firedrill", true),
        ("job", "standdown-firedrill-stand-down", true),
        ("serviceaccount", "standdown-firedrill-stand-down", true),
        ("serviceaccount", "firedrill", true),
        ("clusterrole", "standdown-firedrill", false),
        ("clusterrole", "standdown-firedrill-stand-down", false),
        (
            "clusterrolebinding",
            "standdown-firedrill-stand-down",
            false,
        ),
    ] {
        let mut args = vec!["get", kind, name];
        if namespaced {
            args.extend(["-n", NS]);
        }
        assert!(!kubectl(&args, None).ok, "{kind} {name} is left");
    }
    // The zone takes pods again.
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
