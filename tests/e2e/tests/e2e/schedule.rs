//! Scheduled game days: an every-minute schedule fires, Forbid holds while
//! its run is still going, and deleting the schedule removes its runs (real
//! garbage collection through ownerReferences) with the zone restored.

use firedrill_e2e::*;
use std::time::Duration;

fn runs() -> Vec<String> {
    kubectl_json(&[
        "get",
        "dcf",
        "-l",
        "chaos.firedrill.dev/schedule=every-minute",
    ])["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

fn last_schedule_time() -> String {
    kubectl(
        &[
            "get",
            "dcfs",
            "every-minute",
            "-o",
            "jsonpath={.status.lastScheduleTime}",
        ],
        None,
    )
    .stdout
}

#[test]
fn every_minute_schedule_fires_and_forbid_holds_while_a_run_is_active() {
    let _lock = zones_lock();
    install_crds();
    let _op = Operator::start(&[]);
    let _cleanup = Cleanup(vec!["dcfs/every-minute".into()]);
    let yaml = r#"apiVersion: chaos.firedrill.dev/v1alpha1
kind: DataCenterFailureSchedule
metadata: {name: every-minute}
spec:
  schedule: '* * * * *'
  concurrencyPolicy: Forbid
  zones: [zone-b]
  template:
    metadata: {labels: {drill: scheduled}}
    spec: {zone: zone-a, duration: 100s, faultOnly: true, target: {namespaces: [default]}}
"#;
    assert!(apply(yaml).ok);

    let first = wait_for("the first scheduled run", Duration::from_secs(75), || {
        runs().into_iter().next()
    });
    assert_eq!(
        kubectl(&["get", "dcf", &first, "-o", "jsonpath={.spec.zone}"], None).stdout,
        "zone-b",
        "zone rotation picks from spec.zones"
    );
    assert_eq!(
        kubectl(
            &[
                "get",
                "dcf",
                &first,
                "-o",
                "jsonpath={.metadata.labels.drill}"
            ],
            None
        )
        .stdout,
        "scheduled"
    );
    wait_phase(&first, "ZoneDown", Duration::from_secs(60));
    let tick = last_schedule_time();

    // The next tick comes while the first run is still dark: it is skipped.
    wait_for(
        "the next tick to be skipped",
        Duration::from_secs(75),
        || {
            let now = last_schedule_time();
            (now != tick).then_some(())
        },
    );
    assert_eq!(
        runs(),
        std::slice::from_ref(&first),
        "Forbid: no second run while the first is active"
    );
    assert_eq!(dcf_field(&first, ".status.phase"), "ZoneDown");
    let events = kubectl(
        &[
            "get",
            "events",
            "-A",
            "--field-selector",
            "involvedObject.name=every-minute",
            "-o",
            "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
        ],
        None,
    )
    .stdout;
    assert!(
        events.contains("Skipped") && events.contains("concurrencyPolicy Forbid"),
        "{events}"
    );
    let active = kubectl(
        &[
            "get",
            "dcfs",
            "every-minute",
            "-o",
            "jsonpath={.status.active}",
        ],
        None,
    )
    .stdout;
    assert!(active.contains(&first), "{active}");

    // Deleting the schedule deletes its runs; their finalizer restores the zone.
    kubectl(
        &[
            "delete",
            "dcfs",
            "every-minute",
            "--wait=true",
            "--timeout=60s",
        ],
        None,
    )
    .expect_ok("delete schedule");
    wait_for(
        "the scheduled run to be garbage-collected",
        Duration::from_secs(90),
        || runs().is_empty().then_some(()),
    );
    assert!(
        firedrill_traces_on_nodes().is_empty(),
        "{:?}",
        firedrill_traces_on_nodes()
    );
}
