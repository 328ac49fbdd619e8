//! The agent's containers: creation through a shim, the exit watchers, the
//! on-disk records, and the rediscovery that makes restarts lossless.

use crate::config::AgentConfig;
use crate::error::ApiError;
use crate::events::{EventKind, EventLog};
use crate::shim::{self, Launcher, Ready};
pub use berth_api::{ContainerState, ContainerView, CreateContainer, InlineFile, KillReason};
use berth_core::{ByteSize, ContainerId, ErrorCode, ErrorReport};
use berth_image::{ImageStore, LaunchOverrides};
use berth_runtime::{
    ContainerSpec, ProcessSpec, RootfsSpec, Runtime, RuntimeConfig, Scratch, User,
};
use berth_shim::{ExitRecord, Request, Response, ShimSpec, ShimState, StateDir, Status};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Inline files together may hold at most this much (they travel in the
/// JSON request, and belong in an image when larger).
const MAX_INLINE_BYTES: usize = 512 * 1024;

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

const AGENT_FILE: &str = "agent.json";

/// The largest output log a container may ask for: 16 GiB.
pub const MAX_LOG_BYTES: u64 = 16 << 30;

/// Everything the API handlers share.
pub struct AgentState {
    pub config: AgentConfig,
    pub runtime: Runtime,
    pub images: ImageStore,
    pub events: EventLog,
    containers: RwLock<BTreeMap<String, Arc<Entry>>>,
    /// Image imports and removals one at a time (the store is safe across
    /// processes; this keeps one agent's uploads from racing its removals).
    pub image_lock: tokio::sync::Mutex<()>,
    /// Held for the agent's life: one agent per data dir.
    _agent_lock: fs::File,
}

impl AgentState {
    pub async fn open(config: AgentConfig) -> Result<Arc<AgentState>, ApiError> {
        raise_fd_limit();
        let run = config.run_dir();
        fs::create_dir_all(&run)
            .map_err(|e| ApiError::io(format!("creating {}", run.display()), e))?;
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
        let agent = Arc::new(AgentState {
            config,
            runtime,
            images,
            events,
            containers: RwLock::new(BTreeMap::new()),
            image_lock: tokio::sync::Mutex::new(()),
            _agent_lock: agent_lock,
        });
        agent.rediscover().await?;
        crate::memory::spawn_policy(agent.clone());
        Ok(agent)
    }

    /// At shutdown: takes the state tmpfs down if no container state is
    /// left on it (running containers keep it for the next agent). Shims
    /// of containers deleted just now may still be removing their runtime
    /// dirs: give them a moment, and clean up after any that died.
    pub(crate) async fn release_state_tmpfs(self: &Arc<Self>) {
        let root = self.config.run_dir();
        let no_containers = fs::read_dir(self.config.state_root())
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if no_containers {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            loop {
                let this = self.clone();
                let _ = tokio::task::spawn_blocking(move || this.gc_runtime_dirs()).await;
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

    /// Cleans up after dead shims in both runtime dirs.
    fn gc_runtime_dirs(&self) -> berth_runtime::Result<Vec<String>> {
        let mut removed = self.runtime.gc_dir(&self.config.volatile_runtime_dir())?;
        removed.extend(self.runtime.gc()?);
        Ok(removed)
    }

    pub fn get(&self, id: &str) -> Result<Arc<Entry>, ApiError> {
        read(&self.containers)
            .get(id)
            .cloned()
            .ok_or_else(|| ApiError::no_container(id))
    }

    pub fn list(&self) -> Vec<Arc<Entry>> {
        read(&self.containers).values().cloned().collect()
    }

    /// Sum of the memory requests of containers that are not finished.
    pub fn allocated_memory(&self) -> u64 {
        requested_memory(&read(&self.containers))
    }

    /// Creates and starts a container; returns once it runs.
    ///
    /// The work runs in its own task, so a caller that goes away mid-create
    /// cannot leave a half-created container behind.
    pub async fn create(
        self: &Arc<Self>,
        request: CreateContainer,
    ) -> Result<ContainerView, ApiError> {
        let this = self.clone();
        tokio::spawn(async move { this.create_to_the_end(request).await })
            .await
            .map_err(|e| ApiError::internal(format!("create task: {e}")))?
    }

    async fn create_to_the_end(
        self: &Arc<Self>,
        request: CreateContainer,
    ) -> Result<ContainerView, ApiError> {
        let id = match &request.id {
            Some(id) => id.clone(),
            None => berth_runtime::random_container_id(),
        };
        let this = self.clone();
        let prepare_id = id.clone();
        let began = std::time::Instant::now();
        let scratch = request.scratch;
        let entry = tokio::task::spawn_blocking(move || this.prepare(&prepare_id, &request))
            .await
            .map_err(|e| ApiError::internal(format!("create task: {e}")))??;
        let prepared = began.elapsed();
        let containers_dir = match scratch {
            Scratch::Memory => self.config.volatile_runtime_dir(),
            Scratch::Disk => self.config.runtime_containers_dir(),
        };
        let launcher = Launcher {
            binary: &self.config.shim_binary,
            containers_dir: &containers_dir,
            cgroup_parent: &self.config.cgroup_parent,
        };
        let launched = launcher.launch(&entry.dir).await;
        tracing::debug!(
            id = %entry.id,
            prepare_us = prepared.as_micros() as u64,
            launch_us = (began.elapsed() - prepared).as_micros() as u64,
            "create"
        );
        let shim_pid = launched.shim_pid;
        let outcome = match launched.ready {
            Ok(Ready::Running { pid }) => Ok(pid),
            Ok(Ready::Failed) => Err(match entry.dir.read_exit() {
                Ok(Some(record)) => match record.error() {
                    Some(error) => ApiError::from(error.clone()),
                    None => ApiError::internal("the shim failed without an error"),
                },
                Ok(None) => ApiError::internal("the shim reported a failure without a record"),
                Err(e) => ApiError::io("reading exit.json", e),
            }),
            Err(e) => Err(e),
        };
        let pid = match outcome {
            Ok(pid) => pid,
            Err(error) => {
                self.abort_create(&entry, shim_pid, &error).await;
                return Err(error);
            }
        };
        // The shim writes state.json before its ready line.
        let state = entry.dir.read_state().ok().flatten().unwrap_or(ShimState {
            id: entry.id.clone(),
            shim_pid,
            container_pid: pid,
            status: Status::Running,
            started_at: now_ms(),
            exited_at: None,
        });
        self.events
            .push(&entry.id, EventKind::Created, serde_json::Value::Null);
        self.mark_running(&entry, &state);
        spawn_watcher(self.clone(), entry.clone(), shim_pid);
        Ok(entry.view())
    }

    /// Undoes a create whose shim did not report a running container: the
    /// shim (if somehow still alive) is killed, its container dies with it,
    /// the runtime's leftovers are collected, and waiters are released.
    async fn abort_create(self: &Arc<Self>, entry: &Entry, shim_pid: u32, error: &ApiError) {
        if shim::shim_alive(shim_pid, &entry.dir) {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_raw(shim_pid as i32)
                    .unwrap_or(rustix::process::Pid::INIT),
                rustix::process::Signal::KILL,
            );
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while shim::shim_alive(shim_pid, &entry.dir) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let this = self.clone();
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || this.gc_runtime_dirs()).await {
                tracing::warn!("gc after an aborted create: {e}");
            }
        }
        entry.phase.send_replace(Phase::Exited {
            record: ExitRecord::Failed {
                error: error.report.clone(),
            },
            started_at: None,
            exited_at: Some(now_ms()),
        });
        let _ = self.forget(entry);
    }

    /// The blocking half of create: resolve the image, build and check the
    /// spec, admit the request, reserve the id, write the state dir.
    fn prepare(&self, id: &ContainerId, request: &CreateContainer) -> Result<Arc<Entry>, ApiError> {
        let mut image = self
            .images
            .resolve(&request.image)
            .map_err(|e| ApiError::from_lib(&e))?;
        for extra in &request.extra_images {
            let extra = self
                .images
                .resolve(extra)
                .map_err(|e| ApiError::from_lib(&e))?;
            // overlayfs refuses a directory twice; the topmost copy wins.
            image.layers.retain(|layer| !extra.layers.contains(layer));
            image.layers.extend(extra.layers);
        }
        let files = plan_inline_files(&request.files)?;
        let launch = image
            .launch(&LaunchOverrides {
                entrypoint: request.entrypoint.clone(),
                command: request.command.clone(),
                env: request.env.clone(),
                user: request.user.clone(),
                working_dir: request.working_dir.clone(),
            })
            .map_err(|e| ApiError::from_lib(&e))?;
        let spec = ContainerSpec {
            id: id.clone(),
            rootfs: RootfsSpec {
                layers: if files.is_empty() {
                    image.layers.clone()
                } else {
                    let mut layers = image.layers.clone();
                    layers.push(self.config.state_root().join(id.as_str()).join(FILES_DIR));
                    layers
                },
                read_only: request.read_only,
                scratch: request.scratch,
                scratch_size: request.scratch_size,
            },
            process: ProcessSpec {
                args: launch.args,
                env: launch.env,
                cwd: launch.cwd,
                user: User {
                    uid: launch.uid,
                    gid: launch.gid,
                    additional_gids: launch.additional_gids,
                },
                rlimits: request.rlimits.clone(),
                terminal: false,
            },
            hostname: request.hostname.clone(),
            network: request.network,
            mounts: request.mounts.clone(),
            limits: request.limits,
        };
        self.runtime
            .validate(&spec)
            .map_err(|e| ApiError::from_lib(&e))?;
        if let Some(cap) = request.log_max_bytes {
            if cap == 0 || cap > MAX_LOG_BYTES {
                return Err(ApiError::invalid(format!(
                    "log_max_bytes must be between 1 and {MAX_LOG_BYTES}"
                )));
            }
        }
        let memory_limit = request.limits.memory.map(ByteSize::bytes);
        let memory_request = request
            .memory_request
            .map(ByteSize::bytes)
            .or(memory_limit)
            .unwrap_or(0);
        if let Some(limit) = memory_limit {
            if memory_request > limit {
                return Err(ApiError::new(
                    ErrorCode::InvalidLimit,
                    format!("memory_request {memory_request} is above the memory limit {limit}"),
                ));
            }
        }
        let record = ContainerRecord {
            id: id.to_string(),
            image: image.reference.to_string(),
            image_id: image.id.clone(),
            created_at: now_ms(),
            memory_request,
            memory_limit,
            cpus_millis: request.limits.cpus.map(|c| c.millicpus()),
            labels: request.labels.clone(),
            kill_reason: None,
        };
        let dir = StateDir::new(self.config.state_root().join(id.as_str()));
        let entry = Arc::new(Entry {
            id: id.to_string(),
            dir: dir.clone(),
            record: Mutex::new(record.clone()),
            phase: watch::channel(Phase::Creating).0,
        });
        self.reserve(&entry, memory_request)?;
        let written = self
            .write_state_dir(&dir, &record, &spec, request, &image)
            .and_then(|()| write_inline_files(&dir.path().join(FILES_DIR), &files));
        if let Err(e) = written {
            let _ = self.forget(&entry);
            return Err(e);
        }
        Ok(entry)
    }

    /// Takes the id and the memory, atomically with respect to other creates.
    fn reserve(&self, entry: &Arc<Entry>, memory_request: u64) -> Result<(), ApiError> {
        let mut containers = write(&self.containers);
        if containers.contains_key(&entry.id) || entry.dir.path().exists() {
            return Err(ApiError::new(
                ErrorCode::ContainerExists,
                format!("a container with id {:?} already exists", entry.id),
            ));
        }
        let allocated = requested_memory(&containers);
        let ceiling = self.config.memory_ceiling;
        if allocated.saturating_add(memory_request) > ceiling {
            return Err(ApiError::new(
                ErrorCode::InsufficientResources,
                format!(
                    "memory_request {memory_request} does not fit: {allocated} of the node's {ceiling} bytes are already requested"
                ),
            ));
        }
        containers.insert(entry.id.clone(), entry.clone());
        Ok(())
    }

    fn write_state_dir(
        &self,
        dir: &StateDir,
        record: &ContainerRecord,
        spec: &ContainerSpec,
        request: &CreateContainer,
        image: &berth_image::ResolvedImage,
    ) -> Result<(), ApiError> {
        fs::create_dir(dir.path()).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => ApiError::new(
                ErrorCode::ContainerExists,
                format!("a container with id {:?} already exists", record.id),
            ),
            _ => ApiError::io(format!("creating {}", dir.path().display()), e),
        })?;
        // agent.json first: a dir without it is a create that never got
        // as far as a shim, and rediscovery removes it.
        write_json(&dir.path().join(AGENT_FILE), record)
            .map_err(|e| ApiError::io("writing agent.json", e))?;
        let mut shim_spec = ShimSpec::new(spec.clone());
        shim_spec.log_max_bytes = request.log_max_bytes.unwrap_or(self.config.log_max_bytes);
        write_json(&dir.spec_file(), &shim_spec)
            .map_err(|e| ApiError::io("writing spec.json", e))?;
        self.images
            .lease(&record.id, image)
            .map_err(|e| ApiError::from_lib(&e))
    }

    /// Drops a container: its entry, state dir and image lease. False if
    /// this incarnation was already gone (a concurrent delete won).
    fn forget(&self, entry: &Entry) -> bool {
        {
            let mut containers = write(&self.containers);
            // Only this incarnation: a new container may have taken the id.
            let current = containers
                .get(&entry.id)
                .is_some_and(|c| std::ptr::eq(Arc::as_ptr(c), entry));
            if !current {
                return false;
            }
            containers.remove(&entry.id);
        }
        if let Err(e) = fs::remove_dir_all(entry.dir.path()) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(id = %entry.id, "removing the state dir: {e}");
            }
        }
        if let Err(e) = self.images.release(&entry.id) {
            tracing::warn!(id = %entry.id, "releasing the image lease: {e}");
        }
        true
    }

    /// Removes a finished container: its state dir, lease and entry.
    pub fn delete(&self, entry: &Arc<Entry>) -> Result<(), ApiError> {
        if !matches!(entry.phase(), Phase::Exited { .. }) {
            return Err(ApiError::new(
                ErrorCode::InvalidState,
                format!(
                    "container {} is still running; stop it first or use force=true",
                    entry.id
                ),
            ));
        }
        if !self.forget(entry) {
            return Err(ApiError::no_container(&entry.id));
        }
        self.events
            .push(&entry.id, EventKind::Deleted, serde_json::Value::Null);
        Ok(())
    }

    /// Records a container's end and its events.
    fn finish(&self, entry: &Entry, record: ExitRecord) {
        let (started_at, exited_at) = match entry.dir.read_state() {
            Ok(Some(state)) => (Some(state.started_at), state.exited_at),
            _ => (None, None),
        };
        let exited_at = exited_at.or_else(|| Some(now_ms()));
        let detail = match &record {
            ExitRecord::Finished { result, error, .. } => serde_json::json!({
                "exit_code": result.exit_code,
                "signal": result.signal,
                "oom_killed": result.oom_killed,
                "timed_out": result.timed_out,
                "error": error,
            }),
            ExitRecord::Failed { error } => serde_json::json!({ "error": error }),
        };
        let events = &self.events;
        if let Some(result) = record.result() {
            if result.oom_killed {
                events.ensure(&entry.id, EventKind::Oom, serde_json::Value::Null);
            }
            if result.timed_out {
                events.ensure(&entry.id, EventKind::TimedOut, serde_json::Value::Null);
            }
        }
        if let Some(reason) = &lock(&entry.record).kill_reason {
            if reason.reason == crate::memory::MEMORY_PRESSURE {
                events.ensure(
                    &entry.id,
                    EventKind::MemoryKilled,
                    serde_json::json!(reason),
                );
            }
        }
        events.ensure(&entry.id, EventKind::Exited, detail);
        entry.phase.send_replace(Phase::Exited {
            record,
            started_at,
            exited_at,
        });
    }

    /// Rebuilds the registry from the state dirs and the shims.
    async fn rediscover(self: &Arc<Self>) -> Result<(), ApiError> {
        let root = self.config.state_root();
        let dirs = fs::read_dir(&root)
            .map_err(|e| ApiError::io(format!("listing {}", root.display()), e))?;
        let mut tasks = tokio::task::JoinSet::new();
        for dir in dirs.flatten() {
            let this = self.clone();
            tasks.spawn(async move { this.recover(&dir.path()).await });
        }
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = done {
                tracing::warn!("recovering a container: {e}");
            }
        }
        Ok(())
    }

    async fn recover(self: Arc<Self>, path: &Path) {
        let dir = StateDir::new(path);
        let record: ContainerRecord = match fs::read(path.join(AGENT_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
        {
            Some(r) => r,
            None => {
                forget_unfinished_create(path);
                return;
            }
        };
        let entry = Arc::new(Entry {
            id: record.id.clone(),
            dir: dir.clone(),
            record: Mutex::new(record),
            phase: watch::channel(Phase::Creating).0,
        });
        write(&self.containers).insert(entry.id.clone(), entry.clone());
        self.events
            .ensure(&entry.id, EventKind::Created, serde_json::Value::Null);
        if let Ok(Some(state)) = dir.read_state() {
            self.note_started(&entry, &state);
        }
        if let Ok(Some(record)) = dir.read_exit() {
            self.finish(&entry, record);
            return;
        }
        // The common case, settled here so a restarted agent serves with
        // its containers already known as running; everything else (a shim
        // still starting, one that died) is the watcher's to sort out.
        let reply = shim::request(&dir, &Request::State, Some(Duration::from_secs(2))).await;
        let running = matches!(
            reply,
            Ok(Response::State {
                status: Status::Running,
                ..
            })
        );
        let state = dir.read_state().ok().flatten();
        if let (true, Some(state)) = (running, &state) {
            self.mark_running(&entry, state);
        }
        spawn_watcher(self.clone(), entry.clone(), state.map_or(0, |s| s.shim_pid));
    }

    /// The `started` event for the container the shim's state describes
    /// (once per incarnation).
    fn note_started(&self, entry: &Entry, state: &ShimState) {
        self.events.ensure(
            &entry.id,
            EventKind::Started,
            serde_json::json!({ "pid": state.container_pid, "shim_pid": state.shim_pid }),
        );
    }

    /// Records that the container runs, as its shim's state says.
    fn mark_running(&self, entry: &Entry, state: &ShimState) {
        self.note_started(entry, state);
        entry.phase.send_replace(Phase::Running {
            pid: state.container_pid,
            shim_pid: state.shim_pid,
            started_at: state.started_at,
        });
    }

    /// The shim died without an exit record: its container died with it
    /// (parent-death signal). Record that and clean up what it left.
    async fn mark_lost(self: &Arc<Self>, entry: &Entry, shim_pid: u32) {
        let message = match shim_pid {
            // A create the previous agent never finished: no shim recorded
            // its pid, none was found.
            0 => "no shim of the container was found (its agent stopped while creating it); it is not running"
                .to_owned(),
            pid => format!("the container's shim (pid {pid}) died; the container died with it"),
        };
        let error = ErrorReport::new(ErrorCode::HostIo, message);
        let record = ExitRecord::Failed { error };
        if let Err(e) = write_json(&entry.dir.exit_file(), &record) {
            tracing::warn!(id = %entry.id, "writing exit.json for a lost container: {e}");
        }
        let _ = fs::remove_file(entry.dir.socket());
        let this = self.clone();
        let gc = tokio::task::spawn_blocking(move || this.gc_runtime_dirs()).await;
        match gc {
            Ok(Ok(removed)) if !removed.is_empty() => {
                tracing::info!(?removed, "cleaned up after a dead shim")
            }
            Ok(Err(e)) => tracing::warn!("gc after a dead shim: {e}"),
            _ => {}
        }
        self.finish(entry, record);
    }
}

fn requested_memory(containers: &BTreeMap<String, Arc<Entry>>) -> u64 {
    containers
        .values()
        .filter(|e| !matches!(*e.phase.borrow(), Phase::Exited { .. }))
        .map(|e| lock(&e.record).memory_request)
        .sum()
}

/// Follows a container until it ends, then records the end. A container
/// still `Creating` (found so by a restarted agent) is promoted to
/// `Running` once its shim has written its state.
fn spawn_watcher(agent: Arc<AgentState>, entry: Arc<Entry>, shim_pid: u32) {
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        loop {
            if let Ok(Some(record)) = entry.dir.read_exit() {
                agent.finish(&entry, record);
                return;
            }
            let pid = match shim_pid {
                0 => shim::recorded_pid(&entry.dir),
                pid => pid,
            };
            let pid = match pid {
                0 => shim::find_shim(&entry.dir).unwrap_or(0),
                pid => pid,
            };
            if !shim::shim_alive(pid, &entry.dir) {
                // Gone without a record (re-read: it may have just written
                // one), or never found: give an unregistered shim a few
                // seconds, then call the container lost.
                if let Ok(Some(record)) = entry.dir.read_exit() {
                    agent.finish(&entry, record);
                } else if pid == 0 && started.elapsed() < Duration::from_secs(5) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                } else {
                    agent.mark_lost(&entry, pid).await;
                }
                return;
            }
            if matches!(entry.phase(), Phase::Creating) {
                match entry.dir.read_state() {
                    Ok(Some(state)) => agent.mark_running(&entry, &state),
                    _ => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                }
            }
            match shim::request(&entry.dir, &Request::Wait, None).await {
                // Answered once exit.json is durable.
                Ok(_) => {
                    if let Ok(Some(record)) = entry.dir.read_exit() {
                        agent.finish(&entry, record);
                        return;
                    }
                }
                Err(e) if !shim::is_gone(&e) => {
                    tracing::warn!(id = %entry.id, "waiting on the shim: {e}");
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

/// A state dir without a readable agent.json is a create that died before
/// its shim existed, and is removed, but only if nothing but the spec is in
/// it: anything a shim wrote is kept (and reported) rather than destroyed.
fn forget_unfinished_create(path: &Path) {
    let names: Vec<String> = fs::read_dir(path)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let only_inputs = names
        .iter()
        .all(|n| n == "spec.json" || n.ends_with(".tmp"));
    if only_inputs {
        tracing::info!("removing the unfinished state dir {}", path.display());
        if let Err(e) = fs::remove_dir_all(path) {
            tracing::warn!("removing {}: {e}", path.display());
        }
    } else {
        tracing::warn!(
            "{} has no readable agent.json but holds {names:?}; left alone for an operator",
            path.display()
        );
    }
}

/// Writes `value` as JSON to `path` via a temp file and a rename, so a
/// reader never sees half of it. No fsync: a killed agent loses nothing
/// the kernel accepted, and the shim's exit records are the durable ones.
/// The layer directory of a container's inline files, in its state dir.
const FILES_DIR: &str = "files";

/// Checks inline files and turns their paths into relative ones.
fn plan_inline_files(files: &[InlineFile]) -> Result<Vec<(PathBuf, &InlineFile)>, ApiError> {
    let total: usize = files.iter().map(|f| f.content.len()).sum();
    if total > MAX_INLINE_BYTES {
        return Err(ApiError::invalid(format!(
            "inline files hold {total} bytes; at most {MAX_INLINE_BYTES} are allowed (put larger files in an image)"
        )));
    }
    let mut planned: Vec<(PathBuf, &InlineFile)> = Vec::with_capacity(files.len());
    for file in files {
        let path = Path::new(&file.path);
        let relative = path.strip_prefix("/").map_err(|_| {
            ApiError::invalid(format!("inline file path {:?} must be absolute", file.path))
        })?;
        let clean = relative
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !clean || relative.as_os_str().is_empty() {
            return Err(ApiError::invalid(format!(
                "inline file path {:?} must name a file without `.` or `..` components",
                file.path
            )));
        }
        if file.mode & !0o7777 != 0 || file.mode & 0o7000 != 0 {
            return Err(ApiError::invalid(format!(
                "inline file mode {:o} must be permission bits only (no setuid, setgid or sticky)",
                file.mode
            )));
        }
        if planned
            .iter()
            .any(|(p, _)| p == relative || p.starts_with(relative) || relative.starts_with(p))
        {
            return Err(ApiError::invalid(format!(
                "inline file path {:?} collides with another inline file",
                file.path
            )));
        }
        planned.push((relative.to_owned(), file));
    }
    Ok(planned)
}

/// Writes the inline files as a layer directory (world-readable dirs, so
/// any container user can reach them).
fn write_inline_files(root: &Path, files: &[(PathBuf, &InlineFile)]) -> Result<(), ApiError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if files.is_empty() {
        return Ok(());
    }
    let io_err = |e| ApiError::io("writing inline files", e);
    for (relative, file) in files {
        let path = root.join(relative);
        if let Some(parent) = path.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(io_err)?;
        }
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(file.mode)
            .open(&path)
            .map_err(io_err)?;
        out.write_all(file.content.as_bytes()).map_err(io_err)?;
        // The umask may have trimmed the mode.
        fs::set_permissions(
            &path,
            std::os::unix::fs::PermissionsExt::from_mode(file.mode),
        )
        .map_err(io_err)?;
    }
    Ok(())
}

fn write_json(path: &Path, value: &impl Serialize) -> io::Result<()> {
    let mut bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
    bytes.push(b'\n');
    let temp = path.with_extension("tmp");
    let mut file = fs::File::create(&temp)?;
    file.write_all(&bytes)?;
    drop(file);
    fs::rename(&temp, path)
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().min(u128::from(u64::MAX)) as u64)
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

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}
