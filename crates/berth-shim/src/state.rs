//! The state dir's records and how they are written. Each is replaced
//! atomically (temp file, then rename), so a reader sees the old record or
//! the new one, never a torn one.
//!
//! Only `exit.json` is also made durable (fsync of the temp file before the
//! rename, fsync of the dir after it): it is the one record a caller acts
//! on after a crash. `state.json` is informative (who runs the container,
//! since when) and its two fsyncs would add milliseconds to every start, so
//! after a host crash it may be stale, empty or missing; readers must treat
//! it as a hint and rely on `exit.json` and the control socket.

use berth_core::ErrorReport;
use berth_runtime::ContainerResult;
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A container's state dir: created by the caller, filled by the shim.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    pub fn new(path: impl Into<PathBuf>) -> StateDir {
        StateDir { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The caller's input: a [`crate::ShimSpec`].
    pub fn spec_file(&self) -> PathBuf {
        self.path.join("spec.json")
    }

    /// A [`ShimState`], from the moment the container runs. Replaced
    /// atomically but not fsync'd: a hint after a host crash (see the
    /// module docs).
    pub fn state_file(&self) -> PathBuf {
        self.path.join("state.json")
    }

    /// The [`ExitRecord`]: the last thing the shim writes.
    pub fn exit_file(&self) -> PathBuf {
        self.path.join("exit.json")
    }

    /// The container's stdout and stderr, in arrival order.
    pub fn log_file(&self) -> PathBuf {
        self.path.join("output.log")
    }

    /// The control socket (see [`crate::Request`]), present while the shim serves.
    pub fn socket(&self) -> PathBuf {
        self.path.join("shim.sock")
    }

    /// Reads the exit record, if the shim has written one.
    pub fn read_exit(&self) -> io::Result<Option<ExitRecord>> {
        read_json(&self.exit_file())
    }

    /// Reads the state record, if the shim has written one.
    pub fn read_state(&self) -> io::Result<Option<ShimState>> {
        read_json(&self.state_file())
    }

    /// Replaces `name` in the dir with `value` as JSON, atomically and
    /// durably: once this returns, the new record survives a host crash.
    pub(crate) fn write_durable(&self, name: &str, value: &impl Serialize) -> io::Result<()> {
        self.replace(name, value, true)
    }

    /// Replaces `name` in the dir with `value` as JSON, atomically but
    /// without any fsync: for records that are only informative.
    pub(crate) fn write_atomic(&self, name: &str, value: &impl Serialize) -> io::Result<()> {
        self.replace(name, value, false)
    }

    fn replace(&self, name: &str, value: &impl Serialize, durable: bool) -> io::Result<()> {
        let mut bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
        bytes.push(b'\n');
        let target = self.path.join(name);
        let temp = self.path.join(format!(".{name}.tmp"));
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&temp)?;
        file.write_all(&bytes)?;
        if durable {
            // Data first: otherwise a crash right after the rename could
            // leave the new name pointing at an empty file.
            file.sync_all()?;
        }
        drop(file);
        fs::rename(&temp, &target)?;
        if durable {
            // The rename itself is durable only once the directory is.
            File::open(&self.path)?.sync_all()?;
        }
        Ok(())
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> io::Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether the container still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Running,
    Exited,
}

/// `state.json`: who runs the container and since when.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimState {
    pub id: String,
    pub shim_pid: u32,
    pub container_pid: i32,
    pub status: Status,
    /// When the container started, in milliseconds since the Unix epoch
    /// (unsigned, as the agent's API carries it: a clock set before 1970
    /// reads as 0).
    pub started_at: u64,
    /// When the shim saw it exit (ms since the epoch), once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exited_at: Option<u64>,
}

/// `exit.json`: how the container ended, or why it never ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ExitRecord {
    /// The container ran and ended.
    Finished {
        result: ContainerResult,
        /// Output bytes stored in `output.log` (the truncation marker aside).
        log_bytes: u64,
        /// Output bytes dropped: read past the log cap, or lost to a
        /// failed write of the log (a full disk).
        log_dropped_bytes: u64,
        /// The first write of the log that failed, if one did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        log_write_error: Option<String>,
        /// Set when teardown failed (`berth gc` finishes it); `result` then
        /// holds what the shim observed, with `teardown_ms` 0.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ErrorReport>,
    },
    /// Nothing ran, or the shim lost track of it: bad spec, create error
    /// (`command_not_found`, …), or a host fault while supervising.
    Failed { error: ErrorReport },
}

impl ExitRecord {
    pub fn result(&self) -> Option<&ContainerResult> {
        match self {
            ExitRecord::Finished { result, .. } => Some(result),
            ExitRecord::Failed { .. } => None,
        }
    }

    pub fn error(&self) -> Option<&ErrorReport> {
        match self {
            ExitRecord::Finished { error, .. } => error.as_ref(),
            ExitRecord::Failed { error } => Some(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::ErrorCode;

    #[test]
    fn records_replace_atomically_and_read_back() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = StateDir::new(tmp.path());
        assert!(dir.read_exit().expect("read").is_none());
        let failed = ExitRecord::Failed {
            error: ErrorReport::new(ErrorCode::CommandNotFound, "nope"),
        };
        dir.write_durable("exit.json", &failed).expect("write");
        let text = fs::read_to_string(dir.exit_file()).expect("read text");
        assert!(
            text.starts_with(r#"{"error":{"code":"command_not_found""#),
            "{text}"
        );
        let back = dir.read_exit().expect("read").expect("present");
        assert_eq!(
            back.error().map(|e| e.code),
            Some(ErrorCode::CommandNotFound)
        );
        // No temp file is left behind.
        let names: Vec<_> = fs::read_dir(tmp.path())
            .expect("list")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("exit.json")]);

        // The informative kind replaces just as atomically.
        let state = ShimState {
            id: "c1".into(),
            shim_pid: 1,
            container_pid: 2,
            status: Status::Running,
            started_at: 3,
            exited_at: None,
        };
        dir.write_atomic("state.json", &state).expect("write state");
        let back = dir.read_state().expect("read").expect("present");
        assert_eq!((back.container_pid, back.status), (2, Status::Running));
        assert!(!tmp.path().join(".state.json.tmp").exists());
    }
}
