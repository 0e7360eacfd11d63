//! Reports of a finished (or running) experiment: a terminal table, JSON
//! (schema `firedrill.dev/report/v1`, documented in docs/report.md), JUnit XML
//! (one testcase per SLO) and one self-contained HTML page with an SVG
//! timeline. Pure: built from the experiment and its probe recording.

use crate::api::{
    DataCenterFailure, DataCenterFailureStatus, Phase, PlanSummary, SloSpec, SloStatus, Verdict,
};
use crate::probe::Recording;
use crate::slo::{Outcome, Segment};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Everything a report shows.
pub struct Input<'a> {
    pub experiment: &'a DataCenterFailure,
    pub recording: &'a Recording,
    /// Each SLO's recovery-time objective in seconds, parsed once (an SLO
    /// whose objective cannot be read has none: the report still renders).
    rtos: BTreeMap<String, f64>,
}

impl<'a> Input<'a> {
    pub fn new(experiment: &'a DataCenterFailure, recording: &'a Recording) -> Self {
        let rtos = experiment
            .spec
            .slos
            .iter()
            .filter_map(|s| {
                Some((
                    s.name.clone(),
                    crate::spec::Slo::parse(s).ok()?.rto.as_secs_f64(),
                ))
            })
            .collect();
        Input {
            experiment,
            recording,
            rtos,
        }
    }

    /// The recovery-time objective of SLO `name`, in seconds.
    fn rto(&self, name: &str) -> Option<f64> {
        self.rtos.get(name).copied()
    }
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
pub fn predicted(r: &SloStatus) -> &'static str {
    match (r.verdict, r.predicted) {
        (None, _) => "-",
        (Some(_), None) => "unknown",
        (Some(v), Some(p)) if v == p => "yes",
        (Some(_), Some(_)) => "no",
    }
}

/// The measured status of one SLO (empty before it is judged).
fn slo_status(st: &DataCenterFailureStatus, name: &str) -> SloStatus {
    st.slos
        .iter()
        .find(|s| s.name == name)
        .cloned()
        .unwrap_or_default()
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
                "recoveryTimeObjectiveSeconds": input.rto(&spec.name),
                "availabilityPercent": r.availability_percent,
                "availabilityObjectivePercent": spec.availability_objective,
                "recoveryPointSeconds": r.writes.as_ref().map(|w| w.recovery_point_seconds.unwrap_or(0.0)),
                "recoveryPointObjective": spec.recovery_point_objective,
                "writes": r.writes,
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
                "dependencies": r.dependencies,
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
        "serviceEndpoints": service_endpoints(input),
    })
}

/// Each recorded Service's ready-endpoint timeline: `ok` while it had a
/// ready endpoint, `fail` while it had none.
fn service_endpoints(input: &Input) -> Value {
    let map: serde_json::Map<String, Value> = input
        .recording
        .services
        .iter()
        .map(|(name, tl)| {
            let runs: Vec<Value> = tl
                .segments_until(input.end_ms())
                .iter()
                .map(|g| json!({"outcome": g.outcome, "from": g.start, "to": g.end}))
                .collect();
            (name.clone(), Value::Array(runs))
        })
        .collect();
    Value::Object(map)
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
        total_time += r.time_to_recover_seconds.unwrap_or(0.0);
        match r.verdict {
            Some(Verdict::Passed) => {}
            Some(Verdict::Failed) => failures += 1,
            _ => errors += 1,
        }
        cases.push_str(&junit_case(input, &name, spec, &r));
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

/// One SLO's `<testcase>`: a `<failure>` when it failed, an `<error>` when
/// it has no verdict either way, and the measured values as its output.
fn junit_case(input: &Input, name: &str, spec: &SloSpec, r: &SloStatus) -> String {
    let mut case = String::new();
    let time = r.time_to_recover_seconds.unwrap_or(0.0);
    let _ = writeln!(
        case,
        "    <testcase classname=\"firedrill.{}.{}\" name=\"{}\" time=\"{time:.3}\">",
        xml_escape(name),
        xml_escape(&input.experiment.spec.zone),
        xml_escape(&spec.name)
    );
    let msg = r.message.clone().unwrap_or_default();
    let measured = measured(spec, r);
    match r.verdict {
        Some(Verdict::Passed) => {}
        Some(Verdict::Failed) => {
            let _ = writeln!(
                case,
                "      <failure type=\"SLOFailed\" message=\"{}: {}\">{}</failure>",
                xml_escape(&spec.name),
                xml_escape(&msg),
                xml_escape(&measured)
            );
        }
        _ => {
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
                case,
                "      <error type=\"Inconclusive\" message=\"{}\">{}</error>",
                xml_escape(&why),
                xml_escape(&measured)
            );
        }
    }
    let _ = writeln!(
        case,
        "      <system-out>{}</system-out>",
        xml_escape(&measured)
    );
    case.push_str("    </testcase>\n");
    case
}

