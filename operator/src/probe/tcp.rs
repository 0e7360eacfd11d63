//! The tcp probe: Ok when a connection opens.

use super::Env;
use super::policy::allowed_addrs;
use crate::api::TcpProbe;
use crate::slo::Outcome;

/// A tcp probe ready to run.
pub struct Tcp {
    host: String,
    port: u16,
    /// Where the host name is looked up, and which addresses are refused.
    env: Env,
}

impl Tcp {
    pub(super) fn build(t: &TcpProbe, env: &Env) -> Tcp {
        Tcp {
            host: t.host.clone(),
            port: t.port as u16,
            env: env.clone(),
        }
    }

    /// One connection: the hosts file first, then the system resolver;
    /// refused addresses are never dialled.
    pub(super) async fn probe(&self) -> (Outcome, Option<String>) {
        let (host, port) = (&self.host, self.port);
        let connected = async {
            let found: Vec<std::net::SocketAddr> = match self.env.hosts_lookup(host) {
                Some(ip) => vec![std::net::SocketAddr::new(ip, port)],
                None => tokio::net::lookup_host((host.as_str(), port))
                    .await?
                    .collect(),
            };
            let addrs = allowed_addrs(self.env.policy(), host, found)?;
            tokio::net::TcpStream::connect(&addrs[..]).await
        }
        .await;
        match connected {
            Ok(_) => (Outcome::Ok, None),
            Err(e) => (Outcome::Fail, Some(format!("connect {host}:{port}: {e}"))),
        }
    }
}
