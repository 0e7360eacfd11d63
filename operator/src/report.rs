//! Reports of a finished (or running) experiment: a terminal table, JSON
//! (schema `firedrill.dev/report/v1`, documented in docs/report.md), JUnit XML
//! (one testcase per SLO) and one self-contained HTML page with an SVG
//! timeline. Pure: built from the experiment and its probe recording.

use crate::api::{DataCenterFailure, Phase, Verdict, parse_duration};
use crate::probe::Recording;
use crate::slo::Outcome;
use serde_json::{Value, json};
use std::fmt::Write;

/// Everything a report shows.
pub struct Input<'a> {
    pub experiment: &'a DataCenterFailure,
    pub recording: &'a Recording,
}

fn ms(t: &k8s_openapi::jiff::Timestamp) -> i64 {
    t.as_millisecond()
}

impl Input<'_> {
    fn phase_ms(&self, phase: Phase) -> Option<i64> {
        let st = self.experiment.status.as_ref()?;
        st.transitions
            .iter()
            .rev()
            .find(|t| t.phase == phase)
            .map(|t| ms(&t.time.0))
    }
    fn injected_ms(&self) -> Option<i64> {
        self.experiment
            .status
            .as_ref()?
            .fault
            .as_ref()?
            .injected_at
            .as_ref()
            .map(|t| ms(&t.0))
    }
    fn verdict(&self) -> Option<Verdict> {
        self.experiment.status.as_ref()?.verdict
    }
    /// Where the recording ends: when the experiment ended, or now.
    fn end_ms(&self) -> i64 {
        [Phase::Completed, Phase::Aborted, Phase::Failed]
            .into_iter()
            .filter_map(|p| self.phase_ms(p))
            .max()
            .unwrap_or_else(crate::probe::now_ms)
    }
    fn phase(&self) -> String {
        self.experiment
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .map(|p| p.to_string())
            .unwrap_or_else(|| "Pending".into())
    }
    fn reason(&self) -> String {
        self.experiment
            .status
            .as_ref()
            .and_then(|s| s.reason.clone())
            .unwrap_or_default()
    }
}

/// Whether the plan predicted this outcome: `yes`, `no`, or `unknown` when
/// it could not tell (`-` before the verdict).
pub fn predicted(r: &crate::api::SloStatus) -> &'static str {
    match (r.verdict, r.predicted) {
        (None, _) => "-",
        (Some(_), None) => "unknown",
        (Some(v), Some(p)) if v == p => "yes",
        (Some(_), Some(_)) => "no",
    }
}

/// The measured status of one SLO (empty before it is judged).
fn slo_status(st: &crate::api::DataCenterFailureStatus, name: &str) -> crate::api::SloStatus {
    st.slos
        .iter()
        .find(|s| s.name == name)
        .cloned()
        .unwrap_or_default()
}

fn secs(d: &str) -> Option<f64> {
    parse_duration(d).ok().map(|d| d.as_secs_f64())
}

fn iso(ms: Option<i64>) -> Value {
    ms.and_then(|m| k8s_openapi::jiff::Timestamp::from_millisecond(m).ok())
        .map(|t| json!(t.to_string()))
        .unwrap_or(Value::Null)
}

