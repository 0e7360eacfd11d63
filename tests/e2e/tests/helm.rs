//! The Helm chart with real helm: it lints, installs into the testbed, and
//! its RBAC is enough. The operator runs (out of cluster, since testbed pods
//! run no processes) with the chart's ServiceAccount token through a whole
//! experiment with an SLO; then the release uninstalls cleanly.

use firedrill_e2e::*;
use std::process::Command;
use std::time::Duration;

fn helm_bin() -> String {
    let out = Command::new(repo_root().join("tests/testbed/testbed.sh"))
        .arg("helm")
        .output()
        .expect("testbed.sh helm");
    assert!(
        out.status.success(),
        "building helm ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn helm(bin: &str, args: &[&str]) -> Output {
    let out = Command::new(bin)
        .args(args)
        .env(
            "KUBECONFIG",
            std::env::var("FIREDRILL_TESTBED_KUBECONFIG").unwrap(),
        )
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("firedrill-helm-cache"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("firedrill-helm-config"),
        )
        .env(
            "HELM_DATA_HOME",
            std::env::temp_dir().join("firedrill-helm-data"),
        )
        .output()
        .unwrap();
    Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

struct Release(String);

impl Drop for Release {
    fn drop(&mut self) {
        let _ = helm(
            &self.0,
            &["uninstall", "drill", "-n", "firedrill-system", "--wait"],
        );
        kubectl(
            &[
                "delete",
                "namespace",
                "firedrill-system",
                "--ignore-not-found",
                "--wait=false",
            ],
            None,
        );
    }
}

#[test]
fn the_chart_installs_and_its_rbac_runs_a_whole_experiment() {
    let _lock = zones_lock();
    install_crds();
    let bin = helm_bin();
    let chart = repo_root().join("charts/firedrill");
    let lint = helm(&bin, &["lint", chart.to_str().unwrap(), "--strict"]);
    assert!(lint.ok, "{}{}", lint.stdout, lint.stderr);

    let _release = Release(bin.clone());
    let install = helm(
        &bin,
        &[
            "install",
            "drill",
            chart.to_str().unwrap(),
            "-n",
            "firedrill-system",
            "--create-namespace",
            "--wait",
            "--timeout",
            "2m",
        ],
    );
    assert!(install.ok, "{}{}", install.stdout, install.stderr);
    // The operator's pod is scheduled and Ready (KWOK runs no process in it).
    wait_for("the operator pod", Duration::from_secs(60), || {
        (ready_pods("firedrill-system", "app.kubernetes.io/name=firedrill").len() == 1)
            .then_some(())
    });

    // A kubeconfig with the chart's ServiceAccount token.
    let token = kubectl(
        &[
            "-n",
            "firedrill-system",
            "create",
            "token",
            "firedrill",
            "--duration=1h",
        ],
        None,
    )
    .expect_ok("create token");
    let admin =
        std::fs::read_to_string(std::env::var("FIREDRILL_TESTBED_KUBECONFIG").unwrap()).unwrap();
    let server = admin
        .lines()
        .find_map(|l| l.trim().strip_prefix("server:"))
        .unwrap()
        .trim()
        .to_string();
    let ca = admin
        .lines()
        .find_map(|l| l.trim().strip_prefix("certificate-authority:"))
        .unwrap()
        .trim()
        .to_string();
    let sa_config =
        std::env::temp_dir().join(format!("firedrill-sa-{}.kubeconfig", std::process::id()));
    std::fs::write(
        &sa_config,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: t, cluster: {{server: '{server}', certificate-authority: '{ca}'}}}}]\nusers: [{{name: sa, user: {{token: '{}'}}}}]\ncontexts: [{{name: t, context: {{cluster: t, user: sa}}}}]\ncurrent-context: t\n",
            token.trim()
        ),
    )
    .unwrap();
    // The token cannot do what the chart did not grant.
    let denied = Command::new("kubectl")
        .args([
            "--kubeconfig",
            sa_config.to_str().unwrap(),
            "auth",
            "can-i",
            "delete",
            "nodes",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&denied.stdout).trim(), "no");

    let ns = Namespace::create("e2e-helm");
    let app = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: {ns}}}\nspec:\n  replicas: 3\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      topologySpreadConstraints: [{{maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule, labelSelector: {{matchLabels: {{app: web}}}}}}]\n      containers: [{{name: web, image: registry.invalid/web:1}}]\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: {ns}}}\nspec: {{selector: {{app: web}}, ports: [{{port: 80}}]}}\n",
        ns = ns.0
    );
    assert!(apply(&app).ok);
    wait_for("web ready", Duration::from_secs(60), || {
        (ready_pods(&ns.0, "app=web").len() == 3).then_some(())
    });

    let mut op = std::process::Command::new(firedrill_bin())
        .args(["operator", "--metrics-bind=127.0.0.1:0"])
        .env("KUBECONFIG", &sa_config)
        .env("POD_NAMESPACE", "firedrill-system")
        .stdout(std::process::Stdio::null())
        .stderr(
            std::fs::File::create(std::env::temp_dir().join("firedrill-helm-operator.log"))
                .unwrap(),
        )
        .spawn()
        .unwrap();
    let _exp = Experiment("helm-rbac".into()); // cleans up if the test fails early
    let drill = format!(
        "apiVersion: chaos.firedrill.dev/v1alpha1\nkind: DataCenterFailure\nmetadata: {{name: helm-rbac}}\nspec:\n  zone: zone-a\n  duration: 4s\n  baseline: 1s\n  target: {{namespaces: [{ns}]}}\n  slos:\n  - name: web\n    recoveryTimeObjective: 30s\n    interval: 200ms\n    probe: {{kubernetes: {{service: {{namespace: {ns}, name: web, minReadyEndpoints: 2}}}}}}\n",
        ns = ns.0
    );
    assert!(apply(&drill).ok);
    let done = kubectl(
        &[
            "wait",
            "--for=condition=Completed",
            "dcf/helm-rbac",
            "--timeout=90s",
        ],
        None,
    );
    let (phase, verdict, reason) = (
        dcf_field("helm-rbac", ".status.phase"),
        dcf_field("helm-rbac", ".status.verdict"),
        dcf_field("helm-rbac", ".status.reason"),
    );
    // The record is named after the experiment's uid.
    let record = format!("firedrill-{}", dcf_field("helm-rbac", ".metadata.uid"));
    let recording = kubectl(
        &["-n", "firedrill-system", "get", "configmap", &record],
        None,
    );
    // Leader election with the chart's Role: the Lease in its namespace.
    let holder = kubectl(
        &[
            "-n",
            "firedrill-system",
            "get",
            "lease",
            "firedrill-operator",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
        None,
    )
    .stdout;
    // Deleting needs the operator (its finalizer), with the same RBAC.
    let deleted = kubectl(&["delete", "dcf", "helm-rbac", "--timeout=60s"], None);
    Command::new("kill")
        .args(["-TERM", &op.id().to_string()])
        .status()
        .unwrap();
    let _ = op.wait();
    let log = std::fs::read_to_string(std::env::temp_dir().join("firedrill-helm-operator.log"))
        .unwrap_or_default();
    assert!(
        done.ok,
        "the experiment did not complete with the chart's RBAC:\n{log}"
    );
    assert_eq!(phase, "Completed", "{reason}\n{log}");
    assert!(
        holder.ends_with(&format!("_{}", op.id())),
        "the operator holds the Lease: {holder:?}\n{log}"
    );
    assert_eq!(verdict, "Passed", "{reason}");
    assert!(
        recording.ok,
        "the probe recording is in the operator's namespace: {}",
        recording.stderr
    );
    assert!(
        deleted.ok,
        "deletion through the finalizer: {}\n{log}",
        deleted.stderr
    );
    assert!(
        !log.contains("Forbidden") && !log.contains("forbidden"),
        "the operator was denied something:\n{log}"
    );
    assert!(firedrill_traces_on_nodes().is_empty());

    let uninstall = helm(
        &bin,
        &["uninstall", "drill", "-n", "firedrill-system", "--wait"],
    );
    assert!(uninstall.ok, "{}", uninstall.stderr);
    assert!(
        !kubectl(&["get", "clusterrole", "drill-firedrill"], None).ok,
        "the ClusterRole is removed with the release"
    );
}
