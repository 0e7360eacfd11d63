//! The node agent: how a PowerLoss drill cuts a real node off.
//!
//! It runs on every node (a DaemonSet in a pod network of its own, with
//! hostPID, programming the host's network namespace), labels its node `chaos.firedrill.dev/agent` so the planner
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
//!
//! The agent's rule: a label alone never cuts a node off ([`decide`], pure).
//! It cuts only for a live experiment: the node carries the mark of a
//! PowerLoss experiment, that experiment exists with the mark's uid and is
//! taking the zone down (Injecting or ZoneDown), and the deadline is still
//! ahead on this node's clock. The deadline is capped at the experiment's
//! duration plus the restore grace from now, and a control-plane node is
//! never cut.
//!
//! Every answer is written back to the Node, so the drill never has to
//! assume: `chaos.firedrill.dev/power-loss-ack=<deadline>` once the table is
//! in place, `chaos.firedrill.dev/power-loss-refused=<why>` when the agent
//! refused or `nft` failed. The acknowledgement is written *after* the
//! table is installed, never before: it says "this node is cut off", which
//! an acknowledgement written first could not promise (`nft` may still
//! fail). The write can go through because the partition spares the
//! agent's own address (the pod network; the chart runs the agent in a pod
//! network of its own), the same path it hears the restore on. Where that
//! path is missing (an agent on the host network, with nothing spared), the
//! acknowledgement never arrives and the drill ends Inconclusive: an agent
//! that cannot say "cut" is never taken at its word.
//!
//! When it starts, the agent lifts any table a previous run left (it cannot
//! know whether that one's experiment still holds the node; if it does, the
//! label is still there and the cut is made again, for this run's address).
//! A watch that fails is tried again after a backoff, and so is a report
//! that could not be written.

use crate::api::{
    AGENT_LABEL, CONTROL_PLANE_LABEL, DataCenterFailure, POWER_ACK_ANNOTATION, POWER_LABEL,
    POWER_REFUSED_ANNOTATION, Phase, parse_duration,
};
use crate::fault::backoff::{Backoff, paced};
use crate::fault::{MARK_ANNOTATION, NodeMark};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use std::path::PathBuf;
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

/// How the agent runs `nft`: which program, in which network namespace.
#[derive(Clone, Debug)]
pub struct Nft {
    /// The program (`nft`, found on the PATH).
    pub program: PathBuf,
    /// The network namespace the rules go into (the host's,
    /// `/proc/1/ns/net`, when the agent runs in a pod of its own, with
    /// hostPID and CAP_SYS_ADMIN/NET_ADMIN there); None: this process's own.
    pub netns: Option<PathBuf>,
}

impl Default for Nft {
    fn default() -> Self {
        Nft {
            program: "nft".into(),
            netns: None,
        }
    }
}

impl Nft {
    async fn run(&self, script: &str) -> anyhow::Result<()> {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(&self.program);
        // Output is piped, never sent to /dev/null: an image may have no /dev.
        cmd.args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        // Kept open until the child is spawned.
        let mut netns: Option<std::fs::File> = None;
        if let Some(path) = &self.netns {
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
        let child = tokio::process::Command::from(cmd).spawn().map_err(|e| {
            anyhow::anyhow!(
                "cannot run {} (is nftables installed?): {e}",
                self.program.display()
            )
        })?;
        drop(netns);
        finish(child, script).await
    }

    /// Install the partition (replacing any earlier one).
    pub async fn cut(&self, p: &Partition) -> anyhow::Result<()> {
        self.lift().await?;
        self.run(&rules(p)).await
    }

    /// Remove the partition, if there is one.
    pub async fn lift(&self) -> anyhow::Result<()> {
        // `destroy` is not in every nft; add-then-delete works on all.
        self.run(&format!("table inet {TABLE}\ndelete table inet {TABLE}\n"))
            .await
    }
}

async fn finish(mut child: tokio::process::Child, script: &str) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    // A program that exits without reading is judged by its exit status.
    let _ = stdin.write_all(script.as_bytes()).await;
    drop(stdin);
    let out = child.wait_with_output().await?;
    anyhow::ensure!(
        out.status.success(),
        "nft failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

fn now_secs() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// The longest refusal kept on the node (annotation values have room, a
/// reader does not).
const MAX_REASON: usize = 300;

/// What the agent does about its node as it is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No power-loss label: no partition.
    Lift,
    /// Cut the node off until this Unix second.
    Cut { until: i64 },
    /// The label is there, but the node is not cut off, for this reason.
    Refuse(String),
}

/// What the label asks for and who asked: the agent decides again only
/// when this changes (a node changes every few seconds with its status).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Asked {
    pub label: Option<String>,
    pub mark: Option<NodeMark>,
    pub control_plane: bool,
}

