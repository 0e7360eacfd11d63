//! Game days on a schedule: `DataCenterFailureSchedule` creates a
//! `DataCenterFailure` from its template at every tick of its cron schedule,
//! the way a CronJob creates Jobs.
//!
//! - `timeZone` (IANA, default UTC) is the zone the schedule is read in.
//! - `suspend` stops new runs; running ones are left alone.
//! - `concurrencyPolicy: Forbid` (the default) skips a tick while a run of
//!   this schedule is still active; `Allow` starts it anyway. A skipped tick
//!   is recorded (event, lastScheduleTime) and not started later.
//! - `startingDeadlineSeconds`: a tick noticed later than this is skipped.
//! - Only the most recent missed tick is considered, as with CronJobs.
//! - History limits delete the oldest finished runs (ownerReferences make
//!   the garbage collector delete all runs with the schedule).
//! - `zones` rotates the zone round-robin across runs.
//!
//! [`decide`] is pure; [`run`] is the controller around it.

use crate::api::{
    DataCenterFailure, DataCenterFailureSchedule, DataCenterFailureScheduleSpec,
    DataCenterFailureScheduleStatus, Phase, Verdict,
};
use crate::{Error, Result};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{EventType, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

/// Label on every experiment a schedule created.
pub const SCHEDULE_LABEL: &str = "chaos.firedrill.dev/schedule";
/// Annotation with the tick an experiment was created for.
pub const SCHEDULED_AT_ANNOTATION: &str = "chaos.firedrill.dev/scheduled-at";

/// The next tick strictly after `after`, reading `schedule` in `time_zone`.
pub fn next_after(
    schedule: &str,
    time_zone: Option<&str>,
    after: Timestamp,
) -> std::result::Result<Timestamp, String> {
    let cron = parse_schedule(schedule)?;
    let tz = zone(time_zone)?;
    let zoned = jiff::Timestamp::from_millisecond(after.as_millisecond())
        .map_err(|e| e.to_string())?
        .to_zoned(tz);
    let next = cron
        .find_next_occurrence(&zoned, false)
        .map_err(|e| format!("schedule {schedule:?}: {e}"))?;
    Timestamp::from_millisecond(next.timestamp().as_millisecond()).map_err(|e| e.to_string())
}

/// Parse a cron schedule (five fields, or an `@` name in any case).
pub fn parse_schedule(schedule: &str) -> std::result::Result<croner::Cron, String> {
    let s = schedule.trim();
    let lower = s.to_ascii_lowercase();
    let expanded = match lower.as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        _ => s,
    };
    if expanded.split_whitespace().count() != 5 {
        return Err(format!(
            "schedule {schedule:?} must have 5 fields (minute hour day-of-month month day-of-week)"
        ));
    }
    expanded
        .parse::<croner::Cron>()
        .map_err(|e| format!("schedule {schedule:?}: {e}"))
}

fn zone(time_zone: Option<&str>) -> std::result::Result<jiff::tz::TimeZone, String> {
    match time_zone {
        None | Some("UTC") => Ok(jiff::tz::TimeZone::UTC),
        Some(name) => crate::api::time_zones()
            .get(name)
            .map_err(|_| format!("unknown time zone {name:?}")),
    }
}

/// A run of the schedule, as the decision needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct RunInfo {
    pub name: String,
    pub created: Timestamp,
    /// None while the run is active.
    pub finished: Option<Verdict>,
}

/// What to do now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decision {
    /// Create a run for this tick, in this zone.
    pub create: Option<(Timestamp, String)>,
    /// A tick that is skipped, and why.
    pub skip: Option<(Timestamp, String)>,
    /// Finished runs past the history limits, oldest first.
    pub delete: Vec<String>,
    /// When to look again.
    pub requeue: Duration,
}

