//! The Helm chart with real helm: it lints, its schema refuses bad values,
//! its manifests pass a server-side dry run, `deploy/firedrill.yaml` is what
//! it renders, it installs two operator replicas in different zones with a
//! PodDisruptionBudget, and its RBAC is enough and no more. The operator
//! image's own binary (run from the image's root filesystem as uid 65532,
//! since testbed pods run no processes) takes the chart's ServiceAccount
//! token through a whole experiment with an SLO; then the release uninstalls
//! cleanly.

use firedrill_e2e::*;
use std::process::Command;
use std::time::Duration;

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
    let template = |extra: &[&str]| {
        let mut args = vec![
            "template",
            "drill",
            chart.to_str().unwrap(),
            "-n",
            "firedrill-system",
        ];
        args.extend_from_slice(extra);
        helm(&bin, &args)
    };
    // values.schema.json refuses wrong types and unknown values at install.
    for (set, says) in [
        ("replicas=two", "/replicas"),
        ("operator.logFormat=xml", "/operator/logFormat"),
        ("secretNamespaces[0]=Not_A_Namespace", "/secretNamespaces/0"),
        ("replica=2", "replica"),
    ] {
        let out = template(&["--set", set]);
        assert!(!out.ok, "--set {set} was accepted");
        assert!(out.stderr.contains(says), "--set {set}: {}", out.stderr);
    }
    let monitored = template(&["--set", "serviceMonitor.enabled=true"]);
    assert!(monitored.ok, "{}", monitored.stderr);
    assert!(monitored.stdout.contains("kind: ServiceMonitor"));
    let defaults = template(&[]);
    assert!(defaults.ok, "{}", defaults.stderr);
    assert!(!defaults.stdout.contains("kind: ServiceMonitor"));
    assert!(!defaults.stdout.contains("kind: NetworkPolicy"));
    for needle in [
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
        "allowPrivilegeEscalation: false",
        "drop: [ALL]",
        "type: RuntimeDefault",
        "image: \"ghcr.io/firedrill/firedrill:0.1.0\"",
        "kind: PodDisruptionBudget",
        "replicas: 2",
    ] {
        assert!(
            defaults.stdout.contains(needle),
            "the chart renders no {needle:?}"
        );
    }
    // The rendered manifest in the repository is what the chart renders.
    let rendered = Command::new(repo_root().join("deploy/render.sh"))
        .env("HELM", &bin)
        .output()
        .unwrap();
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let committed = std::fs::read_to_string(repo_root().join("deploy/firedrill.yaml")).unwrap();
    assert!(
        String::from_utf8_lossy(&rendered.stdout) == committed,
        "deploy/firedrill.yaml differs from what the chart renders: run `make manifest`"
    );
    // The API server accepts every object in it (a server-side dry run; the
    // namespace must exist for that).
    // A namespace left terminating by an earlier run is gone first.
    wait_for(
        "namespace firedrill-system to be gone",
        Duration::from_secs(120),
        || (!kubectl(&["get", "namespace", "firedrill-system"], None).ok).then_some(()),
    );
    let _release = Release(bin.clone());
    kubectl(&["create", "namespace", "firedrill-system"], None);
    let dry = kubectl(
        &["apply", "--server-side", "--dry-run=server", "-f", "-"],
        Some(&committed),
    );
    assert!(
        dry.ok,
        "server-side dry run of deploy/firedrill.yaml: {}",
        dry.stderr
    );

    // Probes may read Secrets in this namespace only.
    let ns = Namespace::create("e2e-helm");
    let secret_ns = format!("secretNamespaces={{{}}}", ns.0);
    let install = helm(
        &bin,
        &[
            "install",
            "drill",
            chart.to_str().unwrap(),
            "-n",
            "firedrill-system",
            "--create-namespace",
            "--set",
            &secret_ns,
            "--wait",
            "--timeout",
            "2m",
        ],
    );
    assert!(install.ok, "{}{}", install.stdout, install.stderr);
    // Two operator pods, scheduled in different zones and Ready (KWOK runs
    // no process in them), and a PodDisruptionBudget keeping one.
    let pods = wait_for("the operator pods", Duration::from_secs(60), || {
        let pods = ready_pods("firedrill-system", "app.kubernetes.io/name=firedrill");
        (pods.len() == 2).then_some(pods)
    });
    let zones = node_zones();
    let pod_zones: std::collections::BTreeSet<&String> =
        pods.iter().map(|(_, node)| &zones[node]).collect();
    assert_eq!(pod_zones.len(), 2, "the replicas share a zone: {pods:?}");
    let pdb = kubectl_json(&["-n", "firedrill-system", "get", "pdb", "drill-firedrill"]);
    assert_eq!(pdb["spec"]["minAvailable"], 1);

    // A drill that cannot show its objective is warned of at apply, and
    // still accepted; one that can is not warned of.
    let drill = |rto: &str| {
        Drill::new("warned", "zone-a")
            .duration("10s")
            .slo(Slo::new("api", rto).http("http://login.auth.svc/healthz"))
            .slo(Slo::new("db", "5s").tcp("db.auth.svc", 5432))
            .yaml()
    };
    let warned = wait_for("the apply warning policy", Duration::from_secs(30), || {
        let out = kubectl(
            &["apply", "--dry-run=server", "-f", "-"],
            Some(&drill("1h")),
        );
        (out.ok && out.stderr.contains("Warning:")).then_some(out)
    });
    assert!(
        warned.stderr.contains(
            "spec.slos: the recoveryTimeObjective of api is longer than the dark window (spec.duration 10s)"
        ),
        "{}",
        warned.stderr
    );
    let quiet = kubectl(
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&drill("10s")),
    );
    assert!(
        quiet.ok && !quiet.stderr.contains("Warning"),
        "{}",
        quiet.stderr
    );

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
            r#"apiVersion: v1
