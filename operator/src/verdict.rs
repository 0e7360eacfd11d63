//! Judging measurements against objectives. Pure.
//!
//! Per SLO: **Passed** when time to recover ≤ recoveryTimeObjective and
//! availability ≥ availabilityObjective; **Failed** otherwise; **Inconclusive**
//! when the probe never produced an answer (it could not run). Overall: Failed
//! when any critical SLO failed, else Inconclusive when any critical SLO is
//! inconclusive, else Passed.

use crate::api::{SloSpec, SloStatus, Verdict};
use crate::slo::Measurement;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::time::Duration;

fn secs(ms: i64) -> f64 {
    (ms as f64 / 100.0).round() / 10.0
}

fn time(ms: i64) -> Option<Time> {
    k8s_openapi::jiff::Timestamp::from_millisecond(ms)
        .ok()
        .map(Time)
}

/// Judge one SLO. `rto` is the parsed recoveryTimeObjective; `zone` names the
/// dark zone in messages; `last_error` is the probe's latest failure reason.
pub fn judge(
    slo: &SloSpec,
    rto: Duration,
    m: &Measurement,
    zone: &str,
    last_error: Option<&str>,
) -> SloStatus {
    let avail = m.availability_percent();
    let rto_s = rto.as_secs_f64();
    let (verdict, message) = if m.ok + m.failed == 0 {
        let why = last_error.unwrap_or("no samples were taken");
        (
            Verdict::Inconclusive,
            format!("the probe could not run: {why}"),
        )
    } else if m.time_to_recover_ms.is_none() {
        (
            Verdict::Failed,
            format!(
                "never recovered while {zone} was dark (down {}s)",
                secs(m.longest_outage_ms)
            ),
        )
    } else {
        let ttr = secs(m.time_to_recover_ms.unwrap_or(0));
        let mut problems = vec![];
        if ttr > rto_s {
            problems.push(format!("recovered in {ttr}s, objective {rto_s}s"));
        }
        if let (Some(a), Some(obj)) = (avail, slo.availability_objective)
            && a < obj
        {
            problems.push(format!("availability {a:.2}%, objective {obj}%"));
        }
        if problems.is_empty() {
            let mut msg = format!("recovered in {ttr}s (objective {rto_s}s)");
            if let Some(a) = avail {
                msg.push_str(&format!(", availability {a:.2}%"));
                if let Some(obj) = slo.availability_objective {
                    msg.push_str(&format!(" (objective {obj}%)"));
                }
            }
            (Verdict::Passed, msg)
        } else {
            (Verdict::Failed, problems.join("; "))
        }
    };
    SloStatus {
        name: slo.name.clone(),
        verdict: Some(verdict),
        time_to_recover_seconds: m.time_to_recover_ms.map(secs),
        longest_outage_seconds: Some(secs(m.longest_outage_ms)),
        availability_percent: avail.map(|a| (a * 100.0).round() / 100.0),
        samples: m.samples() as i64,
        failures: m.failed as i64,
        first_failure_at: m.first_failure_at.and_then(time),
        recovered_at: m.recovered_at.and_then(time),
        message: Some(message),
    }
}

/// Namespaces an SLO's probe points into, when that can be told.
pub fn probe_namespaces(slo: &SloSpec) -> Vec<String> {
    let p = &slo.probe;
    if let Some(k) = &p.kubernetes {
        return k
            .service
            .as_ref()
            .map(|s| s.namespace.clone())
            .into_iter()
            .chain(k.workload.as_ref().map(|w| w.namespace.clone()))
            .collect();
    }
    // In-cluster DNS names: <service>.<namespace>[.svc[.cluster.local]]
    let host = p
        .http
        .as_ref()
        .and_then(|h| {
            h.url
                .split("://")
                .nth(1)
                .map(|r| r.split(['/', ':', '?']).next().unwrap_or("").to_string())
        })
        .or_else(|| p.tcp.as_ref().map(|t| t.host.clone()))
        .unwrap_or_default();
    let parts: Vec<&str> = host.split('.').collect();
    match parts.as_slice() {
        [_, ns] | [_, ns, "svc", ..] => vec![ns.to_string()],
        _ => vec![],
    }
}

