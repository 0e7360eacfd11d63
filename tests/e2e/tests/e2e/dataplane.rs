//! The testbed's data plane: a pod that asks for it runs a real process on
//! its pod IP's loopback address, turns Ready only once that process answers,
//! and loses it the moment the pod is deleted; a Service's address follows
//! its ready EndpointSlices; a process answers 200 only while its
//! dependencies do.

use firedrill_e2e::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A served Deployment and its Service (port 80 → 8080).
fn served(ns: &str, name: &str, replicas: u32, depends: &str) -> String {
    let depends = if depends.is_empty() {
        String::new()
    } else {
        format!(", testbed.firedrill.dev/depends-on: '{depends}'")
    };
    format!(
        r#"---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata:
      labels: {{app: {name}, testbed.firedrill.dev/serve: "true"}}
      annotations: {{testbed.firedrill.dev/startup: 2s{depends}}}
    spec:
      containers: [{{name: app, image: registry.invalid/{name}:1, ports: [{{containerPort: 8080}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec: {{selector: {{app: {name}}}, ports: [{{port: 80, targetPort: 8080}}]}}
"#
    )
}

/// The HTTP status of GET `path` at `addr` (None: no answer within 2 s).
fn status(addr: &str, path: &str) -> Option<u16> {
    match try_status(addr, path) {
        Ok(code) => Some(code),
        Err(e) => {
            eprintln!("GET {path} at {addr}: {e}");
            None
        }
    }
}

fn try_status(addr: &str, path: &str) -> Result<u16, String> {
    let sock_addr: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut s = TcpStream::connect_timeout(&sock_addr, Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| format!("read: {e} (got {out:?})"))?;
    out.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status in {out:?}"))
}

/// The loopback address of a Service, from the data plane's hosts file.
fn service_addr(ns: &str, name: &str) -> String {
    let hosts = std::env::var("FIREDRILL_PROBE_HOSTS")
        .expect("the testbed's env sets FIREDRILL_PROBE_HOSTS");
    wait_for(
        "the Service in the hosts file",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(&hosts).ok()?.lines().find_map(|l| {
                let mut w = l.split_whitespace();
                let addr = w.next()?;
                w.any(|n| n == format!("{name}.{ns}.svc"))
                    .then(|| format!("{addr}:80"))
            })
        },
    )
}

/// Where a pod's process listens, from the data plane's list of processes.
fn pod_addr(ns: &str, pod: &str) -> String {
    let hosts = std::env::var("FIREDRILL_PROBE_HOSTS").unwrap();
    let listing = std::path::Path::new(&hosts).with_file_name("pods");
    let key = format!("{ns}/{pod}");
    wait_for(
        "the pod's process in the data plane's list",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(&listing)
                .ok()?
                .lines()
                .find_map(|l| {
                    let (addr, name) = l.split_once(' ')?;
                    (name == key).then(|| addr.to_string())
                })
        },
    )
}

#[test]
fn served_pods_answer_through_their_service_and_die_with_their_pod() {
    let _lock = zones_lock();
    install_crds();
    let ns = Namespace::create("e2e-dataplane");
    let back_url = format!("http://back.{}.svc/healthz", ns.0);
    apply(&format!(
        "{}{}",
        served(&ns.0, "back", 2, ""),
        served(&ns.0, "front", 2, &back_url)
    ))
    .expect_ok("served workloads");
    wait_for("front and back Ready", Duration::from_secs(90), || {
        (ready_endpoints(&ns.0, "back") == 2 && ready_endpoints(&ns.0, "front") == 2).then_some(())
    });
    // Ready only once the process answered: after its 2 s start-up.
    for (pod, _) in ready_pods(&ns.0, "app=back") {
        let p = kubectl_json(&["-n", &ns.0, "get", "pod", &pod]);
        let ready_at = p["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap()["lastTransitionTime"]
            .as_str()
            .unwrap()
            .to_string();
        let started = p["status"]["startTime"].as_str().unwrap().to_string();
        assert!(
            ready_at > started,
            "{pod}: Ready at {ready_at}, started {started}"
        );
        assert_eq!(
            status(&pod_addr(&ns.0, &pod), "/"),
            Some(200),
            "{pod} serves"
        );
    }
    let front = service_addr(&ns.0, "front");
    assert_eq!(status(&front, "/healthz"), Some(200));

    // Killing a pod kills its process.
    let (victim, _) = ready_pods(&ns.0, "app=back")[0].clone();
    let addr = pod_addr(&ns.0, &victim);
    kubectl(
        &[
            "-n",
            &ns.0,
            "delete",
            "pod",
            &victim,
            "--grace-period=0",
            "--force",
        ],
        None,
    );
    wait_for(
        "the killed pod's process to stop",
        Duration::from_secs(10),
        || status(&addr, "/").is_none().then_some(()),
    );

    // Without its dependency, front answers 503; with it back, 200.
    kubectl(
        &["-n", &ns.0, "scale", "deployment/back", "--replicas=0"],
        None,
    )
    .expect_ok("scale");
    wait_for(
        "front to fail without back",
        Duration::from_secs(30),
        || (status(&front, "/healthz") == Some(503)).then_some(()),
    );
    kubectl(
        &["-n", &ns.0, "scale", "deployment/back", "--replicas=1"],
        None,
    )
    .expect_ok("scale");
    wait_for("front to answer again", Duration::from_secs(60), || {
        (status(&front, "/healthz") == Some(200)).then_some(())
    });
}
