//! The probe target policy: which Secrets probes may read and which
//! addresses they may never reach (link-local and cloud metadata addresses
//! unless allowed, the Kubernetes API server), checked on the spec before an
//! experiment runs and again on every address a probe resolves.

use super::Env;
use crate::api::{DataCenterFailureSpec, HttpHeader, SecretKeyRef, TlsConfig};

/// What probes may read and reach, from the installer's flags. A
/// DataCenterFailure may be created by anyone allowed to create one; these
/// limits keep its probes from reading Secrets of other teams or being
/// turned into a scanner of the cluster's network.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Namespaces whose Secrets probes may read (header values, bearer
    /// tokens, CA bundles). Empty: none.
    pub secret_namespaces: std::collections::BTreeSet<String>,
    /// Allow link-local and cloud metadata addresses (169.254.0.0/16,
    /// fe80::/10, and [`METADATA_V4`] and [`METADATA_V6`]).
    pub allow_link_local: bool,
    /// The Kubernetes API server's addresses (host, port): never a probe target.
    pub apiserver: Vec<(String, u16)>,
}

/// Cloud metadata and platform addresses outside 169.254.0.0/16:
/// Alibaba Cloud's metadata service and Azure's platform address (WireServer).
pub const METADATA_V4: [std::net::Ipv4Addr; 2] = [
    std::net::Ipv4Addr::new(100, 100, 100, 200),
    std::net::Ipv4Addr::new(168, 63, 129, 16),
];

/// IPv6 cloud metadata addresses outside fe80::/10: AWS's fd00:ec2::254
/// and fd00:c1::a9fe:a9fe.
pub const METADATA_V6: [std::net::Ipv6Addr; 2] = [
    std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254),
    std::net::Ipv6Addr::new(0xfd00, 0xc1, 0, 0, 0, 0, 0xa9fe, 0xa9fe),
];

/// Link-local or cloud metadata: never a probe target unless allowed.
pub fn is_link_local(ip: std::net::IpAddr) -> bool {
    let v4 = |v4: std::net::Ipv4Addr| v4.is_link_local() || METADATA_V4.contains(&v4);
    match ip {
        std::net::IpAddr::V4(a) => v4(a),
        std::net::IpAddr::V6(a) => {
            (a.segments()[0] & 0xffc0) == 0xfe80
                || METADATA_V6.contains(&a)
                || a.to_ipv4_mapped().is_some_and(v4)
        }
    }
}

/// Why a probe may not target `host:port`, if it may not.
pub fn refused_target(p: &Policy, host: &str, port: u16) -> Option<String> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let host = host.as_str();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>()
        && is_link_local(ip)
        && !p.allow_link_local
    {
        return Some(format!(
            "{host} is a link-local or cloud metadata address; the operator refuses those (it allows them only with --allow-link-local-probes)"
        ));
    }
    // Its Service's names, in any cluster domain.
    let api_name = super::apiserver::SERVICE_NAMES.contains(&host)
        || host.starts_with("kubernetes.default.svc.");
    let same = |h: &str| {
        let h = h.trim_start_matches('[').trim_end_matches(']');
        match (h.parse(), bare.parse()) {
            (Ok(a), Ok(b)) => super::apiserver::canonical(a) == super::apiserver::canonical(b),
            _ => h.eq_ignore_ascii_case(bare),
        }
    };
    if api_name || p.apiserver.iter().any(|(h, ap)| same(h) && *ap == port) {
        return Some(format!(
            "{host}:{port} is the Kubernetes API server; probes may not target it"
        ));
    }
    None
}

/// What each probe of `spec` connects to: (field, host, port).
fn targets(spec: &DataCenterFailureSpec) -> Vec<(String, String, u16)> {
    let mut out = vec![];
    for (i, slo) in spec.slos.iter().enumerate() {
        let at = format!("spec.slos[{i}].probe");
        let mut url = |field: &str, url: &str| {
            let (host, port) = url_target(url);
            out.push((format!("{at}.{field}"), host, port));
        };
        if let Some(h) = &slo.probe.http {
            url("http.url", &h.url);
        }
        if let Some(w) = &slo.probe.write {
            // The reads go to the same origin (check_spec holds them to it).
            url("write.url", &w.url);
        }
        if let Some(pr) = &slo.probe.prometheus {
            url("prometheus.url", &pr.url);
        }
        if let Some(t) = &slo.probe.tcp {
            out.push((format!("{at}.tcp"), t.host.clone(), t.port as u16));
        }
    }
    out
}

