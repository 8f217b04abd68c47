//! Fake model servers on 127.0.0.1:0 and helpers to call the ensemble's router in-process.

#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use clap::Parser as _;
use ensemble::{AppState, Args, app};
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt as _;
use pipeline_common::api::{ClassScore, IMAGE_BYTES, InferenceResponse};
use pipeline_common::metrics::SpanExportMetrics;
use tower::ServiceExt as _;

/// What a fake model saw of one call.
#[derive(Debug, Clone)]
pub struct Seen {
    pub headers: HeaderMap,
    pub query: Option<String>,
    pub body_len: usize,
}

#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Answers these (class index, probability) pairs.
    Good(Vec<(u16, f32)>),
    /// Answers 500 with a JSON error.
    Fail,
    /// Answers only after this long.
    Slow(Duration),
}

#[derive(Debug, Clone)]
pub struct FakeModel {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeModel {
    pub async fn start(behaviour: Behaviour) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let router = Router::new()
            .route("/inference", post(answer))
            .with_state((behaviour, seen.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { addr, seen }
    }

    pub fn url(&self) -> String {
        format!("http://{}/inference", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

async fn answer(
    State((behaviour, seen)): State<(Behaviour, Arc<Mutex<Vec<Seen>>>)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    seen.lock().expect("lock").push(Seen {
        headers,
        query,
        body_len: body.len(),
    });
    match behaviour {
        Behaviour::Good(scores) => axum::Json(InferenceResponse {
            model: "fake".to_owned(),
            predictions: scores
                .iter()
                .map(|&(class_index, probability)| ClassScore {
                    class_index,
                    class_id: format!("n{class_index:08}"),
                    label: format!("class {class_index}"),
                    probability,
                })
                .collect(),
            inference_ms: 3.5,
        })
        .into_response(),
        Behaviour::Fail => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(serde_json::json!({"error": "inference_failed", "message": "boom"})),
        )
            .into_response(),
        Behaviour::Slow(delay) => {
            tokio::time::sleep(delay).await;
            StatusCode::OK.into_response()
        }
    }
}

/// The ensemble's router for `models` (`name=url,...`) plus extra flags.
pub fn ensemble(models: &str, extra: &[&str]) -> Router {
    let args = Args::try_parse_from(
        ["ensemble", "--models", models, "--model-timeout", "300ms"]
            .into_iter()
            .chain(extra.iter().copied()),
    )
    .expect("valid flags");
    // Explicitly without proxies, so that a proxy set in the environment cannot interfere.
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    app(AppState::new(&args, client, &SpanExportMetrics::default()))
}

pub fn image() -> Vec<u8> {
    vec![7; IMAGE_BYTES]
}

/// Sends `request` to `router`; returns the status and the body parsed as JSON.
pub async fn call(
    router: &Router,
    request: http::Request<Body>,
) -> (StatusCode, serde_json::Value) {
    let (status, body) = call_text(router, request).await;
    let json = serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    (status, json)
}

pub async fn call_text(router: &Router, request: http::Request<Body>) -> (StatusCode, String) {
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
