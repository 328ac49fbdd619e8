//! How a task becomes a container: the agent request for one attempt.
//!
//! Inside the container (IronWorker's contract):
//! - `TASK_ID`, `PAYLOAD_FILE`, `CONFIG_FILE`, and the code's `env_vars`;
//! - with a code package: `TASK_DIR=/task`, the unpacked package, which is
//!   also the working directory (writable: changes go to the container's
//!   own upper layer);
//! - for classic runtime packages the stack's command for `file_name`,
//!   followed by `-id ID -d /task -payload FILE -config FILE`;
//! - stdout and stderr together form the task log.

use crate::config::TaskDefaults;
use berth_api::fleet::OverlaySpec;
use berth_api::{CreateContainer, InlineFile};
use berth_core::network::{NetworkMode, NetworkName};
use berth_core::spec::Limits;
use berth_core::{ByteSize, ContainerId, CpuQuota, ImageRef};
use berth_store::{container_name, CodeRevision, Stack, Task};
use std::collections::BTreeMap;
use std::time::Duration;

/// Where the package is unpacked inside the container.
pub const TASK_DIR: &str = "/task";
/// The payload and config files.
pub const PAYLOAD_FILE: &str = "/.berth/payload.json";
pub const CONFIG_FILE: &str = "/.berth/config.json";

/// Labels that tie a container to its task (the orphan sweep reads them).
pub const TASK_LABEL: &str = "berth.task";
pub const ATTEMPT_LABEL: &str = "berth.attempt";

/// The name every package image starts with (the namespace is the
/// server's: it removes those of packages it no longer has).
pub const PACKAGE_IMAGE_PREFIX: &str = "berth-code/";

/// The image a code package is imported as on agents.
pub fn package_image(sha256: &str) -> String {
    let short = sha256.get(..32).unwrap_or(sha256);
    format!("{PACKAGE_IMAGE_PREFIX}{short}:latest")
}

/// Why a task cannot be turned into a container (its own fault: the task
/// ends in `error` with this message).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct BadTask(pub String);

/// Where a task goes on its code's overlay network: the network as its
/// host is to make it, and the task's address there (kept across retries).
#[derive(Debug, Clone)]
pub struct OverlayPlace {
    pub spec: OverlaySpec,
    pub address: std::net::Ipv4Addr,
}

