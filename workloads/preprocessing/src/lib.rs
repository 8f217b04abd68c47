//! The preprocessing service, the pipeline's entry point: `POST /preprocessing` takes an image
//! (multipart part `file`, as upstream, or a raw `image/*` body), prepares it for the models and
//! answers the ensemble's classification — or, in fire-and-forget mode, answers at once like
//! upstream and classifies in the background.

pub mod prepare;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRequest as _, Multipart, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use pipeline_common::api::{
    AcceptedResponse, ClassifyResponse, EnsembleResponse, ErrorBody, StageTimings,
    TIMESTAMP_HEADER, millis,
};
use pipeline_common::client::{TracedClient, error_kind};
use pipeline_common::config::ServerArgs;
use pipeline_common::error::{ApiError, error_response};
use pipeline_common::metrics::{Metrics, MetricsBuilder};
use pipeline_common::server::{Limits, Readiness, service_router};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, field};

use crate::prepare::{DecodeLimits, PrepareError, decode, resize_to_model_input};

pub const DEFAULT_PORT: u16 = 5010;

/// What the client gets back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ResponseMode {
    /// Wait for the ensemble and return the classification.
    Classification,
    /// Upstream behaviour: answer "File accepted" at once, classify in the background.
    Accepted,
}

/// Command line and environment of the preprocessing service.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "preprocessing",
    version,
    about = "Image preparation service, entry of the pipeline"
)]
pub struct Config {
    /// The ensemble's classification endpoint.
    #[arg(
        long,
        env = "ENSEMBLE_URL",
        default_value = "http://ensemble-service:5011/ensemble_service"
    )]
    pub ensemble_url: reqwest::Url,
    /// Longest wait for the ensemble's answer.
    #[arg(long, env = "ENSEMBLE_TIMEOUT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub ensemble_timeout: Duration,
    #[arg(long, env = "RESPONSE_MODE", value_enum, default_value_t = ResponseMode::Classification)]
    pub response_mode: ResponseMode,
    /// Largest accepted upload (bytes).
    #[arg(long, env = "MAX_UPLOAD_BYTES", default_value_t = 20 * 1024 * 1024)]
    pub max_upload_bytes: usize,
    /// Largest accepted image side (pixels), checked before decoding.
    #[arg(long, env = "MAX_IMAGE_SIDE", default_value_t = 12_000)]
    pub max_image_side: u32,
    /// Background classifications allowed at once in `accepted` mode; more are answered 503.
    #[arg(long, env = "MAX_BACKGROUND_TASKS", default_value_t = 64)]
    pub max_background_tasks: usize,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Everything the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub ensemble_url: reqwest::Url,
    pub ensemble_timeout: Duration,
    pub response_mode: ResponseMode,
    pub decode_limits: DecodeLimits,
    pub client: TracedClient,
    pub metrics: Metrics,
    pub readiness: Readiness,
    pub limits: Limits,
    /// Fire-and-forget classifications still running; drained at shutdown.
    pub background: TaskTracker,
    background_slots: Arc<Semaphore>,
}

impl AppState {
    pub fn new(config: &Config, client: reqwest::Client, metrics: MetricsBuilder) -> Self {
        Self {
            ensemble_url: config.ensemble_url.clone(),
            ensemble_timeout: config.ensemble_timeout,
            response_mode: config.response_mode,
            decode_limits: DecodeLimits {
                max_side: config.max_image_side,
                ..DecodeLimits::default()
            },
            client: TracedClient::new(client),
            metrics: metrics.build(),
            readiness: Readiness::ready(),
            limits: Limits {
                max_body_bytes: config.max_upload_bytes,
                request_timeout: config.server.request_timeout,
            },
            background: TaskTracker::new(),
            background_slots: Arc::new(Semaphore::new(config.max_background_tasks)),
        }
    }
}

/// The whole HTTP surface of the service.
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .route("/preprocessing", post(preprocess))
        .with_state(state.clone());
    service_router(api, state.metrics, state.readiness, state.limits)
}

