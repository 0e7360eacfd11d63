//! The testbed's data plane. KWOK simulates nodes and pods in the API, but
//! its pods run nothing; this program gives the pods that ask for it (label
//! `testbed.firedrill.dev/serve=true`) a real process, puts a proxy in front
//! of every Service that follows its EndpointSlices the way kube-proxy does,
//! and plays the node agent for firedrill's power-loss fault on fake nodes.
//!
//! Addresses: every cluster address is served on loopback, so nothing on
//! this machine but loopback is ever a network target. Each testbed has a
//! slot N of its own (so two testbeds on one machine never collide): pod IP
//! `10.244.a.b` (KWOK's pod CIDR) is served on `127.(2N).a.b`, ClusterIP
//! `10.96.a.b` on `127.(2N+1).a.b`. Names: the proxy writes a hosts file
//! (`<name>.<namespace>[.svc[.cluster.local]]` → the Service's loopback
//! address) that the pods' processes and firedrill's probes
//! (`--probe-hosts`) resolve with, and the runtime a `pods` file
//! (`ADDRESS:PORT namespace/name`).
//!
//!   firedrill-testbed dataplane --state DIR --slot N   (uses KUBECONFIG)
//!   firedrill-testbed serve --listen ADDR [--depends URL]... [--hosts FILE] [--startup 3s] [--store-url URL]

mod power;
mod proxy;
mod runtime;
mod serve;
mod store;

use std::net::Ipv4Addr;
use std::path::PathBuf;

/// This testbed's slot (set once at start).
static SLOT: std::sync::OnceLock<u8> = std::sync::OnceLock::new();

/// The loopback address that stands for cluster address `ip`: pod IPs
/// (10.244.a.b) → 127.(2N).a.b, ClusterIPs (10.96.a.b) → 127.(2N+1).a.b.
pub fn loopback_of(ip: &str) -> Option<Ipv4Addr> {
    let v4: Ipv4Addr = ip.parse().ok()?;
    let slot = *SLOT.get().unwrap_or(&1);
    match v4.octets() {
        [10, 244, c, d] => Some(Ipv4Addr::new(127, slot * 2, c, d)),
        [10, 96, c, d] => Some(Ipv4Addr::new(127, slot * 2 + 1, c, d)),
        _ => None,
    }
}

fn arg_values(args: &[String], flag: &str) -> Vec<String> {
    args.windows(2)
        .filter(|w| w[0] == flag)
        .map(|w| w[1].clone())
        .collect()
}

fn arg_value(args: &[String], flag: &str) -> Option<String> {
    arg_values(args, flag).into_iter().next()
}

fn parse_secs(s: &str) -> std::time::Duration {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| c.is_alphabetic()).unwrap_or(s.len()));
    let n: f64 = num.parse().unwrap_or(0.0);
    let secs = match unit {
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        _ => n,
    };
    std::time::Duration::from_secs_f64(secs.max(0.0))
}

