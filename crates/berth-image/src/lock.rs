//! Advisory file locks (`flock`) that order concurrent `berth` processes.
//!
//! Two locks, always taken in this order to rule out deadlocks:
//! 1. `gc.lock`: shared by imports and leases, exclusive for prune. While an
//!    import holds it, nothing it decided to reuse (a blob or layer already in
//!    the store) can be pruned from under it; the same goes for a lease being
//!    recorded.
//! 2. `index.lock`: exclusive around every read-modify-write of `index.json`
//!    (commit of an import, remove, prune) so that no update is lost.
//!
//! Readers (resolve, list, inspect) take no lock: `index.json` is replaced
//! atomically by rename, and blobs and layer directories only appear complete.

use crate::error::ImageError;
use rustix::fs::FlockOperation;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Holds a lock until dropped (closing the file releases it).
#[derive(Debug)]
pub(crate) struct LockGuard {
    _file: File,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockMode {
    Shared,
    Exclusive,
}

/// Blocks until the lock on `path` (created if missing) is held.
pub(crate) fn lock(path: &Path, mode: LockMode) -> Result<LockGuard, ImageError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| ImageError::io_at("opening lock file", path, e))?;
    let op = match mode {
        LockMode::Shared => FlockOperation::LockShared,
        LockMode::Exclusive => FlockOperation::LockExclusive,
    };
    loop {
        match rustix::fs::flock(&file, op) {
            Ok(()) => return Ok(LockGuard { _file: file }),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(ImageError::io_at("locking", path, e)),
        }
    }
}
