//! `output.log`: the container's stdout and stderr, in arrival order, capped.
//!
//! Output past the cap is still read from the pipes (a container must never
//! block because its log is full) but dropped and counted, and one marker
//! line says where the log was cut. Output a failed write lost (a full
//! disk) is counted as dropped too, and the first such error is kept: the
//! exit record carries both, and the agent ends the log it serves with a
//! line saying how many bytes were dropped and why (a marker written here
//! could be lost to the same full disk). Every chunk goes straight to the
//! file with `write(2)`, so the log can be read while the container runs.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

pub(crate) struct OutputLog {
    file: File,
    max_bytes: u64,
    written: u64,
    dropped: u64,
    truncated: bool,
    /// The first write that failed, if one did.
    write_error: Option<String>,
}

impl OutputLog {
    pub fn create(path: &Path, max_bytes: u64) -> io::Result<OutputLog> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(OutputLog {
            file,
            max_bytes,
            written: 0,
            dropped: 0,
            truncated: false,
            write_error: None,
        })
    }

    /// Output bytes stored in the log (the marker aside).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Output bytes dropped: past the cap, or lost to a failed write.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Why output was lost besides the cap: the first failed write.
    pub fn write_error(&self) -> Option<&str> {
        self.write_error.as_deref()
    }

    /// Appends a chunk of output, keeping what fits under the cap. Every
    /// byte is accounted for as written or dropped, even when the write
    /// fails (disk full); the error is returned for the caller to report.
    pub fn append(&mut self, data: &[u8]) -> io::Result<()> {
        let room = self.max_bytes.saturating_sub(self.written);
        let keep = data.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let (kept, excess) = data.split_at(keep);
        let mut outcome = Ok(());
        if !kept.is_empty() {
            let (n, result) = write_counted(&mut self.file, kept);
            self.written += n as u64;
            self.dropped += (kept.len() - n) as u64;
            outcome = result;
        }
        if !excess.is_empty() {
            self.dropped += excess.len() as u64;
            if !self.truncated {
                self.truncated = true;
                let marker = format!("\n[berth: log truncated after {} bytes]\n", self.written);
                let (_, result) = write_counted(&mut self.file, marker.as_bytes());
                outcome = outcome.and(result);
            }
        }
        if let (Err(e), None) = (&outcome, &self.write_error) {
            self.write_error = Some(e.to_string());
        }
        outcome
    }

    /// Makes the log durable (before the exit record claims its size).
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// Writes as much of `data` as the file takes; returns how much that was.
fn write_counted(file: &mut File, data: &[u8]) -> (usize, io::Result<()>) {
    let mut done = 0;
    while done < data.len() {
        match file.write(&data[done..]) {
            Ok(0) => return (done, Err(io::ErrorKind::WriteZero.into())),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (done, Err(e)),
        }
    }
    (done, Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_what_fits_then_marks_once_and_counts_the_rest() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("output.log");
        let mut log = OutputLog::create(&path, 10).expect("create");
        log.append(b"hello ").expect("append");
        log.append(b"world!!").expect("append");
        log.append(b"more").expect("append");
        assert_eq!(log.written(), 10);
        assert_eq!(log.dropped(), 7);
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text, "hello worl\n[berth: log truncated after 10 bytes]\n");
    }

    #[test]
    fn output_a_failed_write_lost_is_counted_and_its_error_kept() {
        // /dev/full: every write fails with ENOSPC, like a full disk.
        let mut log = OutputLog {
            file: OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .expect("/dev/full"),
            max_bytes: 1024,
            written: 0,
            dropped: 0,
            truncated: false,
            write_error: None,
        };
        assert!(log.append(b"lost\n").is_err());
        assert!(log.append(b"also lost\n").is_err());
        assert_eq!((log.written(), log.dropped()), (0, 15));
        let error = log.write_error().expect("the error is kept");
        assert!(error.contains("No space left"), "{error}");
    }

    #[test]
    fn output_under_the_cap_is_stored_verbatim() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("output.log");
        let mut log = OutputLog::create(&path, 1024).expect("create");
        log.append(b"out\n").expect("append");
        log.append(b"err\n").expect("append");
        assert_eq!((log.written(), log.dropped()), (8, 0));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "out\nerr\n");
    }
}
