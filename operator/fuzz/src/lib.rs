//! The properties the fuzz targets check, on any input bytes. They are also
//! run on stable Rust by `operator/tests/properties.rs`, over seeded
//! pseudo-random inputs and every file kept in `operator/fuzz/regressions/`.
//!
//! - `strings`: the parsers of user-written text (durations, cron schedules,
//!   label selectors, comparisons, quantities, hosts files, URLs, Prometheus
//!   answers) never panic; whatever the CRD's cron rule lets through, the
//!   operator can parse.
//! - `spec`: any object the schema describes (built by walking the generated
//!   CRD schema) is either accepted or refused with a reason, never a panic;
//!   every report renders, and user text never reaches HTML or JUnit as
//!   markup or as characters XML forbids.
//! - `timeline`: the bounded recording measures any window between two marks
//!   exactly as the raw samples do, however many samples were merged, and
//!   survives being stored and read back.
//! - `plan`: any cluster (odd labels, broken selectors, impossible affinity,
//!   bad quantities) is planned without a panic; the plan takes exactly the
//!   zone's nodes, and never puts a spared pod in scope.

use arbitrary::{Result, Unstructured};
use firedrill::api::{DataCenterFailure, GuardSpec, TargetSpec, parse_duration};
use firedrill::plan::{self, Request, Snapshot};
use firedrill::probe::Recording;
use firedrill::slo::{Outcome, Timeline};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResourceExt;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

/// Text a user might write, or get wrong, in any string field.
const WORDS: &[&str] = &[
    "",
    " ",
    "zone-a",
    "zone-b",
    "topology.kubernetes.io/zone",
    "kubernetes.io/hostname",
    "web",
    "shop",
    "kube-system",
    "firedrill",
    "default",
    "0s",
    "1s",
    "10s",
    "250ms",
    "1h30m",
    "-5s",
    "10",
    "1.5s",
    "9999999999999h",
    "2562047h",
    "http://web.shop.svc/healthz",
    "https://web.shop.svc:8443/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fe80::1]/",
    "http://[::1]:80/",
    "http://localhost:9090",
    "ftp://x",
    "http://",
    "http://a b/",
    "web.shop.svc",
    "169.254.169.254",
    "up{job=\"web\"}",
    "> 0.5",
    "<= 1",
    "== 3",
    ">= NaN",
    "bogus",
    "app=web,tier!=db",
    "env in (a,b),!legacy",
    "app in (",
    "<x-fuzz>",
    "</testcase><x-fuzz>",
    "\"'&amp;",
    "\u{1}\u{b}\u{1f}\u{fffe}",
    "ümlaut 🔥",
    "a.b-c_d/e",
    "0 10 * * 3",
    "@daily",
    "Asia/Seoul",
    "CordonAndKill",
    "PowerLoss",
    "Passed",
    "Failed",
    "Completed",
    "Injecting",
];

fn word(u: &mut Unstructured) -> Result<String> {
    Ok(match u.int_in_range(0..=9u8)? {
        0 => u.arbitrary::<String>()?,
        1 => "x".repeat(u.int_in_range(0..=600usize)?),
        _ => u.choose(WORDS)?.to_string(),
    })
}

// ---------------------------------------------------------------------------
// strings
// ---------------------------------------------------------------------------

/// Parsers of user text: no panics; the cron rule and the parser agree.
pub fn strings(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let s = s.as_ref();
    if let Ok(d) = parse_duration(s) {
        // A parsed duration can be shown and is never negative.
        let _ = format!("{d:?}");
    }
    static CRON: OnceLock<regex::Regex> = OnceLock::new();
    let cron = CRON.get_or_init(|| regex::Regex::new(&firedrill::api::cron_pattern()).unwrap());
    let parsed = firedrill::schedule::parse_schedule(s);
    if cron.is_match(&s.to_ascii_uppercase()) && firedrill::api::cron_ranges_ascend(s) {
        assert!(
            parsed.is_ok(),
            "the CRD accepts schedule {s:?} but the operator cannot parse it: {:?}",
            parsed.err()
        );
    }
    if parsed.is_ok() {
        let _ = firedrill::schedule::next_after(
            s,
            Some("Asia/Seoul"),
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        );
    }
    let _ = plan::parse_selector(s);
    let _ = firedrill::probe::parse_comparison(s);
    let _ = firedrill::probe::parse_hosts(s);
    let _ = plan::collect::url_host(s);
    let _ = plan::collect::service_of_host(s);
    let q = Quantity(s.to_string());
    let _ = (plan::collect::cpu_millis(&q), plan::collect::bytes(&q));
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        let _ = firedrill::probe::prometheus_value(&v);
    }
}

