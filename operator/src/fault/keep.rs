//! The keeper: keeps the zone dark while the experiment holds it.

use super::backoff::{Backoff, paced};
use super::kill::{kill, kill_pods_on};
use super::mark::{Experiment, MARK_LABEL, NodeMark, has_own_taint};
use crate::api::{DataCenterFailure, Phase};
use crate::plan::{Scope, collect};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// At most this many notes about node changes are kept per experiment.
const MAX_NOTES: usize = 100;

/// What the keeper saw, shared with the controller.
#[derive(Debug, Default)]
pub struct KeeperState {
    pub rekilled: AtomicI64,
    notes: Mutex<Vec<String>>,
    /// How many of `notes` (the oldest) are in the experiment's status.
    handed_over: AtomicUsize,
    /// Names of held nodes that were deleted while dark.
    pub deleted: Mutex<BTreeSet<String>>,
}

impl KeeperState {
    pub fn with_rekilled(n: i64) -> Self {
        KeeperState {
            rekilled: AtomicI64::new(n),
            ..Default::default()
        }
    }

    pub(crate) fn note(&self, note: String) {
        tracing::warn!("{note}");
        let mut notes = self.notes.lock().unwrap();
        if notes.len() < MAX_NOTES && !notes.contains(&note) {
            notes.push(note);
        }
    }

    /// The notes not handed over yet, oldest first, and the mark to give
    /// [`handed_over`](Self::handed_over) once they are in the status. The
    /// status lists only some notes, so it cannot tell by itself which are
    /// new: the keeper keeps count.
    pub fn new_notes(&self) -> (Vec<String>, usize) {
        let notes = self.notes.lock().unwrap();
        let from = self.handed_over.load(Ordering::Relaxed).min(notes.len());
        (notes[from..].to_vec(), notes.len())
    }

    /// The notes up to `mark` (from [`new_notes`](Self::new_notes)) are in
    /// the status: they are not handed over again.
    pub fn handed_over(&self, mark: usize) {
        self.handed_over.fetch_max(mark, Ordering::Relaxed);
    }
}

/// Why the keeper stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeeperEnd {
    /// The experiment was deleted, replaced (another uid), or left the dark phases.
    ExperimentGone,
    ExperimentDone(Phase),
}

/// What the keeper watches.
#[derive(Clone, Debug)]
pub struct Keep {
    pub exp: Experiment,
    pub topology_key: String,
    pub zone: String,
    pub scope: Scope,
    /// Kill in-scope pods that land on the dark nodes.
    pub kill_pods: bool,
    pub concurrency: usize,
    /// Where re-kills are counted.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

/// Keep the zone dark until the experiment is gone or done.
///
/// - It follows the nodes carrying this experiment's mark *and* taint (a
///   watch on marked nodes only), so it kills only on nodes that are dark at
///   that moment: a node restored, unmarked or deleted by anyone is left
///   alone from then on. Node changes are noted (deleted, moved to another
///   zone, mark removed by hand).
/// - It follows the experiment itself, and stops when it is deleted (even if
///   its finalizer was removed by hand, so no reconcile ever comes),
///   replaced, or leaves ZoneDown.
/// - With `kill_pods`, it watches every pod from the current
///   resourceVersion (no initial list, nothing cached) and kills any
///   in-scope pod bound to a dark node; on start and after every watch
///   restart, the dark nodes are swept once with per-node lists.
///
/// Every watch that fails is tried again after a [`Backoff`] (250 ms
/// doubling to 30 s, with jitter), never at once: an API server that cannot
/// be reached is asked a handful of times a minute, with one line logged per
/// try.
pub async fn keep_dark(
    client: Client,
    watch_client: Client,
    keep: Keep,
    state: Arc<KeeperState>,
) -> KeeperEnd {
    let dark: Arc<RwLock<BTreeSet<String>>> = Arc::default();
    let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);
    let nodes = follow_nodes(
        watch_client.clone(),
        &keep,
        dark.clone(),
        state.clone(),
        ready_tx,
    );
    let experiment = follow_experiment(watch_client.clone(), &keep.exp);
    let pods = async {
        if !keep.kill_pods {
            return std::future::pending().await;
        }
        let mut ready = ready_rx;
        let _ = ready.wait_for(|r| *r).await;
        rekill(&client, &watch_client, &keep, &dark, &state).await
    };
    tokio::select! {
        end = experiment => end,
        _ = nodes => KeeperEnd::ExperimentGone,
        _ = pods => KeeperEnd::ExperimentGone,
    }
}