/// Check what each probe's host resolves to now: none may be an address
/// of the API server (as [`Env::learn`] last learned it). Err names the
/// field. A host that does not resolve is left to the probe (the
/// baseline shows it), and is checked again at every connection.
pub async fn check_targets(spec: &DataCenterFailureSpec, env: &Env) -> Result<(), String> {
    for (field, host, port) in targets(spec) {
        if host.is_empty() {
            continue;
        }
        let addrs = match tokio::time::timeout(super::LOOKUP_TIMEOUT, env.lookup(&host, port)).await
        {
            Ok(Ok(addrs)) => addrs,
            Ok(Err(_)) | Err(_) => continue,
        };
        for a in addrs {
            if let Some(from) = env.api_server_at(std::net::SocketAddr::new(a.ip(), port)) {
                return Err(format!(
                    "{field}: {host}:{port} resolves to {}, the Kubernetes API server ({from}); probes may not target it",
                    a.ip()
                ));
            }
        }
    }
    Ok(())
}

/// Headers that would send the request on to a host other than the URL's
/// (through a shared ingress or proxy): never set by a probe.
const ROUTING_HEADERS: [&str; 4] = ["host", "forwarded", "x-forwarded-host", ":authority"];

/// Check what the schema cannot: every Secret a probe names is in a listed
/// namespace, and no probe targets a refused address. Err names the field.
pub fn check_spec(spec: &DataCenterFailureSpec, env: &Env) -> Result<(), String> {
    check_spec_with(spec, env.policy())
}

/// [`check_spec`] against a given policy.
pub fn check_spec_with(spec: &DataCenterFailureSpec, p: &Policy) -> Result<(), String> {
    for (i, slo) in spec.slos.iter().enumerate() {
        let at = format!("spec.slos[{i}].probe");
        if let Some(h) = &slo.probe.http {
            check_http(p, &format!("{at}.http"), &h.url, &h.headers, h.tls.as_ref())?;
        }
        if let Some(w) = &slo.probe.write {
            let at = format!("{at}.write");
            check_http(p, &at, &w.url, &w.headers, w.tls.as_ref())?;
            // The reads carry the same headers: they go to the same origin,
            // which `{{id}}` may not change (it goes in the path or query).
            let authority_end = w.read_url.find("://").map_or(0, |i| {
                let rest = &w.read_url[i + 3..];
                i + 3 + rest.find(['/', '?', '#']).unwrap_or(rest.len())
            });
            if w.read_url[..authority_end].contains("{{") {
                return Err(format!(
                    "{at}.readUrl: {{{{id}}}} goes in the path or query, never in the scheme, host or port (the reads carry the write's headers)"
                ));
            }
            let read = w.read_url.replace("{{id}}", "id");
            if let Some(why) = url_problem(&read) {
                return Err(format!("{at}.readUrl: {why}"));
            }
            if origin(&read) != origin(&w.url) {
                return Err(format!(
                    "{at}.readUrl: reads go to the same scheme, host and port as url (they carry the same headers)"
                ));
            }
        }
        if let Some(t) = &slo.probe.tcp
            && let Some(why) = refused_target(p, &t.host, t.port as u16)
        {
            return Err(format!("{at}.tcp: {why}"));
        }
        if let Some(pr) = &slo.probe.prometheus {
            if let Some(r) = &pr.bearer_token_secret_ref {
                secret_ok(p, format!("{at}.prometheus.bearerTokenSecretRef"), r)?;
            }
            if let Some(why) = url_problem(&pr.url).or_else(|| {
                pr.url.contains(['?', '#']).then_some(
                    "the URL has a query or fragment; the probe appends /api/v1/query to it",
                )
            }) {
                return Err(format!("{at}.prometheus.url: {why}"));
            }
            let (host, port) = url_target(&pr.url);
            if let Some(why) = refused_target(p, &host, port) {
                return Err(format!("{at}.prometheus.url: {why}"));
            }
        }
    }
    Ok(())
}

