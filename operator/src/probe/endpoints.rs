//! The ready endpoints of Services while a drill runs: one EndpointSlice
//! watch for the whole cluster, a [`Timeline`] per Service (Ok while it has
//! a ready endpoint, Fail while it has none), which the verdict reads to
//! tell which Service's outage an SLO's failure followed.
//!
//! Bounded: only the slices of watched Services are kept (the target
//! namespaces' and the dependency graph's), one small entry per slice, and
//! at most [`MAX_SERVICES`] Services are recorded; a timeline only grows
//! when the Service's readiness changes.

use crate::slo::{Outcome, Timeline};
use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The most Services whose endpoints are recorded per experiment.
pub const MAX_SERVICES: usize = crate::api::MAX_WATCHED_SERVICES;

/// How often the current state is sampled besides on every change.
pub const TICK: Duration = Duration::from_millis(crate::api::ENDPOINTS_TICK_MS);

/// The label an EndpointSlice names its Service with.
const SERVICE_LABEL: &str = "kubernetes.io/service-name";

/// Which Services to record.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Watched {
    /// Every Service in these namespaces.
    pub namespaces: BTreeSet<String>,
    /// These Services (`namespace/name`).
    pub services: BTreeSet<String>,
}

impl Watched {
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty() && self.services.is_empty()
    }

    fn wants(&self, ns: &str, svc: &str) -> bool {
        self.namespaces.contains(ns) || self.services.contains(&format!("{ns}/{svc}"))
    }
}

/// Ready endpoints per Service, from the slices seen. Pure.
#[derive(Debug, Default)]
pub struct Endpoints {
    watched: Watched,
    /// `namespace/slice` → (`namespace/service`, ready endpoints).
    slices: HashMap<String, (String, u32)>,
    /// Services recorded (at most [`MAX_SERVICES`]), in the order first seen.
    services: BTreeSet<String>,
}

impl Endpoints {
    pub fn new(watched: Watched) -> Self {
        let services = watched
            .services
            .iter()
            .take(MAX_SERVICES)
            .cloned()
            .collect();
        Endpoints {
            watched,
            slices: HashMap::new(),
            services,
        }
    }

    /// A slice was added or changed. Returns its Service when recorded.
    pub fn apply(&mut self, s: &EndpointSlice) -> Option<String> {
        let ns = s.namespace().unwrap_or_default();
        let svc = s.labels().get(SERVICE_LABEL)?.clone();
        if !self.watched.wants(&ns, &svc) {
            return None;
        }
        let key = format!("{ns}/{svc}");
        if !self.services.contains(&key) {
            if self.services.len() >= MAX_SERVICES {
                return None;
            }
            self.services.insert(key.clone());
        }
        // An endpoint whose `ready` is unset counts as ready (the API's rule).
        let ready = s
            .endpoints
            .iter()
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
            .count() as u32;
        self.slices
            .insert(format!("{ns}/{}", s.name_any()), (key.clone(), ready));
        Some(key)
    }

    /// A slice was deleted.
    pub fn delete(&mut self, s: &EndpointSlice) -> Option<String> {
        let ns = s.namespace().unwrap_or_default();
        self.slices
            .remove(&format!("{ns}/{}", s.name_any()))
            .map(|(svc, _)| svc)
    }

    /// Forget every slice (a relist follows).
    pub fn clear(&mut self) {
        self.slices.clear();
    }

    pub fn ready(&self, svc: &str) -> u32 {
        self.slices
            .values()
            .filter(|(s, _)| s == svc)
            .map(|(_, n)| n)
            .sum()
    }

    /// Every recorded Service's state now.
    pub fn outcomes(&self) -> Vec<(String, Outcome)> {
        self.services
            .iter()
            .map(|s| {
                let o = if self.ready(s) > 0 {
                    Outcome::Ok
                } else {
                    Outcome::Fail
                };
                (s.clone(), o)
            })
            .collect()
    }
}

/// The timelines the watch writes, shared with the runner.
pub type Timelines = Arc<Mutex<BTreeMap<String, Timeline>>>;

