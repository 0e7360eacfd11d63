//! The recovery point, measured by a write probe against the testbed's
//! store: a primary pinned to zone-a and, where there is one, a standby in
//! zone-b that is promoted when the primary is lost. Asynchronous
//! replication with a 2 s lag loses the last 2 s of acknowledged writes;
//! synchronous replication loses none; a primary with no standby loses none
//! but is down until the zone comes back.

use firedrill_e2e::*;
use serde_json::Value;
use std::time::Duration;

const INTERVAL_S: f64 = 0.2;

/// Run a drill against the store (`replication` as in [`ledger`]) and
/// return the write SLO's status.
fn drill(name: &str, replication: Option<&str>) -> (Value, Value) {
    install_crds();
    let ns = Namespace::create(&format!("e2e-{name}"));
    assert!(apply(&ledger(&ns.0, replication)).ok);
    let members = if replication.is_some() { 2 } else { 1 };
    wait_for("the store's members Ready", Duration::from_secs(90), || {
        (ready_endpoints(&ns.0, "ledger") == members).then_some(())
    });
    let _op = Operator::start(&[]);
    let _exp = Experiment(name.into());
    let url = format!("http://ledger.{}.svc/records", ns.0);
    let drill = Drill::new(name, "zone-a")
        .duration("10s")
        .baseline("3s")
        .observe("15s")
        .namespace(&ns.0)
        .slo(
            Slo::new("payments", "30s")
                .interval("200ms")
                .timeout("1s")
                .recovery_point_objective("0s")
                .write(&url, &format!("{url}/{{{{id}}}}")),
        );
    assert!(apply(&drill.yaml()).ok);
    wait_completed(name, 150);
    let status = kubectl_json(&["get", "dcf", name])["status"].clone();
    let slo = status["slos"][0].clone();
    eprintln!("{name}: {slo:#}");
    (status, slo)
}

#[test]
fn async_replication_with_a_two_second_lag_loses_two_seconds_of_writes() {
    let _lock = zones_lock();
    let (status, slo) = drill("rpo-async", Some("async:2s"));
    assert_eq!(status["verdict"], "Failed", "{status:#}");
    assert_eq!(slo["verdict"], "Failed", "{slo:#}");
    let w = &slo["writes"];
    let rp = w["recoveryPointSeconds"].as_f64().unwrap();
    // Within one interval of the lag (and the tenth of a second it is rounded to).
    assert!(
        (rp - 2.0).abs() <= INTERVAL_S + 0.1,
        "recovery point {rp}s: {slo:#}"
    );
    let lost = w["lost"].as_i64().unwrap();
    assert!(
        (8..=12).contains(&lost),
        "about 2 s of writes every 200 ms: {slo:#}"
    );
    assert_eq!(w["unverified"], 0, "{slo:#}");
    assert!(
        w["refusedWhileDark"].as_i64().unwrap() > 0,
        "the failover took a moment: {slo:#}"
    );
    let message = slo["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("{lost} acknowledged writes lost (fd-")),
        "{message}"
    );
    assert!(
        slo["cause"]
            .as_str()
            .unwrap()
            .starts_with("acknowledged writes lost: fd-"),
        "{slo:#}"
    );
    // The service itself failed over in time: the loss is what failed it.
    assert!(
        slo["timeToRecoverSeconds"].as_f64().unwrap() < 30.0,
        "{slo:#}"
    );
}

#[test]
fn sync_replication_loses_nothing() {
    let _lock = zones_lock();
    let (status, slo) = drill("rpo-sync", Some("sync"));
    assert_eq!(slo["verdict"], "Passed", "{slo:#}");
    assert_eq!(status["verdict"], "Passed", "{status:#}");
    let w = &slo["writes"];
    assert_eq!(w["lost"], 0, "{slo:#}");
    assert_eq!(w["unverified"], 0, "{slo:#}");
    assert!(w["acknowledged"].as_i64().unwrap() > 50, "{slo:#}");
    assert!(w["recoveryPointSeconds"].is_null(), "{slo:#}");
}

#[test]
fn a_primary_without_a_standby_loses_nothing_but_never_recovers() {
    let _lock = zones_lock();
    let (status, slo) = drill("rpo-alone", None);
    assert_eq!(status["verdict"], "Failed", "{status:#}");
    assert_eq!(slo["verdict"], "Failed", "{slo:#}");
    assert!(slo["timeToRecoverSeconds"].is_null(), "{slo:#}");
    assert!(
        slo["message"]
            .as_str()
            .unwrap()
            .contains("never recovered while zone-a was dark"),
        "{slo:#}"
    );
    let w = &slo["writes"];
    assert_eq!(w["lost"], 0, "its records outlived the pod: {slo:#}");
    assert_eq!(w["unverified"], 0, "{slo:#}");
    assert!(w["acknowledged"].as_i64().unwrap() > 10, "{slo:#}");
}
