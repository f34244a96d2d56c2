//! The REST boundary's one error type. Client errors say what was wrong; server errors say
//! nothing internal (the cause is logged once, here).

use crate::auth::AuthError;
use crate::read::ReadError;
use crate::read::export::ExportError;
use crate::storage::StorageError;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

/// The body of every error answer (named `Error` in the OpenAPI document).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    pub error: ErrorCode,
    /// What was wrong; says nothing internal for `internal`.
    pub message: String,
}

/// An error answer's kind, one per status.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    Unavailable,
    Internal,
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        match e {
            AuthError::Missing | AuthError::Invalid => ApiError::Unauthorized,
            AuthError::Forbidden { .. } => ApiError::Forbidden(e.to_string()),
            AuthError::Storage(s) => s.into(),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> ApiError {
        if e.is_transient() {
            ApiError::Unavailable("storage is temporarily unavailable; retry".into())
        } else {
            ApiError::Internal(e.to_string())
        }
    }
}

impl From<ExportError> for ApiError {
    fn from(e: ExportError) -> ApiError {
        match e {
            ExportError::Range(m) => ApiError::BadRequest(m),
            ExportError::Storage(s) => s.into(),
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> ApiError {
        match e {
            ReadError::Storage(s) => s.into(),
            ReadError::NoLedger => ApiError::NotFound(e.to_string()),
            ReadError::Interrupted(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error) = match &self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, ErrorCode::BadRequest),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, ErrorCode::Forbidden),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable),
            ApiError::Internal(cause) => {
                tracing::error!(%cause, "Request failed.");
                (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal)
            }
        };
        let body = Json(ErrorBody {
            error,
            message: self.to_string(),
        });
        let mut resp = (status, body).into_response();
        let h = resp.headers_mut();
        match status {
            StatusCode::UNAUTHORIZED => {
                h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transient_read_error_is_retryable_and_the_rest_are_not() {
        let status = |e: ReadError| ApiError::from(e).into_response().status();
        // A closed or exhausted pool is the storage being briefly away: retry (the verify endpoint
        // used to answer 500 here).
        let away = ReadError::Storage(StorageError::Db(sqlx::Error::PoolClosed));
        assert_eq!(status(away), StatusCode::SERVICE_UNAVAILABLE);
        let lost = ReadError::Storage(StorageError::Db(sqlx::Error::RowNotFound));
        assert_eq!(status(lost), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(status(ReadError::NoLedger), StatusCode::NOT_FOUND);
        let stopped = ReadError::Interrupted("the verifier stopped".into());
        assert_eq!(status(stopped), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
