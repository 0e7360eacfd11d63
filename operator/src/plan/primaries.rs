//! Where the primaries of replicated stores sit: a store's operator labels
//! the pod that takes its writes (CloudNativePG, Patroni/Spilo as the
//! Zalando operator runs it, the Spotahome Redis failover), and a drill may
//! name more labels (`spec.primaryLabels`). A primary in the dark zone
//! means a failover, and a failover may lose acknowledged writes that only
//! a write probe can see; the plan says so before anything is touched.

use super::PodInfo;

/// A label that marks a store's primary, what kind of store it is, and the
/// label naming the store's cluster.
struct Known {
    key: &'static str,
    value: &'static str,
    store: &'static str,
    cluster: &'static str,
}

const KNOWN: [Known; 3] = [
    Known {
        key: "cnpg.io/instanceRole",
        value: "primary",
        store: "CloudNativePG cluster",
        cluster: "cnpg.io/cluster",
    },
    Known {
        key: "spilo-role",
        value: "master",
        store: "Patroni cluster",
        cluster: "cluster-name",
    },
    Known {
        key: "redisfailovers-role",
        value: "master",
        store: "Redis failover",
        cluster: "redisfailovers.databases.spotahome.com/name",
    },
];

/// A warning for each primary among `pods` (the in-scope pods on the
/// zone's nodes), by the known labels and the drill's own `extra` ones
/// (`key`, `value`).
pub fn primaries(pods: &[&PodInfo], extra: &[(String, String)], zone: &str) -> Vec<String> {
    let mut out = vec![];
    for pod in pods {
        let has = |k: &str, v: &str| pod.labels.get(k).is_some_and(|x| x == v);
        let named = KNOWN.iter().find(|k| has(k.key, k.value)).map(|k| {
            let cluster = pod.labels.get(k.cluster).map(String::as_str).unwrap_or("?");
            format!("{} {}/{cluster}", k.store, pod.namespace)
        });
        let named = named.or_else(|| {
            extra
                .iter()
                .find(|(k, v)| has(k, v))
                .map(|(k, v)| format!("the store labelled {k}={v}"))
        });
        if let Some(store) = named {
            out.push(format!(
                "primary of {store} in {zone} (pod {}): failover expected; measure it with a write probe",
                pod.key()
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn pod(name: &str, labels: &[(&str, &str)]) -> PodInfo {
        PodInfo {
            namespace: "pay".into(),
            name: name.into(),
            labels: std::sync::Arc::new(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn the_primaries_of_known_operators_and_of_a_label_of_the_drills_are_named() {
        let pods = [
            pod(
                "pg-1",
                &[
                    ("cnpg.io/instanceRole", "primary"),
                    ("cnpg.io/cluster", "pg"),
                ],
            ),
            pod(
                "pg-2",
                &[
                    ("cnpg.io/instanceRole", "replica"),
                    ("cnpg.io/cluster", "pg"),
                ],
            ),
            pod(
                "ledger-0",
                &[("spilo-role", "master"), ("cluster-name", "ledger")],
            ),
            pod(
                "ledger-1",
                &[("spilo-role", "replica"), ("cluster-name", "ledger")],
            ),
            pod(
                "rfr-cache-0",
                &[
                    ("redisfailovers-role", "master"),
                    ("redisfailovers.databases.spotahome.com/name", "cache"),
                ],
            ),
            pod("kv-0", &[("example.com/role", "leader")]),
            pod("web-1", &[("app", "web")]),
        ];
        let refs: Vec<&PodInfo> = pods.iter().collect();
        let extra = [("example.com/role".to_string(), "leader".to_string())];
        assert_eq!(
            primaries(&refs, &extra, "zone-a"),
            [
                "primary of CloudNativePG cluster pay/pg in zone-a (pod pay/pg-1): failover expected; measure it with a write probe",
                "primary of Patroni cluster pay/ledger in zone-a (pod pay/ledger-0): failover expected; measure it with a write probe",
                "primary of Redis failover pay/cache in zone-a (pod pay/rfr-cache-0): failover expected; measure it with a write probe",
                "primary of the store labelled example.com/role=leader in zone-a (pod pay/kv-0): failover expected; measure it with a write probe",
            ]
        );
        // Without the drill's label the last is not a primary.
        assert_eq!(primaries(&refs, &[], "zone-a").len(), 3);
    }
}
