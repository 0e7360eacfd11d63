//! The node agent: how a PowerLoss drill cuts a real node off.
//!
//! It runs on every node (a DaemonSet with the host's network namespace and
//! NET_ADMIN), labels its node `chaos.firedrill.dev/agent` so the planner
//! knows a power loss can be rehearsed there, and watches its own Node. When
//! the node carries `chaos.firedrill.dev/power-loss=<deadline>`, it installs
//! an nftables table that drops every packet into and out of the node (the
//! kubelet stops heartbeating; traffic to its pods times out, as after a
//! power cut, rather than being refused), except loopback and the addresses
//! it is told to spare (its own, so it can still hear the restore).
//!
//! The dead-man timer is in the kernel: every drop rule carries
//! `meta time < <deadline>`, so at the deadline the partition ends on its own
//! even if the agent died or never hears from the API server again. The
//! agent also deletes the table then, and whenever the label goes.

use crate::api::{AGENT_LABEL, POWER_LABEL};
use crate::fault::backoff::paced;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use std::time::Duration;

/// The nftables table the agent owns.
pub const TABLE: &str = "firedrill_power_loss";

/// What to partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// Unix seconds: the rules stop matching then.
    pub until: i64,
    /// Keep loopback traffic (on a node: always; off only to test the rules
    /// inside a network namespace that has nothing but loopback).
    pub spare_loopback: bool,
    /// Addresses whose traffic is kept (the agent's own pod address).
    pub spare: Vec<std::net::IpAddr>,
}

/// The nftables script that installs the partition. Pure.
pub fn rules(p: &Partition) -> String {
    let mut keep = String::new();
    if p.spare_loopback {
        keep.push_str("    iifname \"lo\" accept\n");
    }
    let mut keep_out = String::new();
    if p.spare_loopback {
        keep_out.push_str("    oifname \"lo\" accept\n");
    }
    for a in &p.spare {
        let family = if a.is_ipv4() { "ip" } else { "ip6" };
        keep.push_str(&format!(
            "    {family} saddr {a} accept\n    {family} daddr {a} accept\n"
        ));
        keep_out.push_str(&format!(
            "    {family} saddr {a} accept\n    {family} daddr {a} accept\n"
        ));
    }
    let t = p.until;
    format!(
        "table inet {TABLE} {{\n  chain input {{\n    type filter hook input priority raw; policy accept;\n{keep}    meta time < {t} drop\n  }}\n  chain forward {{\n    type filter hook forward priority raw; policy accept;\n{keep}    meta time < {t} drop\n  }}\n  chain output {{\n    type filter hook output priority raw; policy accept;\n{keep_out}    meta time < {t} drop\n  }}\n}}\n"
    )
}

/// The network namespace the rules go into (the host's, `/proc/1/ns/net`,
/// when the agent runs in a pod of its own); None: this process's own.
static NETNS: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Put the rules into the network namespace at `path` (needs hostPID and
/// CAP_SYS_ADMIN/NET_ADMIN there).
pub fn use_netns(path: std::path::PathBuf) {
    let _ = NETNS.set(path);
}

async fn nft(script: &str) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new("nft");
    cmd.args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // Kept open until the child is spawned.
    let mut netns: Option<std::fs::File> = None;
    if let Some(path) = NETNS.get() {
        let ns = std::fs::File::open(path).map_err(|e| {
            anyhow::anyhow!("cannot open network namespace {}: {e}", path.display())
        })?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&ns);
        // SAFETY: setns(2) in the forked child before exec; it touches no
        // memory of the parent, and the fd stays open until after the spawn.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        netns = Some(ns);
    }
    let child = tokio::process::Command::from(cmd)
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run nft (is nftables installed?): {e}"))?;
    drop(netns);
    finish(child, script).await
}

