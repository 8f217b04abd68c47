//! The services, wired by the operator's `OTEL_*` env, export to the real Jaeger v2 (and, in
//! collector mode, through the real OpenTelemetry Collector), each configured with what the
//! operator renders. Traces are read back from Jaeger's api_v3 as the operator's
//! `TracesFlowing` check reads them.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use pipeline_common::api::ClassifyResponse;
use tp_e2e::backends::{
    Backend, JaegerQuery, JaegerSpan, TracedPipelineRun, render, start_traced_pipeline,
};
use tp_e2e::images_dir;
use tp_e2e::process::Pipeline;
use tracedpipeline_operator::api::{TracedPipeline, TracingMode};
use tracedpipeline_operator::build::{COLLECTOR_NAME, COLLECTOR_PATH_ATTRIBUTE};
use tracedpipeline_operator::traces::{JaegerChecker, TracesVerdict, expected_services};

/// A few photos with the class the ensemble must answer (../shared/models/README.md).
const PHOTOS: &[(&str, &str)] = &[
    ("parrot.jpg", "n01818515"),
    ("hot_dog.jpg", "n07697537"),
    ("pets.jpg", "n02096585"),
];

/// The `service.name`s the services report under the operator's wiring.
const SERVICES: [&str; 4] = [
    "preprocessing",
    "ensemble",
    "inference-mobilenetv2",
    "inference-efficientnetb0",
];

fn service_names() -> Vec<String> {
    SERVICES.iter().map(|s| (*s).to_owned()).collect()
}

const KIND_SERVER: i64 = 2;
const KIND_CLIENT: i64 = 3;

/// How long spans may take from a request to Jaeger's storage (batch delays on both hops).
const ARRIVAL: Duration = Duration::from_secs(20);

/// The backends and services of one test, wired as the operator wires them.
struct Setup {
    tp: TracedPipeline,
    jaeger: Backend,
    collector: Option<Backend>,
    pipeline: Pipeline,
    query: JaegerQuery,
    via_collector: bool,
}

async fn setup(mode: &str, protocol: &str) -> Setup {
    let (tp, objects) = render(mode, protocol);
    let expected: BTreeSet<String> = expected_services(&tp).into_iter().collect();
    assert_eq!(
        expected,
        service_names().into_iter().collect(),
        "the operator's TracesFlowing check looks for the services' real names"
    );
    let TracedPipelineRun {
        jaeger,
        collector,
        pipeline,
    } = start_traced_pipeline(&objects).await;
    let query = jaeger.query();
    Setup {
        tp,
        via_collector: collector.is_some(),
        jaeger,
        collector,
        pipeline,
        query,
    }
}

/// A W3C traceparent with fresh ids: (header, trace id, the client's span id).
fn traceparent() -> (String, String, String) {
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let span_id = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    (format!("00-{trace_id}-{span_id}-01"), trace_id, span_id)
}

/// Sends `photo` in a new trace, checks the answer, returns (trace id, client span id).
async fn classify(pipeline: &Pipeline, photo: &str, class: &str) -> (String, String) {
    let path = images_dir().join(photo);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let part = reqwest::multipart::Part::bytes(bytes)
        .file_name(photo.to_owned())
        .mime_str("image/jpeg")
        .expect("mime type");
    let (header, trace_id, span_id) = traceparent();
    let response = reqwest::Client::new()
        .post(pipeline.preprocessing.url("/preprocessing"))
        .header("traceparent", header)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("preprocessing answers");
    assert_eq!(response.status(), 200, "{photo}");
    let answer: ClassifyResponse = response.json().await.expect("classification JSON");
    assert_eq!(answer.top1.class_id, class, "{photo}");
    assert!(!answer.degraded, "{photo}: {:?}", answer.failed_models);
    (trace_id, span_id)
}

/// Every service's server span is there, with both model calls.
fn complete(spans: &[JaegerSpan]) -> bool {
    SERVICES.iter().all(|service| {
        spans
            .iter()
            .any(|s| s.service == *service && s.kind == KIND_SERVER)
    }) && spans
        .iter()
        .filter(|s| s.service == "ensemble" && s.kind == KIND_CLIENT)
        .count()
        >= 2
}

