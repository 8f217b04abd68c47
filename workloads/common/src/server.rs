//! The HTTP scaffolding every service shares: request spans and metrics, limits, the health
//! endpoints, and serving with graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{StatusCode, header};
use opentelemetry_http::HeaderExtractor;
use tower_http::timeout::TimeoutLayer;
use tracing::{Instrument as _, field};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::metrics::{Metrics, RequestLabels, RouteLabels};

/// Whether the service can take traffic (`/readyz`). Starts not ready; the service flips it once
/// its dependencies (e.g. a warmed-up model) are in place, and back during shutdown.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn ready() -> Self {
        let readiness = Self::default();
        readiness.set(true);
        readiness
    }

    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Limits applied to the service's API routes.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
}

/// Wraps a service's API routes with request spans, metrics, body limit and timeout, and adds
/// `/healthz`, `/readyz` and `/metrics` (which are neither traced nor limited).
pub fn service_router(
    api: Router,
    metrics: Metrics,
    readiness: Readiness,
    limits: Limits,
) -> Router {
    let api = api
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            limits.request_timeout,
        ))
        .layer(middleware::from_fn_with_state(metrics.clone(), observe));
    api.merge(probe_router("/healthz", readiness, metrics))
}

/// Liveness at `liveness_path`, `/readyz` following `readiness`, and `/metrics`: the routes
/// every process of the product serves (services and operator), never traced.
pub fn probe_router(liveness_path: &str, readiness: Readiness, metrics: Metrics) -> Router {
    Router::new()
        .route(liveness_path, get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = readiness.is_ready();
                async move {
                    if ready {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                    }
                }
            }),
        )
        .route("/metrics", get(render_metrics))
        .with_state(metrics)
}

async fn render_metrics(State(metrics): State<Metrics>) -> Response {
    match metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// One SERVER span per request, child of the caller's W3C trace context, with HTTP semantic
/// convention attributes; plus the request metrics.
async fn observe(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(request.headers()))
    });
    let user_agent = request
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let span = tracing::info_span!(
        "http.server.request",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = field::Empty,
        http.request.method = %method,
        http.route = %route,
        url.path = %request.uri().path(),
        url.query = request.uri().query().unwrap_or_default(),
        url.scheme = "http",
        user_agent.original = %user_agent,
        http.request.body.size = field::Empty,
        http.response.status_code = field::Empty,
        error.type = field::Empty,
    );
    if let Some(length) = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        span.record("http.request.body.size", length);
    }
    // A missing or invalid traceparent just starts a new trace.
    let _ = span.set_parent(parent);

    let route_labels = RouteLabels {
        method: method.clone(),
        route: route.clone(),
    };
    let in_flight = metrics.http.in_flight.get_or_create(&route_labels).clone();
    in_flight.inc();
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    in_flight.dec();

    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", status.as_str());
    }
    metrics
        .http
        .duration
        .get_or_create(&route_labels)
        .observe(started.elapsed().as_secs_f64());
    metrics
        .http
        .requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: status.as_u16(),
        })
        .inc();
    response
}

/// Serves `router` on `addr` until SIGTERM or SIGINT, then stops accepting, marks the service
/// not ready and lets in-flight requests finish for at most `grace`.
pub async fn serve(
    router: Router,
    addr: SocketAddr,
    readiness: Readiness,
    grace: Duration,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "listening");
    serve_on(listener, router, shutdown_signal(), readiness, grace).await
}

/// Like [`serve`] on an already bound listener with an explicit shutdown trigger (tests, and
/// callers that bind port 0).
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    readiness: Readiness,
    grace: Duration,
) -> std::io::Result<()> {
    let (stopping_tx, stopping_rx) = tokio::sync::watch::channel(false);
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        readiness.set(false);
        tracing::info!("shutting down: draining in-flight requests");
        let _ = stopping_tx.send(true);
    });
    let mut stopping = stopping_rx;
    tokio::select! {
        result = server => result,
        () = async {
            let _ = stopping.wait_for(|stopping| *stopping).await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(?grace, "grace period over; abandoning unfinished requests");
            Ok(())
        }
    }
}

/// Resolves on SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::post;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    fn router(readiness: Readiness, metrics: Metrics) -> Router {
        let api = Router::new()
            .route("/echo", post(|body: axum::body::Bytes| async move { body }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            );
        service_router(
            api,
            metrics,
            readiness,
            Limits {
                max_body_bytes: 16,
                request_timeout: Duration::from_millis(50),
            },
        )
    }

    async fn call(router: &Router, request: http::Request<Body>) -> (StatusCode, String) {
        let response = router.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn get_request(uri: &str) -> http::Request<Body> {
        http::Request::get(uri)
            .body(Body::empty())
            .expect("request")
    }

    #[tokio::test]
    async fn readiness_follows_the_flag() {
        let readiness = Readiness::default();
        let router = router(readiness.clone(), Metrics::default());
        assert_eq!(
            call(&router, get_request("/healthz")).await.0,
            StatusCode::OK
        );
        assert_eq!(
            call(&router, get_request("/readyz")).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        readiness.set(true);
        assert_eq!(
            call(&router, get_request("/readyz")).await.0,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn limits_are_enforced() {
        let router = router(Readiness::ready(), Metrics::default());
        let small = http::Request::post("/echo")
            .body(Body::from("hello"))
            .expect("request");
        assert_eq!(
            call(&router, small).await,
            (StatusCode::OK, "hello".to_owned())
        );
        let big = http::Request::post("/echo")
            .body(Body::from(vec![b'x'; 17]))
            .expect("request");
        assert_eq!(call(&router, big).await.0, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            call(&router, get_request("/slow")).await.0,
            StatusCode::GATEWAY_TIMEOUT
        );
    }

    #[tokio::test]
    async fn metrics_count_requests_by_route_and_status() {
        let metrics = Metrics::default();
        let router = router(Readiness::ready(), metrics.clone());
        let request = http::Request::post("/echo")
            .body(Body::from("a"))
            .expect("request");
        call(&router, request).await;
        let (status, text) = call(&router, get_request("/metrics")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            text.contains(
                r#"tracedpipeline_http_server_requests_total{method="POST",route="/echo",status="200"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("tracedpipeline_http_server_request_duration_seconds_bucket"));
        assert!(text.contains("tracedpipeline_otel_spans_dropped_total"));
    }

    #[tokio::test]
    async fn graceful_shutdown_drains_in_flight_requests() {
        let readiness = Readiness::ready();
        let api = Router::new().route(
            "/work",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "done"
            }),
        );
        let router = service_router(
            api,
            Metrics::default(),
            readiness.clone(),
            Limits {
                max_body_bytes: 1024,
                request_timeout: Duration::from_secs(5),
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (trigger, triggered) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_on(
            listener,
            router,
            async {
                let _ = triggered.await;
            },
            readiness.clone(),
            Duration::from_secs(5),
        ));
        let request = tokio::spawn(async move {
            reqwest::get(format!("http://{addr}/work"))
                .await
                .expect("request completes")
                .text()
                .await
                .expect("body")
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        trigger.send(()).expect("server waiting");
        assert_eq!(request.await.expect("join"), "done");
        server.await.expect("join").expect("clean exit");
        assert!(!readiness.is_ready());
    }
}
