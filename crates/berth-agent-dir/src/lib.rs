//! berth-agent-dir: the host agent's directory under berth's data dir.
//!
//! `<data dir>/agent/` belongs to the one agent running on that data dir.
//! This crate owns what two programs must agree on about it: its layout,
//! the lock a running agent holds on it, and the private tmpfs its
//! per-container state may live on. The agent (berth-agent, in `berthd`)
//! works in it; `berth gc` cleans up after an agent that died, without
//! linking the agent.
//!
//! It must not start, stop or look into containers: the agent does that,
//! through the shims.
//!
//! Layout:
//! - `lock`: held (`flock`, exclusive) by the running agent;
//! - `run/`: what lives only while the host is up, possibly on a tmpfs of
//!   its own ([`state_fs`]): `run/containers/<id>/`, one shim state dir per
//!   container, and `run/runtime/<id>/`, the runtime's dir of a
//!   memory-scratch container.

pub mod state_fs;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The agent's directory of one data dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentDir {
    root: PathBuf,
}

/// Why [`AgentDir::lock`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process (a running agent) holds the lock.
    #[error("another agent is running on {}", .0.display())]
    Held(PathBuf),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

/// The lock on an agent dir, held until dropped.
#[derive(Debug)]
pub struct AgentLock {
    _file: fs::File,
}

impl AgentDir {
    /// `<data_dir>/agent`.
    pub fn of(data_dir: &Path) -> AgentDir {
        AgentDir {
            root: data_dir.join("agent"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// What lives only while the host is up; the state tmpfs when the
    /// agent keeps its state on one.
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    /// One shim state dir per container.
    pub fn state_root(&self) -> PathBuf {
        self.run_dir().join("containers")
    }

    /// The runtime's dirs of memory-scratch containers (a lock and a mount
    /// point each), beside their state.
    pub fn volatile_runtime_dir(&self) -> PathBuf {
        self.run_dir().join("runtime")
    }

    /// Takes `<agent dir>/lock` exclusively (the dir must exist), or says
    /// that an agent holds it.
    pub fn lock(&self) -> Result<AgentLock, LockError> {
        use rustix::fs::{flock, FlockOperation};
        let path = self.root.join("lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| LockError::Io {
                what: format!("opening {}", path.display()),
                source,
            })?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(AgentLock { _file: file }),
            Err(rustix::io::Errno::WOULDBLOCK) => Err(LockError::Held(self.root.clone())),
            Err(e) => Err(LockError::Io {
                what: format!("locking {}", path.display()),
                source: e.into(),
            }),
        }
    }

    /// For `berth gc`: unmounts the state tmpfs if no agent runs here and
    /// no container state is left on it. True if it did.
    pub fn release_idle_state(&self) -> Result<bool, LockError> {
        if !self.root.is_dir() {
            return Ok(false);
        }
        let _lock = match self.lock() {
            Ok(lock) => lock,
            Err(LockError::Held(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        let run = self.run_dir();
        state_fs::release_if_empty(&run).map_err(|source| LockError::Io {
            what: format!("unmounting {}", run.display()),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_under_the_data_dir() {
        let dir = AgentDir::of(Path::new("/d"));
        assert_eq!(dir.path(), Path::new("/d/agent"));
        assert_eq!(dir.state_root(), Path::new("/d/agent/run/containers"));
        assert_eq!(
            dir.volatile_runtime_dir(),
            Path::new("/d/agent/run/runtime")
        );
    }

    #[test]
    fn one_lock_holder_at_a_time_and_gc_leaves_a_held_dir_alone() {
        let data = tempfile::tempdir().expect("tempdir");
        let dir = AgentDir::of(data.path());
        assert!(!dir.release_idle_state().expect("no agent dir"));
        fs::create_dir_all(dir.run_dir()).expect("mkdir");
        let held = dir.lock().expect("first lock");
        assert!(matches!(dir.lock(), Err(LockError::Held(_))));
        // Held: nothing to release, and no error.
        assert!(!dir.release_idle_state().expect("held"));
        drop(held);
        dir.lock().expect("free again");
        // Free, but run/ is no tmpfs mount of its own: nothing unmounted.
        assert!(!dir.release_idle_state().expect("free"));
    }
}