async fn finish(mut child: tokio::process::Child, script: &str) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(script.as_bytes()).await?;
    drop(stdin);
    let out = child.wait_with_output().await?;
    anyhow::ensure!(
        out.status.success(),
        "nft: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Install the partition (replacing any earlier one).
pub async fn cut(p: &Partition) -> anyhow::Result<()> {
    lift().await?;
    nft(&rules(p)).await
}

/// Remove the partition, if there is one.
pub async fn lift() -> anyhow::Result<()> {
    // `destroy` is not in every nft; add-then-delete works on all.
    nft(&format!("table inet {TABLE}\ndelete table inet {TABLE}\n")).await
}

fn now_secs() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Run on `node` until stopped: label it, then follow its power-loss label.
pub async fn run(client: Client, node: String, spare: Vec<std::net::IpAddr>) -> anyhow::Result<()> {
    let nodes = Api::<Node>::all(client);
    let patch =
        serde_json::json!({"metadata": {"labels": {AGENT_LABEL: env!("CARGO_PKG_VERSION")}}});
    nodes
        .patch(&node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| anyhow::anyhow!("cannot label node {node}: {e}"))?;
    tracing::info!(%node, "firedrill agent ready");
    follow(nodes, &node, &spare).await;
    Ok(())
}

/// Follow the power-loss label of `node` until the watch ends. A watch that
/// fails is tried again after a backoff (250 ms doubling to 30 s, see
/// [`paced`]), never at once; the deadline is kept meanwhile.
async fn follow(nodes: Api<Node>, node: &str, spare: &[std::net::IpAddr]) {
    let cfg = watcher::Config::default().fields(&format!("metadata.name={node}"));
    let mut events = std::pin::pin!(paced("the node watch", watcher(nodes, cfg)));
    let mut until: Option<i64> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            ev = events.next() => {
                let Some(ev) = ev else { return };
                let n = match ev {
                    Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n)) => n,
                    // An error is logged and waited out by `paced`. (Cut off
                    // by our own partition, the kernel ends it at the deadline.)
                    Ok(_) | Err(_) => continue,
                };
                let wanted = n
                    .labels()
                    .get(POWER_LABEL)
                    .and_then(|v| v.parse::<i64>().ok())
                    .filter(|t| *t > now_secs());
                if wanted != until {
                    match wanted {
                        Some(t) => {
                            let p = Partition { until: t, spare_loopback: true, spare: spare.to_vec() };
                            match cut(&p).await {
                                Ok(()) => tracing::warn!(%node, until = t, "power loss: node cut off"),
                                Err(e) => tracing::error!(%node, error = %e, "cannot cut the node off"),
                            }
                        }
                        None => match lift().await {
                            Ok(()) => tracing::info!(%node, "power back"),
                            Err(e) => tracing::error!(%node, error = %e, "cannot lift the partition"),
                        },
                    }
                    until = wanted;
                }
            }
            _ = tick.tick() => {
                if until.is_some_and(|t| t <= now_secs()) {
                    let _ = lift().await;
                    tracing::warn!(%node, "power-loss deadline passed: partition lifted");
                    until = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_node_watch_backs_off_while_the_api_server_is_unreachable() {
        let (client, asked) = crate::fault::fixtures::unavailable(500);
        tokio::select! {
            _ = follow(Api::all(client), "a1", &[]) => panic!("the watch ended"),
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
        // 250 ms doubling to 30 s, ±20 %: 8 tries in a minute, perhaps 9.
        let n = asked.load(std::sync::atomic::Ordering::SeqCst);
        assert!((8..=9).contains(&n), "{n} requests in a minute");
    }

    #[test]
    fn every_drop_rule_expires_at_the_deadline_and_the_spared_traffic_passes() {
        let p = Partition {
            until: 1_900_000_000,
            spare_loopback: true,
            spare: vec!["10.244.3.7".parse().unwrap()],
        };
        let r = rules(&p);
        assert_eq!(r.matches("meta time < 1900000000 drop").count(), 3);
        assert!(r.contains("iifname \"lo\" accept") && r.contains("oifname \"lo\" accept"));
        assert!(
            r.contains("ip saddr 10.244.3.7 accept") && r.contains("ip daddr 10.244.3.7 accept")
        );
        // Every accept comes before the drop in its chain.
        for chain in r.split("chain ").skip(1) {
            let drop = chain.find("drop").unwrap();
            assert!(chain.rfind("accept").is_none_or(|a| a < drop), "{chain}");
        }
        let bare = rules(&Partition {
            until: 5,
            spare_loopback: false,
            spare: vec![],
        });
        assert!(
            !bare.contains("iifname") && !bare.contains("saddr"),
            "{bare}"
        );
    }
}