/// What was measured of one SLO against its objectives, in one line, with
/// whether the plan predicted it and the cause where one is known.
fn measured(spec: &SloSpec, r: &SloStatus) -> String {
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
    let measured = match &r.writes {
        Some(w) => format!(
            "{measured}; recovery point: {} (objective {}); acknowledged writes: {}, lost: {}, unverified: {}, refused while dark: {}",
            w.recovery_point_seconds
                .map(|t| format!("{t}s"))
                .unwrap_or_else(|| "0s".into()),
            spec.recovery_point_objective.as_deref().unwrap_or("none"),
            w.acknowledged,
            w.lost,
            w.unverified,
            w.refused_while_dark
        ),
        None => measured,
    };
    match &r.cause {
        Some(c) => format!(
            "{measured}; predicted by the plan: {}; cause: {c}",
            predicted(r)
        ),
        None => format!("{measured}; predicted by the plan: {}", predicted(r)),
    }
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
        verdict_text(input.verdict())
    );
    let _ = writeln!(s, "{}", input.reason());
    if !exp.spec.slos.is_empty() {
        let _ = writeln!(
            s,
            "\n{:<18} {:<13} {:>16} {:>18} {:>20} {:>9} {:<10} DETAIL",
            "SLO",
            "VERDICT",
            "RECOVERED IN",
            "AVAILABILITY",
            "RECOVERY POINT",
            "SAMPLES",
            "PREDICTED"
        );
        for spec in &exp.spec.slos {
            table_row(&mut s, spec, &slo_status(&st, &spec.name));
        }
    }
    if let Some(plan) = &st.plan {
        table_plan(&mut s, &exp.spec.zone, plan);
    }
    s
}

