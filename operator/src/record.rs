//! The experiment's record: one ConfigMap per experiment, in the operator's
//! namespace, owned by the experiment (deleted with it). It holds what is too
//! big for the status and must survive an operator restart:
//!
//! - `timeline.json`: the probe samples (written by the probes' field manager);
//! - `plan.json`: the nodes the plan found in the zone, so injection can tell
//!   which nodes joined or left the zone since (written by the controller's).
//!
//! It is named after the experiment's uid, not its name: an experiment name
//! may be 253 characters long, more than a ConfigMap name or a label value
//! can carry beside a prefix.

use crate::api::DataCenterFailure;
use crate::probe::Recording;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde::{Deserialize, Serialize};

/// Label on the record: the experiment's uid.
pub const UID_LABEL: &str = "chaos.firedrill.dev/experiment-uid";
/// Annotation on the record: the experiment's name, for people.
pub const NAME_ANNOTATION: &str = "chaos.firedrill.dev/experiment";

const TIMELINE_KEY: &str = "timeline.json";
const PLAN_KEY: &str = "plan.json";

/// The record's name.
pub fn name(uid: &str) -> String {
    format!("firedrill-{uid}")
}

/// What planning recorded.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedNodes {
    pub nodes: Vec<String>,
}

async fn apply_key(
    client: &Client,
    ns: &str,
    obj: &DataCenterFailure,
    manager: &str,
    key: &str,
    value: String,
) -> kube::Result<()> {
    let uid = obj.uid().unwrap_or_default();
    let owner = obj
        .controller_owner_ref(&())
        .map(|r| vec![r])
        .unwrap_or_default();
    let cm = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name(&uid),
            "namespace": ns,
            "labels": {"app.kubernetes.io/managed-by": "firedrill", UID_LABEL: uid},
            "annotations": {NAME_ANNOTATION: obj.name_any()},
            "ownerReferences": owner,
        },
        "data": {key: value},
    });
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .patch(
            &name(&uid),
            &PatchParams::apply(manager).force(),
            &Patch::Apply(&cm),
        )
        .await?;
    Ok(())
}

async fn get(client: &Client, ns: &str, uid: &str) -> kube::Result<Option<ConfigMap>> {
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(&name(uid))
        .await
}

fn key<T: for<'de> Deserialize<'de>>(cm: &ConfigMap, key: &str) -> Option<T> {
    serde_json::from_str(cm.data.as_ref()?.get(key)?).ok()
}

/// Save the probe samples.
pub async fn save_timeline(
    client: &Client,
    ns: &str,
    obj: &DataCenterFailure,
    rec: &Recording,
) -> kube::Result<()> {
    let text = serde_json::to_string(rec).unwrap();
    apply_key(client, ns, obj, "firedrill-probes", TIMELINE_KEY, text).await
}

/// The saved probe samples (empty when there are none).
pub async fn load_timeline(client: &Client, ns: &str, uid: &str) -> kube::Result<Recording> {
    Ok(get(client, ns, uid)
        .await?
        .and_then(|cm| key(&cm, TIMELINE_KEY))
        .unwrap_or_default())
}

/// Save the nodes the plan found in the zone.
pub async fn save_planned_nodes(
    client: &Client,
    ns: &str,
    obj: &DataCenterFailure,
    nodes: &[String],
) -> kube::Result<()> {
    let text = serde_json::to_string(&PlannedNodes {
        nodes: nodes.to_vec(),
    })
    .unwrap();
    apply_key(client, ns, obj, crate::api::MANAGER, PLAN_KEY, text).await
}

/// The nodes the plan found, if planning recorded them.
pub async fn load_planned_nodes(
    client: &Client,
    ns: &str,
    uid: &str,
) -> kube::Result<Option<PlannedNodes>> {
    Ok(get(client, ns, uid)
        .await?
        .and_then(|cm| key(&cm, PLAN_KEY)))
}

/// The probe samples of an experiment, wherever the operator keeps them (for
/// the command line, which does not know the operator's namespace).
pub async fn find_timeline(client: &Client, uid: &str) -> Recording {
    let lp = ListParams::default().labels(&format!(
        "{UID_LABEL}={uid},app.kubernetes.io/managed-by=firedrill"
    ));
    let Ok(list) = Api::<ConfigMap>::all(client.clone()).list(&lp).await else {
        return Recording::default();
    };
    list.items
        .iter()
        .find_map(|cm| key(cm, TIMELINE_KEY))
        .unwrap_or_default()
}
