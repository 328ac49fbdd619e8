//! The shim's error type. Every variant maps to a stable [`ErrorCode`].

use berth_core::{ErrorCode, HasErrorCode};
use berth_runtime::RuntimeError;
use std::io;
use std::path::PathBuf;

/// What kept the shim from running its container or recording it.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// `spec.json` is missing, malformed or asks for something impossible.
    #[error("invalid shim spec {}: {why}", path.display())]
    InvalidSpec { path: PathBuf, why: String },
    /// The state dir cannot be used (missing, already finished, or served
    /// by another live shim).
    #[error("state dir {}: {why}", path.display())]
    StateDir { path: PathBuf, why: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The shim was started wrongly (an unusable `--ready-fd`).
    #[error("{0}")]
    Usage(String),
    /// Told to stop while its exit record could not be written.
    #[error("stopped before the exit record could be written")]
    Stopped,
}

impl ShimError {
    pub(crate) fn io(what: impl Into<String>, source: impl Into<io::Error>) -> Self {
        ShimError::Io {
            what: what.into(),
            source: source.into(),
        }
    }
}

impl HasErrorCode for ShimError {
    fn code(&self) -> ErrorCode {
        match self {
            ShimError::InvalidSpec { .. } => ErrorCode::InvalidArgument,
            ShimError::StateDir { .. } => ErrorCode::InvalidState,
            ShimError::Io { .. } => ErrorCode::HostIo,
            ShimError::Runtime(e) => e.code(),
            ShimError::Usage(_) => ErrorCode::InvalidArgument,
            ShimError::Stopped => ErrorCode::HostIo,
        }
    }
}
