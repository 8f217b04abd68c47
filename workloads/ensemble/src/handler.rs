//! `POST /ensemble_service`: validate the image, ask every model, aggregate what arrived.
//!
//! Unlike upstream (which answered at once and classified in the background), the answer is the
//! classification itself, so the caller's trace and timings cover the whole pipeline.

use std::time::Instant;

use axum::Json;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, StatusCode};
use pipeline_common::api::{
    EnsembleResponse, EnsembleTimings, IMAGE_BYTES, ModelAnswer, ModelFailure, TIMESTAMP_HEADER,
    millis,
};
use pipeline_common::error::error_response;
use serde::Deserialize;
use tracing::field;

use crate::AppState;
use crate::aggregate::aggregate;
use crate::error::EnsembleError;
use crate::fanout::OCTET_STREAM;

/// Longest accepted `request_id`: it is logged and echoed, so it must stay small.
const MAX_REQUEST_ID: usize = 128;

#[derive(Debug, Deserialize)]
pub struct EnsembleQuery {
    request_id: Option<String>,
}

pub async fn ensemble_service(
    State(state): State<AppState>,
    query: Result<Query<EnsembleQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let request_id = match query
        .map_err(|rejection| EnsembleError::InvalidQuery(rejection.body_text()))
        .and_then(|Query(query)| request_id(query.request_id))
    {
        Ok(id) => id,
        Err(error) => return error_response(&error, None),
    };
    match classify(&state, &request_id, &headers, body, started).await {
        Ok(answer) => (StatusCode::OK, Json(answer)).into_response(),
        Err(error) => error_response(&error, Some(request_id)),
    }
}

/// The caller's id, or a fresh one: upstream required it, but the ensemble can be called directly.
fn request_id(given: Option<String>) -> Result<String, EnsembleError> {
    match given {
        None => Ok(uuid::Uuid::new_v4().to_string()),
        Some(id) if id.is_empty() => Ok(uuid::Uuid::new_v4().to_string()),
        Some(id) if id.len() <= MAX_REQUEST_ID && id.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(id)
        }
        Some(_) => Err(EnsembleError::InvalidRequestId {
            max: MAX_REQUEST_ID,
        }),
    }
}

/// Raw pixels only; a missing content type is accepted, as upstream's callers never set one.
fn check_content_type(headers: &HeaderMap) -> Result<(), EnsembleError> {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(value.as_bytes());
    let essence = text
        .split_once(';')
        .map_or(&*text, |(essence, _)| essence)
        .trim();
    if essence.is_empty() || essence.eq_ignore_ascii_case(OCTET_STREAM) {
        Ok(())
    } else {
        Err(EnsembleError::UnsupportedContentType(
            text.chars().take(100).collect(),
        ))
    }
}

/// The optional `Timestamp` header: forwarded to the models as is and echoed as text.
fn timestamp(headers: &HeaderMap) -> Result<Option<(HeaderValue, String)>, EnsembleError> {
    headers
        .get(TIMESTAMP_HEADER)
        .map(|value| {
            value
                .to_str()
                .map(|text| (value.clone(), text.to_owned()))
                .map_err(|_| EnsembleError::InvalidTimestamp)
        })
        .transpose()
}

