//! Killing pods: deleted with grace period 0, as in a fire, with retries
//! for server errors and patience for throttling, paced by a window that
//! follows the API server's answers ([`super::pace`]).

use super::pace::{FLOOR, Outcome, Pacer, Window};
use crate::metrics::Metrics;
use crate::plan::{PodInfo, Scope, collect};
use futures::{Stream, StreamExt, stream};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, DeleteParams, Preconditions};
use std::time::Duration;

/// How often a pod delete that fails (a server error, a lost connection) is
/// tried before the pod counts as not killed.
const KILL_ATTEMPTS: u32 = 5;

/// How long one pod's delete may wait in total while the API server throttles
/// it (HTTP 429) before the pod counts as not killed. Throttling is the API
/// server's priority and fairness at work, not a failure: it is waited out
/// rather than counted against [`KILL_ATTEMPTS`].
const THROTTLE_BUDGET: Duration = Duration::from_secs(120);

/// Why a pod could not be killed.
#[derive(Debug, thiserror::Error)]
#[error("{pod}: {why}")]
pub struct KillError {
    pub pod: String,
    pub why: String,
}

/// The wait before retry `attempt` (1-based): doubling from 100 ms up to
/// `cap`, with up to half of it taken off by a jitter derived from `seed`, so
/// deletes throttled together do not come back together.
pub fn retry_wait(attempt: u32, cap: Duration, seed: u64) -> Duration {
    let full = Duration::from_millis(100)
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(cap);
    // splitmix64: a well-spread value from (seed, attempt) without a random source.
    let mut z = seed ^ (u64::from(attempt)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let off = full.as_micros() as u64 / 2 * (z % 1024) / 1024;
    full - Duration::from_micros(off)
}

fn seed_of(pod: &PodInfo) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    pod.namespace.hash(&mut h);
    pod.name.hash(&mut h);
    h.finish()
}

/// Delete one pod with grace period 0, only if it is still the pod we saw.
/// Returns whether this call killed it. Server errors and lost connections
/// are retried with backoff, at most [`KILL_ATTEMPTS`] times; throttling
/// (429) is waited out for up to [`THROTTLE_BUDGET`].
pub async fn kill(client: &Client, pod: &PodInfo, uid: Option<String>) -> Result<bool, KillError> {
    kill_paced(client, pod, uid, None).await
}

/// [`kill`], each attempt let through by `pacer` (when given) and its
/// answer reported to it.
async fn kill_paced(
    client: &Client,
    pod: &PodInfo,
    uid: Option<String>,
    pacer: Option<&Pacer>,
) -> Result<bool, KillError> {
    let api = Api::<Pod>::namespaced(client.clone(), &pod.namespace);
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: uid.map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..Default::default()
    };
    let seed = seed_of(pod);
    let mut failures = 0;
    let mut throttles = 0;
    let mut throttled_for = Duration::ZERO;
    loop {
        let slot = match pacer {
            Some(p) => Some(p.slot().await),
            None => None,
        };
        let answer = api.delete(&pod.name, &dp).await;
        if let Some(slot) = slot {
            let took = slot.elapsed();
            slot.answered(outcome_of(&answer, took));
        }
        let (why, wait) = match answer {
            Ok(_) => return Ok(true),
            // Gone already, or replaced by a new pod of the same name: nothing to kill.
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => return Ok(false),
            Err(kube::Error::Api(e)) if e.code == 429 => {
                throttles += 1;
                let wait = retry_wait(throttles, Duration::from_secs(5), seed);
                if throttled_for + wait > THROTTLE_BUDGET {
                    return Err(KillError {
                        pod: pod.key(),
                        why: format!(
                            "HTTP 429: {} (throttled for {} s)",
                            e.message,
                            throttled_for.as_secs()
                        ),
                    });
                }
                throttled_for += wait;
                tokio::time::sleep(wait).await;
                continue;
            }
            Err(kube::Error::Api(e)) if e.code >= 500 => {
                failures += 1;
                (
                    format!("HTTP {}: {}", e.code, e.message),
                    retry_wait(failures, Duration::from_secs(2), seed),
                )
            }
            Err(kube::Error::Api(e)) => {
                return Err(KillError {
                    pod: pod.key(),
                    why: format!("HTTP {}: {}", e.code, e.message),
                });
            }
            Err(e) => {
                failures += 1;
                (
                    e.to_string(),
                    retry_wait(failures, Duration::from_secs(2), seed),
                )
            }
        };
        if failures >= KILL_ATTEMPTS {
            return Err(KillError {
                pod: pod.key(),
                why: format!("{why} (after {failures} attempts)"),
            });
        }
        tokio::time::sleep(wait).await;
    }
}

