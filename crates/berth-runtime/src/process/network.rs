//! The container's network namespace, made by the parent.
//!
//! Creating a network namespace is the most expensive single step of a
//! container's start (~0.4 ms here: every per-namespace network subsystem
//! initialises). The parent makes it on its own CPU while the child builds
//! its mounts on another, then hands it over through the start socket; the
//! child joins it before mounting `/sys`, whose network view belongs to the
//! namespace of the process that mounts it, and brings its loopback up
//! there (the child's share of the work is the shorter one).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// A new network namespace (its loopback still down). The calling thread
/// enters it to get a handle and returns to its own before this returns (an
/// error saying "returning to the host network namespace" means it could
/// not: the thread must then stop).
pub fn new_namespace() -> io::Result<OwnedFd> {
    let home = open_own_namespace()?;
    // SAFETY: unshare affects only the calling thread's namespaces, which
    // are restored below.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let made = open_own_namespace();
    // SAFETY: setns to a namespace fd we hold.
    if unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        // Cannot happen with the privilege unshare needed; if it does, the
        // caller must not go on creating containers from this thread.
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("returning to the host network namespace: {e}"),
        ));
    }
    made
}

fn open_own_namespace() -> io::Result<OwnedFd> {
    rustix::fs::open(
        "/proc/thread-self/ns/net",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(io::Error::from)
}
