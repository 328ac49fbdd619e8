//! The state of one layer being unpacked, and how an entry's failure is
//! reported: what the unpacking steps (`mod.rs`, `meta`, `paths`,
//! `sparse`) share.

use crate::error::{self, ImageError};
use rustix::fd::OwnedFd;
use rustix::fs::Timestamps;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;

/// The xattr overlayfs reads to mark a directory opaque.
pub(super) const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Counts of what one layer contained.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct UnpackStats {
    pub entries: u64,
    /// Bytes of regular file data written.
    pub file_bytes: u64,
}

/// The state of one layer being unpacked.
pub(super) struct Unpacker<'l> {
    pub(super) root: OwnedFd,
    pub(super) trash: OwnedFd,
    pub(super) trash_seq: u64,
    pub(super) label: &'l str,
    /// Directory mtimes, applied at the end (creating entries inside a
    /// directory changes its mtime). Keyed by normalised path.
    pub(super) dir_times: HashMap<Vec<u8>, Timestamps>,
    pub(super) buf: Vec<u8>,
    pub(super) stats: UnpackStats,
}

impl Unpacker<'_> {
    pub(super) fn fail(&self, name: &str, reason: impl Into<String>) -> ImageError {
        ImageError::invalid_entry(self.label, name, reason)
    }

    /// An OS error for an entry: the host's fault (disk full) or the
    /// archive's (a name too long, a link to nothing).
    pub(super) fn os(&self, name: &str, action: &str, err: impl Into<io::Error>) -> ImageError {
        let err = err.into();
        if error::is_host_fault(&err) {
            ImageError::io(
                format!("unpacking {} (entry {name:?}): {action}", self.label),
                err,
            )
        } else {
            self.fail(name, format!("{action}: {err}"))
        }
    }
}

/// A tar name's bytes as an OS string (names are bytes, not UTF-8).
pub(super) fn os(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}