/// Sample every recorded Service into `timelines`: on each change of a
/// slice, and every [`TICK`]. Runs until aborted; a broken watch is
/// restarted by the watcher (with backoff), and a relist replaces what was
/// known.
pub async fn run(client: Client, watched: Watched, timelines: Timelines) {
    let api = Api::<EndpointSlice>::all(client);
    let mut state = Endpoints::new(watched);
    let mut relist: Option<Endpoints> = None;
    let stream = watcher(api, watcher::Config::default().any_semantic());
    let mut stream = std::pin::pin!(stream);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let cap = (TICK * 3).as_millis() as i64;
    // Nothing is known until the first list is complete: sampling before it
    // would record every watched Service as down (no slices seen yet).
    let mut listed = false;
    loop {
        tokio::select! {
            ev = stream.next() => {
                match ev {
                    Some(Ok(watcher::Event::Apply(s))) => { state.apply(&s); }
                    Some(Ok(watcher::Event::Delete(s))) => { state.delete(&s); }
                    Some(Ok(watcher::Event::Init)) => {
                        let mut fresh = Endpoints::new(state.watched.clone());
                        fresh.services = state.services.clone();
                        relist = Some(fresh);
                        continue;
                    }
                    Some(Ok(watcher::Event::InitApply(s))) => {
                        if let Some(r) = relist.as_mut() { r.apply(&s); }
                        continue;
                    }
                    Some(Ok(watcher::Event::InitDone)) => {
                        if let Some(r) = relist.take() { state = r; }
                        listed = true;
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "EndpointSlice watch");
                        continue;
                    }
                    None => return,
                }
            }
            _ = tick.tick() => {}
        }
        if !listed {
            continue;
        }
        let at = super::now_ms();
        let mut tls = timelines.lock().unwrap();
        for (svc, o) in state.outcomes() {
            let tl = tls.entry(svc).or_insert_with(|| Timeline::with_cap(cap));
            // Only a change or a tick adds a sample: a run of equal samples
            // is one segment.
            if tl.pending.map(|(_, p)| p) != Some(o)
                || tl.pending.is_none_or(|(t, _)| at - t >= cap / 3)
            {
                tl.push(at, o);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(ns: &str, name: &str, svc: &str, ready: &[Option<bool>]) -> EndpointSlice {
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": ns, "name": name, "labels": {SERVICE_LABEL: svc}},
            "addressType": "IPv4",
            "endpoints": ready.iter().map(|r| match r {
                Some(r) => serde_json::json!({"addresses": ["10.0.0.1"], "conditions": {"ready": r}}),
                None => serde_json::json!({"addresses": ["10.0.0.1"]}),
            }).collect::<Vec<_>>()
        }))
        .unwrap()
    }

    #[test]
    fn ready_endpoints_are_summed_over_a_services_slices_and_follow_changes() {
        let mut e = Endpoints::new(Watched {
            namespaces: ["fleet".to_string()].into(),
            services: ["auth/login".to_string()].into(),
        });
        assert_eq!(
            e.apply(&slice("fleet", "tokens-a", "tokens", &[Some(true), None])),
            Some("fleet/tokens".into())
        );
        e.apply(&slice("fleet", "tokens-b", "tokens", &[Some(false)]));
        assert_eq!(e.ready("fleet/tokens"), 2);
        e.apply(&slice("fleet", "tokens-a", "tokens", &[Some(false)]));
        assert_eq!(e.ready("fleet/tokens"), 0);
        // Not watched: not kept.
        assert_eq!(e.apply(&slice("shop", "web-a", "web", &[Some(true)])), None);
        // Named by the graph, but no slice yet: recorded as down.
        let out: BTreeMap<String, Outcome> = e.outcomes().into_iter().collect();
        assert_eq!(out["fleet/tokens"], Outcome::Fail);
        assert_eq!(out["auth/login"], Outcome::Fail);
        assert!(!out.contains_key("shop/web"));
        e.apply(&slice("auth", "login-a", "login", &[Some(true)]));
        e.delete(&slice("fleet", "tokens-a", "tokens", &[]));
        e.delete(&slice("fleet", "tokens-b", "tokens", &[]));
        let out: BTreeMap<String, Outcome> = e.outcomes().into_iter().collect();
        assert_eq!(
            (out["auth/login"], out["fleet/tokens"]),
            (Outcome::Ok, Outcome::Fail)
        );
    }

    #[test]
    fn at_most_max_services_are_recorded() {
        let mut e = Endpoints::new(Watched {
            namespaces: ["big".to_string()].into(),
            services: BTreeSet::new(),
        });
        for i in 0..MAX_SERVICES + 10 {
            e.apply(&slice(
                "big",
                &format!("s{i}-x"),
                &format!("s{i}"),
                &[Some(true)],
            ));
        }
        assert_eq!(e.outcomes().len(), MAX_SERVICES);
        assert_eq!(e.slices.len(), MAX_SERVICES);
    }
}
