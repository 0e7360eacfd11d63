//! Judging measurements against objectives. Pure.
//!
//! Per SLO: **Passed** when time to recover ≤ recoveryTimeObjective and
//! availability ≥ availabilityObjective; **Failed** otherwise; **Inconclusive**
//! when the probe never produced an answer, or could not run for more than
//! `maxErrorPercent` of the window: errors never make a pass. Overall: Failed
//! when any critical SLO failed, else Inconclusive when any critical SLO is
//! inconclusive, or when no SLO passed and any is inconclusive (SLOs that
//! are all non-critical and could not be judged show nothing), else Passed.
//!
//! A write probe's SLO is judged once more on its read-back
//! ([`judge_writes`]): acknowledged writes lost past the
//! recoveryPointObjective fail it; writes that could not be read back turn a
//! pass Inconclusive, and are never counted as kept or as lost.

use crate::api::{DependencyFinding, LostWriteStatus, SloSpec, SloStatus, Verdict, WriteStatus};
use crate::canary;
use crate::slo::Measurement;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
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
    let errors = m.error_percent();
    let (verdict, message) = if m.ok + m.failed == 0 {
        let why = last_error.unwrap_or("no samples were taken");
        (
            Verdict::Inconclusive,
            format!("the probe could not run: {why}"),
        )
    } else if errors > slo.max_error_percent {
        let why = last_error.unwrap_or("unknown");
        (
            Verdict::Inconclusive,
            format!(
                "the probe could not run for {errors:.1}% of the window (maxErrorPercent {}%): {why}",
                slo.max_error_percent
            ),
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
    let (verdict, message) = match uncovered(slo, rto, m, verdict) {
        Some(why) => (Verdict::Inconclusive, why),
        None => (verdict, message),
    };
    SloStatus {
        name: slo.name.clone(),
        verdict: Some(verdict),
        time_to_recover_seconds: m.time_to_recover_ms.map(secs),
        longest_outage_seconds: Some(secs(m.longest_outage_ms)),
        availability_percent: avail.map(|a| (a * 100.0).round() / 100.0),
        samples: m.samples() as i64,
        failures: m.failed as i64,
        errors: m.errors as i64,
        error_percent: (m.errors > 0).then(|| (errors * 100.0).round() / 100.0),
        first_failure_at: m.first_failure_at.and_then(time),
        recovered_at: m.recovered_at.and_then(time),
        message: Some(message),
        cause: None,
        predicted: None,
        dependencies: vec![],
        writes: None,
    }
}

/// A write probe's read-back, judged into `r` (already judged on its
/// samples): the numbers go into `r.writes`. With a recovery-point
/// objective, acknowledged writes lost past it fail the SLO, whatever else
/// it showed (`0s`: any lost write does); writes that could not be read
/// back make a pass Inconclusive, since an unread write may be a lost one;
/// they are never counted as kept or lost.
pub fn judge_writes(r: &mut SloStatus, objective: Option<Duration>, loss: &canary::Loss) {
    let lost_write = |w: &canary::LostWrite| {
        Some(LostWriteStatus {
            id: w.id.clone(),
            at: MicroTime(time(w.at_ms)?.0),
        })
    };
    let writes = WriteStatus {
        acknowledged: loss.acknowledged as i64,
        refused_while_dark: r.failures,
        lost: loss.lost as i64,
        unverified: loss.unverified as i64,
        first_lost: loss.first.as_ref().and_then(lost_write),
        last_lost: loss.last.as_ref().and_then(lost_write),
        recovery_point_seconds: loss.recovery_point_ms.map(secs),
    };
    let rp = writes.recovery_point_seconds.unwrap_or(0.0);
    let lost = lost_range(&writes).map(|range| {
        format!(
            "{} acknowledged writes lost ({range}), recovery point {rp}s",
            writes.lost
        )
    });
    let mut parts: Vec<String> = r.message.take().into_iter().collect();
    match objective.map(|o| o.as_secs_f64()) {
        Some(o) if writes.lost > 0 && (o == 0.0 || rp > o) => {
            if r.verdict != Some(Verdict::Failed) {
                parts.clear();
            }
            r.verdict = Some(Verdict::Failed);
            parts.push(format!("{}, objective {o}s", lost.unwrap_or_default()));
        }
        _ if writes.unverified > 0 => {
            if r.verdict == Some(Verdict::Passed) {
                r.verdict = Some(Verdict::Inconclusive);
            }
            parts.push(format!(
                "{} of {} acknowledged writes could not be read back: {}",
                writes.unverified,
                writes.acknowledged,
                loss.last_error.as_deref().unwrap_or("unknown")
            ));
            if let Some(lost) = lost {
                parts.push(lost);
            }
        }
        _ if writes.acknowledged == 0 && objective.is_some() => {
            if r.verdict == Some(Verdict::Passed) {
                r.verdict = Some(Verdict::Inconclusive);
            }
            parts.push("no write was acknowledged, so no recovery point could be measured".into());
        }
        Some(o) => parts.push(match lost {
            Some(lost) => format!("{lost} (objective {o}s)"),
            None => format!(
                "all {} acknowledged writes read back (recovery point objective {o}s)",
                writes.acknowledged
            ),
        }),
        None => {
            if let Some(lost) = lost {
                parts.push(lost);
            }
        }
    }
    r.message = Some(parts.join("; "));
    r.writes = Some(writes);
}

/// The lost writes of a read-back, named: `fd-1a2b-17 to fd-1a2b-36, written
/// 2026-12-01T11:02:03.1Z to 2026-12-01T11:02:05Z`.
pub fn lost_range(w: &WriteStatus) -> Option<String> {
    let (first, last) = (w.first_lost.as_ref()?, w.last_lost.as_ref()?);
    Some(format!(
        "{} to {}, written {} to {}",
        first.id, last.id, first.at.0, last.at.0
    ))
}

/// Why a verdict the samples cannot carry is Inconclusive: they cover less
/// of the window than `minCoveragePercent`, and what happened in the gap
/// could change it. A pass always could (the outage nobody watched). A
/// failure stands when the gap cannot undo it: a failed sample taken after
/// the objective's time had passed, or failed time alone that breaks the
/// availability objective.
fn uncovered(slo: &SloSpec, rto: Duration, m: &Measurement, verdict: Verdict) -> Option<String> {
    let coverage = m.coverage_percent();
    if coverage >= slo.min_coverage_percent || verdict == Verdict::Inconclusive {
        return None;
    }
    if verdict == Verdict::Failed {
        let late = m
            .last_failure_at
            .is_some_and(|t| t - m.window_start > rto.as_millis() as i64);
        let unavailable = slo.availability_objective.is_some_and(|obj| {
            let best = (m.window_ms - m.fail_ms).max(0) as f64 * 100.0 / m.window_ms.max(1) as f64;
            best < obj
        });
        if late || unavailable {
            return None;
        }
    }
    let gap = m
        .largest_gap
        .map(|(a, b)| {
            let at = time(a).map(|t| t.0.to_string()).unwrap_or_default();
            format!("; the longest gap: {}s from {at}", secs(b - a))
        })
        .unwrap_or_default();
    Some(format!(
        "the probe's samples cover only {coverage:.1}% of the window (minCoveragePercent {}%){gap}: the operator did not probe the rest (stopped, restarted or handing over)",
        slo.min_coverage_percent
    ))
}

/// What the cluster showed of the pods behind one SLO at the end of the dark window.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// `Service auth/login`
    pub what: String,
    pub total: usize,
    pub ready: usize,
    /// Pods the scheduler could not place, and its message for the first.
    pub unschedulable: usize,
    pub scheduler_message: Option<String>,
}

