//! Signals read from a signalfd, so that a poll loop sees them as one more
//! readable fd: no handler code, no races with the loop's own state.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};

/// What happens to the blocked signals when the [`SignalFd`] is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDrop {
    /// The mask from before [`SignalFd::block`] comes back (a signal still
    /// pending is then delivered as usual).
    Restore,
    /// They stay blocked for the rest of the process's life.
    KeepBlocked,
}

/// The given signals, blocked and readable from an fd.
pub struct SignalFd {
    fd: OwnedFd,
    restore: Option<libc::sigset_t>,
}

impl SignalFd {
    /// Blocks `signals` for the calling thread (the whole process, in a
    /// single-threaded one) and opens a signalfd for them.
    pub fn block(signals: &[libc::c_int], on_drop: OnDrop) -> io::Result<SignalFd> {
        // SAFETY: sigset manipulation on local values.
        let (set, old) = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for &sig in signals {
                if libc::sigaddset(&mut set, sig) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            let mut old: libc::sigset_t = std::mem::zeroed();
            if libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old) != 0 {
                return Err(io::Error::last_os_error());
            }
            (set, old)
        };
        // SAFETY: signalfd on a valid set; it returns a new fd or -1.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            // SAFETY: restoring the mask saved just above.
            unsafe { libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
            return Err(e);
        }
        Ok(SignalFd {
            // SAFETY: signalfd returned a new fd that nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            restore: (on_drop == OnDrop::Restore).then_some(old),
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Takes one pending signal, if any (never blocks).
    pub fn next(&self) -> Option<libc::c_int> {
        let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
        loop {
            match rustix::io::read(&self.fd, &mut info) {
                // ssi_signo is the first u32 of signalfd_siginfo.
                Ok(n) if n == info.len() => {
                    let signo = u32::from_ne_bytes([info[0], info[1], info[2], info[3]]);
                    return Some(signo as libc::c_int);
                }
                Err(rustix::io::Errno::INTR) => {}
                // Nothing pending (EAGAIN), or a read the kernel never
                // makes short: either way nothing to take.
                _ => return None,
            }
        }
    }
}

impl Drop for SignalFd {
    fn drop(&mut self) {
        if let Some(old) = &self.restore {
            // SAFETY: restoring the mask saved in `block`.
            unsafe { libc::sigprocmask(libc::SIG_SETMASK, old, std::ptr::null_mut()) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocked, raised (at this thread: other test threads never see it),
    /// read back, and the mask restored.
    #[test]
    fn a_blocked_signal_is_read_from_the_fd_then_the_mask_comes_back() {
        let signals = SignalFd::block(&[libc::SIGUSR2], OnDrop::Restore).expect("block");
        assert_eq!(signals.next(), None);
        // SAFETY: raise sends to the calling thread, which blocks SIGUSR2.
        assert_eq!(unsafe { libc::raise(libc::SIGUSR2) }, 0);
        assert_eq!(signals.next(), Some(libc::SIGUSR2));
        assert_eq!(signals.next(), None);
        drop(signals);
        assert!(!blocked(libc::SIGUSR2));
    }

    #[test]
    fn kept_blocked_signals_stay_blocked() {
        let signals = SignalFd::block(&[libc::SIGURG], OnDrop::KeepBlocked).expect("block");
        drop(signals);
        assert!(blocked(libc::SIGURG));
        // SAFETY: unblocking on this test's own thread; SIGURG is ignored
        // by default, so nothing pending can hurt.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGURG);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        }
    }

    fn blocked(sig: libc::c_int) -> bool {
        // SAFETY: reading this thread's mask into a local set.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigprocmask(libc::SIG_BLOCK, std::ptr::null(), &mut set);
            libc::sigismember(&set, sig) == 1
        }
    }
}
