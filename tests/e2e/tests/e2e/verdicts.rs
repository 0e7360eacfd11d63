//! Verdicts that can be trusted: the plan predicts the replacements the
//! scheduler will refuse, the run observes exactly that, each SLO's cause
//! names only what backs it, and availability is weighted by time.

use firedrill_e2e::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const PIN_A: &str = "      nodeSelector: {topology.kubernetes.io/zone: zone-a}";

fn slo(name: &str, ns: &str, svc: &str, need: u32) -> Slo {
    Slo::new(name, "30s")
        .interval("200ms")
        .service(ns, svc)
        .min_ready_endpoints(need)
}

/// Pods of `app` in `ns` that the scheduler could not place, with its message.
fn unschedulable(ns: &str, app: &str) -> Vec<String> {
    kubectl_json(&["-n", ns, "get", "pods", "-l", &format!("app={app}")])["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| {
            p["status"]["conditions"].as_array()?.iter().find_map(|c| {
                (c["type"] == "PodScheduled" && c["reason"] == "Unschedulable")
                    .then(|| c["message"].as_str().unwrap_or("").to_string())
            })
        })
        .collect()
}

#[test]
fn the_plan_predicts_the_replacements_the_scheduler_refuses_and_the_run_observes_them() {
    let _lock = zones_lock();
    install_crds();
    let ns = Namespace::create("e2e-shop");
    let spread = "      topologySpreadConstraints: [{maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: web}}}]";
    for m in [
        service_and_deployment(&ns.0, "web", 6, "", spread),
        service_and_deployment(
            &ns.0,
            "api",
            3,
            "",
            &spread_over_zones("api", "ScheduleAnyway"),
        ),
        service_and_deployment(&ns.0, "cart", 1, "", PIN_A),
    ] {
        apply(&m).expect_ok("the shop");
    }
    wait_for("the shop Ready", Duration::from_secs(120), || {
        (ready_endpoints(&ns.0, "web") == 6
            && ready_endpoints(&ns.0, "api") == 3
            && ready_endpoints(&ns.0, "cart") == 1)
            .then_some(())
    });
    let manifest = Drill::new("shop", "zone-a")
        .duration("12s")
        .baseline("2s")
        .namespace(&ns.0)
        .slo(slo("frontend", &ns.0, "web", 6))
        .slo(slo("api", &ns.0, "api", 2))
        .slo(slo("cart", &ns.0, "cart", 1))
        .yaml();

    // Before anything is touched: what the plan predicts.
    let dir = std::env::temp_dir().join(format!("firedrill-shop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("shop.yaml");
    std::fs::write(&file, &manifest).unwrap();
    let (code, out, err) = firedrill(&["plan", "-f", file.to_str().unwrap(), "-o", "json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let plan: Value = serde_json::from_str(&out).unwrap();
    let unplaceable = plan["plan"]["unplaceable"].as_array().unwrap();
    let web = unplaceable
        .iter()
        .find(|u| u["workload"] == format!("Deployment {}/web", ns.0))
        .unwrap_or_else(|| panic!("the plan misses web: {unplaceable:#?}"));
    assert_eq!(
        (web["lost"].as_i64(), web["unplaceable"].as_i64()),
        (Some(2), Some(2))
    );
    assert!(
        web["rule"]
            .as_str()
            .unwrap()
            .contains("topology spread constraint"),
        "{web}"
    );
    assert!(
        unplaceable
            .iter()
            .all(|u| u["workload"] != format!("Deployment {}/api", ns.0)),
        "api can move: {unplaceable:#?}"
    );
    let predicted: Vec<(String, String)> = plan["plan"]["sloPredictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["slo"].as_str().unwrap().to_string(),
                p["verdict"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        predicted,
        [
            ("frontend".to_string(), "Failed".to_string()),
            ("api".to_string(), "Passed".to_string()),
            ("cart".to_string(), "Failed".to_string())
        ]
    );
    let (_, table, _) = firedrill(&["plan", "-f", file.to_str().unwrap()]);
    assert!(
        table.contains("WORKLOADS WHOSE REPLACEMENTS CANNOT BE SCHEDULED (2)"),
        "{table}"
    );

    // The run.
    let _op = Operator::start(&[]);
    let _exp = Experiment("shop".into());
    apply(&manifest).expect_ok("the drill");
    wait_phase("shop", "ZoneDown", Duration::from_secs(60));
    let pending = wait_for(
        "web's replacements refused",
        Duration::from_secs(30),
        || {
            let now = unschedulable(&ns.0, "web");
            (now.len() == 2).then_some(now)
        },
    );
    assert!(
        pending
            .iter()
            .all(|m| m.contains("didn't match pod topology spread constraints")),
        "{pending:?}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        unschedulable(&ns.0, "web").len(),
        2,
        "exactly what the plan predicted"
    );
    assert!(
        unschedulable(&ns.0, "api").is_empty(),
        "api's replacements were placed"
    );
    wait_completed("shop", 90);

    let st = kubectl_json(&["get", "dcf", "shop"])["status"].clone();
    assert_eq!(
        st["plan"]["replacementsUnschedulable"], 3,
        "{:#}",
        st["plan"]
    );
    let slos: Vec<&Value> = st["slos"].as_array().unwrap().iter().collect();
    let by = |n: &str| slos.iter().find(|s| s["name"] == n).copied().unwrap();
    assert_eq!(by("frontend")["verdict"], "Failed");
    assert_eq!(by("frontend")["predicted"], "Failed");
    let cause = by("frontend")["cause"].as_str().unwrap();
    assert!(
        cause.contains("2 replacement pods Pending, unschedulable")
            && cause.contains("topology spread constraints"),
        "{cause}"
    );
    assert!(
        !cause.contains("cart"),
        "frontend's failure blamed on the cart: {cause}"
    );
    assert_eq!(by("cart")["verdict"], "Failed");
    let cart_cause = by("cart")["cause"].as_str().unwrap();
    assert!(
        cart_cause.contains("pinned to zone-a by nodeSelector"),
        "{cart_cause}"
    );
    assert!(!cart_cause.contains("web"), "{cart_cause}");
    assert_eq!(by("api")["verdict"], "Passed");
    assert_eq!(by("api")["predicted"], "Passed");
    let reason = st["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("Failed: frontend:") && reason.contains("topology spread"),
        "{reason}"
    );

    let (_, report, _) = firedrill(&["report", "shop"]);
    assert!(report.contains("PREDICTED"), "{report}");
    let frontend_line = report.lines().find(|l| l.starts_with("frontend")).unwrap();
    assert!(frontend_line.contains(" yes "), "{frontend_line}");
    eprintln!(
        "plan: web 2 of 2 replacements unschedulable (topology spread), cart 1 of 1 (nodeSelector); run: {} web pods Pending with the scheduler's message; SLOs frontend {} (predicted {}), api {} (predicted {}), cart {} (predicted {})",
        pending.len(),
        by("frontend")["verdict"],
        by("frontend")["predicted"],
        by("api")["verdict"],
        by("api")["predicted"],
        by("cart")["verdict"],
        by("cart")["predicted"]
    );
    assert_zone_restored();
    let _ = std::fs::remove_dir_all(dir);
}

/// An HTTP server on loopback that answers 200, or, while `hole` is set,
/// accepts connections and never answers.
fn black_hole_server(hole: Arc<AtomicBool>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = vec![];
        for sock in l.incoming() {
            let Ok(mut sock) = sock else { continue };
            if hole.load(Ordering::Relaxed) {
                held.push(sock);
                continue;
            }
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                let _ = sock.read(&mut buf);
                let _ = sock.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            });
        }
    });
    port
}

#[test]
fn a_black_hole_counts_as_down_for_every_second_it_lasts() {
    let _lock = zones_lock();
    install_crds();
    let hole = Arc::new(AtomicBool::new(false));
    let port = black_hole_server(hole.clone());
    let _op = Operator::start(&[]);
    let _exp = Experiment("black-hole".into());
    let manifest = Drill::new("black-hole", "zone-a")
        .duration("20s")
        .baseline("2s")
        .namespace("default")
        .slo(
            Slo::new("api", "1m")
                .interval("500ms")
                .timeout("3s")
                .http(&format!("http://127.0.0.1:{port}/")),
        )
        .yaml();
    apply(&manifest).expect_ok("drill");
    wait_phase("black-hole", "ZoneDown", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(4));
    hole.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(9));
    hole.store(false, Ordering::Relaxed);
    wait_completed("black-hole", 60);
    let slo = kubectl_json(&["get", "dcf", "black-hole"])["status"]["slos"][0].clone();
    let avail = slo["availabilityPercent"].as_f64().unwrap();
    let (samples, failed) = (
        slo["samples"].as_f64().unwrap(),
        slo["failures"].as_f64().unwrap(),
    );
    let by_count = 100.0 * (samples - failed) / samples;
    eprintln!(
        "black hole of 9 s in a 20 s window: availability {avail}% by time, {by_count:.1}% by sample count ({samples} samples, {failed} failed)"
    );
    assert!(
        by_count > 80.0,
        "few samples fail: each hangs 3 s ({slo:#})"
    );
    assert!(
        (30.0..=65.0).contains(&avail),
        "availability weighs the 9 s of the black hole: {avail}% ({slo:#})"
    );
}