impl Asked {
    pub fn of(node: &Node) -> Self {
        Asked {
            label: node.labels().get(POWER_LABEL).cloned(),
            mark: NodeMark::read(node),
            control_plane: node.labels().contains_key(CONTROL_PLANE_LABEL),
        }
    }
}

/// Whether to cut the node off, and until when. Pure: `asked` is what the
/// node carries, `exp` the experiment its mark names as the API server has
/// it (None: there is none by that name), `now` this node's clock in Unix
/// seconds, `grace` the restore grace the deadline may run past the
/// experiment's duration.
pub fn decide(
    asked: &Asked,
    exp: Option<&DataCenterFailure>,
    now: i64,
    grace: Duration,
) -> Decision {
    let Some(label) = &asked.label else {
        return Decision::Lift;
    };
    let refuse = |why: String| Decision::Refuse(why);
    let Ok(deadline) = label.parse::<i64>() else {
        return refuse(format!(
            "the {POWER_LABEL} label is not a Unix second: {label:?}"
        ));
    };
    if asked.control_plane {
        return refuse(format!(
            "a control-plane node ({CONTROL_PLANE_LABEL}) is never cut off"
        ));
    }
    let Some(mark) = asked.mark.as_ref().filter(|m| m.power_loss) else {
        return refuse(format!(
            "no experiment marked this node for a power loss ({MARK_ANNOTATION} is missing or not a PowerLoss mark): a stray label is not obeyed"
        ));
    };
    let Some(exp) = exp.filter(|e| e.metadata.uid.as_deref() == Some(mark.uid.as_str())) else {
        return refuse(format!(
            "experiment {} (uid {}) that marked this node does not exist",
            mark.experiment, mark.uid
        ));
    };
    let phase = exp.status.as_ref().and_then(|s| s.phase);
    if exp.metadata.deletion_timestamp.is_some()
        || !matches!(phase, Some(Phase::Injecting | Phase::ZoneDown))
    {
        let phase = match (exp.metadata.deletion_timestamp.is_some(), phase) {
            (true, _) => "being deleted".to_string(),
            (false, Some(p)) => format!("in phase {p:?}"),
            (false, None) => "not started".to_string(),
        };
        return refuse(format!(
            "experiment {} is {phase}, not taking its zone down",
            mark.experiment
        ));
    }
    if exp.spec.fault.mode != crate::api::FaultMode::PowerLoss {
        return refuse(format!(
            "experiment {} is not a PowerLoss drill",
            mark.experiment
        ));
    }
    if deadline <= now {
        return refuse(format!(
            "the deadline {deadline} is already past: this node's clock reads {now}"
        ));
    }
    let Ok(duration) = parse_duration(&exp.spec.duration) else {
        return refuse(format!(
            "experiment {}'s duration {:?} cannot be read",
            mark.experiment, exp.spec.duration
        ));
    };
    let cap = now.saturating_add((duration + grace).as_secs() as i64);
    Decision::Cut {
        until: deadline.min(cap),
    }
}