/// One SLO's line of the table, and its cause on a line of its own.
fn table_row(s: &mut String, spec: &SloSpec, r: &SloStatus) {
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
    let crit = if spec.critical { "" } else { " (non-critical)" };
    let _ = writeln!(
        s,
        "{:<18} {:<13} {:>16} {:>18} {:>20} {:>9} {:<10} {}{crit}",
        spec.name,
        verdict_text(r.verdict),
        ttr,
        avail,
        recovery_point(spec, r),
        r.samples,
        predicted(r),
        r.message.clone().unwrap_or_default()
    );
    if let Some(cause) = &r.cause {
        let _ = writeln!(s, "{:<18} cause: {cause}", "");
    }
    for d in &r.dependencies {
        let _ = writeln!(
            s,
            "{:<18} dependency {}: {}{}",
            "",
            d.name,
            d.finding,
            d.evidence
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
    }
}

/// A write probe's recovery point against its objective, with the writes
/// lost or unread: `2s/0s (20 lost)`; `-` for other probes.
fn recovery_point(spec: &SloSpec, r: &SloStatus) -> String {
    let Some(w) = &r.writes else {
        return "-".into();
    };
    let mut s = format!("{}s", w.recovery_point_seconds.unwrap_or(0.0));
    if let Some(o) = &spec.recovery_point_objective {
        s.push_str(&format!("/{o}"));
    }
    if w.lost > 0 {
        s.push_str(&format!(" ({} lost)", w.lost));
    }
    if w.unverified > 0 {
        s.push_str(&format!(" ({} unread)", w.unverified));
    }
    s
}

/// The table's notes from the plan: its warnings, the pods pinned to the
/// zone and the workloads that lose every replica.
fn table_plan(s: &mut String, zone: &str, plan: &PlanSummary) {
    for w in &plan.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    if plan.pinned_pods > 0 {
        let _ = writeln!(
            s,
            "\npinned to {} ({}): {}",
            zone,
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

/// A verdict as the table and the page show it (`-` before there is one).
fn verdict_text(v: Option<Verdict>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
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
    let end = input.end_ms();
    let segments: Vec<(String, Vec<Segment>)> = input
        .recording
        .slos
        .iter()
        .map(|(n, t)| (n.clone(), t.segments_until(end)))
        .collect();
    let axis = Axis::new(input, &segments);
    let svg = timeline_svg(input, &st, &segments, &axis);
    let rows: String = exp
        .spec
        .slos
        .iter()
        .map(|spec| slo_row(spec, &slo_status(&st, &spec.name)))
        .collect();
    let findings = st
        .plan
        .as_ref()
        .map(|plan| plan_findings(&exp.spec.zone, plan))
        .unwrap_or_default();
    html_page(input, &st, &svg, &rows, &findings)
}

/// The timeline's layout: lanes start `LEFT` pixels in and are `WIDTH` wide,
/// `LANE_H` high with `GAP` between them.
const LEFT: f64 = 170.0;
const WIDTH: f64 = 760.0;
const LANE_H: f64 = 26.0;
const GAP: f64 = 14.0;

/// The timeline's time axis.
struct Axis {
    /// From the first sample (or the baseline, or the injection)...
    t0: i64,
    /// ... to the last sample (or the restore, or the finish), and far
    /// enough to show every recovery-time objective.
    t1: i64,
    injected: Option<i64>,
    restore: Option<i64>,
}

impl Axis {
    fn new(input: &Input, segments: &[(String, Vec<Segment>)]) -> Self {
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
        let objectives = input
            .experiment
            .spec
            .slos
            .iter()
            .filter_map(|s| Some(injected? + (input.rto(&s.name)? * 1000.0) as i64));
        let t1 = [last, restore, input.phase_ms(Phase::Completed)]
            .into_iter()
            .flatten()
            .chain(objectives)
            .max()
            .unwrap_or(t0 + 1)
            .max(t0 + 1);
        Axis {
            t0,
            t1,
            injected,
            restore,
        }
    }

    /// Where time `t` is drawn.
    fn x(&self, t: i64) -> f64 {
        LEFT + (t - self.t0) as f64 / (self.t1 - self.t0) as f64 * WIDTH
    }
}

/// The SVG timeline: the dark window, a lane per SLO, the time ticks.
fn timeline_svg(
    input: &Input,
    st: &DataCenterFailureStatus,
    segments: &[(String, Vec<Segment>)],
    axis: &Axis,
) -> String {
    let exp = input.experiment;
    let lanes = exp.spec.slos.len().max(1) as f64;
    let height = 40.0 + lanes * (LANE_H + GAP) + 30.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg id=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 960 {height}\" width=\"960\" height=\"{height}\" role=\"img\" aria-label=\"SLO timeline\">"
    );
    if let (Some(a), Some(b)) = (axis.injected, axis.restore.or(Some(axis.t1))) {
        let _ = write!(
            svg,
            "<rect class=\"dark-window\" x=\"{:.1}\" y=\"20\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#24292f\" fill-opacity=\"0.12\"/>",
            axis.x(a),
            (axis.x(b) - axis.x(a)).max(1.0),
            height - 50.0
        );
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"14\" font-size=\"12\" fill=\"#24292f\">{} dark</text>",
            axis.x(a) + 4.0,
            xml_escape(&exp.spec.zone)
        );
    }
    for (i, spec) in exp.spec.slos.iter().enumerate() {
        let segs = segments
            .iter()
            .find(|(n, _)| *n == spec.name)
            .map(|(_, s)| s.as_slice());
        let y = 30.0 + i as f64 * (LANE_H + GAP);
        let lane = Lane {
            spec,
            status: &slo_status(st, &spec.name),
            rto: input.rto(&spec.name),
            segs,
        };
        slo_lane(&mut svg, axis, y, &lane);
    }
    let axis_y = 30.0 + lanes * (LANE_H + GAP) + 4.0;
    let total = (axis.t1 - axis.t0) as f64 / 1000.0;
    for k in 0..=5 {
        let t = axis.t0 + (axis.t1 - axis.t0) * k / 5;
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#57606a\">{:.0}s</text>",
            axis.x(t),
            axis_y + 12.0,
            total * k as f64 / 5.0
        );
    }
    svg.push_str("</svg>");
    svg
}

/// One SLO's lane at height `y`: its name in its verdict's colour, its
/// recorded runs, and its recovery-time objective.
struct Lane<'a> {
    spec: &'a SloSpec,
    status: &'a SloStatus,
    rto: Option<f64>,
    segs: Option<&'a [Segment]>,
}

