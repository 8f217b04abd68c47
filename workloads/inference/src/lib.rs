//! The inference service: `POST /inference` takes a prepared 224×224×3 RGB image and answers the
//! model's top-k ImageNet classes. One binary serves either model (`--model`).

pub mod cpu;
pub mod engine;
pub mod imagenet;
pub mod model;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use http::StatusCode;
use pipeline_common::api::{ClassScore, IMAGE_BYTES, IMAGE_SIDE, InferenceResponse, millis};
use pipeline_common::config::ServerArgs;
use pipeline_common::error::{ApiError, error_response};
use pipeline_common::metrics::{Metrics, MetricsBuilder, latency_histogram};
use pipeline_common::server::{Limits, Readiness, service_router};
use prometheus_client::metrics::histogram::Histogram;
use serde::Deserialize;
use tracing::field;

use crate::engine::{Admission, Classify, EngineConfig, EngineError};
use crate::imagenet::{CLASS_COUNT, classes};
use crate::model::{Layout, ModelKind, Normalization};

pub const DEFAULT_PORT: u16 = 5012;

/// Command line and environment of the inference service.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "inference", version, about = "ONNX image classifier service")]
pub struct Config {
    /// Which model to serve.
    #[arg(long, env = "MODEL", value_enum, ignore_case = true)]
    pub model: ModelKind,
    /// The ONNX file; default: the model's file in `--models-dir`.
    #[arg(long, env = "MODEL_PATH")]
    pub model_path: Option<PathBuf>,
    /// Directory holding the model files.
    #[arg(long, env = "MODELS_DIR", default_value = "models")]
    pub models_dir: PathBuf,
    /// ONNX Runtime shared library (`libonnxruntime.so`).
    #[arg(long, env = "ORT_DYLIB_PATH", default_value = "libonnxruntime.so")]
    pub onnxruntime: PathBuf,
    /// Name of the model input to feed; default: the model's first input.
    #[arg(long, env = "MODEL_INPUT_NAME")]
    pub input_name: Option<String>,
    /// Override the model profile's tensor layout.
    #[arg(long, env = "MODEL_INPUT_LAYOUT", value_enum)]
    pub input_layout: Option<Layout>,
    /// Override the model profile's pixel normalisation.
    #[arg(long, env = "MODEL_NORMALIZATION", value_enum)]
    pub normalization: Option<Normalization>,
    /// ONNX Runtime intra-op threads per session; 0 = the container's CPU limit.
    #[arg(long, env = "INTRA_OP_THREADS", default_value_t = 0)]
    pub intra_op_threads: usize,
    /// Inferences that may run at once (one ONNX session each).
    #[arg(long, env = "MAX_CONCURRENT_INFERENCES", default_value_t = 1)]
    pub max_concurrent: usize,
    /// Requests that may wait for a free session; more are answered 503 with Retry-After.
    #[arg(long, env = "QUEUE_DEPTH", default_value_t = 16)]
    pub queue_depth: usize,
    #[command(flatten)]
    pub server: ServerArgs,
}

impl Config {
    pub fn engine_config(&self) -> EngineConfig {
        let profile = self.model.profile();
        let sessions = self.max_concurrent.max(1);
        let threads = if self.intra_op_threads == 0 {
            (cpu::available_cpus() / sessions).max(1)
        } else {
            self.intra_op_threads
        };
        EngineConfig {
            runtime_library: self.onnxruntime.clone(),
            model_path: self
                .model_path
                .clone()
                .unwrap_or_else(|| self.models_dir.join(profile.default_file)),
            input_name: self.input_name.clone(),
            layout: self.input_layout.unwrap_or(profile.layout),
            normalization: self.normalization.unwrap_or(profile.normalization),
            sessions,
            intra_op_threads: threads,
        }
    }
}

/// Everything the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub model: ModelKind,
    pub classifier: Arc<dyn Classify>,
    pub admission: Admission,
    pub metrics: Metrics,
    pub readiness: Readiness,
    pub limits: Limits,
    inference_seconds: Histogram,
}

impl AppState {
    pub fn new(
        model: ModelKind,
        classifier: Arc<dyn Classify>,
        admission: Admission,
        limits: Limits,
        mut metrics: MetricsBuilder,
    ) -> Self {
        let inference_seconds = latency_histogram();
        metrics.registry().register(
            "inference_run_duration_seconds",
            "Time spent in ONNX Runtime run for one image",
            inference_seconds.clone(),
        );
        Self {
            model,
            classifier,
            admission,
            metrics: metrics.build(),
            readiness: Readiness::default(),
            limits,
            inference_seconds,
        }
    }
}

/// The whole HTTP surface of the service.
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .route("/inference", post(infer))
        .with_state(state.clone());
    service_router(api, state.metrics, state.readiness, state.limits)
}

