//! One zone dark at a time, race-free.
//!
//! Checking "is another experiment active?" against a list of experiments is
//! a race: two experiments created at the same instant both see none. So an
//! experiment *claims* its turn on one shared object, a Lease in the
//! operator's namespace, with a resourceVersion-conditional write, before it
//! touches anything; of two claims written at once, one gets a conflict and
//! re-reads, and then sees the other. Claims of experiments that no longer
//! exist or have ended are pruned on every claim, so a crash cannot leak one.

use crate::api::DataCenterFailure;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The Lease that holds the claims.
pub const LEASE_NAME: &str = "firedrill-drills";
/// Its annotation: JSON map of experiment uid → [`Claim`].
pub const CLAIMS_ANNOTATION: &str = "chaos.firedrill.dev/drills";

/// One experiment's claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub name: String,
    pub zone: String,
    /// Wants to be the only active experiment (`guards.allowOverlap: false`).
    pub exclusive: bool,
}

pub type Claims = BTreeMap<String, Claim>;

/// Whether `me` (uid) may hold a turn beside `claims`. Pure. Err names the
/// experiments in the way.
pub fn may_claim(claims: &Claims, uid: &str, me: &Claim) -> Result<(), Vec<String>> {
    let blocking: Vec<String> = claims
        .iter()
        .filter(|(other, c)| other.as_str() != uid && (c.exclusive || me.exclusive))
        .map(|(_, c)| format!("{} (zone {})", c.name, c.zone))
        .collect();
    if blocking.is_empty() {
        Ok(())
    } else {
        Err(blocking)
    }
}

fn read(lease: &Lease) -> Claims {
    lease
        .annotations()
        .get(CLAIMS_ANNOTATION)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default()
}

/// Drop claims whose experiment is gone (or another of that name) or ended.
async fn prune(client: &Client, claims: &mut Claims, keep: &str) -> kube::Result<()> {
    let api = Api::<DataCenterFailure>::all(client.clone());
    let mut gone = vec![];
    for (uid, c) in claims.iter() {
        if uid == keep {
            continue;
        }
        let live = api.get_opt(&c.name).await?.is_some_and(|e| {
            e.uid().as_deref() == Some(uid.as_str())
                && !e
                    .status
                    .and_then(|s| s.phase)
                    .is_some_and(|p| p.is_terminal())
        });
        if !live {
            gone.push(uid.clone());
        }
    }
    for uid in gone {
        claims.remove(&uid);
    }
    Ok(())
}

/// Write `claims` into the Lease (creating it), conditional on `lease`'s
/// resourceVersion. Ok(false) on a conflict: someone else wrote first.
async fn write(
    api: &Api<Lease>,
    ns: &str,
    lease: Option<Lease>,
    claims: &Claims,
) -> kube::Result<bool> {
    let text = serde_json::to_string(claims).unwrap();
    let result = match lease {
        Some(mut l) => {
            l.annotations_mut().insert(CLAIMS_ANNOTATION.into(), text);
            api.replace(LEASE_NAME, &PostParams::default(), &l).await
        }
        None => {
            let l = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.into()),
                    namespace: Some(ns.into()),
                    labels: Some([("app.kubernetes.io/name".into(), "firedrill".into())].into()),
                    annotations: Some([(CLAIMS_ANNOTATION.into(), text)].into()),
                    ..Default::default()
                },
                spec: None,
            };
            api.create(&PostParams::default(), &l).await
        }
    };
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Claim a turn for the experiment `uid`. Ok(Err(blocking)) when others hold
/// turns that exclude it; idempotent when it already holds one.
pub async fn claim(
    client: &Client,
    ns: &str,
    uid: &str,
    me: &Claim,
) -> kube::Result<Result<(), Vec<String>>> {
    let api = Api::<Lease>::namespaced(client.clone(), ns);
    loop {
        let lease = api.get_opt(LEASE_NAME).await?;
        let mut claims = lease.as_ref().map(read).unwrap_or_default();
        if claims.get(uid) == Some(me) {
            return Ok(Ok(()));
        }
        prune(client, &mut claims, uid).await?;
        if let Err(blocking) = may_claim(&claims, uid, me) {
            return Ok(Err(blocking));
        }
        claims.insert(uid.to_string(), me.clone());
        if write(&api, ns, lease, &claims).await? {
            return Ok(Ok(()));
        }
    }
}

/// Give the experiment's turn back (nothing to do when it holds none).
pub async fn release(client: &Client, ns: &str, uid: &str) -> kube::Result<()> {
    let api = Api::<Lease>::namespaced(client.clone(), ns);
    loop {
        let Some(lease) = api.get_opt(LEASE_NAME).await? else {
            return Ok(());
        };
        let mut claims = read(&lease);
        if claims.remove(uid).is_none() {
            return Ok(());
        }
        if write(&api, ns, Some(lease), &claims).await? {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, zone: &str, exclusive: bool) -> Claim {
        Claim {
            name: name.into(),
            zone: zone.into(),
            exclusive,
        }
    }

    #[test]
    fn an_exclusive_claim_excludes_every_other_and_is_excluded_by_any() {
        let mut held = Claims::new();
        assert_eq!(may_claim(&held, "u1", &c("a", "zone-a", true)), Ok(()));
        held.insert("u1".into(), c("a", "zone-a", true));
        assert_eq!(
            may_claim(&held, "u2", &c("b", "zone-b", true)),
            Err(vec!["a (zone zone-a)".to_string()])
        );
        assert!(
            may_claim(&held, "u2", &c("b", "zone-b", false)).is_err(),
            "an overlapping experiment may not join an exclusive one"
        );
        assert_eq!(
            may_claim(&held, "u1", &c("a", "zone-a", true)),
            Ok(()),
            "its own claim never blocks it"
        );
    }

    #[test]
    fn overlapping_experiments_run_together() {
        let mut held = Claims::new();
        held.insert("u1".into(), c("a", "zone-a", false));
        assert_eq!(may_claim(&held, "u2", &c("b", "zone-b", false)), Ok(()));
        assert!(may_claim(&held, "u2", &c("b", "zone-b", true)).is_err());
    }
}