fn slo_lane(svg: &mut String, axis: &Axis, y: f64, lane: &Lane) {
    let (spec, r, segs) = (lane.spec, lane.status, lane.segs);
    let _ = write!(
        svg,
        "<g class=\"lane\" data-slo=\"{n}\"><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"13\" text-anchor=\"end\" fill=\"{}\">{n}</text>",
        LEFT - 8.0,
        y + LANE_H * 0.68,
        color(r.verdict),
        n = xml_escape(&spec.name)
    );
    let _ = write!(
        svg,
        "<rect x=\"{LEFT}\" y=\"{y:.1}\" width=\"{WIDTH}\" height=\"{LANE_H}\" fill=\"#f6f8fa\" stroke=\"#d0d7de\"/>"
    );
    for g in segs.into_iter().flatten() {
        run_rect(svg, axis, y, g);
    }
    if let Some(w) = r.writes.as_ref().filter(|w| w.lost > 0)
        && let (Some(first), Some(last)) = (&w.first_lost, &w.last_lost)
    {
        let (a, b) = (
            axis.x(first.at.0.as_millisecond().max(axis.t0)),
            axis.x(last.at.0.as_millisecond().min(axis.t1)),
        );
        let _ = write!(
            svg,
            "<rect class=\"lost-writes\" x=\"{a:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"6\" fill=\"#8250df\"><title>{} acknowledged writes lost: {} to {}</title></rect>",
            y + LANE_H - 6.0,
            (b - a).max(2.0),
            w.lost,
            xml_escape(&first.id),
            xml_escape(&last.id)
        );
    }
    if let (Some(inj), Some(rto)) = (axis.injected, lane.rto) {
        let at = inj + (rto * 1000.0) as i64;
        if at <= axis.t1 {
            let _ = write!(
                svg,
                "<line class=\"rto\" x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1:.1}\" y2=\"{2:.1}\" stroke=\"#0969da\" stroke-width=\"2\" stroke-dasharray=\"4 3\"><title>recovery-time objective {3}</title></line>",
                axis.x(at),
                y - 3.0,
                y + LANE_H + 3.0,
                xml_escape(&spec.recovery_time_objective)
            );
        }
    }
    svg.push_str("</g>");
}

/// One recorded run of a lane. A plain run has its outcome's colour; a
/// stretch merged to keep the recording small is shaded by its share of
/// failures.
fn run_rect(svg: &mut String, axis: &Axis, y: f64, g: &Segment) {
    let (class, fill, opacity) = match g.outcome {
        Some(Outcome::Ok) => ("Ok", "#2da44e", 1.0),
        Some(Outcome::Fail) => ("Fail", "#cf222e", 1.0),
        Some(Outcome::Error) => ("Error", "#8c959f", 1.0),
        None => {
            let answered = (g.ms[0] + g.ms[1]).max(1) as f64;
            ("Mixed", "#cf222e", 0.25 + 0.75 * g.ms[1] as f64 / answered)
        }
    };
    let (a, b) = (axis.x(g.start.max(axis.t0)), axis.x(g.end.min(axis.t1)));
    let _ = write!(
        svg,
        "<rect class=\"run {class}\" x=\"{a:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{LANE_H}\" fill=\"{fill}\" fill-opacity=\"{opacity:.2}\"><title>{class}: {} ok, {} failed, {} could not run</title></rect>",
        (b - a).max(0.8),
        g.counts[0],
        g.counts[1],
        g.counts[2]
    );
}

