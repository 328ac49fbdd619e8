//! The runtime's error type. Every variant maps to a stable [`ErrorCode`].

use berth_core::{ErrorCode, HasErrorCode};
use std::path::PathBuf;

/// What went wrong while creating, running or tearing down a container.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid container spec: {0}")]
    InvalidSpec(String),
    #[error("impossible limit: {0}")]
    InvalidLimit(String),
    #[error("limit cannot be enforced on this host: {0}")]
    LimitUnsupported(String),
    #[error("cgroup {path}: {action}: {source}")]
    Cgroup {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("setting up the root file system: {what}: {source}")]
    Rootfs {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the container process: {what}: {source}")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command:?}: executable file not found in the container (searched {searched})")]
    CommandNotFound { command: String, searched: String },
    #[error("{command:?}: cannot execute: {source}")]
    CommandNotExecutable {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("container {0} already exists")]
    ContainerExists(String),
    #[error("no container {0}")]
    ContainerNotFound(String),
    #[error("container {id} is {state}; cannot {action}")]
    InvalidState {
        id: String,
        state: &'static str,
        action: &'static str,
    },
    #[error("tearing down container {id}: {what}: {source}")]
    Teardown {
        id: String,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    HostIo {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl RuntimeError {
    pub(crate) fn host_io(what: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        RuntimeError::HostIo {
            what: what.into(),
            source: source.into(),
        }
    }

    pub(crate) fn rootfs(what: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        RuntimeError::Rootfs {
            what: what.into(),
            source: source.into(),
        }
    }

    pub(crate) fn spawn(what: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        RuntimeError::Spawn {
            what: what.into(),
            source: source.into(),
        }
    }
}

impl HasErrorCode for RuntimeError {
    fn code(&self) -> ErrorCode {
        match self {
            RuntimeError::InvalidSpec(_) => ErrorCode::InvalidArgument,
            RuntimeError::InvalidLimit(_) => ErrorCode::InvalidLimit,
            RuntimeError::LimitUnsupported(_) => ErrorCode::LimitUnsupported,
            RuntimeError::Cgroup { .. } => ErrorCode::CgroupFailed,
            RuntimeError::Rootfs { .. } => ErrorCode::RootfsSetupFailed,
            RuntimeError::Spawn { .. } => ErrorCode::SpawnFailed,
            RuntimeError::CommandNotFound { .. } => ErrorCode::CommandNotFound,
            RuntimeError::CommandNotExecutable { .. } => ErrorCode::CommandNotExecutable,
            RuntimeError::ContainerExists(_) => ErrorCode::ContainerExists,
            RuntimeError::ContainerNotFound(_) => ErrorCode::ContainerNotFound,
            RuntimeError::InvalidState { .. } => ErrorCode::InvalidState,
            RuntimeError::Teardown { .. } => ErrorCode::TeardownFailed,
            RuntimeError::HostIo { .. } => ErrorCode::HostIo,
        }
    }
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