/// The JSON report (`firedrill.dev/report/v1`).
pub fn json(input: &Input) -> Value {
    let exp = input.experiment;
    let st = exp.status.clone().unwrap_or_default();
    let slos: Vec<Value> = exp
        .spec
        .slos
        .iter()
        .map(|spec| {
            let r = slo_status(&st, &spec.name);
            json!({
                "name": spec.name,
                "critical": spec.critical,
                "verdict": r.verdict,
                "timeToRecoverSeconds": r.time_to_recover_seconds,
                "recoveryTimeObjectiveSeconds": secs(&spec.recovery_time_objective),
                "availabilityPercent": r.availability_percent,
                "availabilityObjectivePercent": spec.availability_objective,
                "longestOutageSeconds": r.longest_outage_seconds,
                "samples": r.samples,
                "failures": r.failures,
                "firstFailureAt": r.first_failure_at,
                "recoveredAt": r.recovered_at,
                "message": r.message,
                "cause": r.cause,
                "errors": r.errors,
                "errorPercent": r.error_percent,
                "predictedVerdict": r.predicted,
                "predicted": predicted(&r),
            })
        })
        .collect();
    let timeline: serde_json::Map<String, Value> = input
        .recording
        .slos
        .iter()
        .map(|(name, tl)| {
            let segments: Vec<Value> = tl
                .segments_until(input.end_ms())
                .iter()
                .map(|g| {
                    json!({
                        "outcome": g.outcome,
                        "from": g.start,
                        "to": g.end,
                        "samples": {"ok": g.counts[0], "failed": g.counts[1], "error": g.counts[2]},
                        "milliseconds": {"ok": g.ms[0], "failed": g.ms[1], "error": g.ms[2]},
                    })
                })
                .collect();
            (name.clone(), Value::Array(segments))
        })
        .collect();
    json!({
        "schema": "firedrill.dev/report/v1",
        "experiment": exp.metadata.name,
        "zone": exp.spec.zone,
        "topologyKey": exp.spec.topology_key,
        "duration": exp.spec.duration,
        "phase": input.phase(),
        "verdict": input.verdict(),
        "reason": input.reason(),
        "times": {
            "created": exp.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()),
            "baselineStarted": iso(input.phase_ms(Phase::Baseline)),
            "injected": iso(input.injected_ms()),
            "restoreStarted": iso(input.phase_ms(Phase::Restoring)),
            "finished": iso([Phase::Completed, Phase::Aborted, Phase::Failed].iter().find_map(|p| input.phase_ms(*p))),
        },
        "plan": st.plan,
        "fault": st.fault,
        "slos": slos,
        "timeline": timeline,
    })
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 forbids even escaped.
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => {}
            '\u{fffe}' | '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML: one testsuite per experiment, one testcase per SLO. A failed
/// SLO is a `<failure>` whose message gives the measured value against the
/// objective; an inconclusive one is an `<error>`.
pub fn junit(input: &Input) -> String {
    let exp = input.experiment;
    let st = exp.status.clone().unwrap_or_default();
    let name = exp.metadata.name.clone().unwrap_or_default();
    let mut cases = String::new();
    let (mut failures, mut errors) = (0, 0);
    let mut total_time = 0.0;
    for spec in &exp.spec.slos {
        let r = slo_status(&st, &spec.name);
        let time = r.time_to_recover_seconds.unwrap_or(0.0);
        total_time += time;
        let _ = writeln!(
            cases,
            "    <testcase classname=\"firedrill.{}.{}\" name=\"{}\" time=\"{time:.3}\">",
            xml_escape(&name),
            xml_escape(&exp.spec.zone),
            xml_escape(&spec.name)
        );
        let msg = r.message.clone().unwrap_or_default();
        let measured = format!(
            "time to recover: {} (objective {}); availability: {} (objective {}); longest outage: {}s; samples: {}, failed: {}",
            r.time_to_recover_seconds
                .map(|t| format!("{t}s"))
                .unwrap_or_else(|| "never recovered".into()),
            spec.recovery_time_objective,
            r.availability_percent
                .map(|a| format!("{a:.2}%"))
                .unwrap_or_else(|| "n/a".into()),
            spec.availability_objective
                .map(|a| format!("{a}%"))
                .unwrap_or_else(|| "none".into()),
            r.longest_outage_seconds.unwrap_or(0.0),
            r.samples,
            r.failures
        );
        let measured = match &r.cause {
            Some(c) => format!(
                "{measured}; predicted by the plan: {}; cause: {c}",
                predicted(&r)
            ),
            None => format!("{measured}; predicted by the plan: {}", predicted(&r)),
        };
        match r.verdict {
            Some(Verdict::Passed) => {}
            Some(Verdict::Failed) => {
                failures += 1;
                let _ = writeln!(
                    cases,
                    "      <failure type=\"SLOFailed\" message=\"{}: {}\">{}</failure>",
                    xml_escape(&spec.name),
                    xml_escape(&msg),
                    xml_escape(&measured)
                );
            }
            _ => {
                errors += 1;
                let why = if msg.is_empty() {
                    format!(
                        "no verdict: the experiment ended {}: {}",
                        input.phase(),
                        input.reason()
                    )
                } else {
                    msg
                };
                let _ = writeln!(
                    cases,
                    "      <error type=\"Inconclusive\" message=\"{}\">{}</error>",
                    xml_escape(&why),
                    xml_escape(&measured)
                );
            }
        }
        let _ = writeln!(
            cases,
            "      <system-out>{}</system-out>",
            xml_escape(&measured)
        );
        cases.push_str("    </testcase>\n");
    }
    let tests = exp.spec.slos.len();
    let timestamp = exp
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_default();
    let timestamp = timestamp.trim_end_matches('Z');
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"firedrill\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{total_time:.3}\">\n  <testsuite name=\"firedrill.{n}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"0\" time=\"{total_time:.3}\" timestamp=\"{timestamp}\">\n    <properties>\n      <property name=\"zone\" value=\"{z}\"/>\n      <property name=\"phase\" value=\"{p}\"/>\n      <property name=\"verdict\" value=\"{v}\"/>\n      <property name=\"reason\" value=\"{r}\"/>\n    </properties>\n{cases}  </testsuite>\n</testsuites>\n",
        n = xml_escape(&name),
        z = xml_escape(&exp.spec.zone),
        p = xml_escape(&input.phase()),
        v = input.verdict().map(|v| v.to_string()).unwrap_or_default(),
        r = xml_escape(&input.reason()),
    )
}

