//! What the berth-net tests share.

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
