//! The shim's own signals: SIGTERM and SIGINT mean "stop the container"
//! and are read from a signalfd by the supervisor loop; SIGPIPE is ignored
//! (a client that hangs up, or a ready-fd reader that went away, is an
//! error on that fd, not a reason to die).
//! The container starts with a clean mask and default dispositions (the
//! runtime resets both), so none of this leaks into it.

use berth_runtime::supervise::{OnDrop, SignalFd};
use std::io;
use std::time::Duration;

const STOP_SIGNALS: [libc::c_int; 2] = [libc::SIGTERM, libc::SIGINT];

/// Ignores SIGPIPE for the rest of the shim's life. Separate from
/// [`install`] because it must come first of all: Rust binaries start with
/// SIGPIPE ignored, but `run` may be called from elsewhere, and even a
/// failure reported before the signalfd exists writes to a pipe.
pub(crate) fn ignore_sigpipe() -> io::Result<()> {
    // SAFETY: setting a disposition to SIG_IGN installs no handler code.
    if unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) } == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Blocks the stop signals for the rest of the shim's life (after
/// [`ignore_sigpipe`]) and returns the signalfd they arrive on. Done
/// early, so that a stop asked for during setup is not lost; never
/// unblocked, so that one arriving while the shim finishes cannot kill it
/// between its exit record and its exit.
pub(crate) fn install() -> io::Result<SignalFd> {
    SignalFd::block(&STOP_SIGNALS, OnDrop::KeepBlocked)
}

/// How long a stopped container (SIGTERM or SIGINT to the shim) has to exit
/// after its SIGTERM before it gets SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