/// The overall verdict and its one-line reason. `pinned` are the plan's
/// "namespace/pod (why)" names of pods pinned to the zone.
pub fn overall(
    specs: &[SloSpec],
    results: &[SloStatus],
    zone: &str,
    pinned: &[String],
) -> (Verdict, String) {
    let critical = |r: &SloStatus| {
        specs
            .iter()
            .find(|s| s.name == r.name)
            .is_none_or(|s| s.critical)
    };
    let failed: Vec<&SloStatus> = results
        .iter()
        .filter(|r| critical(r) && r.verdict == Some(Verdict::Failed))
        .collect();
    if let Some(first) = failed.first() {
        let mut reason = format!(
            "{}: {}",
            first.name,
            first.message.as_deref().unwrap_or("failed")
        );
        if let Some(spec) = specs.iter().find(|s| s.name == first.name) {
            let nss = probe_namespaces(spec);
            let behind: Vec<&String> = pinned
                .iter()
                .filter(|p| nss.iter().any(|ns| p.starts_with(&format!("{ns}/"))))
                .collect();
            if !behind.is_empty() {
                // "ns/pod (why)": say the why once when every pod shares it.
                let split = |p: &str| match p.split_once(" (") {
                    Some((pod, why)) => (pod.to_string(), why.trim_end_matches(')').to_string()),
                    None => (p.to_string(), String::new()),
                };
                let parts: Vec<(String, String)> = behind.iter().map(|p| split(p)).collect();
                let same = parts.iter().all(|(_, w)| *w == parts[0].1) && !parts[0].1.is_empty();
                let names: Vec<String> = parts
                    .iter()
                    .take(3)
                    .map(|(pod, why)| {
                        if same || why.is_empty() {
                            pod.clone()
                        } else {
                            format!("{pod} ({why})")
                        }
                    })
                    .collect();
                let how = if same {
                    format!(" by {}", parts[0].1)
                } else {
                    String::new()
                };
                reason.push_str(&format!("; pinned to {zone}{how}: {}", names.join(", ")));
                if behind.len() > 3 {
                    reason.push_str(&format!(" and {} more", behind.len() - 3));
                }
            }
        }
        if failed.len() > 1 {
            let others: Vec<&str> = failed[1..].iter().map(|r| r.name.as_str()).collect();
            reason.push_str(&format!(" (also failed: {})", others.join(", ")));
        }
        return (Verdict::Failed, reason);
    }
    if let Some(r) = results
        .iter()
        .find(|r| critical(r) && r.verdict == Some(Verdict::Inconclusive))
    {
        return (
            Verdict::Inconclusive,
            format!(
                "{}: {}",
                r.name,
                r.message.as_deref().unwrap_or("inconclusive")
            ),
        );
    }
    let passed: Vec<String> = results
        .iter()
        .filter(|r| r.verdict == Some(Verdict::Passed))
        .map(|r| r.name.clone())
        .collect();
    (
        Verdict::Passed,
        format!(
            "every critical SLO met its objectives ({})",
            passed.join(", ")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{KubernetesProbe, Probe, ServiceCheck, TcpProbe};

    fn slo(name: &str, ns: &str) -> SloSpec {
        SloSpec {
            name: name.into(),
            critical: true,
            probe: Probe {
                kubernetes: Some(KubernetesProbe {
                    service: Some(ServiceCheck {
                        namespace: ns.into(),
                        name: "svc".into(),
                        min_ready_endpoints: 1,
                    }),
                    workload: None,
                }),
                ..Default::default()
            },
            interval: "1s".into(),
            timeout: "1s".into(),
            recovery_time_objective: "30s".into(),
            availability_objective: Some(99.0),
            guard: None,
        }
    }

    fn m(ok: u64, failed: u64, ttr: Option<i64>) -> Measurement {
        Measurement {
            ok,
            failed,
            time_to_recover_ms: ttr,
            longest_outage_ms: 4000,
            ..Default::default()
        }
    }

    #[test]
    fn passed_needs_both_objectives() {
        let s = slo("messaging", "chat");
        let r = judge(
            &s,
            Duration::from_secs(30),
            &m(995, 5, Some(4000)),
            "zone-a",
            None,
        );
        assert_eq!(r.verdict, Some(Verdict::Passed));
        assert_eq!(r.time_to_recover_seconds, Some(4.0));
        assert_eq!(
            r.message.as_deref(),
            Some("recovered in 4s (objective 30s), availability 99.50% (objective 99%)")
        );

        let slow = judge(
            &s,
            Duration::from_secs(30),
            &m(995, 5, Some(31_000)),
            "zone-a",
            None,
        );
        assert_eq!(slow.verdict, Some(Verdict::Failed));
        assert!(
            slow.message
                .unwrap()
                .contains("recovered in 31s, objective 30s")
        );

        let flaky = judge(
            &s,
            Duration::from_secs(30),
            &m(90, 10, Some(1000)),
            "zone-a",
            None,
        );
        assert_eq!(flaky.verdict, Some(Verdict::Failed));
        assert_eq!(
            flaky.message.as_deref(),
            Some("availability 90.00%, objective 99%")
        );
    }

    #[test]
    fn never_recovered_fails_without_a_time() {
        let r = judge(
            &slo("authentication", "auth"),
            Duration::from_secs(30),
            &m(10, 50, None),
            "zone-a",
            None,
        );
        assert_eq!(r.verdict, Some(Verdict::Failed));
        assert_eq!(r.time_to_recover_seconds, None);
        assert_eq!(
            r.message.as_deref(),
            Some("never recovered while zone-a was dark (down 4s)")
        );
    }

    #[test]
    fn no_answers_is_inconclusive_and_says_why() {
        let r = judge(
            &slo("payments", "pay"),
            Duration::from_secs(30),
            &Measurement {
                errors: 7,
                ..Default::default()
            },
            "zone-a",
            Some("secret pay/token not found"),
        );
        assert_eq!(r.verdict, Some(Verdict::Inconclusive));
        assert_eq!(
            r.message.as_deref(),
            Some("the probe could not run: secret pay/token not found")
        );
    }

    #[test]
    fn overall_names_the_pinned_pods_behind_a_failure() {
        let specs = vec![slo("authentication", "auth"), slo("messaging", "chat")];
        let results = vec![
            judge(
                &specs[0],
                Duration::from_secs(30),
                &m(10, 50, None),
                "zone-a",
                None,
            ),
            judge(
                &specs[1],
                Duration::from_secs(30),
                &m(995, 5, Some(4000)),
                "zone-a",
                None,
            ),
        ];
        let pinned = vec![
            "auth/login-1 (nodeSelector topology.kubernetes.io/zone=zone-a)".to_string(),
            "other/x-1 (nodeSelector)".to_string(),
        ];
        let (v, reason) = overall(&specs, &results, "zone-a", &pinned);
        assert_eq!(v, Verdict::Failed);
        assert_eq!(
            reason,
            "authentication: never recovered while zone-a was dark (down 4s); pinned to zone-a by nodeSelector topology.kubernetes.io/zone=zone-a: auth/login-1"
        );
    }

    #[test]
    fn non_critical_failures_do_not_fail_the_experiment() {
        let mut specs = vec![slo("authentication", "auth"), slo("search", "search")];
        specs[1].critical = false;
        let results = vec![
            judge(
                &specs[0],
                Duration::from_secs(30),
                &m(100, 0, Some(0)),
                "zone-a",
                None,
            ),
            judge(
                &specs[1],
                Duration::from_secs(30),
                &m(10, 50, None),
                "zone-a",
                None,
            ),
        ];
        assert_eq!(overall(&specs, &results, "zone-a", &[]).0, Verdict::Passed);
    }

    #[test]
    fn namespaces_from_in_cluster_names() {
        let mut s = slo("x", "ignored");
        s.probe = Probe {
            tcp: Some(TcpProbe {
                host: "login.auth.svc.cluster.local".into(),
                port: 443,
            }),
            ..Default::default()
        };
        assert_eq!(probe_namespaces(&s), ["auth"]);
        s.probe = Probe {
            tcp: Some(TcpProbe {
                host: "127.0.0.1".into(),
                port: 443,
            }),
            ..Default::default()
        };
        assert!(probe_namespaces(&s).is_empty());
    }
}