/// A plain-text verdict table for terminals and CI logs.
pub fn table(input: &Input) -> String {
    let exp = input.experiment;
    let st = exp.status.clone().unwrap_or_default();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}  zone {}  phase {}  verdict {}",
        exp.metadata.name.clone().unwrap_or_default(),
        exp.spec.zone,
        input.phase(),
        input
            .verdict()
            .map(|v| v.to_string())
            .unwrap_or_else(|| "-".into())
    );
    let _ = writeln!(s, "{}", input.reason());
    if !exp.spec.slos.is_empty() {
        let _ = writeln!(
            s,
            "\n{:<18} {:<13} {:>16} {:>18} {:>9} {:<10} DETAIL",
            "SLO", "VERDICT", "RECOVERED IN", "AVAILABILITY", "SAMPLES", "PREDICTED"
        );
        for spec in &exp.spec.slos {
            let r = slo_status(&st, &spec.name);
            let ttr = match r.time_to_recover_seconds {
                Some(t) => format!("{t}s/{}", spec.recovery_time_objective),
                None if r.verdict.is_some() => "never".into(),
                None => "-".into(),
            };
            let avail = match (r.availability_percent, spec.availability_objective) {
                (Some(a), Some(o)) => format!("{a:.2}%/{o}%"),
                (Some(a), None) => format!("{a:.2}%"),
                _ => "-".into(),
            };
            let verdict = r
                .verdict
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into());
            let crit = if spec.critical { "" } else { " (non-critical)" };
            let _ = writeln!(
                s,
                "{:<18} {:<13} {:>16} {:>18} {:>9} {:<10} {}{crit}",
                spec.name,
                verdict,
                ttr,
                avail,
                r.samples,
                predicted(&r),
                r.message.clone().unwrap_or_default()
            );
            if let Some(cause) = &r.cause {
                let _ = writeln!(s, "{:<18} cause: {cause}", "");
            }
        }
    }
    if let Some(plan) = &st.plan {
        for w in &plan.warnings {
            let _ = writeln!(s, "warning: {w}");
        }
    }
    if let Some(plan) = &st.plan {
        if plan.pinned_pods > 0 {
            let _ = writeln!(
                s,
                "\npinned to {} ({}): {}",
                exp.spec.zone,
                plan.pinned_pods,
                plan.pinned_pod_names.join(", ")
            );
        }
        if plan.workloads_losing_all_replicas > 0 {
            let _ = writeln!(
                s,
                "lose every replica ({}): {}",
                plan.workloads_losing_all_replicas,
                plan.workloads_losing_all_replicas_names.join(", ")
            );
        }
    }
    s
}

