//! Turning a service's typed error into a JSON answer.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::api::ErrorBody;

/// Implemented by each service's error enum: the HTTP status and the stable code of each variant.
pub trait ApiError: std::error::Error {
    fn status(&self) -> StatusCode;
    fn code(&self) -> &'static str;
    /// Seconds a client should wait before retrying (`Retry-After`), for overload answers.
    fn retry_after_secs(&self) -> Option<u32> {
        None
    }
}

/// The JSON error answer for `err`; 5xx are also logged, as they are the service's fault.
pub fn error_response<E: ApiError>(err: &E, request_id: Option<String>) -> Response {
    let status = err.status();
    if status.is_server_error() {
        tracing::warn!(error = %err, code = err.code(), "request failed");
    } else {
        tracing::debug!(error = %err, code = err.code(), "request rejected");
    }
    let body = ErrorBody {
        error: err.code().to_owned(),
        message: err.to_string(),
        request_id,
    };
    let mut response = (status, Json(body)).into_response();
    if let Some(secs) = err.retry_after_secs() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}
