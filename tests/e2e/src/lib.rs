//! Helpers for the end-to-end tests: real `kubectl` against the testbed.
//!
//! The tests run only against a testbed on loopback: `FIREDRILL_TESTBED_KUBECONFIG`
//! must name its kubeconfig (`make test` sets it), and the API server in it
//! must be on 127.0.0.0/8 or [::1]. Anything else panics before a single
//! command is sent, so these tests can never touch a real cluster.

use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// The repository root. Read at run time (cargo sets CARGO_MANIFEST_DIR for
/// test processes): a build cache shared between clones must not point a
/// test at another clone's files.
pub fn repo_root() -> PathBuf {
    let dir = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
    PathBuf::from(dir).join("../..")
}

fn kubeconfig() -> &'static str {
    static KUBECONFIG: OnceLock<String> = OnceLock::new();
    KUBECONFIG.get_or_init(|| {
        let path = std::env::var("FIREDRILL_TESTBED_KUBECONFIG").unwrap_or_else(|_| {
            panic!(
                "FIREDRILL_TESTBED_KUBECONFIG is not set. The end-to-end tests run against the \
                 testbed: use `make test`, or start one with `tests/testbed/testbed.sh up` and \
                 export FIREDRILL_TESTBED_KUBECONFIG=.testbed/admin.kubeconfig"
            )
        });
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read kubeconfig {path}: {e}"));
        let server = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("server:"))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no server in {path}"));
        let loopback = [
            "https://127.",
            "http://127.",
            "https://[::1]",
            "https://localhost",
        ];
        assert!(
            loopback.iter().any(|p| server.starts_with(p)),
            "refusing to run end-to-end tests against {server}: only a loopback testbed is allowed"
        );
        path
    })
}

/// The result of one kubectl call.
#[derive(Debug)]
pub struct Output {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// stdout, or panic with everything kubectl said.
    pub fn expect_ok(self, what: &str) -> String {
        assert!(self.ok, "{what} failed:\n{}\n{}", self.stdout, self.stderr);
        self.stdout
    }
}

/// Run the testbed's kubectl with `args`, optionally feeding `stdin`.
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd =
        Command::new(std::env::var("FIREDRILL_KUBECTL").unwrap_or_else(|_| "kubectl".into()));
    cmd.arg("--kubeconfig")
        .arg(kubeconfig())
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .expect("kubectl must be on PATH (the testbed's bin directory)");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `kubectl ... -o json`, parsed.
pub fn kubectl_json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = kubectl(&all, None).expect_ok(&format!("kubectl {}", args.join(" ")));
    serde_json::from_str(&out).expect("kubectl printed JSON")
}

/// `kubectl apply -f -` with `yaml`.
pub fn apply(yaml: &str) -> Output {
    kubectl(&["apply", "-f", "-"], Some(yaml))
}

/// Poll `check` every 250 ms until it returns `Some`, or panic after `timeout`
/// with the last value `describe` gives.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Install the committed CRDs (once per test binary) and wait until they are served.
pub fn install_crds() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let dir = repo_root().join("crds");
        kubectl(
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "-f",
                dir.to_str().unwrap(),
            ],
            None,
        )
        .expect_ok("installing crds/");
        kubectl(
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/datacenterfailures.chaos.firedrill.dev",
                "crd/datacenterfailureschedules.chaos.firedrill.dev",
            ],
            None,
        )
        .expect_ok("waiting for the CRDs");
    });
}

/// A namespace that is deleted when the test ends, pass or fail.
pub struct Namespace(pub String);

impl Namespace {
    pub fn create(prefix: &str) -> Self {
        let name = format!("{prefix}-{}", std::process::id());
        kubectl(
            &[
                "delete",
                "namespace",
                &name,
                "--ignore-not-found",
                "--wait=true",
            ],
            None,
        );
        kubectl(&["create", "namespace", &name], None).expect_ok("creating the test namespace");
        wait_for(
            "the namespace's default service account",
            Duration::from_secs(60),
            || {
                kubectl(&["-n", &name, "get", "serviceaccount", "default"], None)
                    .ok
                    .then_some(())
            },
        );
        Namespace(name)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        kubectl(
            &[
                "delete",
                "namespace",
                &self.0,
                "--ignore-not-found",
                "--wait=false",
            ],
            None,
        );
    }
}

