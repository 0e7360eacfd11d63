//! The hosts file probes look names up in first, and the resolver every
//! probe's HTTP client uses: the hosts file, then the system resolver, with
//! refused addresses dropped either way.

use super::Env;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// A hosts file (`ADDRESS NAME...` lines) the probes look names up in first,
/// like `curl --resolve`: how an operator running outside the cluster
/// reaches in-cluster names. Re-read when it changes.
#[derive(Debug)]
pub(super) struct HostsFile {
    path: PathBuf,
    /// The file's modification time when last read, and what it said.
    cache: Mutex<(Option<SystemTime>, BTreeMap<String, IpAddr>)>,
}

impl HostsFile {
    pub(super) fn new(path: PathBuf) -> HostsFile {
        HostsFile {
            path,
            cache: Mutex::new((None, BTreeMap::new())),
        }
    }

    /// The address the file gives `name`, if any.
    pub(super) fn lookup(&self, name: &str) -> Option<IpAddr> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let mut cache = self.cache.lock().unwrap();
        if cache.0 != modified || modified.is_none() {
            let text = std::fs::read_to_string(&self.path).unwrap_or_default();
            cache.1 = parse_hosts(&text);
            cache.0 = modified;
        }
        cache.1.get(name.trim_end_matches('.')).copied()
    }
}

/// `ADDRESS NAME...` lines; `#` starts a comment.
pub fn parse_hosts(text: &str) -> BTreeMap<String, IpAddr> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let Some(ip) = words.next().and_then(|a| a.parse().ok()) else {
            continue;
        };
        for name in words {
            out.insert(name.to_string(), ip);
        }
    }
    out
}

/// Resolves through the hosts file first, then the system resolver, for a
/// client whose every request goes to `port` (one origin: redirects stay
/// within it).
struct HostsResolver(Env, u16);

impl reqwest::dns::Resolve for HostsResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        let (env, port) = (self.0.clone(), self.1);
        Box::pin(async move {
            // Port 0: the connector puts the URL's port in.
            let found = env.lookup(&host, 0).await?;
            let addrs: reqwest::dns::Addrs =
                Box::new(env.connectable(&host, port, found)?.into_iter());
            Ok(addrs)
        })
    }
}

/// Every probe's HTTP client for requests to `url`'s origin resolves through
/// the hosts file (if any) and drops refused addresses. An IP address in
/// the URL is never resolved, so it is checked here, before any request.
pub(super) fn with_hosts(
    b: reqwest::ClientBuilder,
    env: &Env,
    url: &str,
) -> Result<reqwest::ClientBuilder, String> {
    let (host, port) = super::policy::url_target(url);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse() {
        env.connectable(&host, port, vec![std::net::SocketAddr::new(ip, port)])
            .map_err(|e| e.to_string())?;
    }
    Ok(b.dns_resolver(Arc::new(HostsResolver(env.clone(), port))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lines_and_comments() {
        let hosts = parse_hosts(
            "# services\n127.0.0.5 api.shop.svc api.shop # the api\nnot-an-ip x\n\n::1 v6\n",
        );
        assert_eq!(
            hosts.get("api.shop.svc"),
            Some(&"127.0.0.5".parse().unwrap())
        );
        assert_eq!(hosts.get("api.shop"), Some(&"127.0.0.5".parse().unwrap()));
        assert_eq!(hosts.get("v6"), Some(&"::1".parse().unwrap()));
        assert_eq!(hosts.len(), 3);
    }

    #[test]
    fn the_hosts_file_is_looked_up_through_the_env_and_reread_when_it_changes() {
        let dir = crate::Scratch::new("hosts");
        let path = dir.join("hosts");
        std::fs::write(&path, "127.0.0.7 api.shop.svc\n").unwrap();
        let env = Env::new(Default::default(), Some(path.clone()));
        assert_eq!(
            env.hosts_lookup("api.shop.svc."),
            Some("127.0.0.7".parse().unwrap())
        );
        assert_eq!(env.hosts_lookup("other"), None);
        // A later write (a Service that appeared) is seen; mtimes can be
        // coarse, so make sure this one differs.
        std::fs::write(&path, "127.0.0.7 api.shop.svc\n127.0.0.8 other\n").unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert_eq!(
            env.clone().hosts_lookup("other"),
            Some("127.0.0.8".parse().unwrap())
        );
        assert_eq!(Env::default().hosts_lookup("other"), None);
    }
}
