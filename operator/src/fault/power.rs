//! A power cut is verified, never assumed: a PowerLoss drill counts a node
//! as dark only when its node agent acknowledged the cut
//! (`chaos.firedrill.dev/power-loss-ack`, written once the nft table is in
//! place) and the node lifecycle controller marked it NotReady (its kubelet
//! really went silent). Each within a bound from the moment the zone's
//! nodes were labelled; a node that misses one, or whose agent refused,
//! ends the drill: it is aborted, restored, and Inconclusive, naming the
//! node and what it did not do. Pure.

use crate::api::{POWER_ACK_ANNOTATION, POWER_REFUSED_ANNOTATION};
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use std::time::Duration;

/// One node of the zone as the drill sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    pub name: String,
    /// Its agent acknowledged the cut.
    pub acknowledged: bool,
    /// Its agent refused, or could not cut: why.
    pub refused: Option<String>,
    /// Its Ready condition is True.
    pub ready: bool,
}

impl Seen {
    pub fn of(node: &Node) -> Self {
        let a = node.annotations();
        Seen {
            name: node.name_any(),
            acknowledged: a
                .get(POWER_ACK_ANNOTATION)
                .is_some_and(|v| v.parse::<i64>().is_ok()),
            refused: a.get(POWER_REFUSED_ANNOTATION).cloned(),
            ready: node
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
        }
    }
}

/// How long each node has, from the moment the zone's nodes were labelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    pub acknowledge: Duration,
    pub not_ready: Duration,
}

/// Where the zone's darkness stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Darkness {
    /// Every node acknowledged the cut and is NotReady.
    Dark,
    /// Not yet, and within the bounds: how many have acknowledged, and how
    /// many are NotReady.
    Waiting {
        acknowledged: usize,
        not_ready: usize,
    },
    /// A node that refused, or missed a bound: the drill ends Inconclusive.
    NotDark(String),
}

/// Judge the zone's nodes `waited` after they were labelled. `window_over`:
/// the dark window ended (the nodes have no more time, whatever the bounds).
pub fn verify(seen: &[Seen], waited: Duration, bounds: Bounds, window_over: bool) -> Darkness {
    let refused: Vec<&Seen> = seen.iter().filter(|s| s.refused.is_some()).collect();
    if let Some(first) = refused.first() {
        return Darkness::NotDark(format!(
            "the firedrill agent on {} did not cut it off: {}",
            names(&refused),
            first.refused.as_deref().unwrap_or_default()
        ));
    }
    let silent: Vec<&Seen> = seen.iter().filter(|s| !s.acknowledged).collect();
    if !silent.is_empty() && (waited > bounds.acknowledge || window_over) {
        let within = if waited > bounds.acknowledge {
            format!("within {}s", bounds.acknowledge.as_secs())
        } else {
            "before the dark window ended".into()
        };
        return Darkness::NotDark(format!(
            "{} never acknowledged the power cut {within}: no firedrill agent cut it off (is the agent DaemonSet running there?)",
            names(&silent)
        ));
    }
    let lit: Vec<&Seen> = seen.iter().filter(|s| s.ready).collect();
    if !lit.is_empty() && (waited > bounds.not_ready || window_over) {
        let within = if waited > bounds.not_ready {
            format!("{}s after the cut", bounds.not_ready.as_secs())
        } else {
            format!(
                "when the dark window ended, {}s after the cut (the node lifecycle controller takes about 50s: make the duration longer)",
                waited.as_secs()
            )
        };
        return Darkness::NotDark(format!(
            "{} still Ready {within}: its kubelet was not cut off",
            names(&lit)
        ));
    }
    if silent.is_empty() && lit.is_empty() {
        return Darkness::Dark;
    }
    Darkness::Waiting {
        acknowledged: seen.len() - silent.len(),
        not_ready: seen.len() - lit.len(),
    }
}

