//! Reading and writing the kernel's small text files (`/proc`, `/sys`,
//! cgroupfs) in as few system calls as they need.
//!
//! These files report a length of 0, so std's `read_to_string` sizes its
//! reads by probing: 32, 32, 64, 128… bytes at a time (nine reads for this
//! host's mountinfo, each regenerating the file up to where it stops), and
//! musl's `open` follows every close-on-exec open with an `fcntl`. Both add
//! up on the path of every container start. Here a file is opened with one
//! raw system call, read into a page-sized buffer, and closed.

use rustix::fs::{Mode, OFlags};
use std::io;
use std::path::Path;

/// The whole file as text.
pub fn read(path: &Path) -> io::Result<String> {
    let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(2 * len, 0);
        }
        match rustix::io::read(&fd, &mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    buf.truncate(len);
    String::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Writes each value with its own `write(2)` on one open file: a control
/// file takes one value (or one device rule) per write, whole or not at all.
pub fn write_each(path: &Path, values: &[impl AsRef<[u8]>]) -> io::Result<()> {
    let fd = rustix::fs::open(path, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())?;
    for value in values {
        let value = value.as_ref();
        let written = loop {
            match rustix::io::write(&fd, value) {
                Err(rustix::io::Errno::INTR) => {}
                other => break other?,
            }
        };
        if written != value.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("the kernel took {written} of {} bytes", value.len()),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_files_longer_than_the_first_buffer() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("long");
        let text: String = (0..3000).map(|i| format!("{i}\n")).collect();
        std::fs::write(&path, &text).expect("writing");
        assert_eq!(read(&path).expect("reading"), text);
    }

    #[test]
    fn reads_proc_files_whole() {
        // Longer than the first buffer on most machines, and stable in length.
        let via_std = std::fs::read_to_string("/proc/cpuinfo").expect("std");
        let here = read(Path::new("/proc/cpuinfo")).expect("kernel_files");
        assert_eq!(here.lines().count(), via_std.lines().count());
        assert!(here.ends_with('\n'), "{here:?}");
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let err = read(Path::new("/proc/self/no-such-file")).expect_err("missing");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn writes_every_value() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("control");
        std::fs::write(&path, "").expect("creating");
        write_each(&path, &["a ", "b"]).expect("writing");
        assert_eq!(std::fs::read_to_string(&path).expect("reading"), "a b");
    }
}
