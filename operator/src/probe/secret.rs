//! Reading the value a probe's SecretKeyRef names. The value stays in memory:
//! errors name the Secret and key, never what is in it.

use super::Policy;
use crate::api::SecretKeyRef;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;

/// The text under `r`, if the policy lets probes read Secrets in its namespace.
pub(super) async fn secret_value(
    client: &Client,
    p: &Policy,
    r: &SecretKeyRef,
) -> Result<String, String> {
    if !p.secret_namespaces.contains(&r.namespace) {
        return Err(format!(
            "secret {}/{}: probes read Secrets only in the namespaces the operator was installed for",
            r.namespace, r.name
        ));
    }
    let secret = Api::<Secret>::namespaced(client.clone(), &r.namespace)
        .get_opt(&r.name)
        .await
        .map_err(|e| format!("reading secret {}/{}: {e}", r.namespace, r.name))?
        .ok_or_else(|| format!("secret {}/{} not found", r.namespace, r.name))?;
    let bytes = secret
        .data
        .and_then(|d| d.get(&r.key).cloned())
        .ok_or_else(|| format!("secret {}/{} has no key {}", r.namespace, r.name, r.key))?;
    String::from_utf8(bytes.0)
        .map(|s| s.trim_end_matches('\n').to_string())
        .map_err(|_| {
            format!(
                "secret {}/{} key {} is not text",
                r.namespace, r.name, r.key
            )
        })
}
