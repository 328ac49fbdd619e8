//! `/v1/containers/…`: what a client asks for and what it gets back.

use berth_core::network::{PublishedPort, Rate};
use berth_core::spec::{BindMount, Limits, NetworkMode, Rlimit, Scratch};
use berth_core::{ByteSize, ContainerId, ContainerResult, ErrorReport, ImageRef};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

/// `POST /v1/containers`: the engine's container settings, the image to
/// take defaults from, and the memory request.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateContainer {
    /// Generated when absent.
    #[serde(default)]
    pub id: Option<ContainerId>,
    pub image: ImageRef,
    /// Replaces the image's entrypoint (`[]` removes it).
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's cmd.
    #[serde(default)]
    pub command: Vec<String>,
    /// `KEY=VALUE` pairs over the image's environment.
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub working_dir: Option<String>,
    /// `user[:group]`, by name (from the image) or number.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub hostname: Option<String>,
    /// `none` (default), `host`, `bridge`, or a user network's name.
    #[serde(default)]
    pub network: NetworkMode,
    /// Host ports forwarded to the container (`bridge` or a user network).
    #[serde(default)]
    pub ports: Vec<PublishedPort>,
    /// A fixed address on a user network.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub ip: Option<std::net::Ipv4Addr>,
    /// Cap on what the container sends, as tc writes it (`10mbit`).
    #[serde(default)]
    pub egress_rate: Option<Rate>,
    /// Cap on what the container receives.
    #[serde(default)]
    pub ingress_rate: Option<Rate>,
    /// Cut off from the other containers of its bridge (they still reach
    /// it through published ports); the server asks it for every task.
    #[serde(default)]
    pub network_isolated: bool,
    /// The fleet overlay `network` names, when it is one: the agent makes
    /// it on first use and adds the peers and members given here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<crate::fleet::OverlaySpec>,
    #[serde(default)]
    pub mounts: Vec<BindMount>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default)]
    pub scratch: Scratch,
    #[serde(default)]
    pub scratch_size: Option<ByteSize>,
    /// Memory the container is promised (bytes); it may burst above it up to
    /// `limits.memory`. Defaults to the memory limit, or 0 without one.
    #[serde(default)]
    pub memory_request: Option<ByteSize>,
    /// Cap on the output log (bytes).
    #[serde(default)]
    pub log_max_bytes: Option<u64>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Images whose layers go on top of `image`'s, first one lowest (for
    /// example a task's code package imported as a one-layer image). Their
    /// configs are ignored: defaults come from `image`.
    #[serde(default)]
    pub extra_images: Vec<ImageRef>,
    /// Small files placed in the container's root file system, above every
    /// image layer (a task's payload and config). The container may change
    /// them in its own writable layer.
    #[serde(default)]
    pub files: Vec<InlineFile>,
}

/// One file of [`CreateContainer::files`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InlineFile {
    /// Absolute path inside the container, without `..`.
    pub path: String,
    pub content: String,
    /// Permission bits (default 0644).
    #[serde(default = "default_file_mode")]
    pub mode: u32,
}

/// The permission bits of an [`InlineFile`] that gives none.
pub const DEFAULT_FILE_MODE: u32 = 0o644;

fn default_file_mode() -> u32 {
    DEFAULT_FILE_MODE
}

/// Why the agent (not the container itself) ended a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KillReason {
    /// `memory_pressure`, `stopped` or `killed`.
    pub reason: String,
    pub message: String,
    /// Milliseconds since the Unix epoch.
    pub at: u64,
}

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    /// Its shim is starting it.
    Creating,
    Running,
    /// It ran and ended: `result` says how.
    Exited,
    /// It never ran, or its shim died with it: `error` says why.
    Failed,
}

impl ContainerState {
    /// Exited or failed: nothing more will happen to it.
    pub fn has_ended(self) -> bool {
        matches!(self, ContainerState::Exited | ContainerState::Failed)
    }
}

/// A container as the API shows it. Times are milliseconds since the Unix
/// epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ContainerView {
    pub id: String,
    pub state: ContainerState,
    pub image: String,
    pub image_id: String,
    pub created_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exited_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shim_pid: Option<u32>,
    pub memory_request: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<u64>,
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ContainerResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_reason: Option<KillReason>,
    /// Bytes of output kept in the log (once ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_bytes: Option<u64>,
    /// Bytes of output dropped: over the log's cap, or unwritable (once
    /// ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_dropped_bytes: Option<u64>,
}

/// `GET /v1/containers`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only containers in this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ContainerState>,
    /// `key=value`: only containers with this label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// `DELETE /v1/containers/{id}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Kill the container first if it still runs.
    #[serde(default)]
    pub force: bool,
}

/// `GET /v1/containers/{id}/wait`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Seconds to wait at most (default 60, at most 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
}

/// `POST /v1/containers/{id}/stop` and `…/kill`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SignalQuery {
    /// A signal name (`TERM`, `SIGKILL`) or number; stop defaults to TERM,
    /// kill to KILL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// Seconds between the signal and SIGKILL (stop only; default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace: Option<f64>,
}

/// `GET /v1/containers/{id}/logs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Byte offset to start from.
    #[serde(default)]
    pub offset: u64,
    /// Keep streaming until the container has ended and all its output has
    /// been sent (or after five minutes of silence: resume from the offset).
    #[serde(default)]
    pub follow: bool,
}
