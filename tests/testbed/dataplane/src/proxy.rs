//! A proxy in front of every Service, following its EndpointSlices the way
//! kube-proxy does: a connection to the Service's address goes to one of
//! its *ready* endpoints, round robin; with none ready it is refused. The
//! Service's ClusterIP `10.a.b.c` is served on loopback `127.a.b.c`.
//!
//! The real kube-proxy would need the pods' addresses on a network this
//! machine routes to and root to program iptables on the host; this proxy
//! keeps every address on loopback and touches nothing of the host.

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// Ready endpoints by port name: (address, target port).
type ByPort = HashMap<String, Vec<(String, u16)>>;
/// Ready endpoints per Service (`namespace/name`).
type Endpoints = HashMap<String, ByPort>;

#[derive(Default)]
struct State {
    /// EndpointSlice `namespace/name` → (its Service, its ready endpoints by port name).
    slices: HashMap<String, (String, ByPort)>,
    /// Listener per `namespace/name:port`.
    listeners: HashMap<String, (String, AbortHandle)>,
    /// Service `namespace/name` → loopback address.
    addresses: BTreeMap<String, String>,
}

impl State {
    fn endpoints(&self) -> Endpoints {
        let mut out: Endpoints = HashMap::new();
        for (svc, ports) in self.slices.values() {
            let e = out.entry(svc.clone()).or_default();
            for (port, eps) in ports {
                e.entry(port.clone())
                    .or_default()
                    .extend(eps.iter().cloned());
            }
        }
        out
    }
}

pub async fn run(client: Client, hosts: PathBuf) -> anyhow::Result<()> {
    let state = Arc::new(Mutex::new(State::default()));
    write_hosts(&hosts, &BTreeMap::new());
    let services = follow_services(client.clone(), state.clone(), hosts);
    let slices = follow_slices(client, state);
    tokio::select! {
        r = services => r,
        r = slices => r,
    }
}

fn write_hosts(path: &Path, addresses: &BTreeMap<String, String>) {
    let mut text =
        String::from("# Service addresses on loopback, written by the testbed's data plane\n");
    for (svc, addr) in addresses {
        let (ns, name) = svc.split_once('/').unwrap_or(("", svc));
        text.push_str(&format!(
            "{addr} {name}.{ns} {name}.{ns}.svc {name}.{ns}.svc.cluster.local\n"
        ));
    }
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, text).is_ok() {
        let _ = std::fs::rename(tmp, path);
    }
}

async fn follow_services(
    client: Client,
    state: Arc<Mutex<State>>,
    hosts: PathBuf,
) -> anyhow::Result<()> {
    let api = Api::<Service>::all(client);
    let mut events = std::pin::pin!(
        watcher(api, watcher::Config::default()).backoff(crate::QuickBackoff::default())
    );
    while let Some(ev) = events.next().await {
        let (svc, gone) = match ev {
            Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => (s, false),
            Ok(watcher::Event::Delete(s)) => (s, true),
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "service watch error; it retries");
                continue;
            }
        };
        let key = format!("{}/{}", svc.namespace().unwrap_or_default(), svc.name_any());
        let spec = svc.spec.clone().unwrap_or_default();
        let addr = spec
            .cluster_ip
            .as_deref()
            .and_then(crate::loopback_of)
            .map(|a| a.to_string());
        let mut st = state.lock().unwrap();
        // Stop this Service's listeners; start the ones it has now.
        let stale: Vec<String> = st
            .listeners
            .keys()
            .filter(|k| k.rsplit_once(':').map(|(s, _)| s) == Some(key.as_str()))
            .cloned()
            .collect();
        for k in stale {
            if let Some((_, h)) = st.listeners.remove(&k) {
                h.abort();
            }
        }
        match (&addr, gone) {
            (Some(addr), false) => {
                st.addresses.insert(key.clone(), addr.clone());
                for p in spec.ports.iter().flatten() {
                    if p.protocol.as_deref().unwrap_or("TCP") != "TCP" {
                        continue;
                    }
                    let name = p.name.clone().unwrap_or_default();
                    let listen = format!("{addr}:{}", p.port);
                    let task =
                        tokio::spawn(serve_port(listen.clone(), key.clone(), name, state.clone()));
                    st.listeners
                        .insert(format!("{key}:{}", p.port), (listen, task.abort_handle()));
                }
            }
            _ => {
                st.addresses.remove(&key);
            }
        }
        write_hosts(&hosts, &st.addresses);
    }
    Ok(())
}

async fn follow_slices(client: Client, state: Arc<Mutex<State>>) -> anyhow::Result<()> {
    let api = Api::<EndpointSlice>::all(client);
    let mut events = std::pin::pin!(
        watcher(api, watcher::Config::default()).backoff(crate::QuickBackoff::default())
    );
    while let Some(ev) = events.next().await {
        let (slice, gone) = match ev {
            Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => (s, false),
            Ok(watcher::Event::Delete(s)) => (s, true),
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "endpointslice watch error; it retries");
                continue;
            }
        };
        let ns = slice.namespace().unwrap_or_default();
        let key = format!("{ns}/{}", slice.name_any());
        let mut st = state.lock().unwrap();
        if gone {
            st.slices.remove(&key);
            continue;
        }
        let Some(svc) = slice.labels().get("kubernetes.io/service-name").cloned() else {
            continue;
        };
        let mut ports: ByPort = HashMap::new();
        for p in slice.ports.iter().flatten() {
            let Some(port) = p.port else { continue };
            let ready: Vec<(String, u16)> = slice
                .endpoints
                .iter()
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))
                .filter_map(|e| crate::loopback_of(e.addresses.first()?))
                .map(|a| (a.to_string(), port as u16))
                .collect();
            ports.insert(p.name.clone().unwrap_or_default(), ready);
        }
        st.slices.insert(key, (format!("{ns}/{svc}"), ports));
    }
    Ok(())
}

/// Accept on one Service port and forward each connection to a ready endpoint.
async fn serve_port(listen: String, svc: String, port_name: String, state: Arc<Mutex<State>>) {
    let listener = loop {
        match TcpListener::bind(&listen).await {
            Ok(l) => break l,
            Err(e) => {
                tracing::warn!(%listen, error = %e, "cannot listen; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let next = Arc::new(AtomicUsize::new(0));
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            continue;
        };
        let ready = state
            .lock()
            .unwrap()
            .endpoints()
            .get(&svc)
            .and_then(|p| p.get(&port_name))
            .cloned()
            .unwrap_or_default();
        if ready.is_empty() {
            // No ready endpoint: refused, as kube-proxy rejects it.
            drop(client);
            continue;
        }
        let (addr, port) = ready[next.fetch_add(1, Ordering::Relaxed) % ready.len()].clone();
        tokio::spawn(async move {
            if let Ok(mut upstream) = TcpStream::connect((addr.as_str(), port)).await {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
        });
    }
}