// ---------------------------------------------------------------------------
// spec
// ---------------------------------------------------------------------------

/// A value for `schema` (an OpenAPI v3 schema as the CRD carries it).
fn from_schema(u: &mut Unstructured, schema: &Value, depth: usize) -> Result<Value> {
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.is_empty()
        && !u.ratio(1, 20)?
    {
        return Ok(u.choose(options)?.clone());
    }
    let ty = schema.get("type").and_then(Value::as_str).unwrap_or("");
    Ok(match ty {
        "object" if depth < 8 => {
            let mut out = serde_json::Map::new();
            let required: BTreeSet<&str> = schema
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, sub) in props {
                    let keep = if required.contains(k.as_str()) {
                        !u.ratio(1, 30)?
                    } else {
                        u.ratio(1, 3)?
                    };
                    if keep {
                        out.insert(k.clone(), from_schema(u, sub, depth + 1)?);
                    }
                }
            }
            if let Some(extra) = schema.get("additionalProperties")
                && extra.is_object()
            {
                for _ in 0..u.int_in_range(0..=3u8)? {
                    out.insert(word(u)?, from_schema(u, extra, depth + 1)?);
                }
            }
            Value::Object(out)
        }
        "array" if depth < 8 => {
            let items = schema.get("items").cloned().unwrap_or(json!({}));
            let n = u.int_in_range(0..=3u8)?;
            let mut out = vec![];
            for _ in 0..n {
                out.push(from_schema(u, &items, depth + 1)?);
            }
            Value::Array(out)
        }
        "string" => json!(word(u)?),
        "integer" => json!(
            u.choose(&[0i64, 1, 2, 3, -1, 100, i32::MAX as i64, i64::MAX])?
                .saturating_add(u.int_in_range(0..=2i64)?)
        ),
        "number" => {
            let f = *u.choose(&[0.0, 0.5, 50.0, 99.9, 100.0, 100.1, -1.0, 1e308, 1e-9])?;
            json!(f)
        }
        "boolean" => json!(u.arbitrary::<bool>()?),
        _ => match u.int_in_range(0..=2u8)? {
            0 => json!(word(u)?),
            1 => json!(u.int_in_range(-2..=100i64)?),
            _ => Value::Null,
        },
    })
}

fn samples(u: &mut Unstructured, t0: i64) -> Result<Timeline> {
    let mut tl = Timeline::with_cap(u.int_in_range(0..=5000i64)?);
    let mut t = t0;
    for _ in 0..u.int_in_range(0..=400u16)? {
        t += *u.choose(&[0i64, 1, 999, 1000, 1001, 70_000])?;
        if u.ratio(1, 15)? {
            tl.mark(t);
        } else {
            tl.push(t, *u.choose(&[Outcome::Ok, Outcome::Fail, Outcome::Error])?);
        }
        if u.ratio(1, 50)? {
            tl.set_error(word(u)?);
        }
    }
    Ok(tl)
}

/// XML 1.0 forbids these characters even escaped.
fn xml_forbidden(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}')
}

/// Any schema-shaped object: refused with a reason or accepted; reports render.
pub fn spec(data: &[u8]) {
    let _ = spec_inner(&mut Unstructured::new(data));
}

