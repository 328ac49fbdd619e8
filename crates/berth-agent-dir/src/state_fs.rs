//! Keeping the per-container state dirs on a tmpfs.
//!
//! Every container writes and removes a dozen small files (spec, records,
//! pid, socket, inline files, log). They matter only while the host is up
//! (a container does not survive a reboot either), so, like runc's and
//! containerd's state under `/run`, they belong in memory: on a disk file
//! system each create and unlink costs inode allocation, and on ext4
//! without a journal the allocator even scans past every inode freed in the
//! last minute, which grows with the container churn.
//!
//! When told to (`berth agent --state-tmpfs`, and `berth up` by default) the
//! agent mounts a private tmpfs on `<data>/agent/run` (container state
//! dirs and the runtime dirs of memory-scratch containers) unless that
//! already is on one. The mount outlives the agent (running containers keep their state
//! across a restart) and is taken down once no container state is left: by
//! the agent when it stops, or by `berth gc`.

use rustix::fs::{statfs, StatFs};
use rustix::mount::{mount, unmount, MountFlags, UnmountFlags};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// `TMPFS_MAGIC` from linux/magic.h.
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// What [`ensure_tmpfs`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateFs {
    /// The dir already was on a tmpfs (ours from before, or the host's /run).
    AlreadyTmpfs,
    /// A new tmpfs was mounted on it.
    Mounted,
    /// It holds state from an agent that kept it on disk: mounting over it
    /// would hide those containers, so it stays on disk until it is empty.
    KeptOnDiskWithState,
}

/// Puts `dir` (which exists) on a tmpfs unless it already is on one.
pub fn ensure_tmpfs(dir: &Path) -> io::Result<StateFs> {
    if is_tmpfs(dir)? {
        return Ok(StateFs::AlreadyTmpfs);
    }
    if first_state(dir)?.is_some() {
        return Ok(StateFs::KeptOnDiskWithState);
    }
    // Not noexec: inline files are a lower layer of containers' rootfs and
    // may be programs.
    mount(
        "berth-state",
        dir,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        c"mode=0700",
    )?;
    Ok(StateFs::Mounted)
}

/// Unmounts the tmpfs on `dir` if it is a mount point of its own holding no
/// container state (nothing but empty dirs); true if it did. A tmpfs the dir merely lies on (the
/// host's /run) is left alone.
pub fn release_if_empty(dir: &Path) -> io::Result<bool> {
    if !dir.exists() || !is_tmpfs(dir)? || !is_mount_point(dir)? {
        return Ok(false);
    }
    if let Some(state) = first_state(dir)? {
        tracing::info!(
            "the state tmpfs at {} stays: it holds {}",
            dir.display(),
            state.display()
        );
        return Ok(false);
    }
    unmount(dir, UnmountFlags::empty())?;
    Ok(true)
}

/// Anything in `dir` but empty dirs (`containers/`, `runtime/`) is state:
/// the first such path.
fn first_state(dir: &Path) -> io::Result<Option<PathBuf>> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if !fs::symlink_metadata(&path)?.is_dir() {
            return Ok(Some(path));
        }
        if let Some(inner) = fs::read_dir(&path)?.next() {
            return Ok(Some(inner?.path()));
        }
    }
    Ok(None)
}

fn is_tmpfs(dir: &Path) -> io::Result<bool> {
    let stat: StatFs = statfs(dir)?;
    Ok(stat.f_type as i64 == TMPFS_MAGIC)
}

fn is_mount_point(dir: &Path) -> io::Result<bool> {
    let parent = dir.parent().unwrap_or(Path::new("/"));
    Ok(fs::metadata(dir)?.dev() != fs::metadata(parent)?.dev())
}
