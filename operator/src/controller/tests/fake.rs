//! A small API server in memory, for driving the state machine without a
//! cluster. It records every request as `METHOD path?query` (query
//! percent-decoded, with the body of writes), and answers from what it
//! holds: experiments, nodes, pods, Leases, ConfigMaps and Events. Anything
//! else is a 404, so a call the test did not expect shows up in the
//! request list rather than passing silently.
//!
//! Writes honour what the state machine relies on: a status apply or node
//! patch carrying a stale `metadata.resourceVersion`, or a Lease replace on
//! a stale one, is a 409; every write bumps the resourceVersion.

use futures::FutureExt;
use http::{Method, Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// One request as the fake saw it.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: Method,
    /// Path and query, the query percent-decoded (and without the empty
    /// first pair kube writes).
    pub path: String,
    pub body: Option<Value>,
}

impl Call {
    /// `METHOD path?query`.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    /// The last resourceVersion handed out (one counter for every object).
    rv: u64,
    experiments: BTreeMap<String, Value>,
    nodes: BTreeMap<String, Value>,
    pods: Vec<Value>,
    /// By "namespace/name".
    leases: BTreeMap<String, Value>,
    config_maps: BTreeMap<String, Value>,
    events: Vec<Value>,
}

/// The fake API server; clones share it.
#[derive(Clone, Default)]
pub struct Fake(Arc<Mutex<State>>);

impl Fake {
    /// A client whose every request this fake answers.
    pub fn client(&self) -> kube::Client {
        let fake = self.clone();
        let svc = tower::service_fn(move |req: Request<Body>| {
            // Answered at once, in the order the requests arrive.
            let resp = fake.answer(req);
            async move { Ok::<_, std::convert::Infallible>(resp) }
        });
        kube::Client::new(svc, "default")
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    // ---- setting up --------------------------------------------------------

    pub fn add_experiment(&self, mut obj: Value) {
        let mut st = self.state();
        st.stamp(&mut obj);
        let name = name_of(&obj);
        st.experiments.insert(name, obj);
    }

    pub fn add_node(&self, mut node: Value) {
        let mut st = self.state();
        st.stamp(&mut node);
        let name = name_of(&node);
        st.nodes.insert(name, node);
    }

    pub fn add_pod(&self, mut pod: Value) {
        let mut st = self.state();
        st.stamp(&mut pod);
        st.pods.push(pod);
    }

    pub fn add_lease(&self, mut lease: Value) {
        let mut st = self.state();
        st.stamp(&mut lease);
        let key = key_of(&lease);
        st.leases.insert(key, lease);
    }

    pub fn add_config_map(&self, mut cm: Value) {
        let mut st = self.state();
        st.stamp(&mut cm);
        let key = key_of(&cm);
        st.config_maps.insert(key, cm);
    }

    /// Change an experiment behind the operator's back (bumps its resourceVersion).
    pub fn touch_experiment(&self, name: &str) {
        let mut st = self.state();
        let mut obj = st.experiments.remove(name).expect("no such experiment");
        st.stamp(&mut obj);
        st.experiments.insert(name.into(), obj);
    }

    // ---- reading back ------------------------------------------------------

    /// The requests so far, taken out of the record.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.state().calls)
    }

    /// The requests so far as `METHOD path?query` lines, taken out of the record.
    pub fn take_lines(&self) -> Vec<String> {
        self.take_calls().iter().map(Call::line).collect()
    }

    pub fn experiment(&self, name: &str) -> Value {
        self.state().experiments[name].clone()
    }

    pub fn node(&self, name: &str) -> Value {
        self.state().nodes[name].clone()
    }

    /// `namespace/name` of every pod there is.
    pub fn pod_names(&self) -> Vec<String> {
        self.state()
            .pods
            .iter()
            .map(|p| {
                format!(
                    "{}/{}",
                    p["metadata"]["namespace"].as_str().unwrap(),
                    name_of(p)
                )
            })
            .collect()
    }

