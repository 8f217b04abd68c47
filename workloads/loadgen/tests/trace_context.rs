//! Each request starts its own trace at the client and carries it in `traceparent`.
//! A separate test binary, because it installs a global subscriber and propagator.

mod common;

use std::collections::HashSet;

use loadgen::config::LoadMode;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;

#[tokio::test]
async fn every_request_starts_a_trace_and_propagates_it() {
    // What `pipeline_common::telemetry::init` installs, minus the exporter.
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("loadgen-test")));
    tracing::subscriber::set_global_default(subscriber).expect("first subscriber");

    let server = common::start().await;
    let outcome = common::run(
        common::config(&server.url, LoadMode::Closed { concurrency: 2 }, Some(6)),
        common::dataset(&["good_n01440764.jpg"]),
    )
    .await;
    assert_eq!(outcome.stats.ok, 6);

    let seen = server.seen();
    assert_eq!(seen.traceparents.len(), 6);
    let mut trace_ids = HashSet::new();
    for header in &seen.traceparents {
        let header = header.as_deref().expect("traceparent sent");
        let fields: Vec<&str> = header.split('-').collect();
        assert_eq!(fields.len(), 4, "{header}");
        assert_eq!(fields[0], "00", "{header}");
        assert_eq!(fields[1].len(), 32, "{header}");
        assert_eq!(fields[2].len(), 16, "{header}");
        assert_eq!(fields[3], "01", "sampled: {header}");
        assert!(fields[1].bytes().all(|b| b.is_ascii_hexdigit()), "{header}");
        assert_ne!(fields[1], "0".repeat(32), "{header}");
        trace_ids.insert(fields[1].to_owned());
    }
    assert_eq!(trace_ids.len(), 6, "each request is its own trace");
}
