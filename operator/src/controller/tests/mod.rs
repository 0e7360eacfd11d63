//! The state machine without a cluster: each test puts an experiment in a
//! phase on a fake API server ([`fake`]), runs one step (or one reconcile),
//! and checks the phase and reason written and the exact requests sent.

mod fake;

use super::drill::{Drill, Step, reconcile};
use super::runtime::{Config, Context, retry_delay};
use crate::api::{
    ABORT_ANNOTATION, FINALIZER, POWER_ACK_ANNOTATION, POWER_LABEL, POWER_REFUSED_ANNOTATION,
};
use crate::clients::Clients;
use crate::exclusion::{CLAIMS_ANNOTATION, LEASE_NAME};
use crate::fault::{KeeperState, MARK_ANNOTATION, MARK_LABEL, NodeMark, TAINT_KEY};
use fake::{Call, Fake, merge};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn retries_back_off_from_one_second_to_at_most_thirty() {
    let secs: Vec<u64> = (1..=8).map(|n| retry_delay(n).as_secs()).collect();
    assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
    assert_eq!(retry_delay(u32::MAX), Duration::from_secs(30));
}

// ---------------------------------------------------------------------------
// The world: a fake API server, and the operator's context on it.
// ---------------------------------------------------------------------------

const NS: &str = "firedrill";
const UID: &str = "uid-drill";
const ZONE_KEY: &str = "topology.kubernetes.io/zone";

struct World {
    api: Fake,
    /// Behind the watch client: only the keeper watches, and no test here
    /// starts one, so nothing may reach it.
    watches: Fake,
    ctx: Arc<Context>,
}

fn world() -> World {
    world_with(Config {
        namespace: Some(NS.into()),
        ..Default::default()
    })
}

fn world_with(config: Config) -> World {
    let api = Fake::default();
    let watches = Fake::default();
    let clients = Clients {
        calls: api.client(),
        watches: watches.client(),
        lease: Fake::default().client(),
        apiserver: ("127.0.0.1".into(), 6443),
        metrics: crate::metrics::Metrics::new(),
    };
    let ctx = Context::new(clients, config);
    World { api, watches, ctx }
}

impl World {
    /// One step of the state machine on the experiment as the fake has it.
    async fn step(&self) -> Step {
        let obj = serde_json::from_value(self.api.experiment("drill")).unwrap();
        match Drill::new(&self.ctx, obj).step().await {
            Ok(step) => step,
            Err(e) => panic!("the step failed: {e}"),
        }
    }

    /// One reconcile, as the controller runs it (under the finalizer).
    async fn reconcile(&self) -> Action {
        let obj = serde_json::from_value(self.api.experiment("drill")).unwrap();
        match reconcile(Arc::new(obj), self.ctx.clone()).await {
            Ok(action) => action,
            Err(e) => panic!("the reconcile failed: {e}"),
        }
    }

    /// The requests since the last look.
    fn take_calls(&self) -> Vec<Call> {
        assert_eq!(
            self.watches.take_lines(),
            Vec::<String>::new(),
            "nothing watches"
        );
        self.api.take_calls()
    }

    /// The requests since the last look, as `METHOD path?query`.
    fn calls(&self) -> Vec<String> {
        lines(&self.take_calls())
    }

    fn status(&self) -> Value {
        self.api.experiment("drill")["status"].clone()
    }

    fn phase(&self) -> String {
        self.status()["phase"].as_str().unwrap_or("Pending").into()
    }

    /// Every phase entered, in order.
    fn phases(&self) -> Vec<String> {
        let st = self.status();
        let transitions = st["transitions"].as_array().cloned().unwrap_or_default();
        transitions
            .iter()
            .map(|t| t["phase"].as_str().unwrap().to_string())
            .collect()
    }

    /// The status' one-line `reason`.
    fn reason(&self) -> String {
        self.status()["reason"].as_str().unwrap_or_default().into()
    }

    /// How it ended: the status' `reason`, and the reason of its Completed condition.
    fn ended_with(&self) -> (String, String) {
        let st = self.status();
        let cond = st["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Completed")
            .map(|c| c["reason"].as_str().unwrap().to_string())
            .unwrap_or_default();
        (self.reason(), cond)
    }

    /// The claims in the one-zone-at-a-time Lease.
    fn claims(&self) -> Option<Value> {
        let lease = self.api.lease(NS, LEASE_NAME)?;
        let text = lease["metadata"]["annotations"][CLAIMS_ANNOTATION]
            .as_str()
            .unwrap();
        Some(serde_json::from_str(text).unwrap())
    }
}

fn lines(calls: &[Call]) -> Vec<String> {
    calls.iter().map(Call::line).collect()
}

fn is_next(step: &Step) -> bool {
    matches!(step, Step::Next)
}

fn waits(step: Step) -> Action {
    match step {
        Step::Wait(a) => a,
        Step::Next => panic!("expected the step to wait"),
    }
}

// ---------------------------------------------------------------------------
// Fixtures.
// ---------------------------------------------------------------------------

/// The experiment `drill` in zone-a, with `spec` merged over a drill that
/// measures nothing, and `status` (null: Pending).
fn drill(spec: Value, status: Value) -> Value {
    let mut s = json!({"zone": "zone-a", "duration": "1s", "baseline": "0s", "faultOnly": true});
    merge(&mut s, &spec);
    json!({
        "apiVersion": "chaos.firedrill.dev/v1alpha1", "kind": "DataCenterFailure",
        "metadata": {"name": "drill", "uid": UID, "generation": 1, "finalizers": [FINALIZER]},
        "spec": s,
        "status": status,
    })
}

/// Another experiment, holding `phase`.
fn other(phase: &str) -> Value {
    json!({
        "apiVersion": "chaos.firedrill.dev/v1alpha1", "kind": "DataCenterFailure",
        "metadata": {"name": "other", "uid": "uid-other", "generation": 1},
        "spec": {"zone": "zone-b", "faultOnly": true},
        "status": {"phase": phase},
    })
}

/// The fault part of a status: zeros, with `extra` merged over.
fn fault(extra: Value) -> Value {
    let mut f = json!({"nodesTaken": 0, "nodesCordoned": 0, "nodesTainted": 0,
                       "podsKilled": 0, "podsRekilled": 0, "nodesRestored": 0});
    merge(&mut f, &extra);
    f
}

/// A time `secs` seconds ago, as the status writes it.
fn ago(secs: u64) -> Value {
    let t = Timestamp::now() - Duration::from_secs(secs);
    serde_json::to_value(MicroTime(t)).unwrap()
}

/// A Ready node of `zone` with 4 CPUs and 8 GiB allocatable.
fn node(name: &str, zone: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {ZONE_KEY: zone, "kubernetes.io/hostname": name}},
        "spec": {},
        "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                   "conditions": [{"type": "Ready", "status": "True"}]},
    })
}

/// `node`, cordoned and tainted by the experiment (`name`, `uid`), with the mark that says so.
fn held(mut node: Value, name: &str, uid: &str) -> Value {
    let mark = NodeMark {
        experiment: name.into(),
        uid: uid.into(),
        prior_unschedulable: false,
        cordoned: true,
        tainted: true,
        taint_effect: Some("NoSchedule".into()),
        power_loss: false,
    };
    node["metadata"]["labels"][MARK_LABEL] = name.into();
    node["metadata"]["annotations"] =
        json!({MARK_ANNOTATION: serde_json::to_string(&mark).unwrap()});
    node["spec"] = json!({"unschedulable": true,
        "taints": [{"key": TAINT_KEY, "value": name, "effect": "NoSchedule"}]});
    node
}

/// A running pod requesting 100m CPU and 64 MiB, labelled `app: <name>`.
fn pod(ns: &str, name: &str, node: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"), "labels": {"app": name}},
        "spec": {"nodeName": node, "containers": [{"name": "main",
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    })
}

/// Three zones of one node each. On a1: `shop/web-a` (in scope) and
/// `kube-system/dns-a` (spared); on b1: `shop/web-b`.
fn three_zones(api: &Fake) {
    for (n, z) in [("a1", "zone-a"), ("b1", "zone-b"), ("c1", "zone-c")] {
        api.add_node(node(n, z));
    }
    api.add_pod(pod("shop", "web-a", "a1"));
    api.add_pod(pod("kube-system", "dns-a", "a1"));
    api.add_pod(pod("shop", "web-b", "b1"));
}

/// Three zones of two nodes each, no pods.
fn six_nodes(api: &Fake) {
    for z in ["a", "b", "c"] {
        for i in 1..=2 {
            api.add_node(node(&format!("{z}{i}"), &format!("zone-{z}")));
        }
    }
}

/// The one-zone-at-a-time Lease holding `claims` (uid → claim).
fn lease(claims: Value) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": LEASE_NAME, "namespace": NS,
                     "annotations": {CLAIMS_ANNOTATION: claims.to_string()}},
    })
}

fn claim(name: &str, zone: &str, exclusive: bool) -> Value {
    json!({"name": name, "zone": zone, "exclusive": exclusive})
}

