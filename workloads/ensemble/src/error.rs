//! Why a request to the ensemble failed, as JSON error answers.

use http::StatusCode;
use pipeline_common::error::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum EnsembleError {
    #[error("invalid query string: {0}")]
    InvalidQuery(String),
    #[error("request_id must be 1 to {max} printable ASCII characters")]
    InvalidRequestId { max: usize },
    #[error("unsupported content type {0:?}: send the raw image as application/octet-stream")]
    UnsupportedContentType(String),
    #[error("the Timestamp header must be printable ASCII")]
    InvalidTimestamp,
    #[error("cannot read the request body: {message}")]
    Body { status: StatusCode, message: String },
    #[error(
        "the body must be exactly {expected} bytes of raw 224x224 RGB pixels, got {actual} bytes"
    )]
    WrongBodyLength { expected: usize, actual: usize },
    #[error("all {count} models failed: {details}")]
    AllModelsFailed { count: usize, details: String },
}

impl ApiError for EnsembleError {
    fn status(&self) -> StatusCode {
        match self {
            Self::InvalidQuery(_)
            | Self::InvalidRequestId { .. }
            | Self::InvalidTimestamp
            | Self::WrongBodyLength { .. } => StatusCode::BAD_REQUEST,
            Self::UnsupportedContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Body { status, .. } => *status,
            Self::AllModelsFailed { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::InvalidQuery(_) => "invalid_query",
            Self::InvalidRequestId { .. } => "invalid_request_id",
            Self::UnsupportedContentType(_) => "unsupported_content_type",
            Self::InvalidTimestamp => "invalid_timestamp",
            Self::Body { status, .. } if *status == StatusCode::PAYLOAD_TOO_LARGE => {
                "body_too_large"
            }
            Self::Body { .. } => "unreadable_body",
            Self::WrongBodyLength { .. } => "wrong_body_length",
            Self::AllModelsFailed { .. } => "all_models_failed",
        }
    }
}

impl From<axum::extract::rejection::BytesRejection> for EnsembleError {
    fn from(rejection: axum::extract::rejection::BytesRejection) -> Self {
        Self::Body {
            status: rejection.status(),
            message: rejection.body_text(),
        }
    }
}