/// Why an SLO failed, from what the cluster showed (`observed`) and what
/// the plan found behind this SLO's probe (`planned`, when it predicted a
/// failure). Only pods that back this SLO are named.
pub fn cause(observed: Option<&Observed>, planned: Option<&str>) -> Option<String> {
    let mut parts = vec![];
    if let Some(o) = observed {
        let mut s = format!(
            "{} had {} of {} pods ready at the end of the dark window",
            o.what, o.ready, o.total
        );
        if o.unschedulable > 0 {
            s.push_str(&format!(
                "; {} replacement pods Pending, unschedulable",
                o.unschedulable
            ));
            if let Some(m) = &o.scheduler_message {
                s.push_str(&format!(": {m}"));
            }
        }
        parts.push(s);
    }
    if let Some(p) = planned {
        parts.push(format!("the plan predicted it: {p}"));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// Name, in each failed SLO's cause, the SLOs it depends on that were down
/// at the same time: the declared `dependsOn` first, else a failed SLO in
/// another namespace whose outage began no later and overlaps this one
/// (`namespaces`: each SLO's probe's namespace, where known). A cascade
/// reads: "the journey failed while authentication (Service auth/login,
/// pinned to zone-a by nodeSelector ...) was down".
pub fn attribute(
    specs: &[SloSpec],
    results: &mut [SloStatus],
    predictions: &[crate::api::SloPredictionStatus],
    namespaces: &std::collections::BTreeMap<String, String>,
) {
    let cascades = Cascades {
        specs,
        predictions,
        namespaces,
        failed: results
            .iter()
            .filter(|r| r.verdict == Some(Verdict::Failed))
            .filter_map(|r| Some((r.name.clone(), outage(r)?)))
            .collect(),
    };
    for r in results.iter_mut() {
        if r.verdict != Some(Verdict::Failed) {
            continue;
        }
        let Some(mine) = outage(r) else { continue };
        let declared: Vec<String> = specs
            .iter()
            .find(|s| s.name == r.name)
            .map(|s| s.depends_on.clone())
            .unwrap_or_default();
        let blamed = cascades.blame(&r.name, mine, &declared);
        if blamed.is_empty() {
            continue;
        }
        let note = cascades.note(&blamed, &declared);
        r.cause = Some(match r.cause.take() {
            Some(own) => format!("{note}; {own}"),
            None => note,
        });
    }
}

/// When an SLO was out: from its first failure to its recovery (or ever).
fn outage(r: &SloStatus) -> Option<(i64, i64)> {
    let start = r.first_failure_at.as_ref()?.0.as_millisecond();
    let end = r
        .recovered_at
        .as_ref()
        .map(|t| t.0.as_millisecond())
        .unwrap_or(i64::MAX);
    Some((start, end))
}

/// What tells which failed SLO another's failure cascades from.
struct Cascades<'a> {
    specs: &'a [SloSpec],
    predictions: &'a [crate::api::SloPredictionStatus],
    namespaces: &'a std::collections::BTreeMap<String, String>,
    /// Each failed SLO, with its outage.
    failed: Vec<(String, (i64, i64))>,
}

impl Cascades<'_> {
    /// The failed SLOs the failure of `name` (out during `mine`) is
    /// blamed on: those of `declared` that were down with it; else, only for
    /// an SLO the plan expected to survive on its own, and never onto an SLO
    /// that declares it depends on this one, those in another namespace
    /// whose outage began no later and overlaps it.
    fn blame(&self, name: &str, mine: (i64, i64), declared: &[String]) -> Vec<&String> {
        let overlapping =
            |(n, (s, e)): &&(String, (i64, i64))| *n != name && *s <= mine.1 && mine.0 <= *e;
        let blamed: Vec<&String> = self
            .failed
            .iter()
            .filter(overlapping)
            .filter(|(n, _)| declared.contains(n))
            .map(|(n, _)| n)
            .collect();
        let failed_on_its_own = self
            .predictions
            .iter()
            .any(|p| p.name == name && p.verdict == Some(Verdict::Failed));
        if !blamed.is_empty() || failed_on_its_own {
            return blamed;
        }
        let my_ns = self.namespaces.get(name);
        let downstream = |n: &String| {
            self.specs
                .iter()
                .any(|s| &s.name == n && s.depends_on.iter().any(|d| d == name))
        };
        self.failed
            .iter()
            .filter(overlapping)
            .filter(|(n, (s, _))| {
                *s <= mine.0
                    && !downstream(n)
                    && my_ns.is_some()
                    && self.namespaces.get(n).is_some_and(|ns| Some(ns) != my_ns)
            })
            .map(|(n, _)| n)
            .collect()
    }

    /// The cause that names the `blamed` SLOs, with what serves each and the
    /// rule that kept it from failing over, where the plan told.
    fn note(&self, blamed: &[&String], declared: &[String]) -> String {
        let parts: Vec<String> = blamed
            .iter()
            .map(|n| {
                let p = self.predictions.iter().find(|p| &&p.name == n);
                let detail = match (
                    p.and_then(|p| p.target.clone()),
                    p.and_then(|p| p.rule.clone()),
                ) {
                    (Some(t), Some(rule)) => format!(" ({t}, {rule})"),
                    (Some(t), None) => format!(" ({t})"),
                    _ => String::new(),
                };
                format!("{n}{detail}")
            })
            .collect();
        let how = if declared.iter().any(|d| blamed.contains(&d)) {
            "the journey failed while"
        } else {
            "its outage overlaps, and began no earlier than, the outage of"
        };
        let verb = if blamed.len() == 1 { "was" } else { "were" };
        if how.starts_with("the journey") {
            format!("{how} {} {verb} down", parts.join(" and "))
        } else {
            format!("{how} {}", parts.join(" and "))
        }
    }
}

