//! A set of fds for one `poll(2)` call, rebuilt on every turn of the loop.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Instant;

pub(crate) const READABLE: i16 = libc::POLLIN;
pub(crate) const WRITABLE: i16 = libc::POLLOUT;
/// Reported whether asked for or not: the peer hung up, or the fd broke.
pub(crate) const BROKEN: i16 = libc::POLLHUP | libc::POLLERR | libc::POLLNVAL;

#[derive(Default)]
pub(crate) struct PollSet {
    fds: Vec<libc::pollfd>,
}

impl PollSet {
    pub fn clear(&mut self) {
        self.fds.clear();
    }

    /// Adds `fd`; returns its slot for [`PollSet::revents`].
    pub fn add(&mut self, fd: BorrowedFd<'_>, events: i16) -> usize {
        self.fds.push(libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        });
        self.fds.len() - 1
    }

    pub fn revents(&self, slot: usize) -> i16 {
        self.fds.get(slot).map_or(0, |p| p.revents)
    }

    /// Waits until an fd is ready or `until` passes (forever with `None`).
    /// An interrupted wait returns early with nothing ready.
    pub fn wait(&mut self, until: Option<Instant>) -> io::Result<()> {
        let timeout_ms = until.map_or(-1, |t| {
            // Round up, so that the deadline has passed when poll returns.
            let left = t.saturating_duration_since(Instant::now());
            left.as_millis().saturating_add(1).min(i32::MAX as u128) as i32
        });
        for p in &mut self.fds {
            p.revents = 0;
        }
        // SAFETY: poll on a vector of pollfds we own; every fd is borrowed
        // from an owner that outlives this call.
        let n = unsafe { libc::poll(self.fds.as_mut_ptr(), self.fds.len() as _, timeout_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok(())
    }
}
