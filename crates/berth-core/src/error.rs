//! Stable, machine-readable error codes.
//!
//! Callers decide what to do (retry, report, give up) from an [`ErrorCode`] and
//! its [`ErrorCode::retryable`] flag, never from message text. Codes are part of
//! berth's public API: add new ones freely, never rename or repurpose one.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why an operation failed, as a stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ErrorCode {
    /// A request or flag was malformed (bad name, bad quantity, bad volume spec).
    InvalidArgument,
    /// No image with that reference is in the store.
    ImageNotFound,
    /// An image is still needed (by a container) and cannot be removed.
    ImageInUse,
    /// An archive or image layout is malformed or hostile; nothing was imported.
    InvalidArchive,
    /// The image store itself is damaged (missing blob, bad digest on disk).
    StoreCorrupt,
    /// A requested limit is impossible (below the minimum, above the machine).
    InvalidLimit,
    /// A requested limit cannot be enforced on this host (controller missing).
    LimitUnsupported,
    /// Creating or configuring the container's cgroups failed.
    CgroupFailed,
    /// Building the container's root file system or mounts failed.
    RootfsSetupFailed,
    /// The kernel refused to create the container's process or namespaces.
    SpawnFailed,
    /// The container's command does not exist in its root file system.
    CommandNotFound,
    /// The container's command exists but could not be executed.
    CommandNotExecutable,
    /// No container with that id is known.
    ContainerNotFound,
    /// A container with that id already exists.
    ContainerExists,
    /// The operation does not fit the container's current state.
    InvalidState,
    /// Cleaning up a container's resources failed (and will be retried by gc).
    TeardownFailed,
    /// An I/O failure on the host that is likely transient (disk full, EAGAIN).
    HostIo,
    /// Something berth did not expect; a bug worth reporting.
    Internal,
    /// The request carried no valid credentials.
    Unauthorized,
    /// No such API route or resource (other than a container or image).
    NotFound,
    /// The request body is larger than the API accepts.
    PayloadTooLarge,
    /// The host cannot take the work now (its memory ceiling is fully
    /// requested); another host, or this one later, may.
    InsufficientResources,
    /// No network of that name (or parent interface) on this host.
    NetworkNotFound,
    /// The network request clashes with what exists: an overlapping
    /// subnet, an address or port already taken, a network still in use.
    NetworkConflict,
}

impl ErrorCode {
    /// Every code, for documentation and exhaustive tests.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::InvalidArgument,
        ErrorCode::ImageNotFound,
        ErrorCode::ImageInUse,
        ErrorCode::InvalidArchive,
        ErrorCode::StoreCorrupt,
        ErrorCode::InvalidLimit,
        ErrorCode::LimitUnsupported,
        ErrorCode::CgroupFailed,
        ErrorCode::RootfsSetupFailed,
        ErrorCode::SpawnFailed,
        ErrorCode::CommandNotFound,
        ErrorCode::CommandNotExecutable,
        ErrorCode::ContainerNotFound,
        ErrorCode::ContainerExists,
        ErrorCode::InvalidState,
        ErrorCode::TeardownFailed,
        ErrorCode::HostIo,
        ErrorCode::Internal,
        ErrorCode::Unauthorized,
        ErrorCode::NotFound,
        ErrorCode::PayloadTooLarge,
        ErrorCode::InsufficientResources,
        ErrorCode::NetworkNotFound,
        ErrorCode::NetworkConflict,
    ];

    /// The code as it appears in JSON and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::ImageNotFound => "image_not_found",
            ErrorCode::ImageInUse => "image_in_use",
            ErrorCode::InvalidArchive => "invalid_archive",
            ErrorCode::StoreCorrupt => "store_corrupt",
            ErrorCode::InvalidLimit => "invalid_limit",
            ErrorCode::LimitUnsupported => "limit_unsupported",
            ErrorCode::CgroupFailed => "cgroup_failed",
            ErrorCode::RootfsSetupFailed => "rootfs_setup_failed",
            ErrorCode::SpawnFailed => "spawn_failed",
            ErrorCode::CommandNotFound => "command_not_found",
            ErrorCode::CommandNotExecutable => "command_not_executable",
            ErrorCode::ContainerNotFound => "container_not_found",
            ErrorCode::ContainerExists => "container_exists",
            ErrorCode::InvalidState => "invalid_state",
            ErrorCode::TeardownFailed => "teardown_failed",
            ErrorCode::HostIo => "host_io",
            ErrorCode::Internal => "internal",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::NotFound => "not_found",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::InsufficientResources => "insufficient_resources",
            ErrorCode::NetworkNotFound => "network_not_found",
            ErrorCode::NetworkConflict => "network_conflict",
        }
    }

    /// Whether running the same request again (possibly elsewhere) may succeed.
    ///
    /// Retryable codes are infrastructure faults of the host, not of the
    /// request: a scheduler retries them invisibly; it never retries the others.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::CgroupFailed
                | ErrorCode::RootfsSetupFailed
                | ErrorCode::SpawnFailed
                | ErrorCode::TeardownFailed
                | ErrorCode::HostIo
                | ErrorCode::InsufficientResources
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Implemented by every berth error type so that callers can classify it.
pub trait HasErrorCode: std::error::Error {
    /// The stable code of this error.
    fn code(&self) -> ErrorCode;

    /// A serialisable report (code, message, retryable) for APIs and `--json`.
    fn report(&self) -> ErrorReport {
        ErrorReport::new(self.code(), self.to_string())
    }
}

/// An error as it travels over an API: stable code, human message, retry hint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorReport {
    pub code: ErrorCode,
    pub message: String,
    pub retryable: bool,
}

impl ErrorReport {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorReport {
            code,
            message: message.into(),
            retryable: code.retryable(),
        }
    }
}

impl fmt::Display for ErrorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialise_as_their_stable_names() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(code).expect("serialise code");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let back: ErrorCode = serde_json::from_str(&json).expect("parse code");
            assert_eq!(back, *code);
        }
    }

    #[test]
    fn only_infrastructure_faults_are_retryable() {
        assert!(ErrorCode::SpawnFailed.retryable());
        assert!(ErrorCode::CgroupFailed.retryable());
        assert!(!ErrorCode::ImageNotFound.retryable());
        assert!(!ErrorCode::InvalidLimit.retryable());
        assert!(!ErrorCode::LimitUnsupported.retryable());
        assert!(!ErrorCode::CommandNotFound.retryable());
    }

    #[test]
    fn codes_are_unique() {
        let mut names: Vec<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
    }
}
