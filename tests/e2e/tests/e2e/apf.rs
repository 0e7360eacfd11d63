//! API Priority and Fairness as the chart ships it, proven by the API
//! server's own answers to requests made with the operator's ServiceAccount
//! token (system:masters is exempt from APF, so an admin would prove
//! nothing): its Lease requests land in the built-in `leader-election`
//! priority level, its pod deletes and lists in the chart's bounded level,
//! and its other requests in neither. With the values turned off, the Lease
//! requests fall back to the cluster's defaults.

use firedrill_e2e::*;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

/// The release, uninstalled when the test ends, pass or fail.
struct Release {
    bin: String,
    namespace: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = helm(
            &self.bin,
            &["uninstall", "apf", "-n", &self.namespace, "--wait"],
        );
    }
}

/// Where the API server is and its CA, from the admin kubeconfig.
fn apiserver() -> (String, String) {
    let admin =
        std::fs::read_to_string(std::env::var("FIREDRILL_TESTBED_KUBECONFIG").unwrap()).unwrap();
    let field = |name: &str| {
        admin
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .unwrap()
            .trim()
            .to_string()
    };
    (field("server:"), field("certificate-authority:"))
}

/// The API server's answer to one request: its status and its headers
/// (names in lower case).
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: BTreeMap<String, String>,
}

impl Answer {
    fn flow_schema(&self) -> &str {
        self.headers
            .get("x-kubernetes-pf-flowschema-uid")
            .map(String::as_str)
            .unwrap_or("")
    }
    fn priority_level(&self) -> &str {
        self.headers
            .get("x-kubernetes-pf-prioritylevel-uid")
            .map(String::as_str)
            .unwrap_or("")
    }
}

/// One request with a bearer token, by curl (headers only).
fn request(token: &str, method: &str, path: &str) -> Answer {
    let (server, ca) = apiserver();
    let out = Command::new("curl")
        .args([
            "-sS",
            "--cacert",
            &ca,
            "-X",
            method,
            "-D",
            "-",
            "-o",
            "/dev/null",
        ])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .arg(format!("{server}{path}"))
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "curl {method} {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer { status, headers }
}

fn uid(kind: &str, name: &str) -> String {
    kubectl(&["get", kind, name, "-o", "jsonpath={.metadata.uid}"], None)
        .expect_ok(&format!("the uid of {kind}/{name}"))
        .trim()
        .to_string()
}

#[test]
fn the_operators_lease_requests_and_bulk_requests_land_in_their_own_priority_levels() {
    let _lock = zones_lock_shared();
    install_crds();
    let bin = helm_bin();
    let chart = repo_root().join("charts/firedrill");
    let home = Namespace::create("firedrill-apf");
    let work = Namespace::create("e2e-apf");
    let install = helm(
        &bin,
        &[
            "install",
            "apf",
            chart.to_str().unwrap(),
            "-n",
            &home.0,
            "--set",
            "replicas=1",
        ],
    );
    assert!(install.ok, "{}{}", install.stdout, install.stderr);
    let _release = Release {
        bin: bin.clone(),
        namespace: home.0.clone(),
    };
    let token = kubectl(
        &[
            "-n",
            &home.0,
            "create",
            "token",
            "firedrill",
            "--duration=1h",
        ],
        None,
    )
    .expect_ok("create token")
    .trim()
    .to_string();

    let leases_fs = uid("flowschema", "apf-firedrill-leases");
    let bulk_fs = uid("flowschema", "apf-firedrill-bulk");
    let leader_pl = uid("prioritylevelconfiguration", "leader-election");
    let bulk_pl = uid("prioritylevelconfiguration", "apf-firedrill-bulk");
    let bulk = kubectl_json(&["get", "prioritylevelconfiguration", "apf-firedrill-bulk"]);
    assert_eq!(bulk["spec"]["type"], "Limited");
    assert_eq!(bulk["spec"]["limited"]["limitResponse"]["type"], "Queue");

    let lease_path = format!(
        "/apis/coordination.k8s.io/v1/namespaces/{}/leases/firedrill-operator",
        home.0
    );
    // The API server picks up new FlowSchemas within moments.
    let lease = wait_for(
        "the Lease request in the leader-election level",
        Duration::from_secs(30),
        || {
            let a = request(&token, "GET", &lease_path);
            (a.flow_schema() == leases_fs).then_some(a)
        },
    );
    assert_eq!(lease.priority_level(), leader_pl, "{lease:?}");
    // Allowed (404: no Lease yet), not refused: RBAC lets it through.
    assert!(matches!(lease.status, 200 | 404), "{lease:?}");

    // A pod delete and a pod list by the operator's identity: the bulk level.
    apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: victim, namespace: {ns}}}
spec: {{containers: [{{name: c, image: registry.invalid/c:1}}]}}
"#,
        ns = work.0
    ))
    .expect_ok("a pod to delete");
    let list = request(
        &token,
        "GET",
        &format!(
            "/api/v1/namespaces/{}/pods?fieldSelector=spec.nodeName%3Dnone",
            work.0
        ),
    );
    assert_eq!(list.status, 200, "{list:?}");
    assert_eq!(list.flow_schema(), bulk_fs, "{list:?}");
    assert_eq!(list.priority_level(), bulk_pl, "{list:?}");
    let delete = request(
        &token,
        "DELETE",
        &format!(
            "/api/v1/namespaces/{}/pods/victim?gracePeriodSeconds=0",
            work.0
        ),
    );
    assert_eq!(delete.status, 200, "{delete:?}");
    assert_eq!(delete.flow_schema(), bulk_fs, "{delete:?}");
    assert_eq!(delete.priority_level(), bulk_pl, "{delete:?}");

    // Its other requests stay where the cluster puts them.
    let other = request(
        &token,
        "GET",
        &format!("/api/v1/namespaces/{}/configmaps", home.0),
    );
    assert_eq!(other.status, 200, "{other:?}");
    assert!(!other.flow_schema().is_empty(), "{other:?}");
    assert_ne!(other.flow_schema(), leases_fs, "{other:?}");
    assert_ne!(other.flow_schema(), bulk_fs, "{other:?}");

    // Turned off, the chart's objects go, and so does the classification.
    let upgrade = helm(
        &bin,
        &[
            "upgrade",
            "apf",
            chart.to_str().unwrap(),
            "-n",
            &home.0,
            "--set",
            "replicas=1",
            "--set",
            "apiPriorityAndFairness.leaderElection.enabled=false",
            "--set",
            "apiPriorityAndFairness.bulk.enabled=false",
        ],
    );
    assert!(upgrade.ok, "{}{}", upgrade.stdout, upgrade.stderr);
    assert!(!kubectl(&["get", "flowschema", "apf-firedrill-leases"], None).ok);
    assert!(
        !kubectl(
            &["get", "prioritylevelconfiguration", "apf-firedrill-bulk"],
            None
        )
        .ok
    );
    let fallback = wait_for(
        "the Lease request back in the cluster's defaults",
        Duration::from_secs(30),
        || {
            let a = request(&token, "GET", &lease_path);
            (!a.flow_schema().is_empty() && a.flow_schema() != leases_fs).then_some(a)
        },
    );
    assert_ne!(fallback.priority_level(), leader_pl, "{fallback:?}");
}
