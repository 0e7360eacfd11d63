//! The tcp probe: Ok when a connection opens.

use super::Env;
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
    /// refused addresses are never dialled, and a host that resolves to the
    /// API server is not dialled at all.
    pub(super) async fn probe(&self) -> (Outcome, Option<String>) {
        let (host, port) = (&self.host, self.port);
        let connected = async {
            let found = self.env.lookup(host, port).await?;
            let addrs = self.env.connectable(host, port, found)?;
            tokio::net::TcpStream::connect(&addrs[..]).await
        }
        .await;
        match connected {
            Ok(_) => (Outcome::Ok, None),
            Err(e) => (Outcome::Fail, Some(format!("connect {host}:{port}: {e}"))),
        }
    }
}
