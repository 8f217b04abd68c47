//! `POST /preprocessing` through the whole `app()` stack (`oneshot`, no socket on our side)
//! against a fake ensemble on loopback that records what it was sent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use clap::Parser as _;
use http_body_util::BodyExt as _;
use pipeline_common::api::{
    AcceptedResponse, AggregationStrategy, ClassScore, ClassifyResponse, EnsembleResponse,
    EnsembleTimings, ErrorBody, IMAGE_BYTES, ModelAnswer,
};
use pipeline_common::metrics::MetricsBuilder;
use preprocessing::{AppState, Config, app};
use tower::ServiceExt as _;

/// What the fake ensemble saw of one call.
#[derive(Debug, Clone)]
struct Seen {
    query: String,
    headers: HeaderMap,
    body_len: usize,
}

#[derive(Clone)]
struct Fake {
    seen: Arc<Mutex<Vec<Seen>>>,
    status: StatusCode,
}

async fn fake_ensemble(
    State(fake): State<Fake>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    fake.seen.lock().expect("lock").push(Seen {
        query: query.unwrap_or_default(),
        headers: headers.clone(),
        body_len: body.len(),
    });
    if fake.status != StatusCode::OK {
        let error = ErrorBody {
            error: "all_models_failed".into(),
            message: "mobilenetv2: connect; efficientnetb0: timeout".into(),
            request_id: None,
        };
        return (fake.status, serde_json::to_string(&error).expect("json"));
    }
    let macaw = ClassScore {
        class_index: 88,
        class_id: "n01818515".into(),
        label: "macaw".into(),
        probability: 0.9,
    };
    let answer = EnsembleResponse {
        request_id: "from-query".into(),
        strategy: AggregationStrategy::AverageProbability,
        prediction: vec![macaw.clone()],
        models: vec![ModelAnswer {
            model: "mobilenetv2".into(),
            predictions: vec![macaw],
            inference_ms: 9.0,
            latency_ms: 10.0,
        }],
        failed_models: vec![],
        degraded: false,
        timestamp: headers
            .get("timestamp")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        timings_ms: EnsembleTimings {
            models: 10.0,
            aggregate: 0.1,
            total: 10.2,
        },
    };
    (
        StatusCode::OK,
        serde_json::to_string(&answer).expect("json"),
    )
}

/// A fake ensemble answering `status`, and the service's router pointed at it.
async fn setup(status: StatusCode, extra_args: &[&str]) -> (Router, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let fake = Router::new()
        .route("/ensemble_service", post(fake_ensemble))
        .with_state(Fake {
            seen: seen.clone(),
            status,
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, fake).await });
    let url = format!("http://{addr}/ensemble_service");
    let mut args = vec![
        "preprocessing",
        "--ensemble-url",
        &url,
        "--max-upload-bytes",
        "200000",
    ];
    args.extend_from_slice(extra_args);
    let config = Config::try_parse_from(args).expect("config");
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let state = AppState::new(&config, client, MetricsBuilder::new(&Default::default()));
    (app(state), seen)
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_pixel(width, height, image::Rgb([200, 10, 10]));
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(image)
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("encode");
    out.into_inner()
}

fn multipart(part_name: &str, part_type: &str, bytes: &[u8]) -> http::Request<Body> {
    let boundary = "XyZboundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{part_name}\"; filename=\"x.png\"\r\nContent-Type: {part_type}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    http::Request::post("/preprocessing")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .header("timestamp", "1700000000.25")
        .header("authorization", "Bearer secret")
        .body(Body::from(body))
        .expect("request")
}

async fn send(router: Router, request: http::Request<Body>) -> (StatusCode, HeaderMap, Bytes) {
    let response = router.oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    (
        status,
        headers,
        response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes(),
    )
}

#[tokio::test]
async fn multipart_upload_is_prepared_forwarded_and_answered() {
    let (router, seen) = setup(StatusCode::OK, &[]).await;
    let (status, headers, body) = send(router, multipart("file", "image/png", &png(40, 30))).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let answer: ClassifyResponse = serde_json::from_slice(&body).expect("classification");
    assert_eq!(answer.top1.label, "macaw");
    assert_eq!(answer.timestamp.as_deref(), Some("1700000000.25"));
    assert_eq!(
        headers.get("x-request-id").and_then(|v| v.to_str().ok()),
        Some(answer.request_id.as_str())
    );
    assert!(answer.timings_ms.total >= answer.timings_ms.decode + answer.timings_ms.resize);

    let seen = seen.lock().expect("lock");
    assert_eq!(seen.len(), 1);
    let call = &seen[0];
    assert_eq!(call.body_len, IMAGE_BYTES, "224x224x3 raw pixels");
    assert_eq!(call.query, format!("request_id={}", answer.request_id));
    assert_eq!(
        call.headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/octet-stream"[..])
    );
    assert_eq!(
        call.headers.get("timestamp").map(|v| v.as_bytes()),
        Some(&b"1700000000.25"[..])
    );
    assert!(
        call.headers.get("authorization").is_none(),
        "client headers are not forwarded"
    );
}