/// Polls `GET /api/v3/traces/{id}` until the trace is complete or `within` has passed.
async fn wait_for_trace(setup: &Setup, trace_id: &str, within: Duration) -> Vec<JaegerSpan> {
    let deadline = Instant::now() + within;
    loop {
        let spans = setup.query.trace(trace_id).await.unwrap_or_default();
        if complete(&spans) {
            return spans;
        }
        if Instant::now() >= deadline {
            let seen: Vec<_> = spans
                .iter()
                .map(|s| (&s.service, s.kind, &s.name))
                .collect();
            let collector_log = setup
                .collector
                .as_ref()
                .map(Backend::log_tail)
                .unwrap_or_default();
            panic!(
                "trace {trace_id} incomplete in Jaeger after {within:?}: {seen:?}\n\
                 jaeger:\n{}\ncollector:\n{collector_log}",
                setup.jaeger.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn server<'a>(spans: &'a [JaegerSpan], service: &str) -> &'a JaegerSpan {
    let servers: Vec<_> = spans
        .iter()
        .filter(|s| s.service == service && s.kind == KIND_SERVER)
        .collect();
    let [span] = servers[..] else {
        panic!("expected one server span from {service}, got {servers:?}");
    };
    span
}

fn parent<'a>(spans: &'a [JaegerSpan], child: &JaegerSpan) -> &'a JaegerSpan {
    spans
        .iter()
        .find(|s| s.span_id == child.parent_span_id)
        .unwrap_or_else(|| panic!("parent of {child:?} is not in the trace"))
}

/// client → preprocessing → ensemble → both models, and the collector marker on every span
/// exactly when the spans took the collector path.
fn assert_trace(spans: &[JaegerSpan], trace_id: &str, client_span: &str, via_collector: bool) {
    assert!(spans.iter().all(|s| s.trace_id == trace_id));
    let services: BTreeSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(services, BTreeSet::from(SERVICES), "services in the trace");

    let pre = server(spans, "preprocessing");
    assert_eq!(pre.parent_span_id, client_span, "joins the caller's trace");
    let ensemble = server(spans, "ensemble");
    let pre_client = parent(spans, ensemble);
    assert_eq!(
        (pre_client.service.as_str(), pre_client.kind),
        ("preprocessing", KIND_CLIENT)
    );
    assert_eq!(parent(spans, pre_client).span_id, pre.span_id);
    for model in &SERVICES[2..] {
        let call = parent(spans, server(spans, model));
        assert_eq!(
            (call.service.as_str(), call.kind),
            ("ensemble", KIND_CLIENT)
        );
        // The model calls hang off the ensemble's server span (directly or via its fan-out).
        let mut up = call;
        while up.span_id != ensemble.span_id {
            assert_eq!(up.service, "ensemble", "{model} call outside the ensemble");
            up = parent(spans, up);
        }
    }

    for span in spans {
        let marker = span.resource.get(COLLECTOR_PATH_ATTRIBUTE);
        if via_collector {
            assert_eq!(
                marker.map(String::as_str),
                Some(COLLECTOR_NAME),
                "{} {}: no collector marker",
                span.service,
                span.name
            );
        } else {
            assert_eq!(
                marker, None,
                "{} {}: marked in direct mode",
                span.service, span.name
            );
        }
    }
}

impl Setup {
    /// The operator's `TracesFlowing` check, pointed at this Jaeger, as if the pipeline were
    /// wired for `wiring`.
    async fn traces_verdict(&self, wiring: TracingMode) -> TracesVerdict {
        let checker = JaegerChecker::new(
            Some(self.jaeger.query_base_url()),
            Duration::from_secs(300),
            Duration::from_secs(10),
        )
        .expect("HTTP client");
        checker
            .check("ignored", &expected_services(&self.tp), wiring)
            .await
    }
}

