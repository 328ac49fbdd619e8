//! What the berth-net tests share.
// Each test binary uses a part of it.
#![allow(dead_code)]

use std::os::fd::{AsRawFd, OwnedFd};

/// Runs `f` on a thread inside the network namespace `ns` (as a
/// container's process would run there).
pub fn inside<T: Send + 'static>(ns: &OwnedFd, f: impl FnOnce() -> T + Send + 'static) -> T {
    let fd = ns.try_clone().unwrap();
    std::thread::spawn(move || {
        // SAFETY: setns of this short-lived thread into a namespace we hold.
        assert_eq!(
            unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        f()
    })
    .join()
    .unwrap()
}

/// A new network namespace, as a container's runtime makes one (made on a
/// thread of its own, which ends in it).
pub fn new_namespace() -> OwnedFd {
    std::thread::spawn(|| {
        // SAFETY: unshare of this short-lived thread only.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
        std::fs::File::open("/proc/thread-self/ns/net")
            .unwrap()
            .into()
    })
    .join()
    .unwrap()
}