/// What the agent says on its node: the merge patch of its two annotations,
/// the one that does not apply removed (both, once no cut is asked for).
fn report(outcome: &Outcome) -> serde_json::Value {
    let (ack, refused) = match outcome {
        Outcome::Cut { until } => (Some(until.to_string()), None),
        Outcome::Refused(why) => {
            let mut why = why.clone();
            if why.len() > MAX_REASON {
                let mut end = MAX_REASON;
                while !why.is_char_boundary(end) {
                    end -= 1;
                }
                why.truncate(end);
            }
            (None, Some(why))
        }
        Outcome::Lifted => (None, None),
    };
    serde_json::json!({"metadata": {"annotations": {
        POWER_ACK_ANNOTATION: ack,
        POWER_REFUSED_ANNOTATION: refused,
    }}})
}

/// What the agent did about a decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The table is in place until this Unix second.
    Cut { until: i64 },
    /// Not cut off: refused, or `nft` failed.
    Refused(String),
    /// No partition (none was asked for).
    Lifted,
}

/// Carry out `decision` with `nft`. A failing `nft` is an outcome to report,
/// not only a line in the log.
pub async fn carry_out(nft: &Nft, decision: &Decision, spare: &[std::net::IpAddr]) -> Outcome {
    match decision {
        Decision::Cut { until } => {
            let p = Partition {
                until: *until,
                spare_loopback: true,
                spare: spare.to_vec(),
            };
            match nft.cut(&p).await {
                Ok(()) => Outcome::Cut { until: *until },
                Err(e) => {
                    // Whatever part of it went in, none of it stays.
                    let _ = nft.lift().await;
                    Outcome::Refused(format!("cannot cut the node off: {e}"))
                }
            }
        }
        Decision::Refuse(why) => {
            if let Err(e) = nft.lift().await {
                tracing::error!(error = %e, "cannot lift the partition");
            }
            Outcome::Refused(why.clone())
        }
        Decision::Lift => match nft.lift().await {
            Ok(()) => Outcome::Lifted,
            Err(e) => Outcome::Refused(format!("cannot lift the partition: {e}")),
        },
    }
}

/// What the agent needs to know.
#[derive(Clone, Debug)]
pub struct Agent {
    pub node: String,
    /// Addresses whose traffic the partition keeps (its own).
    pub spare: Vec<std::net::IpAddr>,
    pub nft: Nft,
    /// How far past the experiment's duration a deadline may reach (the
    /// operator's `--restore-grace`).
    pub restore_grace: Duration,
}

/// Run on `node` until stopped: lift a stale table, label the node, then
/// follow its power-loss label.
pub async fn run(client: Client, agent: Agent) -> anyhow::Result<()> {
    // A table left by an earlier run: its agent is gone, and with it the
    // address the table spared. If the drill still holds the node, its label
    // says so and the cut is made again below.
    agent
        .nft
        .lift()
        .await
        .map_err(|e| anyhow::anyhow!("cannot lift a stale partition: {e}"))?;
    let node = &agent.node;
    let nodes = Api::<Node>::all(client.clone());
    let patch =
        serde_json::json!({"metadata": {"labels": {AGENT_LABEL: env!("CARGO_PKG_VERSION")}}});
    nodes
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| anyhow::anyhow!("cannot label node {node}: {e}"))?;
    tracing::info!(%node, "firedrill agent ready");
    follow(client, &agent).await;
    Ok(())
}