/// When one Service had no ready endpoint in the dark window: from the
/// first such moment to its recovery (None: it never recovered).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceOutage {
    /// `namespace/name`
    pub service: String,
    pub start: i64,
    pub end: Option<i64>,
}

/// The outages in `[start, end)` of the recorded Services.
pub fn service_outages(
    timelines: &std::collections::BTreeMap<String, crate::slo::Timeline>,
    start: i64,
    end: i64,
    now: i64,
) -> Vec<ServiceOutage> {
    timelines
        .iter()
        .filter_map(|(svc, tl)| {
            let m = tl.measure(start, end, now);
            Some(ServiceOutage {
                service: svc.clone(),
                start: m.first_failure_at?,
                end: m.recovered_at,
            })
        })
        .collect()
}

/// What checking one SLO's dependencies needs to know of it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SloDependencies {
    pub name: String,
    /// Its probe's interval, in milliseconds.
    pub interval_ms: i64,
    /// The Service behind its own probe (`namespace/name`), where known.
    pub own: Option<String>,
    /// Its `dependsOn`, each with the Service behind that SLO's probe.
    pub declared: Vec<(String, Option<String>)>,
    /// The Services on the path of the cascade the plan predicted for it
    /// (`namespace/name`, the lost one last), if any.
    pub via: Vec<String>,
}

/// How far apart an SLO's outage and a Service's may start (and end) and
/// still be one: one probe interval, plus the tick in which the recorded
/// endpoints follow the pods ([`crate::api::ENDPOINTS_TICK_MS`]).
fn tolerance(interval_ms: i64) -> i64 {
    interval_ms + crate::api::ENDPOINTS_TICK_MS as i64
}

/// Check each SLO's dependencies against what was observed. A failed SLO
/// whose own Service kept a ready endpoint through its outage is
/// attributed to every Service whose outage started within one interval of
/// its failure and ended within one interval of its recovery (or neither
/// recovered): an overlap alone is no cause. Each `dependsOn` is reported
/// as observed or not when either side went down; each Service observed
/// but not declared, as such. The observed cause leads the SLO's cause.
/// Whether the plan predicted this SLO to fail for want of its own pods
/// (not through a Service it calls).
pub fn fails_on_its_own(p: &crate::api::SloPredictionStatus) -> bool {
    p.verdict == Some(Verdict::Failed) && !p.why.starts_with("predicted Failed via ")
}