/// The experiment's record, holding the nodes planning found.
fn planned(nodes: &[&str]) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": format!("firedrill-{UID}"), "namespace": NS},
        "data": {"plan.json": json!({"nodes": nodes}).to_string()},
    })
}

// ---------------------------------------------------------------------------
// The requests, as the fake records them.
// ---------------------------------------------------------------------------

macro_rules! calls {
    ($($c:expr),* $(,)?) => { vec![$(String::from($c)),*] };
}

const GET_DRILL: &str = "GET /apis/chaos.firedrill.dev/v1alpha1/datacenterfailures/drill";
/// The finalizer's JSON patch (adding it, or removing it).
const PATCH_DRILL: &str = "PATCH /apis/chaos.firedrill.dev/v1alpha1/datacenterfailures/drill";
const STATUS: &str = "PATCH /apis/chaos.firedrill.dev/v1alpha1/datacenterfailures/drill/status?force=true&fieldManager=firedrill";
const EXPERIMENTS: &str = "GET /apis/chaos.firedrill.dev/v1alpha1/datacenterfailures";
const EVENT: &str = "POST /apis/events.k8s.io/v1/namespaces/default/events";
/// Every node, a page at a time (planning, injection, and the restore's look
/// for traces on nodes without the mark label).
const NODES: &str = "GET /api/v1/nodes?limit=500";
const HELD_NODES: &str = "GET /api/v1/nodes?labelSelector=chaos.firedrill.dev/experiment";
const PDBS: &str = "GET /apis/policy/v1/poddisruptionbudgets";
/// Where the API server runs (planning a PowerLoss).
const API_SERVER_SLICES: &str = "GET /apis/discovery.k8s.io/v1/namespaces/default/endpointslices?labelSelector=kubernetes.io/service-name=kubernetes";
const API_SERVER_PODS: &str =
    "GET /api/v1/namespaces/kube-system/pods?labelSelector=component=kube-apiserver";
const LEASE: &str = "GET /apis/coordination.k8s.io/v1/namespaces/firedrill/leases/firedrill-drills";
const CREATE_LEASE: &str = "POST /apis/coordination.k8s.io/v1/namespaces/firedrill/leases";
const REPLACE_LEASE: &str =
    "PUT /apis/coordination.k8s.io/v1/namespaces/firedrill/leases/firedrill-drills";
const RECORD: &str = "GET /api/v1/namespaces/firedrill/configmaps/firedrill-uid-drill";
const SAVE_RECORD: &str = "PATCH /api/v1/namespaces/firedrill/configmaps/firedrill-uid-drill?force=true&fieldManager=firedrill";

/// Planning's list of the pods on a node (from the API server's cache).
fn pods_on(node: &str) -> String {
    format!(
        "GET /api/v1/pods?fieldSelector=spec.nodeName={node}&resourceVersion=0&resourceVersionMatch=NotOlderThan"
    )
}

/// The kill's list of the pods on a node (a consistent read).
fn pods_to_kill_on(node: &str) -> String {
    format!("GET /api/v1/pods?fieldSelector=spec.nodeName={node}")
}

fn get_node(name: &str) -> String {
    format!("GET /api/v1/nodes/{name}")
}

fn patch_node(name: &str) -> String {
    format!("PATCH /api/v1/nodes/{name}")
}

fn delete_pod(ns: &str, name: &str) -> String {
    format!("DELETE /api/v1/namespaces/{ns}/pods/{name}")
}

/// What planning reads of a cluster whose zone has `zone` nodes and whose
/// other zones have `others`, measuring capacity, with no workloads, volumes
/// or SLOs to look up.
fn planning_reads(zone: &[&str], others: &[&str]) -> Vec<String> {
    let mut c = calls![NODES];
    c.extend(zone.iter().map(|n| pods_on(n)));
    c.push(PDBS.into());
    c.extend(others.iter().map(|n| pods_on(n)));
    c.push(pods_on(""));
    c.push(EXPERIMENTS.into());
    c
}

/// Nothing was written to a node, a pod or the Lease.
fn assert_nothing_touched(calls: &[String]) {
    let touched: Vec<&String> = calls
        .iter()
        .filter(|c| !c.starts_with("GET "))
        .filter(|c| c.contains("/nodes") || c.contains("/pods") || c.contains("/leases"))
        .collect();
    assert!(touched.is_empty(), "{touched:?}");
}

// ---------------------------------------------------------------------------
// Pending → Planning → Baseline (or Completed, or Failed).
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_new_experiment_gets_the_finalizer_and_nothing_else() {
    let w = world();
    let mut obj = drill(json!({}), Value::Null);
    obj["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("finalizers");
    w.api.add_experiment(obj);
    three_zones(&w.api);

    assert_eq!(w.reconcile().await, Action::await_change());
    let calls = w.take_calls();
    assert_eq!(lines(&calls), calls![PATCH_DRILL]);
    assert_eq!(
        calls[0].body,
        Some(json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
        ]))
    );
    let obj = w.api.experiment("drill");
    assert_eq!(obj["metadata"]["finalizers"], json!([FINALIZER]));
    assert!(
        obj["status"].is_null(),
        "no phase before the finalizer is on"
    );
}

#[tokio::test]
async fn pending_enters_planning_writing_only_the_status() {
    let w = world();
    w.api.add_experiment(drill(json!({}), Value::Null));
    three_zones(&w.api);

    assert!(is_next(&w.step().await));
    let calls = w.take_calls();
    assert_eq!(lines(&calls), calls![STATUS]);
    let rv = &calls[0].body.as_ref().unwrap()["metadata"]["resourceVersion"];
    assert!(rv.is_string(), "the status write is conditional: {rv}");
    assert_eq!(w.phase(), "Planning");
    assert_eq!(w.reason(), "planning the loss of zone-a");
    assert_eq!(w.status()["transitions"][0]["phase"], "Planning");
}