/// `node a1`, `nodes a1, a2`, `nodes a1, ..., a5 and 3 more`.
fn names(nodes: &[&Seen]) -> String {
    let mut s = nodes
        .iter()
        .take(5)
        .map(|n| n.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if nodes.len() > 5 {
        s.push_str(&format!(" and {} more", nodes.len() - 5));
    }
    if nodes.len() == 1 {
        format!("node {s}")
    } else {
        format!("nodes {s}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: Bounds = Bounds {
        acknowledge: Duration::from_secs(45),
        not_ready: Duration::from_secs(90),
    };

    fn seen(name: &str, acknowledged: bool, ready: bool) -> Seen {
        Seen {
            name: name.into(),
            acknowledged,
            refused: None,
            ready,
        }
    }

    fn at(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn the_zone_is_dark_once_every_node_acknowledged_and_went_not_ready() {
        let zone = [seen("a1", true, false), seen("a2", true, false)];
        assert_eq!(verify(&zone, at(50), BOUNDS, false), Darkness::Dark);
        let zone = [seen("a1", true, false), seen("a2", true, true)];
        assert_eq!(
            verify(&zone, at(50), BOUNDS, false),
            Darkness::Waiting {
                acknowledged: 2,
                not_ready: 1
            }
        );
    }

    #[test]
    fn a_node_that_never_acknowledges_is_named_once_its_bound_is_past() {
        let zone = [seen("a1", true, true), seen("a2", false, true)];
        assert!(matches!(
            verify(&zone, at(45), BOUNDS, false),
            Darkness::Waiting {
                acknowledged: 1,
                ..
            }
        ));
        assert_eq!(
            verify(&zone, at(46), BOUNDS, false),
            Darkness::NotDark(
                "node a2 never acknowledged the power cut within 45s: no firedrill agent cut it off (is the agent DaemonSet running there?)".into()
            )
        );
        // Not acknowledged and NotReady all the same (something else took
        // it down): still not our cut.
        let zone = [seen("a1", false, false)];
        assert!(
            matches!(verify(&zone, at(46), BOUNDS, false), Darkness::NotDark(w) if w.starts_with("node a1 never acknowledged"))
        );
        let many: Vec<Seen> = (1..=7)
            .map(|i| seen(&format!("a{i}"), false, true))
            .collect();
        assert!(matches!(
            verify(&many, at(46), BOUNDS, false),
            Darkness::NotDark(w) if w.starts_with("nodes a1, a2, a3, a4, a5 and 2 more never acknowledged")
        ));
    }

    #[test]
    fn an_acknowledged_node_that_stays_ready_is_named_once_its_bound_is_past() {
        let zone = [seen("a1", true, false), seen("a2", true, true)];
        assert!(matches!(
            verify(&zone, at(90), BOUNDS, false),
            Darkness::Waiting { .. }
        ));
        assert_eq!(
            verify(&zone, at(91), BOUNDS, false),
            Darkness::NotDark(
                "node a2 still Ready 90s after the cut: its kubelet was not cut off".into()
            )
        );
        // A window shorter than the bound ends the wait.
        assert!(matches!(
            verify(&zone, at(30), BOUNDS, true),
            Darkness::NotDark(w) if w.starts_with("node a2 still Ready when the dark window ended, 30s after the cut")
        ));
    }

    #[test]
    fn a_refusal_ends_it_at_once_with_the_agents_reason() {
        let mut a1 = seen("a1", false, true);
        a1.refused = Some("cannot cut the node off: nft failed (exit status: 1): Error".into());
        assert_eq!(
            verify(&[a1, seen("a2", true, false)], at(1), BOUNDS, false),
            Darkness::NotDark(
                "the firedrill agent on node a1 did not cut it off: cannot cut the node off: nft failed (exit status: 1): Error".into()
            )
        );
    }

    #[test]
    fn only_a_deadline_counts_as_an_acknowledgement() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "a1", "annotations": {POWER_ACK_ANNOTATION: "1900000000"}},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]},
        }))
        .unwrap();
        assert_eq!(Seen::of(&node), seen("a1", true, false));
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "a1", "annotations": {POWER_ACK_ANNOTATION: "yes"}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        }))
        .unwrap();
        assert_eq!(Seen::of(&node), seen("a1", false, true));
    }
}