fn color(v: Option<Verdict>) -> &'static str {
    match v {
        Some(Verdict::Passed) => "#1a7f37",
        Some(Verdict::Failed) => "#cf222e",
        _ => "#6e7781",
    }
}

/// One self-contained HTML page: the verdict first, then the SVG timeline
/// (one lane per SLO, the dark window shaded, each RTO marked), the SLO table
/// and the plan's findings.
pub fn html(input: &Input) -> String {
    let exp = input.experiment;
    let st = exp.status.clone().unwrap_or_default();
    let name = xml_escape(&exp.metadata.name.clone().unwrap_or_default());
    let verdict = input.verdict();
    let verdict_text = verdict
        .map(|v| v.to_string())
        .unwrap_or_else(|| input.phase());

    // Time axis: from the first sample (or baseline) to the last sample (or finish).
    let end = input.end_ms();
    let segments: Vec<(String, Vec<crate::slo::Segment>)> = input
        .recording
        .slos
        .iter()
        .map(|(n, t)| (n.clone(), t.segments_until(end)))
        .collect();
    let first = segments
        .iter()
        .flat_map(|(_, s)| s.first())
        .map(|g| g.start)
        .min();
    let last = segments
        .iter()
        .flat_map(|(_, s)| s.last())
        .map(|g| g.end)
        .max();
    let injected = input.injected_ms();
    let restore = input.phase_ms(Phase::Restoring);
    let t0 = [first, input.phase_ms(Phase::Baseline), injected]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(0);
    // The axis also reaches every recovery-time objective, so each one is visible.
    let objectives = exp
        .spec
        .slos
        .iter()
        .filter_map(|s| Some(injected? + (secs(&s.recovery_time_objective)? * 1000.0) as i64));
    let t1 = [last, restore, input.phase_ms(Phase::Completed)]
        .into_iter()
        .flatten()
        .chain(objectives)
        .max()
        .unwrap_or(t0 + 1)
        .max(t0 + 1);
    let (left, width, lane_h, gap) = (170.0, 760.0, 26.0, 14.0);
    let x = |t: i64| left + (t - t0) as f64 / (t1 - t0) as f64 * width;
    let lanes = exp.spec.slos.len().max(1) as f64;
    let height = 40.0 + lanes * (lane_h + gap) + 30.0;

    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg id=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 960 {height}\" width=\"960\" height=\"{height}\" role=\"img\" aria-label=\"SLO timeline\">"
    );
    if let (Some(a), Some(b)) = (injected, restore.or(Some(t1))) {
        let _ = write!(
            svg,
            "<rect class=\"dark-window\" x=\"{:.1}\" y=\"20\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#24292f\" fill-opacity=\"0.12\"/>",
            x(a),
            (x(b) - x(a)).max(1.0),
            height - 50.0
        );
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"14\" font-size=\"12\" fill=\"#24292f\">{} dark</text>",
            x(a) + 4.0,
            xml_escape(&exp.spec.zone)
        );
    }
    for (i, spec) in exp.spec.slos.iter().enumerate() {
        let y = 30.0 + i as f64 * (lane_h + gap);
        let r = slo_status(&st, &spec.name);
        let _ = write!(
            svg,
            "<g class=\"lane\" data-slo=\"{n}\"><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"13\" text-anchor=\"end\" fill=\"{}\">{n}</text>",
            left - 8.0,
            y + lane_h * 0.68,
            color(r.verdict),
            n = xml_escape(&spec.name)
        );
        let _ = write!(
            svg,
            "<rect x=\"{left}\" y=\"{y:.1}\" width=\"{width}\" height=\"{lane_h}\" fill=\"#f6f8fa\" stroke=\"#d0d7de\"/>"
        );
        if let Some((_, segs)) = segments.iter().find(|(n, _)| *n == spec.name) {
            for g in segs {
                // A plain run has its outcome's colour; a stretch merged to
                // keep the recording small is shaded by its share of failures.
                let (class, fill, opacity) = match g.outcome {
                    Some(Outcome::Ok) => ("Ok", "#2da44e", 1.0),
                    Some(Outcome::Fail) => ("Fail", "#cf222e", 1.0),
                    Some(Outcome::Error) => ("Error", "#8c959f", 1.0),
                    None => {
                        let answered = (g.ms[0] + g.ms[1]).max(1) as f64;
                        ("Mixed", "#cf222e", 0.25 + 0.75 * g.ms[1] as f64 / answered)
                    }
                };
                let (a, b) = (x(g.start.max(t0)), x(g.end.min(t1)));
                let _ = write!(
                    svg,
                    "<rect class=\"run {class}\" x=\"{a:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{lane_h}\" fill=\"{fill}\" fill-opacity=\"{opacity:.2}\"><title>{class}: {} ok, {} failed, {} could not run</title></rect>",
                    (b - a).max(0.8),
                    g.counts[0],
                    g.counts[1],
                    g.counts[2]
                );
            }
        }
        if let (Some(inj), Some(rto)) = (injected, secs(&spec.recovery_time_objective)) {
            let at = inj + (rto * 1000.0) as i64;
            if at <= t1 {
                let _ = write!(
                    svg,
                    "<line class=\"rto\" x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1:.1}\" y2=\"{2:.1}\" stroke=\"#0969da\" stroke-width=\"2\" stroke-dasharray=\"4 3\"><title>recovery-time objective {3}</title></line>",
                    x(at),
                    y - 3.0,
                    y + lane_h + 3.0,
                    xml_escape(&spec.recovery_time_objective)
                );
            }
        }
        svg.push_str("</g>");
    }
    let axis_y = 30.0 + lanes * (lane_h + gap) + 4.0;
    let total = (t1 - t0) as f64 / 1000.0;
    for k in 0..=5 {
        let t = t0 + (t1 - t0) * k / 5;
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#57606a\">{:.0}s</text>",
            x(t),
            axis_y + 12.0,
            total * k as f64 / 5.0
        );
    }
    svg.push_str("</svg>");

    let mut rows = String::new();
    for spec in &exp.spec.slos {
        let r = slo_status(&st, &spec.name);
        let _ = write!(
            rows,
            "<tr><td>{}</td><td><span class=\"pill\" style=\"background:{}\">{}</span></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"predicted\">{}</td><td>{}</td></tr>",
            xml_escape(&spec.name),
            color(r.verdict),
            r.verdict
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into()),
            r.time_to_recover_seconds
                .map(|t| format!("{t}s"))
                .unwrap_or_else(|| if r.verdict.is_some() {
                    "never".into()
                } else {
                    "-".into()
                }),
            xml_escape(&spec.recovery_time_objective),
            r.availability_percent
                .map(|a| format!("{a:.2}%"))
                .unwrap_or_else(|| "-".into()),
            spec.availability_objective
                .map(|a| format!("{a}%"))
                .unwrap_or_else(|| "-".into()),
            predicted(&r),
            xml_escape(&match &r.cause {
                Some(c) => format!("{}. Cause: {c}", r.message.clone().unwrap_or_default()),
                None => r.message.clone().unwrap_or_default(),
            })
        );
    }
    let mut findings = String::new();
    if let Some(plan) = &st.plan {
        let list = |title: &str, n: i32, names: &[String]| {
            if n == 0 {
                return format!("<p><b>{title}:</b> none</p>");
            }
            let items: String = names
                .iter()
                .map(|x| format!("<li>{}</li>", xml_escape(x)))
                .collect();
            let more = if (n as usize) > names.len() {
                format!("<li>… and {} more</li>", n as usize - names.len())
            } else {
                String::new()
            };
            format!("<p><b>{title} ({n}):</b></p><ul>{items}{more}</ul>")
        };
        findings.push_str(&list(
            &format!("Pods pinned to {}", xml_escape(&exp.spec.zone)),
            plan.pinned_pods,
            &plan.pinned_pod_names,
        ));
        findings.push_str(&list(
            "Workloads that lose every ready replica",
            plan.workloads_losing_all_replicas,
            &plan.workloads_losing_all_replicas_names,
        ));
        let _ = write!(
            findings,
            "<p>{} of {} nodes in the zone; {} pods in scope.</p>",
            plan.nodes_in_zone, plan.nodes_in_cluster, plan.pods_in_scope
        );
    }
    let fault = st.fault.clone().unwrap_or_default();
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>firedrill: {name} {verdict_text}</title>
<style>
body{{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#24292f;max-width:1000px}}
.verdict{{display:inline-block;color:#fff;font-size:28px;font-weight:700;padding:6px 18px;border-radius:8px;background:{vc}}}
h1{{font-size:22px;margin:0 0 8px}} .reason{{font-size:17px;margin:10px 0 18px}}
table{{border-collapse:collapse;margin:14px 0}} td,th{{border-bottom:1px solid #d0d7de;padding:6px 10px;text-align:left;font-size:14px}}
.pill{{color:#fff;border-radius:10px;padding:2px 8px;font-size:12px}} .muted{{color:#57606a;font-size:13px}}
.legend span{{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}}
</style></head>
<body>
<h1>firedrill · {name} · zone {zone}</h1>
<div class="verdict" id="verdict">{verdict_text}</div>
<p class="reason" id="reason">{reason}</p>
<p class="muted">phase {phase} · dark for {duration} · {killed} pods killed on {cordoned} nodes · {restored} nodes restored</p>
{svg}
<p class="legend muted"><span style="background:#2da44e"></span>healthy<span style="background:#cf222e"></span>failing<span style="background:#8c959f"></span>probe could not run<span style="background:#24292f;opacity:.25"></span>zone dark<span style="border-left:2px dashed #0969da;height:12px;width:0"></span>recovery-time objective</p>
<table id="slos"><tr><th>SLO</th><th>verdict</th><th>recovered in</th><th>objective</th><th>availability</th><th>objective</th><th>predicted</th><th>detail</th></tr>{rows}</table>
<h2 style="font-size:17px">What the plan found</h2>
{findings}
</body></html>
"#,
        vc = color(verdict),
        zone = xml_escape(&exp.spec.zone),
        reason = xml_escape(&input.reason()),
        phase = input.phase(),
        duration = xml_escape(&exp.spec.duration),
        killed = fault.pods_killed,
        cordoned = fault.nodes_cordoned,
        restored = fault.nodes_restored,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slo::Timeline;

    fn finished() -> (DataCenterFailure, Recording) {
        let exp: DataCenterFailure = serde_json::from_value(json!({
            "apiVersion": "chaos.firedrill.dev/v1alpha1", "kind": "DataCenterFailure",
            "metadata": {"name": "pangyo", "creationTimestamp": "2026-11-22T04:00:00Z"},
            "spec": {"zone": "zone-a", "duration": "20s", "slos": [
                {"name": "authentication", "recoveryTimeObjective": "30s", "availabilityObjective": 99, "probe": {"tcp": {"host": "h", "port": 1}}},
                {"name": "messaging", "recoveryTimeObjective": "30s", "probe": {"tcp": {"host": "h", "port": 2}}}]},
            "status": {"phase": "Completed", "verdict": "Failed", "reason": "Failed: authentication: never recovered <while> zone-a was dark",
                "transitions": [{"phase": "Baseline", "time": "2026-11-22T04:00:00.000000Z"}, {"phase": "Restoring", "time": "2026-11-22T04:00:25.000000Z"}],
                "fault": {"nodesCordoned": 3, "nodesTainted": 3, "podsKilled": 12, "podsRekilled": 0, "nodesRestored": 3, "injectedAt": "2026-11-22T04:00:05.000000Z"},
                "plan": {"nodesInZone": 3, "nodesInCluster": 9, "podsInScope": 12, "podsSpared": 0, "workloadsLosingAllReplicas": 1,
                    "workloadsLosingAllReplicasNames": ["Deployment/auth/login"], "pinnedPods": 2, "pinnedPodNames": ["auth/login-1 (nodeSelector)", "auth/login-2 (nodeSelector)"], "pdbsViolated": 0},
                "slos": [
                    {"name": "authentication", "verdict": "Failed", "samples": 20, "failures": 16, "availabilityPercent": 20.0, "longestOutageSeconds": 20.0, "message": "never recovered while zone-a was dark (down 20s)"},
                    {"name": "messaging", "verdict": "Passed", "samples": 20, "failures": 2, "timeToRecoverSeconds": 2.5, "availabilityPercent": 90.0, "longestOutageSeconds": 2.5, "message": "recovered in 2.5s (objective 30s)"}]}
        }))
        .unwrap();
        let base = 1_795_320_000_000i64; // 2026-11-22T04:00:00Z
        let mut auth = Timeline::default();
        let mut chat = Timeline::default();
        for i in 0..50 {
            let t = base + i * 500;
            auth.push(
                t,
                if t >= base + 5_000 {
                    Outcome::Fail
                } else {
                    Outcome::Ok
                },
            );
            chat.push(
                t,
                if (base + 5_000..base + 7_500).contains(&t) {
                    Outcome::Fail
                } else {
                    Outcome::Ok
                },
            );
        }
        let rec = Recording {
            slos: [
                ("authentication".to_string(), auth),
                ("messaging".to_string(), chat),
            ]
            .into_iter()
            .collect(),
        };
        (exp, rec)
    }

    #[test]
    fn junit_has_one_testcase_per_slo_and_the_measured_value_in_the_failure() {
        let (exp, rec) = finished();
        let xml = junit(&Input {
            experiment: &exp,
            recording: &rec,
        });
        assert!(
            xml.contains(r#"<testsuites name="firedrill" tests="2" failures="1" errors="0""#),
            "{xml}"
        );
        assert_eq!(xml.matches("<testcase ").count(), 2);
        assert!(xml.contains(r#"<failure type="SLOFailed" message="authentication: never recovered while zone-a was dark (down 20s)">time to recover: never recovered (objective 30s); availability: 20.00% (objective 99%)"#), "{xml}");
        assert!(xml.contains("&lt;while&gt;"), "text is escaped");
    }

    #[test]
    fn json_report_is_stable() {
        let (exp, rec) = finished();
        let v = json(&Input {
            experiment: &exp,
            recording: &rec,
        });
        assert_eq!(v["schema"], "firedrill.dev/report/v1");
        assert_eq!(v["verdict"], "Failed");
        assert_eq!(v["slos"][1]["timeToRecoverSeconds"], 2.5);
        assert_eq!(v["slos"][0]["recoveryTimeObjectiveSeconds"], 30.0);
        assert_eq!(v["times"]["injected"], "2026-11-22T04:00:05Z");
        assert_eq!(
            v["timeline"]["messaging"].as_array().unwrap().len(),
            3,
            "ok, fail, ok runs"
        );
    }

    #[test]
    fn html_has_a_lane_per_slo_the_dark_window_and_the_objectives() {
        let (exp, rec) = finished();
        let page = html(&Input {
            experiment: &exp,
            recording: &rec,
        });
        assert_eq!(page.matches("class=\"lane\"").count(), 2);
        assert_eq!(page.matches("class=\"dark-window\"").count(), 1);
        assert_eq!(page.matches("class=\"rto\"").count(), 2);
        assert!(page.contains("Pods pinned to zone-a (2)"));
        assert!(page.contains(">Failed</div>"));
        assert!(!page.contains("<while>"), "text is escaped");
    }

    #[test]
    fn table_reads_at_a_glance() {
        let (exp, rec) = finished();
        let t = table(&Input {
            experiment: &exp,
            recording: &rec,
        });
        assert!(t.contains("authentication     Failed"), "{t}");
        assert!(t.contains("never"), "{t}");
        assert!(t.contains("2.5s/30s"), "{t}");
        assert!(t.contains("pinned to zone-a (2): auth/login-1"), "{t}");
    }
}
