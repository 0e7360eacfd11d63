//! `DataCenterFailureSchedule`: game days on a cron schedule, the way a
//! CronJob creates Jobs.

use super::experiment::{DataCenterFailureSpec, Verdict};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The CEL rule for a cron schedule: five fields, each a list of values,
/// `*` or ranges (these two with an optional `/step` of at least 1), every
/// value in its field's range; or one of the `@` names. Matched against the
/// upper-cased value.
pub fn cron_rule() -> String {
    format!("self.upperAscii().matches('{}')", cron_pattern())
}

/// The CEL rule that every numeric range in a cron schedule runs upwards
/// (`9-17`, not `19-9`): the parser refuses the others. Mirrored by
/// [`cron_ranges_ascend`].
pub const CRON_RANGES_RULE: &str =
    "self.findAll('[0-9]+-[0-9]+').all(r, int(r.split('-')[0]) <= int(r.split('-')[1]))";

/// [`CRON_RANGES_RULE`] in Rust, for schedules that match [`cron_pattern`]
/// (where every `digits-digits` is a whole range item).
pub fn cron_ranges_ascend(schedule: &str) -> bool {
    schedule.split(' ').all(|f| {
        f.split(',').all(|i| {
            let range = i.split('/').next().unwrap_or("");
            match range.split_once('-') {
                Some((a, b))
                    if !a.is_empty()
                        && !b.is_empty()
                        && a.bytes().all(|c| c.is_ascii_digit())
                        && b.bytes().all(|c| c.is_ascii_digit()) =>
                {
                    match (a.parse::<u64>(), b.parse::<u64>()) {
                        (Ok(a), Ok(b)) => a <= b,
                        _ => false,
                    }
                }
                _ => true,
            }
        })
    })
}

/// The regular expression behind [`cron_rule`] (RE2 syntax, as CEL uses).
pub fn cron_pattern() -> String {
    fn field(v: &str) -> String {
        // `*` or a range, each with an optional step of at least 1; or one value.
        let item = format!("(([*]|{v}-{v})(/0*[1-9][0-9]*)?|{v})");
        format!("{item}(,{item})*")
    }
    let minute = field("[0-5]?[0-9]");
    let hour = field("([01]?[0-9]|2[0-3])");
    let dom = format!("([?]|L|{})", field("(0?[1-9]|[12][0-9]|3[01])"));
    let month = field("(0?[1-9]|1[0-2]|JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC)");
    let dow = format!(
        "([?]|[0-7]L|[0-7]#[1-5]|{})",
        field("([0-7]|SUN|MON|TUE|WED|THU|FRI|SAT)")
    );
    format!(
        "^(@(ANNUALLY|YEARLY|MONTHLY|WEEKLY|DAILY|MIDNIGHT|HOURLY)|{minute} +{hour} +{dom} +{month} +{dow})$"
    )
}

/// The time zone database schedules are read in: the one bundled into the
/// binary, so the CRD and the operator agree wherever either runs (the
/// system's, if any, may differ by release and holds names like `localtime`).
pub fn time_zones() -> &'static jiff::tz::TimeZoneDatabase {
    static DB: std::sync::LazyLock<jiff::tz::TimeZoneDatabase> =
        std::sync::LazyLock::new(jiff::tz::TimeZoneDatabase::bundled);
    &DB
}

/// The CEL rule for a time zone: one of the names in [`time_zones`].
pub fn time_zone_rule() -> String {
    let mut names: Vec<String> = time_zones()
        .available()
        .map(|n| n.as_str().to_string())
        .filter(|n| n != "Local")
        .collect();
    names.sort();
    let list = names
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(",");
    format!("self in [{list}]")
}

/// Creates a `DataCenterFailure` from `template` at every tick of `schedule`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "chaos.firedrill.dev",
    version = "v1alpha1",
    kind = "DataCenterFailureSchedule",
    shortname = "dcfs",
    category = "chaos",
    status = "DataCenterFailureScheduleStatus",
    doc = "Game days on a schedule: creates a DataCenterFailure from a template at every tick.",
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(name = "Suspend", type_ = "boolean", json_path = ".spec.suspend"),
    printcolumn(
        name = "Last Schedule",
        type_ = "date",
        json_path = ".status.lastScheduleTime"
    ),
    printcolumn(
        name = "Last Verdict",
        type_ = "string",
        json_path = ".status.lastVerdict"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Problem",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Valid\")].message"
    ),
    validation = Rule::new("self.metadata.name.size() <= 52").message("a schedule's name is at most 52 characters: each run is named <schedule>-<minute> and labelled with the schedule's name, and a label value holds 63")
)]
#[serde(rename_all = "camelCase")]
pub struct DataCenterFailureScheduleSpec {
    /// Standard 5-field cron (`minute hour day-of-month month day-of-week`) or
    /// one of `@hourly`, `@daily`, `@midnight`, `@weekly`, `@monthly`, `@yearly`, `@annually`.
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(
        validation = Rule::new("!self.contains('TZ=')").message("set the time zone in spec.timeZone, not in the schedule"),
        validation = Rule::new(cron_rule()).message("schedule must be 5 cron fields in range: minute 0-59, hour 0-23, day of month 1-31, month 1-12 or JAN-DEC, day of week 0-7 or SUN-SAT (or @hourly, @daily, @weekly, @monthly, @yearly); a /step of at least 1, only after * or a range"),
        validation = Rule::new(CRON_RANGES_RULE).message("a range in the schedule must run upwards, like 9-17")
    )]
    pub schedule: String,

    /// IANA time zone name for the schedule, e.g. `Europe/Berlin`. Default: UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new(time_zone_rule()).message("timeZone must be an IANA time zone name such as UTC or Asia/Seoul"))]
    pub time_zone: Option<String>,

    /// Create no new experiments while true; running ones are not touched.
    #[serde(default)]
    pub suspend: bool,

    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,

    /// A tick missed by more than this many seconds is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub starting_deadline_seconds: Option<i64>,

    /// How many finished experiments that Passed to keep.
    #[serde(default = "default_successful_history")]
    #[schemars(range(min = 0, max = 100))]
    pub successful_history_limit: i32,

    /// How many finished experiments that did not pass to keep.
    #[serde(default = "default_failed_history")]
    #[schemars(range(min = 0, max = 100))]
    pub failed_history_limit: i32,

    /// Zone rotation: when set, each run takes the next zone of this list,
    /// round-robin, instead of `template.spec.zone`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 253)))]
    pub zones: Vec<String>,

    /// The experiment each run creates.
    pub template: ExperimentTemplate,
}

fn default_successful_history() -> i32 {
    3
}
fn default_failed_history() -> i32 {
    1
}

#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum ConcurrencyPolicy {
    /// Skip a run while an experiment of this schedule is still running.
    #[default]
    Forbid,
    /// Start runs regardless of running ones.
    Allow,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMetadata>,
    pub spec: DataCenterFailureSpec,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DataCenterFailureScheduleStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_experiment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verdict: Option<Verdict>,
    /// Experiments of this schedule that have not finished.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active: Vec<String>,
    /// Index into `spec.zones` of the zone the next run takes.
    #[serde(default)]
    pub next_zone_index: i32,
    /// `Valid`: False with the reason when the schedule cannot be read
    /// (what the schema cannot check); no run is created then.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
}
