//! A new network namespace, and a routing socket inside it.
//!
//! Entering a namespace is per thread. Both calls here do it on a thread of
//! their own that ends afterwards, never on the caller's: a thread left in
//! a container's namespace (if the way back failed) would run the caller's
//! next work there (a pooled blocking thread of the agent, say).

use crate::netlink::Netlink;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// A network namespace made for a container: its handle, and a routing
/// socket bound to it (to set up its side of the link from outside).
pub struct Namespace {
    pub handle: OwnedFd,
    pub route: Netlink,
}

impl Namespace {
    /// Makes a namespace, and opens a routing socket in it.
    pub fn new() -> io::Result<Namespace> {
        on_own_thread(|| {
            // SAFETY: unshare affects only this thread, which ends here.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } < 0 {
                return Err(io::Error::last_os_error());
            }
            let handle = open_own()?;
            let route = Netlink::route()?;
            Ok(Namespace { handle, route })
        })
    }

    /// A routing socket inside the namespace `handle` (made on a thread of
    /// its own that enters it; the socket stays bound to the namespace).
    pub fn route_in(handle: BorrowedFd<'_>) -> io::Result<Netlink> {
        on_own_thread(move || {
            join(handle)?;
            Netlink::route()
        })
    }

    /// Runs `f` inside the namespace (on a thread of its own).
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        let handle = self.handle.as_fd();
        on_own_thread(move || {
            join(handle)?;
            Ok(f())
        })
    }
}

fn join(ns: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: setns of this thread (one of `on_own_thread`'s, which ends
    // afterwards) into a namespace handle the caller holds.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a new thread and waits for it.
fn on_own_thread<T: Send>(f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(f)
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("a namespace thread panicked")))
    })
}

fn open_own() -> io::Result<OwnedFd> {
    rustix::fs::open(
        "/proc/thread-self/ns/net",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(io::Error::from)
}