#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error(
        "send the image as multipart/form-data with a part named \"file\", or as a raw image/* body; got content type {0:?}"
    )]
    UnsupportedContentType(String),
    #[error("the multipart form has no part named \"file\"")]
    MissingFilePart,
    #[error("the \"file\" part has content type {0:?}; only images are accepted")]
    NotAnImage(String),
    #[error("malformed multipart body: {0}")]
    Multipart(String),
    #[error("upload larger than {0} bytes")]
    UploadTooLarge(usize),
    #[error(transparent)]
    Image(#[from] PrepareError),
    #[error("cannot reach the ensemble service: {0}")]
    EnsembleUnreachable(String),
    #[error("the ensemble service did not answer within {0:?}")]
    EnsembleTimeout(Duration),
    #[error("the ensemble service failed ({status}): {message}")]
    EnsembleFailed { status: u16, message: String },
    #[error("too many classifications in progress")]
    Busy,
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError for PreprocessError {
    fn status(&self) -> StatusCode {
        match self {
            Self::UnsupportedContentType(_) | Self::NotAnImage(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            Self::MissingFilePart | Self::Multipart(_) => StatusCode::BAD_REQUEST,
            Self::UploadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Image(PrepareError::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Image(PrepareError::Resize(_)) | Self::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Self::Image(PrepareError::UnknownFormat) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Image(_) => StatusCode::BAD_REQUEST,
            Self::EnsembleUnreachable(_) | Self::EnsembleFailed { .. } => StatusCode::BAD_GATEWAY,
            Self::EnsembleTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Busy => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::UnsupportedContentType(_) => "unsupported_content_type",
            Self::MissingFilePart => "missing_file_part",
            Self::NotAnImage(_) => "not_an_image",
            Self::Multipart(_) => "malformed_multipart",
            Self::UploadTooLarge(_) => "upload_too_large",
            Self::Image(PrepareError::Empty) => "empty_image",
            Self::Image(PrepareError::UnknownFormat) => "unsupported_image_format",
            Self::Image(PrepareError::Undecodable { .. }) => "undecodable_image",
            Self::Image(PrepareError::TooLarge { .. }) => "image_too_large",
            Self::Image(PrepareError::Resize(_)) => "resize_failed",
            Self::EnsembleUnreachable(_) => "ensemble_unreachable",
            Self::EnsembleTimeout(_) => "ensemble_timeout",
            Self::EnsembleFailed { .. } => "ensemble_failed",
            Self::Busy => "busy",
            Self::Internal(_) => "internal",
        }
    }

    fn retry_after_secs(&self) -> Option<u32> {
        matches!(self, Self::Busy).then_some(1)
    }
}

/// An error answer that carries the request id, so clients can find the trace.
struct Failure {
    error: PreprocessError,
    request_id: String,
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut response = error_response(&self.error, Some(self.request_id.clone()));
        insert_request_id(response.headers_mut(), &self.request_id);
        response
    }
}

fn insert_request_id(headers: &mut HeaderMap, request_id: &str) {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", value);
    }
}

async fn preprocess(State(state): State<AppState>, request: Request) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    tracing::Span::current().record("request_id", request_id.as_str());
    let timestamp = request
        .headers()
        .get(TIMESTAMP_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let started = Instant::now();
    let upload = match read_upload(request, &state).await {
        Ok(upload) => upload,
        Err(error) => return Failure { error, request_id }.into_response(),
    };
    match state.response_mode {
        ResponseMode::Classification => {
            match classify(&state, upload, &request_id, timestamp, started).await {
                Ok(answer) => {
                    let mut response = Json(answer).into_response();
                    insert_request_id(response.headers_mut(), &request_id);
                    response
                }
                Err(error) => Failure { error, request_id }.into_response(),
            }
        }
        ResponseMode::Accepted => accept(state, upload, request_id, timestamp, started),
    }
}

/// Fire-and-forget: answer now, classify in a background task that stays in this trace.
fn accept(
    state: AppState,
    upload: Bytes,
    request_id: String,
    timestamp: Option<String>,
    started: Instant,
) -> Response {
    let Ok(slot) = Arc::clone(&state.background_slots).try_acquire_owned() else {
        return Failure {
            error: PreprocessError::Busy,
            request_id,
        }
        .into_response();
    };
    let span = tracing::info_span!("classify.background", request_id = %request_id);
    let task_state = state.clone();
    let task_request_id = request_id.clone();
    state.background.spawn(
        async move {
            match classify(&task_state, upload, &task_request_id, timestamp, started).await {
                Ok(answer) => tracing::info!(
                    request_id = %answer.request_id,
                    class_id = %answer.top1.class_id,
                    label = %answer.top1.label,
                    probability = answer.top1.probability,
                    degraded = answer.degraded,
                    "classified"
                ),
                Err(error) => tracing::warn!(request_id = %task_request_id, %error, "background classification failed"),
            }
            drop(slot);
        }
        .instrument(span),
    );
    let mut response = (
        StatusCode::ACCEPTED,
        Json(AcceptedResponse {
            request_id: request_id.clone(),
            response: "File accepted".to_owned(),
        }),
    )
        .into_response();
    insert_request_id(response.headers_mut(), &request_id);
    response
}

/// The uploaded image bytes, from a multipart part `file` or a raw `image/*` body.
async fn read_upload(request: Request, state: &AppState) -> Result<Bytes, PreprocessError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let too_large = |state: &AppState| PreprocessError::UploadTooLarge(state.limits.max_body_bytes);
    if content_type.starts_with("multipart/form-data") {
        let mut multipart = Multipart::from_request(request, state)
            .await
            .map_err(|e| PreprocessError::Multipart(e.body_text()))?;
        loop {
            let field = match multipart.next_field().await {
                Ok(Some(field)) => field,
                Ok(None) => return Err(PreprocessError::MissingFilePart),
                Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                    return Err(too_large(state));
                }
                Err(e) => return Err(PreprocessError::Multipart(e.body_text())),
            };
            if field.name() != Some("file") {
                continue;
            }
            if let Some(part_type) = field.content_type().map(str::to_ascii_lowercase)
                && !is_image_type(&part_type)
            {
                return Err(PreprocessError::NotAnImage(part_type));
            }
            return field.bytes().await.map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    too_large(state)
                } else {
                    PreprocessError::Multipart(e.body_text())
                }
            });
        }
    } else if is_image_type(&content_type) {
        Bytes::from_request(request, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large(state)
            } else {
                PreprocessError::Multipart(e.body_text())
            }
        })
    } else {
        Err(PreprocessError::UnsupportedContentType(content_type))
    }
}

