//! The container's network namespace, made by the parent.
//!
//! Creating a network namespace is the most expensive single step of a
//! container's start (~0.4 ms here: every per-namespace network subsystem
//! initialises). The parent makes it on its own CPU while the child builds
//! its mounts on another, then hands it over through the start socket; the
//! child joins it before mounting `/sys`, whose network view belongs to the
//! namespace of the process that mounts it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `ioctl` returning an fd for a socket's network namespace (linux/sockios.h).
const SIOCGSKNS: libc::c_ulong = 0x894C;

/// A new network namespace whose loopback interface is up. The calling
/// thread enters it to set it up and returns to its own before this returns
/// (an error saying "returning to the host network namespace" means it could
/// not: the thread must then stop).
pub fn new_loopback_namespace() -> io::Result<OwnedFd> {
    let home = open_own_namespace()?;
    // SAFETY: unshare affects only the calling thread's namespaces, which
    // are restored below.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let made = bring_loopback_up();
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

/// Sets `lo` up in the current network namespace and returns that
/// namespace (from the socket used, which lives in it).
fn bring_loopback_up() -> io::Result<OwnedFd> {
    // SAFETY: socket and ioctl calls on a local ifreq; the fds are owned.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return Err(io::Error::last_os_error());
        }
        let sock = OwnedFd::from_raw_fd(s);
        let mut ifr: libc::ifreq = std::mem::zeroed();
        ifr.ifr_name[0] = b'l' as libc::c_char;
        ifr.ifr_name[1] = b'o' as libc::c_char;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut ifr) < 0 {
            return Err(io::Error::last_os_error());
        }
        ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &ifr) < 0 {
            return Err(io::Error::last_os_error());
        }
        let ns = libc::ioctl(sock.as_raw_fd(), SIOCGSKNS as _);
        if ns < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(ns))
    }
}
