//! Passing file descriptors over a unix socket (`SCM_RIGHTS`), without
//! allocating: the child uses these between `clone` and `exec`.

use std::os::fd::RawFd;

/// The most fds one message carries: a container's v1 cgroup files (one
/// per hierarchy berth uses, at most five) with room to spare.
pub const MAX_FDS: usize = 8;

/// Room for one control message of [`MAX_FDS`] fds, 8-byte aligned.
type Control = [u64; 6];

/// A message header over a one-byte payload and a control buffer.
fn header(iov: &mut libc::iovec, control: &mut Control, control_len: usize) -> libc::msghdr {
    // SAFETY: msghdr is plain data; zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control_len as _;
    msg
}

/// The control bytes `n` fds take.
fn fds_len(n: usize) -> u32 {
    (n * std::mem::size_of::<RawFd>()) as u32
}

/// Sends `fd` with one byte of payload. Returns `sendmsg`'s result: negative
/// with `errno` set on failure.
pub fn send_fd(sock: RawFd, fd: RawFd) -> isize {
    send_fds(sock, &[fd])
}

/// Sends up to [`MAX_FDS`] fds in one message with one byte of payload.
/// Returns `sendmsg`'s result: negative with `errno` set on failure
/// (`EINVAL` for no fds or too many). Never raises `SIGPIPE`.
pub fn send_fds(sock: RawFd, fds: &[RawFd]) -> isize {
    if fds.is_empty() || fds.len() > MAX_FDS {
        // SAFETY: errno is thread-local and always writable.
        unsafe { *libc::__errno_location() = libc::EINVAL };
        return -1;
    }
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control: Control = [0; 6];
    // SAFETY: CMSG_SPACE is a size computation.
    let space = unsafe { libc::CMSG_SPACE(fds_len(fds.len())) } as usize;
    let msg = header(&mut iov, &mut control, space);
    // SAFETY: the header points at local buffers; `space` fits `control`
    // for MAX_FDS fds (checked by a test), and the fds are written inside
    // the one control message it holds.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(fds_len(fds.len())) as _;
        let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
        for (i, fd) in fds.iter().enumerate() {
            std::ptr::write_unaligned(data.add(i), *fd);
        }
        libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL)
    }
}

/// Receives one fd (close-on-exec) sent by [`send_fd`]. Returns the fd, or
/// -1 with `errno` set: `EPIPE` when the peer closed without sending,
/// `EBADMSG` when a message came without an fd or with more than one.
pub fn recv_fd(sock: RawFd) -> RawFd {
    let mut fds = [-1; MAX_FDS];
    match recv_fds(sock, &mut fds) {
        1 => fds[0],
        n => {
            if n > 1 {
                for fd in &fds[..n as usize] {
                    // SAFETY: closing fds this process just received.
                    unsafe { libc::close(*fd) };
                }
                // SAFETY: errno is thread-local and always writable.
                unsafe { *libc::__errno_location() = libc::EBADMSG };
            }
            -1
        }
    }
}

/// Receives one message of fds (close-on-exec) sent by [`send_fds`] into
/// `fds`. Returns how many came, or -1 with `errno` set: `EPIPE` when the
/// peer closed without sending, `EBADMSG` when a message came without fds
/// or with more than fit (those are closed).
pub fn recv_fds(sock: RawFd, fds: &mut [RawFd; MAX_FDS]) -> isize {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control: Control = [0; 6];
    let len = std::mem::size_of_val(&control);
    let mut msg = header(&mut iov, &mut control, len);
    // SAFETY: recvmsg into local buffers; the fds are read from inside the
    // control message the kernel wrote, never past its length.
    unsafe {
        let n = loop {
            let n = libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC);
            if n >= 0 || *libc::__errno_location() != libc::EINTR {
                break n;
            }
        };
        if n < 0 {
            return -1;
        }
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null()
            || (*cmsg).cmsg_level != libc::SOL_SOCKET
            || (*cmsg).cmsg_type != libc::SCM_RIGHTS
        {
            *libc::__errno_location() = if n == 0 { libc::EPIPE } else { libc::EBADMSG };
            return -1;
        }
        let header_len = libc::CMSG_LEN(0) as usize;
        let count =
            ((*cmsg).cmsg_len as usize).saturating_sub(header_len) / std::mem::size_of::<RawFd>();
        let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
        for (i, slot) in fds.iter_mut().enumerate().take(count) {
            *slot = std::ptr::read_unaligned(data.add(i));
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            // More fds than the buffer holds: the kernel closed the rest.
            for fd in &fds[..count.min(MAX_FDS)] {
                libc::close(*fd);
            }
            *libc::__errno_location() = libc::EBADMSG;
            return -1;
        }
        count as isize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    #[test]
    fn the_control_buffer_holds_the_most_fds_a_message_carries() {
        // SAFETY: a size computation.
        let space = unsafe { libc::CMSG_SPACE(fds_len(MAX_FDS)) } as usize;
        assert!(space <= std::mem::size_of::<Control>());
    }

    fn pair() -> (OwnedFd, OwnedFd) {
        use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
        socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap()
    }

    #[test]
    fn several_fds_arrive_in_one_message_in_order() {
        let (a, b) = pair();
        let files: Vec<std::fs::File> = (0..MAX_FDS)
            .map(|_| std::fs::File::open("/dev/null").unwrap())
            .collect();
        let raw: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
        assert_eq!(send_fds(a.as_raw_fd(), &raw), 1);
        let mut got = [-1; MAX_FDS];
        assert_eq!(recv_fds(b.as_raw_fd(), &mut got), MAX_FDS as isize);
        for (sent, received) in files.iter().zip(got) {
            // SAFETY: recv_fds gave us this fd.
            let received = unsafe { OwnedFd::from_raw_fd(received) };
            let (s, r) = (
                rustix::fs::fstat(sent).unwrap(),
                rustix::fs::fstat(&received).unwrap(),
            );
            assert_eq!((s.st_dev, s.st_ino), (r.st_dev, r.st_ino));
        }
    }

    #[test]
    fn too_many_or_no_fds_are_refused_before_sending() {
        let (a, _b) = pair();
        assert_eq!(send_fds(a.as_raw_fd(), &[]), -1);
        assert_eq!(send_fds(a.as_raw_fd(), &[0; MAX_FDS + 1]), -1);
    }

    #[test]
    fn a_closed_peer_reads_as_a_broken_pipe() {
        let (a, b) = pair();
        drop(a);
        let mut got = [-1; MAX_FDS];
        assert_eq!(recv_fds(b.as_raw_fd(), &mut got), -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EPIPE)
        );
    }
}