/// Every request is one complete trace in Jaeger, and Jaeger holds no other trace; the
/// operator's `TracesFlowing` check reads the same truth from Jaeger's API.
async fn traces_reach_jaeger(mode: &str, protocol: &str) {
    let setup = setup(mode, protocol).await;
    let wiring = setup.tp.spec.tracing.mode;
    let all_missing = TracesVerdict::Missing {
        missing: service_names(),
        not_via_collector: Vec::new(),
    };
    assert_eq!(
        setup.traces_verdict(wiring).await,
        all_missing,
        "before any request"
    );
    let from = Timestamp::now() - SignedDuration::from_secs(1);
    let mut sent = Vec::new();
    for (photo, class) in PHOTOS {
        sent.push(classify(&setup.pipeline, photo, class).await);
    }
    for (trace_id, client_span) in &sent {
        let spans = wait_for_trace(&setup, trace_id, ARRIVAL).await;
        assert_trace(&spans, trace_id, client_span, setup.via_collector);
    }

    let to = Timestamp::now() + SignedDuration::from_secs(1);
    let services: BTreeSet<String> = setup
        .query
        .services()
        .await
        .expect("GET /api/v3/services")
        .into_iter()
        .collect();
    assert_eq!(
        services,
        service_names().into_iter().collect(),
        "services known to Jaeger"
    );
    let expected: BTreeSet<&str> = sent.iter().map(|(t, _)| t.as_str()).collect();
    for service in SERVICES {
        let spans = setup
            .query
            .find_traces(service, from, to, 100)
            .await
            .unwrap_or_else(|e| panic!("search {service}: {e:#}"));
        let found: BTreeSet<&str> = spans.iter().map(|s| s.trace_id.as_str()).collect();
        assert_eq!(found, expected, "traces with {service} spans in the window");
        // Per trace, the search returns the whole trace: no span was lost on the way.
        let mut per_trace: HashMap<&str, Vec<JaegerSpan>> = HashMap::new();
        for span in &spans {
            per_trace
                .entry(span.trace_id.as_str())
                .or_default()
                .push(span.clone());
        }
        for (trace_id, client_span) in &sent {
            assert_trace(
                &per_trace[trace_id.as_str()],
                trace_id,
                client_span,
                setup.via_collector,
            );
        }
    }

    assert_eq!(
        setup.traces_verdict(wiring).await,
        TracesVerdict::Flowing {
            services: SERVICES.len(),
            via_collector: setup.via_collector,
        },
        "the operator's check after the requests"
    );
    if !setup.via_collector {
        // Spans that bypassed the collector do not count for a pipeline wired to it.
        assert_eq!(
            setup.traces_verdict(TracingMode::Collector).await,
            TracesVerdict::Missing {
                missing: Vec::new(),
                not_via_collector: service_names(),
            },
            "direct spans checked as if the pipeline were wired to the collector"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_grpc() {
    traces_reach_jaeger("direct", "grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_http() {
    traces_reach_jaeger("direct", "http").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_grpc() {
    traces_reach_jaeger("collector", "grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_http() {
    traces_reach_jaeger("collector", "http").await;
}

/// Which backend the restart test stops.
#[derive(Clone, Copy, Debug)]
enum Restarted {
    Jaeger,
    Collector,
}

/// The services keep answering while `which` is down, and traces arrive again once it is back
/// on the same ports (the OTLP exporters reconnect by themselves).
async fn traces_resume_after_restart(mode: &str, protocol: &str, which: Restarted) {
    let mut setup = setup(mode, protocol).await;
    let (photo, class) = PHOTOS[0];
    let (trace_id, client_span) = classify(&setup.pipeline, photo, class).await;
    let spans = wait_for_trace(&setup, &trace_id, ARRIVAL).await;
    assert_trace(&spans, &trace_id, &client_span, setup.via_collector);

    let backend = match which {
        Restarted::Jaeger => &mut setup.jaeger,
        Restarted::Collector => setup.collector.as_mut().expect("collector mode"),
    };
    backend.stop();
    for (photo, class) in PHOTOS {
        classify(&setup.pipeline, photo, class).await;
    }
    let backend = match which {
        Restarted::Jaeger => &mut setup.jaeger,
        Restarted::Collector => setup.collector.as_mut().expect("collector mode"),
    };
    backend.start().await;

    // Requests right after the restart may meet an exporter still backing off; keep sending
    // until one trace arrives whole, within a bound.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (trace_id, client_span) = classify(&setup.pipeline, photo, class).await;
        let round = Instant::now() + Duration::from_secs(5);
        while Instant::now() < round {
            let spans = setup.query.trace(&trace_id).await.unwrap_or_default();
            if complete(&spans) {
                assert_trace(&spans, &trace_id, &client_span, setup.via_collector);
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(
            Instant::now() < deadline,
            "no complete trace reached Jaeger after the {which:?} restart\njaeger:\n{}",
            setup.jaeger.log_tail()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_restart_direct_grpc() {
    traces_resume_after_restart("direct", "grpc", Restarted::Jaeger).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_restart_http() {
    traces_resume_after_restart("collector", "http", Restarted::Collector).await;
}