/// Decide from the spec, the status, the runs and the time.
pub fn decide(
    sched: &DataCenterFailureSchedule,
    runs: &[RunInfo],
    now: Timestamp,
) -> std::result::Result<Decision, String> {
    let spec = &sched.spec;
    let st = sched.status.clone().unwrap_or_default();
    let since = st
        .last_schedule_time
        .as_ref()
        .map(|t| t.0)
        .or_else(|| sched.meta().creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(now);
    let (due, next) = ticks(spec, since, now)?;
    let mut d = Decision {
        requeue: Duration::try_from(next.duration_since(now))
            .unwrap_or(Duration::ZERO)
            .clamp(Duration::from_secs(1), Duration::from_secs(300)),
        ..Default::default()
    };
    if let Some(tick) = due
        && !spec.suspend
    {
        match skip_reason(spec, runs, tick, now) {
            Some(why) => d.skip = Some((tick, why)),
            None => d.create = Some((tick, next_zone(spec, &st))),
        }
    }
    d.delete = past_history(spec, runs);
    Ok(d)
}

/// The most recent tick in (`since`, `now`], if any, and the next one after `now`.
fn ticks(
    spec: &DataCenterFailureScheduleSpec,
    since: Timestamp,
    now: Timestamp,
) -> std::result::Result<(Option<Timestamp>, Timestamp), String> {
    let tz = spec.time_zone.as_deref();
    let mut due = None;
    let mut t = next_after(&spec.schedule, tz, since)?;
    let mut guard = 0;
    while t <= now && guard < 100_000 {
        due = Some(t);
        t = next_after(&spec.schedule, tz, t)?;
        guard += 1;
    }
    Ok((due, t))
}

/// Why the due `tick` is skipped: noticed past the starting deadline, or a
/// run still active under `concurrencyPolicy: Forbid`.
fn skip_reason(
    spec: &DataCenterFailureScheduleSpec,
    runs: &[RunInfo],
    tick: Timestamp,
    now: Timestamp,
) -> Option<String> {
    let late = Duration::try_from(now.duration_since(tick)).unwrap_or(Duration::ZERO);
    let active: Vec<&RunInfo> = runs.iter().filter(|r| r.finished.is_none()).collect();
    if let Some(deadline) = spec.starting_deadline_seconds
        && late > Duration::from_secs(deadline.max(0) as u64)
    {
        Some(format!(
            "missed the {tick} tick by {}s (startingDeadlineSeconds={deadline})",
            late.as_secs()
        ))
    } else if spec.concurrency_policy == crate::api::ConcurrencyPolicy::Forbid && !active.is_empty()
    {
        let names: Vec<&str> = active.iter().map(|r| r.name.as_str()).collect();
        Some(format!(
            "skipped the {tick} tick: {} still running (concurrencyPolicy Forbid)",
            names.join(", ")
        ))
    } else {
        None
    }
}

/// The zone of the next run: the template's, or the next of `zones` in turn.
fn next_zone(spec: &DataCenterFailureScheduleSpec, st: &DataCenterFailureScheduleStatus) -> String {
    if spec.zones.is_empty() {
        spec.template.spec.zone.clone()
    } else {
        spec.zones[(st.next_zone_index.max(0) as usize) % spec.zones.len()].clone()
    }
}

/// History: keep the newest N passed and M other finished runs; the rest,
/// oldest first.
fn past_history(spec: &DataCenterFailureScheduleSpec, runs: &[RunInfo]) -> Vec<String> {
    let mut finished: Vec<&RunInfo> = runs.iter().filter(|r| r.finished.is_some()).collect();
    finished.sort_by_key(|r| std::cmp::Reverse(r.created));
    let (passed, other): (Vec<&RunInfo>, Vec<&RunInfo>) = finished
        .into_iter()
        .partition(|r| r.finished == Some(Verdict::Passed));
    let mut delete: Vec<&RunInfo> = passed
        .into_iter()
        .skip(spec.successful_history_limit.max(0) as usize)
        .collect();
    delete.extend(
        other
            .into_iter()
            .skip(spec.failed_history_limit.max(0) as usize),
    );
    delete.sort_by_key(|r| r.created);
    delete.into_iter().map(|r| r.name.clone()).collect()
}

/// The name of the run for a tick: stable, so creating it twice is harmless.
pub fn run_name(schedule: &str, tick: Timestamp) -> String {
    let minutes = tick.as_second() / 60;
    let mut base = schedule.to_string();
    base.truncate(63 - 11);
    format!("{base}-{minutes}")
}

/// The experiment a schedule creates for a tick.
pub fn build_run(
    sched: &DataCenterFailureSchedule,
    tick: Timestamp,
    zone: &str,
) -> DataCenterFailure {
    let name = sched.name_any();
    let mut spec = sched.spec.template.spec.clone();
    spec.zone = zone.to_string();
    let mut exp = DataCenterFailure::new(&run_name(&name, tick), spec);
    let tmeta = sched.spec.template.metadata.clone().unwrap_or_default();
    let mut labels = tmeta.labels;
    labels.insert(
        SCHEDULE_LABEL.into(),
        crate::fault::mark_value(&name, &sched.uid().unwrap_or_default()),
    );
    let mut annotations = tmeta.annotations;
    annotations.insert(SCHEDULED_AT_ANNOTATION.into(), tick.to_string());
    exp.metadata.labels = Some(labels);
    exp.metadata.annotations = Some(annotations);
    exp.metadata.owner_references = sched.controller_owner_ref(&()).map(|r| vec![r]);
    exp
}

struct Ctx {
    client: Client,
    recorder: crate::event::Events,
}

/// Run the schedule controller until `stop` resolves.
pub async fn run(
    clients: crate::clients::Clients,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = clients.calls;
    let ctx = Arc::new(Ctx {
        recorder: crate::event::Events::new(
            client.clone(),
            Reporter {
                controller: "firedrill-schedule".into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        ),
        client: client.clone(),
    });
    let schedules = Api::<DataCenterFailureSchedule>::all(clients.watches.clone());
    let runs = Api::<DataCenterFailure>::all(clients.watches.clone());
    Controller::new(schedules, watcher::Config::default().any_semantic())
        .trigger_backoff(crate::fault::backoff::Backoff::new())
        .owns(
            runs,
            watcher::Config::default()
                .labels(SCHEDULE_LABEL)
                .any_semantic(),
        )
        .graceful_shutdown_on(stop)
        .run(
            reconcile,
            |_, e, _| {
                tracing::warn!(error = %e, "schedule reconcile failed");
                Action::requeue(Duration::from_secs(10))
            },
            ctx,
        )
        .for_each(|_| async {})
        .await;
}

async fn event(
    ctx: &Ctx,
    sched: &DataCenterFailureSchedule,
    type_: EventType,
    reason: &str,
    note: String,
) {
    crate::event::publish(&ctx.recorder, &sched.object_ref(&()), type_, reason, note).await;
}

async fn reconcile(sched: Arc<DataCenterFailureSchedule>, ctx: Arc<Ctx>) -> Result<Action> {
    let name = sched.name_any();
    let api = Api::<DataCenterFailureSchedule>::all(ctx.client.clone());
    let runs = owned_runs(&ctx.client, &sched).await?;
    let now = Timestamp::now();
    let mut st: DataCenterFailureScheduleStatus = sched.status.clone().unwrap_or_default();
    let decision = decide(&sched, &runs, now);
    set_valid(&mut st, &sched, decision.as_ref().err(), now);
    let decision = match decision {
        Ok(d) => d,
        Err(msg) => {
            event(&ctx, &sched, EventType::Warning, "InvalidSchedule", msg).await;
            crate::api::write_status(&api, &name, None, &st).await?;
            return Ok(Action::requeue(Duration::from_secs(300)));
        }
    };
    if let Some((tick, why)) = &decision.skip {
        st.last_schedule_time = Some(Time(*tick));
        event(&ctx, &sched, EventType::Warning, "Skipped", why.clone()).await;
    }
    if let Some((tick, zone)) = &decision.create {
        start_run(&ctx, &sched, *tick, zone, &mut st).await?;
    }
    let runs_api = Api::<DataCenterFailure>::all(ctx.client.clone());
    for old in &decision.delete {
        runs_api.delete(old, &DeleteParams::background()).await.ok();
    }
    record_runs(&mut st, &runs, decision.create.is_some());
    crate::api::write_status(&api, &name, None, &st).await?;
    Ok(Action::requeue(decision.requeue))
}

/// The runs this schedule created (by its label, and owned by this very
/// schedule), as the decision needs them.
async fn owned_runs(client: &Client, sched: &DataCenterFailureSchedule) -> Result<Vec<RunInfo>> {
    let uid = sched.uid().unwrap_or_default();
    let owned = Api::<DataCenterFailure>::all(client.clone())
        .list(&ListParams::default().labels(&format!(
            "{SCHEDULE_LABEL}={}",
            crate::fault::mark_value(&sched.name_any(), &uid)
        )))
        .await?
        .items;
    Ok(owned
        .iter()
        .filter(|r| r.owner_references().iter().any(|o| o.uid == uid))
        .map(run_info)
        .collect())
}

/// A run, with how it ended: Completed runs with their verdict (Passed
/// without one), others Failed if they failed, else Inconclusive.
fn run_info(r: &DataCenterFailure) -> RunInfo {
    let st = r.status.clone().unwrap_or_default();
    let finished = st
        .phase
        .filter(|p| p.is_terminal())
        .map(|p| match (p, st.verdict) {
            (Phase::Completed, Some(v)) => v,
            (Phase::Completed, None) => Verdict::Passed,
            (_, Some(Verdict::Failed)) => Verdict::Failed,
            _ => Verdict::Inconclusive,
        });
    RunInfo {
        name: r.name_any(),
        created: r
            .meta()
            .creation_timestamp
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(Timestamp::UNIX_EPOCH),
        finished,
    }
}

/// The `Valid` condition: true, or false with why the schedule is invalid.
/// Its transition time moves only when it changes.
fn set_valid(
    st: &mut DataCenterFailureScheduleStatus,
    sched: &DataCenterFailureSchedule,
    invalid: Option<&String>,
    now: Timestamp,
) {
    let valid = match invalid {
        None => ("True", "Valid", String::new()),
        Some(msg) => ("False", "InvalidSchedule", msg.clone()),
    };
    let changed = !st
        .conditions
        .iter()
        .any(|c| c.type_ == "Valid" && c.status == valid.0 && c.message == valid.2);
    if changed {
        st.conditions.retain(|c| c.type_ != "Valid");
        st.conditions
            .push(k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                type_: "Valid".into(),
                status: valid.0.into(),
                reason: valid.1.into(),
                message: valid.2.clone(),
                last_transition_time: Time(now),
                observed_generation: sched.metadata.generation,
            });
    }
}

/// Create the run for `tick` in `zone` (already there: nothing to do) and
/// record it; the zones turn on.
async fn start_run(
    ctx: &Ctx,
    sched: &DataCenterFailureSchedule,
    tick: Timestamp,
    zone: &str,
    st: &mut DataCenterFailureScheduleStatus,
) -> Result<()> {
    let exp = build_run(sched, tick, zone);
    let run = exp.name_any();
    match Api::<DataCenterFailure>::all(ctx.client.clone())
        .create(&PostParams::default(), &exp)
        .await
    {
        Ok(_) => {
            event(
                ctx,
                sched,
                EventType::Normal,
                "Started",
                format!("started {run}: zone {zone} goes dark"),
            )
            .await
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(Error::Kube(e)),
    }
    st.last_schedule_time = Some(Time(tick));
    st.last_experiment = Some(run);
    if !sched.spec.zones.is_empty() {
        st.next_zone_index = (st.next_zone_index + 1) % sched.spec.zones.len() as i32;
    }
    Ok(())
}

/// Status: what is running (with the run just `created`), and the verdict
/// of the newest finished run.
fn record_runs(st: &mut DataCenterFailureScheduleStatus, runs: &[RunInfo], created: bool) {
    let mut newest_finished: Vec<&RunInfo> = runs.iter().filter(|r| r.finished.is_some()).collect();
    newest_finished.sort_by_key(|r| r.created);
    if let Some(r) = newest_finished.last() {
        st.last_verdict = r.finished;
    }
    st.active = runs
        .iter()
        .filter(|r| r.finished.is_none())
        .map(|r| r.name.clone())
        .collect();
    if created {
        st.active
            .push(st.last_experiment.clone().unwrap_or_default());
        st.active.sort();
        st.active.dedup();
    }
    st.active.truncate(crate::api::MAX_LISTED);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ConcurrencyPolicy, DataCenterFailureScheduleSpec};

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn sched(schedule: &str, tz: Option<&str>, created: &str) -> DataCenterFailureSchedule {
        let spec: DataCenterFailureScheduleSpec = serde_json::from_value(serde_json::json!({
            "schedule": schedule, "timeZone": tz, "template": {"spec": {"zone": "zone-a"}}
        }))
        .unwrap();
        let mut s = DataCenterFailureSchedule::new("weekly", spec);
        s.metadata.creation_timestamp = Some(Time(ts(created)));
        s
    }

    /// Whatever the CRD's CEL rule lets through, the operator can parse and
    /// find a tick for; what it refuses, the parser refuses too (for these).
    #[test]
    fn the_cel_cron_rule_and_the_parser_agree() {
        let cel = regex::Regex::new(&crate::api::cron_pattern()).unwrap();
        let accepted = [
            "0 10 * * 3",
            "*/15 * * * *",
            "0 9-17/2 * * MON-FRI",
            "30 2 1,15 * *",
            "0 0 L * *",
            "0 0 ? * 5L",
            "0 0 ? * 1#2",
            "0 0 1 JAN *",
            "0 0 * * 7",
            "@daily",
            "@HOURLY",
            "0  0  *  *  *",
        ];
        for s in accepted {
            assert!(cel.is_match(&s.to_ascii_uppercase()), "CEL refuses {s:?}");
            assert!(crate::api::cron_ranges_ascend(s), "CEL refuses {s:?}");
            next_after(s, None, ts("2026-11-22T00:00:00Z"))
                .unwrap_or_else(|e| panic!("CEL accepts {s:?} but the operator says {e}"));
        }
        let refused = [
            "",
            "* * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 32 * *",
            "* * * 13 *",
            "* * * * 8",
            "@reboot",
            "0 0 * * * *",
            "every day",
            "1-",
            "*/x * * * *",
            "*/0 * * * *",
            "1/1 * * * *",
        ];
        for s in refused {
            assert!(!cel.is_match(&s.to_ascii_uppercase()), "CEL accepts {s:?}");
            assert!(
                next_after(s, None, ts("2026-11-22T00:00:00Z")).is_err(),
                "{s:?}"
            );
        }
        // Ranges that run downwards pass the pattern but not the ranges rule.
        for s in ["3 9 19-9 9 2", "0 22-2 * * *", "0 0 * * 5-1/2"] {
            assert!(cel.is_match(&s.to_ascii_uppercase()), "{s:?}");
            assert!(!crate::api::cron_ranges_ascend(s), "CEL accepts {s:?}");
            assert!(
                next_after(s, None, ts("2026-11-22T00:00:00Z")).is_err(),
                "{s:?}"
            );
        }
    }

    #[test]
    fn ticks_respect_the_time_zone() {
        // Wednesdays 10:00 in Seoul (UTC+9) is 01:00 UTC.
        let next =
            next_after("0 10 * * 3", Some("Asia/Seoul"), ts("2026-11-22T00:00:00Z")).unwrap();
        assert_eq!(next, ts("2026-11-25T01:00:00Z"));
        assert_eq!(
            next_after("@hourly", None, ts("2026-11-22T04:30:00Z")).unwrap(),
            ts("2026-11-22T05:00:00Z")
        );
        assert!(
            next_after(
                "0 10 * * 3",
                Some("Mars/Olympus"),
                ts("2026-11-22T00:00:00Z")
            )
            .unwrap_err()
            .contains("unknown time zone")
        );
        assert!(next_after("61 * * * *", None, ts("2026-11-22T00:00:00Z")).is_err());
    }

    #[test]
    fn creates_a_run_for_the_latest_due_tick_only() {
        let s = sched("* * * * *", None, "2026-11-22T04:00:30Z");
        let d = decide(&s, &[], ts("2026-11-22T04:05:10Z")).unwrap();
        assert_eq!(
            d.create,
            Some((ts("2026-11-22T04:05:00Z"), "zone-a".into()))
        );
        assert_eq!(d.requeue, Duration::from_secs(50));
        // Nothing due yet.
        let d = decide(&s, &[], ts("2026-11-22T04:00:50Z")).unwrap();
        assert_eq!(d.create, None);
        assert_eq!(d.requeue, Duration::from_secs(10));
    }

    #[test]
    fn forbid_skips_while_a_run_is_active_and_allow_does_not() {
        let mut s = sched("* * * * *", None, "2026-11-22T04:00:30Z");
        let active = vec![RunInfo {
            name: "weekly-1".into(),
            created: ts("2026-11-22T04:01:00Z"),
            finished: None,
        }];
        let d = decide(&s, &active, ts("2026-11-22T04:02:01Z")).unwrap();
        assert_eq!(d.create, None);
        assert!(
            d.skip
                .unwrap()
                .1
                .contains("weekly-1 still running (concurrencyPolicy Forbid)")
        );
        s.spec.concurrency_policy = ConcurrencyPolicy::Allow;
        assert!(
            decide(&s, &active, ts("2026-11-22T04:02:01Z"))
                .unwrap()
                .create
                .is_some()
        );
    }

    #[test]
    fn suspend_and_starting_deadline() {
        let mut s = sched("* * * * *", None, "2026-11-22T04:00:30Z");
        s.spec.suspend = true;
        assert_eq!(
            decide(&s, &[], ts("2026-11-22T04:05:10Z")).unwrap().create,
            None
        );
        s.spec.suspend = false;
        s.spec.starting_deadline_seconds = Some(5);
        let d = decide(&s, &[], ts("2026-11-22T04:05:10Z")).unwrap();
        assert_eq!(d.create, None);
        assert!(d.skip.unwrap().1.contains("startingDeadlineSeconds=5"));
    }

    #[test]
    fn zones_rotate_round_robin() {
        let mut s = sched("* * * * *", None, "2026-11-22T04:00:30Z");
        s.spec.zones = vec!["zone-a".into(), "zone-b".into(), "zone-c".into()];
        s.status = Some(DataCenterFailureScheduleStatus {
            next_zone_index: 4,
            ..Default::default()
        });
        let d = decide(&s, &[], ts("2026-11-22T04:01:10Z")).unwrap();
        assert_eq!(d.create.unwrap().1, "zone-b");
        let run = build_run(&s, ts("2026-11-22T04:01:00Z"), "zone-b");
        assert_eq!(run.spec.zone, "zone-b");
        assert_eq!(run.labels()[SCHEDULE_LABEL], "weekly");
        assert_eq!(
            run.name_any(),
            format!("weekly-{}", ts("2026-11-22T04:01:00Z").as_second() / 60)
        );
    }

    #[test]
    fn history_limits_delete_the_oldest_finished_runs() {
        let mut s = sched("0 3 * * *", None, "2026-11-01T00:00:00Z");
        s.spec.successful_history_limit = 1;
        s.spec.failed_history_limit = 1;
        s.status = Some(DataCenterFailureScheduleStatus {
            last_schedule_time: Some(Time(ts("2026-11-22T03:00:00Z"))),
            ..Default::default()
        });
        let run = |n: &str, day: u32, v: Option<Verdict>| RunInfo {
            name: n.into(),
            created: ts(&format!("2026-11-{day:02}T03:00:00Z")),
            finished: v,
        };
        let runs = vec![
            run("p1", 10, Some(Verdict::Passed)),
            run("p2", 11, Some(Verdict::Passed)),
            run("f1", 12, Some(Verdict::Failed)),
            run("f2", 13, Some(Verdict::Inconclusive)),
            run("live", 14, None),
        ];
        let d = decide(&s, &runs, ts("2026-11-22T04:00:00Z")).unwrap();
        assert_eq!(d.delete, ["p1", "f1"]);
    }
}
