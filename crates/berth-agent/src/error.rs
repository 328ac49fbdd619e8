//! API errors: a stable code (berth-core's), a message, and the HTTP status
//! that fits the code. Every error leaves the agent as
//! `{"error":{"code":…,"message":…,"retryable":…}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use berth_api::ErrorBody;
use berth_core::{ErrorCode, ErrorReport, HasErrorCode};
use std::fmt;

/// An error answered by the API.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub report: ErrorReport,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            report: ErrorReport::new(code, message),
        }
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::InvalidArgument, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Internal, message)
    }

    pub fn io(what: impl fmt::Display, error: impl fmt::Display) -> ApiError {
        ApiError::new(ErrorCode::HostIo, format!("{what}: {error}"))
    }

    pub fn no_container(id: &str) -> ApiError {
        ApiError::new(
            ErrorCode::ContainerNotFound,
            format!("no container with id {id:?}"),
        )
    }

    /// Wraps any berth library error, keeping its code.
    pub fn from_lib(error: &dyn HasErrorCode) -> ApiError {
        ApiError::new(error.code(), error.to_string())
    }

    pub fn code(&self) -> ErrorCode {
        self.report.code
    }

    pub fn status(&self) -> StatusCode {
        berth_api::status_for(self.report.code)
    }
}

impl From<ErrorReport> for ApiError {
    fn from(report: ErrorReport) -> ApiError {
        ApiError { report }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.report.fmt(f)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(code = %self.report.code, "{}", self.report.message);
        }
        (status, axum::Json(ErrorBody { error: self.report })).into_response()
    }
}
