//! `POST /ensemble_service` end to end against fake models started in-test.

mod support;

use std::time::{Duration, Instant};

use axum::body::Body;
use http::StatusCode;
use pipeline_common::api::{EnsembleResponse, ErrorBody};
use support::{Behaviour, FakeModel, call, call_text, ensemble, image};

fn good_a() -> Behaviour {
    Behaviour::Good(vec![(1, 0.6), (2, 0.3)])
}

fn good_b() -> Behaviour {
    Behaviour::Good(vec![(1, 0.5), (3, 0.4)])
}

fn slow() -> Behaviour {
    Behaviour::Slow(Duration::from_secs(3))
}

fn request(uri: &str) -> http::request::Builder {
    http::Request::post(uri).header("content-type", "application/octet-stream")
}

fn classify(uri: &str) -> http::Request<Body> {
    request(uri).body(Body::from(image())).expect("request")
}

async fn ok(router: &axum::Router, request: http::Request<Body>) -> EnsembleResponse {
    let (status, json) = call(router, request).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    serde_json::from_value(json).expect("an EnsembleResponse")
}

async fn error(
    router: &axum::Router,
    request: http::Request<Body>,
    expected: StatusCode,
) -> ErrorBody {
    let (status, json) = call(router, request).await;
    assert_eq!(status, expected, "{json}");
    serde_json::from_value(json).expect("an ErrorBody")
}

#[tokio::test]
async fn both_models_answer() {
    let (a, b) = (
        FakeModel::start(good_a()).await,
        FakeModel::start(good_b()).await,
    );
    let router = ensemble(&format!("a={},b={}", a.url(), b.url()), &[]);
    let answer = ok(&router, classify("/ensemble_service?request_id=r-1")).await;

    assert_eq!(answer.request_id, "r-1");
    assert!(!answer.degraded);
    assert!(answer.failed_models.is_empty());
    let models: Vec<_> = answer.models.iter().map(|m| m.model.as_str()).collect();
    assert_eq!(models, ["a", "b"]);
    assert!(
        answer
            .models
            .iter()
            .all(|m| m.inference_ms == 3.5 && m.latency_ms > 0.0)
    );
    // Means over both models: class 1 = 0.55, class 3 = 0.2, class 2 = 0.15.
    let ranking: Vec<_> = answer.prediction.iter().map(|c| c.class_index).collect();
    assert_eq!(ranking, [1, 3, 2]);
    assert!((answer.prediction[0].probability - 0.55).abs() < 1e-6);
    assert_eq!(answer.prediction[0].class_id, "n00000001");
    assert!(answer.timings_ms.total >= answer.timings_ms.models);
    assert_eq!(answer.timestamp, None);
}

#[tokio::test]
async fn only_the_needed_headers_reach_the_models() {
    let (a, b) = (
        FakeModel::start(good_a()).await,
        FakeModel::start(good_b()).await,
    );
    let router = ensemble(&format!("a={},b={}", a.url(), b.url()), &[]);
    let request = request("/ensemble_service?request_id=r-2")
        .header("host", "ensemble.example:5011")
        .header("timestamp", "1712345678.25")
        .header("authorization", "Bearer secret")
        .header("cookie", "session=1")
        .header("x-forwarded-for", "10.0.0.1")
        .header("user-agent", "loadgen/1.0")
        .body(Body::from(image()))
        .expect("request");
    let answer = ok(&router, request).await;
    assert_eq!(answer.timestamp.as_deref(), Some("1712345678.25"));

    for model in [&a, &b] {
        let seen = model.seen();
        assert_eq!(seen.len(), 1);
        let seen = &seen[0];
        assert_eq!(seen.body_len, pipeline_common::api::IMAGE_BYTES);
        assert_eq!(seen.query.as_deref(), Some("top_k=10"));
        let header = |name: &str| seen.headers.get(name).and_then(|v| v.to_str().ok());
        assert_eq!(header("timestamp"), Some("1712345678.25"));
        assert_eq!(header("content-type"), Some("application/octet-stream"));
        assert_eq!(header("host"), Some(model.addr.to_string().as_str()));
        for absent in ["authorization", "cookie", "x-forwarded-for"] {
            assert_eq!(header(absent), None, "{absent} was forwarded");
        }
        assert_ne!(header("user-agent"), Some("loadgen/1.0"));
    }
}