    pub fn lease(&self, ns: &str, name: &str) -> Option<Value> {
        self.state().leases.get(&format!("{ns}/{name}")).cloned()
    }

    pub fn config_map(&self, ns: &str, name: &str) -> Option<Value> {
        self.state()
            .config_maps
            .get(&format!("{ns}/{name}"))
            .cloned()
    }

    /// `(reason, note)` of every event published.
    pub fn events(&self) -> Vec<(String, String)> {
        self.state()
            .events
            .iter()
            .map(|e| {
                (
                    e["reason"].as_str().unwrap_or_default().to_string(),
                    e["note"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    // ---- answering ---------------------------------------------------------

    fn answer(&self, req: Request<Body>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let bytes = body
            .collect_bytes()
            .now_or_never()
            .expect("request bodies are in memory")
            .expect("a readable request body");
        let body: Option<Value> =
            (!bytes.is_empty()).then(|| serde_json::from_slice(&bytes).expect("a JSON body"));
        let pq = parts.uri.path_and_query().expect("a path");
        let query: BTreeMap<String, String> = form_urlencoded(pq.query().unwrap_or(""));
        // kube writes `path?&a=b`: shown as `path?a=b`.
        let shown = match pq.query().map(|q| q.trim_start_matches('&')) {
            Some(q) if !q.is_empty() => format!("{}?{}", pq.path(), percent_decode(q)),
            _ => pq.path().to_string(),
        };
        let mut st = self.state();
        st.calls.push(Call {
            method: parts.method.clone(),
            path: shown,
            body: body.clone(),
        });
        let segments: Vec<&str> = pq.path().trim_start_matches('/').split('/').collect();
        let (code, value) = st.route(&parts.method, &segments, &query, body);
        Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&value).unwrap()))
            .unwrap()
    }
}

type Answer = (u16, Value);

impl State {
    /// Give `obj` the next resourceVersion.
    fn stamp(&mut self, obj: &mut Value) {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = self.rv.to_string().into();
    }

    fn route(
        &mut self,
        method: &Method,
        path: &[&str],
        query: &BTreeMap<String, String>,
        body: Option<Value>,
    ) -> Answer {
        let labels = query.get("labelSelector").map(String::as_str);
        let body = body.unwrap_or(Value::Null);
        match (method.as_str(), path) {
            ("GET", ["api", "v1", "nodes"]) => {
                let items = self.nodes.values().filter(|n| matches(n, labels)).cloned();
                self.list("NodeList", "v1", items.collect())
            }
            ("GET", ["api", "v1", "nodes", name]) => found(self.nodes.get(*name)),
            ("PATCH", ["api", "v1", "nodes", name]) => self.patch_node(name, body),
            ("GET", ["api", "v1", "pods"]) => {
                let node = query
                    .get("fieldSelector")
                    .and_then(|f| f.strip_prefix("spec.nodeName="))
                    .expect("pods are listed node by node");
                let items = self
                    .pods
                    .iter()
                    .filter(|p| p["spec"]["nodeName"].as_str().unwrap_or_default() == node);
                self.list("PodList", "v1", items.cloned().collect())
            }
            ("GET", ["api", "v1", "namespaces", ns, "pods"]) => {
                let items = self
                    .pods
                    .iter()
                    .filter(|p| p["metadata"]["namespace"] == *ns && matches(p, labels));
                self.list("PodList", "v1", items.cloned().collect())
            }
            ("DELETE", ["api", "v1", "namespaces", ns, "pods", name]) => {
                self.delete_pod(ns, name, body)
            }
            ("GET", ["api", "v1", "namespaces", ns, "configmaps", name]) => {
                found(self.config_maps.get(&format!("{ns}/{name}")))
            }
            ("PATCH", ["api", "v1", "namespaces", ns, "configmaps", name]) => {
                self.apply_config_map(ns, name, body)
            }
            (
                "GET",
                [
                    "apis",
                    "coordination.k8s.io",
                    "v1",
                    "namespaces",
                    ns,
                    "leases",
                    name,
                ],
            ) => found(self.leases.get(&format!("{ns}/{name}"))),
            (
                "POST",
                [
                    "apis",
                    "coordination.k8s.io",
                    "v1",
                    "namespaces",
                    ns,
                    "leases",
                ],
            ) => self.create_lease(ns, body),
            (
                "PUT",
                [
                    "apis",
                    "coordination.k8s.io",
                    "v1",
                    "namespaces",
                    ns,
                    "leases",
                    name,
                ],
            ) => self.replace_lease(ns, name, body),
            ("POST", ["apis", "events.k8s.io", "v1", "namespaces", _, "events"]) => {
                self.events.push(body.clone());
                (201, body)
            }
            ("GET", ["apis", "policy", "v1", "poddisruptionbudgets"]) => {
                self.list("PodDisruptionBudgetList", "policy/v1", vec![])
            }
            (
                "GET",
                [
                    "apis",
                    "chaos.firedrill.dev",
                    "v1alpha1",
                    "datacenterfailures",
                ],
            ) => {
                let items = self.experiments.values().cloned().collect();
                self.list(
                    "DataCenterFailureList",
                    "chaos.firedrill.dev/v1alpha1",
                    items,
                )
            }
            (
                "GET",
                [
                    "apis",
                    "chaos.firedrill.dev",
                    "v1alpha1",
                    "datacenterfailures",
                    name,
                ],
            ) => found(self.experiments.get(*name)),
            (
                "PATCH",
                [
                    "apis",
                    "chaos.firedrill.dev",
                    "v1alpha1",
                    "datacenterfailures",
                    name,
                ],
            ) => self.patch_finalizers(name, body),
            (
                "PATCH",
                [
                    "apis",
                    "chaos.firedrill.dev",
                    "v1alpha1",
                    "datacenterfailures",
                    name,
                    "status",
                ],
            ) => self.apply_status(name, body),
            _ => not_found(),
        }
    }

    fn list(&self, kind: &str, api_version: &str, items: Vec<Value>) -> Answer {
        (
            200,
            json!({"kind": kind, "apiVersion": api_version,
                   "metadata": {"resourceVersion": self.rv.to_string()}, "items": items}),
        )
    }

    /// Server-side apply of an experiment's status: the operator owns the
    /// whole status, so the applied one replaces it.
    fn apply_status(&mut self, name: &str, body: Value) -> Answer {
        let Some(mut obj) = self.experiments.get(name).cloned() else {
            return not_found();
        };
        if stale(&obj, &body) {
            return conflict();
        }
        obj["status"] = body["status"].clone();
        self.stamp(&mut obj);
        self.experiments.insert(name.into(), obj.clone());
        (200, obj)
    }

    /// The JSON patch kube's finalizer helper sends: test, then add or remove.
    fn patch_finalizers(&mut self, name: &str, body: Value) -> Answer {
        let Some(mut obj) = self.experiments.get(name).cloned() else {
            return not_found();
        };
        for op in body.as_array().expect("a JSON patch") {
            let path = op["path"].as_str().unwrap();
            match op["op"].as_str().unwrap() {
                "test" => {
                    let here = obj.pointer(path).cloned().unwrap_or(Value::Null);
                    if here != op["value"] {
                        return status(422, "Invalid", "test operation failed");
                    }
                }
                "add" if path == "/metadata/finalizers" => {
                    obj["metadata"]["finalizers"] = op["value"].clone();
                }
                "add" if path == "/metadata/finalizers/-" => {
                    let list = obj["metadata"]["finalizers"].as_array_mut().unwrap();
                    list.push(op["value"].clone());
                }
                "remove" => {
                    let i: usize = path
                        .strip_prefix("/metadata/finalizers/")
                        .and_then(|i| i.parse().ok())
                        .expect("only finalizers are removed");
                    obj["metadata"]["finalizers"]
                        .as_array_mut()
                        .unwrap()
                        .remove(i);
                }
                other => panic!("JSON patch op {other} {path} not supported by the fake"),
            }
        }
        self.stamp(&mut obj);
        self.experiments.insert(name.into(), obj.clone());
        (200, obj)
    }

    /// A merge patch, conditional on the resourceVersion it carries.
    fn patch_node(&mut self, name: &str, mut patch: Value) -> Answer {
        let Some(mut node) = self.nodes.get(name).cloned() else {
            return not_found();
        };
        if stale(&node, &patch) {
            return conflict();
        }
        if let Some(meta) = patch["metadata"].as_object_mut() {
            meta.remove("resourceVersion");
        }
        merge(&mut node, &patch);
        self.stamp(&mut node);
        self.nodes.insert(name.into(), node.clone());
        (200, node)
    }

    fn delete_pod(&mut self, ns: &str, name: &str, params: Value) -> Answer {
        let Some(i) = self
            .pods
            .iter()
            .position(|p| p["metadata"]["namespace"] == ns && p["metadata"]["name"] == name)
        else {
            return not_found();
        };
        let want_uid = &params["preconditions"]["uid"];
        if !want_uid.is_null() && *want_uid != self.pods[i]["metadata"]["uid"] {
            return conflict();
        }
        (200, self.pods.remove(i))
    }

    /// Server-side apply of a ConfigMap: created, or its data merged.
    fn apply_config_map(&mut self, ns: &str, name: &str, body: Value) -> Answer {
        let key = format!("{ns}/{name}");
        let mut cm = match self.config_maps.get(&key) {
            Some(cm) => {
                let mut cm = cm.clone();
                merge(&mut cm, &body);
                cm
            }
            None => body,
        };
        self.stamp(&mut cm);
        self.config_maps.insert(key, cm.clone());
        (200, cm)
    }

    fn create_lease(&mut self, ns: &str, mut lease: Value) -> Answer {
        let key = format!("{ns}/{}", name_of(&lease));
        if self.leases.contains_key(&key) {
            return status(409, "AlreadyExists", "the lease exists");
        }
        self.stamp(&mut lease);
        self.leases.insert(key, lease.clone());
        (201, lease)
    }

    fn replace_lease(&mut self, ns: &str, name: &str, mut lease: Value) -> Answer {
        let key = format!("{ns}/{name}");
        let Some(current) = self.leases.get(&key) else {
            return not_found();
        };
        if lease["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
            return conflict();
        }
        self.stamp(&mut lease);
        self.leases.insert(key, lease.clone());
        (200, lease)
    }
}

fn name_of(obj: &Value) -> String {
    obj["metadata"]["name"]
        .as_str()
        .expect("a name")
        .to_string()
}

fn key_of(obj: &Value) -> String {
    let ns = obj["metadata"]["namespace"].as_str().expect("a namespace");
    format!("{ns}/{}", name_of(obj))
}

/// Whether a write carrying a resourceVersion was computed from another one.
fn stale(current: &Value, write: &Value) -> bool {
    let sent = &write["metadata"]["resourceVersion"];
    !sent.is_null() && *sent != current["metadata"]["resourceVersion"]
}

/// A label selector of `key` (exists) and `key=value` terms, comma-separated.
fn matches(obj: &Value, selector: Option<&str>) -> bool {
    let labels = &obj["metadata"]["labels"];
    selector
        .into_iter()
        .flat_map(|s| s.split(','))
        .all(|term| match term.split_once('=') {
            Some((k, v)) => labels[k] == v,
            None => !labels[term].is_null(),
        })
}

fn found(obj: Option<&Value>) -> Answer {
    match obj {
        Some(o) => (200, o.clone()),
        None => not_found(),
    }
}

fn status(code: u16, reason: &str, message: &str) -> Answer {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "reason": reason, "message": message, "code": code}),
    )
}

fn not_found() -> Answer {
    status(404, "NotFound", "not found")
}

fn conflict() -> Answer {
    status(
        409,
        "Conflict",
        "the object has been modified; please apply your changes to the latest version and try again",
    )
}

pub(crate) use crate::fault::fixtures::merge;

fn form_urlencoded(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let s = s.replace('+', " ");
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}
