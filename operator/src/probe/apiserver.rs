//! Where the Kubernetes API server can be reached, as addresses: never a
//! probe target, whatever name or form a probe spells it with (a DNS name,
//! a hosts entry, an IPv4-mapped IPv6 address, a decimal or hex IPv4 host).
//!
//! The addresses are learned from the cluster at start-up and again when an
//! experiment is planned: the address the operator itself reaches the API
//! server at, the `kubernetes` Service's ClusterIPs in `default`, the
//! endpoints of its EndpointSlices, and what the hosts file gives its names.
//! A loopback address is shared with other services (an operator run
//! outside the cluster, a test bed), so on loopback only the API server's
//! ports are refused; any other address is refused whole, every port.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::RwLock;

/// Where an address was learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The address the operator's own client connects to.
    Configured,
    /// A ClusterIP of the `kubernetes` Service in `default`.
    ClusterIp,
    /// An endpoint of the `kubernetes` Service's EndpointSlices.
    Endpoint,
    /// The hosts file's address for one of the `kubernetes` Service's names.
    HostsEntry,
}

impl Source {
    fn says(self) -> &'static str {
        match self {
            Source::Configured => "the address the operator reaches it at",
            Source::ClusterIp => "the kubernetes Service's ClusterIP",
            Source::Endpoint => "an endpoint of the kubernetes Service",
            Source::HostsEntry => "the hosts file's address for the kubernetes Service",
        }
    }
}

/// One address (or, with `ip` None, every loopback address) the API server
/// answers at, on `port` or (None) on every port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    pub ip: Option<IpAddr>,
    pub port: Option<u16>,
    pub from: Source,
}

impl Place {
    fn matches(&self, ip: IpAddr, port: u16) -> bool {
        let ip = canonical(ip);
        let at = match self.ip {
            Some(a) => a == ip,
            None => ip.is_loopback(),
        };
        at && self.port.is_none_or(|p| p == port)
    }
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ip = self.ip.map_or("loopback".to_string(), |ip| ip.to_string());
        match self.port {
            Some(p) => write!(f, "{ip}:{p}"),
            None => write!(f, "{ip}"),
        }
    }
}

/// An address as a connection reaches it: an IPv4-mapped IPv6 address is
/// its IPv4 address, and the unspecified address (`0.0.0.0`, `::`) is
/// loopback.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => canonical(IpAddr::V4(v4)),
            None if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            None => ip,
        },
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V4(_) => ip,
    }
}

/// The places of `ip`, reached on `ports`: on loopback, those ports only;
/// elsewhere the whole address.
fn places(ip: IpAddr, ports: &[u16], from: Source) -> Vec<Place> {
    let ip = canonical(ip);
    if !ip.is_loopback() {
        return vec![Place {
            ip: Some(ip),
            port: None,
            from,
        }];
    }
    ports
        .iter()
        .map(|&p| Place {
            ip: Some(ip),
            port: Some(p),
            from,
        })
        .collect()
}

/// The places of the address the operator reaches the API server at. On
/// loopback, every loopback address on its port: an API server listening on
/// all of loopback answers at 127.0.0.2 as well.
pub fn configured_places(addr: SocketAddr) -> Vec<Place> {
    let ip = canonical(addr.ip());
    vec![Place {
        ip: (!ip.is_loopback()).then_some(ip),
        port: Some(addr.port()),
        from: Source::Configured,
    }]
}

/// The `kubernetes` Service's names a hosts file may list.
pub const SERVICE_NAMES: [&str; 4] = [
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// The places of the `kubernetes` Service: its ClusterIPs, and what
/// `hosts` (the hosts file) gives its names, on the Service's ports.
pub fn service_places(svc: &Service, hosts: impl Fn(&str) -> Option<IpAddr>) -> Vec<Place> {
    let spec = svc.spec.clone().unwrap_or_default();
    let mut ports: Vec<u16> = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| u16::try_from(p.port).ok())
        .collect();
    if ports.is_empty() {
        ports.push(443);
    }
    let mut ips: Vec<&String> = spec.cluster_ips.iter().flatten().collect();
    ips.extend(spec.cluster_ip.as_ref());
    let mut out = vec![];
    for ip in ips.into_iter().filter_map(|s| s.parse::<IpAddr>().ok()) {
        out.extend(places(ip, &ports, Source::ClusterIp));
    }
    for name in SERVICE_NAMES {
        if let Some(ip) = hosts(name) {
            out.extend(places(ip, &ports, Source::HostsEntry));
        }
    }
    dedup(out)
}

/// The places of the `kubernetes` Service's endpoints, each on its slice's
/// ports only, loopback or not: an endpoint is often a control-plane node's
/// address, whose other ports serve NodePorts and host-network ingress that
/// a probe may rightly target. (A slice without ports refuses the whole
/// address.)
pub fn endpoint_places(slices: &[EndpointSlice]) -> Vec<Place> {
    let mut out = vec![];
    for s in slices {
        let ports: Vec<u16> = s
            .ports
            .iter()
            .flatten()
            .filter_map(|p| p.port.and_then(|p| u16::try_from(p).ok()))
            .collect();
        for e in &s.endpoints {
            for ip in e.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()) {
                let ip = canonical(ip);
                if ports.is_empty() {
                    out.extend(places(ip, &ports, Source::Endpoint));
                }
                out.extend(ports.iter().map(|&p| Place {
                    ip: Some(ip),
                    port: Some(p),
                    from: Source::Endpoint,
                }));
            }
        }
    }
    dedup(out)
}

