//! Reaching a unix socket whatever the length of its path.
//!
//! A socket's address holds at most 107 bytes of path, and a shim's socket
//! lives at `<data dir>/agent/run/containers/<id>/shim.sock`: a data dir of
//! ordinary length and a 64-character container id already pass it. Such a
//! socket is bound and reached through `/proc/self/fd/N/shim.sock`, where N
//! is an open descriptor of its directory: the same inode, a short path.

use rustix::fd::{AsRawFd, OwnedFd};
use rustix::fs::{Mode, OFlags};
use std::io;
use std::path::{Path, PathBuf};

/// The longest path used as it is (sun_path holds 108 bytes with the NUL).
const MAX_DIRECT: usize = 107;

/// A path by which the socket at some path can be bound or connected to.
/// Keep it alive for the `bind` or `connect` call.
pub struct SocketPath {
    path: PathBuf,
    /// The socket's directory, when the path goes through it.
    _dir: Option<OwnedFd>,
}

impl SocketPath {
    pub fn of(path: &Path) -> io::Result<SocketPath> {
        if path.as_os_str().len() <= MAX_DIRECT {
            return Ok(SocketPath {
                path: path.to_owned(),
                _dir: None,
            });
        }
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} names no socket in a directory", path.display()),
            ));
        };
        let dir = rustix::fs::open(
            dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let short = Path::new("/proc/self/fd")
            .join(dir.as_raw_fd().to_string())
            .join(name);
        if short.as_os_str().len() > MAX_DIRECT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the socket name {name:?} is too long"),
            ));
        }
        Ok(SocketPath {
            path: short,
            _dir: Some(dir),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::{UnixListener, UnixStream};

    #[test]
    fn a_socket_deep_below_a_long_path_is_bound_and_reached() {
        let root = tempfile::tempdir().unwrap();
        let deep = root.path().join("d".repeat(60)).join("e".repeat(64));
        std::fs::create_dir_all(&deep).unwrap();
        let socket = deep.join("shim.sock");
        assert!(socket.as_os_str().len() > MAX_DIRECT);
        assert!(
            UnixListener::bind(&socket).is_err(),
            "the kernel refuses the long path"
        );
        let listener = UnixListener::bind(SocketPath::of(&socket).unwrap().path()).unwrap();
        assert!(socket.exists(), "bound at its real place");
        let _client = UnixStream::connect(SocketPath::of(&socket).unwrap().path()).unwrap();
        assert!(listener.accept().is_ok());
    }
}