kind: Config
clusters: [{{name: t, cluster: {{server: '{server}', certificate-authority: '{ca}'}}}}]
users: [{{name: sa, user: {{token: '{}'}}}}]
contexts: [{{name: t, context: {{cluster: t, user: sa}}}}]
current-context: t
"#,
            token.trim()
        ),
    )
    .unwrap();
    // The token can do what the operator does, and not more.
    let can_i = |args: &[&str]| -> String {
        let out = Command::new("kubectl")
            .args(["--kubeconfig", sa_config.to_str().unwrap(), "auth", "can-i"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    for (args, want) in [
        (vec!["patch", "nodes"], "yes"),
        (vec!["delete", "pods", "-n", "default"], "yes"),
        (vec!["get", "secrets", "-n", ns.0.as_str()], "yes"),
        (vec!["patch", "configmaps", "-n", "firedrill-system"], "yes"),
        (vec!["delete", "nodes"], "no"),
        (vec!["get", "secrets", "-n", "kube-system"], "no"),
        (vec!["get", "secrets", "-n", "firedrill-system"], "no"),
        (vec!["patch", "clusterroles"], "no"),
        (
            vec!["create", "pods", "--subresource=exec", "-n", ns.0.as_str()],
            "no",
        ),
        (vec!["patch", "configmaps", "-n", ns.0.as_str()], "no"),
        (vec!["create", "deployments", "-n", "default"], "no"),
    ] {
        assert_eq!(can_i(&args), want, "kubectl auth can-i {}", args.join(" "));
    }

    let app = format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {ns}}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      topologySpreadConstraints: [{{maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule, labelSelector: {{matchLabels: {{app: web}}}}}}]
      containers: [{{name: web, image: registry.invalid/web:1}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {ns}}}
spec: {{selector: {{app: web}}, ports: [{{port: 80}}]}}
"#,
        ns = ns.0
    );
    assert!(apply(&app).ok);
    wait_for("web ready", Duration::from_secs(60), || {
        (ready_pods(&ns.0, "app=web").len() == 3).then_some(())
    });
    // The probe reads EndpointSlices, which follow the pods a moment later.
    wait_for("web endpoints ready", Duration::from_secs(60), || {
        (ready_endpoints(&ns.0, "web") == 3).then_some(())
    });

    // The image's binary, in the image's root filesystem, as its user: the
    // kubeconfig and CA go where it can read them, in a copy of the root
    // filesystem of this test's own (the image tests list its files).
    let rootfs = unpack_image("helm-image");
    std::fs::copy(&ca, rootfs.join("tmp/ca.crt")).unwrap();
    std::fs::write(
        rootfs.join("tmp/kubeconfig"),
        std::fs::read_to_string(&sa_config).unwrap().replace(
            &format!("certificate-authority: '{ca}'"),
            "certificate-authority: '/tmp/ca.crt'",
        ),
    )
    .unwrap();
    let mut op = image_command_in(
        &rootfs,
        &[
            "operator",
            "--metrics-bind=127.0.0.1:0",
            "--secret-namespaces",
            &ns.0,
        ],
        &[
            ("KUBECONFIG", "/tmp/kubeconfig"),
            ("POD_NAMESPACE", "firedrill-system"),
        ],
    )
    .stdout(std::process::Stdio::null())
    .stderr(
        std::fs::File::create(std::env::temp_dir().join("firedrill-helm-operator.log")).unwrap(),
    )
    .spawn()
    .unwrap();
    let _exp = Experiment("helm-rbac".into()); // cleans up if the test fails early
    let drill = Drill::new("helm-rbac", "zone-a")
        .duration("4s")
        .baseline("1s")
        .namespace(&ns.0)
        .slo(
            Slo::new("web", "30s")
                .interval("200ms")
                .service(&ns.0, "web")
                .min_ready_endpoints(2),
        );
    assert!(apply(&drill.yaml()).ok);
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
