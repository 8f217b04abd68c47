//! Asking every model concurrently. Each call has its own timeout, its own CLIENT span (with the
//! trace context injected by [`TracedClient`]) and carries only the headers a model needs:
//! content type, trace context and `Timestamp`. Upstream copied every incoming header, `Host`
//! included, which misroutes behind a mesh or any Host-based routing.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, StatusCode};
use pipeline_common::api::{
    ErrorBody, InferenceResponse, ModelAnswer, ModelFailure, TIMESTAMP_HEADER, millis,
};
use pipeline_common::client::{TracedClient, error_kind};
use reqwest::Url;

use crate::aggregate::by_rank;
use crate::config::ModelEndpoint;
use crate::metrics::{FailureLabels, ModelLabels, ModelMetrics};

pub const OCTET_STREAM: &str = "application/octet-stream";

/// Largest model answer read: a top-1000 list is about 100 KB, so this only stops runaways.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// Longest error text kept from a failed call, so that answers and logs stay readable.
const MAX_ERROR_CHARS: usize = 160;

/// One configured model and the exact URL it is called at.
#[derive(Debug, Clone)]
struct Model {
    name: String,
    url: Url,
}

/// Everything needed to ask the models.
#[derive(Debug)]
pub struct Fanout {
    client: TracedClient,
    models: Vec<Model>,
    timeout: Duration,
    metrics: ModelMetrics,
}

/// Why one model call failed.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("timed out after {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("{kind} error: {cause}")]
    Transport { kind: &'static str, cause: String },
    #[error("HTTP {status}{detail}")]
    Status { status: StatusCode, detail: String },
    #[error("answer larger than {MAX_ANSWER_BYTES} bytes")]
    TooLarge,
    #[error("invalid answer: {0}")]
    InvalidAnswer(String),
}

impl CallError {
    /// The `reason` label of the failure counter.
    fn reason(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::Transport { kind, .. } => kind,
            Self::Status { .. } => "status",
            Self::TooLarge => "too_large",
            Self::InvalidAnswer(_) => "invalid_answer",
        }
    }

    fn transport(error: &reqwest::Error, timeout: Duration) -> Self {
        if error.is_timeout() {
            return Self::Timeout(timeout);
        }
        // reqwest's own message repeats the URL; the innermost cause says what happened
        // (e.g. "Connection refused").
        let mut cause: &dyn std::error::Error = error;
        while let Some(source) = cause.source() {
            cause = source;
        }
        Self::Transport {
            kind: error_kind(error),
            cause: truncate(&cause.to_string()),
        }
    }
}

impl Fanout {
    pub fn new(
        client: TracedClient,
        endpoints: &[ModelEndpoint],
        top_k: u16,
        timeout: Duration,
        metrics: ModelMetrics,
    ) -> Self {
        let models = endpoints
            .iter()
            .map(|endpoint| {
                // Shows every model in /metrics from the start, not only after its first call.
                let _ = metrics.call_duration.get_or_create(&ModelLabels {
                    model: endpoint.name.clone(),
                });
                Model {
                    name: endpoint.name.clone(),
                    url: with_top_k(&endpoint.url, top_k),
                }
            })
            .collect();
        Self {
            client,
            models,
            timeout,
            metrics,
        }
    }

    /// Asks every model at once; the outcomes are in configuration order.
    pub async fn ask_all(
        &self,
        image: &Bytes,
        timestamp: Option<&HeaderValue>,
    ) -> Vec<Result<ModelAnswer, ModelFailure>> {
        futures::future::join_all(
            self.models
                .iter()
                .map(|model| self.ask(model, image.clone(), timestamp.cloned())),
        )
        .await
    }

    async fn ask(
        &self,
        model: &Model,
        image: Bytes,
        timestamp: Option<HeaderValue>,
    ) -> Result<ModelAnswer, ModelFailure> {
        let started = Instant::now();
        let result = self.call(model, image, timestamp).await;
        let elapsed = started.elapsed();
        self.metrics
            .call_duration
            .get_or_create(&ModelLabels {
                model: model.name.clone(),
            })
            .observe(elapsed.as_secs_f64());
        match result {
            Ok(answer) => Ok(ModelAnswer {
                // The configured name, so that answers, failures and metrics use one name.
                model: model.name.clone(),
                predictions: answer.predictions,
                inference_ms: answer.inference_ms,
                latency_ms: millis(elapsed),
            }),
            Err(error) => {
                self.metrics
                    .call_failures
                    .get_or_create(&FailureLabels {
                        model: model.name.clone(),
                        reason: error.reason(),
                    })
                    .inc();
                tracing::warn!(model = %model.name, url = %model.url, %error, "model call failed");
                Err(ModelFailure {
                    model: model.name.clone(),
                    error: error.to_string(),
                })
            }
        }
    }

