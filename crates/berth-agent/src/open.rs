//! The composition root: opens an agent (raises the open-files limit, takes
//! the agent-dir lock, puts the state on its tmpfs, builds the shared
//! state, recovers the containers of a previous agent, starts the memory
//! policy) and lets go of the state tmpfs at shutdown or in `berth gc`.

use crate::config::AgentConfig;
use crate::error::ApiError;
use crate::events::EventLog;
use crate::state::AgentState;
use crate::{memory, recover, watch};
use berth_core::ErrorCode;
use berth_image::ImageStore;
use berth_runtime::{Runtime, RuntimeConfig};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Opens the agent's state (see `crate::open`).
pub(crate) async fn open(config: AgentConfig) -> Result<Arc<AgentState>, ApiError> {
    raise_fd_limit();
    let run = config.run_dir();
    fs::create_dir_all(&run).map_err(|e| ApiError::io(format!("creating {}", run.display()), e))?;
    // Before anything is read or changed: a second agent on the same
    // data dir would fight the first over every container.
    let agent_lock = lock_agent_dir(&config.agent_dir())?;
    if config.state_tmpfs {
        use crate::state_fs::{ensure_tmpfs, StateFs};
        match ensure_tmpfs(&run) {
            Ok(StateFs::Mounted) => tracing::info!("container state on a new tmpfs at {}", run.display()),
            Ok(StateFs::AlreadyTmpfs) => {}
            Ok(StateFs::KeptOnDiskWithState) => tracing::warn!(
                "{} holds containers of an agent that kept state on disk: it stays on disk until they are deleted",
                run.display()
            ),
            Err(e) => tracing::warn!("mounting a tmpfs on {}: {e}; container state stays on disk", run.display()),
        }
    }
    for dir in [config.state_root(), config.volatile_runtime_dir()] {
        fs::create_dir_all(&dir)
            .map_err(|e| ApiError::io(format!("creating {}", dir.display()), e))?;
    }
    let runtime = Runtime::new(RuntimeConfig {
        containers_dir: config.runtime_containers_dir(),
        cgroup_parent: config.cgroup_parent.clone(),
    })
    .map_err(|e| ApiError::from_lib(&e))?;
    let images = ImageStore::open(&config.data_dir).map_err(|e| ApiError::from_lib(&e))?;
    let events = EventLog::open(&config.agent_dir().join("events.log"))
        .map_err(|e| ApiError::io("opening events.log", e))?;
    let agent = Arc::new(AgentState::new(config, runtime, images, events, agent_lock));
    recover::rediscover(&agent).await?;
    memory::spawn_policy(agent.clone());
    Ok(agent)
}

impl AgentState {
    /// At shutdown: takes the state tmpfs down if no container state is
    /// left on it (running containers keep it for the next agent). Shims
    /// of containers deleted just now may still be removing their runtime
    /// dirs: give them a moment (up to 10 s: a teardown on a loaded host
    /// took longer than 2 s), and clean up after any that died.
    pub(crate) async fn release_state_tmpfs(self: &Arc<Self>) {
        let root = self.config.run_dir();
        let no_containers = fs::read_dir(self.config.state_root())
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if no_containers {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let this = self.clone();
                let _ = tokio::task::spawn_blocking(move || watch::gc_runtime_dirs(&this)).await;
                let drained = fs::read_dir(self.config.volatile_runtime_dir())
                    .map(|mut d| d.next().is_none())
                    .unwrap_or(true);
                if drained || tokio::time::Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        match crate::state_fs::release_if_empty(&root) {
            Ok(true) => tracing::info!("unmounted the state tmpfs at {}", root.display()),
            Ok(false) => {}
            Err(e) => tracing::warn!("unmounting {}: {e}", root.display()),
        }
    }
}

/// Unmounts the state tmpfs of the agent of `data_dir` if no agent runs
/// there and no container state is left on it.
pub(crate) fn release_idle_state(data_dir: &Path) -> Result<bool, ApiError> {
    let config = AgentConfig::new(data_dir.to_path_buf(), PathBuf::new());
    if !config.agent_dir().is_dir() {
        return Ok(false);
    }
    let _lock = match lock_agent_dir(&config.agent_dir()) {
        Ok(lock) => lock,
        Err(e) if e.report.code == ErrorCode::InvalidState => return Ok(false),
        Err(e) => return Err(e),
    };
    let root = config.run_dir();
    crate::state_fs::release_if_empty(&root)
        .map_err(|e| ApiError::io(format!("unmounting {}", root.display()), e))
}

/// Takes `<agent dir>/lock` exclusively, or says which agent holds it.
fn lock_agent_dir(dir: &Path) -> Result<fs::File, ApiError> {
    use rustix::fs::{flock, FlockOperation};
    let path = dir.join("lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| ApiError::io(format!("opening {}", path.display()), e))?;
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(ApiError::new(
            ErrorCode::InvalidState,
            format!("another agent is running on {}", dir.display()),
        )),
        Err(e) => Err(ApiError::io(format!("locking {}", path.display()), e)),
    }
}

/// Every container on one host needs a socket to its shim: lift the soft
/// open-files limit to the hard one.
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!("raising the open-files limit: {e}");
        }
    }
}
