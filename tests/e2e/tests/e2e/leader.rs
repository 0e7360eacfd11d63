//! Leader election: with two operators running, one acts and the other stands
//! by; when the leader dies mid-drill the standby takes over and finishes the
//! drill; a graceful stop hands the Lease over at once. A leader whose Lease
//! is taken mid-injection exits naming the drill it leaves holding a zone,
//! and the next operator resumes that drill.

use firedrill_e2e::*;
use std::time::{Duration, Instant};

fn lease(path: &str) -> String {
    kubectl(
        &[
            "-n",
            "default",
            "get",
            "lease",
            "firedrill-operator",
            "-o",
            &format!("jsonpath={{{path}}}"),
        ],
        None,
    )
    .stdout
}

/// `firedrill_leader` from an operator's /metrics.
fn leader_gauge(op: &Operator) -> String {
    http_get(&op.metrics_addr(), "/metrics")
        .lines()
        .find_map(|l| l.strip_prefix("firedrill_leader "))
        .unwrap_or("missing")
        .to_string()
}

fn wait_log(op: &Operator, what: &str, timeout: Duration) {
    wait_for(what, timeout, || op.log_text().contains(what).then_some(()));
}

#[test]
fn one_operator_leads_a_standby_takes_over_mid_drill_and_a_graceful_stop_hands_over_at_once() {
    let _lock = zones_lock();
    let ns = setup_chat_and_login("e2e-leader");
    let short = ["--leader-elect-lease-duration=4s"];
    let mut a = Operator::start(&short);
    wait_log(&a, "became the leader", Duration::from_secs(30));
    let mut b = Operator::start(&short);
    wait_log(
        &b,
        "standing by: another operator is the leader",
        Duration::from_secs(30),
    );
    assert!(lease(".spec.holderIdentity").ends_with(&format!("_{}", a.pid())));
    assert_eq!(leader_gauge(&a), "1");
    assert_eq!(leader_gauge(&b), "0");
    let transitions: i64 = lease(".spec.leaseTransitions").parse().unwrap_or(0);

    let exp = Experiment("leader".into());
    let drill = Drill::new("leader", "zone-a")
        .duration("10s")
        .namespace(&ns.0);
    assert!(apply(&drill.yaml()).ok);
    wait_phase("leader", "ZoneDown", Duration::from_secs(60));
    assert!(
        !b.log_text().contains("reconciled"),
        "the standby acted while another operator led:\n{}",
        b.log_text()
    );

    // The leader keeps renewing.
    let renewed = lease(".spec.renewTime");
    std::thread::sleep(Duration::from_secs(2));
    assert_ne!(
        lease(".spec.renewTime"),
        renewed,
        "the leader renews its Lease"
    );
    assert!(lease(".spec.holderIdentity").ends_with(&format!("_{}", a.pid())));
    assert!(
        !a.log_text().contains("lost leadership"),
        "{}",
        a.log_text()
    );

    // The leader dies; the standby takes over once the Lease runs out.
    a.crash();
    let crashed = Instant::now();
    wait_log(&b, "became the leader", Duration::from_secs(30));
    let took_over = crashed.elapsed();
    eprintln!("the standby took over {took_over:?} after the leader was killed (4s lease)");
    assert!(
        took_over <= Duration::from_secs(4 + 6),
        "took over after {took_over:?}; the lease lasts 4s"
    );
    assert!(lease(".spec.holderIdentity").ends_with(&format!("_{}", b.pid())));
    assert_eq!(leader_gauge(&b), "1");
    assert!(lease(".spec.leaseTransitions").parse::<i64>().unwrap() > transitions);
    wait_completed("leader", 90);
    assert_eq!(
        dcf_field("leader", ".status.phase"),
        "Completed",
        "{}",
        dcf_field("leader", ".status.reason")
    );
    assert_zone_restored();
    drop(exp);

    // A graceful stop releases the Lease: the next operator leads at once,
    // without waiting out the (default 15s) lease duration.
    assert!(b.stop().is_some_and(|s| s.success()));
    assert_eq!(lease(".spec.holderIdentity"), "");
    let started = Instant::now();
    let c = Operator::start(&[]);
    wait_log(&c, "became the leader", Duration::from_secs(30));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(lease(".spec.holderIdentity").ends_with(&format!("_{}", c.pid())));
}

#[test]
fn a_leader_that_loses_its_lease_mid_injection_names_the_drill_left_and_the_next_resumes_it() {
    let _lock = zones_lock();
    let ns = setup_chat_and_login("e2e-leader-lost");
    let args = [
        "--leader-elect-lease-duration=4s",
        "--debug-inject-pause=3s",
    ];
    let mut a = Operator::start(&args);
    wait_log(&a, "became the leader", Duration::from_secs(30));
    let exp = Experiment("lost".into());
    let drill = Drill::new("lost", "zone-a").duration("5s").namespace(&ns.0);
    assert!(apply(&drill.yaml()).ok);
    wait_phase("lost", "Injecting", Duration::from_secs(60));

    // Someone else takes the Lease while the zone is going down.
    kubectl(
        &[
            "-n",
            "default",
            "patch",
            "lease",
            "firedrill-operator",
            "--type=merge",
            "-p",
            r#"{"spec":{"holderIdentity":"another-operator"}}"#,
        ],
        None,
    )
    .expect_ok("taking the Lease");
    let status = wait_for("the leader to exit", Duration::from_secs(20), || a.exited());
    let exited = Instant::now();
    let log = a.log_text();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("lost leadership (the lease is held by another-operator)"),
        "{log}"
    );
    assert!(
        log.contains("left mid-drill with the zone held: lost (Injecting, zone zone-a)"),
        "the exit names the drill and its zone:\n{log}"
    );
    assert!(log.contains("when an operator leads again"), "{log}");

    // The next operator waits the taken Lease out, leads, and finishes the drill.
    let b = Operator::start(&args);
    wait_log(&b, "became the leader", Duration::from_secs(30));
    eprintln!(
        "a new operator led {:?} after the old one exited (a 4s lease taken by another holder)",
        exited.elapsed()
    );
    wait_completed("lost", 120);
    eprintln!(
        "the drill completed {:?} after the old leader exited",
        exited.elapsed()
    );
    assert_eq!(
        dcf_field("lost", ".status.phase"),
        "Completed",
        "{}",
        dcf_field("lost", ".status.reason")
    );
    assert_zone_restored();
    drop(exp);
}
