//! The CRDs install with real kubectl, show their columns, and the API server
//! itself rejects every kind of bad spec with a message naming the field.
//!
//! Each rejection test starts from a manifest the server accepts
//! (`valid_experiment_is_accepted` proves that) and breaks exactly one rule.

use firedrill_e2e::{Cleanup, apply, install_crds, kubectl, zones_lock, zones_lock_shared};

/// SLOs the API server accepts, at the level of the spec's fields.
const VALID_SLOS: &str = r#"slos:
- name: authentication
  recoveryTimeObjective: 60s
  availabilityObjective: 99.5
  interval: 500ms
  probe:
    http:
      url: https://auth.example.test/healthz
- name: messaging
  recoveryTimeObjective: 30s
  probe:
    kubernetes:
      service: {namespace: messaging, name: chat, minReadyEndpoints: 2}
- name: payments
  recoveryTimeObjective: 2m
  probe:
    tcp: {host: 127.0.0.1, port: 5432}"#;

/// Fields of a spec, each line indented two spaces to sit under `spec:`.
fn spec(fields: &[impl AsRef<str>]) -> String {
    fields
        .iter()
        .flat_map(|f| f.as_ref().lines())
        .map(|line| format!("  {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A DataCenterFailure named `name` whose spec has `fields`. Without SLOs,
/// a fault-only drill (so it breaks no other rule).
fn experiment(name: &str, fields: &[impl AsRef<str>]) -> String {
    let spec = spec(fields);
    let fault_only = if spec.contains("slos") {
        ""
    } else {
        "  faultOnly: true\n"
    };
    format!(
        r#"apiVersion: chaos.firedrill.dev/v1alpha1
kind: DataCenterFailure
metadata:
  name: {name}
spec:
{fault_only}{spec}
"#
    )
}

/// A DataCenterFailureSchedule of fault-only drills of zone-a, named `name`,
/// whose spec has `fields` too.
fn schedule(name: &str, fields: &[impl AsRef<str>]) -> String {
    let spec = spec(fields);
    format!(
        r#"apiVersion: chaos.firedrill.dev/v1alpha1
kind: DataCenterFailureSchedule
metadata:
  name: {name}
spec:
  template:
    spec:
      zone: zone-a
      faultOnly: true
{spec}
"#
    )
}

/// `yaml` must be rejected by `kubectl apply`, with a message naming `field`
/// and containing `says`. Nothing is created, so the testbed is shared; but
/// not with a test that stops the API server.
#[track_caller]
fn rejected(kind: &str, name: &str, yaml: &str, field: &str, says: &str) {
    let _shared = zones_lock_shared();
    install_crds();
    let _cleanup = Cleanup(vec![format!("{kind}/{name}")]);
    let out = apply(yaml);
    assert!(
        !out.ok,
        "kubectl apply accepted a bad manifest:\n{yaml}\n{}",
        out.stdout
    );
    assert!(
        out.stderr.contains(field),
        "the error does not name {field}:\n{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(says),
        "the error does not say {says:?}:\n{}",
        out.stderr
    );
}

#[test]
fn crds_install_and_get_shows_the_columns() {
    // An experiment a running operator would start, in a listing of all.
    let _lock = zones_lock();
    install_crds();
    let _cleanup = Cleanup(vec!["dcf/columns".into()]);
    let out = apply(&experiment(
        "columns",
        &["zone: zone-b", "duration: 90s", VALID_SLOS],
    ));
    assert!(out.ok, "{}", out.stderr);
    let table = kubectl(&["get", "dcf"], None).expect_ok("kubectl get dcf");
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "ZONE", "PHASE", "VERDICT", "AGE", "REASON"],
        "{table}"
    );
    let row = table
        .lines()
        .find(|l| l.starts_with("columns "))
        .expect("the experiment is listed");
    assert!(row.contains("zone-b"), "{row}");
    // The short name and the category work too.
    let by_category = kubectl(&["get", "chaos"], None).expect_ok("kubectl get chaos");
    assert!(by_category.contains("columns"), "{by_category}");
    // Defaults are filled in by the API server.
    let spec = kubectl(
        &[
            "get",
            "dcf",
            "columns",
            "-o",
            "jsonpath={.spec.topologyKey} {.spec.baseline} {.spec.slos[2].interval}",
        ],
        None,
    )
    .expect_ok("get spec");
    assert_eq!(spec, "topology.kubernetes.io/zone 30s 1s");
}

#[test]
fn schedules_get_shows_the_columns() {
    // A schedule a running operator would act on.
    let _lock = zones_lock();
    install_crds();
    let _cleanup = Cleanup(vec!["dcfs/weekly".into()]);
    let out = apply(&schedule(
        "weekly",
        &["schedule: '0 3 * * 1'", "timeZone: Asia/Seoul"],
    ));
    assert!(out.ok, "{}", out.stderr);
    let table = kubectl(&["get", "dcfs", "weekly"], None).expect_ok("kubectl get dcfs");
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap()
        .split("  ")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "SCHEDULE",
            "SUSPEND",
            "LAST SCHEDULE",
            "LAST VERDICT",
            "AGE",
            "PROBLEM"
        ],
        "{table}"
    );
    let policy = kubectl(
        &[
            "get",
            "dcfs",
            "weekly",
            "-o",
            "jsonpath={.spec.concurrencyPolicy}",
        ],
        None,
    )
    .expect_ok("get");
    assert_eq!(policy, "Forbid", "two drills never run at once by default");
}

