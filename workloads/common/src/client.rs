//! Outgoing HTTP calls with a CLIENT span each and the W3C trace context (and baggage) injected,
//! so that the callee's server span joins the caller's trace.

use opentelemetry_http::HeaderInjector;
use tracing::{Instrument as _, field};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// A `reqwest::Client` whose every request is traced.
#[derive(Debug, Clone)]
pub struct TracedClient {
    inner: reqwest::Client,
}

impl TracedClient {
    pub fn new(inner: reqwest::Client) -> Self {
        Self { inner }
    }

    /// Starts a request; finish it with [`TracedClient::send`].
    pub fn post(&self, url: reqwest::Url) -> reqwest::RequestBuilder {
        self.inner.post(url)
    }

    /// Sends `request` inside a CLIENT span named after its method, carrying the current trace
    /// context. 5xx answers and transport errors mark the span as failed.
    pub async fn send(&self, mut request: reqwest::Request) -> reqwest::Result<reqwest::Response> {
        let url = request.url();
        let span = tracing::info_span!(
            "http.client.request",
            otel.name = request.method().as_str(),
            otel.kind = "client",
            otel.status_code = field::Empty,
            http.request.method = request.method().as_str(),
            url.full = %url,
            server.address = url.host_str().unwrap_or_default(),
            server.port = url.port_or_known_default().unwrap_or_default(),
            http.response.status_code = field::Empty,
            error.type = field::Empty,
        );
        let context = span.context();
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut HeaderInjector(request.headers_mut()));
        });
        let result = self.inner.execute(request).instrument(span.clone()).await;
        match &result {
            Ok(response) => {
                let status = response.status();
                span.record("http.response.status_code", status.as_u16());
                if status.is_server_error() {
                    span.record("otel.status_code", "ERROR");
                    span.record("error.type", status.as_str());
                }
            }
            Err(error) => {
                span.record("otel.status_code", "ERROR");
                span.record("error.type", error_kind(error));
            }
        }
        result
    }
}

/// A short, low-cardinality name for a transport error.
pub fn error_kind(error: &reqwest::Error) -> &'static str {
    if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else if error.is_decode() {
        "decode"
    } else if error.is_body() {
        "body"
    } else {
        "request"
    }
}
