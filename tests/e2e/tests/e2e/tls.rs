//! https probes against a real TLS server on loopback, its certificate signed
//! by a CA made for the test: verified with the CA from a Secret, accepted
//! with insecureSkipVerify, and refused (the drill does not start) without
//! either.

use firedrill_e2e::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A CA, a server certificate for 127.0.0.1 signed by it, and an https server
/// (Python's http.server with ssl) answering 200 "ok" on a loopback port.
struct TlsServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TlsServer {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("firedrill-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-subj",
                "/CN=firedrill e2e CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        openssl(
            &dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        );
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                "server.ext",
                "-out",
                "server.crt",
            ],
        );
        let script = r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("server.crt", "server.key")
s.socket = ctx.wrap_socket(s.socket, server_side=True)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;
        let mut child = Command::new("python3")
            .args(["-c", script])
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the server printed its port");
        TlsServer { child, port, dir }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A drill of zone-a in `ns` whose SLOs are `slos`.
fn https_drill(name: &str, ns: &str, slos: Vec<Slo>) -> String {
    let drill = Drill::new(name, "zone-a")
        .duration("3s")
        .baseline("2s")
        .namespace(ns);
    slos.into_iter().fold(drill, Drill::slo).yaml()
}

/// An SLO that the server on `port` answers over https.
fn https_slo(name: &str, port: u16) -> Slo {
    Slo::new(name, "30s")
        .interval("200ms")
        .http(&format!("https://127.0.0.1:{port}/healthz"))
}

#[test]
fn https_probes_verify_with_a_ca_from_a_secret_or_skip_verification_when_told() {
    let _lock = zones_lock();
    install_crds();
    let server = TlsServer::start();
    let ns = Namespace::create("e2e-tls");
    let from_file = format!("--from-file=ca.crt={}", server.dir.join("ca.crt").display());
    kubectl(
        &[
            "-n", &ns.0, "create", "secret", "generic", "probe-ca", &from_file,
        ],
        None,
    )
    .expect_ok("create the CA secret");
    let _op = Operator::start(&["--secret-namespaces", &ns.0]);

    // Without a CA and without insecureSkipVerify the certificate is checked
    // against the public roots, fails, and the drill never starts.
    let _unverified = Experiment("tls-unknown".into());
    let before = kubectl_json(&["get", "nodes"]);
    assert!(
        apply(&https_drill(
            "tls-unknown",
            &ns.0,
            vec![https_slo("api", server.port)]
        ))
        .ok
    );
    wait_completed("tls-unknown", 60);
    assert_eq!(dcf_field("tls-unknown", ".status.phase"), "Aborted");
    let reason = dcf_field("tls-unknown", ".status.reason");
    assert!(
        reason.contains("steady state not met")
            && reason.contains("api:")
            && reason.contains("UnknownIssuer"),
        "{reason}"
    );
    let phases = dcf_field("tls-unknown", ".status.transitions[*].phase");
    assert!(!phases.contains("Injecting"), "{phases}");
    assert_nodes_untouched(&before);

    // With the CA from the Secret, and with verification skipped, both pass.
    let _verified = Experiment("tls".into());
    let yaml = https_drill(
        "tls",
        &ns.0,
        vec![
            https_slo("with-ca", server.port).ca_from_secret(&ns.0, "probe-ca", "ca.crt"),
            https_slo("insecure", server.port).insecure_skip_verify(),
        ],
    );
    assert!(apply(&yaml).ok);
    wait_completed("tls", 90);
    let status = kubectl_json(&["get", "dcf", "tls"])["status"].clone();
    assert_eq!(status["phase"], "Completed", "{status:#}");
    assert_eq!(status["verdict"], "Passed", "{status:#}");
    for slo in status["slos"].as_array().unwrap() {
        assert_eq!(slo["failures"], 0, "{slo:#}");
        assert!(slo["samples"].as_i64().unwrap() >= 10, "{slo:#}");
        assert_eq!(slo["availabilityPercent"], 100, "{slo:#}");
    }
    assert!(firedrill_traces_on_nodes().is_empty());
}
