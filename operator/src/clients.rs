//! The operator's connections to the API server: three clients, each with a
//! connection pool of its own, all counting their requests in the operator's
//! metrics.
//!
//! - `calls`: every call has a deadline; bulk work (pod deletes, lists, node
//!   patches) goes through it.
//! - `watches`: long-running watches (they have idle timeouts of their own).
//! - `lease`: leader election alone. Its requests never queue behind the
//!   operator's own bulk work on a connection: a renewal is one short
//!   request on a connection nothing else uses. (On the API server, the
//!   chart's FlowSchemas keep it out of the bulk work's priority level.)

use crate::metrics::Metrics;
use kube::Client;
use std::sync::Arc;
use std::time::Duration;

/// The three clients the operator talks through; see the module docs.
#[derive(Clone)]
pub struct Clients {
    pub calls: Client,
    pub watches: Client,
    /// For leader election only: a connection pool of its own.
    pub lease: Client,
    /// Where the API server is (host, port), from the configuration.
    pub apiserver: (String, u16),
    /// The operator's metrics: every client counts its requests in them.
    pub metrics: Arc<Metrics>,
}

/// How long one ordinary API call may take before it fails.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one leader election request may wait for its answer. The elector
/// bounds each attempt more tightly still (a quarter of the lease duration).
pub const LEASE_CALL_TIMEOUT: Duration = Duration::from_secs(10);

impl Clients {
    /// Build all three from the usual configuration (KUBECONFIG, ~/.kube/config or in-cluster).
    pub async fn infer() -> Result<Self, kube::Error> {
        let config = kube::Config::infer()
            .await
            .map_err(kube::Error::InferConfig)?;
        Self::from_config(config)
    }

    pub fn from_config(config: kube::Config) -> Result<Self, kube::Error> {
        let default_port = if config.cluster_url.scheme_str() == Some("http") {
            80
        } else {
            443
        };
        let apiserver = (
            config.cluster_url.host().unwrap_or("").to_string(),
            config.cluster_url.port_u16().unwrap_or(default_port),
        );
        let mut calls = config.clone();
        calls.read_timeout = Some(CALL_TIMEOUT);
        calls.reset_reader_on_write = true;
        calls.connect_timeout = Some(Duration::from_secs(10));
        let mut lease = config.clone();
        lease.read_timeout = Some(LEASE_CALL_TIMEOUT);
        lease.reset_reader_on_write = true;
        lease.connect_timeout = Some(Duration::from_secs(5));
        let mut watches = config;
        watches.connect_timeout = Some(Duration::from_secs(10));
        let metrics = Metrics::new();
        // Each `counted` builds a client from its own configuration, and so a
        // connection pool of its own: none is a clone of another.
        Ok(Clients {
            calls: counted(calls, &metrics)?,
            watches: counted(watches, &metrics)?,
            lease: counted(lease, &metrics)?,
            apiserver,
            metrics,
        })
    }
}

/// A client whose every request is counted in `firedrill_api_requests_total`.
fn counted(config: kube::Config, metrics: &Arc<Metrics>) -> Result<Client, kube::Error> {
    let metrics = metrics.clone();
    let count = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        metrics.count_request(req.method().as_str());
        req
    });
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&count)
        .build())
}
