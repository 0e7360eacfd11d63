//! Cascades nobody declared: a gateway spread over the three zones calls a
//! token Service (its address in an env var, as an application carries it)
//! whose only pod is pinned to zone-a, and no `dependsOn` says so. The plan
//! predicts the gateway's failure through the token Service, from the
//! gateway's own configuration; the verdict attributes the failure to it
//! from the endpoints it watched (observed, not declared). A cache the
//! gateway also calls keeps serving from the other zones, and is blamed for
//! nothing; the cache's SLO declares a dependency on the token Service's
//! SLO that it does not have, and the verdict says it was not observed.

use firedrill_e2e::*;
use serde_json::Value;
use std::time::Duration;

/// A served Deployment (the testbed's data plane runs a process for each
/// pod, answering 200 while every `*_URL` it carries answers) and its
/// Service (port 80 → 8080).
fn served(ns: &str, name: &str, replicas: u32, env: &[(&str, String)], placement: &str) -> String {
    let env: Vec<String> = env
        .iter()
        .map(|(k, v)| format!("{{name: {k}, value: '{v}'}}"))
        .collect();
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
      annotations: {{testbed.firedrill.dev/startup: 1s}}
    spec:
{placement}
      containers: [{{name: app, image: registry.invalid/{name}:1, ports: [{{containerPort: 8080}}], env: [{env}], resources: {{requests: {{cpu: 100m, memory: 64Mi}}}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec: {{selector: {{app: {name}}}, ports: [{{port: 80, targetPort: 8080}}]}}
"#,
        env = env.join(", ")
    )
}

#[test]
fn an_undeclared_cascade_is_predicted_from_configuration_and_attributed_from_what_was_watched() {
    let _lock = zones_lock();
    install_crds();
    let ns = Namespace::create("e2e-cascade");
    let n = &ns.0;
    let pinned = "      nodeSelector: {topology.kubernetes.io/zone: zone-a}";
    for m in [
        served(n, "tokens", 1, &[], pinned),
        served(
            n,
            "cache",
            3,
            &[],
            &spread_over_zones("cache", "DoNotSchedule"),
        ),
        served(
            n,
            "gateway",
            3,
            &[
                ("TOKENS_URL", format!("http://tokens.{n}.svc/healthz")),
                ("CACHE_URL", format!("http://cache.{n}.svc/healthz")),
            ],
            &spread_over_zones("gateway", "DoNotSchedule"),
        ),
    ] {
        apply(&m).expect_ok("gateway, tokens and cache");
    }
    wait_for("the fleet Ready", Duration::from_secs(120), || {
        (ready_endpoints(n, "gateway") == 3
            && ready_endpoints(n, "tokens") == 1
            && ready_endpoints(n, "cache") == 3)
            .then_some(())
    });
    let probe = |name: &str| {
        Slo::new(name, "10s")
            .interval("500ms")
            .http(&format!("http://{name}.{n}.svc/healthz"))
    };
    let manifest = Drill::new("cascade", "zone-a")
        .duration("12s")
        .baseline("2s")
        .namespace(n)
        .slo(probe("gateway"))
        .slo(probe("tokens"))
        .slo(probe("cache").depends_on("tokens"))
        .yaml();
    // Before anything is touched: the plan reads the gateway's env.
    let (dir, file, plan) = planned("cascade", &manifest);
    let prediction = |slo: &str| named(&plan["plan"]["sloPredictions"], "slo", slo);
    let gateway = prediction("gateway");
    assert_eq!(gateway["verdict"], "Failed", "{gateway:#}");
    let why = gateway["why"].as_str().unwrap();
    assert!(
        why.starts_with(&format!(
            "predicted Failed via tokens.{n}.svc (env TOKENS_URL of Deployment {n}/gateway): Service {n}/tokens keeps 0 ready pods outside zone-a"
        )),
        "{why}"
    );
    assert_eq!(prediction("cache")["verdict"], "Passed");
    let edges = plan["plan"]["dependencies"]["edges"].as_array().unwrap();
    let to = |svc: &str| {
        edges.iter().any(|e| {
            e["from"] == format!("Deployment {n}/gateway") && e["to"] == format!("{n}/{svc}")
        })
    };
    assert!(to("tokens") && to("cache"), "{edges:#?}");
    let (code, dot, _) = firedrill(&["plan", "-f", file.to_str().unwrap(), "-o", "dot"]);
    assert_eq!(code, 0);
    assert!(
        dot.starts_with("digraph dependencies {")
            && dot.contains(&format!(
                "\"Deployment {n}/gateway\" -> \"Service {n}/tokens\""
            ))
            && dot.contains(&format!("\"Service {n}/tokens\" [color=red")),
        "{dot}"
    );
    let (_, table, _) = firedrill(&["plan", "-f", file.to_str().unwrap()]);
    assert!(table.contains("SERVICE DEPENDENCIES"), "{table}");

    // The run: no dependsOn anywhere.
    let _op = Operator::start(&[]);
    let _exp = Experiment("cascade".into());
    apply(&manifest).expect_ok("the drill");
    wait_completed("cascade", 120);
    let st = kubectl_json(&["get", "dcf", "cascade"])["status"].clone();
    let slo = |name: &str| named(&st["slos"], "name", name);
    let gw = slo("gateway");
    assert_eq!(gw["verdict"], "Failed", "{gw:#}");
    assert_eq!(gw["predicted"], "Failed", "{gw:#}");
    let deps = gw["dependencies"].as_array().cloned().unwrap_or_default();
    assert_eq!(deps.len(), 1, "only the token Service is blamed: {gw:#}");
    assert_eq!(deps[0]["name"], format!("Service {n}/tokens"));
    assert_eq!(deps[0]["finding"], "observed, not declared");
    let evidence = deps[0]["evidence"].as_str().unwrap();
    assert!(
        evidence.contains("had no ready endpoint from")
            && evidence.contains("; SLO gateway failed from"),
        "{evidence}"
    );
    let cause = gw["cause"].as_str().unwrap();
    assert!(
        cause.starts_with(&format!(
            "failed with Service {n}/tokens (observed, not declared)"
        )),
        "{cause}"
    );
    let tokens = slo("tokens");
    assert_eq!(tokens["verdict"], "Failed", "{tokens:#}");
    assert!(
        tokens["dependencies"]
            .as_array()
            .is_none_or(|d| d.is_empty()),
        "the token Service's own failure is blamed on nothing else: {tokens:#}"
    );
    // The cache kept serving: blamed for nothing, and its declared
    // dependency on the tokens SLO was not observed.
    let cache = slo("cache");
    assert_eq!(cache["verdict"], "Passed", "{cache:#}");
    let declared = cache["dependencies"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(declared.len(), 1, "{cache:#}");
    assert_eq!(
        declared[0]["name"],
        format!("Service {n}/tokens (SLO tokens)")
    );
    assert_eq!(declared[0]["finding"], "declared, not observed");

    let (_, report, _) = firedrill(&["report", "cascade"]);
    assert!(
        report.contains(&format!(
            "dependency Service {n}/tokens: observed, not declared"
        )),
        "{report}"
    );
    let (_, json, _) = firedrill(&["report", "cascade", "-o", "json"]);
    let json: Value = serde_json::from_str(&json).unwrap();
    assert!(
        json["serviceEndpoints"][format!("{n}/tokens")].is_array(),
        "the report carries the endpoint timelines: {:#}",
        json["serviceEndpoints"]
    );
    eprintln!("plan: {why}\nverdict: {cause}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Nine Services, three of them singletons pinned to zone-a, and the
/// callers that cascade from them: a gateway calls tokens; orders call the
/// ledger and a storefront calls orders (two hops); search calls an index.
/// A cache spread over the zones names a retired Service only in a note.
/// The three singletons die together and come back together when the zone
/// does, so their outages overlap each other and every caller's: the plan
/// predicts each cascade from the callers' own env, with its path, and the
/// verdict blames each caller on its own root alone, never on the two that
/// went down beside it, and blames the cache for nothing.
#[test]
fn three_cascades_among_nine_services_are_each_predicted_and_blamed_on_their_own_root() {
    let _lock = zones_lock();
    install_crds();
    let ns = Namespace::create("e2e-cascades9");
    let n = &ns.0;
    let pinned = "      nodeSelector: {topology.kubernetes.io/zone: zone-a}";
    let spread = |name: &str| spread_over_zones(name, "DoNotSchedule");
    let url = |svc: &str| format!("http://{svc}.{n}.svc/healthz");
    for m in [
        served(n, "tokens", 1, &[], pinned),
        served(n, "ledger", 1, &[], pinned),
        served(n, "index", 1, &[], pinned),
        served(n, "legacy", 1, &[], pinned),
        served(
            n,
            "cache",
            3,
            &[(
                "MIGRATION_NOTE",
                format!("moved off legacy.{n}.svc in 2025; nothing calls it"),
            )],
            &spread("cache"),
        ),
        served(
            n,
            "gateway",
            3,
            &[("TOKENS_URL", url("tokens")), ("CACHE_URL", url("cache"))],
            &spread("gateway"),
        ),
        served(
            n,
            "orders",
            3,
            &[("LEDGER_URL", url("ledger"))],
            &spread("orders"),
        ),
        served(
            n,
            "storefront",
            3,
            &[("ORDERS_URL", url("orders")), ("CACHE_URL", url("cache"))],
            &spread("storefront"),
        ),
        served(
            n,
            "search",
            3,
            &[("INDEX_URL", url("index"))],
            &spread("search"),
        ),
    ] {
        apply(&m).expect_ok("the nine Services");
    }
    let fleet = [
        ("tokens", 1),
        ("ledger", 1),
        ("index", 1),
        ("legacy", 1),
        ("cache", 3),
        ("gateway", 3),
        ("orders", 3),
        ("storefront", 3),
        ("search", 3),
    ];
    wait_for("the nine Services Ready", Duration::from_secs(180), || {
        fleet
            .iter()
            .all(|(s, k)| ready_endpoints(n, s) == *k)
            .then_some(())
    });
    let callers = ["gateway", "orders", "storefront", "search", "cache"];
    let mut drill = Drill::new("cascades9", "zone-a")
        .duration("12s")
        .baseline("2s")
        .namespace(n);
    for c in callers {
        drill = drill.slo(Slo::new(c, "10s").interval("500ms").http(&url(c)));
    }
    let manifest = drill.yaml();
    // The plan, before anything is touched.
    let (dir, _, plan) = planned("cascades9", &manifest);
    let predicted = |slo: &str| named(&plan["plan"]["sloPredictions"], "slo", slo);
    let roots = [
        ("gateway", "tokens", vec!["tokens"]),
        ("orders", "ledger", vec!["ledger"]),
        ("storefront", "ledger", vec!["orders", "ledger"]),
        ("search", "index", vec!["index"]),
    ];
    for (slo, root, path) in &roots {
        let p = predicted(slo);
        assert_eq!(p["verdict"], "Failed", "{slo}: {p:#}");
        let why = p["why"].as_str().unwrap();
        assert!(
            why.starts_with("predicted Failed via ")
                && why.contains(&format!(
                    "Service {n}/{root} keeps 0 ready pods outside zone-a"
                )),
            "{slo}: {why}"
        );
        let via: Vec<String> = path.iter().map(|s| format!("{n}/{s}")).collect();
        assert_eq!(p["via"], serde_json::json!(via), "{slo}: {p:#}");
    }
    let storefront_why = predicted("storefront")["why"].as_str().unwrap().to_string();
    assert!(
        storefront_why.contains(&format!(
            "(env ORDERS_URL of Deployment {n}/storefront) -> ledger.{n}.svc (env LEDGER_URL of Deployment {n}/orders)"
        )),
        "two hops, both named: {storefront_why}"
    );
    assert_eq!(predicted("cache")["verdict"], "Passed");
    let warnings = plan["plan"]["warnings"].to_string();
    assert!(
        warnings.contains("SLO cache at risk via legacy"),
        "the note is a risk, not a cascade: {warnings}"
    );

    // The run.
    let _op = Operator::start(&[]);
    let _exp = Experiment("cascades9".into());
    apply(&manifest).expect_ok("the drill");
    wait_completed("cascades9", 180);
    let st = kubectl_json(&["get", "dcf", "cascades9"])["status"].clone();
    let slo = |name: &str| named(&st["slos"], "name", name);
    let mut lines = vec![];
    for (name, root, path) in &roots {
        let s = slo(name);
        assert_eq!(s["verdict"], "Failed", "{name}: {s:#}");
        assert_eq!(s["predicted"], "Failed", "{name}: {s:#}");
        let blamed: Vec<String> = s["dependencies"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|d| d["name"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(
            blamed,
            [format!("Service {n}/{root}")],
            "{name} is blamed on {root} alone: {s:#}"
        );
        let evidence = s["dependencies"][0]["evidence"].as_str().unwrap();
        let chain: Vec<String> = path.iter().map(|p| format!("{n}/{p}")).collect();
        assert!(
            evidence.contains("had no ready endpoint from")
                && evidence.ends_with(&format!("(the plan's path: {})", chain.join(" -> "))),
            "{name}: {evidence}"
        );
        lines.push(format!(
            "{name}: {}",
            s["cause"].as_str().unwrap_or_default()
        ));
    }
    let cache = slo("cache");
    assert_eq!(cache["verdict"], "Passed", "{cache:#}");
    assert!(
        cache["dependencies"]
            .as_array()
            .is_none_or(|d| d.is_empty()),
        "the cache is blamed on nothing: {cache:#}"
    );
    // The three roots' outages overlap (by far more than an interval): the
    // callers were told apart by the plan's paths, not by the roots having
    // been down at different times.
    let windows: Vec<(f64, f64)> = [
        ("gateway", "tokens"),
        ("orders", "ledger"),
        ("search", "index"),
    ]
    .iter()
    .map(|(caller, root)| {
        let e = slo(caller)["dependencies"][0]["evidence"]
            .as_str()
            .unwrap()
            .to_string();
        outage_window(&e).unwrap_or_else(|| panic!("{root}: no window in {e}"))
    })
    .collect();
    let latest_start = windows.iter().map(|w| w.0).fold(f64::MIN, f64::max);
    let earliest_start = windows.iter().map(|w| w.0).fold(f64::MAX, f64::min);
    let earliest_end = windows.iter().map(|w| w.1).fold(f64::MAX, f64::min);
    assert!(
        latest_start - earliest_start < 2.0 && earliest_end - latest_start > 5.0,
        "the roots went down together and stayed down together: {windows:?}"
    );
    let json = firedrill(&["report", "cascades9", "-o", "json"]).1;
    let json: Value = serde_json::from_str(&json).unwrap();
    for root in ["tokens", "ledger", "index"] {
        assert!(
            json["serviceEndpoints"][format!("{n}/{root}")].is_array(),
            "{root}'s endpoints were recorded: {:#}",
            json["serviceEndpoints"]
        );
    }
    // The HTML report draws the graph, the three roots marked lost.
    let html = dir.join("cascades9.html");
    let (code, _, err) = firedrill(&["report", "cascades9", "--html", html.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let page = std::fs::read_to_string(&html).unwrap();
    let svg = &page[page
        .find("<svg class=\"deps\"")
        .expect("the graph is drawn")..];
    let svg = &svg[..svg.find("</svg>").unwrap()];
    for root in ["tokens", "ledger", "index", "legacy"] {
        assert!(
            svg.contains(&format!(">Service {n}/{root}: LOST</text>")),
            "{root} marked lost: {svg}"
        );
    }
    assert!(svg.contains(&format!(">Service {n}/cache</text>")), "{svg}");
    assert!(
        svg.contains("stroke-dasharray"),
        "the note is drawn dashed: {svg}"
    );
    eprintln!("{}", lines.join("\n"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The Service outage an evidence line gives (`... had no ready endpoint
/// from 2026-12-01T14:20:03.5Z to 2026-12-01T14:20:31Z; ...`), as seconds
/// of the day; an outage still on at the end of the dark window (`to
/// never`) ends at infinity.
fn outage_window(evidence: &str) -> Option<(f64, f64)> {
    let rest = evidence.split_once(" from ")?.1;
    let (from, rest) = rest.split_once(" to ")?;
    let to = rest.split(';').next()?.trim();
    let secs = |t: &str| -> Option<f64> {
        let clock = t.split_once('T')?.1.trim_end_matches('Z');
        let mut parts = clock.split(':');
        let h: f64 = parts.next()?.parse().ok()?;
        let m: f64 = parts.next()?.parse().ok()?;
        let s: f64 = parts.next()?.parse().ok()?;
        Some(h * 3600.0 + m * 60.0 + s)
    };
    let end = if to.starts_with("never") {
        f64::INFINITY
    } else {
        secs(to)?
    };
    Some((secs(from)?, end))
}

/// Write `manifest` to a directory of its own and plan it with
/// `firedrill plan -o json`: the directory, the file and the plan.
fn planned(name: &str, manifest: &str) -> (std::path::PathBuf, std::path::PathBuf, Value) {
    let dir = std::env::temp_dir().join(format!("firedrill-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, manifest).unwrap();
    let (code, out, err) = firedrill(&["plan", "-f", file.to_str().unwrap(), "-o", "json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    (dir, file, serde_json::from_str(&out).unwrap())
}

/// The item of the array `list` whose `key` is `name`.
fn named(list: &Value, key: &str, name: &str) -> Value {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list:#}"))
        .iter()
        .find(|p| p[key] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no {key} {name} in {list:#}"))
}
