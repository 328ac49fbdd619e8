//! Passing one file descriptor over a unix socket (`SCM_RIGHTS`), without
//! allocating: the child uses these between `clone` and `exec`.

use std::os::fd::RawFd;

/// Room for one fd's control message, 8-byte aligned.
type Control = [u64; 4];

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

/// Sends `fd` with one byte of payload. Returns `sendmsg`'s result: negative
/// with `errno` set on failure.
pub fn send_fd(sock: RawFd, fd: RawFd) -> isize {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control: Control = [0; 4];
    // SAFETY: CMSG_SPACE is a size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let msg = header(&mut iov, &mut control, space);
    // SAFETY: the header points at local buffers sized for one fd.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        libc::sendmsg(sock, &msg, 0)
    }
}

/// Receives one fd (close-on-exec) sent by [`send_fd`]. Returns the fd, or
/// -1 with `errno` set: `EPIPE` when the peer closed without sending,
/// `EBADMSG` when a message came without an fd.
pub fn recv_fd(sock: RawFd) -> RawFd {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control: Control = [0; 4];
    let len = std::mem::size_of_val(&control);
    let mut msg = header(&mut iov, &mut control, len);
    // SAFETY: recvmsg into local buffers sized for one fd.
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
        std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>())
    }
}