/// What a delete's answer says about the API server's load.
fn outcome_of<T>(answer: &kube::Result<T>, took: Duration) -> Outcome {
    match answer {
        Ok(_) => Outcome::of(Some(200), false, took),
        Err(kube::Error::Api(e)) => Outcome::of(Some(e.code), false, took),
        Err(e) => Outcome::of(None, timed_out(e), took),
    }
}

/// Whether an error is, at its root, a timeout.
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// What one pass over the zone's pods did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KillReport {
    pub killed: i64,
    /// Pods on the nodes that the scope spares (finished pods not counted).
    pub spared: i64,
    /// Pods that could not be deleted, and the first reason.
    pub failed: i64,
    pub first_failure: Option<String>,
}

/// Kill every in-scope pod on `nodes`. Pods are listed per node (field
/// selector), never cluster-wide, and each node's pods are deleted as soon
/// as its list arrives, so the first kills do not wait for the last list.
/// A pod that cannot be deleted is counted and reported; the others are
/// still killed. At most `concurrency` deletes are in flight, fewer while
/// the API server pushes back (the window of [`super::pace`]).
/// The window shows in `metrics` (`firedrill_delete_window`, and its
/// halvings in `firedrill_delete_window_halvings_total`).
pub async fn kill_pods_on(
    client: &Client,
    nodes: &[String],
    scope: &Scope,
    concurrency: usize,
    metrics: &Metrics,
) -> Result<KillReport, crate::Error> {
    let conc = concurrency.max(1);
    let pacer = Pacer::shown_in(Window::new(FLOOR, conc), metrics);
    let pacer = &pacer;
    let done = found_on(client, nodes, scope, conc.min(32))
        .map(|f| async move {
            match f {
                Found::Victim(info, uid) => {
                    Done::Kill(kill_paced(client, &info, uid, Some(pacer)).await)
                }
                Found::Spared => Done::Spared,
                Found::ListFailed(e) => Done::ListFailed(e),
            }
        })
        .buffer_unordered(conc);
    let report = tally(done).await;
    let window = pacer.window();
    metrics.delete_window_halvings.inc_by(window.decreases);
    if window.decreases > 0 {
        tracing::info!(
            halved = window.decreases,
            window = window.limit(),
            ceiling = conc,
            "pod deletes paced: the API server pushed back"
        );
    }
    report
}

/// A pod [`kill_pods_on`] found, or a node whose pods could not be listed.
enum Found {
    Victim(Box<PodInfo>, Option<String>),
    Spared,
    ListFailed(kube::Error),
}

/// What [`kill_pods_on`] did about one [`Found`].
enum Done {
    Kill(Result<bool, KillError>),
    Spared,
    ListFailed(kube::Error),
}

/// The pods on `nodes`, listed per node with `lists` lists in flight; each
/// node's pods come as soon as its list arrives.
fn found_on<'a>(
    client: &'a Client,
    nodes: &'a [String],
    scope: &'a Scope,
    lists: usize,
) -> impl Stream<Item = Found> + 'a {
    stream::iter(nodes.iter().cloned())
        .map(move |node| {
            let client = client.clone();
            async move { crate::plan::lite::pods_on_node(&client, &node, false).await }
        })
        .buffer_unordered(lists)
        .flat_map(move |list| stream::iter(sort_pods(list, scope)))
}

/// One node's pod list as victims and spared pods; finished pods are left out.
fn sort_pods(list: kube::Result<Vec<Pod>>, scope: &Scope) -> Vec<Found> {
    match list {
        Err(e) => vec![Found::ListFailed(e)],
        Ok(list) => list
            .into_iter()
            .filter_map(|p| {
                let info = collect::pod_info(&p);
                if info.finished {
                    None
                } else if scope.in_scope(&info) {
                    Some(Found::Victim(Box::new(info), p.metadata.uid))
                } else {
                    Some(Found::Spared)
                }
            })
            .collect(),
    }
}