/// Image types plus the generic binary type browsers and curl use for unknown files; the
/// format itself is always sniffed from the bytes.
fn is_image_type(content_type: &str) -> bool {
    content_type.starts_with("image/") || content_type.starts_with("application/octet-stream")
}

/// Decode, resize, ask the ensemble.
async fn classify(
    state: &AppState,
    upload: Bytes,
    request_id: &str,
    timestamp: Option<String>,
    started: Instant,
) -> Result<ClassifyResponse, PreprocessError> {
    let limits = state.decode_limits;
    let decode_span = tracing::info_span!(
        "decode",
        image.bytes = upload.len(),
        image.format = field::Empty,
        image.width = field::Empty,
        image.height = field::Empty,
    );
    let resize_span = tracing::info_span!("resize", image.width = 224, image.height = 224);
    // Decoding a large JPEG takes tens of milliseconds of CPU: not on the async workers.
    let (pixels, decode_time, resize_time) = tokio::task::spawn_blocking(move || {
        let decode_started = Instant::now();
        let decoded = decode_span.in_scope(|| {
            let decoded = decode(&upload, limits)?;
            let (width, height) = decoded.image.dimensions();
            decode_span.record("image.format", decoded.format);
            decode_span.record("image.width", width);
            decode_span.record("image.height", height);
            Ok::<_, PrepareError>(decoded)
        })?;
        let decode_time = decode_started.elapsed();
        let resize_started = Instant::now();
        let pixels = resize_span.in_scope(|| resize_to_model_input(decoded.image))?;
        Ok::<_, PrepareError>((pixels, decode_time, resize_started.elapsed()))
    })
    .await
    .map_err(|e| PreprocessError::Internal(e.to_string()))??;

    let ensemble_started = Instant::now();
    let answer = call_ensemble(state, pixels, request_id, timestamp.as_deref()).await?;
    let ensemble_time = ensemble_started.elapsed();
    let top1 =
        answer
            .prediction
            .first()
            .cloned()
            .ok_or_else(|| PreprocessError::EnsembleFailed {
                status: 200,
                message: "empty prediction".to_owned(),
            })?;
    Ok(ClassifyResponse {
        request_id: request_id.to_owned(),
        top1,
        strategy: answer.strategy,
        prediction: answer.prediction,
        models: answer.models,
        failed_models: answer.failed_models,
        degraded: answer.degraded,
        timestamp,
        timings_ms: StageTimings {
            decode: millis(decode_time),
            resize: millis(resize_time),
            ensemble: millis(ensemble_time),
            total: millis(started.elapsed()),
        },
    })
}

async fn call_ensemble(
    state: &AppState,
    pixels: Vec<u8>,
    request_id: &str,
    timestamp: Option<&str>,
) -> Result<EnsembleResponse, PreprocessError> {
    let mut url = state.ensemble_url.clone();
    url.query_pairs_mut().append_pair("request_id", request_id);
    let mut builder = state
        .client
        .post(url)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .timeout(state.ensemble_timeout)
        .body(pixels);
    if let Some(timestamp) = timestamp {
        builder = builder.header(TIMESTAMP_HEADER, timestamp);
    }
    let request = builder
        .build()
        .map_err(|e| PreprocessError::Internal(e.to_string()))?;
    let transport = |error: reqwest::Error| {
        if error.is_timeout() {
            PreprocessError::EnsembleTimeout(state.ensemble_timeout)
        } else {
            PreprocessError::EnsembleUnreachable(format!("{} ({})", error, error_kind(&error)))
        }
    };
    let response = state.client.send(request).await.map_err(transport)?;
    let status = response.status();
    let body = response.bytes().await.map_err(transport)?;
    if !status.is_success() {
        let message = serde_json::from_slice::<ErrorBody>(&body)
            .map(|e| e.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).chars().take(200).collect());
        return Err(PreprocessError::EnsembleFailed {
            status: status.as_u16(),
            message,
        });
    }
    serde_json::from_slice(&body).map_err(|e| PreprocessError::EnsembleFailed {
        status: status.as_u16(),
        message: format!("unreadable answer: {e}"),
    })
}