pub fn check_dependencies(
    deps: &[SloDependencies],
    results: &mut [SloStatus],
    outages: &[ServiceOutage],
) {
    let slo_outages: Vec<(String, (i64, Option<i64>))> = results
        .iter()
        .filter(|r| r.verdict == Some(Verdict::Failed))
        .filter_map(|r| {
            let (s, e) = outage(r)?;
            Some((r.name.clone(), (s, (e != i64::MAX).then_some(e))))
        })
        .collect();
    for r in results.iter_mut() {
        let Some(d) = deps.iter().find(|d| d.name == r.name) else {
            continue;
        };
        let tol = tolerance(d.interval_ms);
        let mine = slo_outages
            .iter()
            .find(|(n, _)| *n == r.name)
            .map(|(_, w)| *w);
        let matches = |(s, e): (i64, Option<i64>)| {
            mine.is_some_and(|(ms, me)| {
                (s - ms).abs() <= tol
                    && match (e, me) {
                        (None, None) => true,
                        (Some(a), Some(b)) => (a - b).abs() <= tol,
                        _ => false,
                    }
            })
        };
        let own_down = mine.is_some_and(|(ms, me)| {
            outages.iter().any(|o| {
                d.own.as_ref() == Some(&o.service)
                    && o.start <= me.unwrap_or(i64::MAX)
                    && ms <= o.end.unwrap_or(i64::MAX)
            })
        });
        // Only an SLO whose own Service was watched and stayed up can be
        // said to have failed with another's: without its own timeline, a
        // zone that takes many Services down at once would blame them all.
        let mut observed: Vec<&ServiceOutage> = if own_down || d.own.is_none() {
            vec![]
        } else {
            outages
                .iter()
                .filter(|o| d.own.as_ref() != Some(&o.service) && matches((o.start, o.end)))
                .collect()
        };
        // A zone takes many Services down at the same moment, and they come
        // back together when it does: where the plan read a path to one of
        // the matching Services from the workloads' configuration, the
        // others are coincidence, not cause (unless the SLO declares them).
        let declared_service =
            |s: &String| d.declared.iter().any(|(_, svc)| svc.as_ref() == Some(s));
        if observed.iter().any(|o| d.via.contains(&o.service)) {
            observed.retain(|o| d.via.contains(&o.service) || declared_service(&o.service));
        }
        let on_path = |service: &str| {
            d.via
                .iter()
                .position(|v| v == service)
                .map(|i| format!(" (the plan's path: {})", d.via[..=i].join(" -> ")))
                .unwrap_or_default()
        };
        let evidence = |what: &str, (s, e): (i64, Option<i64>)| {
            let slo = mine
                .map(|(ms, me)| format!("; SLO {} failed {}", r.name, span(ms, me)))
                .unwrap_or_else(|| format!("; SLO {} did not fail", r.name));
            format!("{what} {}{slo}", span(s, e))
        };
        let mut findings = vec![];
        for (dep, svc) in &d.declared {
            let svc_outage = svc
                .as_ref()
                .and_then(|s| outages.iter().find(|o| &o.service == s));
            let dep_outage = slo_outages.iter().find(|(n, _)| n == dep).map(|(_, w)| *w);
            let seen = svc_outage.is_some_and(|o| observed.contains(&o))
                || dep_outage.is_some_and(|w| !own_down && matches(w));
            if !seen && mine.is_none() && svc_outage.is_none() && dep_outage.is_none() {
                continue; // neither went down: nothing to check it against
            }
            let name = match svc {
                Some(s) => format!("Service {s} (SLO {dep})"),
                None => format!("SLO {dep}"),
            };
            let proof = svc_outage
                .map(|o| {
                    evidence(
                        &format!("Service {} had no ready endpoint", o.service),
                        (o.start, o.end),
                    )
                })
                .or_else(|| dep_outage.map(|w| evidence(&format!("SLO {dep} failed"), w)));
            findings.push(DependencyFinding {
                name,
                declared: true,
                observed: seen,
                finding: if seen {
                    "declared and observed"
                } else {
                    "declared, not observed"
                }
                .into(),
                evidence: proof,
            });
        }
        for o in &observed {
            if d.declared
                .iter()
                .any(|(_, s)| s.as_ref() == Some(&o.service))
            {
                continue;
            }
            findings.push(DependencyFinding {
                name: format!("Service {}", o.service),
                declared: false,
                observed: true,
                finding: "observed, not declared".into(),
                evidence: Some(format!(
                    "{}{}",
                    evidence(
                        &format!("Service {} had no ready endpoint", o.service),
                        (o.start, o.end),
                    ),
                    on_path(&o.service)
                )),
            });
        }
        findings.truncate(8);
        let causes: Vec<String> = findings
            .iter()
            .filter(|f| f.observed && f.name.starts_with("Service "))
            .map(|f| {
                format!(
                    "{} ({}): {}",
                    f.name,
                    f.finding,
                    f.evidence.as_deref().unwrap_or_default()
                )
            })
            .collect();
        if !causes.is_empty() {
            let note = format!(
                "failed with {}, while its own pods were ready",
                causes.join(" and ")
            );
            r.cause = Some(match r.cause.take() {
                Some(own) => format!("{note}; {own}"),
                None => note,
            });
        }
        r.dependencies = findings;
    }
}

/// `from <time> to <time>` (or `to never`).
fn span(start: i64, end: Option<i64>) -> String {
    let t = |ms: i64| time(ms).map(|t| t.0.to_string()).unwrap_or_default();
    match end {
        Some(e) => format!("from {} to {}", t(start), t(e)),
        None => format!(
            "from {} to never (still down at the end of the dark window)",
            t(start)
        ),
    }
}

