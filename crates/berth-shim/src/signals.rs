//! The shim's own signals: SIGTERM and SIGINT mean "stop the container"
//! and are read from a signalfd by the poll loop; SIGPIPE is ignored (a
//! client that hangs up, or a ready-fd reader that went away, is an error
//! on that fd, not a reason to die).
//! The container starts with a clean mask and default dispositions (the
//! runtime resets both), so none of this leaks into it.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};

const STOP_SIGNALS: [libc::c_int; 2] = [libc::SIGTERM, libc::SIGINT];

pub(crate) struct Signals {
    fd: OwnedFd,
}

/// Ignores SIGPIPE for the rest of the shim's life. Separate from
/// [`Signals::install`] because it must come first of all: Rust binaries
/// start with SIGPIPE ignored, but `run` may be called from elsewhere, and
/// even a failure reported before the signalfd exists writes to a pipe.
pub(crate) fn ignore_sigpipe() -> io::Result<()> {
    // SAFETY: setting a disposition to SIG_IGN installs no handler code.
    if unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) } == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Signals {
    /// Installs the shim's signal handling for the rest of its life (after
    /// [`ignore_sigpipe`]). Done early, so that a stop asked for during
    /// setup is not lost.
    pub fn install() -> io::Result<Signals> {
        // SAFETY: sigset manipulation on local values; signalfd returns a
        // new fd that we own.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in STOP_SIGNALS {
                libc::sigaddset(&mut set, sig);
            }
            if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Signals {
                fd: OwnedFd::from_raw_fd(fd),
            })
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Consumes the pending signals; true if any arrived (all mean "stop").
    pub fn take(&self) -> bool {
        let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
        let mut any = false;
        while let Ok(n) = rustix::io::read(&self.fd, &mut info) {
            if n != info.len() {
                break;
            }
            any = true;
        }
        any
    }
}
