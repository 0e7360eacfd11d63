//! The operator's connection to the API server: two clients, one whose every
//! call has a deadline and one for long-running watches, both counting their
//! requests in the operator's metrics.

use crate::metrics::Metrics;
use kube::Client;
use std::sync::Arc;
use std::time::Duration;

/// The two clients the operator talks through: one whose every call has a
/// deadline, and one for long-running watches (which have idle timeouts of
/// their own).
#[derive(Clone)]
pub struct Clients {
    pub calls: Client,
    pub watches: Client,
    /// Where the API server is (host, port), from the configuration.
    pub apiserver: (String, u16),
    /// The operator's metrics: both clients count their requests in them.
    pub metrics: Arc<Metrics>,
}

/// How long one ordinary API call may take before it fails.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl Clients {
    /// Build both from the usual configuration (KUBECONFIG, ~/.kube/config or in-cluster).
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
        let mut watches = config;
        watches.connect_timeout = Some(Duration::from_secs(10));
        let metrics = Metrics::new();
        Ok(Clients {
            calls: counted(calls, &metrics)?,
            watches: counted(watches, &metrics)?,
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