fn dedup(places: Vec<Place>) -> Vec<Place> {
    let mut out: Vec<Place> = vec![];
    for p in places {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// What is known of where the API server is. Each source is replaced whole
/// when it is read again; a source that cannot be read keeps what it said.
#[derive(Debug, Default)]
pub struct Known(RwLock<Vec<Place>>);

impl Known {
    /// Replace what `from` said with `places` (all of `from`).
    pub fn replace(&self, from: Source, places: Vec<Place>) {
        let mut known = self.0.write().unwrap();
        known.retain(|p| p.from != from);
        known.extend(places.into_iter().filter(|p| p.from == from));
    }

    /// Why `addr` is the API server, if it is.
    pub fn at(&self, addr: SocketAddr) -> Option<&'static str> {
        let known = self.0.read().unwrap();
        known
            .iter()
            .find(|p| p.matches(addr.ip(), addr.port()))
            .map(|p| p.from.says())
    }

    /// Everything known, for the log.
    pub fn list(&self) -> Vec<String> {
        self.0
            .read()
            .unwrap()
            .iter()
            .map(|p| p.to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn loopback_is_refused_on_the_api_servers_ports_and_other_addresses_whole() {
        let known = Known::default();
        known.replace(Source::Configured, configured_places(sa("127.0.0.1:6443")));
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kubernetes", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1", "fd00:96::1"],
                     "ports": [{"name": "https", "port": 443}]},
        }))
        .unwrap();
        let hosts = |n: &str| (n == "kubernetes.default.svc").then(|| "127.3.0.1".parse().unwrap());
        known.replace(Source::ClusterIp, service_places(&svc, hosts));
        known.replace(Source::HostsEntry, service_places(&svc, hosts));
        let slice = |ip: &str, port: u16| -> EndpointSlice {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "kubernetes", "namespace": "default"},
                "addressType": "IPv4",
                "endpoints": [{"addresses": [ip]}],
                "ports": [{"name": "https", "port": port}],
            }))
            .unwrap()
        };
        known.replace(
            Source::Endpoint,
            endpoint_places(&[slice("172.18.0.2", 6443), slice("127.0.0.9", 8443)]),
        );

        for (addr, from) in [
            ("127.0.0.1:6443", "the address the operator reaches it at"),
            (
                "[::ffff:127.0.0.1]:6443",
                "the address the operator reaches it at",
            ),
            ("127.0.0.2:6443", "the address the operator reaches it at"),
            ("0.0.0.0:6443", "the address the operator reaches it at"),
            ("[::1]:6443", "the address the operator reaches it at"),
            ("10.96.0.1:443", "the kubernetes Service's ClusterIP"),
            ("10.96.0.1:8080", "the kubernetes Service's ClusterIP"),
            (
                "[::ffff:10.96.0.1]:443",
                "the kubernetes Service's ClusterIP",
            ),
            ("[fd00:96::1]:443", "the kubernetes Service's ClusterIP"),
            ("172.18.0.2:6443", "an endpoint of the kubernetes Service"),
            (
                "[::ffff:172.18.0.2]:6443",
                "an endpoint of the kubernetes Service",
            ),
            ("127.0.0.9:8443", "an endpoint of the kubernetes Service"),
            (
                "127.3.0.1:443",
                "the hosts file's address for the kubernetes Service",
            ),
        ] {
            assert_eq!(known.at(sa(addr)), Some(from), "{addr}");
        }
        // Loopback services on other ports, and other addresses, are not it.
        // An endpoint's other ports (a control-plane node's NodePorts) too.
        for addr in [
            "172.18.0.2:10250",
            "172.18.0.2:30080",
            "127.0.0.1:8080",
            "127.3.0.1:80",
            "127.3.0.2:443",
            "127.0.0.9:8080",
            "10.96.0.2:443",
            "172.18.0.3:6443",
        ] {
            assert_eq!(known.at(sa(addr)), None, "{addr}");
        }
        // A source read again replaces what it said, and only that.
        known.replace(Source::Endpoint, vec![]);
        assert_eq!(known.at(sa("172.18.0.2:6443")), None);
        assert!(known.at(sa("10.96.0.1:443")).is_some());
    }

    #[test]
    fn canonical_forms() {
        let c = |s: &str| canonical(s.parse().unwrap()).to_string();
        assert_eq!(c("::ffff:127.0.0.1"), "127.0.0.1");
        assert_eq!(c("::ffff:a60:1"), "10.96.0.1");
        assert_eq!(c("0.0.0.0"), "127.0.0.1");
        assert_eq!(c("::"), "::1");
        assert_eq!(c("::ffff:0.0.0.0"), "127.0.0.1");
        assert_eq!(c("fd00::1"), "fd00::1");
    }
}
