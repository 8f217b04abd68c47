//! The ensemble service: receives a prepared 224×224 RGB image, asks every configured model for
//! its top-k classes concurrently, and answers with their aggregate.
//!
//! Differences from upstream (see the upstream description, §2.2 and §7 items 8–11): the answer is
//! synchronous and carries the result; every model call has a timeout; a failing model degrades
//! the answer instead of losing it; a single model works; the result is ordered, winner first;
//! only content type, trace context and `Timestamp` are forwarded to the models.

pub mod aggregate;
pub mod config;
pub mod error;
pub mod fanout;
pub mod handler;
pub mod metrics;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use pipeline_common::api::AggregationStrategy;
use pipeline_common::client::TracedClient;
use pipeline_common::metrics::{Metrics, MetricsBuilder, SpanExportMetrics};
use pipeline_common::server::{Limits, Readiness, service_router};

pub use config::{Args, DEFAULT_PORT};

use crate::fanout::Fanout;
use crate::metrics::ModelMetrics;

/// Connections to the models are reused; this many idle ones are kept per model.
const POOL_IDLE_PER_HOST: usize = 32;
/// Idle connections are closed after this long (below typical 120 s+ server keep-alives).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Connecting to a model in the cluster is fast; a slow connect means it is gone.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    fanout: Fanout,
    strategy: AggregationStrategy,
    top_k: usize,
    metrics: Metrics,
    readiness: Readiness,
    limits: Limits,
}

impl AppState {
    /// `http` is the client the model calls go through (see [`http_client`]); `spans` are the
    /// telemetry's export counters, registered next to the service's metrics.
    pub fn new(args: &Args, http: reqwest::Client, spans: &SpanExportMetrics) -> Self {
        let mut builder = MetricsBuilder::new(spans);
        let model_metrics = ModelMetrics::register(builder.registry());
        let fanout = Fanout::new(
            TracedClient::new(http),
            args.models.endpoints(),
            args.top_k,
            args.model_timeout,
            model_metrics,
        );
        Self(Arc::new(Inner {
            fanout,
            strategy: args.aggregation,
            top_k: usize::from(args.top_k),
            metrics: builder.build(),
            // Nothing to load or warm up: ready as soon as it listens.
            readiness: Readiness::ready(),
            limits: Limits {
                max_body_bytes: args.max_body_bytes,
                request_timeout: args.server.request_timeout,
            },
        }))
    }

    pub fn readiness(&self) -> Readiness {
        self.0.readiness.clone()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    fn fanout(&self) -> &Fanout {
        &self.0.fanout
    }

    fn strategy(&self) -> AggregationStrategy {
        self.0.strategy
    }

    fn top_k(&self) -> usize {
        self.0.top_k
    }
}

/// The client for the model calls: pooled keep-alive connections and a short connect timeout
/// (the per-call timeout is set on each request).
pub fn http_client(args: &Args) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!(
            "tracedpipeline-ensemble/",
            env!("CARGO_PKG_VERSION")
        ))
        .pool_max_idle_per_host(POOL_IDLE_PER_HOST)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .connect_timeout(args.model_timeout.min(MAX_CONNECT_TIMEOUT))
        .tcp_keepalive(Duration::from_secs(60))
        .build()
}

/// The whole service: `POST /ensemble_service` plus the shared probes and `/metrics`.
pub fn app(state: AppState) -> Router {
    let metrics = state.metrics().clone();
    let readiness = state.readiness();
    let limits = state.0.limits;
    let api = Router::new()
        .route("/ensemble_service", post(handler::ensemble_service))
        .with_state(state);
    service_router(api, metrics, readiness, limits)
}
