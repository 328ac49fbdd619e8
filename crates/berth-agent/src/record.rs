//! The record of one container: what the agent keeps of it on disk
//! (`agent.json`), its live phase, the entry the API reads, and how its
//! view and kill reason are derived and written.

use crate::error::ApiError;
use berth_api::{ContainerState, ContainerView, KillReason};
use berth_shim::{ExitRecord, StateDir};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;
use tokio::sync::watch;

/// `agent.json`: what the agent knows of a container beyond the shim's files.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub image: String,
    pub image_id: String,
    pub created_at: u64,
    pub memory_request: u64,
    #[serde(default)]
    pub memory_limit: Option<u64>,
    #[serde(default)]
    pub cpus_millis: Option<u32>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub kill_reason: Option<KillReason>,
}

/// The live part of a container's state.
#[derive(Debug, Clone)]
pub enum Phase {
    Creating,
    Running {
        pid: i32,
        shim_pid: u32,
        started_at: u64,
    },
    Exited {
        record: ExitRecord,
        started_at: Option<u64>,
        exited_at: Option<u64>,
    },
}

/// One container the agent knows.
pub struct Entry {
    pub id: String,
    pub dir: StateDir,
    pub record: Mutex<ContainerRecord>,
    pub phase: watch::Sender<Phase>,
}

impl Entry {
    pub fn phase(&self) -> Phase {
        self.phase.borrow().clone()
    }

    pub fn is_running(&self) -> bool {
        matches!(*self.phase.borrow(), Phase::Running { .. })
    }

    pub fn record(&self) -> ContainerRecord {
        lock(&self.record).clone()
    }

    pub fn view(&self) -> ContainerView {
        let record = self.record();
        let mut view = ContainerView {
            id: record.id,
            state: ContainerState::Creating,
            image: record.image,
            image_id: record.image_id,
            created_at: record.created_at,
            started_at: None,
            exited_at: None,
            pid: None,
            shim_pid: None,
            memory_request: record.memory_request,
            memory_limit: record.memory_limit,
            labels: record.labels,
            result: None,
            error: None,
            kill_reason: record.kill_reason,
            log_bytes: None,
            log_dropped_bytes: None,
        };
        match self.phase() {
            Phase::Creating => {}
            Phase::Running {
                pid,
                shim_pid,
                started_at,
            } => {
                view.state = ContainerState::Running;
                view.pid = Some(pid);
                view.shim_pid = Some(shim_pid);
                view.started_at = Some(started_at);
            }
            Phase::Exited {
                record,
                started_at,
                exited_at,
            } => {
                view.started_at = started_at;
                view.exited_at = exited_at;
                match record {
                    ExitRecord::Finished {
                        result,
                        log_bytes,
                        log_dropped_bytes,
                        error,
                        ..
                    } => {
                        view.state = ContainerState::Exited;
                        view.result = Some(result);
                        view.error = error;
                        view.log_bytes = Some(log_bytes);
                        view.log_dropped_bytes = Some(log_dropped_bytes);
                    }
                    ExitRecord::Failed { error } => {
                        view.state = ContainerState::Failed;
                        view.error = Some(error);
                    }
                }
            }
        }
        view
    }

    /// Records why the agent is ending the container, before it does.
    pub fn set_kill_reason(&self, reason: KillReason) -> Result<(), ApiError> {
        let mut record = lock(&self.record);
        if record.kill_reason.is_some() {
            return Ok(());
        }
        record.kill_reason = Some(reason);
        write_json(&self.dir.path().join(AGENT_FILE), &*record)
            .map_err(|e| ApiError::io("writing agent.json", e))
    }
}

/// The `kill_reason.reason` of the memory policy's kills.
pub const MEMORY_PRESSURE: &str = "memory_pressure";
/// The `kill_reason.reason` of a stop asked for through the API.
pub const STOPPED: &str = "stopped";

/// The agent's own file in a container's state dir.
pub(crate) const AGENT_FILE: &str = "agent.json";

/// Writes `value` as JSON to `path` via a temp file and a rename, so a
/// reader never sees half of it. No fsync: a killed agent loses nothing
/// the kernel accepted, and the shim's exit records are the durable ones.
pub(crate) fn write_json(path: &Path, value: &impl Serialize) -> io::Result<()> {
    let mut bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
    bytes.push(b'\n');
    let temp = path.with_extension("tmp");
    let mut file = fs::File::create(&temp)?;
    file.write_all(&bytes)?;
    drop(file);
    fs::rename(&temp, path)
}

/// Locks `m`, going on after a panic elsewhere (no state it guards is
/// left half-changed).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
