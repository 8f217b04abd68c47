use super::*;

/// Recorded from Jaeger 2.9 `GET /api/v3/services` (shape).
const SERVICES: &str =
    r#"{"services":["ensemble","inference-mobilenetv2","jaeger","preprocessing"]}"#;

/// A FindTraces answer for `preprocessing`: one trace crossing preprocessing (via the
/// collector) and ensemble (direct), plus an old preprocessing span outside the window.
const TRACES: &str = r#"{
  "result": {
    "resourceSpans": [
      {
        "resource": {"attributes": [
          {"key": "service.name", "value": {"stringValue": "preprocessing"}},
          {"key": "tracedpipeline.collector.path", "value": {"stringValue": "otel-collector"}}
        ]},
        "scopeSpans": [{"scope": {"name": "tracedpipeline"}, "spans": [
          {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "POST /preprocessing", "kind": 2, "startTimeUnixNano": "2000", "endTimeUnixNano": "3000"},
          {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b175", "name": "resize", "kind": 1, "startTimeUnixNano": "2100", "endTimeUnixNano": "2200"}
        ]}]
      },
      {
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "preprocessing"}}]},
        "scopeSpans": [{"scope": {}, "spans": [
          {"traceId": "00000000000000000000000000000001", "spanId": "0000000000000001", "name": "old", "startTimeUnixNano": "500"}
        ]}]
      },
      {
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "ensemble"}}]},
        "scopeSpans": [{"scope": {}, "spans": [
          {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "aaa19b7ec3c1b174", "name": "POST /ensemble_service", "startTimeUnixNano": "2500"}
        ]}]
      }
    ]
  }
}"#;

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn parses_services() {
    assert_eq!(
        parse_services(SERVICES.as_bytes()).expect("parses"),
        names(&[
            "ensemble",
            "inference-mobilenetv2",
            "jaeger",
            "preprocessing"
        ])
    );
    assert_eq!(parse_services(b"{}").expect("parses"), Vec::<String>::new());
}

#[test]
fn summarizes_only_the_asked_service_within_the_window() {
    let s = summarize_traces(TRACES.as_bytes(), "preprocessing", 1000).expect("parses");
    assert_eq!(
        s,
        SpanSummary {
            spans: 2,
            via_collector: 2
        }
    );
    let s = summarize_traces(TRACES.as_bytes(), "preprocessing", 0).expect("parses");
    assert_eq!((s.spans, s.via_collector), (3, 2));
    let s = summarize_traces(TRACES.as_bytes(), "ensemble", 1000).expect("parses");
    assert_eq!((s.spans, s.via_collector), (1, 0));
    let s = summarize_traces(TRACES.as_bytes(), "inference-x", 0).expect("parses");
    assert_eq!(s, SpanSummary::default());
    // Jaeger's empty answer.
    let s = summarize_traces(br#"{"result":{}}"#, "ensemble", 0).expect("parses");
    assert_eq!(s, SpanSummary::default());
}

fn found(entries: &[(&str, usize, usize)]) -> BTreeMap<String, SpanSummary> {
    entries
        .iter()
        .map(|(n, spans, via)| {
            (
                (*n).to_owned(),
                SpanSummary {
                    spans: *spans,
                    via_collector: *via,
                },
            )
        })
        .collect()
}

#[test]
fn direct_mode_needs_spans_from_every_service() {
    let expected = names(&["preprocessing", "ensemble", "inference-a"]);
    let all = found(&[
        ("preprocessing", 3, 0),
        ("ensemble", 1, 0),
        ("inference-a", 2, 0),
    ]);
    assert_eq!(
        evaluate(&expected, TracingMode::Direct, &all),
        TracesVerdict::Flowing {
            services: 3,
            via_collector: false
        }
    );
    let some = found(&[("preprocessing", 3, 0), ("inference-a", 0, 0)]);
    let verdict = evaluate(&expected, TracingMode::Direct, &some);
    assert_eq!(
        verdict,
        TracesVerdict::Missing {
            missing: names(&["ensemble", "inference-a"]),
            not_via_collector: vec![]
        }
    );
    let (status, reason, message) = verdict.condition(DEFAULT_WINDOW);
    assert_eq!((status, reason), ("False", "SpansMissing"));
    assert_eq!(
        message,
        "no spans in the last 5m from: ensemble, inference-a"
    );
}

#[test]
fn collector_mode_needs_the_collector_attribute() {
    let expected = names(&["preprocessing", "ensemble"]);
    let f = found(&[("preprocessing", 3, 3), ("ensemble", 1, 0)]);
    let verdict = evaluate(&expected, TracingMode::Collector, &f);
    assert_eq!(
        verdict,
        TracesVerdict::Missing {
            missing: vec![],
            not_via_collector: names(&["ensemble"])
        }
    );
    let (status, reason, message) = verdict.condition(DEFAULT_WINDOW);
    assert_eq!((status, reason), ("False", "CollectorBypassed"));
    assert!(message.contains("through the collector"), "{message}");
    assert!(message.ends_with("ensemble"), "{message}");

    let f = found(&[("preprocessing", 3, 1), ("ensemble", 1, 1)]);
    let (status, reason, _) =
        evaluate(&expected, TracingMode::Collector, &f).condition(DEFAULT_WINDOW);
    assert_eq!((status, reason), ("True", "SpansReceived"));
}

#[test]
fn expected_services_follow_the_builders() {
    let tp = TracedPipeline::new("demo", crate::api::TracedPipelineSpec::default());
    assert_eq!(
        expected_services(&tp),
        names(&[
            "preprocessing",
            "ensemble",
            "inference-mobilenetv2",
            "inference-efficientnetb0"
        ])
    );
}

#[tokio::test]
async fn unreachable_jaeger_is_unknown_not_an_error() {
    // Port 9 (discard) on localhost: refused at once; the bounded timeout covers the rest.
    let checker = JaegerChecker::new(
        Some("http://127.0.0.1:9".to_owned()),
        DEFAULT_WINDOW,
        Duration::from_secs(2),
    )
    .expect("client");
    let verdict = checker
        .check("demo", &names(&["preprocessing"]), TracingMode::Direct)
        .await;
    let (status, reason, message) = verdict.condition(DEFAULT_WINDOW);
    assert_eq!((status, reason), ("Unknown", "JaegerUnreachable"));
    assert!(message.contains("http://127.0.0.1:9"), "{message}");
}

#[test]
fn url_template_takes_the_namespace() {
    let checker = JaegerChecker::new(None, DEFAULT_WINDOW, DEFAULT_TIMEOUT).expect("client");
    assert_eq!(checker.base_url("demo"), "http://jaeger.demo.svc:16686");
}