#[tokio::test]
async fn raw_image_body_is_accepted() {
    let (router, seen) = setup(StatusCode::OK, &[]).await;
    let request = http::Request::post("/preprocessing")
        .header("content-type", "image/png")
        .body(Body::from(png(300, 500)))
        .expect("request");
    let (status, _, _) = send(router, request).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        seen.lock().expect("lock")[0]
            .headers
            .get("timestamp")
            .is_none(),
        "Timestamp is optional"
    );
}

#[tokio::test]
async fn client_mistakes_are_4xx_json_and_never_reach_the_ensemble() {
    let (router, seen) = setup(StatusCode::OK, &[]).await;
    let cases: Vec<(&str, http::Request<Body>, StatusCode, &str)> = vec![
        (
            "wrong part name",
            multipart("image", "image/png", &png(4, 4)),
            StatusCode::BAD_REQUEST,
            "missing_file_part",
        ),
        (
            "text part",
            multipart("file", "text/plain", b"hello"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not_an_image",
        ),
        (
            "text posing as png",
            multipart("file", "image/png", b"hello"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_image_format",
        ),
        (
            "empty part",
            multipart("file", "image/png", b""),
            StatusCode::BAD_REQUEST,
            "empty_image",
        ),
        (
            "oversized",
            multipart("file", "image/png", &vec![0; 300_000]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "upload_too_large",
        ),
        (
            "json body",
            http::Request::post("/preprocessing")
                .header("content-type", "application/json")
                .body(Body::from("{}"))
                .expect("request"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_content_type",
        ),
        (
            "broken multipart",
            http::Request::post("/preprocessing")
                .header("content-type", "multipart/form-data; boundary=nope")
                .body(Body::from("garbage"))
                .expect("request"),
            StatusCode::BAD_REQUEST,
            "malformed_multipart",
        ),
    ];
    for (case, request, expected, code) in cases {
        let (status, _, body) = send(router.clone(), request).await;
        assert_eq!(
            status,
            expected,
            "{case}: {}",
            String::from_utf8_lossy(&body)
        );
        let error: ErrorBody =
            serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(error.error, code, "{case}");
        assert!(error.request_id.is_some(), "{case}");
    }
    assert!(seen.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn ensemble_failures_are_502_with_its_reason() {
    let (router, _) = setup(StatusCode::SERVICE_UNAVAILABLE, &[]).await;
    let (status, _, body) = send(router, multipart("file", "image/png", &png(8, 8))).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let error: ErrorBody = serde_json::from_slice(&body).expect("json");
    assert_eq!(error.error, "ensemble_failed");
    assert!(
        error.message.contains("efficientnetb0: timeout"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn unreachable_ensemble_is_502() {
    let config = Config::try_parse_from([
        "preprocessing",
        "--ensemble-url",
        "http://127.0.0.1:1/ensemble_service",
        "--ensemble-timeout",
        "2s",
    ])
    .expect("config");
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let router = app(AppState::new(
        &config,
        client,
        MetricsBuilder::new(&Default::default()),
    ));
    let (status, _, body) = send(router, multipart("file", "image/png", &png(8, 8))).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let error: ErrorBody = serde_json::from_slice(&body).expect("json");
    assert_eq!(error.error, "ensemble_unreachable");
}

#[tokio::test]
async fn accepted_mode_answers_before_classifying() {
    let (router, seen) = setup(StatusCode::OK, &["--response-mode", "accepted"]).await;
    let (status, _, body) = send(router, multipart("file", "image/png", &png(8, 8))).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let answer: AcceptedResponse = serde_json::from_slice(&body).expect("json");
    assert_eq!(answer.response, "File accepted");
    // The classification still happens, in the background.
    for _ in 0..50 {
        if !seen.lock().expect("lock").is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the background classification never called the ensemble");
}