/// One SLO's row of the page's table.
fn slo_row(spec: &SloSpec, r: &SloStatus) -> String {
    format!(
        "<tr><td>{}</td><td><span class=\"pill\" style=\"background:{}\">{}</span></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"recovery-point\">{}</td><td class=\"predicted\">{}</td><td>{}</td></tr>",
        xml_escape(&spec.name),
        color(r.verdict),
        verdict_text(r.verdict),
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
        xml_escape(&recovery_point(spec, r)),
        predicted(r),
        xml_escape(&{
            let mut text = match &r.cause {
                Some(c) => format!("{}. Cause: {c}", r.message.clone().unwrap_or_default()),
                None => r.message.clone().unwrap_or_default(),
            };
            for d in &r.dependencies {
                text.push_str(&format!(". Dependency {}: {}", d.name, d.finding));
                if let Some(e) = &d.evidence {
                    text.push_str(&format!(" ({e})"));
                }
            }
            text
        })
    )
}

/// What the plan found: the pods pinned to the zone, the workloads that lose
/// every ready replica, and the zone's size.
fn plan_findings(zone: &str, plan: &PlanSummary) -> String {
    let mut findings = finding_list(
        &format!("Pods pinned to {}", xml_escape(zone)),
        plan.pinned_pods,
        &plan.pinned_pod_names,
    );
    findings.push_str(&finding_list(
        "Workloads that lose every ready replica",
        plan.workloads_losing_all_replicas,
        &plan.workloads_losing_all_replicas_names,
    ));
    findings.push_str(&finding_list(
        "Service dependencies read from the workloads' configuration",
        plan.dependencies.len() as i32,
        &plan.dependencies,
    ));
    findings.push_str(&dependency_svg(&plan.dependencies));
    let _ = write!(
        findings,
        "<p>{} of {} nodes in the zone; {} pods in scope.</p>",
        plan.nodes_in_zone, plan.nodes_in_cluster, plan.pods_in_scope
    );
    findings
}

/// One edge of the plan's dependency lines (`Deployment shop/web -> Service
/// shop/api (env API_URL api.shop.svc) [named only in prose]: LOST, why`):
/// caller, Service, how it is named, whether only in prose, why it is lost.
fn dependency_edge(line: &str) -> Option<(&str, &str, &str, bool, Option<&str>)> {
    let (from, rest) = line.split_once(" -> Service ")?;
    let (to, rest) = rest.split_once(" (")?;
    let (head, lost) = match rest.split_once(": LOST, ") {
        Some((head, why)) => (head, Some(why)),
        None => (rest, None),
    };
    let (head, prose) = match head.strip_suffix(" [named only in prose]") {
        Some(head) => (head, true),
        None => (head, false),
    };
    Some((from, to, head.strip_suffix(')')?, prose, lost))
}

