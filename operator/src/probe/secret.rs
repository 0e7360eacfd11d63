//! Reading the value a probe's SecretKeyRef names. The value stays in memory:
//! errors name the Secret and key, never what is in it.
//!
//! A Secret that a probe sends somewhere (a header value, a bearer token)
//! must consent to it: its annotation [`CONSENT_ANNOTATION`] lists the hosts
//! it may be sent to. Whoever can create a DataCenterFailure can name any
//! Secret of a namespace the operator may read; only the Secret's owner can
//! say where its value goes. A CA bundle is not sent anywhere and needs no
//! consent.

use super::{Env, Policy};
use crate::api::{DataCenterFailureSpec, SecretKeyRef};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};

/// On a Secret: the hosts (comma-separated, as written in probe URLs) its
/// value may be sent to by probes.
pub const CONSENT_ANNOTATION: &str = "chaos.firedrill.dev/probe-hosts";

/// The text under `r`, if the policy lets probes read Secrets in its
/// namespace and, when the value is to be sent to host `to`, the Secret
/// consents to that host.
pub(super) async fn secret_value(
    client: &Client,
    p: &Policy,
    r: &SecretKeyRef,
    to: Option<&str>,
) -> Result<String, String> {
    let secret = read(client, p, r).await.map_err(|e| match e {
        ReadError::Refused(why) => why,
        ReadError::Api(e) => format!("reading secret {}/{}: {e}", r.namespace, r.name),
    })?;
    if let Some(host) = to {
        consents(&secret, r, host)?;
    }
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

/// Reading a Secret: refused (by the policy, or it is missing or
/// forbidden), or the API server did not answer (worth retrying).
enum ReadError {
    Refused(String),
    Api(kube::Error),
}

async fn read(client: &Client, p: &Policy, r: &SecretKeyRef) -> Result<Secret, ReadError> {
    let (ns, name) = (&r.namespace, &r.name);
    if !p.secret_namespaces.contains(ns) {
        return Err(ReadError::Refused(format!(
            "secret {ns}/{name}: probes read Secrets only in the namespaces the operator was installed for"
        )));
    }
    match Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
    {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(ReadError::Refused(format!("secret {ns}/{name} not found"))),
        Err(kube::Error::Api(e)) if e.code == 403 => Err(ReadError::Refused(format!(
            "the operator may not read secret {ns}/{name}: {}",
            e.message
        ))),
        Err(e) => Err(ReadError::Api(e)),
    }
}

/// The Secrets a spec sends somewhere: (field, Secret, the host it goes to).
pub fn sent_secrets(spec: &DataCenterFailureSpec) -> Vec<(String, &SecretKeyRef, String)> {
    let mut out = vec![];
    for (i, slo) in spec.slos.iter().enumerate() {
        let at = format!("spec.slos[{i}].probe");
        if let Some(h) = &slo.probe.http {
            let host = super::policy::url_target(&h.url).0;
            for (j, hd) in h.headers.iter().enumerate() {
                if let Some(v) = &hd.value_from {
                    out.push((
                        format!("{at}.http.headers[{j}].valueFrom.secretKeyRef"),
                        &v.secret_key_ref,
                        host.clone(),
                    ));
                }
            }
        }
        if let Some(w) = &slo.probe.write {
            let host = super::policy::url_target(&w.url).0;
            for (j, hd) in w.headers.iter().enumerate() {
                if let Some(v) = &hd.value_from {
                    out.push((
                        format!("{at}.write.headers[{j}].valueFrom.secretKeyRef"),
                        &v.secret_key_ref,
                        host.clone(),
                    ));
                }
            }
        }
        if let Some(pr) = &slo.probe.prometheus
            && let Some(r) = &pr.bearer_token_secret_ref
        {
            let host = super::policy::url_target(&pr.url).0;
            out.push((format!("{at}.prometheus.bearerTokenSecretRef"), r, host));
        }
    }
    out
}

/// A host as compared: the host of `http://<host>/` as the URL parser
/// writes it (lower case, IDNA, IPv6 in brackets, shortest form), without a
/// port. A trailing dot is kept: `api.shop.` is an absolute name, looked up
/// outside the cluster's search domains, and is not `api.shop`.
fn normal(host: &str) -> String {
    let host = host.trim();
    // A bare IPv6 address (two colons or more) is written in brackets.
    let host = if !host.starts_with('[') && host.matches(':').count() > 1 {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    reqwest::Url::parse(&format!("http://{host}/"))
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| host.to_ascii_lowercase())
}

/// The hosts a Secret's annotation lists.
pub fn consented_hosts(secret: &Secret) -> Vec<String> {
    secret
        .annotations()
        .get(CONSENT_ANNOTATION)
        .map(|v| {
            v.split([',', ' ', '\n', '\t'])
                .map(normal)
                .filter(|h| !h.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Ok when the Secret lists `host`; otherwise what to do about it.
fn consents(secret: &Secret, r: &SecretKeyRef, host: &str) -> Result<(), String> {
    let listed = consented_hosts(secret);
    if !host.is_empty() && listed.contains(&normal(host)) {
        return Ok(());
    }
    let now = if listed.is_empty() {
        "it has no such annotation".to_string()
    } else {
        format!("it lists {}", listed.join(", "))
    };
    Err(format!(
        "secret {}/{} may not be sent to {host}: its owner must list that host in the annotation {CONSENT_ANNOTATION} ({now})",
        r.namespace, r.name
    ))
}

/// Before anything is touched: every Secret the spec sends somewhere exists
/// and consents to where it goes. Ok(Err) is a refusal naming the field and
/// what to do; Err is the API server failing to answer, to be retried.
pub async fn check_consent(
    client: &Client,
    spec: &DataCenterFailureSpec,
    env: &Env,
) -> kube::Result<Result<(), String>> {
    for (field, r, host) in sent_secrets(spec) {
        if !env.policy().secret_namespaces.contains(&r.namespace) {
            continue; // refused already, by the policy check of the spec
        }
        let secret = match read(client, env.policy(), r).await {
            Ok(s) => s,
            Err(ReadError::Refused(why)) => return Ok(Err(format!("{field}: {why}"))),
            Err(ReadError::Api(e)) => return Err(e),
        };
        if let Err(e) = consents(&secret, r, &host) {
            return Ok(Err(format!("{field}: {e}")));
        }
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(annotation: Option<&str>) -> Secret {
        let mut s = Secret::default();
        if let Some(a) = annotation {
            s.metadata.annotations = Some([(CONSENT_ANNOTATION.to_string(), a.to_string())].into());
        }
        s
    }

    fn r() -> SecretKeyRef {
        SecretKeyRef {
            namespace: "auth".into(),
            name: "token".into(),
            key: "t".into(),
        }
    }

    #[test]
    fn a_secret_goes_only_to_the_hosts_its_annotation_lists() {
        let s = secret(Some(
            "login.auth.svc, Login.Auth.svc.cluster.local,[::1]:8443 0:0:0:0:0:0:0:2,bücher.example",
        ));
        // Hosts as the URL parser writes a probe URL's host.
        assert!(consents(&s, &r(), "login.auth.svc").is_ok());
        assert!(consents(&s, &r(), "login.auth.svc.cluster.local").is_ok());
        assert!(consents(&s, &r(), "[::1]").is_ok());
        assert!(consents(&s, &r(), "[::2]").is_ok());
        assert!(consents(&s, &r(), "xn--bcher-kva.example").is_ok());
        let err = consents(&s, &r(), "catcher.evil.example").unwrap_err();
        assert!(
            err.contains("may not be sent to catcher.evil.example"),
            "{err}"
        );
        assert!(
            err.contains("it lists login.auth.svc, login.auth.svc.cluster.local, [::1], [::2], xn--bcher-kva.example"),
            "{err}"
        );
        // An absolute name is looked up outside the cluster: not the same host.
        assert!(consents(&s, &r(), "login.auth.svc.").is_err());
        // A suffix or a prefix is not the host.
        assert!(consents(&s, &r(), "auth.svc").is_err());
        assert!(consents(&s, &r(), "login.auth.svc.evil").is_err());
    }

    #[test]
    fn a_secret_without_the_annotation_goes_nowhere() {
        let err = consents(&secret(None), &r(), "login.auth.svc").unwrap_err();
        assert!(err.contains("it has no such annotation"), "{err}");
        assert!(consents(&secret(Some("")), &r(), "").is_err());
    }

    #[test]
    fn headers_and_bearer_tokens_are_sent_a_ca_is_not() {
        let spec: DataCenterFailureSpec = serde_json::from_value(serde_json::json!({
            "zone": "zone-a", "duration": "1m",
            "slos": [
                {"name": "a", "recoveryTimeObjective": "30s", "probe": {"http": {
                    "url": "https://Login.auth.svc:8443/healthz",
                    "headers": [{"name": "Authorization", "valueFrom": {"secretKeyRef": {"namespace": "auth", "name": "h", "key": "k"}}}],
                    "tls": {"caSecretRef": {"namespace": "auth", "name": "ca", "key": "ca.crt"}}}}},
                {"name": "b", "recoveryTimeObjective": "30s", "probe": {"prometheus": {
                    "url": "http://prom.mon:9090", "query": "up", "successWhen": "> 0",
                    "bearerTokenSecretRef": {"namespace": "mon", "name": "p", "key": "k"}}}}
            ]
        }))
        .unwrap();
        let sent: Vec<(String, String, String)> = sent_secrets(&spec)
            .into_iter()
            .map(|(f, r, h)| (f, r.name.clone(), h))
            .collect();
        assert_eq!(
            sent,
            vec![
                (
                    "spec.slos[0].probe.http.headers[0].valueFrom.secretKeyRef".to_string(),
                    "h".to_string(),
                    "login.auth.svc".to_string()
                ),
                (
                    "spec.slos[1].probe.prometheus.bearerTokenSecretRef".to_string(),
                    "p".to_string(),
                    "prom.mon".to_string()
                ),
            ]
        );
    }
}
