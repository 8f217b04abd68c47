//! Wire types exchanged between the services and returned to clients.
//!
//! Between the services the image travels as raw pixels, exactly as upstream: 224×224×3 `u8`,
//! HWC, RGB interleaved, row-major ([`IMAGE_BYTES`] bytes, `application/octet-stream`).

use serde::{Deserialize, Serialize};

/// Side length of the square image every model receives.
pub const IMAGE_SIDE: usize = 224;
/// Colour channels (RGB).
pub const IMAGE_CHANNELS: usize = 3;
/// Length of a prepared image: 224 × 224 × 3 = 150,528 bytes.
pub const IMAGE_BYTES: usize = IMAGE_SIDE * IMAGE_SIDE * IMAGE_CHANNELS;

/// Optional client header carrying the client's send time; forwarded and echoed, never required.
pub const TIMESTAMP_HEADER: &str = "timestamp";

/// One class and the probability a model (or the ensemble) gives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassScore {
    /// Index in the ImageNet-1k class order (0..1000).
    pub class_index: u16,
    /// WordNet id, e.g. `n01818515`.
    pub class_id: String,
    /// Human-readable label, e.g. `macaw`.
    pub label: String,
    pub probability: f32,
}

/// Answer of an inference service (`POST /inference`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferenceResponse {
    pub model: String,
    /// Top-k classes, most probable first.
    pub predictions: Vec<ClassScore>,
    /// Time spent in ONNX Runtime's `run` (milliseconds).
    pub inference_ms: f64,
}

/// One model's answer as seen by the ensemble.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelAnswer {
    pub model: String,
    pub predictions: Vec<ClassScore>,
    pub inference_ms: f64,
    /// Round trip from the ensemble to the model and back (milliseconds).
    pub latency_ms: f64,
}

/// A model that did not answer in time or answered with an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelFailure {
    pub model: String,
    pub error: String,
}

/// How the ensemble combines the models' answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum AggregationStrategy {
    /// Mean probability of each class over all answering models; the highest mean wins.
    AverageProbability,
    /// The single most confident model answer wins.
    MaxConfidence,
    /// Each model votes for its top-1 class; ties go to the higher mean probability.
    MajorityVote,
}

impl AggregationStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AverageProbability => "average_probability",
            Self::MaxConfidence => "max_confidence",
            Self::MajorityVote => "majority_vote",
        }
    }
}

/// Answer of the ensemble (`POST /ensemble_service`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnsembleResponse {
    pub request_id: String,
    pub strategy: AggregationStrategy,
    /// Aggregated classes, winner first.
    pub prediction: Vec<ClassScore>,
    /// Every model that answered, in configuration order.
    pub models: Vec<ModelAnswer>,
    /// Models that failed; non-empty means `degraded`.
    pub failed_models: Vec<ModelFailure>,
    pub degraded: bool,
    /// The client's `Timestamp` header, echoed (upstream field name).
    #[serde(rename = "Timestamp", default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    pub timings_ms: EnsembleTimings,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnsembleTimings {
    /// Waiting for the slowest answering model.
    pub models: f64,
    pub aggregate: f64,
    pub total: f64,
}

/// Answer of the preprocessing service to the client (`POST /preprocessing`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifyResponse {
    pub request_id: String,
    /// The ensemble's winner.
    pub top1: ClassScore,
    pub strategy: AggregationStrategy,
    /// Aggregated classes, winner first.
    pub prediction: Vec<ClassScore>,
    pub models: Vec<ModelAnswer>,
    pub failed_models: Vec<ModelFailure>,
    pub degraded: bool,
    #[serde(rename = "Timestamp", default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    pub timings_ms: StageTimings,
}

/// Where the time of one classification went (milliseconds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageTimings {
    pub decode: f64,
    pub resize: f64,
    /// The ensemble call, including both models.
    pub ensemble: f64,
    pub total: f64,
}

/// Answer of the preprocessing service in fire-and-forget mode (upstream behaviour).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AcceptedResponse {
    pub request_id: String,
    /// Always `"File accepted"`, upstream's whole answer.
    pub response: String,
}

/// Every error answer of every service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `undecodable_image`.
    pub error: String,
    /// What went wrong, for humans.
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Milliseconds between two instants, for the timing fields.
pub fn millis(elapsed: std::time::Duration) -> f64 {
    elapsed.as_secs_f64() * 1000.0
}