#[test]
fn valid_experiment_is_accepted() {
    // An experiment a running operator would start.
    let _lock = zones_lock();
    install_crds();
    let _cleanup = Cleanup(vec!["dcf/valid".into()]);
    let out = apply(&experiment(
        "valid",
        &["zone: zone-a", "duration: 1h30m", VALID_SLOS],
    ));
    assert!(out.ok, "{}", out.stderr);
}

// --- zone -------------------------------------------------------------------

#[test]
fn zone_is_required() {
    rejected(
        "dcf",
        "no-zone",
        &experiment("no-zone", &["duration: 90s"]),
        "spec.zone",
        "Required value",
    );
}

#[test]
fn zone_must_not_be_empty() {
    rejected(
        "dcf",
        "empty-zone",
        &experiment("empty-zone", &["zone: ''"]),
        "spec.zone",
        "should be at least 1 chars long",
    );
}

#[test]
fn zone_must_not_be_blank() {
    rejected(
        "dcf",
        "blank-zone",
        &experiment("blank-zone", &["zone: '   '"]),
        "spec.zone",
        "zone must not be blank",
    );
}

// --- durations ---------------------------------------------------------------

#[test]
fn duration_must_parse() {
    rejected(
        "dcf",
        "bad-duration",
        &experiment("bad-duration", &["zone: zone-a", "duration: ten minutes"]),
        "spec.duration",
        "should match",
    );
}

#[test]
fn duration_is_at_most_24h() {
    rejected(
        "dcf",
        "long-duration",
        &experiment("long-duration", &["zone: zone-a", "duration: 25h"]),
        "spec.duration",
        "duration must be between 1s and 24h",
    );
}

#[test]
fn duration_is_at_least_1s() {
    rejected(
        "dcf",
        "short-duration",
        &experiment("short-duration", &["zone: zone-a", "duration: 0s"]),
        "spec.duration",
        "duration must be between 1s and 24h",
    );
}

#[test]
fn baseline_is_bounded() {
    rejected(
        "dcf",
        "long-baseline",
        &experiment("long-baseline", &["zone: zone-a", "baseline: 2h"]),
        "spec.baseline",
        "baseline must be at most 1h",
    );
}

// --- SLOs --------------------------------------------------------------------

/// The fields of a spec with one SLO, `slo` (a flow map).
fn one_slo(slo: &str) -> [String; 3] {
    ["zone: zone-a".into(), "slos:".into(), format!("- {slo}")]
}

#[test]
fn slo_names_are_unique() {
    let spec = [
        "zone: zone-a",
        "slos:",
        "- {name: auth, recoveryTimeObjective: 30s, probe: {tcp: {host: h, port: 1}}}",
        "- {name: auth, recoveryTimeObjective: 60s, probe: {tcp: {host: h, port: 2}}}",
    ];
    rejected(
        "dcf",
        "dup-slo",
        &experiment("dup-slo", &spec),
        "spec.slos[1]",
        "Duplicate value",
    );
}

