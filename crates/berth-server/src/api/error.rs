//! API errors. Every error leaves the server as `{"msg": "…"}` with the
//! status that fits it, because IronWorker clients read `msg` (and nothing
//! else) to tell the user what went wrong.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use berth_store::StoreError;

/// An error answered by the API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed or a value is out of range.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no token, or one that opens nothing.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: a valid token of another project.
    #[error("{0}")]
    Forbidden(String),
    /// 404: an unknown id, name or route.
    #[error("{0}")]
    NotFound(String),
    /// 405: a known route, another method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 409: the operation does not fit the current state.
    #[error("{0}")]
    Conflict(String),
    /// 413: the body (or a part of it, such as a payload) is too large.
    #[error("{0}")]
    TooLarge(String),
    /// 415: a body in a content type this route does not read.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 500 or 503: the store failed. Its details are logged, never sent:
    /// they can name tables, hosts or other projects' rows.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// 500: something inside the server failed (details logged only).
    #[error("internal: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn bad(msg: impl Into<String>) -> ApiError {
        ApiError::BadRequest(msg.into())
    }

    pub fn not_found(msg: impl Into<String>) -> ApiError {
        ApiError::NotFound(msg.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Store(e) => store_status(e),
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the client is told.
    fn message(&self) -> String {
        match self {
            ApiError::Store(StoreError::UnknownCode(name)) => format!("code not found: {name:?}"),
            ApiError::Store(StoreError::Conflict(msg)) => msg.clone(),
            ApiError::Store(e @ StoreError::QuotaExceeded { .. }) => e.to_string(),
            ApiError::Store(e) if store_status(e) == StatusCode::SERVICE_UNAVAILABLE => {
                "the database is unavailable; try again later".to_owned()
            }
            ApiError::Store(_) | ApiError::Internal(_) => "internal server error".to_owned(),
            other => other.to_string(),
        }
    }
}

/// The status for a store error: the ones a client caused are 4xx, a
/// database that cannot be reached (or is momentarily busy) is 503 so that
/// clients retry, anything else is a 500.
fn store_status(error: &StoreError) -> StatusCode {
    match error {
        StoreError::UnknownCode(_) | StoreError::UnknownProject(_) => StatusCode::NOT_FOUND,
        StoreError::Conflict(_) => StatusCode::CONFLICT,
        StoreError::QuotaExceeded { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        StoreError::Database(e) if database_unavailable(e) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Whether a database error means "not reachable now" rather than "broken".
fn database_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // SQLite: SQLITE_BUSY (5), SQLITE_LOCKED (6), SQLITE_FULL (13:
            // the disk is full; the write is refused whole and the store
            // works again once space is freed). PostgreSQL:
            // connection exceptions (08…), insufficient resources (53…),
            // operator intervention such as a shutdown (57P…), and
            // serialization failures / deadlocks (40001, 40P01) that a retry
            // resolves.
            matches!(&*code, "5" | "6" | "13" | "40001" | "40P01")
                || code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P")
        }
        _ => false,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), error = %self, "request failed");
        }
        let body = serde_json::json!({ "msg": self.message() });
        (status, axum::Json(body)).into_response()
    }
}

/// A result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