    async fn call(
        &self,
        model: &Model,
        image: Bytes,
        timestamp: Option<HeaderValue>,
    ) -> Result<InferenceResponse, CallError> {
        let mut builder = self
            .client
            .post(model.url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static(OCTET_STREAM))
            .timeout(self.timeout)
            .body(image);
        if let Some(timestamp) = timestamp {
            builder = builder.header(TIMESTAMP_HEADER, timestamp);
        }
        let request = builder
            .build()
            .map_err(|e| CallError::transport(&e, self.timeout))?;
        let mut response = self
            .client
            .send(request)
            .await
            .map_err(|e| CallError::transport(&e, self.timeout))?;
        let status = response.status();
        let body = read_limited(&mut response, self.timeout).await?;
        if !status.is_success() {
            return Err(CallError::Status {
                status,
                detail: error_detail(&body),
            });
        }
        let answer = serde_json::from_slice::<InferenceResponse>(&body)
            .map_err(|e| CallError::InvalidAnswer(truncate(&e.to_string())))?;
        validate(answer)
    }
}

/// `url` with `top_k=<k>` added (replacing any `top_k` already there).
fn with_top_k(url: &Url, top_k: u16) -> Url {
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(key, _)| key != "top_k")
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect();
    let mut url = url.clone();
    url.set_query(None);
    url.query_pairs_mut()
        .extend_pairs(kept)
        .append_pair("top_k", &top_k.to_string());
    url
}

/// The answer body, refusing to buffer more than [`MAX_ANSWER_BYTES`]. The call's timeout also
/// covers reading the body.
async fn read_limited(
    response: &mut reqwest::Response,
    timeout: Duration,
) -> Result<Vec<u8>, CallError> {
    if response
        .content_length()
        .is_some_and(|length| length > MAX_ANSWER_BYTES as u64)
    {
        return Err(CallError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| CallError::transport(&e, timeout))?
    {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(CallError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// What an error answer says, if anything: the services' JSON error, or the start of the text.
fn error_detail(body: &[u8]) -> String {
    if let Ok(error) = serde_json::from_slice::<ErrorBody>(body) {
        return truncate(&format!(": {}: {}", error.error, error.message));
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        truncate(&format!(": {text}"))
    }
}

/// Rejects answers the aggregation cannot use and ranks the list (most probable first).
fn validate(mut answer: InferenceResponse) -> Result<InferenceResponse, CallError> {
    if answer.predictions.is_empty() {
        return Err(CallError::InvalidAnswer("no predictions".to_owned()));
    }
    let mut seen = HashSet::new();
    for score in &answer.predictions {
        // `contains` is false for NaN too.
        if !(0.0..=1.0).contains(&score.probability) {
            return Err(CallError::InvalidAnswer(format!(
                "probability {} of class {} is outside [0, 1]",
                score.probability, score.class_index
            )));
        }
        if !seen.insert(score.class_index) {
            return Err(CallError::InvalidAnswer(format!(
                "class {} is listed more than once",
                score.class_index
            )));
        }
    }
    answer.predictions.sort_by(by_rank);
    Ok(answer)
}

/// At most [`MAX_ERROR_CHARS`] characters of `text`, cut at a character boundary.
fn truncate(text: &str) -> String {
    match text.char_indices().nth(MAX_ERROR_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline_common::api::ClassScore;

    fn score(class_index: u16, probability: f32) -> ClassScore {
        ClassScore {
            class_index,
            class_id: format!("n{class_index:08}"),
            label: format!("class {class_index}"),
            probability,
        }
    }

    fn answer(scores: Vec<ClassScore>) -> InferenceResponse {
        InferenceResponse {
            model: "m".to_owned(),
            predictions: scores,
            inference_ms: 1.0,
        }
    }

    #[test]
    fn top_k_is_added_once() {
        let url = Url::parse("http://m:5012/inference").expect("url");
        assert_eq!(
            with_top_k(&url, 10).as_str(),
            "http://m:5012/inference?top_k=10"
        );
        let url = Url::parse("http://m:5012/inference?a=1&top_k=3").expect("url");
        assert_eq!(
            with_top_k(&url, 5).as_str(),
            "http://m:5012/inference?a=1&top_k=5"
        );
    }

    #[test]
    fn answers_are_validated_and_ranked() {
        let ranked = validate(answer(vec![score(2, 0.1), score(1, 0.9)])).expect("valid");
        assert_eq!(ranked.predictions[0].class_index, 1);
        for bad in [
            vec![],
            vec![score(1, 1.5)],
            vec![score(1, -0.1)],
            vec![score(1, f32::NAN)],
            vec![score(1, 0.5), score(1, 0.4)],
        ] {
            assert!(
                matches!(
                    validate(answer(bad.clone())),
                    Err(CallError::InvalidAnswer(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn error_details_are_short() {
        let body = br#"{"error":"not_ready","message":"model warming up"}"#;
        assert_eq!(error_detail(body), ": not_ready: model warming up");
        assert_eq!(error_detail(b"  "), "");
        assert_eq!(error_detail(b"boom"), ": boom");
        let long = "é".repeat(500);
        assert_eq!(truncate(&long).chars().count(), MAX_ERROR_CHARS + 1);
    }
}