#[tokio::test]
async fn a_failing_model_degrades_the_answer() {
    let (good, bad) = (
        FakeModel::start(good_a()).await,
        FakeModel::start(Behaviour::Fail).await,
    );
    let router = ensemble(&format!("bad={},good={}", bad.url(), good.url()), &[]);
    let answer = ok(&router, classify("/ensemble_service?request_id=r-3")).await;
    assert!(answer.degraded);
    assert_eq!(answer.models.len(), 1);
    assert_eq!(answer.models[0].model, "good");
    assert_eq!(answer.failed_models.len(), 1);
    assert_eq!(answer.failed_models[0].model, "bad");
    let reason = &answer.failed_models[0].error;
    assert!(
        reason.contains("500") && reason.contains("boom"),
        "{reason}"
    );
    // The answering model alone decides.
    assert_eq!(answer.prediction[0].class_index, 1);
    assert!((answer.prediction[0].probability - 0.6).abs() < 1e-6);

    let (status, metrics) = call_text(
        &router,
        http::Request::get("/metrics")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        metrics.contains(
            r#"tracedpipeline_ensemble_model_call_failures_total{model="bad",reason="status"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"tracedpipeline_ensemble_model_call_duration_seconds_count{model="good"} 1"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_slow_model_times_out() {
    let (good, late) = (
        FakeModel::start(good_b()).await,
        FakeModel::start(slow()).await,
    );
    let router = ensemble(&format!("good={},late={}", good.url(), late.url()), &[]);
    let started = Instant::now();
    let answer = ok(&router, classify("/ensemble_service")).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "waited for the slow model"
    );
    assert!(answer.degraded);
    assert_eq!(answer.failed_models[0].model, "late");
    assert_eq!(answer.failed_models[0].error, "timed out after 300ms");
    assert_eq!(answer.models[0].model, "good");
    // No request_id given: one is generated.
    assert!(
        uuid::Uuid::parse_str(&answer.request_id).is_ok(),
        "{}",
        answer.request_id
    );
}

#[tokio::test]
async fn all_models_failing_is_503() {
    let (bad, late) = (
        FakeModel::start(Behaviour::Fail).await,
        FakeModel::start(slow()).await,
    );
    let unreachable = {
        // A port nobody listens on: bind, note, release.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let router = ensemble(
        &format!(
            "bad={},late={},gone=http://{unreachable}/inference",
            bad.url(),
            late.url()
        ),
        &[],
    );
    let body = error(
        &router,
        classify("/ensemble_service?request_id=r-4"),
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    assert_eq!(body.error, "all_models_failed");
    assert_eq!(body.request_id.as_deref(), Some("r-4"));
    for part in [
        "bad: HTTP 500",
        "late: timed out after 300ms",
        "gone: connect error",
    ] {
        assert!(
            body.message.contains(part),
            "{part:?} missing in {}",
            body.message
        );
    }
}

#[tokio::test]
async fn wrong_length_is_400_and_reaches_no_model() {
    let a = FakeModel::start(good_a()).await;
    let router = ensemble(&format!("a={}", a.url()), &[]);
    for length in [0, 100, pipeline_common::api::IMAGE_BYTES + 1] {
        let request = request("/ensemble_service?request_id=r-5")
            .body(Body::from(vec![0; length]))
            .expect("request");
        let body = error(&router, request, StatusCode::BAD_REQUEST).await;
        assert_eq!(body.error, "wrong_body_length");
        assert_eq!(body.request_id.as_deref(), Some("r-5"));
    }
    assert!(a.seen().is_empty());
}

#[tokio::test]
async fn other_content_types_are_415() {
    let a = FakeModel::start(good_a()).await;
    let router = ensemble(&format!("a={}", a.url()), &[]);
    let request = http::Request::post("/ensemble_service")
        .header("content-type", "image/jpeg")
        .body(Body::from(image()))
        .expect("request");
    let body = error(&router, request, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    assert_eq!(body.error, "unsupported_content_type");

    // No content type at all is fine (upstream's callers sent none).
    let request = http::Request::post("/ensemble_service")
        .header("timestamp", "42")
        .body(Body::from(image()))
        .expect("request");
    let answer = ok(&router, request).await;
    assert_eq!(answer.timestamp.as_deref(), Some("42"));
    assert_eq!(a.seen().len(), 1);
}

#[tokio::test]
async fn oversized_bodies_and_bad_request_ids_are_rejected() {
    let a = FakeModel::start(good_a()).await;
    let router = ensemble(&format!("a={}", a.url()), &["--max-body-bytes", "150528"]);
    let request = request("/ensemble_service")
        .body(Body::from(vec![0; 200_000]))
        .expect("request");
    let body = error(&router, request, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(body.error, "body_too_large");

    let body = error(
        &router,
        classify("/ensemble_service?request_id=a%20b"),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(body.error, "invalid_request_id");
    assert!(a.seen().is_empty());
}

#[tokio::test]
async fn top_k_and_strategy_are_configurable() {
    let a = FakeModel::start(Behaviour::Good(vec![(1, 0.4), (2, 0.35), (3, 0.25)])).await;
    let b = FakeModel::start(Behaviour::Good(vec![(1, 0.45), (4, 0.3), (5, 0.25)])).await;
    let c = FakeModel::start(Behaviour::Good(vec![(6, 0.9), (1, 0.1)])).await;
    let models = format!("a={},b={},c={}", a.url(), b.url(), c.url());

    let router = ensemble(&models, &["--top-k", "3", "--aggregation", "majority_vote"]);
    let answer = ok(&router, classify("/ensemble_service")).await;
    assert_eq!(a.seen()[0].query.as_deref(), Some("top_k=3"));
    assert_eq!(
        answer.strategy,
        pipeline_common::api::AggregationStrategy::MajorityVote
    );
    // Two votes for class 1 beat one very confident vote for class 6.
    let ranking: Vec<_> = answer.prediction.iter().map(|c| c.class_index).collect();
    assert_eq!(ranking, [1, 6]);

    let router = ensemble(
        &models,
        &["--top-k", "3", "--aggregation", "max_confidence"],
    );
    let answer = ok(&router, classify("/ensemble_service")).await;
    assert_eq!(answer.prediction[0].class_index, 6);

    // average_probability lists every class any model named, cut to top-k.
    let router = ensemble(&models, &["--top-k", "3"]);
    let answer = ok(&router, classify("/ensemble_service")).await;
    // Means over three models: class 1 = 0.95 / 3, class 6 = 0.3, class 2 = 0.35 / 3.
    let ranking: Vec<_> = answer.prediction.iter().map(|c| c.class_index).collect();
    assert_eq!(ranking, [1, 6, 2]);
}

#[tokio::test]
async fn probes_answer() {
    let a = FakeModel::start(good_a()).await;
    let router = ensemble(&format!("a={}", a.url()), &[]);
    for path in ["/healthz", "/readyz"] {
        let (status, _) = call_text(
            &router,
            http::Request::get(path)
                .body(Body::empty())
                .expect("request"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
}
