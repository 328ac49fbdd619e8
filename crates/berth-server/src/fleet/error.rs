//! The fleet API's errors: berth's error body (`{"error": {"code",
//! "message"}}`) with the status of each code, as the agent's API answers.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_api::{status_for, ErrorBody};
use berth_core::{ErrorCode, ErrorReport};
use berth_store::StoreError;

#[derive(Debug)]
pub struct FleetError(pub ErrorReport);

impl FleetError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> FleetError {
        FleetError(ErrorReport::new(code, message))
    }

    pub fn invalid(message: impl Into<String>) -> FleetError {
        FleetError::new(ErrorCode::InvalidArgument, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> FleetError {
        FleetError::new(ErrorCode::Unauthorized, message)
    }

    pub fn not_found(message: impl Into<String>) -> FleetError {
        FleetError::new(ErrorCode::NotFound, message)
    }
}

impl From<StoreError> for FleetError {
    fn from(e: StoreError) -> FleetError {
        match e {
            StoreError::Conflict(message) => FleetError::new(ErrorCode::InvalidState, message),
            other => {
                tracing::error!("fleet store call failed: {other}");
                FleetError::new(ErrorCode::Internal, other.to_string())
            }
        }
    }
}

impl IntoResponse for FleetError {
    fn into_response(self) -> Response {
        let status = status_for(self.0.code);
        let mut response = (status, Json(ErrorBody { error: self.0 })).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
