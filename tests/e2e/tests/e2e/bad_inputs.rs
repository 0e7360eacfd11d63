//! Every manifest in `tests/bad-inputs/` is refused by `kubectl apply`
//! naming the field, or ends Failed with the reason it declares; and no node
//! is touched by any of them.

use firedrill_e2e::*;
use std::time::Duration;

fn apiserver() -> String {
    let text =
        std::fs::read_to_string(std::env::var("FIREDRILL_TESTBED_KUBECONFIG").unwrap()).unwrap();
    let server = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("server:"))
        .unwrap()
        .trim();
    server.trim_start_matches("https://").to_string()
}

/// The address the probes' hosts file gives the `kubernetes` Service.
fn kubernetes_hosts_address() -> String {
    let hosts = std::env::var("FIREDRILL_PROBE_HOSTS").expect("the testbed's probe hosts file");
    wait_for(
        "the kubernetes Service in the hosts file",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(&hosts).ok()?.lines().find_map(|l| {
                let mut words = l.split_whitespace();
                let addr = words.next()?;
                words
                    .any(|w| w == "kubernetes.default.svc")
                    .then(|| addr.to_string())
            })
        },
    )
}

/// A spec close to 1 MB: 32 SLOs, each with headers of 4,000 characters and
/// one read from a Secret outside any namespace the operator may read.
fn near_one_megabyte() -> String {
    let mut y = String::from(
        r#"# Bad input: a spec close to 1 MB.
# expect: failed probes read Secrets only
apiVersion: chaos.firedrill.dev/v1alpha1
kind: DataCenterFailure
metadata:
  name: {{NAME}}
spec:
  zone: zone-a
  slos:
"#,
    );
    for i in 0..32 {
        y.push_str(&format!(
            r#"  - name: s{i}
    recoveryTimeObjective: 30s
    probe:
      http:
        url: http://web.shop.svc/{i}
        headers:
        - {{name: Authorization, valueFrom: {{secretKeyRef: {{namespace: kube-system, name: t, key: k}}}}}}
"#
        ));
        for h in 0..7 {
            y.push_str(&format!(
                "        - {{name: X-Pad-{h}, value: '{}'}}\n",
                "p".repeat(4000)
            ));
        }
    }
    y
}

#[test]
fn every_bad_input_is_refused_naming_the_field_or_fails_with_a_reason_and_touches_nothing() {
    let _lock = zones_lock();
    install_crds();
    let before = kubectl_json(&["get", "nodes"]);
    let _op = Operator::start(&[]);
    let dir = repo_root().join("tests/bad-inputs");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut cases: Vec<(String, String)> = files
        .iter()
        .map(|p| {
            (
                p.file_stem().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(p).unwrap(),
            )
        })
        .collect();
    cases.push(("near-one-megabyte".into(), near_one_megabyte()));
    assert!(
        cases.len() >= 40,
        "the corpus has {} manifests",
        cases.len()
    );
    let server = apiserver();
    let port = server.rsplit(':').next().unwrap().to_string();
    let kubernetes = kubernetes_hosts_address();
    let (mut rejected, mut failed) = (0, 0);
    for (stem, text) in &cases {
        let name = format!("bad-{stem}");
        let yaml = text
            .replace("{{NAME}}", &name)
            .replace("{{APISERVER}}", &server)
            .replace("{{APISERVER_PORT}}", &port)
            .replace("{{KUBERNETES_HOSTS_ADDRESS}}", &kubernetes);
        let expect = yaml
            .lines()
            .find_map(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{stem}: no '# expect:' line"))
            .to_string();
        let kind = if yaml.contains("kind: DataCenterFailureSchedule") {
            "dcfs"
        } else {
            "dcf"
        };
        let object = yaml
            .split_once("\nmetadata:\n  name: ")
            .and_then(|(_, rest)| rest.lines().next())
            .unwrap_or(&name)
            .trim()
            .to_string();
        let _cleanup = Cleanup(vec![format!("{kind}/{object}")]);
        // Client-side apply keeps a copy of the object in an annotation,
        // which is capped at 256 KiB; a spec this big goes server-side.
        let out = if yaml.len() > 200_000 {
            kubectl(&["apply", "--server-side", "-f", "-"], Some(&yaml))
        } else {
            apply(&yaml)
        };
        if let Some(rest) = expect.strip_prefix("rejected ") {
            let (field, says) = match rest.split_once(" | ") {
                Some((f, s)) => (f.trim(), Some(s.trim())),
                None => (rest.trim(), None),
            };
            assert!(
                !out.ok,
                "{stem}: kubectl apply accepted it:\n{}",
                out.stdout
            );
            assert!(
                [":", " ", "\""]
                    .iter()
                    .any(|end| out.stderr.contains(&format!("{field}{end}"))),
                "{stem}: the refusal does not name {field}:\n{}",
                out.stderr
            );
            if let Some(says) = says {
                assert!(
                    out.stderr.contains(says),
                    "{stem}: the refusal does not say {says:?}:\n{}",
                    out.stderr
                );
            }
            rejected += 1;
        } else if let Some(says) = expect.strip_prefix("failed ") {
            assert!(
                out.ok,
                "{stem}: refused at apply, expected to fail later:\n{}",
                out.stderr
            );
            wait_completed(&name, 60);
            let phase = dcf_field(&name, ".status.phase");
            let reason = dcf_field(&name, ".status.reason");
            assert_eq!(phase, "Failed", "{stem}: {reason}");
            assert!(
                reason.contains(says),
                "{stem}: reason {reason:?} does not say {says:?}"
            );
            assert!(
                dcf_field(&name, ".status.transitions[*].phase")
                    .split(' ')
                    .all(|p| p == "Planning" || p == "Failed"),
                "{stem}: it got past planning"
            );
            failed += 1;
        } else {
            panic!("{stem}: unknown expectation {expect:?}");
        }
        kubectl(
            &["delete", kind, &name, "--ignore-not-found", "--timeout=60s"],
            None,
        );
    }
    wait_for("no firedrill traces", Duration::from_secs(10), || {
        firedrill_traces_on_nodes().is_empty().then_some(())
    });
    assert_nodes_untouched(&before);
    eprintln!(
        "bad inputs: {} manifests, {rejected} refused at kubectl apply naming the field, {failed} ended Failed with the reason before anything was touched",
        cases.len()
    );
}