/// Until the experiment is gone or leaves the dark phases.
async fn follow_experiment(watch_client: Client, exp: &Experiment) -> KeeperEnd {
    let api = Api::<DataCenterFailure>::all(watch_client);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={}", exp.name));
    let mut events = std::pin::pin!(paced("keep-dark: the experiment watch", watcher(api, cfg)));
    let mut seen = false;
    while let Some(ev) = events.next().await {
        let obj = match ev {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => o,
            Ok(watcher::Event::Delete(_)) => return KeeperEnd::ExperimentGone,
            Ok(watcher::Event::Init) => {
                seen = false;
                continue;
            }
            Ok(watcher::Event::InitDone) if !seen => return KeeperEnd::ExperimentGone,
            Ok(watcher::Event::InitDone) => continue,
            // Logged, and waited out, by `paced`.
            Err(_) => continue,
        };
        seen = true;
        if obj.uid().as_deref() != Some(exp.uid.as_str()) {
            return KeeperEnd::ExperimentGone;
        }
        if obj.metadata.deletion_timestamp.is_some() {
            return KeeperEnd::ExperimentGone;
        }
        if let Some(p @ (Phase::Restoring | Phase::Completed | Phase::Aborted | Phase::Failed)) =
            obj.status.and_then(|s| s.phase)
        {
            return KeeperEnd::ExperimentDone(p);
        }
    }
    KeeperEnd::ExperimentGone
}

/// Keep `dark` equal to the nodes that carry this experiment's mark and taint.
async fn follow_nodes(
    watch_client: Client,
    keep: &Keep,
    dark: Arc<RwLock<BTreeSet<String>>>,
    state: Arc<KeeperState>,
    ready: tokio::sync::watch::Sender<bool>,
) {
    let api = Api::<Node>::all(watch_client);
    let mut events = std::pin::pin!(paced(
        "keep-dark: the node watch",
        watcher(api.clone(), watcher::Config::default().labels(MARK_LABEL))
    ));
    let mut nodes = DarkNodes {
        api,
        keep,
        dark,
        state,
        listing: BTreeSet::new(),
        moved: BTreeSet::new(),
    };
    while let Some(ev) = events.next().await {
        match ev {
            Ok(watcher::Event::Init) => nodes.listing.clear(),
            Ok(watcher::Event::InitApply(n)) => nodes.listed(&n),
            Ok(watcher::Event::InitDone) => {
                nodes.listed_all();
                let _ = ready.send(true);
            }
            Ok(watcher::Event::Apply(n)) => nodes.applied(&n),
            Ok(watcher::Event::Delete(n)) => nodes.deleted(&n).await,
            // Logged, and waited out, by `paced`.
            Err(_) => {}
        }
    }
}

/// What [`follow_nodes`] keeps between node events.
struct DarkNodes<'a> {
    api: Api<Node>,
    keep: &'a Keep,
    dark: Arc<RwLock<BTreeSet<String>>>,
    state: Arc<KeeperState>,
    /// The dark nodes seen so far by the (re)list in progress.
    listing: BTreeSet<String>,
    /// Nodes already noted as relabelled out of the zone.
    moved: BTreeSet<String>,
}

impl DarkNodes<'_> {
    /// The node carries this experiment's mark.
    fn ours(&self, n: &Node) -> bool {
        NodeMark::read(n).is_some_and(|m| m.uid == self.keep.exp.uid)
    }

    /// The node carries this experiment's mark and taint.
    fn is_dark(&self, n: &Node) -> bool {
        NodeMark::read(n).is_some_and(|m| m.uid == self.keep.exp.uid && has_own_taint(n, &m))
    }

    fn note_left_alone(&self, name: &str) {
        self.state.note(format!(
            "node {name} no longer carries the drill's mark and taint; its pods are left alone"
        ));
    }

    /// A node of a (re)list.
    fn listed(&mut self, n: &Node) {
        if self.is_dark(n) {
            self.listing.insert(n.name_any());
        }
    }

    /// The (re)list is complete: it replaces the dark set.
    fn listed_all(&mut self) {
        let mut d = self.dark.write().unwrap();
        for gone in d.difference(&self.listing) {
            self.note_left_alone(gone);
        }
        *d = std::mem::take(&mut self.listing);
    }

    /// A node changed (or was created).
    fn applied(&mut self, n: &Node) {
        let name = n.name_any();
        let ours = self.ours(n);
        let keep = self.keep;
        if ours
            && n.labels().get(&keep.topology_key) != Some(&keep.zone)
            && self.moved.insert(name.clone())
        {
            self.state.note(format!(
                "node {name} was relabelled out of {} ({}={}) while dark; it stays held and is restored with the zone",
                keep.zone,
                keep.topology_key,
                n.labels().get(&keep.topology_key).map(String::as_str).unwrap_or("")
            ));
        }
        let mut d = self.dark.write().unwrap();
        if self.is_dark(n) {
            d.insert(name);
        } else if d.remove(&name) {
            self.note_left_alone(&name);
        }
    }

    /// A node was deleted, or stopped matching the watch.
    async fn deleted(&self, n: &Node) {
        let name = n.name_any();
        let was = self.dark.write().unwrap().remove(&name);
        let ours = self.ours(n);
        // The watch says "deleted" both when the node is gone and
        // when it merely stopped matching (its mark label was taken
        // off), with the last state it saw either way: ask.
        let now = self.api.get_opt(&name).await.ok().flatten();
        let gone = match &now {
            None => true,
            Some(current) => current.uid() != n.uid(),
        };
        if ours && gone {
            self.state.deleted.lock().unwrap().insert(name.clone());
            self.state.note(format!(
                "node {name} was deleted while dark; nothing of the drill is left on it"
            ));
        } else if was {
            self.note_left_alone(&name);
        }
    }
}