#[tokio::test]
async fn planning_records_the_plan_claims_the_turn_and_saves_the_planned_nodes() {
    let w = world();
    w.api
        .add_experiment(drill(json!({}), json!({"phase": "Planning"})));
    three_zones(&w.api);

    assert!(is_next(&w.step().await));
    let mut expected = planning_reads(&["a1"], &["b1", "c1"]);
    expected.extend(calls![LEASE, CREATE_LEASE, SAVE_RECORD, STATUS, EVENT]);
    assert_eq!(w.calls(), expected);

    assert_eq!(w.phase(), "Baseline");
    let plan = &w.status()["plan"];
    assert_eq!(
        (
            &plan["nodesInZone"],
            &plan["nodesInCluster"],
            &plan["podsInScope"],
            &plan["podsSpared"]
        ),
        (&json!(1), &json!(3), &json!(1), &json!(1))
    );
    assert_eq!(
        w.claims(),
        Some(json!({UID: claim("drill", "zone-a", true)}))
    );
    let record = w.api.config_map(NS, "firedrill-uid-drill").unwrap();
    assert_eq!(record["data"]["plan.json"], r#"{"nodes":["a1"]}"#);
    assert_eq!(record["metadata"]["ownerReferences"][0]["uid"], UID);
    assert_eq!(
        w.api.events(),
        [(
            "Planned".to_string(),
            "1 nodes, 1 pods in scope (1 spared), 0 workloads lose every replica, 0 pods pinned to the zone".to_string()
        )]
    );
}

#[tokio::test]
async fn a_dry_run_plans_and_completes_without_claiming_or_touching_anything() {
    let w = world();
    w.api.add_experiment(drill(
        json!({"guards": {"dryRun": true}}),
        json!({"phase": "Planning"}),
    ));
    three_zones(&w.api);

    assert!(is_next(&w.step().await));
    let mut expected = planning_reads(&["a1"], &["b1", "c1"]);
    expected.extend(calls![STATUS, EVENT]);
    assert_eq!(w.calls(), expected);
    assert_eq!(w.phase(), "Completed");
    assert_eq!(
        w.ended_with(),
        (
            "dry run: 1 nodes, 1 pods in scope (1 spared), 0 workloads lose every replica, 0 pods pinned to the zone; nothing was changed".into(),
            "DryRun".into()
        )
    );
    assert_eq!(w.claims(), None);
    assert_eq!(w.api.config_map(NS, "firedrill-uid-drill"), None);
}

#[tokio::test]
async fn one_reconcile_walks_from_pending_to_the_start_of_the_injection() {
    let w = world();
    w.api.add_experiment(drill(json!({}), Value::Null));
    three_zones(&w.api);

    assert_eq!(
        w.reconcile().await,
        Action::requeue(Duration::from_millis(200))
    );
    let mut expected = calls![GET_DRILL, STATUS];
    expected.extend(planning_reads(&["a1"], &["b1", "c1"]));
    expected.extend(calls![LEASE, CREATE_LEASE, SAVE_RECORD, STATUS, EVENT]);
    // Baseline without SLOs: straight on.
    expected.extend(calls![STATUS]);
    // Injecting: the zone's nodes again, guarded, recorded before the task starts.
    expected.extend(calls![NODES, HELD_NODES, RECORD, STATUS]);
    assert_eq!(w.calls(), expected);
    assert_eq!(w.phases(), ["Planning", "Baseline", "Injecting"]);
    assert_eq!(w.status()["fault"]["nodesTaken"], 1);
    // Stop the injection task this reconcile started.
    w.ctx.stop_tasks(UID);
}

// ---------------------------------------------------------------------------
// Guard refusals at planning: Failed, nothing claimed, nothing touched.
// ---------------------------------------------------------------------------

/// Run the planning step and check it refused with `why`.
async fn refused(w: &World, why: &str) -> Vec<String> {
    assert!(is_next(&w.step().await));
    let calls = w.calls();
    assert_eq!(w.phase(), "Failed");
    assert_eq!(
        w.ended_with(),
        (
            format!("refused: {why}; nothing was changed"),
            "Refused".into()
        )
    );
    assert_eq!(w.api.events(), [("Refused".to_string(), why.to_string())]);
    assert_nothing_touched(&calls);
    assert_eq!(w.api.config_map(NS, "firedrill-uid-drill"), None);
    calls
}

#[tokio::test]
async fn planning_refuses_a_zone_with_more_nodes_than_max_nodes() {
    let w = world();
    w.api.add_experiment(drill(
        json!({"guards": {"maxNodes": 1}}),
        json!({"phase": "Planning"}),
    ));
    six_nodes(&w.api);

    let calls = refused(&w, "zone zone-a has 2 nodes, more than guards.maxNodes=1").await;
    let mut expected = planning_reads(&["a1", "a2"], &["b1", "b2", "c1", "c2"]);
    expected.extend(calls![STATUS, EVENT]);
    assert_eq!(calls, expected);
    assert_eq!(w.claims(), None);
}

#[tokio::test]
async fn planning_refuses_a_zone_holding_more_than_max_node_percent() {
    let w = world();
    w.api.add_experiment(drill(
        json!({"guards": {"maxNodePercent": 30}}),
        json!({"phase": "Planning"}),
    ));
    three_zones(&w.api);

    let calls = refused(
        &w,
        "zone zone-a holds 33% of the cluster's nodes (1 of 3), more than guards.maxNodePercent=30",
    )
    .await;
    let mut expected = planning_reads(&["a1"], &["b1", "c1"]);
    expected.extend(calls![STATUS, EVENT]);
    assert_eq!(calls, expected);
    assert_eq!(w.claims(), None);
}

#[tokio::test]
async fn planning_refuses_when_the_surviving_zones_lack_capacity() {
    let w = world();
    w.api
        .add_experiment(drill(json!({}), json!({"phase": "Planning"})));
    three_zones(&w.api);
    let mut big = pod("shop", "big", "a1");
    big["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "9".into();
    w.api.add_pod(big);

    // Needed: web-a and big (9100m, 128 MiB); free: b1 less web-b, and c1.
    let calls = refused(
        &w,
        "the surviving zones lack capacity for the displaced pods: need 9100m CPU and 128 MiB memory, 7900m and 16320 MiB free",
    )
    .await;
    let mut expected = planning_reads(&["a1"], &["b1", "c1"]);
    expected.extend(calls![STATUS, EVENT]);
    assert_eq!(calls, expected);
    assert_eq!(w.claims(), None);
}

#[tokio::test]
async fn planning_refuses_to_take_down_the_operators_only_replica() {
    let w = world_with(Config {
        namespace: Some(NS.into()),
        self_selector: Some("app=firedrill".into()),
        ..Default::default()
    });
    w.api
        .add_experiment(drill(json!({}), json!({"phase": "Planning"})));
    three_zones(&w.api);
    let mut operator = pod(NS, "firedrill-0", "a1");
    operator["metadata"]["labels"] = json!({"app": "firedrill"});
    w.api.add_pod(operator);

    let calls = refused(
        &w,
        "the operator would be left with no replica outside zone-a (it runs on a1); set guards.protectOperator=false to allow",
    )
    .await;
    let mut expected = planning_reads(&["a1"], &["b1", "c1"]);
    expected.extend(calls![
        "GET /api/v1/namespaces/firedrill/pods?labelSelector=app=firedrill",
        STATUS,
        EVENT
    ]);
    assert_eq!(calls, expected);
    assert_eq!(w.claims(), None);
}

#[tokio::test]
async fn planning_refuses_while_another_experiment_holds_the_turn() {
    let w = world();
    w.api
        .add_experiment(drill(json!({}), json!({"phase": "Planning"})));
    // Still planning itself, so not "active" to the snapshot: only its claim tells.
    w.api.add_experiment(other("Planning"));
    w.api
        .add_lease(lease(json!({"uid-other": claim("other", "zone-b", true)})));
    three_zones(&w.api);

    let calls = refused(
        &w,
        "another DataCenterFailure is active (other (zone zone-b)); set guards.allowOverlap to run both",
    )
    .await;
    let mut expected = planning_reads(&["a1"], &["b1", "c1"]);
    expected.extend(calls![
        LEASE,
        // Is the claim's experiment still there and running?
        "GET /apis/chaos.firedrill.dev/v1alpha1/datacenterfailures/other",
        STATUS,
        EVENT
    ]);
    assert_eq!(calls, expected);
    assert_eq!(
        w.claims(),
        Some(json!({"uid-other": claim("other", "zone-b", true)})),
        "the Lease is as it was"
    );
}

#[tokio::test]
async fn planning_refuses_while_another_experiment_is_active() {
    let w = world();
    w.api
        .add_experiment(drill(json!({}), json!({"phase": "Planning"})));
    w.api.add_experiment(other("ZoneDown"));
    three_zones(&w.api);

    let calls = refused(
        &w,
        "another DataCenterFailure is active (other); set guards.allowOverlap to run both",
    )
    .await;
    let mut expected = planning_reads(&["a1"], &["b1", "c1"]);
    expected.extend(calls![STATUS, EVENT]);
    assert_eq!(calls, expected, "refused before the Lease is read");
}

#[tokio::test]
async fn planning_refuses_a_power_loss_where_the_node_agent_does_not_run() {
    let w = world();
    w.api.add_experiment(drill(
        json!({"fault": {"mode": "PowerLoss"}}),
        json!({"phase": "Planning"}),
    ));
    three_zones(&w.api);

    let calls = refused(
        &w,
        "1 nodes of zone-a run no firedrill agent (a1): a power loss cannot be rehearsed there; install the chart with agent.enabled=true",
    )
    .await;
    let mut expected = planning_reads(&["a1"], &["b1", "c1"]);
    expected.extend(calls![API_SERVER_SLICES, API_SERVER_PODS, STATUS, EVENT]);
    assert_eq!(calls, expected);
    assert_eq!(w.claims(), None);
}

#[tokio::test]
async fn planning_refuses_a_zone_without_nodes() {
    let w = world();
    w.api.add_experiment(drill(
        json!({"zone": "zone-x"}),
        json!({"phase": "Planning"}),
    ));
    three_zones(&w.api);

    let calls = refused(&w, "no nodes with topology.kubernetes.io/zone=zone-x").await;
    let mut expected = planning_reads(&[], &["a1", "b1", "c1"]);
    expected.extend(calls![STATUS, EVENT]);
    assert_eq!(calls, expected);
}

#[tokio::test]
async fn an_invalid_spec_fails_before_anything_is_read() {
    for phase in [Value::Null, json!({"phase": "Planning"})] {
        let w = world();
        w.api
            .add_experiment(drill(json!({"duration": "ten"}), phase.clone()));
        three_zones(&w.api);

        assert!(is_next(&w.step().await));
        assert_eq!(w.calls(), calls![STATUS, EVENT], "from {phase}");
        assert_eq!(w.phase(), "Failed");
        let (reason, cond) = w.ended_with();
        assert!(reason.starts_with("spec.duration: "), "{reason}");
        assert_eq!(cond, "InvalidSpec");
        assert_eq!(w.api.events()[0].0, "InvalidSpec");
    }
}

// ---------------------------------------------------------------------------
// Baseline → Injecting → ZoneDown → Restoring → Completed.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn baseline_without_slos_starts_the_injection_at_once() {
    let w = world();
    w.api
        .add_experiment(drill(json!({}), json!({"phase": "Baseline"})));
    three_zones(&w.api);

    assert!(is_next(&w.step().await));
    assert_eq!(w.calls(), calls![STATUS]);
    assert_eq!(w.phase(), "Injecting");
    assert_eq!(w.reason(), "taking down zone-a");
    assert!(w.status()["fault"]["injectedAt"].is_string());
}

#[tokio::test]
async fn a_status_write_on_a_stale_object_is_a_conflict_and_nothing_else_happens() {
    let w = world();
    w.api
        .add_experiment(drill(json!({}), json!({"phase": "Baseline"})));
    let stale = serde_json::from_value(w.api.experiment("drill")).unwrap();
    w.api.touch_experiment("drill");

    let err = match Drill::new(&w.ctx, stale).step().await {
        Ok(_) => panic!("a write on a stale object must fail"),
        Err(e) => e,
    };
    assert!(err.is_conflict(), "{err}");
    assert_eq!(w.calls(), calls![STATUS]);
    assert_eq!(w.phase(), "Baseline", "the phase is entered once, later");
    // Nothing was written, so nothing is counted; the retry counts it once.
    let transitions = |w: &World| {
        w.ctx
            .metrics
            .render()
            .lines()
            .filter(|l| l.starts_with("firedrill_phase_transitions_total{"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(transitions(&w), Vec::<String>::new());
    w.step().await;
    assert_eq!(
        transitions(&w),
        [r#"firedrill_phase_transitions_total{phase="Injecting"} 1"#]
    );
}

/// An experiment in Injecting since now, its plan recorded and its turn claimed.
fn injecting(w: &World, spec: Value) {
    w.api.add_experiment(drill(
        spec,
        json!({"phase": "Injecting", "fault": fault(json!({"injectedAt": ago(0)}))}),
    ));
    w.api.add_config_map(planned(&["a1"]));
    w.api
        .add_lease(lease(json!({UID: claim("drill", "zone-a", true)})));
}

#[tokio::test]
async fn injecting_takes_the_zone_down_in_a_task_and_records_it() {
    let w = world();
    injecting(&w, json!({}));
    three_zones(&w.api);

    assert_eq!(
        waits(w.step().await),
        Action::requeue(Duration::from_millis(200))
    );
    assert_eq!(w.calls(), calls![NODES, HELD_NODES, RECORD, STATUS]);
    assert_eq!(w.status()["fault"]["nodesTaken"], 1);

    // The task runs on its own; each step collects it once it is done.
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if is_next(&w.step().await) {
            break;
        }
    }
    assert_eq!(w.phase(), "ZoneDown");
    let calls = w.take_calls();
    let seen = lines(&calls);
    assert_eq!(seen.len(), 10, "{seen:#?}");
    // The task: mark and cordon; then the kill and the NoSchedule taint side
    // by side (a NoSchedule taint evicts nothing), in either order.
    assert_eq!(seen[..2], calls![get_node("a1"), patch_node("a1")]);
    let (mut both, mut want) = (
        seen[2..6].to_vec(),
        calls![
            pods_to_kill_on("a1"),
            delete_pod("shop", "web-a"),
            HELD_NODES,
            patch_node("a1"),
        ],
    );
    both.sort();
    want.sort();
    assert_eq!(both, want);
    // The step that collects it.
    assert_eq!(seen[6..], calls![HELD_NODES, STATUS, EVENT, EVENT]);
    let delete = calls.iter().find(|c| c.method == "DELETE").unwrap();
    assert_eq!(
        delete.body,
        Some(json!({"gracePeriodSeconds": 0, "preconditions": {"uid": "uid-web-a"}}))
    );

    let a1 = w.api.node("a1");
    assert_eq!(a1["metadata"]["labels"][MARK_LABEL], "drill");
    assert_eq!(a1["spec"]["unschedulable"], true);
    assert_eq!(
        a1["spec"]["taints"],
        json!([{"key": TAINT_KEY, "value": "drill", "effect": "NoSchedule"}]),
        "NoSchedule: the scope is not the whole zone (a pod on it was spared)"
    );
    let mark: NodeMark = serde_json::from_str(
        a1["metadata"]["annotations"][MARK_ANNOTATION]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert!(mark.cordoned && mark.tainted && mark.uid == UID);
    assert_eq!(w.api.node("b1")["metadata"]["labels"].get(MARK_LABEL), None);
    assert_eq!(
        w.api.pod_names(),
        ["kube-system/dns-a", "shop/web-b"],
        "only the zone's in-scope pod is killed"
    );

    let fs = &w.status()["fault"];
    assert_eq!(
        (
            &fs["nodesCordoned"],
            &fs["nodesTainted"],
            &fs["podsKilled"],
            &fs["podsSpared"]
        ),
        (&json!(1), &json!(1), &json!(1), &json!(1))
    );
    assert_eq!(fs["taintEffect"], "NoSchedule");
    assert!(fs["zoneDarkAt"].is_string());
    assert_eq!(w.reason(), "zone-a is dark for 1s");
    let events = w.api.events();
    assert_eq!(
        events[0],
        (
            "ZoneCordoned".to_string(),
            format!("1 nodes cordoned, 1 tainted, tainted {TAINT_KEY}=NoSchedule")
        )
    );
    assert_eq!(events[1].0, "PodsKilled");
    assert!(
        events[1]
            .1
            .starts_with("1 pods killed with grace period 0 in ")
    );
}

/// A whole-zone drill's NoExecute taint goes on only once every pod is
/// killed: put on earlier, it would evict them gracefully.
#[tokio::test]
async fn a_whole_zone_drill_taints_no_execute_after_the_kill() {
    let w = world();
    injecting(
        &w,
        json!({"target": {"includeDaemonSets": true, "includeSystemNamespaces": true}}),
    );
    three_zones(&w.api);
    w.step().await;
    w.take_calls();
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if is_next(&w.step().await) {
            break;
        }
    }
    assert_eq!(w.phase(), "ZoneDown");
    let seen = lines(&w.take_calls());
    let deletes: Vec<usize> = (0..seen.len())
        .filter(|&i| seen[i].starts_with("DELETE "))
        .collect();
    let taint = seen
        .iter()
        .rposition(|c| *c == patch_node("a1"))
        .expect("the taint's patch");
    assert_eq!(deletes.len(), 2, "both pods on a1 killed: {seen:#?}");
    assert!(
        deletes.iter().all(|&d| d < taint),
        "the taint went on before a kill: {seen:#?}"
    );
    assert_eq!(
        w.api.node("a1")["spec"]["taints"],
        json!([{"key": TAINT_KEY, "value": "drill", "effect": "NoExecute"}])
    );
    assert_eq!(w.status()["fault"]["taintEffect"], "NoExecute");
}

#[tokio::test]
async fn injecting_refuses_when_the_zone_changed_past_a_guard_since_planning() {
    let w = world();
    injecting(&w, json!({"guards": {"maxNodes": 1}}));
    // Planned with a1 alone; a2 joined the zone since.
    six_nodes(&w.api);

    assert!(is_next(&w.step().await));
    assert_eq!(w.calls(), calls![NODES, HELD_NODES, STATUS, EVENT]);
    assert_eq!(w.phase(), "Restoring");
    let why = "refused at injection: zone zone-a has 2 nodes, more than guards.maxNodes=1";
    assert_eq!(w.status()["abortReason"], why);
    assert_eq!(w.reason(), format!("{why}; restoring the zone"));
    assert_eq!(w.api.events(), [("Refused".to_string(), why.to_string())]);
}

/// An experiment whose zone went dark `dark_for` seconds ago, holding a1.
fn zone_down(w: &World, spec: Value, dark_for: u64) {
    w.api.add_experiment(drill(
        spec,
        json!({"phase": "ZoneDown", "fault": fault(json!({
            "nodesTaken": 1, "nodesCordoned": 1, "nodesTainted": 1,
            "injectedAt": ago(dark_for), "zoneDarkAt": ago(dark_for)}))}),
    ));
    w.api
        .add_lease(lease(json!({UID: claim("drill", "zone-a", true)})));
    w.api.add_node(held(node("a1", "zone-a"), "drill", UID));
    w.api.add_node(node("b1", "zone-b"));
}

#[tokio::test]
async fn zone_down_waits_while_the_duration_lasts() {
    let w = world();
    // No keeper: it would watch.
    zone_down(
        &w,
        json!({"duration": "1h", "fault": {"keepDark": false}}),
        0,
    );

    assert_eq!(
        waits(w.step().await),
        Action::requeue(Duration::from_secs(5))
    );
    assert_eq!(w.calls(), Vec::<String>::new());
    assert_eq!(w.phase(), "ZoneDown");
}

#[tokio::test]
async fn zone_down_enters_restoring_once_the_duration_is_over() {
    let w = world();
    zone_down(
        &w,
        json!({"duration": "1s", "fault": {"keepDark": false}}),
        10,
    );

    assert!(is_next(&w.step().await));
    assert_eq!(w.calls(), calls![STATUS]);
    assert_eq!(w.phase(), "Restoring");
    assert_eq!(w.reason(), "zone-a was dark for 1s; restoring");
    assert!(w.status()["abortReason"].is_null());
    assert_eq!(
        w.api.node("a1")["metadata"]["labels"][MARK_LABEL],
        "drill",
        "restored in the next step, not this one"
    );
}

/// How many of `calls` publish an event with `reason` (a first one is
/// created; the recorder sends the next ones of a reason as a series).
fn published(calls: &[Call], reason: &str) -> usize {
    calls
        .iter()
        .filter(|c| c.path.starts_with("/apis/events.k8s.io/"))
        .filter(|c| c.body.as_ref().is_some_and(|b| b["reason"] == reason))
        .count()
}

#[tokio::test]
async fn more_zone_changes_than_are_listed_are_counted_and_published_once() {
    let w = world();
    zone_down(&w, json!({"duration": "1h"}), 0);
    // A keeper that noted 25 changes (it only holds its notes: a real one would watch).
    let state = Arc::new(KeeperState::default());
    for i in 0..25 {
        state.note(format!("node n{i} was deleted while dark"));
    }
    let running = tokio::spawn(std::future::pending());
    w.ctx
        .with_tasks(UID, |t| t.keeper = Some((running, state.clone())));

    assert_eq!(
        waits(w.step().await),
        Action::requeue(Duration::from_secs(5))
    );
    let calls = w.take_calls();
    assert_eq!(lines(&calls[..1]), calls![STATUS]);
    assert_eq!(calls.len(), 26);
    assert_eq!(published(&calls, "ZoneChanged"), 25);
    let fs = w.status()["fault"].clone();
    assert_eq!(fs["zoneChangesTotal"], 25);
    assert_eq!(fs["zoneChanges"].as_array().unwrap().len(), 20);

    // The same notes again: nothing is written or published.
    waits(w.step().await);
    assert_eq!(w.calls(), Vec::<String>::new());
    assert_eq!(w.status()["fault"], fs);

    // One more: counted and published once.
    state.note("node n25 was deleted while dark".into());
    waits(w.step().await);
    let calls = w.take_calls();
    assert_eq!(lines(&calls[..1]), calls![STATUS]);
    assert_eq!((calls.len(), published(&calls, "ZoneChanged")), (2, 1));
    waits(w.step().await);
    assert_eq!(w.calls(), Vec::<String>::new());
    assert_eq!(w.status()["fault"]["zoneChangesTotal"], 26);

    // Restoring drains the keeper: nothing is counted or published twice.
    let mut obj = w.api.experiment("drill");
    obj["status"]["phase"] = "Restoring".into();
    w.api.add_experiment(obj);
    assert!(is_next(&w.step().await));
    assert_eq!(w.phase(), "Completed");
    assert_eq!(published(&w.take_calls(), "ZoneChanged"), 0);
    let fs = &w.status()["fault"];
    assert_eq!(fs["zoneChangesTotal"], 26);
    assert_eq!(fs["zoneChanges"].as_array().unwrap().len(), 20);
}

#[tokio::test]
async fn restoring_restores_exactly_the_marked_nodes_then_completes() {
    let w = world();
    w.api.add_experiment(drill(
        json!({}),
        json!({"phase": "Restoring", "fault": fault(json!({
            "nodesTaken": 1, "nodesCordoned": 1, "nodesTainted": 1,
            "injectedAt": ago(5), "zoneDarkAt": ago(5)}))}),
    ));
    w.api.add_node(held(node("a1", "zone-a"), "drill", UID));
    w.api.add_node(node("b1", "zone-b"));
    // Held by another experiment: not ours to restore.
    let theirs = held(node("x1", "zone-b"), "other", "uid-other");
    w.api.add_node(theirs.clone());
    let seen = w.api.node("a1")["metadata"]["resourceVersion"].clone();

    assert!(is_next(&w.step().await));
    let calls = w.take_calls();
    assert_eq!(
        lines(&calls),
        calls![
            HELD_NODES,
            patch_node("a1"),
            NODES,
            STATUS,
            EVENT,
            STATUS,
            EVENT
        ]
    );
    assert_eq!(
        calls[1].body.as_ref().unwrap()["metadata"]["resourceVersion"],
        seen,
        "the restore is conditional on the node as listed"
    );

    let a1 = w.api.node("a1");
    assert_eq!(a1["metadata"]["labels"].get(MARK_LABEL), None);
    assert_eq!(a1["metadata"]["annotations"].get(MARK_ANNOTATION), None);
    assert_eq!(a1["spec"].get("unschedulable"), None);
    assert_eq!(a1["spec"]["taints"], json!([]));
    let x1 = w.api.node("x1");
    assert_eq!(x1["metadata"]["labels"][MARK_LABEL], "other");
    assert_eq!(x1["spec"], theirs["spec"]);

    assert_eq!(w.phase(), "Completed");
    assert_eq!(
        w.ended_with(),
        (
            "zone-a was dark for 1s and is restored".into(),
            "Completed".into()
        )
    );
    assert_eq!(w.status()["fault"]["nodesRestored"], 1);
    let reasons: Vec<String> = w.api.events().into_iter().map(|e| e.0).collect();
    assert_eq!(reasons, ["Restored", "Completed"]);
}

/// `node` without its mark label (and, with `record`, without its mark annotation).
fn unlabelled(mut node: Value, record: bool) -> Value {
    node["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove(MARK_LABEL);
    if record {
        node["metadata"]["annotations"]
            .as_object_mut()
            .unwrap()
            .remove(MARK_ANNOTATION);
    }
    node
}

#[tokio::test]
async fn a_held_node_whose_label_was_removed_by_hand_is_restored_all_the_same() {
    let w = world();
    w.api.add_experiment(drill(
        json!({}),
        json!({"phase": "Restoring", "fault": fault(json!({
            "nodesTaken": 3, "nodesCordoned": 3, "nodesTainted": 3,
            "injectedAt": ago(5), "zoneDarkAt": ago(5)}))}),
    ));
    // a1: its label removed; a2: its label and its record, only the taint is left
    // (and the cordon, which nothing says was ours); a3: still labelled.
    w.api
        .add_node(unlabelled(held(node("a1", "zone-a"), "drill", UID), false));
    w.api
        .add_node(unlabelled(held(node("a2", "zone-a"), "drill", UID), true));
    w.api.add_node(held(node("a3", "zone-a"), "drill", UID));
    // Another experiment's, unlabelled too: not ours to restore.
    w.api.add_node(unlabelled(
        held(node("x1", "zone-b"), "other", "uid-other"),
        false,
    ));
    let theirs = w.api.node("x1");

    assert!(is_next(&w.step().await));
    assert_eq!(
        w.calls(),
        calls![
            HELD_NODES,
            patch_node("a3"),
            NODES,
            patch_node("a1"),
            patch_node("a2"),
            STATUS,
            EVENT,
            STATUS,
            EVENT
        ]
    );
    for n in ["a1", "a3"] {
        let up = w.api.node(n);
        assert_eq!(up["metadata"]["labels"].get(MARK_LABEL), None, "{n}");
        assert_eq!(
            up["metadata"]["annotations"].get(MARK_ANNOTATION),
            None,
            "{n}"
        );
        assert_eq!(up["spec"], json!({"taints": []}), "{n}");
    }
    let a2 = w.api.node("a2");
    assert_eq!(a2["spec"], json!({"unschedulable": true, "taints": []}));
    assert_eq!(w.api.node("x1"), theirs);
    assert_eq!(w.status()["fault"]["nodesRestored"], 3);
    assert_eq!(w.phase(), "Completed");
}

#[tokio::test]
async fn the_orphan_sweep_finds_a_gone_experiments_nodes_by_any_trace() {
    let w = world();
    w.api
        .add_experiment(drill(json!({}), json!({"phase": "ZoneDown"})));
    // Held by `gone`, deleted without a cleanup: by its record, and by its taint alone.
    w.api.add_node(unlabelled(
        held(node("g1", "zone-b"), "gone", "uid-gone"),
        false,
    ));
    w.api.add_node(unlabelled(
        held(node("g2", "zone-b"), "gone", "uid-gone"),
        true,
    ));
    // Held by `drill`, which is there: its own restore finds them.
    w.api
        .add_node(unlabelled(held(node("a1", "zone-a"), "drill", UID), false));
    w.api
        .add_node(unlabelled(held(node("a2", "zone-a"), "drill", UID), true));
    w.api.add_node(node("b1", "zone-b"));
    let (ours, ours_taint_only) = (w.api.node("a1"), w.api.node("a2"));

    // The frequent sweep lists the labelled nodes only: none.
    let restored = crate::restore::restore_orphans(&w.ctx.client, false)
        .await
        .unwrap();
    assert!(restored.is_empty());
    assert_eq!(w.calls(), calls![HELD_NODES]);

    let restored = crate::restore::restore_orphans(&w.ctx.client, true)
        .await
        .unwrap();
    assert_eq!(restored, ["g1", "g2"]);
    assert_eq!(
        w.calls(),
        calls![NODES, EXPERIMENTS, patch_node("g1"), patch_node("g2")]
    );
    let g1 = w.api.node("g1");
    assert_eq!(g1["metadata"]["annotations"].get(MARK_ANNOTATION), None);
    assert_eq!(g1["spec"], json!({"taints": []}));
    assert_eq!(
        w.api.node("g2")["spec"],
        json!({"unschedulable": true, "taints": []})
    );
    assert_eq!(w.api.node("a1"), ours);
    assert_eq!(w.api.node("a2"), ours_taint_only);
}

// ---------------------------------------------------------------------------
// Aborts, the timeout, and the end.
// ---------------------------------------------------------------------------

fn with_abort(mut obj: Value, value: &str) -> Value {
    obj["metadata"]["annotations"] = json!({ABORT_ANNOTATION: value});
    obj
}

#[tokio::test]
async fn an_abort_in_baseline_ends_aborted_touching_nothing_and_gives_the_turn_back() {
    let w = world();
    w.api.add_experiment(with_abort(
        drill(json!({}), json!({"phase": "Baseline"})),
        "true",
    ));
    w.api
        .add_lease(lease(json!({UID: claim("drill", "zone-a", true)})));
    three_zones(&w.api);

    assert_eq!(
        w.reconcile().await,
        Action::requeue(std::time::Duration::from_secs(10)),
        "a just-ended drill is looked at again for a minute"
    );
    assert_eq!(
        w.calls(),
        calls![
            GET_DRILL,
            STATUS,
            EVENT,
            // Ended: nothing held, the turn given back.
            HELD_NODES,
            LEASE,
            REPLACE_LEASE,
        ]
    );
    assert_eq!(w.phase(), "Aborted");
    assert_eq!(
        w.ended_with(),
        (
            format!("aborted by annotation {ABORT_ANNOTATION}; nothing was changed"),
            "Aborted".into()
        )
    );
    assert_eq!(w.claims(), Some(json!({})));
}

#[tokio::test]
async fn an_abort_in_zone_down_goes_to_restoring() {
    let w = world();
    zone_down(&w, json!({"duration": "1h"}), 0);
    let obj = with_abort(w.api.experiment("drill"), "game day over");
    w.api.add_experiment(obj);

    assert!(is_next(&w.step().await));
    assert_eq!(w.calls(), calls![STATUS, EVENT]);
    assert_eq!(w.phase(), "Restoring");
    assert_eq!(w.status()["abortReason"], "aborted: game day over");
    assert_eq!(w.reason(), "aborted: game day over; restoring the zone");
    assert_eq!(
        w.api.events(),
        [("Aborting".to_string(), "aborted: game day over".to_string())]
    );
}

#[tokio::test]
async fn an_aborted_zone_is_restored_and_the_experiment_ends_aborted() {
    let w = world();
    zone_down(&w, json!({"duration": "1h"}), 0);
    let obj = with_abort(w.api.experiment("drill"), "");
    w.api.add_experiment(obj);

    assert_eq!(
        w.reconcile().await,
        Action::requeue(std::time::Duration::from_secs(10)),
        "a just-ended drill is looked at again for a minute"
    );
    assert_eq!(
        w.calls(),
        calls![
            GET_DRILL,
            // ZoneDown → Restoring.
            STATUS,
            EVENT,
            // Restoring → Aborted.
            HELD_NODES,
            patch_node("a1"),
            // Any other trace.
            NODES,
            STATUS,
            EVENT,
            STATUS,
            EVENT,
            // Ended.
            HELD_NODES,
            LEASE,
            REPLACE_LEASE,
        ]
    );
    assert_eq!(w.phase(), "Aborted");
    assert_eq!(
        w.ended_with(),
        (
            format!("aborted by annotation {ABORT_ANNOTATION}; zone restored"),
            "Aborted".into()
        )
    );
    assert_eq!(w.api.node("a1")["metadata"]["labels"].get(MARK_LABEL), None);
    assert_eq!(w.claims(), Some(json!({})));
}

/// Step once and check the fault timed out into Restoring with `why`.
async fn times_out(w: &World, why: &str) {
    assert!(is_next(&w.step().await));
    assert_eq!(w.calls(), calls![STATUS, EVENT]);
    assert_eq!(w.phase(), "Restoring");
    assert_eq!(w.status()["abortReason"], why);
    assert_eq!(w.api.events(), [("TimedOut".to_string(), why.to_string())]);
}

/// Set the experiment's `status.fault.<field>` to `value` (null: remove it).
fn set_fault(w: &World, field: &str, value: Value) {
    let mut obj = w.api.experiment("drill");
    match value {
        Value::Null => {
            obj["status"]["fault"]
                .as_object_mut()
                .unwrap()
                .remove(field);
        }
        v => obj["status"]["fault"][field] = v,
    }
    w.api.add_experiment(obj);
}

#[tokio::test]
async fn a_zone_dark_past_duration_and_grace_times_out_into_restoring() {
    let w = world();
    zone_down(&w, json!({"duration": "1h"}), 3 * 3600);
    times_out(
        &w,
        "timed out: the zone was down longer than duration + 120s grace",
    )
    .await;
}

#[tokio::test]
async fn the_dark_window_counts_from_when_the_zone_went_dark_not_from_the_injection_start() {
    let w = world();
    // Taking the zone down took 3 h; it has been dark for 10 s of its hour.
    zone_down(
        &w,
        json!({"duration": "1h", "fault": {"keepDark": false}}),
        10,
    );
    set_fault(&w, "injectedAt", ago(3 * 3600));
    assert_eq!(
        waits(w.step().await),
        Action::requeue(Duration::from_secs(5))
    );
    assert_eq!(w.calls(), Vec::<String>::new());
    assert_eq!(w.phase(), "ZoneDown");
}

#[tokio::test]
async fn a_power_loss_window_never_outlasts_the_node_agents_own_deadline() {
    // The agents bring the power back at injectedAt + duration + grace on
    // their own: past that, the drill ends, however recently the zone went dark.
    let w = world();
    zone_down(
        &w,
        json!({"duration": "1h", "fault": {"mode": "PowerLoss"}}),
        10,
    );
    set_fault(&w, "injectedAt", ago(3 * 3600));
    times_out(
        &w,
        "timed out: the zone was down longer than duration + 120s grace",
    )
    .await;
}

#[tokio::test]
async fn without_zone_dark_at_the_dark_window_counts_from_the_injection_start() {
    // Over once the duration has passed since the injection started.
    let w = world();
    zone_down(
        &w,
        json!({"duration": "1s", "fault": {"keepDark": false}}),
        10,
    );
    set_fault(&w, "zoneDarkAt", Value::Null);
    assert!(is_next(&w.step().await));
    assert_eq!(w.calls(), calls![STATUS]);
    assert_eq!(w.phase(), "Restoring");
    assert_eq!(w.reason(), "zone-a was dark for 1s; restoring");

    // And timed out past its grace.
    let w = world();
    zone_down(&w, json!({"duration": "1h"}), 3 * 3600);
    set_fault(&w, "zoneDarkAt", Value::Null);
    times_out(
        &w,
        "timed out: the zone was down longer than duration + 120s grace",
    )
    .await;
}

#[tokio::test]
async fn an_injection_past_its_own_timeout_and_grace_times_out_into_restoring() {
    let w = world();
    zone_down(&w, json!({"duration": "1h"}), 3 * 3600);
    let mut obj = w.api.experiment("drill");
    obj["status"]["phase"] = "Injecting".into();
    obj["status"]["fault"]
        .as_object_mut()
        .unwrap()
        .remove("zoneDarkAt");
    w.api.add_experiment(obj);
    times_out(
        &w,
        "timed out: taking the zone down took longer than 600s + 120s grace",
    )
    .await;
}

#[tokio::test]
async fn an_injection_slower_than_duration_and_grace_is_left_to_its_own_timeout() {
    let w = world();
    injecting(&w, json!({"duration": "1s"}));
    // Started 5 minutes ago (an operator restarted meanwhile, say): past
    // duration + grace, within the injection's 10 minutes.
    set_fault(&w, "injectedAt", ago(300));
    three_zones(&w.api);

    assert_eq!(
        waits(w.step().await),
        Action::requeue(Duration::from_millis(200))
    );
    assert_eq!(w.calls(), calls![NODES, HELD_NODES, RECORD, STATUS]);
    assert_eq!(w.phase(), "Injecting");
    assert!(w.status()["abortReason"].is_null());
    w.ctx.stop_tasks(UID);
}

#[tokio::test]
async fn a_finished_experiment_restores_what_it_still_holds_and_gives_its_turn_back() {
    let w = world();
    w.api
        .add_experiment(drill(json!({}), json!({"phase": "Completed"})));
    w.api.add_node(held(node("a1", "zone-a"), "drill", UID));
    w.api.add_node(node("b1", "zone-b"));
    w.api.add_lease(lease(json!({
        UID: claim("drill", "zone-a", true),
        "uid-other": claim("other", "zone-b", false),
    })));

    assert_eq!(waits(w.step().await), Action::await_change());
    assert_eq!(
        w.calls(),
        calls![HELD_NODES, patch_node("a1"), LEASE, REPLACE_LEASE, EVENT]
    );
    assert_eq!(w.api.node("a1")["metadata"]["labels"].get(MARK_LABEL), None);
    assert_eq!(
        w.api.events(),
        [(
            "Restored".to_string(),
            "restored 1 nodes still held after the experiment ended".to_string()
        )]
    );
    assert_eq!(
        w.claims(),
        Some(json!({"uid-other": claim("other", "zone-b", false)}))
    );
    assert_eq!(w.phase(), "Completed", "the status is left as it is");

    // Again: nothing held, no turn: only reads.
    assert_eq!(waits(w.step().await), Action::await_change());
    assert_eq!(w.calls(), calls![HELD_NODES, LEASE]);
}

#[tokio::test]
async fn a_deleted_experiment_restores_its_zone_and_gives_its_turn_back_before_letting_go() {
    let w = world();
    zone_down(&w, json!({"duration": "1h"}), 0);
    let mut obj = w.api.experiment("drill");
    obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z".into();
    w.api.add_experiment(obj);

    assert_eq!(w.reconcile().await, Action::await_change());
    let calls = w.take_calls();
    assert_eq!(
        lines(&calls),
        calls![
            HELD_NODES,
            patch_node("a1"),
            // Any other trace.
            NODES,
            LEASE,
            REPLACE_LEASE,
            EVENT,
            // Only then the finalizer goes.
            PATCH_DRILL,
        ]
    );
    assert_eq!(
        calls[6].body,
        Some(json!([
            {"op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER},
            {"op": "remove", "path": "/metadata/finalizers/0"},
        ]))
    );
    assert_eq!(w.api.node("a1")["metadata"]["labels"].get(MARK_LABEL), None);
    assert_eq!(w.claims(), Some(json!({})));
    assert_eq!(
        w.api.events(),
        [(
            "Restored".to_string(),
            "experiment deleted: restored 1 nodes".to_string()
        )]
    );
    assert_eq!(
        w.api.experiment("drill")["metadata"]["finalizers"],
        json!([])
    );
}

// ---------------------------------------------------------------------------
// A whole drill, one reconcile at a time.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_drill_runs_from_creation_to_completed_one_reconcile_at_a_time() {
    let w = world();
    let mut obj = drill(
        json!({"duration": "100ms", "fault": {"keepDark": false}}),
        Value::Null,
    );
    obj["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("finalizers");
    w.api.add_experiment(obj);
    three_zones(&w.api);

    let mut reconciles = 0;
    while w.phase() != "Completed" {
        reconciles += 1;
        assert!(reconciles < 400, "stuck in {}", w.phase());
        w.reconcile().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let calls = w.calls();
    let writes: Vec<&str> = calls
        .iter()
        .map(String::as_str)
        .filter(|c| !c.starts_with("GET "))
        .collect();
    let mut expected = vec![
        PATCH_DRILL,
        STATUS, // Planning
        CREATE_LEASE,
        SAVE_RECORD,
        STATUS, // Baseline
        EVENT,  // Planned
        STATUS, // Injecting
        STATUS, // nodes taken
    ];
    let (mark, kill, restore) = (
        patch_node("a1"),
        delete_pod("shop", "web-a"),
        patch_node("a1"),
    );
    expected.extend([mark.as_str(), kill.as_str()]);
    expected.extend([
        STATUS, // ZoneDown
        EVENT,  // ZoneCordoned
        EVENT,  // PodsKilled
        STATUS, // Restoring
        restore.as_str(),
        STATUS, // restored
        EVENT,  // Restored
        STATUS, // Completed
        EVENT,  // Completed
        REPLACE_LEASE,
    ]);
    assert_eq!(writes, expected);
    let reads: std::collections::BTreeSet<&str> = calls
        .iter()
        .map(String::as_str)
        .filter(|c| c.starts_with("GET "))
        .collect();
    let mut known: std::collections::BTreeSet<String> =
        planning_reads(&["a1"], &["b1", "c1"]).into_iter().collect();
    known.extend(calls![
        GET_DRILL,
        LEASE,
        RECORD,
        NODES,
        HELD_NODES,
        get_node("a1"),
        pods_to_kill_on("a1")
    ]);
    let unexpected: Vec<&&str> = reads.iter().filter(|r| !known.contains(**r)).collect();
    assert!(unexpected.is_empty(), "{unexpected:?}");

    assert_eq!(
        w.phases(),
        [
            "Planning",
            "Baseline",
            "Injecting",
            "ZoneDown",
            "Restoring",
            "Completed"
        ]
    );
    let a1 = w.api.node("a1");
    assert_eq!(
        a1["metadata"]["labels"],
        node("a1", "zone-a")["metadata"]["labels"]
    );
    assert_eq!(a1["metadata"]["annotations"].get(MARK_ANNOTATION), None);
    assert_eq!(a1["spec"], json!({}));
    assert_eq!(w.claims(), Some(json!({})));
    assert_eq!(w.api.pod_names(), ["kube-system/dns-a", "shop/web-b"]);
}

// ---------------------------------------------------------------------------
// A spec that can no longer be used never leaves the zone dark.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_spec_unusable_mid_fault_ends_the_fault_instead_of_failing_every_reconcile() {
    for phase in ["Injecting", "ZoneDown"] {
        let w = world();
        zone_down(&w, json!({"duration": "ten"}), 1);
        let mut obj = w.api.experiment("drill");
        obj["status"]["phase"] = phase.into();
        w.api.add_experiment(obj);

        assert!(is_next(&w.step().await), "from {phase}");
        assert_eq!(
            w.calls(),
            calls![HELD_NODES, patch_node("a1"), NODES, STATUS, EVENT],
            "from {phase}: the zone is restored before anything is written"
        );
        assert_eq!(w.api.node("a1")["metadata"]["labels"].get(MARK_LABEL), None);
        assert_eq!(w.phase(), "Restoring");
        let why = w.status()["abortReason"].as_str().unwrap().to_string();
        assert!(
            why.starts_with("the spec can no longer be used: spec.duration: "),
            "{why}"
        );
        assert_eq!(w.api.events()[0].0, "InvalidSpec");
    }
}

#[tokio::test]
async fn a_spec_unusable_while_restoring_still_restores_and_ends_without_a_verdict() {
    let w = world();
    w.api.add_experiment(drill(
        json!({"duration": "ten"}),
        json!({"phase": "Restoring", "fault": fault(json!({
            "nodesTaken": 1, "nodesCordoned": 1, "nodesTainted": 1,
            "injectedAt": ago(5), "zoneDarkAt": ago(5)}))}),
    ));
    w.api.add_node(held(node("a1", "zone-a"), "drill", UID));

    assert!(is_next(&w.step().await));
    assert_eq!(
        w.calls(),
        calls![
            HELD_NODES,
            patch_node("a1"),
            NODES,
            STATUS,
            EVENT,
            STATUS,
            EVENT
        ]
    );
    assert_eq!(w.api.node("a1")["metadata"]["labels"].get(MARK_LABEL), None);
    assert_eq!(w.phase(), "Aborted");
    let (reason, cond) = w.ended_with();
    assert!(
        reason.starts_with("spec.duration: ") && reason.ends_with("; zone restored, no verdict"),
        "{reason}"
    );
    assert_eq!(cond, "InvalidSpec");
}

#[tokio::test]
async fn a_lost_leader_says_which_experiments_hold_a_zone_and_that_they_resume() {
    let w = world();
    w.api.add_experiment(drill(json!({}), Value::Null));
    three_zones(&w.api);
    // A reconcile (which may walk several phases) notes the experiment as
    // it last wrote it.
    w.reconcile().await;
    let phase: crate::api::Phase = serde_json::from_value(json!(w.phase())).unwrap();
    assert_ne!(phase, crate::api::Phase::Pending, "the reconcile moved on");
    assert_eq!(
        w.ctx.abandon(),
        vec![super::Seen {
            name: "drill".into(),
            zone: "zone-a".into(),
            phase
        }]
    );
    let as_obj = |v: Value| -> crate::api::DataCenterFailure { serde_json::from_value(v).unwrap() };
    w.ctx
        .note(&as_obj(drill(json!({}), json!({"phase": "ZoneDown"}))));
    w.ctx.note(&as_obj(other("Planning")));
    let said = super::left_behind(&w.ctx.abandon());
    assert!(
        said.starts_with(
            "left mid-drill with the zone held: drill (ZoneDown, zone zone-a); each resumes"
        ),
        "{said}"
    );
    assert!(said.contains("when an operator leads again"), "{said}");
    assert!(
        said.ends_with("not yet begun, nothing changed: other (Planning, zone zone-b)"),
        "{said}"
    );
    // A finished experiment is no longer mentioned.
    w.ctx
        .note(&as_obj(drill(json!({}), json!({"phase": "Completed"}))));
    w.ctx.note(&as_obj(other("Aborted")));
    assert_eq!(
        super::left_behind(&w.ctx.abandon()),
        "no experiment holds a zone"
    );
}

// ---------------------------------------------------------------------------
// PowerLoss: darkness is verified, never assumed.
// ---------------------------------------------------------------------------

/// `node`, its power cut by the experiment `drill` until `deadline`, with
/// what its agent said (`ack`, `refused`) and whether it is still `ready`.
fn powered_off(mut node: Value, ack: Option<&str>, refused: Option<&str>, ready: bool) -> Value {
    let mark = NodeMark {
        experiment: "drill".into(),
        uid: UID.into(),
        prior_unschedulable: false,
        cordoned: false,
        tainted: false,
        taint_effect: None,
        power_loss: true,
    };
    node["metadata"]["labels"][MARK_LABEL] = "drill".into();
    node["metadata"]["labels"][POWER_LABEL] = "4000000000".into();
    let mut ann = json!({MARK_ANNOTATION: serde_json::to_string(&mark).unwrap()});
    if let Some(a) = ack {
        ann[POWER_ACK_ANNOTATION] = a.into();
    }
    if let Some(r) = refused {
        ann[POWER_REFUSED_ANNOTATION] = r.into();
    }
    node["metadata"]["annotations"] = ann;
    let status = if ready { "True" } else { "Unknown" };
    node["status"]["conditions"] = json!([{"type": "Ready", "status": status}]);
    node
}

/// A PowerLoss drill (`duration`, no SLOs) whose zone-a nodes a1 and a2
/// were labelled `dark_for` seconds ago.
fn power_down(w: &World, duration: &str, dark_for: u64, a1: Value, a2: Value) {
    w.api.add_experiment(drill(
        json!({"duration": duration, "fault": {"mode": "PowerLoss"}}),
        json!({"phase": "ZoneDown", "fault": fault(json!({
            "nodesTaken": 2, "injectedAt": ago(dark_for), "zoneDarkAt": ago(dark_for)}))}),
    ));
    w.api
        .add_lease(lease(json!({UID: claim("drill", "zone-a", true)})));
    w.api.add_node(a1);
    w.api.add_node(a2);
    w.api.add_node(node("b1", "zone-b"));
}

/// Step until the experiment ends (at most `n` steps).
async fn run_to_end(w: &World, n: usize) {
    for _ in 0..n {
        if ["Completed", "Aborted", "Failed"].contains(&w.phase().as_str()) {
            return;
        }
        w.step().await;
    }
    panic!("still {} after {n} steps", w.phase());
}

#[tokio::test]
async fn a_power_loss_whose_node_never_acknowledges_is_aborted_restored_and_inconclusive() {
    // The agent is not running on a2 (uninstalled, or never scheduled
    // there): its label is there, nothing answered.
    let w = world();
    let a1 = powered_off(node("a1", "zone-a"), Some("4000000000"), None, false);
    let a2 = powered_off(node("a2", "zone-a"), None, None, true);
    power_down(&w, "10m", 46, a1, a2);

    assert!(is_next(&w.step().await));
    assert_eq!(w.calls(), calls![HELD_NODES, STATUS, EVENT]);
    let why = "node a2 never acknowledged the power cut within 45s: no firedrill agent cut it off (is the agent DaemonSet running there?)";
    assert_eq!(w.phase(), "Restoring");
    assert_eq!(
        w.status()["abortReason"],
        format!("the zone was not verified dark: {why}")
    );
    let fs = w.status()["fault"].clone();
    assert_eq!(fs["notDark"], why);
    assert_eq!(
        (fs["nodesAcknowledged"].clone(), fs["nodesNotReady"].clone()),
        (json!(1), json!(1))
    );
    assert!(fs["darkVerifiedAt"].is_null());
    assert_eq!(w.api.events()[0].0, "NotDark");

    // The power comes back (the fake's nodes stay as they are: a1 is
    // made Ready again by hand, as its kubelet would).
    let mut a1 = w.api.node("a1");
    a1["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
    w.api.add_node(a1);
    run_to_end(&w, 6).await;
    assert_eq!(w.phase(), "Aborted");
    let st = w.status();
    assert_eq!(st["verdict"], "Inconclusive");
    assert_eq!(
        st["reason"],
        format!("the zone was not verified dark: {why}; zone restored")
    );
    for n in ["a1", "a2"] {
        let node = w.api.node(n);
        let (labels, ann) = (
            &node["metadata"]["labels"],
            &node["metadata"]["annotations"],
        );
        assert!(
            labels.get(POWER_LABEL).is_none() && labels.get(MARK_LABEL).is_none(),
            "{node}"
        );
        assert!(
            ann.get(POWER_ACK_ANNOTATION).is_none() && ann.get(MARK_ANNOTATION).is_none(),
            "{node}"
        );
    }
}

#[tokio::test]
async fn a_power_cut_the_agent_could_not_make_aborts_at_once_with_its_reason() {
    let w = world();
    let nft = "cannot cut the node off: nft failed (exit status: 1): Error: Could not process rule: Operation not permitted";
    let a1 = powered_off(node("a1", "zone-a"), None, Some(nft), true);
    let a2 = powered_off(node("a2", "zone-a"), Some("4000000000"), None, true);
    power_down(&w, "10m", 1, a1, a2);

    assert!(is_next(&w.step().await));
    assert_eq!(w.calls(), calls![HELD_NODES, STATUS, EVENT]);
    assert_eq!(w.phase(), "Restoring");
    assert_eq!(
        w.status()["fault"]["notDark"],
        format!("the firedrill agent on node a1 did not cut it off: {nft}")
    );
    run_to_end(&w, 6).await;
    assert_eq!(w.status()["verdict"], "Inconclusive");
    let a1 = w.api.node("a1");
    assert!(
        a1["metadata"]["annotations"]
            .get(POWER_REFUSED_ANNOTATION)
            .is_none(),
        "{a1}"
    );
}

#[tokio::test]
async fn a_power_loss_waits_for_every_acknowledgement_then_for_not_ready_then_counts_the_zone_dark()
{
    let w = world();
    let a1 = powered_off(node("a1", "zone-a"), None, None, true);
    let a2 = powered_off(node("a2", "zone-a"), Some("4000000000"), None, true);
    power_down(&w, "10m", 5, a1, a2);

    // Within the bounds: looked at again in a second, the counts written.
    assert_eq!(
        waits(w.step().await),
        Action::requeue(Duration::from_secs(1))
    );
    assert_eq!(w.calls(), calls![HELD_NODES, STATUS]);
    assert_eq!(w.phase(), "ZoneDown");
    assert_eq!(w.status()["fault"]["nodesAcknowledged"], 1);

    // Both acknowledged, still Ready: every two seconds now.
    let a1 = powered_off(node("a1", "zone-a"), Some("4000000000"), None, true);
    w.api.add_node(a1);
    assert_eq!(
        waits(w.step().await),
        Action::requeue(Duration::from_secs(2))
    );
    assert_eq!(w.calls(), calls![HELD_NODES, STATUS]);
    assert!(!w.status()["fault"]["nodesAcknowledgedAt"].is_null());

    // Both NotReady: dark, said once, then the duration runs its course.
    for n in ["a1", "a2"] {
        let mut node = w.api.node(n);
        node["status"]["conditions"] = json!([{"type": "Ready", "status": "Unknown"}]);
        w.api.add_node(node);
    }
    assert_eq!(
        waits(w.step().await),
        Action::requeue(Duration::from_secs(5))
    );
    assert_eq!(w.calls(), calls![HELD_NODES, STATUS, EVENT]);
    let fs = w.status()["fault"].clone();
    assert!(!fs["darkVerifiedAt"].is_null(), "{fs}");
    assert_eq!(fs["nodesNotReady"], 2);
    assert_eq!(w.api.events()[0].0, "ZoneDark");
    assert_eq!(
        waits(w.step().await),
        Action::requeue(Duration::from_secs(5))
    );
    assert_eq!(w.calls(), Vec::<String>::new(), "verified once");
}

#[tokio::test]
async fn a_power_loss_whose_window_ends_before_its_nodes_went_not_ready_is_inconclusive() {
    let w = world();
    let a1 = powered_off(node("a1", "zone-a"), Some("4000000000"), None, true);
    let a2 = powered_off(node("a2", "zone-a"), Some("4000000000"), None, false);
    power_down(&w, "20s", 21, a1, a2);

    assert!(is_next(&w.step().await));
    assert_eq!(w.phase(), "Restoring");
    let why = w.status()["fault"]["notDark"].as_str().unwrap().to_string();
    assert!(
        why.starts_with("node a1 still Ready when the dark window ended, 21s after the cut"),
        "{why}"
    );
}

#[tokio::test]
async fn planning_refuses_a_power_loss_on_the_zone_holding_the_api_server() {
    let w = world();
    w.api.add_experiment(drill(
        json!({"fault": {"mode": "PowerLoss"}}),
        json!({"phase": "Planning"}),
    ));
    for (n, z) in [("a1", "zone-a"), ("b1", "zone-b"), ("c1", "zone-c")] {
        let mut node = node(n, z);
        node["metadata"]["labels"][crate::api::AGENT_LABEL] = "0.1.0".into();
        w.api.add_node(node);
    }
    let mut apiserver = pod("kube-system", "kube-apiserver-a1", "a1");
    apiserver["metadata"]["labels"] = json!({"component": "kube-apiserver"});
    w.api.add_pod(apiserver);

    let calls = refused(
        &w,
        "the API server runs on a1 in zone-a: a power loss would cut the control plane off, and with it the drill's restore; set guards.allowApiServerZone to rehearse that anyway",
    )
    .await;
    assert!(calls.contains(&API_SERVER_SLICES.to_string()), "{calls:?}");
    assert!(calls.contains(&API_SERVER_PODS.to_string()), "{calls:?}");
}