/// `--store-role primary|standby` makes `serve` a member of a store, with
/// `--data FILE`, `--store-peer URL`, `--replication sync|async:2s` and
/// `--failover 1s`.
fn store_config(args: &[String]) -> anyhow::Result<Option<store::Config>> {
    let Some(role) = arg_value(args, "--store-role") else {
        return Ok(None);
    };
    let replication = arg_value(args, "--replication").unwrap_or_else(|| "async".into());
    Ok(Some(store::Config {
        name: arg_value(args, "--name").unwrap_or_default(),
        primary: role == "primary",
        peer: arg_value(args, "--store-peer"),
        replication: store::Replication::parse(&replication).ok_or_else(|| {
            anyhow::anyhow!("serve: --replication {replication}: sync or async:LAG")
        })?,
        data: PathBuf::from(
            arg_value(args, "--data")
                .ok_or_else(|| anyhow::anyhow!("serve: a store member needs --data FILE"))?,
        ),
        hosts: arg_value(args, "--hosts").map(PathBuf::from),
        failover: arg_value(args, "--failover")
            .map(|s| parse_secs(&s))
            .unwrap_or(std::time::Duration::from_secs(1)),
    }))
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Runtime::new()?;
    match args.get(1).map(String::as_str) {
        Some("serve") => rt.block_on(serve::run(serve::Config {
            listen: arg_value(&args, "--listen")
                .ok_or_else(|| anyhow::anyhow!("serve: --listen ADDR is required"))?,
            depends: arg_values(&args, "--depends"),
            hosts: arg_value(&args, "--hosts").map(PathBuf::from),
            startup: arg_value(&args, "--startup")
                .map(|s| parse_secs(&s))
                .unwrap_or_default(),
            name: arg_value(&args, "--name").unwrap_or_default(),
            store: store_config(&args)?,
            store_url: arg_value(&args, "--store-url"),
        })),
        Some("dataplane") => {
            let slot: u8 = arg_value(&args, "--slot")
                .and_then(|s| s.parse().ok())
                .filter(|s: &u8| (1..=126).contains(s))
                .ok_or_else(|| anyhow::anyhow!("dataplane: --slot N (1..126) is required"))?;
            let _ = SLOT.set(slot);
            let state = PathBuf::from(
                arg_value(&args, "--state")
                    .ok_or_else(|| anyhow::anyhow!("dataplane: --state DIR is required"))?,
            );
            rt.block_on(dataplane(state))
        }
        _ => {
            eprintln!(
                "usage: firedrill-testbed dataplane --state DIR --slot N\n       firedrill-testbed serve --listen ADDR [--depends URL]... [--hosts FILE] [--startup 3s] [--store-url URL]"
            );
            std::process::exit(2)
        }
    }
}

async fn dataplane(state: PathBuf) -> anyhow::Result<()> {
    let client = kube::Client::try_default().await?;
    let hosts = state.join("hosts");
    let procs = runtime::Processes::new(state.join("procs"));
    procs.kill_leftovers();
    let powered_off = power::PoweredOff::default();
    tracing::info!(state = %state.display(), "testbed data plane starting");
    let stop = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    tokio::select! {
        r = runtime::run(client.clone(), procs.clone(), hosts.clone(), powered_off.clone(), state.join("pods")) => r?,
        r = proxy::run(client.clone(), hosts.clone()) => r?,
        r = power::run(client.clone(), procs.clone(), powered_off.clone()) => r?,
        _ = stop => tracing::info!("stopping"),
    }
    procs.kill_all();
    Ok(())
}

/// How the data plane's watches wait after an error: 200 ms doubling to
/// 2 s. kube's default (800 ms doubling to 30 s, with jitter that made
/// waits of 50 s here) left Services created a minute after an API server
/// outage without a listener or a hosts entry while the watch sat out its
/// waits; kube-proxy and the kubelet on a real node come back within
/// seconds, and on loopback a retry costs nothing.
#[derive(Default)]
pub struct QuickBackoff(u32);

impl Iterator for QuickBackoff {
    type Item = std::time::Duration;

    fn next(&mut self) -> Option<std::time::Duration> {
        let ms = (200u64 << self.0.min(4)).min(2000);
        self.0 = self.0.saturating_add(1);
        Some(std::time::Duration::from_millis(ms))
    }
}

impl kube::runtime::utils::Backoff for QuickBackoff {
    fn reset(&mut self) {
        self.0 = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_backoff_doubles_to_two_seconds_and_starts_over_on_reset() {
        use kube::runtime::utils::Backoff;
        let mut b = QuickBackoff::default();
        let ms: Vec<u64> = (&mut b).take(7).map(|d| d.as_millis() as u64).collect();
        assert_eq!(ms, [200, 400, 800, 1600, 2000, 2000, 2000]);
        b.reset();
        assert_eq!(b.next().unwrap().as_millis(), 200);
    }
}