/// A cluster-scoped object deleted when the test ends.
pub struct Cleanup(pub Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for what in &self.0 {
            kubectl(
                &["delete", what, "--ignore-not-found", "--wait=false"],
                None,
            );
        }
    }
}

/// Serializes the tests that change nodes with the tests that need every zone
/// schedulable, within one test binary.
pub fn zones_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Node name → zone, for every node.
pub fn node_zones() -> std::collections::BTreeMap<String, String> {
    kubectl_json(&["get", "nodes"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let name = n["metadata"]["name"].as_str().unwrap().to_string();
            let zone = n["metadata"]["labels"]["topology.kubernetes.io/zone"]
                .as_str()
                .unwrap_or("")
                .to_string();
            (name, zone)
        })
        .collect()
}

/// Pods of a namespace that are Running with condition Ready=True, as (pod, node).
pub fn ready_pods(namespace: &str, selector: &str) -> Vec<(String, String)> {
    kubectl_json(&["-n", namespace, "get", "pods", "-l", selector])["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| p["status"]["phase"] == "Running")
        .filter(|p| {
            p["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        })
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Ready endpoints in the EndpointSlices of a Service.
pub fn ready_endpoints(ns: &str, service: &str) -> usize {
    kubectl_json(&[
        "-n",
        ns,
        "get",
        "endpointslices",
        "-l",
        &format!("kubernetes.io/service-name={service}"),
    ])["items"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["conditions"]["ready"] == true)
        .count()
}

/// The `firedrill` binary built next to the tests (`cargo build -p firedrill`).
pub fn firedrill_bin() -> PathBuf {
    if let Ok(p) = std::env::var("FIREDRILL_BIN") {
        return PathBuf::from(p);
    }
    // target/debug/deps/<test> → target/debug/firedrill
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("firedrill")
}

/// Run `firedrill` with `args` against the testbed.
pub fn firedrill(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(firedrill_bin())
        .args(args)
        .env("KUBECONFIG", kubeconfig())
        .output()
        .expect("the firedrill binary (cargo build -p firedrill)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running `firedrill operator`. Dropping it sends SIGTERM (and SIGKILL if
/// it does not stop within 20 s); `crash()` SIGKILLs it like a node failure.
pub struct Operator {
    child: Option<std::process::Child>,
    pub log: PathBuf,
}

impl Operator {
    pub fn start(extra: &[&str]) -> Self {
        let log = std::env::temp_dir().join(format!(
            "firedrill-operator-{}-{}.log",
            std::process::id(),
            now_nanos()
        ));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(firedrill_bin())
            .arg("operator")
            .arg("--metrics-bind=127.0.0.1:0")
            .args(extra)
            .env("KUBECONFIG", kubeconfig())
            .env("RUST_LOG", "info,firedrill=debug,kube=warn")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("the firedrill binary (cargo build -p firedrill)");
        Operator {
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILL: no chance to clean up.
    pub fn crash(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }

    /// SIGTERM, then wait for a graceful stop.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()
            .ok();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        c.kill().ok();
        c.wait().ok()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Where it serves /metrics, /healthz and /readyz (from its start-up log).
    pub fn metrics_addr(&self) -> String {
        wait_for(
            "the operator to report its metrics address",
            Duration::from_secs(30),
            || {
                let log = self.log_text();
                log.split("metrics=").nth(1).map(|rest| {
                    rest.split_whitespace()
                        .next()
                        .unwrap()
                        .trim_matches('"')
                        .to_string()
                })
            },
        )
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "--- operator log ({}):\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Deletes a DataCenterFailure when the test ends and waits until it is gone
/// (its finalizer restores the zone), so the next test starts clean.
pub struct Experiment(pub String);

impl Drop for Experiment {
    fn drop(&mut self) {
        kubectl(
            &[
                "delete",
                "dcf",
                &self.0,
                "--ignore-not-found",
                "--wait=true",
                "--timeout=60s",
            ],
            None,
        );
    }
}

/// A plain HTTP/1.1 GET; the whole response, head and body.
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// `kubectl wait --for=condition=Completed` on a DataCenterFailure, as a
/// pipeline would; panics if it does not end in time.
pub fn wait_completed(name: &str, timeout_secs: u64) {
    kubectl(
        &[
            "wait",
            "--for=condition=Completed",
            &format!("dcf/{name}"),
            &format!("--timeout={timeout_secs}s"),
        ],
        None,
    )
    .expect_ok(&format!("kubectl wait: {name} Completed"));
}

/// No node carries a firedrill mark or taint, and none is cordoned.
pub fn assert_zone_restored() {
    let traces = firedrill_traces_on_nodes();
    assert!(traces.is_empty(), "firedrill traces left: {traces:?}");
    let cordoned = cordoned_nodes();
    assert!(cordoned.is_empty(), "nodes left cordoned: {cordoned:?}");
}

/// No node changed since `before` (`kubectl get nodes` as JSON): the same
/// spec and labels on every node, and no firedrill traces.
pub fn assert_nodes_untouched(before: &Value) {
    let after = kubectl_json(&["get", "nodes"]);
    let specs = |v: &Value| -> Vec<(String, String, String)> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["metadata"]["name"].to_string(),
                    n["spec"].to_string(),
                    n["metadata"]["labels"].to_string(),
                )
            })
            .collect()
    };
    assert_eq!(specs(before), specs(&after), "a node was changed");
    assert!(firedrill_traces_on_nodes().is_empty());
}

/// A field of a DataCenterFailure, by JSONPath.
pub fn dcf_field(name: &str, path: &str) -> String {
    kubectl(
        &["get", "dcf", name, "-o", &format!("jsonpath={{{path}}}")],
        None,
    )
    .stdout
}

/// Wait until the experiment reaches `phase`.
pub fn wait_phase(name: &str, phase: &str, timeout: Duration) {
    let mut last = String::new();
    let deadline = Instant::now() + timeout;
    loop {
        let now = dcf_field(name, ".status.phase");
        if now == phase {
            return;
        }
        if now != last {
            last = now;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {name} to reach {phase}; it is {last:?}: {}",
            dcf_field(name, ".status.reason")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every trace firedrill can leave on a node: (node, what). The node
/// agent's own label (`chaos.firedrill.dev/agent`, put there by the agent,
/// here the testbed's data plane) is no trace of an experiment.
pub fn firedrill_traces_on_nodes() -> Vec<(String, String)> {
    let mut out = vec![];
    for n in kubectl_json(&["get", "nodes"])["items"].as_array().unwrap() {
        let name = n["metadata"]["name"].as_str().unwrap().to_string();
        if n["metadata"]["labels"].as_object().is_some_and(|l| {
            l.keys()
                .any(|k| k.starts_with("chaos.firedrill.dev/") && k != "chaos.firedrill.dev/agent")
        }) {
            out.push((name.clone(), "label".into()));
        }
        if n["metadata"]["annotations"]
            .as_object()
            .is_some_and(|a| a.keys().any(|k| k.starts_with("chaos.firedrill.dev/")))
        {
            out.push((name.clone(), "annotation".into()));
        }
        if n["spec"]["taints"].as_array().is_some_and(|ts| {
            ts.iter().any(|t| {
                t["key"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("chaos.firedrill.dev/")
            })
        }) {
            out.push((name.clone(), "taint".into()));
        }
    }
    out
}

/// Names of unschedulable nodes.
pub fn cordoned_nodes() -> BTreeSet<String> {
    kubectl_json(&["get", "nodes"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["spec"]["unschedulable"] == true)
        .map(|n| n["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

/// Nodes of one zone.
pub fn nodes_in(zone: &str) -> Vec<String> {
    node_zones()
        .into_iter()
        .filter(|(_, z)| z == zone)
        .map(|(n, _)| n)
        .collect()
}

/// Uncordons, when the test ends, nodes the test itself cordoned.
pub struct AdminCordon(pub Vec<String>);

impl AdminCordon {
    pub fn cordon(nodes: &[String]) -> Self {
        for n in nodes {
            kubectl(&["cordon", n], None).expect_ok("kubectl cordon");
        }
        AdminCordon(nodes.to_vec())
    }
}

impl Drop for AdminCordon {
    fn drop(&mut self) {
        for n in &self.0 {
            kubectl(&["uncordon", n], None);
        }
    }
}

/// Two services in `ns`: `chat` (6 replicas spread over the zones) and
/// `login` (2 replicas pinned to zone-a by nodeSelector), each behind a
/// Service of the same name.
/// A Deployment of `replicas` placeholder pods labelled `app: NAME` and a
/// Service in front of them. `pod_meta` is added to the pod template's
/// metadata flow map (e.g. `, annotations: {...}`), `placement` to its spec
/// (lines indented six spaces).
pub fn service_and_deployment(
    ns: &str,
    name: &str,
    replicas: u32,
    pod_meta: &str,
    placement: &str,
) -> String {
    format!(
        r#"---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}{pod_meta}}}
    spec:
{placement}
      containers: [{{name: app, image: registry.invalid/{name}:1, ports: [{{containerPort: 8080}}], resources: {{requests: {{cpu: 100m, memory: 64Mi}}}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec: {{selector: {{app: {name}}}, ports: [{{port: 80, targetPort: 8080}}]}}
"#
    )
}

/// Spread over the zones by a topology spread constraint on `app: NAME`.
pub fn spread_over_zones(name: &str, when_unsatisfiable: &str) -> String {
    format!(
        "      topologySpreadConstraints: [{{maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: {when_unsatisfiable}, labelSelector: {{matchLabels: {{app: {name}}}}}}}]"
    )
}

pub fn chat_and_login(ns: &str) -> String {
    let pinned = "      nodeSelector: {topology.kubernetes.io/zone: zone-a}";
    format!(
        "{}{}",
        // A replacement chat pod takes 2 s to turn Ready, as a real container
        // would, so losing a zone is a dip an SLO probe can see.
        service_and_deployment(
            ns,
            "chat",
            6,
            ", annotations: {pod-ready.stage.kwok.x-k8s.io/delay: 2s}",
            &spread_over_zones("chat", "ScheduleAnyway"),
        ),
        service_and_deployment(ns, "login", 2, "", pinned)
    )
}

/// A namespace with [`chat_and_login`] running and Ready, on nodes that carry
/// no trace of an earlier experiment.
pub fn setup_chat_and_login(prefix: &str) -> Namespace {
    install_crds();
    let ns = Namespace::create(prefix);
    let out = apply(&chat_and_login(&ns.0));
    assert!(out.ok, "{}", out.stderr);
    wait_for(
        "chat and login Running/Ready",
        Duration::from_secs(120),
        || {
            (ready_pods(&ns.0, "app=chat").len() == 6 && ready_pods(&ns.0, "app=login").len() == 2)
                .then_some(())
        },
    );
    // The probes read EndpointSlices, which follow the pods a moment later.
    wait_for(
        "chat and login endpoints ready",
        Duration::from_secs(60),
        || {
            (ready_endpoints(&ns.0, "chat") == 6 && ready_endpoints(&ns.0, "login") == 2)
                .then_some(())
        },
    );
    assert!(
        firedrill_traces_on_nodes().is_empty(),
        "a previous test left traces: {:?}",
        firedrill_traces_on_nodes()
    );
    ns
}

/// A DataCenterFailure manifest: `extra` is added under `spec:` (indented
/// two spaces). Without SLOs in `extra`, it is a fault-only drill.
pub fn drill_yaml(name: &str, zone: &str, duration: &str, extra: &str) -> String {
    let fault_only = if extra.contains("slos:") {
        ""
    } else {
        "  faultOnly: true\n"
    };
    format!(
        "apiVersion: chaos.firedrill.dev/v1alpha1\nkind: DataCenterFailure\nmetadata:\n  name: {name}\nspec:\n  zone: {zone}\n  duration: {duration}\n  baseline: 0s\n{fault_only}{extra}"
    )
}

/// Run `tests/testbed/testbed.sh` with `args` (the suite's own testbed).
pub fn testbed(args: &[&str]) -> Output {
    let out = Command::new(repo_root().join("tests/testbed/testbed.sh"))
        .args(args)
        .output()
        .expect("tests/testbed/testbed.sh");
    Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A KWOK node manifest like the testbed's own.
pub fn kwok_node_yaml(name: &str, zone: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Node
metadata:
  name: {name}
  annotations: {{kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}}
  labels: {{type: kwok, kubernetes.io/arch: amd64, kubernetes.io/os: linux, kubernetes.io/hostname: {name}, topology.kubernetes.io/zone: {zone}, topology.kubernetes.io/region: testbed}}
status:
  allocatable: {{cpu: "16", memory: 64Gi, pods: "110"}}
  capacity: {{cpu: "16", memory: 64Gi, pods: "110"}}
  nodeInfo: {{architecture: amd64, operatingSystem: linux, kubeletVersion: fake, kubeProxyVersion: fake}}
"#
    )
}

/// A node added for one test, deleted when the test ends.
pub struct ExtraNode(pub String);

impl ExtraNode {
    pub fn add(name: &str, zone: &str) -> Self {
        kubectl(
            &["apply", "--server-side", "-f", "-"],
            Some(&kwok_node_yaml(name, zone)),
        )
        .expect_ok("adding a node");
        // Ready, and the node lifecycle controller's start-up taint gone.
        wait_for(
            "the new node Ready and untainted",
            Duration::from_secs(60),
            || {
                let n = kubectl_json(&["get", "node", name]);
                let ready = n["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                });
                let untainted = n["spec"]["taints"].as_array().is_none_or(|t| t.is_empty());
                (ready && untainted).then_some(())
            },
        );
        ExtraNode(name.to_string())
    }
}

impl Drop for ExtraNode {
    fn drop(&mut self) {
        kubectl(
            &[
                "delete",
                "node",
                &self.0,
                "--ignore-not-found",
                "--wait=false",
            ],
            None,
        );
    }
}

/// Pod name → uid for the pods of a namespace matching `selector` (all if empty).
pub fn pod_uids(ns: &str, selector: &str) -> std::collections::BTreeMap<String, String> {
    let mut args = vec!["-n", ns, "get", "pods"];
    if !selector.is_empty() {
        args.extend(["-l", selector]);
    }
    kubectl_json(&args)["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                p["metadata"]["uid"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Events with `reason` in namespace `ns` (all namespaces if empty), as JSON.
pub fn events_with_reason(ns: &str, reason: &str) -> Vec<Value> {
    let selector = format!("reason={reason}");
    let mut args = vec!["get", "events", "--field-selector", &selector];
    if ns.is_empty() {
        args.push("-A");
    } else {
        args.extend(["-n", ns]);
    }
    kubectl_json(&args)["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Nodes that carry a firedrill mark, with the zone label they have now.
pub fn marked_zones() -> BTreeSet<String> {
    kubectl_json(&["get", "nodes", "-l", "chaos.firedrill.dev/experiment"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            n["metadata"]["labels"]["topology.kubernetes.io/zone"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

/// The taints firedrill put on nodes: (node, effect, value).
pub fn firedrill_taints() -> Vec<(String, String, String)> {
    let mut out = vec![];
    for n in kubectl_json(&["get", "nodes"])["items"].as_array().unwrap() {
        for t in n["spec"]["taints"].as_array().cloned().unwrap_or_default() {
            if t["key"] == "chaos.firedrill.dev/zone-down" {
                out.push((
                    n["metadata"]["name"].as_str().unwrap().to_string(),
                    t["effect"].as_str().unwrap_or("").to_string(),
                    t["value"].as_str().unwrap_or("").to_string(),
                ));
            }
        }
    }
    out
}

/// The image archive `make image` built: `FIREDRILL_IMAGE`, else
/// `out/firedrill-<version>.oci.tar`.
pub fn image_archive() -> PathBuf {
    if let Ok(p) = std::env::var("FIREDRILL_IMAGE") {
        return PathBuf::from(p);
    }
    archive_in_out("firedrill")
}

/// The node agent's image archive `make image` writes beside the operator's.
pub fn agent_image_archive() -> PathBuf {
    archive_in_out("firedrill-agent")
}

fn archive_in_out(name: &str) -> PathBuf {
    let cargo = std::fs::read_to_string(repo_root().join("operator/Cargo.toml")).unwrap();
    let version = cargo
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap()
        .to_string();
    let path = repo_root().join(format!("out/{name}-{version}.oci.tar"));
    assert!(
        path.exists(),
        "no image archive at {}: build it with `make image` (tests/run-e2e.sh does)",
        path.display()
    );
    path
}

/// The version the image archive is tagged with (its only ref name).
pub fn image_ref_name() -> String {
    ref_name_of(&image_archive())
}

fn ref_name_of(archive: &std::path::Path) -> String {
    let name = archive.file_name().unwrap().to_string_lossy();
    let name = name.trim_end_matches(".oci.tar");
    let version = name
        .strip_prefix("firedrill-agent-")
        .or_else(|| name.strip_prefix("firedrill-"))
        .unwrap_or(name);
    version.to_string()
}

/// The image's root filesystem, unpacked once per test process by `umoci
/// unpack` (which checks every blob against its digest), under the testbed's
/// state directory (removed with it).
pub fn image_rootfs() -> PathBuf {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS
        .get_or_init(|| unpack(&image_archive(), "image"))
        .clone()
}

/// The agent image's root filesystem, unpacked as [`image_rootfs`] is.
pub fn agent_image_rootfs() -> PathBuf {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS
        .get_or_init(|| unpack(&agent_image_archive(), "agent-image"))
        .clone()
}

fn unpack(archive: &std::path::Path, what: &str) -> PathBuf {
    let base = std::env::var("FIREDRILL_TESTBED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir())
        .join(format!("{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let layout = base.join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xf")
            .arg(archive)
            .arg("-C")
            .arg(&layout),
        "unpacking the image archive",
    );
    let bundle = base.join("bundle");
    let mut umoci = Command::new("umoci");
    umoci.arg("unpack");
    if euid() != 0 {
        umoci.arg("--rootless");
    }
    run_ok(
        umoci
            .arg("--image")
            .arg(format!("{}:{}", layout.display(), ref_name_of(archive)))
            .arg(&bundle),
        "umoci unpack",
    );
    bundle.join("rootfs")
}

/// Run a command to success, or panic with its output.
pub fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The effective user id (from /proc, without unsafe code).
pub fn euid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(u32::MAX)
}

/// chroot(8) by absolute path: a child given the image's PATH would search
/// that instead.
pub fn chroot_program() -> PathBuf {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| PathBuf::from(d).join("chroot"))
        .find(|p| p.exists())
        .expect("chroot (coreutils) on PATH")
}

/// A command that runs the image's `firedrill` the way a container runtime
/// would: chrooted into the image's root filesystem as uid/gid 65532 with
/// no environment but `env`. Needs root (chroot).
pub fn image_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    assert_eq!(
        euid(),
        0,
        "running the image's binary needs root (chroot --userspec)"
    );
    let mut cmd = Command::new(chroot_program());
    cmd.arg("--userspec=65532:65532")
        .arg(image_rootfs())
        .arg("/usr/local/bin/firedrill")
        .args(args)
        .env_clear()
        .env("PATH", "/usr/local/bin")
        .env("HOME", "/home/nonroot");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}
