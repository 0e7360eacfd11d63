//! Events: every Kubernetes Event firedrill writes goes through [`publish`]
//! and the one shared `Recorder` of the process (a recorder per reconcile
//! would defeat the API server's event aggregation).

use kube::runtime::events::{Event, EventType, Recorder};

/// Publish an Event through the one shared recorder. Notes over 1 kB are
/// rejected by the API server, so longer ones are cut.
pub async fn publish(
    recorder: &Recorder,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
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
    if let Err(e) = recorder.publish(&ev, reference).await {
        tracing::warn!(error = %e, "cannot publish event");
    }
}