/// Count what was done, as it is done; a node whose pods could not be listed
/// ends the pass with that error.
async fn tally(done: impl Stream<Item = Done>) -> Result<KillReport, crate::Error> {
    let mut done = std::pin::pin!(done);
    let mut report = KillReport::default();
    while let Some(d) = done.next().await {
        match d {
            Done::Kill(Ok(true)) => report.killed += 1,
            Done::Kill(Ok(false)) => {}
            Done::Kill(Err(e)) => {
                report.failed += 1;
                report.first_failure.get_or_insert_with(|| e.to_string());
            }
            Done::Spared => report.spared += 1,
            Done::ListFailed(e) => return Err(e.into()),
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeSet;

    #[test]
    fn retries_back_off_up_to_a_cap_with_jitter() {
        let cap = Duration::from_secs(5);
        for attempt in 1..40 {
            let full = Duration::from_millis(100)
                .saturating_mul(1 << (attempt - 1).min(16))
                .min(cap);
            for seed in 0..50u64 {
                let w = retry_wait(attempt, cap, seed);
                assert!(
                    w <= full && w >= full / 2,
                    "attempt {attempt}: {w:?} vs {full:?}"
                );
            }
        }
        // Pods throttled together come back at different times.
        let waits: BTreeSet<Duration> = (0..100u64).map(|s| retry_wait(3, cap, s)).collect();
        assert!(waits.len() > 50, "{} distinct waits", waits.len());
    }

    /// Kill [`victim`] against a server that answers the n-th request
    /// (0-based) with `respond(n)`; the outcome and the requests seen.
    async fn kill_with(
        respond: impl Fn(usize) -> (u16, String) + Send + 'static,
    ) -> (Result<bool, KillError>, usize) {
        let (svc, mut handle) = tower_test::mock::pair::<
            http::Request<kube::client::Body>,
            http::Response<kube::client::Body>,
        >();
        let server = tokio::spawn(async move {
            let mut n = 0;
            while let Some((req, send)) = handle.next_request().await {
                assert_eq!(req.method(), http::Method::DELETE);
                let (code, body) = respond(n);
                n += 1;
                send.send_response(
                    http::Response::builder()
                        .status(code)
                        .body(kube::client::Body::from(body.into_bytes()))
                        .unwrap(),
                );
            }
            n
        });
        let client = Client::new(svc, "default");
        let out = kill(&client, &victim(), Some("u1".into())).await;
        drop(client);
        (out, server.await.unwrap())
    }

    fn status(code: u16, reason: &str) -> String {
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": reason, "reason": reason, "code": code})
            .to_string()
    }

    fn victim() -> PodInfo {
        PodInfo {
            namespace: "shop".into(),
            name: "cart-1".into(),
            ..Default::default()
        }
    }

    const DELETED: &str =
        r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"cart-1","namespace":"shop"}}"#;

    #[tokio::test(start_paused = true)]
    async fn throttling_is_waited_out_and_does_not_use_up_the_attempts() {
        let throttled = status(429, "TooManyRequests");
        let (out, seen) = kill_with(move |n| {
            if n < 12 {
                (429, throttled.clone())
            } else {
                (200, DELETED.to_string())
            }
        })
        .await;
        assert!(out.unwrap(), "the pod is killed once the throttling stops");
        assert_eq!(seen, 13);
    }

    #[tokio::test(start_paused = true)]
    async fn endless_throttling_gives_up_within_its_budget() {
        let throttled = status(429, "TooManyRequests");
        let start = tokio::time::Instant::now();
        let (out, seen) = kill_with(move |_| (429, throttled.clone())).await;
        let err = out.unwrap_err().to_string();
        assert!(err.starts_with("shop/cart-1: HTTP 429"), "{err}");
        assert!(start.elapsed() <= THROTTLE_BUDGET, "{:?}", start.elapsed());
        assert!(
            start.elapsed() >= THROTTLE_BUDGET / 2,
            "{:?}",
            start.elapsed()
        );
        assert!(seen > KILL_ATTEMPTS as usize);
    }

    #[tokio::test(start_paused = true)]
    async fn server_errors_are_retried_a_bounded_number_of_times() {
        let broken = status(503, "ServiceUnavailable");
        let (out, seen) = kill_with(move |_| (503, broken.clone())).await;
        let err = out.unwrap_err().to_string();
        assert!(
            err.contains("HTTP 503") && err.contains("after 5 attempts"),
            "{err}"
        );
        assert_eq!(seen, KILL_ATTEMPTS as usize);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pod_gone_or_replaced_is_not_a_kill_and_a_refusal_is_not_retried() {
        let gone = status(404, "NotFound");
        let (out, seen) = kill_with(move |_| (404, gone.clone())).await;
        assert!(!out.unwrap());
        assert_eq!(seen, 1);
        let denied = status(403, "Forbidden");
        let (out, seen) = kill_with(move |_| (403, denied.clone())).await;
        assert!(out.unwrap_err().to_string().contains("HTTP 403"));
        assert_eq!(seen, 1);
    }

    /// Every pod of a node is still killed, and counted once, while the API
    /// server throttles a share of the deletes; and no more deletes are in
    /// flight than the ceiling, fewer once throttled.
    #[tokio::test]
    async fn a_throttled_pass_kills_every_pod_within_a_shrinking_window() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        const PODS: usize = 300;
        let items: Vec<serde_json::Value> = (0..PODS)
            .map(|i| {
                json!({"metadata": {"name": format!("p{i}"), "namespace": "shop", "uid": format!("u{i}")},
                       "spec": {"nodeName": "a1"}, "status": {"phase": "Running"}})
            })
            .collect();
        let list = json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})
            .to_string();
        let (svc, mut handle) = tower_test::mock::pair::<
            http::Request<kube::client::Body>,
            http::Response<kube::client::Body>,
        >();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let peak_after_throttling = Arc::new(AtomicUsize::new(0));
        let deletes = Arc::new(AtomicUsize::new(0));
        let server = {
            let (in_flight, peak, late, deletes) = (
                in_flight.clone(),
                peak.clone(),
                peak_after_throttling.clone(),
                deletes.clone(),
            );
            tokio::spawn(async move {
                while let Some((req, send)) = handle.next_request().await {
                    if req.method() == http::Method::GET {
                        send.send_response(
                            http::Response::builder()
                                .status(200)
                                .body(kube::client::Body::from(list.clone().into_bytes()))
                                .unwrap(),
                        );
                        continue;
                    }
                    let n = deletes.fetch_add(1, SeqCst);
                    let now = in_flight.fetch_add(1, SeqCst) + 1;
                    peak.fetch_max(now, SeqCst);
                    if n >= 200 {
                        late.fetch_max(now, SeqCst);
                    }
                    let in_flight = in_flight.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        // The first 100 deletes: every other one throttled.
                        let (code, body) = if n < 100 && n % 2 == 0 {
                            (429, status(429, "TooManyRequests"))
                        } else {
                            (200, DELETED.to_string())
                        };
                        in_flight.fetch_sub(1, SeqCst);
                        send.send_response(
                            http::Response::builder()
                                .status(code)
                                .body(kube::client::Body::from(body.into_bytes()))
                                .unwrap(),
                        );
                    });
                }
            })
        };
        let client = Client::new(svc, "default");
        let metrics = Metrics::new();
        let report = kill_pods_on(
            &client,
            &["a1".to_string()],
            &Scope::default(),
            64,
            &metrics,
        )
        .await
        .unwrap();
        drop(client);
        server.await.unwrap();
        assert_eq!(report.killed, PODS as i64, "{report:?}");
        assert_eq!(report.failed, 0, "{report:?}");
        assert_eq!(
            deletes.load(SeqCst),
            PODS + 50,
            "each throttled delete tried again"
        );
        assert!(peak.load(SeqCst) <= 64, "peak {}", peak.load(SeqCst));
        assert!(
            peak_after_throttling.load(SeqCst) < 64,
            "the window did not narrow: {} in flight after the throttling",
            peak_after_throttling.load(SeqCst)
        );
        let text = metrics.render();
        let halvings: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("firedrill_delete_window_halvings_total "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(halvings >= 1, "{text}");
        assert!(metrics.delete_window.get() < 64, "{text}");
        // Every answer counted by what it said: 50 refusals, 300 deletes.
        assert!(
            text.contains("firedrill_delete_answers_total{answer=\"throttled\"} 50\n"),
            "{text}"
        );
        // (An answer late on a loaded machine counts as slow.)
        let count = |answer: &str| -> u64 {
            let prefix = format!("firedrill_delete_answers_total{{answer=\"{answer}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .map_or(0, |v| v.parse().unwrap())
        };
        assert_eq!(count("fast") + count("slow"), 300, "{text}");
    }
}
