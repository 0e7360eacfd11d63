//! Events: every Kubernetes Event firedrill writes goes through [`publish`]
//! and the one shared [`Events`] of the process (a recorder per reconcile
//! would defeat the API server's event aggregation).
//!
//! kube's `Recorder` names an Event `<object name>.<time in hex>`, which
//! passes the API server's 253-character limit only for names of up to 236
//! characters. Events about an object with a longer name are written here
//! instead, under a name cut to fit (see [`event_name`]), with the same
//! fields and the same aggregation into a series of repeats.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, ResourceExt};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The longest name of an object or an Event (a DNS subdomain).
pub const MAX_NAME: usize = 253;

/// How long a repeat of an Event written here is added to its series rather
/// than written anew.
const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);

/// The process's Event writer: kube's recorder, and the writer of Events
/// about objects whose names are too long for it.
pub struct Events {
    recorder: Recorder,
    client: Client,
    reporter: Reporter,
    /// Events written here, by what makes a repeat the same Event: their
    /// name, their count, and when they were last seen.
    long: tokio::sync::Mutex<HashMap<SeriesKey, (String, i32, Instant)>>,
}

#[derive(Hash, PartialEq, Eq)]
struct SeriesKey {
    regarding: String,
    type_: &'static str,
    reason: String,
    note: String,
}

impl Events {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Events {
            recorder: Recorder::new(client.clone(), reporter.clone()),
            client,
            reporter,
            long: Default::default(),
        }
    }

    async fn publish(&self, ev: &Event, reference: &ObjectReference) -> kube::Result<()> {
        let name = reference.name.as_deref().unwrap_or("");
        if name.len() + 1 + HEX_DIGITS <= MAX_NAME {
            return self.recorder.publish(ev, reference).await;
        }
        self.publish_long(ev, reference).await
    }

    /// An Event about an object whose name leaves no room for kube's.
    async fn publish_long(&self, ev: &Event, reference: &ObjectReference) -> kube::Result<()> {
        let type_ = match ev.type_ {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        };
        let key = SeriesKey {
            regarding: reference
                .uid
                .clone()
                .or_else(|| reference.name.clone())
                .unwrap_or_default(),
            type_,
            reason: ev.reason.clone(),
            note: ev.note.clone().unwrap_or_default(),
        };
        let namespace = reference.namespace.as_deref().unwrap_or("default");
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), namespace);
        let now = Timestamp::now();
        let mut long = self.long.lock().await;
        long.retain(|_, (_, _, seen)| seen.elapsed() < SERIES_WINDOW);
        if let Some((name, count, seen)) = long.get_mut(&key) {
            let series = EventSeries {
                count: *count + 1,
                last_observed_time: MicroTime(now),
            };
            let patch = serde_json::json!({ "series": series });
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            *count += 1;
            *seen = Instant::now();
            return Ok(());
        }
        let nanos = now.as_nanosecond();
        let event = K8sEvent {
            metadata: ObjectMeta {
                name: Some(event_name(reference.name.as_deref().unwrap_or(""), nanos)),
                namespace: Some(namespace.to_string()),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            note: ev.note.clone(),
            regarding: Some(reference.clone()),
            related: ev.secondary.clone(),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            type_: Some(type_.to_string()),
            ..Default::default()
        };
        let created = api.create(&PostParams::default(), &event).await?;
        long.insert(key, (created.name_any(), 1, Instant::now()));
        Ok(())
    }
}

/// Hex digits of a time in nanoseconds since 1970 (16 until the year 2554).
const HEX_DIGITS: usize = 16;

/// The name of an Event about the object `name`, written at `nanos`:
/// `<name>.<nanos in hex>` when that fits in 253 characters; else the name
/// cut short, a hash of the whole name (two long names that share the kept
/// part still differ), and the time: `<cut name>-<hash>.<nanos in hex>`.
/// Always a valid DNS subdomain for a name that is one.
pub fn event_name(name: &str, nanos: i128) -> String {
    let time = format!("{nanos:x}");
    if name.len() + 1 + time.len() <= MAX_NAME {
        return format!("{name}.{time}");
    }
    let hash = format!("{:08x}", fnv1a(name.as_bytes()));
    let mut keep = MAX_NAME - 1 - time.len() - 1 - hash.len();
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    // A DNS subdomain's labels end in a letter or digit.
    let cut = name[..keep].trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    format!("{cut}-{hash}.{time}")
}

/// The 32-bit FNV-1a hash.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h: u32, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// Publish an Event through the one shared writer. Notes over 1 kB are
/// rejected by the API server, so longer ones are cut.
pub async fn publish(
    events: &Events,
    reference: &ObjectReference,
    type_: EventType,
    reason: &str,
    mut note: String,
) {
    if note.len() > 1000 {
        let mut cut = 997;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
        note.push_str("...");
    }
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: reason.into(),
        secondary: None,
    };
    if let Err(e) = events.publish(&ev, reference).await {
        tracing::warn!(error = %e, "cannot publish event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DNS subdomain as the API server checks an object's name.
    fn is_subdomain(s: &str) -> bool {
        s.len() <= MAX_NAME
            && s.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && label.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && label.ends_with(|c: char| c.is_ascii_alphanumeric())
            })
    }

    const NOW: i128 = 1_790_000_000_123_456_789;

    #[test]
    fn a_name_that_fits_is_named_as_kube_names_it() {
        assert_eq!(event_name("drill", NOW), format!("drill.{NOW:x}"));
        let fits = "a".repeat(MAX_NAME - 1 - HEX_DIGITS);
        assert_eq!(event_name(&fits, NOW), format!("{fits}.{NOW:x}"));
        assert_eq!(format!("{NOW:x}").len(), HEX_DIGITS);
    }

    #[test]
    fn events_of_a_253_character_name_get_a_valid_name_of_their_own() {
        let long = format!("long-{}", "x".repeat(248));
        assert_eq!(long.len(), 253);
        let name = event_name(&long, NOW);
        assert!(name.len() <= MAX_NAME, "{} characters", name.len());
        assert!(is_subdomain(&name), "{name}");
        assert!(name.starts_with("long-xxxx"), "{name}");
        assert!(name.ends_with(&format!(".{NOW:x}")), "{name}");
        // Another long name sharing the kept part gets another name.
        let other = format!("{}y", &long[..252]);
        assert_ne!(event_name(&other, NOW), name);
        // A later event of the same object too.
        assert_ne!(event_name(&long, NOW + 1), name);
    }

    #[test]
    fn a_cut_never_leaves_a_dot_or_dash_before_the_hash() {
        // A dot, then a dash, where the cut falls.
        for at in 215..235 {
            let mut n: Vec<u8> = "a".repeat(253).into_bytes();
            n[at] = b'.';
            n[at + 2] = b'-';
            n[at + 3] = b'-';
            let n = String::from_utf8(n).unwrap();
            assert!(is_subdomain(&n), "{n}");
            let name = event_name(&n, NOW);
            assert!(is_subdomain(&name), "{name}");
        }
    }
}