/// Follow the power-loss label of the agent's node until the watch ends. A
/// watch that fails is tried again after a backoff (250 ms doubling to 30 s,
/// see [`paced`]), never at once; the deadline is kept meanwhile, and the
/// kernel ends the partition at it whatever happens here.
async fn follow(client: Client, agent: &Agent) {
    let node = agent.node.as_str();
    let nodes = Api::<Node>::all(client.clone());
    let experiments = Api::<DataCenterFailure>::all(client);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={node}"));
    let mut events = std::pin::pin!(paced("the node watch", watcher(nodes.clone(), cfg)));
    // The node as last seen, and what was decided for (None: nothing yet).
    let mut seen: Option<Node> = None;
    let mut decided: Option<Asked> = None;
    let mut until: Option<i64> = None;
    // The report not yet on the node.
    let mut unsent: Option<serde_json::Value> = None;
    // Reading the experiment and writing the report back off when they fail
    // (a node cut off by a table that does not spare this agent hears
    // nothing; it must not spin).
    let mut backoff = Backoff::new();
    let mut retry_at = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            ev = events.next() => {
                let Some(ev) = ev else { return };
                match ev {
                    Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n)) => seen = Some(n),
                    // An error is logged and waited out by `paced`.
                    Ok(_) | Err(_) => continue,
                }
            }
            _ = tick.tick() => {
                if until.is_some_and(|t| t <= now_secs()) {
                    let _ = agent.nft.lift().await;
                    tracing::warn!(%node, "power-loss deadline passed: partition lifted");
                    until = None;
                }
            }
        }
        if tokio::time::Instant::now() < retry_at {
            continue;
        }
        let asked = seen.as_ref().map(Asked::of);
        if let (Some(n), Some(asked)) = (&seen, asked)
            && decided.as_ref() != Some(&asked)
        {
            let exp = match &asked.mark {
                Some(m) if asked.label.is_some() => {
                    match experiments.get_opt(&m.experiment).await {
                        Ok(e) => e,
                        Err(e) => {
                            let wait = backoff.fail();
                            tracing::warn!(%node, error = %e, retry_in_ms = wait.as_millis() as u64, "cannot read the experiment that marked the node");
                            retry_at = tokio::time::Instant::now() + wait;
                            continue;
                        }
                    }
                }
                _ => None,
            };
            let said = n.annotations().contains_key(POWER_ACK_ANNOTATION)
                || n.annotations().contains_key(POWER_REFUSED_ANNOTATION);
            let decision = decide(&asked, exp.as_ref(), now_secs(), agent.restore_grace);
            let outcome = carry_out(&agent.nft, &decision, &agent.spare).await;
            match &outcome {
                Outcome::Cut { until } => tracing::warn!(%node, until, "power loss: node cut off"),
                Outcome::Refused(why) => tracing::error!(%node, why, "power loss refused"),
                Outcome::Lifted => tracing::debug!(%node, "no power loss"),
            }
            until = match outcome {
                Outcome::Cut { until } => Some(until),
                _ => None,
            };
            unsent = (outcome != Outcome::Lifted || said).then(|| report(&outcome));
            decided = Some(asked);
        }
        if let Some(patch) = &unsent {
            match nodes
                .patch(node, &PatchParams::default(), &Patch::Merge(patch))
                .await
            {
                Ok(_) => {
                    unsent = None;
                    backoff.succeed();
                }
                Err(e) => {
                    let wait = backoff.fail();
                    tracing::warn!(%node, error = %e, retry_in_ms = wait.as_millis() as u64, "cannot write the power-loss report to the node");
                    retry_at = tokio::time::Instant::now() + wait;
                }
            }
        } else {
            backoff.succeed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn agent(node: &str) -> Agent {
        Agent {
            node: node.into(),
            spare: vec![],
            nft: Nft::default(),
            restore_grace: Duration::from_secs(120),
        }
    }

    const NOW: i64 = 1_900_000_000;
    const GRACE: Duration = Duration::from_secs(120);

    /// Node a1 as a PowerLoss drill `drill` (uid-1) leaves it: marked, and
    /// labelled with `deadline`.
    fn marked(deadline: &str) -> Node {
        let mark = NodeMark {
            experiment: "drill".into(),
            uid: "uid-1".into(),
            prior_unschedulable: false,
            cordoned: false,
            tainted: false,
            taint_effect: None,
            power_loss: true,
        };
        serde_json::from_value(json!({
            "metadata": {"name": "a1",
                "labels": {POWER_LABEL: deadline, crate::fault::MARK_LABEL: "drill"},
                "annotations": {MARK_ANNOTATION: serde_json::to_string(&mark).unwrap()}},
        }))
        .unwrap()
    }

    /// The experiment `drill` (uid-1), a 10 m PowerLoss, in `phase`.
    fn drill(phase: &str) -> DataCenterFailure {
        serde_json::from_value(json!({
            "apiVersion": "chaos.firedrill.dev/v1alpha1", "kind": "DataCenterFailure",
            "metadata": {"name": "drill", "uid": "uid-1"},
            "spec": {"zone": "zone-a", "duration": "10m", "fault": {"mode": "PowerLoss"}, "faultOnly": true},
            "status": {"phase": phase},
        }))
        .unwrap()
    }

    fn decided(node: &Node, exp: Option<&DataCenterFailure>, now: i64) -> Decision {
        decide(&Asked::of(node), exp, now, GRACE)
    }

    fn refusal(d: Decision) -> String {
        match d {
            Decision::Refuse(why) => why,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn a_live_power_loss_experiment_gets_its_cut_capped_at_duration_and_grace() {
        let deadline = NOW + 300;
        let node = marked(&deadline.to_string());
        for phase in ["Injecting", "ZoneDown"] {
            assert_eq!(
                decided(&node, Some(&drill(phase)), NOW),
                Decision::Cut { until: deadline }
            );
        }
        // A deadline past duration (10 m) + grace (2 m) from now is capped.
        let far = marked(&(NOW + 86_400).to_string());
        assert_eq!(
            decided(&far, Some(&drill("ZoneDown")), NOW),
            Decision::Cut { until: NOW + 720 }
        );
        // No label: nothing to cut.
        let mut bare = node.clone();
        bare.labels_mut().remove(POWER_LABEL);
        assert_eq!(decided(&bare, None, NOW), Decision::Lift);
    }

    #[test]
    fn a_stray_power_loss_label_with_no_experiment_is_refused() {
        // The label alone, no mark.
        let stray: Node = serde_json::from_value(json!({
            "metadata": {"name": "a1", "labels": {POWER_LABEL: (NOW + 300).to_string()}},
        }))
        .unwrap();
        let why = refusal(decided(&stray, None, NOW));
        assert!(why.contains("a stray label is not obeyed"), "{why}");
        // A mark whose experiment is gone, or was replaced (another uid).
        let node = marked(&(NOW + 300).to_string());
        let why = refusal(decided(&node, None, NOW));
        assert_eq!(
            why,
            "experiment drill (uid uid-1) that marked this node does not exist"
        );
        let mut other = drill("ZoneDown");
        other.metadata.uid = Some("uid-2".into());
        assert_eq!(refusal(decided(&node, Some(&other), NOW)), why);
        // An experiment that is over, or not yet taking the zone down.
        for phase in ["Completed", "Aborted", "Restoring", "Baseline"] {
            let why = refusal(decided(&node, Some(&drill(phase)), NOW));
            assert_eq!(
                why,
                format!("experiment drill is in phase {phase}, not taking its zone down")
            );
        }
        let mut deleted = drill("ZoneDown");
        deleted.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
        );
        assert!(refusal(decided(&node, Some(&deleted), NOW)).contains("being deleted"));
    }

    #[test]
    fn a_deadline_already_past_on_the_nodes_clock_is_refused() {
        let node = marked(&NOW.to_string());
        let why = refusal(decided(&node, Some(&drill("ZoneDown")), NOW + 5));
        assert_eq!(
            why,
            format!(
                "the deadline {NOW} is already past: this node's clock reads {}",
                NOW + 5
            )
        );
        assert!(matches!(
            decided(&marked("soon"), Some(&drill("ZoneDown")), NOW),
            Decision::Refuse(w) if w.contains("not a Unix second")
        ));
    }

    #[test]
    fn a_control_plane_node_is_never_cut_off() {
        let mut node = marked(&(NOW + 300).to_string());
        node.labels_mut()
            .insert(CONTROL_PLANE_LABEL.into(), String::new());
        let why = refusal(decided(&node, Some(&drill("ZoneDown")), NOW));
        assert!(why.contains("control-plane"), "{why}");
    }

    /// A directory of this test's own.
    fn scratch(name: &str) -> crate::Scratch {
        crate::Scratch::new(&format!("agent-{name}"))
    }

    /// A stand-in for `nft`: a shell script that answers with `exit`.
    fn fake_nft(dir: &std::path::Path, exit: i32) -> Nft {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(format!("nft-{exit}"));
        std::fs::write(
            &path,
            format!("#!/bin/sh\ncat >/dev/null\necho 'Error: Could not process rule: Operation not permitted' >&2\nexit {exit}\n"),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        Nft {
            program: path,
            netns: None,
        }
    }

    #[tokio::test]
    async fn a_failing_nft_is_reported_on_the_node_not_only_logged() {
        let dir = scratch("failing");
        let failing = fake_nft(&dir, 1);
        let out = carry_out(&failing, &Decision::Cut { until: NOW }, &[]).await;
        let Outcome::Refused(why) = &out else {
            panic!("{out:?}")
        };
        assert!(
            why.starts_with("cannot cut the node off: nft failed (exit status: 1): Error: Could not process rule"),
            "{why}"
        );
        let patch = report(&out);
        assert_eq!(
            patch["metadata"]["annotations"][POWER_REFUSED_ANNOTATION],
            why.as_str()
        );
        assert!(patch["metadata"]["annotations"][POWER_ACK_ANNOTATION].is_null());
        // A missing nft is reported as well.
        let missing = Nft {
            program: dir.join("no-such-nft"),
            netns: None,
        };
        let out = carry_out(&missing, &Decision::Cut { until: NOW }, &[]).await;
        assert!(
            matches!(&out, Outcome::Refused(w) if w.contains("is nftables installed?")),
            "{out:?}"
        );
    }

    #[tokio::test]
    async fn the_cut_is_acknowledged_with_its_deadline_only_once_nft_succeeded() {
        let dir = scratch("ok");
        let ok = fake_nft(&dir, 0);
        let out = carry_out(&ok, &Decision::Cut { until: NOW }, &[]).await;
        assert_eq!(out, Outcome::Cut { until: NOW });
        let patch = report(&out);
        assert_eq!(
            patch["metadata"]["annotations"],
            json!({POWER_ACK_ANNOTATION: NOW.to_string(), POWER_REFUSED_ANNOTATION: null})
        );
        // A refusal lifts whatever was there, and says why.
        let out = carry_out(&ok, &Decision::Refuse("no".into()), &[]).await;
        assert_eq!(out, Outcome::Refused("no".into()));
        assert_eq!(
            report(&Outcome::Lifted)["metadata"]["annotations"],
            json!({POWER_ACK_ANNOTATION: null, POWER_REFUSED_ANNOTATION: null})
        );
        let long = report(&Outcome::Refused("é".repeat(400)));
        let kept = long["metadata"]["annotations"][POWER_REFUSED_ANNOTATION]
            .as_str()
            .unwrap()
            .to_string();
        assert!(kept.len() <= MAX_REASON && kept.len() >= MAX_REASON - 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_node_watch_backs_off_while_the_api_server_is_unreachable() {
        let (client, asked) = crate::fault::fixtures::unavailable(500);
        let a1 = agent("a1");
        tokio::select! {
            _ = follow(client, &a1) => panic!("the watch ended"),
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
