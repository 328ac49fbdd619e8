//! Errors on the wire: every error leaves an agent as
//! `{"error":{"code":…,"message":…,"retryable":…}}` with the status
//! [`status_for`] its code; a client turns it back into a [`ClientError`]
//! carrying the typed code.

use berth_core::{ErrorCode, ErrorReport};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorReport,
}

/// The HTTP status for a code: 4xx for what the caller can fix, 503 for
/// retryable host faults, 500 for the rest.
pub fn status_for(code: ErrorCode) -> StatusCode {
    use ErrorCode::*;
    match code {
        InvalidArgument | InvalidLimit | InvalidArchive | CommandNotFound
        | CommandNotExecutable => StatusCode::BAD_REQUEST,
        Unauthorized => StatusCode::UNAUTHORIZED,
        NotFound | ContainerNotFound | ImageNotFound | NetworkNotFound => StatusCode::NOT_FOUND,
        ContainerExists | InvalidState | ImageInUse | InsufficientResources | NetworkConflict => {
            StatusCode::CONFLICT
        }
        PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        LimitUnsupported => StatusCode::UNPROCESSABLE_ENTITY,
        CgroupFailed | RootfsSetupFailed | SpawnFailed | TeardownFailed | HostIo => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        StoreCorrupt | Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// What went wrong talking to an agent.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// No answer (connection refused, reset, timed out): the agent may be
    /// restarting or gone.
    #[error("agent {endpoint} unreachable: {message}")]
    Unreachable { endpoint: String, message: String },
    /// The agent answered with an error.
    #[error("agent {endpoint}: {status}: {report}")]
    Api {
        endpoint: String,
        status: u16,
        report: ErrorReport,
    },
    /// The agent answered something this client cannot read.
    #[error("agent {endpoint}: unexpected answer: {message}")]
    Protocol { endpoint: String, message: String },
}

impl ClientError {
    /// The agent's stable error code, when it answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { report, .. } => Some(report.code),
            _ => None,
        }
    }

    /// The agent's error report, when it answered with one.
    pub fn report(&self) -> Option<&ErrorReport> {
        match self {
            ClientError::Api { report, .. } => Some(report),
            _ => None,
        }
    }

    /// The agent does not know the container, image or route.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Api { status, .. } if *status == StatusCode::NOT_FOUND.as_u16())
    }

    /// Whether trying again (later, or elsewhere) may succeed: no answer,
    /// an unreadable one, or an error the agent marks retryable.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } | ClientError::Protocol { .. } => true,
            ClientError::Api { report, .. } => report.retryable,
        }
    }

    /// Reads an error answer. A code this client does not know (a newer
    /// agent) becomes `internal`, keeping the agent's message, code and
    /// retry flag; a body that is not an error body becomes `internal` with
    /// the body as message.
    pub(crate) fn from_answer(endpoint: String, status: u16, body: &[u8]) -> ClientError {
        #[derive(Deserialize)]
        struct Envelope {
            error: LooseReport,
        }
        #[derive(Deserialize)]
        struct LooseReport {
            code: String,
            message: String,
            #[serde(default)]
            retryable: Option<bool>,
        }
        let server_error = StatusCode::from_u16(status).is_ok_and(|s| s.is_server_error());
        let report = match serde_json::from_slice::<Envelope>(body) {
            Ok(Envelope { error }) => {
                let known = serde_json::from_value::<ErrorCode>(serde_json::Value::String(
                    error.code.clone(),
                ));
                match known {
                    Ok(code) => ErrorReport {
                        code,
                        message: error.message,
                        retryable: error.retryable.unwrap_or_else(|| code.retryable()),
                    },
                    Err(_) => ErrorReport {
                        code: ErrorCode::Internal,
                        message: format!("[{}] {}", error.code, error.message),
                        retryable: error.retryable.unwrap_or(server_error),
                    },
                }
            }
            Err(_) => ErrorReport {
                code: ErrorCode::Internal,
                message: String::from_utf8_lossy(body).into_owned(),
                retryable: server_error,
            },
        };
        ClientError::Api {
            endpoint,
            status,
            report,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_answers_keep_their_typed_code() {
        let body =
            br#"{"error":{"code":"image_not_found","message":"no image x","retryable":false}}"#;
        let e = ClientError::from_answer("a".into(), 404, body);
        assert_eq!(e.code(), Some(ErrorCode::ImageNotFound));
        assert!(e.is_not_found());
        assert!(!e.is_retryable());
    }

    #[test]
    fn unknown_codes_and_bodies_become_internal_without_losing_the_message() {
        let body = br#"{"error":{"code":"quota_exceeded","message":"full","retryable":true}}"#;
        let e = ClientError::from_answer("a".into(), 409, body);
        assert_eq!(e.code(), Some(ErrorCode::Internal));
        assert!(e.is_retryable());
        assert!(e.to_string().contains("[quota_exceeded] full"), "{e}");
        let e = ClientError::from_answer("a".into(), 502, b"bad gateway");
        assert_eq!(e.code(), Some(ErrorCode::Internal));
        assert!(e.is_retryable());
        let e = ClientError::from_answer("a".into(), 400, b"nope");
        assert!(!e.is_retryable());
    }

    #[test]
    fn every_code_has_a_status_that_matches_its_retry_flag() {
        for code in ErrorCode::ALL {
            let status = status_for(*code);
            assert!(status.is_client_error() || status.is_server_error());
            // A full node is the caller's conflict (409) yet worth retrying
            // later or elsewhere; every other retryable code is a host fault.
            if code.retryable() && *code != ErrorCode::InsufficientResources {
                assert!(status.is_server_error(), "{code} is retryable but {status}");
            }
        }
    }
}