async fn classify(
    state: &AppState,
    request_id: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    started: Instant,
) -> Result<EnsembleResponse, EnsembleError> {
    check_content_type(headers)?;
    let timestamp = timestamp(headers)?;
    let image = body?;
    if image.len() != IMAGE_BYTES {
        return Err(EnsembleError::WrongBodyLength {
            expected: IMAGE_BYTES,
            actual: image.len(),
        });
    }

    let asked = Instant::now();
    let outcomes = state
        .fanout()
        .ask_all(&image, timestamp.as_ref().map(|(value, _)| value))
        .await;
    let models_ms = millis(asked.elapsed());
    let count = outcomes.len();
    let (answers, failures): (Vec<ModelAnswer>, Vec<ModelFailure>) = {
        let mut answers = Vec::with_capacity(count);
        let mut failures = Vec::new();
        for outcome in outcomes {
            match outcome {
                Ok(answer) => answers.push(answer),
                Err(failure) => failures.push(failure),
            }
        }
        (answers, failures)
    };
    if answers.is_empty() {
        let details = failures
            .iter()
            .map(|f| format!("{}: {}", f.model, f.error))
            .collect::<Vec<_>>()
            .join("; ");
        return Err(EnsembleError::AllModelsFailed { count, details });
    }

    let strategy = state.strategy();
    let aggregating = Instant::now();
    let span = tracing::info_span!(
        "aggregate",
        request_id,
        strategy = strategy.as_str(),
        models_answered = answers.len(),
        models_failed = failures.len(),
        top1.class_id = field::Empty,
        top1.label = field::Empty,
        top1.probability = field::Empty,
    );
    let prediction = span.in_scope(|| {
        let mut prediction = aggregate(strategy, &answers);
        // average_probability lists every class any model named; keep the list top-k long.
        prediction.truncate(state.top_k());
        prediction
    });
    if let Some(top) = prediction.first() {
        span.record("top1.class_id", top.class_id.as_str());
        span.record("top1.label", top.label.as_str());
        span.record("top1.probability", top.probability);
    }
    drop(span);
    let aggregate_ms = millis(aggregating.elapsed());

    let degraded = !failures.is_empty();
    let top = prediction.first();
    tracing::info!(
        request_id,
        strategy = strategy.as_str(),
        top1.class_id = top.map(|t| t.class_id.as_str()),
        top1.label = top.map(|t| t.label.as_str()),
        top1.probability = top.map(|t| t.probability),
        degraded,
        failed_models = ?failures.iter().map(|f| f.model.as_str()).collect::<Vec<_>>(),
        "image classified"
    );
    Ok(EnsembleResponse {
        request_id: request_id.to_owned(),
        strategy,
        prediction,
        models: answers,
        failed_models: failures,
        degraded,
        timestamp: timestamp.map(|(_, text)| text),
        timings_ms: EnsembleTimings {
            models: models_ms,
            aggregate: aggregate_ms,
            total: millis(started.elapsed()),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                    HeaderValue::from_bytes(value).expect("value"),
                )
            })
            .collect()
    }

    #[test]
    fn request_ids_are_kept_generated_or_rejected() {
        assert_eq!(request_id(Some("abc-1".to_owned())).expect("kept"), "abc-1");
        for generated in [None, Some(String::new())] {
            let id = request_id(generated).expect("generated");
            assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
        }
        for bad in [
            "a b".to_owned(),
            "x".repeat(MAX_REQUEST_ID + 1),
            "é".to_owned(),
        ] {
            assert!(matches!(
                request_id(Some(bad)),
                Err(EnsembleError::InvalidRequestId { .. })
            ));
        }
    }

    #[test]
    fn content_types() {
        for ok in [
            &[][..],
            &[("content-type", &b"application/octet-stream"[..])],
            &[("content-type", b"Application/Octet-Stream; foo=bar")],
            &[("content-type", b"")],
        ] {
            assert!(check_content_type(&headers(ok)).is_ok(), "{ok:?}");
        }
        for bad in [&b"image/jpeg"[..], b"application/json", b"\xff\xfe"] {
            assert!(matches!(
                check_content_type(&headers(&[("content-type", bad)])),
                Err(EnsembleError::UnsupportedContentType(_))
            ));
        }
    }

    #[test]
    fn timestamps_are_optional_but_must_be_text() {
        assert_eq!(timestamp(&HeaderMap::new()).expect("absent"), None);
        let (_, text) = timestamp(&headers(&[("timestamp", b"1712345678.9")]))
            .expect("valid")
            .expect("present");
        assert_eq!(text, "1712345678.9");
        assert!(matches!(
            timestamp(&headers(&[("timestamp", b"\xff")])),
            Err(EnsembleError::InvalidTimestamp)
        ));
    }
}
