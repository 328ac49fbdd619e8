//! A new network namespace, and a routing socket inside it.

use crate::netlink::Netlink;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// A network namespace made for a container: its handle, and a routing
/// socket bound to it (to set up its side of the link from outside).
pub struct Namespace {
    pub handle: OwnedFd,
    pub route: Netlink,
}

impl Namespace {
    /// Makes a namespace. The calling thread enters it just long enough to
    /// take a handle and open a socket there, then returns to its own;
    /// an error mentioning "returning" means it could not, and the thread
    /// must not go on.
    pub fn new() -> io::Result<Namespace> {
        let home = open_own()?;
        // SAFETY: unshare affects only the calling thread's network
        // namespace, which is restored below before returning.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let made = open_own().and_then(|handle| Ok((handle, Netlink::route()?)));
        // SAFETY: setns to the namespace handle we hold.
        if unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("returning to the host network namespace: {e}"),
            ));
        }
        let (handle, route) = made?;
        Ok(Namespace { handle, route })
    }
}

impl Namespace {
    /// Runs `f` on this thread inside the namespace, then returns to the
    /// thread's own (an error mentioning "returning" means it could not).
    pub fn enter<T>(&self, f: impl FnOnce() -> T) -> io::Result<T> {
        let home = open_own()?;
        // SAFETY: setns of the calling thread into a namespace handle we
        // hold; it is moved back below.
        if unsafe { libc::setns(self.handle.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let out = f();
        // SAFETY: as above, back to the thread's own namespace.
        if unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("returning to the host network namespace: {e}"),
            ));
        }
        Ok(out)
    }
}

fn open_own() -> io::Result<OwnedFd> {
    rustix::fs::open(
        "/proc/thread-self/ns/net",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(io::Error::from)
}