/// The agent request for the task's current attempt. `stack` is the
/// classic runtime's stack (required when the code has a `runtime`);
/// `overlay` the task's place on its code's overlay network (required when
/// the code names one).
pub fn create_request(
    task: &Task,
    code: &CodeRevision,
    stack: Option<&Stack>,
    defaults: &TaskDefaults,
    overlay: Option<&OverlayPlace>,
) -> Result<CreateContainer, BadTask> {
    let id = ContainerId::new(container_name(&task.id, task.attempt))
        .map_err(|e| BadTask(format!("container name: {e}")))?;
    let spec = &code.spec;
    let (image, entrypoint, command) = match (&spec.runtime, &spec.image) {
        (Some(runtime), _) => {
            let stack = stack.ok_or_else(|| {
                BadTask(format!(
                    "runtime {runtime:?} is not mapped to a stack (berth stack map {runtime} IMAGE)"
                ))
            })?;
            let file = spec
                .file_name
                .as_deref()
                .ok_or_else(|| BadTask("the code has a runtime but no file_name".into()))?;
            let mut argv: Vec<String> = stack
                .command
                .iter()
                .map(|part| part.replace("{file}", file))
                .collect();
            argv.extend([
                "-id".to_owned(),
                task.id.clone(),
                "-d".to_owned(),
                TASK_DIR.to_owned(),
                "-payload".to_owned(),
                PAYLOAD_FILE.to_owned(),
                "-config".to_owned(),
                CONFIG_FILE.to_owned(),
            ]);
            (stack.image.as_str(), Some(argv), Vec::new())
        }
        (None, Some(image)) => {
            let command = match &spec.command {
                Some(line) if !line.trim().is_empty() => shell_words::split(line)
                    .map_err(|e| BadTask(format!("the code's command {line:?}: {e}")))?,
                _ => Vec::new(),
            };
            (image.as_str(), None, command)
        }
        (None, None) => {
            return Err(BadTask(
                "the code names neither an image nor a runtime".into(),
            ))
        }
    };
    let image = ImageRef::parse(image).map_err(|e| BadTask(format!("image {image:?}: {e}")))?;

    let mut env: Vec<String> = spec
        .env_vars
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    env.push(format!("TASK_ID={}", task.id));
    env.push(format!("PAYLOAD_FILE={PAYLOAD_FILE}"));
    env.push(format!("CONFIG_FILE={CONFIG_FILE}"));
    let mut extra_images = Vec::new();
    let mut working_dir = None;
    if let Some(sha) = &code.package_sha256 {
        let package = ImageRef::parse(&package_image(sha))
            .map_err(|e| BadTask(format!("package image: {e}")))?;
        extra_images.push(package);
        env.push(format!("TASK_DIR={TASK_DIR}"));
        working_dir = Some(TASK_DIR.to_owned());
    }

    let mut labels = BTreeMap::new();
    labels.insert(TASK_LABEL.to_owned(), task.id.clone());
    labels.insert(ATTEMPT_LABEL.to_owned(), task.attempt.to_string());
    let timeout = u64::try_from(task.timeout)
        .ok()
        .filter(|secs| *secs > 0)
        .ok_or_else(|| {
            BadTask(format!(
                "timeout {} is not a positive number of seconds",
                task.timeout
            ))
        })?;

    // What the dispatcher reserved for this attempt; a task claimed before
    // reservations existed gets the server's defaults.
    let (memory_limit, memory_request, pids, cpus) = match &task.reserved {
        Some(reserved) => (
            reserved.memory_limit,
            reserved.request.memory_bytes,
            reserved.request.pids,
            u32::try_from(reserved.request.cpu_millis)
                .ok()
                .filter(|millis| *millis > 0),
        ),
        None => (
            defaults.memory,
            defaults.memory_request,
            defaults.pids,
            None,
        ),
    };
    let network = task_network(task, spec.network.as_ref(), overlay)?;
    Ok(CreateContainer {
        id: Some(id),
        image,
        entrypoint,
        command,
        env,
        working_dir,
        user: None,
        hostname: network.hostname,
        network: network.mode,
        network_isolated: network.isolated,
        overlay: network.overlay,
        ports: Vec::new(),
        ip: network.ip,
        egress_rate: None,
        ingress_rate: None,
        mounts: Vec::new(),
        limits: Limits {
            memory: Some(ByteSize(memory_limit)),
            pids: Some(pids),
            cpus: cpus.map(CpuQuota),
            timeout: Some(Duration::from_secs(timeout)),
            ..Limits::default()
        },
        rlimits: Vec::new(),
        read_only: false,
        scratch: Default::default(),
        scratch_size: None,
        memory_request: Some(ByteSize(memory_request)),
        log_max_bytes: Some(defaults.log_max_bytes),
        labels,
        extra_images,
        files: vec![
            InlineFile {
                path: PAYLOAD_FILE.to_owned(),
                content: task.payload.clone(),
                mode: 0o644,
            },
            InlineFile {
                path: CONFIG_FILE.to_owned(),
                content: spec.config.clone().unwrap_or_default(),
                mode: 0o644,
            },
        ],
    })
}

/// How a task's container is put on the network.
struct TaskNetwork {
    mode: NetworkMode,
    isolated: bool,
    ip: Option<std::net::Ipv4Addr>,
    hostname: Option<String>,
    overlay: Option<OverlaySpec>,
}

/// Tasks reach the network as on IronWorker unless their code asks for
/// none: on the host's bridge, each on its own at layer 2, so that no
/// project's task reaches another's. A code may name one of its project's
/// overlay networks instead: its tasks then reach each other there, by
/// task id (the hostname), at addresses the server gave. The store's value
/// is checked again: only these ever reach an agent.
fn task_network(
    task: &Task,
    asked: Option<&NetworkMode>,
    overlay: Option<&OverlayPlace>,
) -> Result<TaskNetwork, BadTask> {
    let plain = |mode| TaskNetwork {
        mode,
        isolated: true,
        ip: None,
        hostname: None,
        overlay: None,
    };
    match asked {
        None | Some(NetworkMode::Bridge) => Ok(plain(NetworkMode::Bridge)),
        Some(NetworkMode::None) => Ok(plain(NetworkMode::None)),
        Some(NetworkMode::Named(name)) => {
            let place = overlay.ok_or_else(|| {
                BadTask(format!("network {name}: the task was given no place on it"))
            })?;
            let host_name = NetworkName::new(place.spec.network.clone())
                .map_err(|e| BadTask(format!("network {name}: {e}")))?;
            Ok(TaskNetwork {
                mode: NetworkMode::Named(host_name),
                isolated: false,
                ip: Some(place.address),
                hostname: Some(task.id.clone()),
                overlay: Some(place.spec.clone()),
            })
        }
        Some(other) => Err(BadTask(format!(
            "network {other} is not one a task may use (none, bridge or a project's network)"
        ))),
    }
}