/// The dependency graph drawn: callers on the left, the Services they name
/// on the right, a line per call (dashed where the name is only in prose),
/// and the Services lost with the zone in red, with why on hover.
fn dependency_svg(lines: &[String]) -> String {
    let edges: Vec<_> = lines.iter().filter_map(|l| dependency_edge(l)).collect();
    if edges.is_empty() {
        return String::new();
    }
    let mut callers: Vec<&str> = edges.iter().map(|e| e.0).collect();
    callers.sort_unstable();
    callers.dedup();
    let mut services: Vec<(&str, Option<&str>)> = edges.iter().map(|e| (e.1, e.4)).collect();
    services.sort_unstable();
    services.dedup_by(|a, b| a.0 == b.0);
    let (row, box_w, right_x) = (30.0, 330.0, 470.0);
    let y = |i: usize| 10.0 + i as f64 * row;
    let height = y(callers.len().max(services.len())) + 10.0;
    let mut svg = format!(
        r#"<svg class="deps" width="810" height="{height}" role="img" aria-label="Service dependency graph">"#
    );
    for (from, to, via, prose, _) in &edges {
        let (Some(a), Some(b)) = (
            callers.iter().position(|c| c == from),
            services.iter().position(|s| s.0 == *to),
        ) else {
            continue;
        };
        let _ = write!(
            svg,
            r##"<line x1="{x1}" y1="{y1}" x2="{right_x}" y2="{y2}" stroke="#888"{dash}><title>{t}</title></line>"##,
            x1 = 10.0 + box_w,
            y1 = y(a) + 11.0,
            y2 = y(b) + 11.0,
            dash = if *prose {
                r#" stroke-dasharray="4 3""#
            } else {
                ""
            },
            t = xml_escape(via),
        );
    }
    for (i, c) in callers.iter().enumerate() {
        let _ = write!(
            svg,
            r##"<rect x="10" y="{}" width="{box_w}" height="22" fill="#f4f4f4" stroke="#888"/><text x="16" y="{}" font-size="12">{}</text>"##,
            y(i),
            y(i) + 15.0,
            xml_escape(c)
        );
    }
    for (i, (name, lost)) in services.iter().enumerate() {
        let (stroke, label, title) = match lost {
            Some(why) => ("#c62828", format!("Service {name}: LOST"), why.to_string()),
            None => (
                "#2e7d32",
                format!("Service {name}"),
                "keeps serving".to_string(),
            ),
        };
        let _ = write!(
            svg,
            r##"<g><title>{}</title><rect x="{right_x}" y="{}" width="{box_w}" height="22" rx="11" fill="#fff" stroke="{stroke}" stroke-width="2"/><text x="{}" y="{}" font-size="12" fill="{stroke}">{}</text></g>"##,
            xml_escape(&title),
            y(i),
            right_x + 10.0,
            y(i) + 15.0,
            xml_escape(&label)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A titled list of `n` findings, of which `names` are the first listed.
fn finding_list(title: &str, n: i32, names: &[String]) -> String {
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
}

/// The page around the timeline, the SLO rows and the findings: the verdict
/// and the fault's counts first, the legend under the timeline.
fn html_page(
    input: &Input,
    st: &DataCenterFailureStatus,
    svg: &str,
    rows: &str,
    findings: &str,
) -> String {
    let exp = input.experiment;
    let name = xml_escape(&exp.metadata.name.clone().unwrap_or_default());
    let verdict = input.verdict();
    let verdict_text = verdict
        .map(|v| v.to_string())
        .unwrap_or_else(|| input.phase());
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
<p class="legend muted"><span style="background:#2da44e"></span>healthy<span style="background:#cf222e"></span>failing<span style="background:#8c959f"></span>probe could not run<span style="background:#24292f;opacity:.25"></span>zone dark<span style="border-left:2px dashed #0969da;height:12px;width:0"></span>recovery-time objective<span style="background:#8250df"></span>acknowledged writes lost</p>
<table id="slos"><tr><th>SLO</th><th>verdict</th><th>recovered in</th><th>objective</th><th>availability</th><th>objective</th><th>recovery point</th><th>predicted</th><th>detail</th></tr>{rows}</table>
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
            ..Default::default()
        };
        (exp, rec)
    }

    #[test]
    fn junit_has_one_testcase_per_slo_and_the_measured_value_in_the_failure() {
        let (exp, rec) = finished();
        let xml = junit(&Input::new(&exp, &rec));
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
        let v = json(&Input::new(&exp, &rec));
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
        let page = html(&Input::new(&exp, &rec));
        assert_eq!(page.matches("class=\"lane\"").count(), 2);
        assert_eq!(page.matches("class=\"dark-window\"").count(), 1);
        assert_eq!(page.matches("class=\"rto\"").count(), 2);
        assert!(page.contains("Pods pinned to zone-a (2)"));
        assert!(page.contains(">Failed</div>"));
        assert!(!page.contains("<while>"), "text is escaped");
    }

    #[test]
    fn the_dependency_graph_is_drawn_with_the_lost_services_marked() {
        let lines = [
            "Deployment shop/web -> Service shop/api (env API_URL api.shop.svc)",
            "Deployment shop/api -> Service shop/db (env DB_URL db.shop.svc): LOST, Service shop/db keeps 0 ready pods outside zone-a",
            "Deployment shop/web -> Service shop/legacy (env NOTE legacy.shop (ExternalName shop/old)) [named only in prose]: LOST, gone <soon>",
            "not an edge",
        ]
        .map(String::from);
        assert_eq!(
            dependency_edge(&lines[2]),
            Some((
                "Deployment shop/web",
                "shop/legacy",
                "env NOTE legacy.shop (ExternalName shop/old)",
                true,
                Some("gone <soon>")
            ))
        );
        let svg = dependency_svg(&lines);
        assert_eq!(svg.matches("<line ").count(), 3, "{svg}");
        assert_eq!(svg.matches("stroke-dasharray").count(), 1, "{svg}");
        assert!(svg.contains(">Service shop/db: LOST</text>"), "{svg}");
        assert!(svg.contains(">Service shop/api</text>"), "{svg}");
        assert_eq!(svg.matches("LOST</text>").count(), 2, "{svg}");
        assert_eq!(svg.matches(">Deployment shop/web</text>").count(), 1);
        assert!(svg.contains("gone &lt;soon&gt;") && !svg.contains("<soon>"));
        assert_eq!(dependency_svg(&[]), "");
    }

    #[test]
    fn table_reads_at_a_glance() {
        let (exp, rec) = finished();
        let t = table(&Input::new(&exp, &rec));
        assert!(t.contains("authentication     Failed"), "{t}");
        assert!(t.contains("never"), "{t}");
        assert!(t.contains("2.5s/30s"), "{t}");
        assert!(t.contains("pinned to zone-a (2): auth/login-1"), "{t}");
    }

    /// The fixture with a write probe's SLO that lost 20 writes.
    fn with_lost_writes() -> (DataCenterFailure, Recording) {
        let (mut exp, rec) = finished();
        exp.spec.slos.push(
            serde_json::from_value(json!({"name": "payments", "recoveryTimeObjective": "30s",
                "recoveryPointObjective": "0s",
                "probe": {"write": {"url": "http://l/r", "readUrl": "http://l/r/{{id}}"}}}))
            .unwrap(),
        );
        exp.status.as_mut().unwrap().slos.push(
            serde_json::from_value(json!({"name": "payments", "verdict": "Failed", "samples": 20, "failures": 4,
                "timeToRecoverSeconds": 3.0, "availabilityPercent": 80.0,
                "message": "20 acknowledged writes lost (fd-1-80 to fd-1-99), recovery point 2s, objective 0s",
                "writes": {"acknowledged": 180, "refusedWhileDark": 4, "lost": 20, "unverified": 0,
                    "firstLost": {"id": "fd-1-80", "at": "2026-11-22T04:00:03Z"},
                    "lastLost": {"id": "fd-1-99", "at": "2026-11-22T04:00:05Z"},
                    "recoveryPointSeconds": 2.0}}))
            .unwrap(),
        );
        (exp, rec)
    }

    #[test]
    fn a_recovery_point_shows_beside_time_to_recover_and_availability() {
        let (exp, rec) = with_lost_writes();
        let input = Input::new(&exp, &rec);
        let t = table(&input);
        assert!(t.contains("RECOVERY POINT"), "{t}");
        assert!(t.contains("2s/0s (20 lost)"), "{t}");
        // Other probes have none.
        assert!(
            t.lines()
                .any(|l| l.starts_with("messaging") && l.contains(" - ")),
            "{t}"
        );
        let v = json(&input);
        assert_eq!(v["slos"][2]["recoveryPointSeconds"], 2.0);
        assert_eq!(v["slos"][2]["recoveryPointObjective"], "0s");
        assert_eq!(v["slos"][2]["writes"]["lost"], 20);
        assert_eq!(v["slos"][1]["recoveryPointSeconds"], Value::Null);
        let xml = junit(&input);
        assert!(
            xml.contains("recovery point: 2s (objective 0s); acknowledged writes: 180, lost: 20, unverified: 0, refused while dark: 4"),
            "{xml}"
        );
        let page = html(&input);
        assert!(page.contains("<td class=\"recovery-point\">2s/0s (20 lost)</td>"));
        assert_eq!(
            page.matches("class=\"lost-writes\"").count(),
            1,
            "the lost writes are marked on the timeline"
        );
        let (exp, rec) = finished();
        assert!(!html(&Input::new(&exp, &rec)).contains("class=\"lost-writes\""));
    }
}