/// Kill in-scope pods that land on dark nodes, until cancelled.
async fn rekill(
    client: &Client,
    watch_client: &Client,
    keep: &Keep,
    dark: &RwLock<BTreeSet<String>>,
    state: &KeeperState,
) {
    let api = Api::<Pod>::all(client.clone());
    let watch_api = Api::<Pod>::all(watch_client.clone());
    let rekiller = Rekiller {
        client,
        keep,
        dark,
        state,
    };
    let mut backoff = Backoff::new();
    loop {
        // Where the watch starts: the collection's current resourceVersion.
        let rv = match api.list_metadata(&ListParams::default().limit(1)).await {
            Ok(list) => list.metadata.resource_version.unwrap_or_default(),
            Err(e) => {
                let wait = backoff.fail();
                tracing::warn!(error = %e, failures = backoff.failures(), retry_in = ?wait, "keep-dark: cannot read the pod list version");
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        rekiller.sweep().await;
        let wp = WatchParams::default().timeout(290);
        let ended = match watch_api.watch(&wp, &rv).await {
            Ok(stream) => rekiller.follow(stream).await,
            Err(e) => Err(e.to_string()),
        };
        match ended {
            Ok(()) => backoff.succeed(),
            Err(why) => {
                let wait = backoff.fail();
                tracing::warn!(failures = backoff.failures(), retry_in = ?wait, "keep-dark: the pod watch failed: {why}");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// What [`rekill`] works with.
struct Rekiller<'a> {
    client: &'a Client,
    keep: &'a Keep,
    dark: &'a RwLock<BTreeSet<String>>,
    state: &'a KeeperState,
}

impl Rekiller<'_> {
    fn count(&self, n: i64) {
        if n > 0 {
            self.state.rekilled.fetch_add(n, Ordering::Relaxed);
            self.keep.metrics.pods_rekilled.inc_by(n as u64);
        }
    }

    /// Kill what is on the dark nodes now, with per-node lists.
    async fn sweep(&self) {
        let nodes: Vec<String> = self.dark.read().unwrap().iter().cloned().collect();
        match kill_pods_on(
            self.client,
            &nodes,
            &self.keep.scope,
            self.keep.concurrency,
            &self.keep.metrics,
        )
        .await
        {
            Ok(r) => {
                self.count(r.killed);
                if r.killed > 0 {
                    tracing::info!(
                        pods = r.killed,
                        "keep-dark: killed pods that landed on the dark zone"
                    );
                }
                if let Some(why) = r.first_failure {
                    tracing::warn!(
                        failed = r.failed,
                        "keep-dark: pods could not be killed: {why}"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "keep-dark: sweep failed"),
        }
    }

    /// Kill the pods the watch shows landing on the dark nodes, until it
    /// ends. Ok: it ended as watches do (the server closed it, or its
    /// resourceVersion expired); Err: it failed, or ended at once with
    /// nothing in it (a server that closes every watch is not asked again
    /// at once either).
    async fn follow(
        &self,
        stream: impl Stream<Item = kube::Result<WatchEvent<Pod>>>,
    ) -> Result<(), String> {
        let mut stream = std::pin::pin!(stream);
        let started = tokio::time::Instant::now();
        let mut seen = false;
        // The server ends the watch after 290 s; a silent connection is dropped a little later.
        let ended = loop {
            let ev = match tokio::time::timeout(Duration::from_secs(300), stream.next()).await {
                Err(_) | Ok(None) => break Ok(()),
                Ok(Some(ev)) => ev,
            };
            let pod = match ev {
                Ok(WatchEvent::Added(p) | WatchEvent::Modified(p)) => p,
                Ok(WatchEvent::Error(e)) if e.code == 410 => {
                    tracing::debug!("keep-dark: watch expired: {}", e.message);
                    break Ok(());
                }
                Ok(WatchEvent::Error(e)) => break Err(format!("HTTP {}: {}", e.code, e.message)),
                Ok(_) => {
                    seen = true;
                    continue;
                }
                Err(e) => break Err(e.to_string()),
            };
            seen = true;
            self.landed(&pod).await;
        };
        match ended {
            Ok(()) if !seen && started.elapsed() < Duration::from_secs(1) => {
                Err("the watch ended at once".into())
            }
            other => other,
        }
    }

    /// Kill `pod` when it is in scope, not being deleted, and bound to a dark node.
    async fn landed(&self, pod: &Pod) {
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_ref()) else {
            return;
        };
        if pod.metadata.deletion_timestamp.is_some() || !self.dark.read().unwrap().contains(node) {
            return;
        }
        let info = collect::pod_info(pod);
        if !self.keep.scope.in_scope(&info) {
            return;
        }
        match kill(self.client, &info, pod.metadata.uid.clone()).await {
            Ok(true) => {
                self.count(1);
                tracing::info!(pod = %info.key(), node = %info.node, "keep-dark: killed a pod that landed on the dark zone");
            }
            Ok(false) => {}
            Err(e) => tracing::warn!("keep-dark: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::fixtures::{exp, unavailable};

    fn keep(kill_pods: bool) -> Keep {
        Keep {
            exp: exp(),
            topology_key: "topology.kubernetes.io/zone".into(),
            zone: "zone-a".into(),
            scope: Scope::default(),
            kill_pods,
            concurrency: 4,
            metrics: crate::metrics::Metrics::new(),
        }
    }

    /// Run `work` for a minute of (paused) time; how many requests it sent.
    async fn a_minute_of<F: std::future::Future>(work: F, asked: &AtomicUsize) -> usize
    where
        F::Output: std::fmt::Debug,
    {
        tokio::select! {
            end = work => panic!("it ended: {end:?}"),
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
        asked.load(Ordering::SeqCst)
    }

    // Tries 250 ms doubling to 30 s apart, ±20 %: at 0, 0.25, 0.75, 1.75,
    // 3.75, 7.75, 15.75 and 31.75 s, and perhaps once more before 60 s.
    const TRIES_IN_A_MINUTE: std::ops::RangeInclusive<usize> = 8..=9;

    #[test]
    fn notes_are_handed_over_once() {
        let state = KeeperState::default();
        for i in 0..3 {
            state.note(format!("note {i}"));
        }
        state.note("note 1".into());
        let (notes, mark) = state.new_notes();
        assert_eq!((notes.len(), mark), (3, 3));
        // Not yet in the status (a write lost): handed over again.
        assert_eq!(state.new_notes(), (notes, 3));
        state.handed_over(3);
        assert_eq!(state.new_notes(), (vec![], 3));
        state.note("note 3".into());
        assert_eq!(state.new_notes(), (vec!["note 3".to_string()], 4));
        state.handed_over(2);
        assert_eq!(
            state.new_notes().0.len(),
            1,
            "a stale mark takes nothing back"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_keepers_watches_back_off_while_the_api_server_is_unreachable() {
        let (client, asked) = unavailable(500);
        let state = Arc::new(KeeperState::default());
        // The experiment and the node watch; the pod watch waits for the nodes.
        let n = a_minute_of(keep_dark(client.clone(), client, keep(true), state), &asked).await;
        let expected = TRIES_IN_A_MINUTE.start() * 2..=TRIES_IN_A_MINUTE.end() * 2;
        assert!(expected.contains(&n), "{n} requests in a minute");
    }

    #[tokio::test(start_paused = true)]
    async fn the_pod_watch_backs_off_while_the_api_server_is_unreachable() {
        let (client, asked) = unavailable(500);
        let (dark, state) = (RwLock::default(), KeeperState::default());
        let n = a_minute_of(rekill(&client, &client, &keep(true), &dark, &state), &asked).await;
        assert!(TRIES_IN_A_MINUTE.contains(&n), "{n} requests in a minute");
    }
}