/// An http(s) request's URL, headers and TLS settings, checked; `at` names
/// the probe's field.
fn check_http(
    p: &Policy,
    at: &str,
    url: &str,
    headers: &[HttpHeader],
    tls: Option<&TlsConfig>,
) -> Result<(), String> {
    for (j, hd) in headers.iter().enumerate() {
        if ROUTING_HEADERS.contains(&hd.name.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "{at}.headers[{j}].name: {} is refused: the request goes to the URL's host, and a Secret's consent names that host",
                hd.name
            ));
        }
        if let Some(v) = &hd.value_from {
            if tls.is_some_and(|t| t.insecure_skip_verify) {
                return Err(format!(
                    "{at}.headers[{j}].valueFrom: a Secret is not sent over TLS that is not verified (tls.insecureSkipVerify); verify with tls.caSecretRef instead"
                ));
            }
            secret_ok(
                p,
                format!("{at}.headers[{j}].valueFrom.secretKeyRef"),
                &v.secret_key_ref,
            )?;
        }
    }
    if let Some(ca) = tls.and_then(|t| t.ca_secret_ref.as_ref()) {
        secret_ok(p, format!("{at}.tls.caSecretRef"), ca)?;
    }
    if let Some(why) = url_problem(url) {
        return Err(format!("{at}.url: {why}"));
    }
    let (host, port) = url_target(url);
    if let Some(why) = refused_target(p, &host, port) {
        return Err(format!("{at}.url: {why}"));
    }
    Ok(())
}

/// The scheme, host and port of an http(s) URL.
fn origin(url: &str) -> (String, String, u16) {
    let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
    let (host, port) = url_target(url);
    (scheme.to_ascii_lowercase(), host, port)
}

/// Err (naming `field`) unless the policy lets probes read Secrets in `r`'s
/// namespace.
fn secret_ok(p: &Policy, field: String, r: &SecretKeyRef) -> Result<(), String> {
    if p.secret_namespaces.contains(&r.namespace) {
        return Ok(());
    }
    let listed = if p.secret_namespaces.is_empty() {
        "none".to_string()
    } else {
        p.secret_namespaces
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(format!(
        "{field}.namespace: probes read Secrets only in the namespaces the operator was installed for ({listed}); {} is not one of them",
        r.namespace
    ))
}

/// What makes a probe URL unusable as written, if anything: spaces or
/// control characters, credentials, no host. The schema refuses these too;
/// this holds for objects written under an older schema. The URL is read as
/// written: a URL parser makes `http:///healthz` into `http://healthz/`. The
/// answer never repeats the URL (it may hold a password).
fn url_problem(url: &str) -> Option<&'static str> {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("the URL has spaces or control characters in it");
    }
    let authority = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split(['/', '\\', '?', '#']).next())
        .unwrap_or("");
    if authority.contains('@') {
        return Some(
            "the URL carries credentials (user:password@host); read them from a Secret instead",
        );
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    host.is_empty().then_some("the URL names no host")
}

/// The host and port an http(s) URL connects to.
pub(super) fn url_target(url: &str) -> (String, u16) {
    match reqwest::Url::parse(url) {
        Ok(u) => (
            u.host_str().unwrap_or("").to_string(),
            u.port_or_known_default().unwrap_or(0),
        ),
        Err(_) => (String::new(), 0),
    }
}