/// The overall verdict and its one-line reason: the first failed critical
/// SLO's message and cause (which only ever names what backs that SLO).
pub fn overall(specs: &[SloSpec], results: &[SloStatus]) -> (Verdict, String) {
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
        if let Some(cause) = &first.cause {
            reason.push_str(&format!("; {cause}"));
        }
        if failed.len() > 1 {
            let others: Vec<&str> = failed[1..].iter().map(|r| r.name.as_str()).collect();
            reason.push_str(&format!(" (also failed: {})", others.join(", ")));
        }
        return (Verdict::Failed, reason);
    }
    let inconclusive = |r: &&SloStatus| r.verdict == Some(Verdict::Inconclusive);
    let none_passed = !results.iter().any(|r| r.verdict == Some(Verdict::Passed));
    if let Some(r) = results
        .iter()
        .filter(inconclusive)
        .find(|r| critical(r) || none_passed)
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
    use crate::api::{KubernetesProbe, Probe, ServiceCheck};

    fn slo(name: &str, ns: &str) -> SloSpec {
        SloSpec {
            recovery_point_objective: None,
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
            max_error_percent: 10.0,
            min_coverage_percent: 90.0,
            depends_on: vec![],
        }
    }

    fn m(ok: u64, failed: u64, ttr: Option<i64>) -> Measurement {
        Measurement {
            ok,
            failed,
            ok_ms: ok as i64 * 100,
            fail_ms: failed as i64 * 100,
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
    fn a_pass_the_samples_do_not_cover_is_inconclusive_a_certain_failure_stands() {
        let s = slo("messaging", "chat");
        let rto = Duration::from_secs(30);
        // 100 s window, samples cover 20 s of it, a 70 s gap from 10 s.
        let gapped = |fail_ms: i64, last_fail: Option<i64>, ttr: Option<i64>| Measurement {
            ok: 100,
            failed: (fail_ms / 100) as u64,
            ok_ms: 20_000 - fail_ms,
            fail_ms,
            time_to_recover_ms: ttr,
            last_failure_at: last_fail,
            window_start: 1_000_000,
            window_ms: 100_000,
            largest_gap: Some((1_010_000, 1_080_000)),
            ..Default::default()
        };
        // Nothing failed while watched: a pass nobody can vouch for.
        let r = judge(&s, rto, &gapped(0, None, Some(0)), "zone-a", None);
        assert_eq!(r.verdict, Some(Verdict::Inconclusive));
        let msg = r.message.unwrap();
        assert!(
            msg.starts_with("the probe's samples cover only 20.0% of the window (minCoveragePercent 90%); the longest gap: 70s from "),
            "{msg}"
        );
        // Failed before the objective's time, then the gap: it may have
        // recovered in time; the gap decides, so nobody can tell.
        let r = judge(
            &s,
            rto,
            &gapped(200, Some(1_001_000), Some(85_000)),
            "zone-a",
            None,
        );
        assert_eq!(r.verdict, Some(Verdict::Inconclusive), "{:?}", r.message);
        // Still failing 90 s in: later than the objective, whatever the gap hid.
        let r = judge(&s, rto, &gapped(200, Some(1_090_000), None), "zone-a", None);
        assert_eq!(r.verdict, Some(Verdict::Failed), "{:?}", r.message);
        // Failed time alone breaks the availability objective (99 %).
        let r = judge(
            &s,
            rto,
            &gapped(5_000, Some(1_005_000), Some(6_000)),
            "zone-a",
            None,
        );
        assert_eq!(r.verdict, Some(Verdict::Failed), "{:?}", r.message);
        // Covered enough: judged as always.
        let mut full = gapped(0, None, Some(0));
        full.ok_ms = 95_000;
        assert_eq!(
            judge(&s, rto, &full, "zone-a", None).verdict,
            Some(Verdict::Passed)
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
    fn too_many_errors_are_inconclusive_never_passed() {
        let s = slo("checkout", "shop");
        let noisy = Measurement {
            error_ms: 20_000,
            errors: 20,
            ..m(80, 0, Some(0))
        };
        let r = judge(
            &s,
            Duration::from_secs(30),
            &noisy,
            "zone-a",
            Some("prometheus: connection refused"),
        );
        assert_eq!(r.verdict, Some(Verdict::Inconclusive));
        assert_eq!(
            r.message.as_deref(),
            Some(
                "the probe could not run for 71.4% of the window (maxErrorPercent 10%): prometheus: connection refused"
            )
        );
        assert_eq!(r.error_percent, Some(71.43));
        let quiet = Measurement {
            error_ms: 500,
            errors: 5,
            ..m(80, 0, Some(0))
        };
        assert_eq!(
            judge(&s, Duration::from_secs(30), &quiet, "zone-a", None).verdict,
            Some(Verdict::Passed)
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
    fn overall_gives_the_cause_of_the_failed_slo_and_only_its_own() {
        let specs = vec![slo("authentication", "auth"), slo("messaging", "chat")];
        let mut results = vec![
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
        let observed = Observed {
            what: "Service auth/login".into(),
            total: 2,
            ready: 0,
            unschedulable: 2,
            scheduler_message: Some(
                "0/6 nodes are available: 4 node(s) didn't match Pod's node affinity/selector"
                    .into(),
            ),
        };
        results[0].cause = cause(
            Some(&observed),
            Some(
                "Service auth/login keeps 0 ready pods outside zone-a (needs 1); 2 replacements cannot be scheduled, pinned to zone-a by nodeSelector topology.kubernetes.io/zone=zone-a: auth/login-1, auth/login-2",
            ),
        );
        let (v, reason) = overall(&specs, &results);
        assert_eq!(v, Verdict::Failed);
        assert_eq!(
            reason,
            "authentication: never recovered while zone-a was dark (down 4s); Service auth/login had 0 of 2 pods ready at the end of the dark window; 2 replacement pods Pending, unschedulable: 0/6 nodes are available: 4 node(s) didn't match Pod's node affinity/selector; the plan predicted it: Service auth/login keeps 0 ready pods outside zone-a (needs 1); 2 replacements cannot be scheduled, pinned to zone-a by nodeSelector topology.kubernetes.io/zone=zone-a: auth/login-1, auth/login-2"
        );
        // A failure with no known cause blames nobody.
        results[0].cause = None;
        let (_, reason) = overall(&specs, &results);
        assert_eq!(
            reason,
            "authentication: never recovered while zone-a was dark (down 4s)"
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
        assert_eq!(overall(&specs, &results).0, Verdict::Passed);
    }

    #[test]
    fn nothing_judged_is_inconclusive_even_when_no_slo_is_critical() {
        let mut specs = vec![slo("search", "search"), slo("recommendations", "reco")];
        let unprobed =
            |s: &SloSpec| judge(s, Duration::from_secs(30), &m(0, 0, None), "zone-a", None);
        let passed = |s: &SloSpec| {
            judge(
                s,
                Duration::from_secs(30),
                &m(100, 0, Some(0)),
                "zone-a",
                None,
            )
        };
        let failed =
            |s: &SloSpec| judge(s, Duration::from_secs(30), &m(10, 50, None), "zone-a", None);
        for s in &mut specs {
            s.critical = false;
        }
        // Every SLO non-critical and none could be judged: nothing was shown.
        let (v, reason) = overall(&specs, &[unprobed(&specs[0]), unprobed(&specs[1])]);
        assert_eq!(v, Verdict::Inconclusive, "{reason}");
        assert!(
            reason.starts_with("search: the probe could not run"),
            "{reason}"
        );
        // Nor when the only other one failed (a non-critical failure fails nothing).
        let (v, _) = overall(&specs, &[failed(&specs[0]), unprobed(&specs[1])]);
        assert_eq!(v, Verdict::Inconclusive);
        // One that passed is something shown: a non-critical Inconclusive
        // beside it changes nothing.
        let (v, _) = overall(&specs, &[passed(&specs[0]), unprobed(&specs[1])]);
        assert_eq!(v, Verdict::Passed);
        // Critical ones that could not be judged were Inconclusive already.
        specs[0].critical = true;
        let (v, _) = overall(&specs, &[unprobed(&specs[0]), unprobed(&specs[1])]);
        assert_eq!(v, Verdict::Inconclusive);
    }

    #[test]
    fn a_cascade_is_attributed_to_the_dependency_that_was_down() {
        let t = |ms: i64| {
            Some(Time(
                k8s_openapi::jiff::Timestamp::from_millisecond(ms).unwrap(),
            ))
        };
        let mut specs = vec![
            slo("authentication", "auth"),
            slo("messaging", "messaging"),
            slo("search", "search"),
        ];
        specs[1].depends_on = vec!["authentication".into()];
        let failed = |name: &str, from: i64, to: Option<i64>| SloStatus {
            name: name.into(),
            verdict: Some(Verdict::Failed),
            first_failure_at: t(from),
            recovered_at: to.and_then(t),
            ..Default::default()
        };
        let mut results = vec![
            // The same probe tick: both failures start together.
            failed("authentication", 1_000, None),
            failed("messaging", 1_000, None),
            // Failed earlier and recovered before messaging failed: no overlap.
            failed("search", 100, Some(900)),
        ];
        let predictions = vec![crate::api::SloPredictionStatus {
            name: "authentication".into(),
            verdict: Some(Verdict::Failed),
            why: String::new(),
            target: Some("Service auth/login".into()),
            rule: Some(
                "pinned to zone-a by nodeSelector topology.kubernetes.io/zone=zone-a".into(),
            ),
            via: vec![],
        }];
        let namespaces = [
            ("authentication".to_string(), "auth".to_string()),
            ("messaging".to_string(), "messaging".to_string()),
            ("search".to_string(), "search".to_string()),
        ]
        .into();
        attribute(&specs, &mut results, &predictions, &namespaces);
        assert_eq!(
            results[1].cause.as_deref(),
            Some(
                "the journey failed while authentication (Service auth/login, pinned to zone-a by nodeSelector topology.kubernetes.io/zone=zone-a) was down"
            )
        );
        assert_eq!(
            results[0].cause, None,
            "the root cause blames nobody else, not even what started failing with it"
        );
        assert_eq!(results[2].cause, None, "no overlap, no blame");

        // Undeclared: a failure in another namespace that began first and overlaps.
        specs[1].depends_on.clear();
        results[1].cause = None;
        attribute(&specs, &mut results, &predictions, &namespaces);
        assert!(
            results[1].cause.as_deref().unwrap().starts_with(
                "its outage overlaps, and began no earlier than, the outage of authentication"
            ),
            "{:?}",
            results[1].cause
        );
    }

    // -----------------------------------------------------------------------
    // Observed dependencies: a Service's outage that matches an SLO's.
    // -----------------------------------------------------------------------

    fn at(ms: i64) -> Option<Time> {
        time(ms)
    }

    fn down(name: &str, from: i64, to: Option<i64>) -> SloStatus {
        SloStatus {
            name: name.into(),
            verdict: Some(Verdict::Failed),
            first_failure_at: at(from),
            recovered_at: to.and_then(at),
            ..Default::default()
        }
    }

    fn up(name: &str) -> SloStatus {
        SloStatus {
            name: name.into(),
            verdict: Some(Verdict::Passed),
            ..Default::default()
        }
    }

    fn svc(service: &str, start: i64, end: Option<i64>) -> ServiceOutage {
        ServiceOutage {
            service: service.into(),
            start,
            end,
        }
    }

    fn deps(name: &str, own: &str, declared: &[(&str, &str)]) -> SloDependencies {
        SloDependencies {
            name: name.into(),
            interval_ms: 1_000,
            own: Some(own.into()),
            declared: declared
                .iter()
                .map(|(d, s)| (d.to_string(), Some(s.to_string())))
                .collect(),
            via: vec![],
        }
    }

    #[test]
    fn services_that_go_and_come_back_together_are_told_apart_by_the_plans_path() {
        // Three singletons die with the zone and come back with it; each
        // caller is blamed on the one its configuration leads to, a caller
        // with no path on all that match, as before.
        let outages = vec![
            svc("shop/tokens", 10_000, Some(40_000)),
            svc("shop/ledger", 10_050, Some(40_100)),
            svc("shop/index", 10_100, Some(40_050)),
        ];
        let mut results = vec![
            down("gateway", 10_400, Some(40_500)),
            down("storefront", 10_300, Some(40_600)),
            down("mystery", 10_200, Some(40_400)),
        ];
        let mut gateway = deps("gateway", "shop/gateway", &[]);
        gateway.via = vec!["shop/tokens".into()];
        let mut storefront = deps("storefront", "shop/storefront", &[]);
        storefront.via = vec!["shop/orders".into(), "shop/ledger".into()];
        let mystery = deps("mystery", "shop/mystery", &[]);
        check_dependencies(&[gateway, storefront, mystery], &mut results, &outages);
        let blamed = |i: usize| -> Vec<&str> {
            results[i]
                .dependencies
                .iter()
                .map(|d| d.name.as_str())
                .collect()
        };
        assert_eq!(blamed(0), ["Service shop/tokens"]);
        assert_eq!(blamed(1), ["Service shop/ledger"]);
        let evidence = results[1].dependencies[0].evidence.as_deref().unwrap();
        assert!(
            evidence.ends_with(" (the plan's path: shop/orders -> shop/ledger)"),
            "{evidence}"
        );
        assert_eq!(
            blamed(2),
            [
                "Service shop/tokens",
                "Service shop/ledger",
                "Service shop/index"
            ]
        );
        // A declared dependency whose outage matched is observed, on the
        // plan's path or not.
        let mut results = vec![down("gateway", 10_400, Some(40_500))];
        let mut declared = deps("gateway", "shop/gateway", &[("ledger", "shop/ledger")]);
        declared.via = vec!["shop/tokens".into()];
        check_dependencies(&[declared], &mut results, &outages);
        let found: Vec<(&str, &str)> = results[0]
            .dependencies
            .iter()
            .map(|d| (d.name.as_str(), d.finding.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                ("Service shop/ledger (SLO ledger)", "declared and observed"),
                ("Service shop/tokens", "observed, not declared")
            ]
        );
        // A path whose Services did not go down does not hide the ones that did.
        let mut results = vec![down("gateway", 10_400, Some(40_500))];
        let mut other = deps("gateway", "shop/gateway", &[]);
        other.via = vec!["shop/elsewhere".into()];
        check_dependencies(&[other], &mut results, &outages[..1]);
        assert_eq!(results[0].dependencies.len(), 1);
    }

    #[test]
    fn a_failure_is_attributed_to_the_service_whose_outage_matches_it() {
        let mut results = vec![down("gateway", 10_400, None)];
        let outages = vec![
            svc("fleet/tokens", 10_000, None),
            // Went down with it, but came back: no match.
            svc("fleet/cache", 10_100, Some(30_000)),
        ];
        check_dependencies(
            &[deps("gateway", "fleet/gateway", &[])],
            &mut results,
            &outages,
        );
        let d = &results[0].dependencies;
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(
            (
                d[0].name.as_str(),
                d[0].finding.as_str(),
                d[0].declared,
                d[0].observed
            ),
            (
                "Service fleet/tokens",
                "observed, not declared",
                false,
                true
            )
        );
        let evidence = d[0].evidence.as_deref().unwrap();
        assert!(
            evidence.starts_with(
                "Service fleet/tokens had no ready endpoint from 1970-01-01T00:00:10Z to never"
            ) && evidence.contains("; SLO gateway failed from 1970-01-01T00:00:10.4Z to never"),
            "{evidence}"
        );
        assert!(
            results[0]
                .cause
                .as_deref()
                .unwrap()
                .starts_with("failed with Service fleet/tokens (observed, not declared): Service fleet/tokens had no ready endpoint"),
            "{:?}",
            results[0].cause
        );
    }

    #[test]
    fn without_its_own_services_timeline_an_slo_is_blamed_on_no_other() {
        let mut results = vec![down("gateway", 10_400, None)];
        let outages = vec![svc("fleet/tokens", 10_000, None)];
        let mut d = deps("gateway", "fleet/gateway", &[]);
        d.own = None;
        check_dependencies(&[d], &mut results, &outages);
        assert!(
            results[0].dependencies.is_empty(),
            "{:?}",
            results[0].dependencies
        );
        assert_eq!(results[0].cause, None);
    }

    #[test]
    fn an_slo_predicted_to_fail_on_its_own_is_told_from_a_cascade() {
        let p = |verdict: Option<Verdict>, why: &str| crate::api::SloPredictionStatus {
            name: "frontend".into(),
            verdict,
            why: why.into(),
            ..Default::default()
        };
        assert!(fails_on_its_own(&p(
            Some(Verdict::Failed),
            "Service shop/web keeps 4 ready pods outside zone-a (needs 6)"
        )));
        assert!(!fails_on_its_own(&p(
            Some(Verdict::Failed),
            "predicted Failed via tokens.fleet.svc (env TOKENS_URL of Deployment fleet/gateway): Service fleet/tokens keeps 0 ready pods outside zone-a"
        )));
        assert!(!fails_on_its_own(&p(Some(Verdict::Passed), "6 ready pods")));
        assert!(!fails_on_its_own(&p(None, "cannot tell")));
    }

    #[test]
    fn a_recovery_must_match_too() {
        let mut results = vec![down("gateway", 10_400, Some(40_300))];
        let outages = vec![
            svc("fleet/tokens", 10_000, Some(40_000)),
            svc("fleet/late", 10_000, Some(45_000)),
        ];
        check_dependencies(
            &[deps("gateway", "fleet/gateway", &[])],
            &mut results,
            &outages,
        );
        let names: Vec<&str> = results[0]
            .dependencies
            .iter()
            .map(|d| d.name.as_str())
            .collect();
        assert_eq!(names, ["Service fleet/tokens"]);
    }

    #[test]
    fn two_unrelated_failures_that_merely_overlap_are_not_attributed() {
        // The Service went down 4s before the SLO failed, and came back 5s
        // before it recovered: they overlap by far more than an interval.
        let mut results = vec![down("gateway", 14_000, Some(35_000))];
        let outages = vec![svc("fleet/tokens", 10_000, Some(30_000))];
        check_dependencies(
            &[deps("gateway", "fleet/gateway", &[])],
            &mut results,
            &outages,
        );
        assert!(results[0].dependencies.is_empty());
        assert_eq!(results[0].cause, None);
    }

    #[test]
    fn an_slo_whose_own_service_went_down_is_not_blamed_on_another() {
        let mut results = vec![down("gateway", 10_400, None)];
        let outages = vec![
            svc("fleet/gateway", 10_000, None),
            svc("fleet/tokens", 10_000, None),
        ];
        check_dependencies(
            &[deps("gateway", "fleet/gateway", &[])],
            &mut results,
            &outages,
        );
        assert!(results[0].dependencies.is_empty());
        assert_eq!(results[0].cause, None);
    }

    #[test]
    fn a_service_that_keeps_serving_or_an_slo_that_stays_healthy_is_never_blamed() {
        let mut results = vec![up("gateway"), down("search", 10_400, None)];
        let outages = vec![svc("fleet/tokens", 10_000, None)];
        check_dependencies(
            &[
                deps("gateway", "fleet/gateway", &[]),
                deps("search", "shop/search", &[]),
            ],
            &mut results,
            &outages,
        );
        assert!(
            results[0].dependencies.is_empty(),
            "a healthy SLO has no observed cause"
        );
        // search's failure matches tokens' outage: that is all the verdict
        // can say, and it says it.
        assert_eq!(results[1].dependencies.len(), 1);
        let mut results = vec![down("search", 10_400, None)];
        check_dependencies(&[deps("search", "shop/search", &[])], &mut results, &[]);
        assert!(results[0].dependencies.is_empty());
    }

    #[test]
    fn depends_on_is_checked_declared_and_observed_or_not() {
        let mut results = vec![
            down("authentication", 10_300, None),
            down("messaging", 10_500, None),
            up("payments"),
            up("search"),
        ];
        let outages = vec![svc("auth/login", 10_000, None)];
        let d = [
            deps("authentication", "auth/login", &[]),
            deps(
                "messaging",
                "messaging/chat",
                &[("authentication", "auth/login")],
            ),
            deps(
                "payments",
                "payments/checkout",
                &[("authentication", "auth/login")],
            ),
            deps("search", "shop/search", &[("catalog", "shop/catalog")]),
        ];
        check_dependencies(&d, &mut results, &outages);
        let finding = |i: usize| -> Vec<(String, String)> {
            results[i]
                .dependencies
                .iter()
                .map(|f| (f.name.clone(), f.finding.clone()))
                .collect()
        };
        assert!(
            finding(0).is_empty(),
            "login's own SLO fails with its own Service"
        );
        assert_eq!(
            finding(1),
            [(
                "Service auth/login (SLO authentication)".to_string(),
                "declared and observed".to_string()
            )]
        );
        assert_eq!(
            finding(2),
            [(
                "Service auth/login (SLO authentication)".to_string(),
                "declared, not observed".to_string()
            )]
        );
        assert!(
            finding(3).is_empty(),
            "neither side went down: nothing to check"
        );
        assert!(
            results[1].cause.as_deref().unwrap().starts_with(
                "failed with Service auth/login (SLO authentication) (declared and observed)"
            ),
            "{:?}",
            results[1].cause
        );
    }

    fn judged(verdict: Verdict, failures: i64) -> SloStatus {
        SloStatus {
            name: "payments".into(),
            verdict: Some(verdict),
            failures,
            message: Some("recovered in 4s (objective 30s)".into()),
            ..Default::default()
        }
    }

    /// 20 writes lost, made from 10:00:09 to 10:00:10.9, 2 s after the last kept.
    fn two_seconds_lost() -> canary::Loss {
        let at = |s: &str| {
            s.parse::<k8s_openapi::jiff::Timestamp>()
                .unwrap()
                .as_millisecond()
        };
        canary::Loss {
            acknowledged: 180,
            lost: 20,
            unverified: 0,
            first: Some(canary::LostWrite {
                id: "fd-1-80".into(),
                at_ms: at("2026-12-01T10:00:09Z"),
            }),
            last: Some(canary::LostWrite {
                id: "fd-1-99".into(),
                at_ms: at("2026-12-01T10:00:10.9Z"),
            }),
            recovery_point_ms: Some(2_000),
            last_error: None,
        }
    }

    #[test]
    fn lost_writes_past_the_objective_fail_a_service_that_recovered_in_time() {
        for objective in [Duration::ZERO, Duration::from_secs(1)] {
            let mut r = judged(Verdict::Passed, 12);
            judge_writes(&mut r, Some(objective), &two_seconds_lost());
            assert_eq!(r.verdict, Some(Verdict::Failed));
            assert_eq!(
                r.message.as_deref(),
                Some(
                    format!("20 acknowledged writes lost (fd-1-80 to fd-1-99, written 2026-12-01T10:00:09Z to 2026-12-01T10:00:10.9Z), recovery point 2s, objective {}s", objective.as_secs())
                        .as_str()
                )
            );
            let w = r.writes.unwrap();
            assert_eq!(
                (w.acknowledged, w.lost, w.refused_while_dark),
                (180, 20, 12)
            );
            assert_eq!(w.recovery_point_seconds, Some(2.0));
        }
        // A failure on time to recover keeps its message and gains the loss.
        let mut r = judged(Verdict::Failed, 3);
        r.message = Some("recovered in 40s, objective 30s".into());
        judge_writes(&mut r, Some(Duration::ZERO), &two_seconds_lost());
        assert!(
            r.message
                .unwrap()
                .starts_with("recovered in 40s, objective 30s; 20 acknowledged writes lost"),
        );
    }

    #[test]
    fn a_loss_within_the_objective_passes_and_says_so() {
        let mut r = judged(Verdict::Passed, 0);
        judge_writes(&mut r, Some(Duration::from_secs(5)), &two_seconds_lost());
        assert_eq!(r.verdict, Some(Verdict::Passed));
        assert!(
            r.message
                .unwrap()
                .ends_with("recovery point 2s (objective 5s)")
        );
        let mut r = judged(Verdict::Passed, 0);
        let none = canary::Loss {
            acknowledged: 180,
            ..Default::default()
        };
        judge_writes(&mut r, Some(Duration::ZERO), &none);
        assert_eq!(r.verdict, Some(Verdict::Passed));
        assert_eq!(
            r.message.as_deref(),
            Some(
                "recovered in 4s (objective 30s); all 180 acknowledged writes read back (recovery point objective 0s)"
            )
        );
        assert_eq!(r.writes.unwrap().lost, 0);
    }

    #[test]
    fn writes_that_could_not_be_read_back_are_never_a_pass_nor_a_loss() {
        let unread = canary::Loss {
            acknowledged: 180,
            unverified: 7,
            last_error: Some("read answered HTTP 503".into()),
            ..Default::default()
        };
        let mut r = judged(Verdict::Passed, 0);
        judge_writes(&mut r, Some(Duration::ZERO), &unread);
        assert_eq!(r.verdict, Some(Verdict::Inconclusive));
        assert!(
            r.message.as_deref().unwrap().ends_with(
                "7 of 180 acknowledged writes could not be read back: read answered HTTP 503"
            ),
            "{:?}",
            r.message
        );
        assert_eq!(r.writes.as_ref().unwrap().lost, 0);
        // A failure stays a failure.
        let mut r = judged(Verdict::Failed, 0);
        judge_writes(&mut r, Some(Duration::ZERO), &unread);
        assert_eq!(r.verdict, Some(Verdict::Failed));
        // A loss proven beside unread writes is still a loss past the objective.
        let mut both = two_seconds_lost();
        both.unverified = 3;
        let mut r = judged(Verdict::Passed, 0);
        judge_writes(&mut r, Some(Duration::ZERO), &both);
        assert_eq!(r.verdict, Some(Verdict::Failed));
        // Nothing acknowledged: nothing to measure a recovery point on.
        let mut r = judged(Verdict::Passed, 0);
        judge_writes(&mut r, Some(Duration::ZERO), &canary::Loss::default());
        assert_eq!(r.verdict, Some(Verdict::Inconclusive));
    }

    #[test]
    fn without_an_objective_the_loss_is_reported_not_judged() {
        let mut r = judged(Verdict::Passed, 0);
        judge_writes(&mut r, None, &two_seconds_lost());
        assert_eq!(r.verdict, Some(Verdict::Passed));
        assert!(r.message.unwrap().contains("20 acknowledged writes lost"));
    }
}
