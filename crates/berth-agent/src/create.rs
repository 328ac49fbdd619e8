//! Creating a container: resolve its image, build and check the spec,
//! reserve its id and memory, write its state dir (record, spec, inline
//! files), launch its shim and wait for the ready line, and undo all of it
//! when the start fails.

use crate::clock::now_ms;
use crate::error::ApiError;
use crate::events::EventKind;
use crate::record::{write_json, ContainerRecord, Entry, Phase, AGENT_FILE};
use crate::shim::{self, Launcher, Ready};
use crate::state::{requested_memory, write, AgentState};
use crate::watch::{gc_runtime_dirs, mark_running, spawn_watcher};
use berth_api::{ContainerView, CreateContainer, InlineFile};
use berth_core::network::{NetworkMode, NetworkRequest};
use berth_core::{ByteSize, ContainerId, ErrorCode};
use berth_image::LaunchOverrides;
use berth_runtime::{ContainerSpec, NetworkNamespace, ProcessSpec, RootfsSpec, Scratch, User};
use berth_shim::{ExitRecord, ShimSpec, ShimState, StateDir, Status};
use std::fs;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Inline files together may hold at most this much (they travel in the
/// JSON request, and belong in an image when larger).
const MAX_INLINE_BYTES: usize = 512 * 1024;

/// The largest output log a container may ask for: 16 GiB.
pub const MAX_LOG_BYTES: u64 = 16 << 30;

impl AgentState {
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
        let (entry, namespace) =
            tokio::task::spawn_blocking(move || this.prepare(&prepare_id, &request))
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
        let launched = launcher.launch(&entry.dir, namespace).await;
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
        mark_running(&self.events, &entry, &state);
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
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || gc_runtime_dirs(&this)).await {
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
        self.leave_network(&entry.id);
        let _ = self.forget(entry);
    }

    /// Puts the container on the network it asks for (bridge or a user
    /// network): the spec then joins the namespace the shim is handed as
    /// fd 3, and binds the name files. Nothing to do for other modes.
    fn join_network(
        &self,
        spec: &mut ContainerSpec,
        request: &NetworkRequest,
    ) -> Result<Option<OwnedFd>, ApiError> {
        match &request.mode {
            NetworkMode::None | NetworkMode::Host => return Ok(None),
            NetworkMode::Container(target) => {
                spec.network = NetworkNamespace::Join(self.network_namespace_of(target)?);
                let files = self
                    .networks
                    .files_of(target)
                    .map_err(|e| ApiError::from_lib(&e))?;
                spec.mounts.extend(files);
                return Ok(None);
            }
            NetworkMode::Bridge
            | NetworkMode::Named(_)
            | NetworkMode::Macvlan(_)
            | NetworkMode::Cni(_) => {}
        }
        let names = berth_net::files::names_of(spec.id.as_str(), &spec.effective_hostname());
        let attached = self
            .networks
            .attach(spec.id.as_str(), &names, request)
            .map_err(|e| ApiError::from_lib(&e))?;
        spec.network = NetworkNamespace::Join(shim::NAMESPACE_FD_PATH.into());
        spec.mounts.extend(attached.mounts.iter().cloned());
        Ok(Some(attached.namespace))
    }

    /// `/proc/PID/ns/net` of a running container of this agent.
    fn network_namespace_of(&self, target: &str) -> Result<PathBuf, ApiError> {
        let not_running = || {
            ApiError::new(
                ErrorCode::NetworkNotFound,
                format!("no running container {target} to share the network of"),
            )
        };
        let entry = crate::state::read(&self.containers)
            .get(target)
            .cloned()
            .ok_or_else(not_running)?;
        let Phase::Running { pid, .. } = entry.phase() else {
            return Err(not_running());
        };
        let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
        if !path.exists() {
            return Err(not_running());
        }
        Ok(path)
    }

    /// Takes a container off its network once it has ended or will not
    /// run, and removes the fleet overlay it was on if that is now idle.
    pub(crate) fn leave_network(&self, id: &str) {
        match self.networks.detach(id) {
            Ok(Some(network)) => self.remove_overlay_if_idle(&network),
            Ok(None) => {}
            Err(e) => tracing::warn!(id, "taking the container off its network: {e}"),
        }
    }

    /// The blocking half of create: resolve the image, build and check the
    /// spec, admit the request, reserve the id, write the state dir.
    fn prepare(
        &self,
        id: &ContainerId,
        request: &CreateContainer,
    ) -> Result<(Arc<Entry>, Option<OwnedFd>), ApiError> {
        let network = NetworkRequest {
            mode: request.network.clone(),
            ip: request.ip,
            ports: request.ports.clone(),
            egress_rate: request.egress_rate,
            ingress_rate: request.ingress_rate,
            isolated: request.network_isolated,
        };
        network.validate().map_err(|e| ApiError::from_lib(&e))?;
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
            network: match network.mode {
                NetworkMode::Host => NetworkNamespace::Host,
                _ => NetworkNamespace::New,
            },
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
        let mut spec = spec;
        if let Some(overlay) = &request.overlay {
            if let Err(e) = self.ensure_overlay(&request.network, overlay) {
                let _ = self.forget(&entry);
                self.remove_overlay_if_idle(&overlay.network);
                return Err(e);
            }
        }
        let joined = self.join_network(&mut spec, &network);
        if let Some(overlay) = &request.overlay {
            self.overlay_settled(&overlay.network);
        }
        let namespace = match joined {
            Ok(namespace) => namespace,
            Err(e) => {
                let _ = self.forget(&entry);
                if let Some(overlay) = &request.overlay {
                    self.remove_overlay_if_idle(&overlay.network);
                }
                return Err(e);
            }
        };
        let written = self
            .write_state_dir(&dir, &record, &spec, request, &image)
            .and_then(|()| write_inline_files(&dir.path().join(FILES_DIR), &files));
        if let Err(e) = written {
            self.leave_network(&entry.id);
            let _ = self.forget(&entry);
            return Err(e);
        }
        Ok((entry, namespace))
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
}

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
