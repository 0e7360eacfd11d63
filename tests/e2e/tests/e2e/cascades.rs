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
    let dir = std::env::temp_dir().join(format!("firedrill-cascade-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cascade.yaml");
    std::fs::write(&file, &manifest).unwrap();

    // Before anything is touched: the plan reads the gateway's env.
    let (code, out, err) = firedrill(&["plan", "-f", file.to_str().unwrap(), "-o", "json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let plan: Value = serde_json::from_str(&out).unwrap();
    let prediction = |slo: &str| {
        plan["plan"]["sloPredictions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["slo"] == slo)
            .cloned()
            .unwrap_or_else(|| panic!("no prediction for {slo}: {plan:#}"))
    };
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
    let slo = |name: &str| {
        st["slos"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name}: {st:#}"))
    };
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