fn spec_inner(u: &mut Unstructured) -> Result<()> {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    let schema = SCHEMA.get_or_init(|| {
        let crd = DataCenterFailure::crd();
        serde_json::to_value(
            crd.spec.versions[0]
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap(),
        )
        .unwrap()
    });
    let props = &schema["properties"];
    let obj = json!({
        "apiVersion": "chaos.firedrill.dev/v1alpha1",
        "kind": "DataCenterFailure",
        "metadata": {"name": word(u)?, "namespace": word(u)?, "uid": "u-1"},
        "spec": from_schema(u, &props["spec"], 1)?,
        "status": if u.arbitrary()? { from_schema(u, &props["status"], 1)? } else { Value::Null },
    });
    let Ok(exp) = serde_json::from_value::<DataCenterFailure>(obj) else {
        return Ok(());
    };
    let namespace = if u.arbitrary()? {
        Some("firedrill".to_string())
    } else {
        None
    };
    if let Err(why) = firedrill::probe::check_spec(&exp.spec, &Default::default()) {
        assert!(!why.trim().is_empty(), "refused without a reason");
    }
    match firedrill::spec::parse(&exp.spec, namespace) {
        Ok(p) => {
            // Accepted: the scope and duration are what the spec says.
            assert_eq!(
                p.duration,
                parse_duration(&exp.spec.duration).unwrap(),
                "duration"
            );
        }
        Err(why) => assert!(!why.trim().is_empty(), "refused without a reason"),
    }
    let mut rec = Recording::default();
    for slo in &exp.spec.slos {
        if u.arbitrary()? {
            rec.slos
                .insert(slo.name.clone(), samples(u, 1_700_000_000_000)?);
        }
    }
    let input = firedrill::report::Input::new(&exp, &rec);
    let _ = firedrill::report::table(&input);
    let j = firedrill::report::json(&input);
    serde_json::to_string(&j).unwrap();
    let html = firedrill::report::html(&input);
    assert!(!html.contains("<x-fuzz"), "user text became HTML markup");
    let junit = firedrill::report::junit(&input);
    assert!(!junit.contains("<x-fuzz"), "user text became XML markup");
    if let Some(c) = junit.chars().find(|c| xml_forbidden(*c)) {
        panic!("the JUnit report holds {c:?}, which XML forbids");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// timeline
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Expected {
    counts: [u64; 3],
    ms: [i64; 3],
    time_to_recover_ms: Option<i64>,
    recovered_at: Option<i64>,
    first_failure_at: Option<i64>,
    longest_outage_ms: i64,
}

fn idx(o: Outcome) -> usize {
    match o {
        Outcome::Ok => 0,
        Outcome::Fail => 1,
        Outcome::Error => 2,
    }
}

/// The numbers for `[s, e)` straight from the raw samples: each sample stands
/// from its start until the next one starts, `cap` at most (the last one
/// until `now` at most).
fn expected(raw: &[(i64, Outcome)], cap: i64, s: i64, e: i64, now: i64) -> Expected {
    let mut x = Expected::default();
    // (piece start, piece end, outcome)
    let mut pieces = vec![];
    for (i, &(t, o)) in raw.iter().enumerate() {
        let until = match raw.get(i + 1) {
            Some(&(next, _)) => next,
            None => now.max(s),
        };
        let end = until.min(t + cap).max(t);
        if s <= t && t < e {
            x.counts[idx(o)] += 1;
        }
        let (ps, pe) = (t.max(s), end.min(e));
        if ps < pe || (t == end && s <= t && t < e) {
            x.ms[idx(o)] += (pe - ps).max(0);
            pieces.push((ps, pe, o));
        }
    }
    let Some(&(_, w_end, _)) = pieces.last() else {
        return x;
    };
    let (mut first_ok, mut first_fail, mut last_fail) = (None, None, None);
    let (mut recovered, mut open, mut longest) = (None::<i64>, None::<i64>, 0i64);
    for &(ps, _, o) in &pieces {
        match o {
            Outcome::Ok => {
                first_ok.get_or_insert(ps);
                if let Some(os) = open.take() {
                    longest = longest.max(ps - os);
                }
                if last_fail.is_some() && recovered.is_none() {
                    recovered = Some(ps);
                }
            }
            Outcome::Fail => {
                first_fail.get_or_insert(ps);
                last_fail = Some(ps);
                recovered = None;
                open.get_or_insert(ps);
            }
            Outcome::Error => {}
        }
    }
    x.first_failure_at = first_fail;
    if first_ok.is_none() && first_fail.is_none() {
        return x;
    }
    match (first_fail, recovered) {
        (None, _) => x.time_to_recover_ms = Some(0),
        (Some(_), Some(r)) => {
            x.time_to_recover_ms = Some((r - s).max(0));
            x.recovered_at = Some(r);
        }
        (Some(_), None) => {}
    }
    let window_end = e.min(now.max(s)).max(w_end.min(e));
    if let Some(t) = open {
        longest = longest.max(window_end - t);
    }
    if let Some(f) = first_fail
        && first_ok.is_none_or(|o| f < o)
    {
        longest = longest.max(first_ok.unwrap_or(window_end) - s);
    }
    x.longest_outage_ms = longest.max(0);
    x
}

/// The bounded timeline measures every window between marks exactly.
pub fn timeline(data: &[u8]) {
    let _ = timeline_inner(&mut Unstructured::new(data));
}

fn timeline_inner(u: &mut Unstructured) -> Result<()> {
    let cap = *u.choose(&[0i64, 1, 500, 1000, 2500, 60_000])?;
    let mut tl = Timeline::with_cap(cap);
    let cap = if cap > 0 { cap } else { 60_000 };
    let mut raw: Vec<(i64, Outcome)> = vec![];
    let mut t: i64 = 1_700_000_000_000;
    let mut marks = BTreeSet::new();
    while !u.is_empty() {
        t += match u.int_in_range(0..=7u8)? {
            0 => 0,
            1 => u.int_in_range(1..=100i64)?,
            2 => u.int_in_range(1..=200_000i64)?,
            _ => 1000 + u.int_in_range(-30..=30i64)?,
        };
        if u.ratio(1, 12)? {
            tl.mark(t);
            marks.insert(t);
            continue;
        }
        let o = match u.int_in_range(0..=5u8)? {
            0..=2 => Outcome::Ok,
            3 | 4 => Outcome::Fail,
            _ => Outcome::Error,
        };
        tl.push(t, o);
        // A sample no later than the one before is placed a millisecond after it.
        let at = raw.last().map_or(t, |&(p, _)| t.max(p + 1));
        t = at;
        raw.push((at, o));
    }
    let now = t + u.int_in_range(0..=120_000i64).unwrap_or(0);
    let marks: Vec<i64> = marks.into_iter().collect();
    assert!(
        tl.segments.len() <= firedrill::slo::MAX_SEGMENTS + 2 * marks.len() + 2,
        "{} segments for {} marks",
        tl.segments.len(),
        marks.len()
    );
    let stored: Timeline = serde_json::from_str(&serde_json::to_string(&tl).unwrap()).unwrap();
    let mut edges = marks.clone();
    edges.push(now);
    for w in edges.windows(2) {
        let (s, e) = (w[0], w[1]);
        if s >= e {
            continue;
        }
        let want = expected(&raw, cap, s, e, now);
        for (which, tl) in [("recorded", &tl), ("stored", &stored)] {
            let m = tl.measure(s, e, now);
            let got = Expected {
                counts: [m.ok, m.failed, m.errors],
                ms: [m.ok_ms, m.fail_ms, m.error_ms],
                time_to_recover_ms: m.time_to_recover_ms,
                recovered_at: m.recovered_at,
                first_failure_at: m.first_failure_at,
                longest_outage_ms: m.longest_outage_ms,
            };
            assert_eq!(
                got,
                want,
                "{which} timeline, window [{s}, {e}) at {now}, {} samples, {} segments",
                raw.len(),
                tl.segments.len()
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// plan
// ---------------------------------------------------------------------------

const KEYS: &[&str] = &[
    "topology.kubernetes.io/zone",
    "kubernetes.io/hostname",
    "app",
    "tier",
    "",
    "bad key!",
    "example.com/x",
];
const VALUES: &[&str] = &[
    "zone-a", "zone-b", "zone-c", "web", "db", "", "n0", "n1", "ü",
];
const NAMESPACES: &[&str] = &[
    "default",
    "shop",
    "kube-system",
    "kube-public",
    "firedrill",
    "ns.odd-name",
];
const OPERATORS: &[&str] = &["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt", "Bogus"];
const QUANTITIES: &[&str] = &[
    "1", "250m", "0.5", "2Gi", "64Mi", "1e3", "129e6", "-1", "abc", "", "1e400", "9Ei",
];

fn pick(u: &mut Unstructured, from: &[&str]) -> Result<String> {
    Ok(u.choose(from)?.to_string())
}

fn labels(u: &mut Unstructured) -> Result<BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    for _ in 0..u.int_in_range(0..=3u8)? {
        m.insert(pick(u, KEYS)?, pick(u, VALUES)?);
    }
    Ok(m)
}

fn label_selector(u: &mut Unstructured) -> Result<Value> {
    let mut exprs = vec![];
    for _ in 0..u.int_in_range(0..=2u8)? {
        let mut values = vec![];
        for _ in 0..u.int_in_range(0..=2u8)? {
            values.push(pick(u, VALUES)?);
        }
        exprs.push(
            json!({"key": pick(u, KEYS)?, "operator": pick(u, OPERATORS)?, "values": values}),
        );
    }
    Ok(json!({"matchLabels": labels(u)?, "matchExpressions": exprs}))
}

fn pod_term(u: &mut Unstructured) -> Result<Value> {
    Ok(json!({
        "labelSelector": label_selector(u)?,
        "topologyKey": pick(u, KEYS)?,
        "namespaces": if u.arbitrary()? { json!([pick(u, NAMESPACES)?]) } else { Value::Null },
        "namespaceSelector": if u.arbitrary()? { json!({}) } else { Value::Null },
        "matchLabelKeys": if u.arbitrary()? { json!([pick(u, KEYS)?]) } else { Value::Null },
    }))
}

/// Any cluster is planned without a panic; the plan takes the zone's nodes
/// exactly and spares what the scope spares.
pub fn cluster(data: &[u8]) {
    let _ = cluster_inner(&mut Unstructured::new(data));
}

fn cluster_inner(u: &mut Unstructured) -> Result<()> {
    let topology_key = if u.ratio(1, 8)? {
        pick(u, KEYS)?
    } else {
        "topology.kubernetes.io/zone".to_string()
    };
    let zone = pick(u, VALUES)?;
    let mut nodes = vec![];
    for i in 0..u.int_in_range(0..=12u8)? {
        let mut l = labels(u)?;
        if !u.ratio(1, 6)? {
            l.insert(
                topology_key.clone(),
                pick(u, &["zone-a", "zone-b", "zone-c"])?,
            );
        }
        if u.arbitrary()? {
            l.insert(firedrill::api::AGENT_LABEL.to_string(), "true".into());
        }
        let taints: Vec<Value> = (0..u.int_in_range(0..=2u8)?)
            .map(|_| {
                Ok(json!({"key": pick(u, KEYS)?, "value": pick(u, VALUES)?,
                    "effect": pick(u, &["NoSchedule", "NoExecute", "PreferNoSchedule", "Odd"])?}))
            })
            .collect::<Result<_>>()?;
        let node = json!({
            "metadata": {"name": format!("n{i}"), "labels": l},
            "spec": {"unschedulable": u.arbitrary::<bool>()?, "taints": taints},
            "status": {
                "allocatable": {"cpu": pick(u, QUANTITIES)?, "memory": pick(u, QUANTITIES)?, "pods": pick(u, QUANTITIES)?},
                "conditions": [{"type": "Ready", "status": pick(u, &["True", "False", "Unknown"])?}],
            },
        });
        let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(node).unwrap();
        nodes.push(plan::collect::node_info(&node));
    }
    let mut all_pods = vec![];
    for i in 0..u.int_in_range(0..=30u8)? {
        let node = if nodes.is_empty() || u.ratio(1, 10)? {
            pick(u, &["", "ghost"])?
        } else {
            u.choose(&nodes)?.name.clone()
        };
        let owner = match u.int_in_range(0..=5u8)? {
            0 => Value::Null,
            k => {
                let kind =
                    ["ReplicaSet", "StatefulSet", "DaemonSet", "Job", "Node"][k as usize - 1];
                json!([{
                    "apiVersion": "apps/v1",
                    "kind": kind,
                    "name": pick(u, &["web", "db", "agent"])?,
                    "uid": "x",
                    "controller": u.ratio(4, 5)?,
                }])
            }
        };
        let mut annotations = BTreeMap::new();
        if u.ratio(1, 10)? {
            annotations.insert("kubernetes.io/config.mirror", "x");
        }
        let required = if u.ratio(1, 4)? {
            let terms: Vec<Value> = (0..u.int_in_range(1..=2u8)?)
                .map(|_| {
                    let mut values = vec![];
                    for _ in 0..u.int_in_range(0..=2u8)? {
                        values.push(pick(u, VALUES)?);
                    }
                    Ok(json!({"matchExpressions": [{"key": pick(u, KEYS)?, "operator": pick(u, OPERATORS)?, "values": values}]}))
                })
                .collect::<Result<_>>()?;
            json!({"nodeSelectorTerms": terms})
        } else {
            Value::Null
        };
        let spread: Vec<Value> = (0..u.int_in_range(0..=1u8)?)
            .map(|_| {
                Ok(json!({
                    "maxSkew": u.int_in_range(-1..=3i32)?,
                    "topologyKey": pick(u, KEYS)?,
                    "whenUnsatisfiable": pick(u, &["DoNotSchedule", "ScheduleAnyway"])?,
                    "labelSelector": label_selector(u)?,
                    "minDomains": if u.arbitrary()? { json!(u.int_in_range(-1..=4i32)?) } else { Value::Null },
                    "nodeAffinityPolicy": pick(u, &["Honor", "Ignore"])?,
                    "nodeTaintsPolicy": pick(u, &["Honor", "Ignore"])?,
                    "matchLabelKeys": [pick(u, KEYS)?],
                }))
            })
            .collect::<Result<_>>()?;
        let tolerations: Vec<Value> = (0..u.int_in_range(0..=2u8)?)
            .map(|_| {
                Ok(json!({"key": pick(u, KEYS)?, "operator": pick(u, &["Exists", "Equal", "Odd"])?,
                    "value": pick(u, VALUES)?, "effect": pick(u, &["", "NoSchedule", "NoExecute"])?}))
            })
            .collect::<Result<_>>()?;
        let pod = json!({
            "metadata": {
                "name": format!("p{i}"),
                "namespace": pick(u, NAMESPACES)?,
                "labels": labels(u)?,
                "ownerReferences": owner,
                "annotations": annotations,
                "deletionTimestamp": if u.ratio(1, 10)? { json!("2026-01-01T00:00:00Z") } else { Value::Null },
            },
            "spec": {
                "nodeName": node,
                "nodeSelector": if u.ratio(1, 5)? { json!(labels(u)?) } else { Value::Null },
                "containers": [{"name": "c", "resources": {"requests": {"cpu": pick(u, QUANTITIES)?, "memory": pick(u, QUANTITIES)?}}}],
                "affinity": {
                    "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required},
                    "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": if u.ratio(1, 6)? { json!([pod_term(u)?]) } else { Value::Null }},
                    "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": if u.ratio(1, 4)? { json!([pod_term(u)?]) } else { Value::Null }},
                },
                "topologySpreadConstraints": spread,
                "tolerations": tolerations,
                "volumes": if u.ratio(1, 6)? { json!([{"name": "v", "persistentVolumeClaim": {"claimName": "data"}}]) } else { Value::Null },
            },
            "status": {
                "phase": pick(u, &["Running", "Pending", "Succeeded", "Failed"])?,
                "conditions": [{"type": "Ready", "status": pick(u, &["True", "False"])?}],
            },
        });
        // The slim list parser reads every pod as the full type does.
        let lite = plan::lite::parse_list(&json!({"items": [&pod]}).to_string()).unwrap();
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(pod).unwrap();
        let info = plan::collect::pod_info(&pod);
        assert_eq!(plan::collect::pod_info(&lite[0]), info);
        all_pods.push(info);
    }
    let zone_nodes: BTreeSet<String> = nodes
        .iter()
        .filter(|n| n.labels.get(&topology_key) == Some(&zone))
        .map(|n| n.name.clone())
        .collect();
    let mut snap = Snapshot {
        nodes: nodes.clone(),
        pods: all_pods
            .iter()
            .filter(|p| zone_nodes.contains(&p.node))
            .cloned()
            .collect(),
        peers: all_pods.clone(),
        ..Default::default()
    };
    for p in &all_pods {
        if let Some(o) = &p.owner
            && u.arbitrary()?
        {
            snap.workloads.insert(
                o.clone(),
                plan::WorkloadInfo {
                    ready: u.int_in_range(-1..=5i32)?,
                    display: format!("{}/{}", o.kind, o.name),
                },
            );
        }
        for c in &p.pvcs {
            if u.ratio(1, 2)? {
                snap.pvc_topology.insert(
                    format!("{}/{c}", p.namespace),
                    plan::VolumeTopology {
                        zones: vec![pick(u, VALUES)?],
                        hostnames: vec![],
                    },
                );
            }
        }
    }
    if u.arbitrary()? {
        let sel: LabelSelector = serde_json::from_value(label_selector(u)?).unwrap();
        if let Ok(selector) = kube::core::Selector::try_from(sel) {
            snap.pdbs.push(plan::PdbInfo {
                namespace: pick(u, NAMESPACES)?,
                name: "pdb".into(),
                selector,
                disruptions_allowed: u.int_in_range(-1..=2i32)?,
            });
        }
    }
    if u.arbitrary()? {
        snap.surviving_free = Some(plan::Capacity {
            cpu_millis: u.int_in_range(-1..=10_000i64)?,
            memory_bytes: u.int_in_range(-1..=1i64 << 40)?,
        });
    }
    for name in ["auth", "pay"] {
        if u.arbitrary()? {
            let sel: LabelSelector = serde_json::from_value(label_selector(u)?).unwrap();
            if let Ok(selector) = kube::core::Selector::try_from(sel) {
                snap.slo_targets.push(plan::SloTarget {
                    slo: name.into(),
                    backing: Some(plan::Target {
                        what: format!("Service shop/{name}"),
                        namespace: pick(u, NAMESPACES)?,
                        selector,
                    }),
                    prober: None,
                    need: u.int_in_range(0..=3i32)?,
                });
            }
        }
    }
    let target: TargetSpec = serde_json::from_value(json!({
        "namespaces": if u.ratio(1, 3)? { json!([pick(u, NAMESPACES)?]) } else { json!([]) },
        "excludeNamespaces": if u.ratio(1, 3)? { json!([pick(u, NAMESPACES)?]) } else { json!([]) },
        "labelSelector": if u.ratio(1, 3)? { label_selector(u)? } else { Value::Null },
        "includeDaemonSets": u.arbitrary::<bool>()?,
        "includeSystemNamespaces": u.arbitrary::<bool>()?,
    }))
    .unwrap();
    let operator_namespace = if u.arbitrary()? {
        Some("firedrill".to_string())
    } else {
        None
    };
    let Ok(scope) = plan::Scope::from_target(&target, operator_namespace.clone()) else {
        return Ok(());
    };
    let guards: GuardSpec = serde_json::from_value(json!({
        "maxNodes": if u.arbitrary()? { json!(u.int_in_range(1..=4i32)?) } else { Value::Null },
        "maxNodePercent": u.int_in_range(1..=100i32)?,
        "requireCapacity": u.arbitrary::<bool>()?,
        "protectOperator": u.arbitrary::<bool>()?,
    }))
    .unwrap();
    let req = Request {
        zone: zone.clone(),
        topology_key,
        scope,
        guards,
        power_loss: u.arbitrary::<bool>()?,
        dependencies: Default::default(),
        primary_labels: vec![],
    };
    let p = plan::plan(&req, &snap);
    let _ = plan::check_guards(&req, &p, &snap);
    let _ = plan::check_node_guards(&req, &p);
    serde_json::to_string(&p.summary()).unwrap();

    let planned: BTreeSet<String> = p.nodes.iter().cloned().collect();
    assert_eq!(planned, zone_nodes, "the plan's nodes are not the zone's");
    let on_zone = snap.pods.len();
    assert_eq!(
        p.pods_in_scope.len() + p.pods_spared.len(),
        on_zone,
        "every pod on the zone's nodes is either in scope or spared"
    );
    // A power loss spares nothing; the guards refuse what it must not cut.
    for key in p.pods_in_scope.iter().filter(|_| !req.power_loss) {
        let (ns, _) = key.split_once('/').unwrap();
        let pod = snap.pods.iter().find(|x| &x.key() == key).unwrap();
        assert!(!pod.mirror, "{key}: a static pod in scope");
        assert_ne!(
            Some(ns),
            operator_namespace.as_deref(),
            "{key}: the operator's own namespace in scope"
        );
        if !target.include_system_namespaces {
            assert!(
                !firedrill::api::SYSTEM_NAMESPACES.contains(&ns),
                "{key}: a system namespace in scope"
            );
        }
        assert!(
            !target.exclude_namespaces.iter().any(|x| x == ns),
            "{key}: an excluded namespace in scope"
        );
        if !target.include_daemon_sets {
            assert!(
                pod.owner.as_ref().is_none_or(|o| o.kind != "DaemonSet"),
                "{key}: a DaemonSet pod in scope"
            );
        }
    }
    Ok(())
}
