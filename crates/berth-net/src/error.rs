//! What can go wrong, with berth's stable error codes.

use berth_core::{ErrorCode, HasErrorCode};
use std::io;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A malformed or contradictory request.
    #[error("{0}")]
    Invalid(String),
    /// No such network (or parent interface, or container to join).
    #[error("{0}")]
    NotFound(String),
    /// Clashes with what exists: a subnet, an address, a port, a user.
    #[error("{0}")]
    Conflict(String),
    /// This host's kernel lacks what the request needs.
    #[error("{0}")]
    Unsupported(String),
    /// The kernel or the file system failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

impl NetError {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> NetError {
        NetError::Io {
            what: what.into(),
            source,
        }
    }
}

impl HasErrorCode for NetError {
    fn code(&self) -> ErrorCode {
        match self {
            NetError::Invalid(_) => ErrorCode::InvalidArgument,
            NetError::NotFound(_) => ErrorCode::NetworkNotFound,
            NetError::Conflict(_) => ErrorCode::NetworkConflict,
            NetError::Unsupported(_) => ErrorCode::LimitUnsupported,
            NetError::Io { .. } => ErrorCode::HostIo,
        }
    }
}

impl From<berth_core::spec::SpecError> for NetError {
    fn from(e: berth_core::spec::SpecError) -> Self {
        NetError::Invalid(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, NetError>;
