//! A set of fds for one `poll(2)` call, rebuilt on every turn of a loop.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Instant;

pub const READABLE: i16 = libc::POLLIN;
pub const WRITABLE: i16 = libc::POLLOUT;
/// Reported whether asked for or not: the peer hung up, or the fd broke.
pub const BROKEN: i16 = libc::POLLHUP | libc::POLLERR | libc::POLLNVAL;

/// The fds of one turn and, after [`PollSet::wait`], what each is ready
/// for. Cleared and refilled every turn; its storage is kept.
#[derive(Default)]
pub struct PollSet {
    fds: Vec<libc::pollfd>,
}

impl PollSet {
    pub fn with_capacity(fds: usize) -> PollSet {
        PollSet {
            fds: Vec::with_capacity(fds),
        }
    }

    pub fn clear(&mut self) {
        self.fds.clear();
    }

    /// Adds `fd`; returns its slot for [`PollSet::revents`]. The fd must
    /// stay open until the next [`PollSet::clear`].
    pub fn add(&mut self, fd: BorrowedFd<'_>, events: i16) -> usize {
        self.fds.push(libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        });
        self.fds.len() - 1
    }

    /// What the last wait found for `slot` (0 for a slot not in the set).
    pub fn revents(&self, slot: usize) -> i16 {
        self.fds.get(slot).map_or(0, |p| p.revents)
    }

    /// Waits until an fd is ready or `until` passes (forever with `None`).
    /// An interrupted wait returns early with nothing ready.
    pub fn wait(&mut self, until: Option<Instant>) -> io::Result<()> {
        let timeout = timeout_ms(until, Instant::now());
        for p in &mut self.fds {
            p.revents = 0;
        }
        // SAFETY: poll on a vector of pollfds we own; every fd was borrowed
        // from an owner that the caller keeps open until the set is cleared.
        let n = unsafe { libc::poll(self.fds.as_mut_ptr(), self.fds.len() as _, timeout) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok(())
    }
}

/// `poll(2)`'s timeout for waking at `until` (-1: no limit; 0: it has
/// passed). Rounded up to whole milliseconds, so that `until` has passed
/// when poll returns; capped at `i32::MAX` ms (~24.8 days), after which the
/// caller's loop simply waits again.
pub(crate) fn timeout_ms(until: Option<Instant>, now: Instant) -> i32 {
    until.map_or(-1, |t| {
        let left = t.saturating_duration_since(now).as_nanos();
        left.div_ceil(1_000_000).min(i32::MAX as u128) as i32
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::time::Duration;

    #[test]
    fn timeouts_round_up_and_saturate() {
        let now = Instant::now();
        assert_eq!(timeout_ms(None, now), -1);
        // Due already: no wait at all.
        assert_eq!(timeout_ms(Some(now), now), 0);
        if let Some(past) = now.checked_sub(Duration::from_secs(1)) {
            assert_eq!(timeout_ms(Some(past), now), 0);
        }
        let soon = now + Duration::from_micros(1500);
        assert_eq!(timeout_ms(Some(soon), now), 2);
        assert_eq!(timeout_ms(Some(now + Duration::from_millis(2)), now), 2);
        assert_eq!(timeout_ms(Some(now + Duration::from_nanos(1)), now), 1);
        // A month away: poll's limit, never a negative (endless) wait.
        let far = now + Duration::from_secs(30 * 24 * 3600);
        assert_eq!(timeout_ms(Some(far), now), i32::MAX);
    }

    #[test]
    fn a_ready_fd_is_reported_in_its_slot() {
        let (r, w) = rustix::pipe::pipe().expect("pipe");
        let (idle, _idle_w) = rustix::pipe::pipe().expect("pipe");
        rustix::io::write(&w, b"x").expect("write");
        let mut set = PollSet::default();
        let quiet = set.add(idle.as_fd(), READABLE);
        let ready = set.add(r.as_fd(), READABLE);
        set.wait(Some(Instant::now() + Duration::from_secs(5)))
            .expect("poll");
        assert_eq!(set.revents(ready) & READABLE, READABLE);
        assert_eq!(set.revents(quiet), 0);
        assert_eq!(set.revents(99), 0);
    }
}