/// Addresses a probe may connect to: link-local ones dropped unless allowed.
pub(super) fn allowed_addrs(
    p: &Policy,
    host: &str,
    addrs: Vec<std::net::SocketAddr>,
) -> std::io::Result<Vec<std::net::SocketAddr>> {
    if p.allow_link_local {
        return Ok(addrs);
    }
    let kept: Vec<_> = addrs
        .into_iter()
        .filter(|a| !is_link_local(a.ip()))
        .collect();
    if kept.is_empty() {
        return Err(std::io::Error::other(format!(
            "{host} resolves only to link-local or metadata addresses (refused)"
        )));
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(probe: serde_json::Value) -> DataCenterFailureSpec {
        serde_json::from_value(serde_json::json!({
            "zone": "zone-a",
            "slos": [{"name": "x", "recoveryTimeObjective": "30s", "probe": probe}],
        }))
        .unwrap()
    }

    fn policy_for(ns: &[&str]) -> Policy {
        Policy {
            secret_namespaces: ns.iter().map(|s| s.to_string()).collect(),
            allow_link_local: false,
            apiserver: vec![("127.0.0.1".into(), 6443)],
        }
    }
    #[test]
    fn a_write_probe_is_held_to_the_http_probes_rules_and_reads_where_it_writes() {
        let p = policy_for(&["shop"]);
        let write = |url: &str, read: &str, ns: &str| {
            spec(
                serde_json::json!({"write": {"url": url, "readUrl": read, "headers": [
                {"name": "Authorization", "valueFrom": {"secretKeyRef": {"namespace": ns, "name": "t", "key": "k"}}}]}}),
            )
        };
        let ok = "http://ledger.shop.svc:8080/records";
        let read = "http://ledger.shop.svc:8080/records/{{id}}";
        assert_eq!(check_spec_with(&write(ok, read, "shop"), &p), Ok(()));
        let err = check_spec_with(&write(ok, read, "kube-system"), &p).unwrap_err();
        assert!(
            err.starts_with("spec.slos[0].probe.write.headers[0].valueFrom.secretKeyRef.namespace"),
            "{err}"
        );
        let err =
            check_spec_with(&write("http://169.254.169.254/x", read, "shop"), &p).unwrap_err();
        assert!(err.starts_with("spec.slos[0].probe.write.url:"), "{err}");
        for other in [
            "http://evil.example:8080/records/{{id}}",
            "http://ledger.shop.svc:9090/records/{{id}}",
            "https://ledger.shop.svc:8080/records/{{id}}",
        ] {
            let err = check_spec_with(&write(ok, other, "shop"), &p).unwrap_err();
            assert!(
                err.starts_with(
                    "spec.slos[0].probe.write.readUrl: reads go to the same scheme, host and port"
                ),
                "{other}: {err}"
            );
        }
        // `{{id}}` in the host would send the headers to a host of the
        // probe's making, even one that looks like the write's.
        let err = check_spec_with(
            &write(
                "http://id.shop.svc:8080/records",
                "http://{{id}}.shop.svc:8080/records",
                "shop",
            ),
            &p,
        )
        .unwrap_err();
        assert!(
            err.starts_with("spec.slos[0].probe.write.readUrl: {{id}} goes in the path or query"),
            "{err}"
        );
    }

    #[test]
    fn a_probe_cannot_route_its_request_to_another_host() {
        let p = policy_for(&["shop"]);
        for name in ["Host", "X-Forwarded-Host", "forwarded"] {
            let err = check_spec_with(
                &spec(
                    serde_json::json!({"http": {"url": "http://api.shop.svc/", "headers": [
                    {"name": name, "value": "catcher.example"}]}}),
                ),
                &p,
            )
            .unwrap_err();
            assert!(
                err.starts_with("spec.slos[0].probe.http.headers[0].name"),
                "{err}"
            );
        }
        let err = check_spec_with(
            &spec(serde_json::json!({"http": {"url": "https://api.shop.svc/",
                "tls": {"insecureSkipVerify": true},
                "headers": [{"name": "Authorization", "valueFrom": {"secretKeyRef": {"namespace": "shop", "name": "t", "key": "k"}}}]}})),
            &p,
        )
        .unwrap_err();
        assert!(
            err.contains("not sent over TLS that is not verified"),
            "{err}"
        );
    }

    #[test]
    fn secrets_are_read_only_in_the_listed_namespaces() {
        let header = spec(
            serde_json::json!({"http": {"url": "http://api.shop.svc/", "headers": [
            {"name": "Authorization", "valueFrom": {"secretKeyRef": {"namespace": "kube-system", "name": "admin", "key": "token"}}}]}}),
        );
        let err = check_spec_with(&header, &policy_for(&["shop"])).unwrap_err();
        assert_eq!(
            err,
            "spec.slos[0].probe.http.headers[0].valueFrom.secretKeyRef.namespace: probes read Secrets only in the namespaces the operator was installed for (shop); kube-system is not one of them"
        );
        assert_eq!(
            check_spec_with(&header, &policy_for(&["kube-system"])),
            Ok(())
        );
        let token = spec(
            serde_json::json!({"prometheus": {"url": "http://prom.monitoring:9090", "query": "up", "successWhen": "> 0",
            "bearerTokenSecretRef": {"namespace": "other", "name": "t", "key": "k"}}}),
        );
        assert!(
            check_spec_with(&token, &policy_for(&[]))
                .unwrap_err()
                .starts_with("spec.slos[0].probe.prometheus.bearerTokenSecretRef.namespace")
        );
        let ca = spec(
            serde_json::json!({"http": {"url": "https://api.shop.svc/", "tls": {"caSecretRef": {"namespace": "x", "name": "ca", "key": "ca.crt"}}}}),
        );
        assert!(
            check_spec_with(&ca, &policy_for(&["shop"]))
                .unwrap_err()
                .contains("tls.caSecretRef")
        );
    }

    #[test]
    fn metadata_link_local_and_the_api_server_are_never_targets() {
        let p = policy_for(&[]);
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00:ec2::254]/latest/meta-data/",
            "http://[fe80::1]:8080/",
        ] {
            let err =
                check_spec_with(&spec(serde_json::json!({"http": {"url": url}})), &p).unwrap_err();
            assert!(
                err.starts_with("spec.slos[0].probe.http.url:") && err.contains("link-local"),
                "{url}: {err}"
            );
        }
        let tcp = spec(serde_json::json!({"tcp": {"host": "169.254.169.254", "port": 80}}));
        assert!(
            check_spec_with(&tcp, &p)
                .unwrap_err()
                .starts_with("spec.slos[0].probe.tcp:")
        );
        let allowed = Policy {
            allow_link_local: true,
            ..p.clone()
        };
        assert_eq!(check_spec_with(&tcp, &allowed), Ok(()));
        for url in [
            "https://127.0.0.1:6443/api",
            "https://kubernetes.default.svc/healthz",
        ] {
            let err =
                check_spec_with(&spec(serde_json::json!({"http": {"url": url}})), &p).unwrap_err();
            assert!(err.contains("is the Kubernetes API server"), "{url}: {err}");
        }
        let api =
            spec(serde_json::json!({"tcp": {"host": "Kubernetes.Default.svc.", "port": 443}}));
        assert!(
            check_spec_with(&api, &p)
                .unwrap_err()
                .contains("is the Kubernetes API server")
        );
        // The same host on another port is fine (the testbed runs everything on loopback).
        assert_eq!(
            check_spec_with(
                &spec(serde_json::json!({"http": {"url": "http://127.0.0.1:8080/"}})),
                &p
            ),
            Ok(())
        );
        assert!(is_link_local("169.254.1.1".parse().unwrap()));
        assert!(!is_link_local("10.0.0.1".parse().unwrap()));
        assert!(is_link_local("::ffff:169.254.169.254".parse().unwrap()));
    }

    #[test]
    fn the_other_clouds_metadata_addresses_are_refused_too() {
        let p = policy_for(&[]);
        for (probe, field) in [
            (
                serde_json::json!({"http": {"url": "http://100.100.100.200/latest/meta-data/"}}),
                "spec.slos[0].probe.http.url: 100.100.100.200 is a link-local or cloud metadata address",
            ),
            (
                serde_json::json!({"tcp": {"host": "168.63.129.16", "port": 80}}),
                "spec.slos[0].probe.tcp: 168.63.129.16 is a link-local or cloud metadata address",
            ),
            (
                serde_json::json!({"http": {"url": "http://[fd00:c1::a9fe:a9fe]/opc/v2/instance/"}}),
                "spec.slos[0].probe.http.url: [fd00:c1::a9fe:a9fe] is a link-local or cloud metadata address",
            ),
            (
                serde_json::json!({"prometheus": {"url": "http://[::ffff:168.63.129.16]:9090", "query": "up", "successWhen": "> 0"}}),
                "spec.slos[0].probe.prometheus.url: [::ffff:a83f:8110] is a link-local",
            ),
        ] {
            let s = spec(probe);
            let err = check_spec_with(&s, &p).unwrap_err();
            assert!(err.starts_with(field), "{err}");
            let allowed = Policy {
                allow_link_local: true,
                ..p.clone()
            };
            assert_eq!(check_spec_with(&s, &allowed), Ok(()));
        }
        // Only those addresses: their neighbours are ordinary addresses.
        for ip in [
            "100.100.100.201",
            "100.64.0.1",
            "168.63.129.17",
            "fd00:c1::1",
        ] {
            assert!(!is_link_local(ip.parse().unwrap()), "{ip}");
        }
        // What a name resolves to is filtered the same way.
        let addr = |ip: &str| std::net::SocketAddr::new(ip.parse().unwrap(), 80);
        assert!(allowed_addrs(&p, "metadata", vec![addr("100.100.100.200")]).is_err());
        assert_eq!(
            allowed_addrs(&p, "web", vec![addr("168.63.129.16"), addr("10.0.0.7")]).unwrap(),
            vec![addr("10.0.0.7")]
        );
    }

    /// An env under [`policy_for`] (the API server at 127.0.0.1:6443, by
    /// the operator's configuration) that has learned the `kubernetes`
    /// Service at 10.96.0.1 and its endpoint 172.18.0.2:6443, with `hosts`
    /// as its hosts file.
    fn learned(hosts: &str) -> (Env, crate::Scratch) {
        use super::super::apiserver::{Source, endpoint_places, service_places};
        let dir = crate::Scratch::new("apiserver");
        let path = dir.join("hosts");
        std::fs::write(&path, hosts).unwrap();
        let env = Env::new(policy_for(&[]), Some(path));
        let svc = serde_json::from_value(serde_json::json!({
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"port": 443}]},
        }))
        .unwrap();
        env.apiserver
            .replace(Source::ClusterIp, service_places(&svc, |_| None));
        let slice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kubernetes"},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["172.18.0.2"]}],
            "ports": [{"port": 6443}],
        }))
        .unwrap();
        env.apiserver
            .replace(Source::Endpoint, endpoint_places(&[slice]));
        (env, dir)
    }

    #[tokio::test]
    async fn the_api_server_is_refused_by_what_a_probe_resolves_to_in_every_form() {
        let (env, _dir) = learned(
            "10.96.0.1 kubernetes.default.svc.corp.example\n127.0.0.1 apiserver.lab.example\n",
        );
        // The URL parser writes decimal and hex IPv4 hosts as dotted quads.
        assert_eq!(url_target("http://2130706433:6443/").0, "127.0.0.1");
        assert_eq!(url_target("http://0x7f000001:6443/").0, "127.0.0.1");
        assert_eq!(
            url_target("http://[::ffff:127.0.0.1]:6443/").0,
            "[::ffff:7f00:1]"
        );
        for (probe, field, from) in [
            // An IPv4-mapped IPv6 form of the configured address and of the ClusterIP.
            (
                serde_json::json!({"http": {"url": "https://[::ffff:127.0.0.1]:6443/api"}}),
                "http.url",
                "the address the operator reaches it at",
            ),
            (
                serde_json::json!({"http": {"url": "http://[::ffff:10.96.0.1]/"}}),
                "http.url",
                "the kubernetes Service's ClusterIP",
            ),
            // Decimal and hex hosts.
            (
                serde_json::json!({"http": {"url": "http://2130706433:6443/"}}),
                "http.url",
                "the address the operator reaches it at",
            ),
            (
                serde_json::json!({"write": {"url": "http://0x7f000001:6443/r", "readUrl": "http://0x7f000001:6443/r/{{id}}"}}),
                "write.url",
                "the address the operator reaches it at",
            ),
            (
                serde_json::json!({"tcp": {"host": "0x7f000001", "port": 6443}}),
                "tcp",
                "the address the operator reaches it at",
            ),
            (
                serde_json::json!({"tcp": {"host": "2130706433", "port": 6443}}),
                "tcp",
                "the address the operator reaches it at",
            ),
            // A custom cluster domain's name, through the hosts file.
            (
                serde_json::json!({"tcp": {"host": "kubernetes.default.svc.corp.example", "port": 443}}),
                "tcp",
                "the kubernetes Service's ClusterIP",
            ),
            // Names that resolve to it: a hosts entry, the system resolver.
            (
                serde_json::json!({"prometheus": {"url": "https://apiserver.lab.example:6443", "query": "up", "successWhen": "> 0"}}),
                "prometheus.url",
                "the address the operator reaches it at",
            ),
            (
                serde_json::json!({"http": {"url": "https://localhost:6443/healthz"}}),
                "http.url",
                "the address the operator reaches it at",
            ),
            // The endpoint on its port, by URL and by tcp.
            (
                serde_json::json!({"http": {"url": "https://172.18.0.2:6443/version"}}),
                "http.url",
                "an endpoint of the kubernetes Service",
            ),
            (
                serde_json::json!({"tcp": {"host": "172.18.0.2", "port": 6443}}),
                "tcp",
                "an endpoint of the kubernetes Service",
            ),
        ] {
            let err = check_targets(&spec(probe.clone()), &env).await.unwrap_err();
            assert!(
                err.starts_with(&format!("spec.slos[0].probe.{field}: "))
                    && err.contains(&format!("the Kubernetes API server ({from})")),
                "{probe}: {err}"
            );
        }
        // Loopback services on other ports, other addresses, and names that
        // do not resolve are not refused here.
        for probe in [
            serde_json::json!({"http": {"url": "http://127.0.0.1:8080/"}}),
            serde_json::json!({"http": {"url": "http://localhost:8080/"}}),
            serde_json::json!({"tcp": {"host": "0x7f000001", "port": 8080}}),
            serde_json::json!({"tcp": {"host": "apiserver.lab.example", "port": 80}}),
            serde_json::json!({"http": {"url": "http://10.96.0.2/"}}),
            serde_json::json!({"http": {"url": "http://no-such-host.invalid/"}}),
        ] {
            assert_eq!(
                check_targets(&spec(probe.clone()), &env).await,
                Ok(()),
                "{probe}"
            );
        }
    }

    #[test]
    fn the_api_servers_names_in_any_cluster_domain_and_its_address_in_any_form_are_refused_as_written()
     {
        let p = policy_for(&[]);
        for probe in [
            serde_json::json!({"tcp": {"host": "kubernetes.default.svc.corp.example", "port": 443}}),
            serde_json::json!({"http": {"url": "https://[::ffff:127.0.0.1]:6443/"}}),
            serde_json::json!({"http": {"url": "https://0x7f000001:6443/"}}),
            serde_json::json!({"tcp": {"host": "::ffff:127.0.0.1", "port": 6443}}),
        ] {
            let err = check_spec_with(&spec(probe.clone()), &p).unwrap_err();
            assert!(
                err.contains("is the Kubernetes API server"),
                "{probe}: {err}"
            );
        }
        // Another Service of that namespace is not it.
        assert_eq!(
            check_spec_with(
                &spec(
                    serde_json::json!({"tcp": {"host": "kubernetes-dashboard.default.svc", "port": 443}})
                ),
                &p
            ),
            Ok(())
        );
    }

    #[tokio::test]
    async fn a_probe_that_resolves_to_the_api_server_at_connect_time_never_dials_it() {
        use std::io::ErrorKind;
        // Something listening where the API server is said to be.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let dir = crate::Scratch::new("connect");
        let path = dir.join("hosts");
        std::fs::write(&path, "").unwrap();
        let env = Env::new(
            Policy {
                apiserver: vec![("127.0.0.1".into(), port)],
                ..Default::default()
            },
            Some(path.clone()),
        );
        // A hosts entry written after planning, say.
        std::fs::write(&path, "::ffff:127.0.0.1 sneaky.shop.svc\n").unwrap();
        let tcp = super::super::tcp::Tcp::build(
            &serde_json::from_value(serde_json::json!({"host": "0x7f000001", "port": port}))
                .unwrap(),
            &env,
        );
        let (outcome, why) = tcp.probe().await;
        assert_eq!(outcome, crate::slo::Outcome::Fail);
        let why = why.unwrap();
        assert!(why.contains("the Kubernetes API server"), "{why}");
        let url = format!("http://sneaky.shop.svc:{port}/");
        let client = super::super::hosts::with_hosts(reqwest::Client::builder(), &env, &url)
            .unwrap()
            .no_proxy()
            .build()
            .unwrap();
        let err = client.get(&url).send().await.unwrap_err();
        assert!(
            super::super::http::http_error(&err).contains("the Kubernetes API server"),
            "{err:?}"
        );
        // An address in the URL is never resolved: it is refused when the
        // client is built.
        let literal = format!("http://[::ffff:127.0.0.1]:{port}/");
        let Err(why) = super::super::hosts::with_hosts(reqwest::Client::builder(), &env, &literal)
        else {
            panic!("{literal} was allowed");
        };
        assert!(why.contains("the Kubernetes API server"), "{why}");
        // Nothing ever connected.
        assert_eq!(
            listener.accept().map(|_| ()).unwrap_err().kind(),
            ErrorKind::WouldBlock
        );
        // The same host on another port is fine.
        let other = format!("http://sneaky.shop.svc:{}/", port.wrapping_add(1).max(1));
        assert!(super::super::hosts::with_hosts(reqwest::Client::builder(), &env, &other).is_ok());
    }

    #[test]
    fn a_url_with_no_host_credentials_or_spaces_is_refused_without_repeating_it() {
        let p = policy_for(&[]);
        for (url, why) in [
            ("http:///healthz", "names no host"),
            ("https://:8443/healthz", "names no host"),
            ("http://[]/", "names no host"),
            ("http://probe:s3cret@web.shop.svc/", "carries credentials"),
            ("http://s3cret@web.shop.svc/", "carries credentials"),
            (
                "http://web.shop.svc/health check",
                "spaces or control characters",
            ),
            (
                "http://web.shop.svc/\r\nX-Evil: 1",
                "spaces or control characters",
            ),
        ] {
            let err =
                check_spec_with(&spec(serde_json::json!({"http": {"url": url}})), &p).unwrap_err();
            assert!(
                err.starts_with("spec.slos[0].probe.http.url: the URL ") && err.contains(why),
                "{url}: {err}"
            );
            assert!(!err.contains("s3cret"), "{err}");
            let prom = spec(
                serde_json::json!({"prometheus": {"url": url, "query": "up", "successWhen": "> 0"}}),
            );
            assert!(
                check_spec_with(&prom, &p)
                    .unwrap_err()
                    .starts_with("spec.slos[0].probe.prometheus.url: the URL "),
                "{url}"
            );
        }
        for url in [
            "http://prom.monitoring:9090/?x=1",
            "http://prom.monitoring:9090/#top",
        ] {
            let prom = spec(
                serde_json::json!({"prometheus": {"url": url, "query": "up", "successWhen": "> 0"}}),
            );
            assert!(
                check_spec_with(&prom, &p)
                    .unwrap_err()
                    .contains("has a query or fragment"),
                "{url}"
            );
        }
        // An @ in the path or query is no credential; an IPv6 host with a port is a host.
        for url in [
            "http://web.shop.svc/users/@me?next=a@b",
            "http://[fd12::7]:8080/healthz",
            "https://web.shop.svc:8443",
        ] {
            assert_eq!(
                check_spec_with(&spec(serde_json::json!({"http": {"url": url}})), &p),
                Ok(()),
                "{url}"
            );
        }
    }
}
