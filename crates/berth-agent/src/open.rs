//! The composition root: opens an agent (raises the open-files limit, takes
//! the agent-dir lock, puts the state on its tmpfs, builds the shared
//! state, recovers the containers of a previous agent, starts the memory
//! policy) and lets go of the state tmpfs at shutdown.

use crate::config::AgentConfig;
use crate::error::ApiError;
use crate::events::EventLog;
use crate::state::AgentState;
use crate::{memory, recover, watch};
use berth_agent_dir::LockError;
use berth_core::ErrorCode;
use berth_image::ImageStore;
use berth_runtime::{Runtime, RuntimeConfig};
use std::fs;
use std::sync::Arc;
use std::time::Duration;

/// Opens the agent's state (see `crate::open`).
pub(crate) async fn open(config: AgentConfig) -> Result<Arc<AgentState>, ApiError> {
    raise_fd_limit();
    let run = config.run_dir();
    fs::create_dir_all(&run).map_err(|e| ApiError::io(format!("creating {}", run.display()), e))?;
    // Before anything is read or changed: a second agent on the same
    // data dir would fight the first over every container.
    let agent_lock = config.agent_dir().lock().map_err(lock_error)?;
    if config.state_tmpfs {
        use berth_agent_dir::state_fs::{ensure_tmpfs, StateFs};
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
    let events = EventLog::open(&config.agent_dir().path().join("events.log"))
        .map_err(|e| ApiError::io("opening events.log", e))?;
    let net_config =
        berth_net::NetConfig::new(&config.data_dir, &config.bridge, config.cni.clone());
    let networks = berth_net::Networks::open(net_config).map_err(|e| ApiError::from_lib(&e))?;
    let agent = Arc::new(AgentState::new(
        config, runtime, images, events, networks, agent_lock,
    ));
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
        match berth_agent_dir::state_fs::release_if_empty(&root) {
            Ok(true) => tracing::info!("unmounted the state tmpfs at {}", root.display()),
            Ok(false) => {}
            Err(e) => tracing::warn!("unmounting {}: {e}", root.display()),
        }
    }
}

/// The agent dir's lock error as the API's: a held lock is the caller's
/// mistake (a second agent on one data dir), anything else the host's.
fn lock_error(e: LockError) -> ApiError {
    match e {
        LockError::Held(_) => ApiError::new(ErrorCode::InvalidState, e.to_string()),
        LockError::Io { what, source } => ApiError::io(what, source),
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