#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error("body must be {IMAGE_BYTES} bytes (224x224x3 RGB, HWC), got {0}")]
    WrongLength(usize),
    #[error("top_k must be between 1 and {CLASS_COUNT}, got {0}")]
    TopK(usize),
    #[error("the model is still loading")]
    NotReady,
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl ApiError for InferenceError {
    fn status(&self) -> StatusCode {
        match self {
            Self::WrongLength(_) | Self::TopK(_) => StatusCode::BAD_REQUEST,
            Self::NotReady | Self::Engine(EngineError::Overloaded) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Engine(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::WrongLength(_) => "wrong_body_length",
            Self::TopK(_) => "invalid_top_k",
            Self::NotReady => "not_ready",
            Self::Engine(EngineError::Overloaded) => "overloaded",
            Self::Engine(_) => "inference_failed",
        }
    }

    fn retry_after_secs(&self) -> Option<u32> {
        (self.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(1)
    }
}

impl IntoResponse for InferenceError {
    fn into_response(self) -> Response {
        error_response(&self, None)
    }
}

#[derive(Debug, Deserialize)]
pub struct InferenceQuery {
    #[serde(default = "default_top_k")]
    top_k: usize,
}

fn default_top_k() -> usize {
    5
}

async fn infer(
    State(state): State<AppState>,
    Query(query): Query<InferenceQuery>,
    body: Bytes,
) -> Result<Json<InferenceResponse>, InferenceError> {
    if !state.readiness.is_ready() {
        return Err(InferenceError::NotReady);
    }
    if body.len() != IMAGE_BYTES {
        return Err(InferenceError::WrongLength(body.len()));
    }
    if !(1..=CLASS_COUNT).contains(&query.top_k) {
        return Err(InferenceError::TopK(query.top_k));
    }
    let ticket = state.admission.admit().await?;
    let span = tracing::info_span!(
        "onnx.run",
        model = state.model.name(),
        image.width = IMAGE_SIDE,
        image.height = IMAGE_SIDE,
        top1.class_id = field::Empty,
        top1.label = field::Empty,
        top1.probability = field::Empty,
    );
    let classifier = Arc::clone(&state.classifier);
    let run_span = span.clone();
    // ONNX Runtime blocks for milliseconds; keep it off the async workers.
    let (scores, elapsed) = tokio::task::spawn_blocking(move || {
        let _entered = run_span.enter();
        let started = Instant::now();
        let scores = classifier.classify(&body);
        drop(ticket);
        scores.map(|scores| (scores, started.elapsed()))
    })
    .await
    .map_err(|_| EngineError::WorkerLost)??;
    state.inference_seconds.observe(elapsed.as_secs_f64());

    let predictions = top_k(&scores, query.top_k);
    if let Some(top1) = predictions.first() {
        span.record("top1.class_id", top1.class_id.as_str());
        span.record("top1.label", top1.label.as_str());
        span.record("top1.probability", f64::from(top1.probability));
    }
    Ok(Json(InferenceResponse {
        model: state.model.name().to_owned(),
        predictions,
        inference_ms: millis(elapsed),
    }))
}

/// The `k` most probable classes, most probable first (ties: lower class index first).
pub fn top_k(scores: &[f32], k: usize) -> Vec<ClassScore> {
    let mut ranked: Vec<(usize, f32)> = scores.iter().copied().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked
        .into_iter()
        .take(k)
        .filter_map(|(index, probability)| {
            let class = classes().get(index)?;
            Some(ClassScore {
                class_index: u16::try_from(index).ok()?,
                class_id: class.wnid.to_owned(),
                label: class.label.to_owned(),
                probability,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use clap::Parser;
    use http_body_util::BodyExt as _;
    use pipeline_common::api::ErrorBody;
    use std::time::Duration;
    use tower::ServiceExt as _;

    /// Puts all probability on one class.
    struct Fixed(usize);

    impl Classify for Fixed {
        fn classify(&self, pixels: &[u8]) -> Result<Vec<f32>, EngineError> {
            assert_eq!(pixels.len(), IMAGE_BYTES);
            let mut scores = vec![0.0; CLASS_COUNT];
            scores[self.0] = 0.9;
            scores[(self.0 + 1) % CLASS_COUNT] = 0.1;
            Ok(scores)
        }
    }

    fn state(admission: Admission) -> AppState {
        let state = AppState::new(
            ModelKind::Mobilenetv2,
            Arc::new(Fixed(88)),
            admission,
            Limits {
                max_body_bytes: IMAGE_BYTES + 1024,
                request_timeout: Duration::from_secs(5),
            },
            MetricsBuilder::new(&Default::default()),
        );
        state.readiness.set(true);
        state
    }

    async fn post(
        router: Router,
        uri: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Bytes, http::HeaderMap) {
        let request = http::Request::post(uri)
            .header("content-type", "application/octet-stream")
            .body(Body::from(body))
            .expect("request");
        let response = router.oneshot(request).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        (
            status,
            response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes(),
            headers,
        )
    }

    #[tokio::test]
    async fn answers_top_k_with_labels() {
        let (status, body, _) = post(
            app(state(Admission::new(1, 1))),
            "/inference?top_k=2",
            vec![0; IMAGE_BYTES],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let answer: InferenceResponse = serde_json::from_slice(&body).expect("json");
        assert_eq!(answer.model, "mobilenetv2");
        assert_eq!(answer.predictions.len(), 2);
        assert_eq!(answer.predictions[0].class_id, "n01818515");
        assert_eq!(answer.predictions[0].label, "macaw");
        assert!((answer.predictions[0].probability - 0.9).abs() < 1e-6);
        assert_eq!(answer.predictions[1].class_index, 89);
    }

    #[tokio::test]
    async fn rejects_bad_input_with_400() {
        for (uri, body) in [
            ("/inference", vec![]),
            ("/inference", vec![0; IMAGE_BYTES - 1]),
            ("/inference", vec![0; IMAGE_BYTES + 1]),
            ("/inference?top_k=0", vec![0; IMAGE_BYTES]),
            ("/inference?top_k=1001", vec![0; IMAGE_BYTES]),
            ("/inference?top_k=lots", vec![0; IMAGE_BYTES]),
        ] {
            let (status, _, _) = post(app(state(Admission::new(1, 1))), uri, body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        }
        let (status, body, _) =
            post(app(state(Admission::new(1, 1))), "/inference", vec![1; 10]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let error: ErrorBody = serde_json::from_slice(&body).expect("json error");
        assert_eq!(error.error, "wrong_body_length");
    }

    #[tokio::test]
    async fn oversized_body_is_413() {
        let (status, _, _) = post(
            app(state(Admission::new(1, 1))),
            "/inference",
            vec![0; IMAGE_BYTES + 4096],
        )
        .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn overload_is_503_with_retry_after() {
        let admission = Admission::new(1, 0);
        let _busy = admission.admit().await.expect("slot");
        let (status, body, headers) =
            post(app(state(admission)), "/inference", vec![0; IMAGE_BYTES]).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            headers.get("retry-after").map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        let error: ErrorBody = serde_json::from_slice(&body).expect("json error");
        assert_eq!(error.error, "overloaded");
    }

    #[tokio::test]
    async fn not_ready_until_warmed_up() {
        let state = state(Admission::new(1, 1));
        state.readiness.set(false);
        let router = app(state);
        let (status, _, _) = post(router.clone(), "/inference", vec![0; IMAGE_BYTES]).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let response = router
            .oneshot(
                http::Request::get("/readyz")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn config_parses_models_case_insensitively_and_rejects_unknown_ones() {
        let config =
            Config::try_parse_from(["inference", "--model", "MobileNetV2", "--models-dir", "/m"])
                .expect("valid");
        assert_eq!(config.model, ModelKind::Mobilenetv2);
        let engine = config.engine_config();
        assert_eq!(engine.model_path, PathBuf::from("/m/mobilenetv2.onnx"));
        assert_eq!(engine.normalization, Normalization::Tf);
        assert!(engine.intra_op_threads >= 1);

        let config = Config::try_parse_from([
            "inference",
            "--model",
            "efficientnetb0",
            "--model-path",
            "/x/b0.onnx",
            "--normalization",
            "torch",
            "--input-layout",
            "nchw",
            "--intra-op-threads",
            "3",
        ])
        .expect("valid");
        let engine = config.engine_config();
        assert_eq!(engine.model_path, PathBuf::from("/x/b0.onnx"));
        assert_eq!(
            (engine.layout, engine.normalization),
            (Layout::Nchw, Normalization::Torch)
        );
        assert_eq!(engine.intra_op_threads, 3);

        let error =
            Config::try_parse_from(["inference", "--model", "resnet50"]).expect_err("unknown");
        assert!(error.to_string().contains("resnet50"), "{error}");
    }

    #[test]
    fn top_k_is_sorted_and_bounded() {
        let mut scores = vec![0.0; CLASS_COUNT];
        scores[3] = 0.2;
        scores[7] = 0.5;
        scores[5] = 0.2;
        let top = top_k(&scores, 3);
        let indices: Vec<u16> = top.iter().map(|c| c.class_index).collect();
        assert_eq!(indices, vec![7, 3, 5], "ties keep class order");
        assert_eq!(top_k(&scores, CLASS_COUNT).len(), CLASS_COUNT);
    }
}
