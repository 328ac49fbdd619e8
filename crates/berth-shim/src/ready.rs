//! `--ready-fd N`: how the process that starts the shim learns, without
//! polling the state dir, whether the container is running.
//!
//! The shim writes exactly one line to fd N, then points N at `/dev/null`:
//!
//! - `{"status":"running","pid":P}` once the container has been created and
//!   started and `state.json` has been written (P is the container's pid,
//!   as in `state.json`);
//! - `{"status":"failed"}` once `exit.json` records why it never ran (bad
//!   spec, create error, …); the caller reads the error there.
//!
//! End of file without a line means the shim wrote no exit record at all
//! (a refused state dir, or `exit.json` itself failed): it exits with
//! status 2 and says why on stderr.
//!
//! N is replaced by `/dev/null` (not closed, so that the number is never
//! reused for something else that a stray write could then reach) because
//! the caller may stop reading at any time: after the line, nothing the
//! shim does depends on the reader, and with SIGPIPE ignored a reader that
//! vanished before the line only costs the line.

use crate::diag::diag;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

/// The fd the outcome is reported on, if the caller asked for one.
#[derive(Debug)]
pub(crate) struct ReadyFd {
    fd: Option<RawFd>,
}

impl ReadyFd {
    /// Checks that `fd` is open for writing, so that a caller mistake is a
    /// usage error before anything is touched rather than a lost report.
    /// Fd 2 is refused: it carries the shim's diagnostics, which would mix
    /// with the line and then be lost to `/dev/null`.
    pub fn new(fd: Option<RawFd>) -> Result<ReadyFd, String> {
        let Some(fd) = fd else {
            return Ok(ReadyFd { fd: None });
        };
        if fd < 0 || fd == libc::STDERR_FILENO {
            return Err(format!("--ready-fd {fd}: must be 0, 1 or above 2"));
        }
        // SAFETY: F_GETFL only reads the flags of whatever `fd` is, and
        // fails with EBADF if it is nothing.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            let e = io::Error::last_os_error();
            return Err(format!(
                "--ready-fd {fd}: not an open file descriptor ({e})"
            ));
        }
        // O_PATH fds report an access mode of O_RDONLY and are refused too.
        match flags & libc::O_ACCMODE {
            libc::O_WRONLY | libc::O_RDWR => Ok(ReadyFd { fd: Some(fd) }),
            _ => Err(format!("--ready-fd {fd}: not open for writing")),
        }
    }

    /// Reports a running container (after `state.json` is written).
    pub fn running(&mut self, pid: i32) {
        self.report(&format!("{{\"status\":\"running\",\"pid\":{pid}}}\n"));
    }

    /// Reports that nothing runs (after `exit.json` is written).
    pub fn failed(&mut self) {
        self.report("{\"status\":\"failed\"}\n");
    }

    /// Writes the one line, then retires the fd. Never fails: the caller
    /// may be gone, and the shim must go on with its container regardless.
    fn report(&mut self, line: &str) {
        let Some(fd) = self.fd.take() else {
            return;
        };
        // SAFETY: `fd` was checked open at startup and nothing in the shim
        // closes it; it stays open (as /dev/null at worst) for good.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        if let Err(e) = write_all(borrowed, line.as_bytes()) {
            diag(&format!("writing to --ready-fd {fd}: {e}"));
        }
        if let Err(e) = retire(fd) {
            diag(&format!("pointing --ready-fd {fd} at /dev/null: {e}"));
        }
    }
}

fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match rustix::io::write(fd, data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Replaces `fd` with `/dev/null`, keeping its close-on-exec flag. (The
/// runtime closes every fd above 2 in the container and replaces 0 to 2,
/// so the flag only matters to whoever else the shim might exec.)
fn retire(fd: RawFd) -> io::Result<()> {
    let null = OpenOptions::new().write(true).open("/dev/null")?;
    // SAFETY: fcntl/dup3 on fds we hold; `null` is a distinct, new fd (fd
    // is still open, so open(2) cannot have returned it), which dup3
    // requires. The duplicate replaces `fd` atomically: at no point is the
    // number free for another open to take.
    unsafe {
        let fd_flags = libc::fcntl(fd, libc::F_GETFD);
        let cloexec = if fd_flags >= 0 && fd_flags & libc::FD_CLOEXEC != 0 {
            libc::O_CLOEXEC
        } else {
            0
        };
        if libc::dup3(null.as_raw_fd(), fd, cloexec) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn bad_fds_are_usage_errors() {
        assert!(ReadyFd::new(None).is_ok());
        assert!(ReadyFd::new(Some(-1)).is_err());
        assert!(ReadyFd::new(Some(2)).is_err());
        // Far above anything this test process has open.
        assert!(ReadyFd::new(Some(1_000_000)).is_err());
        let (read, write) = rustix::pipe::pipe().expect("pipe");
        assert!(ReadyFd::new(Some(read.as_raw_fd())).is_err(), "read end");
        assert!(ReadyFd::new(Some(write.as_raw_fd())).is_ok());
    }

    #[test]
    fn one_line_then_dev_null() {
        let (read, write) = rustix::pipe::pipe().expect("pipe");
        let raw = write.as_raw_fd();
        let mut ready = ReadyFd::new(Some(raw)).expect("valid fd");
        ready.running(42);
        // Only one report, whatever happens next.
        ready.failed();
        let target = std::fs::read_link(format!("/proc/self/fd/{raw}")).expect("readlink");
        assert_eq!(target, std::path::Path::new("/dev/null"));
        // The pipe's only write end is gone: the reader sees one line, then EOF.
        drop(write);
        let mut text = String::new();
        std::fs::File::from(read)
            .read_to_string(&mut text)
            .expect("read");
        assert_eq!(text, "{\"status\":\"running\",\"pid\":42}\n");
    }
}
