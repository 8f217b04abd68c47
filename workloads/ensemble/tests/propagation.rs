//! The models' calls join the caller's trace. Its own test binary, because it installs the global
//! propagator.

mod support;

use axum::body::Body;
use http::StatusCode;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use support::{Behaviour, FakeModel, call, ensemble, image};
use tracing_subscriber::layer::SubscriberExt as _;

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";

#[tokio::test]
async fn model_calls_carry_the_callers_trace() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    // The test runtime is single-threaded, so the fake models and the router share this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);

    let (a, b) = (
        FakeModel::start(Behaviour::Good(vec![(1, 0.9)])).await,
        FakeModel::start(Behaviour::Good(vec![(1, 0.8)])).await,
    );
    let router = ensemble(&format!("a={},b={}", a.url(), b.url()), &[]);
    let request = http::Request::post("/ensemble_service")
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
        .body(Body::from(image()))
        .expect("request");
    let (status, json) = call(&router, request).await;
    assert_eq!(status, StatusCode::OK, "{json}");

    let mut parents = Vec::new();
    for model in [&a, &b] {
        let seen = model.seen();
        let traceparent = seen[0]
            .headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .expect("traceparent sent");
        let parts: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(parts.len(), 4, "{traceparent}");
        assert_eq!(parts[1], TRACE_ID, "same trace");
        // The parent is the ensemble's own CLIENT span, not the caller's span passed through.
        assert_ne!(parts[2], CALLER_SPAN);
        parents.push(parts[2].to_owned());
    }
    assert_ne!(parents[0], parents[1], "each model call has its own span");
}
