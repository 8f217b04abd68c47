//! Prometheus metrics: the HTTP server metrics every service has, plus a registry each service
//! adds its own metrics to.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Latency buckets (seconds) from 1 ms to 30 s: inference is milliseconds, a cold model seconds.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ]
    .into_iter()
}

/// A latency histogram with [`latency_buckets`].
pub fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

/// Request count by status, latency and in-flight requests, per route.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Family<RouteLabels, Histogram>,
    pub in_flight: Family<RouteLabels, Gauge>,
}

impl HttpMetrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            in_flight: Family::default(),
        };
        registry.register(
            "http_server_requests",
            "HTTP requests answered, by method, route and status",
            metrics.requests.clone(),
        );
        registry.register(
            "http_server_request_duration_seconds",
            "Time to answer an HTTP request",
            metrics.duration.clone(),
        );
        registry.register(
            "http_server_requests_in_flight",
            "HTTP requests being served right now",
            metrics.in_flight.clone(),
        );
        metrics
    }
}

/// Span export outcome, fed by the telemetry exporter wrapper.
#[derive(Debug, Clone, Default)]
pub struct SpanExportMetrics {
    pub exported: Counter,
    pub dropped: Counter,
}

/// The metrics registry of one service. Build it, let the service register its own metrics with
/// [`MetricsBuilder::registry`], then freeze it with [`MetricsBuilder::build`].
#[derive(Debug)]
pub struct MetricsBuilder {
    registry: Registry,
    http: HttpMetrics,
}

impl MetricsBuilder {
    pub fn new(spans: &SpanExportMetrics) -> Self {
        let mut registry = Registry::with_prefix("tracedpipeline");
        let http = HttpMetrics::register(&mut registry);
        registry.register(
            "otel_spans_exported",
            "Spans accepted by the OTLP endpoint",
            spans.exported.clone(),
        );
        registry.register(
            "otel_spans_dropped",
            "Spans lost because the OTLP endpoint failed or was unreachable",
            spans.dropped.clone(),
        );
        Self { registry, http }
    }

    pub fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    pub fn build(self) -> Metrics {
        Metrics {
            registry: Arc::new(self.registry),
            http: self.http,
        }
    }
}

/// A frozen registry plus the HTTP metrics the server middleware records.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub http: HttpMetrics,
}

impl Metrics {
    /// Prometheus text exposition of everything registered.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

impl Default for Metrics {
    /// A registry whose span metrics are not wired to any exporter (tests).
    fn default() -> Self {
        MetricsBuilder::new(&SpanExportMetrics::default()).build()
    }
}
