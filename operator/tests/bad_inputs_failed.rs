//! The manifests in `tests/bad-inputs/` that the API server accepts
//! (`# expect: failed TEXT`) are refused by the operator's own checks, the
//! spec's parse and the probe policy, with `TEXT` in the reason: the same
//! checks an experiment runs before its baseline. Without a cluster; the
//! end-to-end test applies them all for real.

use firedrill::api::DataCenterFailure;
use firedrill::probe::{Policy, check_spec_with};

/// Manifests whose reason only a cluster can give.
const NEEDS_A_CLUSTER: [&str; 5] = [
    "zone-nowhere", // the planner finds no node in the zone
    // Refused by the address a name resolves to, or by the kubernetes
    // Service the operator learns from the cluster, at planning.
    "apiserver-cluster-ip",
    "apiserver-hex-tcp",
    "apiserver-hosts-entry",
    "apiserver-localhost",
];

#[test]
fn every_manifest_expected_to_fail_fails_the_operators_checks_with_its_reason() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/bad-inputs");
    let policy = Policy {
        apiserver: vec![("127.0.0.1".into(), 6443)],
        ..Policy::default()
    };
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "yaml") {
            continue;
        }
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let Some(says) = text
            .lines()
            .find_map(|l| l.strip_prefix("# expect: failed "))
        else {
            continue;
        };
        if NEEDS_A_CLUSTER.contains(&stem.as_str()) {
            continue;
        }
        let yaml = text
            .replace("{{NAME}}", &format!("bad-{stem}"))
            .replace("{{APISERVER}}", "127.0.0.1:6443")
            .replace("{{APISERVER_PORT}}", "6443");
        let dcf: DataCenterFailure = serde_yaml::from_str(&yaml)
            .unwrap_or_else(|e| panic!("{stem}: does not deserialize: {e}"));
        let reason = firedrill::spec::parse(&dcf.spec, Some("firedrill-system".into()))
            .and_then(|_| check_spec_with(&dcf.spec, &policy))
            .expect_err(&stem);
        let says = says.trim().replace("{{APISERVER_PORT}}", "6443");
        assert!(
            reason.contains(&says),
            "{stem}: reason {reason:?} does not say {says:?}"
        );
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} manifests checked");
}