#[test]
fn slo_has_exactly_one_probe_kind_not_two() {
    let spec = one_slo(
        "{name: auth, recoveryTimeObjective: 30s, probe: {tcp: {host: h, port: 1}, http: {url: 'http://h/'}}}",
    );
    rejected(
        "dcf",
        "two-probes",
        &experiment("two-probes", &spec),
        "spec.slos[0].probe",
        "exactly one probe kind must be set",
    );
}

#[test]
fn slo_has_exactly_one_probe_kind_not_none() {
    let spec = one_slo("{name: auth, recoveryTimeObjective: 30s, probe: {}}");
    rejected(
        "dcf",
        "no-probe",
        &experiment("no-probe", &spec),
        "spec.slos[0].probe",
        "exactly one probe kind must be set",
    );
}

#[test]
fn probe_interval_is_at_least_100ms() {
    let spec = one_slo(
        "{name: auth, interval: 50ms, recoveryTimeObjective: 30s, probe: {tcp: {host: h, port: 1}}}",
    );
    rejected(
        "dcf",
        "fast-probe",
        &experiment("fast-probe", &spec),
        "spec.slos[0].interval",
        "interval must be between 100ms and 1h",
    );
}

#[test]
fn availability_objective_is_at_most_100() {
    let spec = one_slo(
        "{name: auth, availabilityObjective: 100.5, recoveryTimeObjective: 30s, probe: {tcp: {host: h, port: 1}}}",
    );
    rejected(
        "dcf",
        "avail-high",
        &experiment("avail-high", &spec),
        "spec.slos[0].availabilityObjective",
        "less than or equal to 100",
    );
}

#[test]
fn availability_objective_is_not_negative() {
    let spec = one_slo(
        "{name: auth, availabilityObjective: -1, recoveryTimeObjective: 30s, probe: {tcp: {host: h, port: 1}}}",
    );
    rejected(
        "dcf",
        "avail-low",
        &experiment("avail-low", &spec),
        "spec.slos[0].availabilityObjective",
        "greater than or equal to 0",
    );
}

#[test]
fn recovery_time_objective_is_at_most_24h() {
    let spec =
        one_slo("{name: auth, recoveryTimeObjective: 48h, probe: {tcp: {host: h, port: 1}}}");
    rejected(
        "dcf",
        "rto-long",
        &experiment("rto-long", &spec),
        "spec.slos[0].recoveryTimeObjective",
        "recoveryTimeObjective must be at most 24h",
    );
}

#[test]
fn http_probe_url_is_http_or_https() {
    let spec = one_slo(
        "{name: auth, recoveryTimeObjective: 30s, probe: {http: {url: 'ftp://files.example.test/health'}}}",
    );
    rejected(
        "dcf",
        "ftp-url",
        &experiment("ftp-url", &spec),
        "spec.slos[0].probe.http.url",
        "url must be an http:// or https:// URL",
    );
}

#[test]
fn prometheus_probe_url_is_http_or_https() {
    let spec = one_slo(
        "{name: errors, recoveryTimeObjective: 30s, probe: {prometheus: {url: 'prometheus:9090', query: 'up', successWhen: '> 0'}}}",
    );
    rejected(
        "dcf",
        "prom-url",
        &experiment("prom-url", &spec),
        "spec.slos[0].probe.prometheus.url",
        "url must be an http:// or https:// URL",
    );
}

// --- schedules ---------------------------------------------------------------

#[test]
fn cron_schedule_is_well_formed() {
    rejected(
        "dcfs",
        "bad-cron",
        &schedule("bad-cron", &["schedule: 'every monday'"]),
        "spec.schedule",
        "schedule must be 5 cron fields in range",
    );
    rejected(
        "dcfs",
        "cron-61",
        &schedule("cron-61", &["schedule: '61 * * * *'"]),
        "spec.schedule",
        "minute 0-59",
    );
}

#[test]
fn cron_schedule_has_no_embedded_time_zone() {
    rejected(
        "dcfs",
        "tz-cron",
        &schedule("tz-cron", &["schedule: 'CRON_TZ=Asia/Seoul 0 3 * * 1'"]),
        "spec.schedule",
        "set the time zone in spec.timeZone",
    );
}

#[test]
fn time_zone_is_well_formed() {
    rejected(
        "dcfs",
        "bad-tz",
        &schedule(
            "bad-tz",
            &["schedule: '@weekly'", "timeZone: 'Korea Standard Time'"],
        ),
        "spec.timeZone",
        "timeZone must be an IANA time zone name",
    );
}
