//! The rows the store keeps, as plain data. Times are milliseconds since the
//! Unix epoch (`i64`), ids are 24 lower-case hex characters (the shape
//! IronWorker clients expect: a Mongo ObjectId), whose first 8 characters are
//! the creation time in seconds so that ids sort roughly by age.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

pub use berth_core::time::Millis;

/// A project: the unit of isolation. Every code, task and schedule belongs
/// to exactly one, and a token opens exactly one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub created_at: Millis,
}

/// A token's public description. The secret itself is shown once, at
/// creation, and only its SHA-256 is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Public handle, used to revoke the token without knowing its secret.
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub created_at: Millis,
    pub revoked_at: Option<Millis>,
}

/// An operator token's public description (fleet-wide: hosts and pools,
/// no project's data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorTokenInfo {
    pub id: String,
    pub name: String,
    pub created_at: Millis,
    pub revoked_at: Option<Millis>,
}

/// A fair-share pool as an operator configured it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolConfig {
    pub name: String,
    /// Relative claim on the fleet; at least 1.
    pub weight: u32,
    /// Guaranteed minimum.
    pub min: berth_core::placement::Resources,
    /// Never exceeded; `None`: no maximum.
    pub max: Option<berth_core::placement::Resources>,
}

/// A host of the fleet, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: String,
    pub name: String,
    /// Base URL of its agent's API.
    pub address: String,
    /// The bearer the server presents to its agent.
    pub credential: String,
    pub drained: bool,
    pub down: bool,
    pub operator_labels: std::collections::BTreeMap<String, String>,
    /// Its last report, JSON (the server's contract type; opaque here).
    pub report: String,
    pub joined_at: Millis,
    pub last_heartbeat: Millis,
}

/// A host joining (or re-joining) the fleet.
#[derive(Debug, Clone)]
pub struct NodeJoin {
    pub name: String,
    /// The identity an earlier join gave it, if it has one.
    pub node_id: Option<String>,
    pub address: String,
    pub credential: String,
    pub report: String,
}

/// Maps a classic IronWorker runtime name (`sh`, `binary`, `python`, …) to
/// an image and the way a package's file is invoked in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stack {
    /// The runtime name clients send (`runtime` in the classic upload form).
    pub runtime: String,
    /// Image reference on the agents (`name[:tag]`).
    pub image: String,
    /// argv template; `{file}` is replaced by the package's `file_name`.
    /// Example: `["sh", "{file}"]`, `["./{file}"]`.
    pub command: Vec<String>,
    pub updated_at: Millis,
}

/// What a code upload declares (one revision).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewCodeRevision {
    pub name: String,
    /// Image form: the image to run.
    pub image: Option<String>,
    /// Classic form: the runtime (a [`Stack`]'s name).
    pub runtime: Option<String>,
    /// Classic form: the file inside the package to run.
    pub file_name: Option<String>,
    /// Image form: the command (a shell-like string, as clients send it).
    pub command: Option<String>,
    /// Free text handed to each task as its config file.
    pub config: Option<String>,
    pub env_vars: BTreeMap<String, String>,
    /// Tasks of this code running at once; `None` = unlimited.
    pub max_concurrency: Option<i64>,
    /// How many times a task that exits non-zero is run again.
    pub retries: i64,
    /// Seconds between such runs.
    pub retries_delay: i64,
    /// Priority for tasks that do not give one (0–2).
    pub default_priority: i64,
    /// What its tasks ask of the fleet, unless a task says otherwise.
    #[serde(default)]
    pub placement: berth_core::placement::PlacementSpec,
    /// The network its tasks run on (default: the host's bridge).
    #[serde(default)]
    pub network: Option<berth_core::network::NetworkMode>,
}

/// A code package to store with a revision.
#[derive(Debug, Clone, Copy)]
pub struct NewPackage<'a> {
    /// The zip as uploaded.
    pub data: &'a [u8],
    /// What it expands to (the sum of its files' sizes): what it costs on
    /// every agent that runs it, and what the project quota counts. `None`
    /// counts the zip's own size.
    pub unpacked_size: Option<i64>,
}

/// What a code upload is held to, and what the store keeps of a code.
///
/// Usage counts each distinct package the project's revisions reference
/// once, at its unpacked size (the zip's size for packages stored before
/// sizes were recorded), including revisions kept only because a task
/// still uses them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CodeLimits {
    /// Most bytes a project's packages may take, unpacked. `None`: no limit.
    pub max_project_package_bytes: Option<i64>,
    /// Revisions kept per code, newest first. Older ones (and packages no
    /// other revision uses) are deleted, except those a queued, preparing
    /// or running task still uses. `None`: every revision is kept.
    pub revisions_kept: Option<i64>,
}

/// What [`crate::Store::collect_garbage`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GarbageReport {
    pub revisions: u64,
    pub packages: u64,
}

/// One stored revision of a code: what was uploaded, numbered from 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeRevision {
    /// The code's id (stable across revisions).
    pub code_id: String,
    /// This revision's own id (IronWorker's `latest_history_id`).
    pub id: String,
    pub project_id: String,
    pub rev: i64,
    #[serde(flatten)]
    pub spec: NewCodeRevision,
    /// SHA-256 (hex) of the zip package, when one was uploaded.
    pub package_sha256: Option<String>,
    pub package_size: i64,
    pub created_at: Millis,
}

/// A code and its latest revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Code {
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub paused: bool,
    pub created_at: Millis,
    pub latest: CodeRevision,
}

/// Task counts of one code by status (`/codes/{id}/stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeStats {
    pub queued: i64,
    pub preparing: i64,
    pub running: i64,
    pub complete: i64,
    pub error: i64,
    pub cancelled: i64,
    pub killed: i64,
    pub timeout: i64,
}

/// Where a task is in its life. The last five are terminal: a task reaches
/// exactly one of them, once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Queued,
    Preparing,
    Running,
    Complete,
    Error,
    Cancelled,
    Timeout,
    Killed,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 8] = [
        TaskStatus::Queued,
        TaskStatus::Preparing,
        TaskStatus::Running,
        TaskStatus::Complete,
        TaskStatus::Error,
        TaskStatus::Cancelled,
        TaskStatus::Timeout,
        TaskStatus::Killed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Queued => "queued",
            TaskStatus::Preparing => "preparing",
            TaskStatus::Running => "running",
            TaskStatus::Complete => "complete",
            TaskStatus::Error => "error",
            TaskStatus::Cancelled => "cancelled",
            TaskStatus::Timeout => "timeout",
            TaskStatus::Killed => "killed",
        }
    }

    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            TaskStatus::Queued | TaskStatus::Preparing | TaskStatus::Running
        )
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| format!("unknown task status {s:?}"))
    }
}

/// A task to queue, already validated by the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTask {
    pub code_name: String,
    pub payload: String,
    /// `None` = the code's `default_priority`.
    pub priority: Option<i64>,
    /// Seconds.
    pub timeout: i64,
    /// Seconds before the task may start.
    pub delay: i64,
    pub cluster: Option<String>,
    pub label: Option<String>,
    pub schedule_id: Option<String>,
    /// Set by `/tasks/{id}/retry`: the task this one re-runs.
    pub original_task_id: Option<String>,
    /// What this task asks of the fleet beyond its code's defaults.
    pub placement: berth_core::placement::PlacementSpec,
}

/// A task as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    pub project_id: String,
    pub code_id: String,
    pub code_name: String,
    pub code_rev: i64,
    pub status: TaskStatus,
    /// Why the task ended as it did (empty while it runs or on success).
    pub msg: Option<String>,
    pub payload: String,
    pub priority: i64,
    pub timeout: i64,
    pub delay: i64,
    pub cluster: Option<String>,
    pub label: Option<String>,
    pub schedule_id: Option<String>,
    pub original_task_id: Option<String>,
    /// Runs after the first, for any reason (non-zero exit with `retries`,
    /// or an infrastructure fault).
    pub retry_count: i64,
    /// Infrastructure faults so far (bounded by the dispatcher).
    pub infra_failures: i64,
    pub percent: Option<i64>,
    pub exit_code: Option<i64>,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// The task may start from this moment (creation + delay, or a retry's
    /// delay).
    pub eligible_at: Millis,
    pub start_time: Option<Millis>,
    pub end_time: Option<Millis>,
    /// Attempts begun (the container of attempt N is named after it).
    pub attempt: i64,
    /// The agent running (or last to run) the current attempt.
    pub agent: Option<String>,
    pub cancel_requested: bool,
    /// What the task asks beyond its code's defaults.
    #[serde(default)]
    pub placement: berth_core::placement::PlacementSpec,
    /// What the dispatcher reserved for the current (or last) attempt.
    #[serde(default)]
    pub reserved: Option<berth_core::placement::TaskPlacement>,
    /// The name of the host of the current (or last) attempt.
    #[serde(default)]
    pub node_name: Option<String>,
}

/// Filters of `GET /tasks`. Empty `statuses` means every status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    pub code_name: Option<String>,
    pub statuses: Vec<TaskStatus>,
    /// Created at or after.
    pub from_time: Option<Millis>,
    /// Created at or before.
    pub to_time: Option<Millis>,
}

/// A page of a listing: `page` counts from 0, `per_page` is 1–100.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub page: i64,
    pub per_page: i64,
}

/// A task the dispatcher has claimed: now `preparing`, with its attempt
/// number already incremented and the agent recorded. Carries what is
/// needed to build the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedTask {
    pub task: Task,
    pub code: CodeRevision,
}

/// Where the dispatcher puts a task it may start (see
/// [`Store::claim_placed`](crate::Store::claim_placed)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlaceDecision {
    /// On this host, with this reservation.
    On {
        agent: String,
        node_name: String,
        reserved: berth_core::placement::TaskPlacement,
    },
    /// Nowhere now: it stays queued, with this reason in its `msg`.
    Waits { msg: String },
}

/// How an attempt ended, as decided by the dispatcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptEnd {
    /// The task is finished: `status` must be terminal.
    Finished {
        status: TaskStatus,
        msg: Option<String>,
        exit_code: Option<i64>,
        end_time: Millis,
        /// The attempt's output; stored as the task log.
        log: Vec<u8>,
    },
    /// Run it again from `eligible_at`. `infra` says whether the cause was
    /// an infrastructure fault (counted in `infra_failures` too).
    /// `retry_count` grows by one either way; `log` (if any) replaces the
    /// stored log so the last attempt's output stays readable.
    Requeue {
        eligible_at: Millis,
        infra: bool,
        msg: Option<String>,
        log: Option<Vec<u8>>,
    },
}

/// A cancel request's effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It was queued: now `cancelled`.
    Cancelled,
    /// It is preparing or running on `agent`; `cancel_requested` is set and
    /// the caller must stop container `container`.
    Requested { agent: String, container: String },
    /// It had already ended with this status; nothing changed.
    AlreadyFinished(TaskStatus),
}

/// What cancelling all of a code's tasks did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeCancel {
    /// Queued tasks now `cancelled`.
    pub cancelled: u64,
    /// Preparing and running tasks, now with `cancel_requested`: the caller
    /// must stop their containers.
    pub stops: Vec<TaskStop>,
}

/// A container to stop for a cancel request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskStop {
    pub task_id: String,
    pub agent: String,
    pub container: String,
}

/// What `POST /schedules` declares, validated by the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewSchedule {
    pub code_name: String,
    pub payload: String,
    pub start_at: Millis,
    /// Seconds between runs; `None` = run once at `start_at`.
    pub run_every: Option<i64>,
    /// Stop after this many runs.
    pub run_times: Option<i64>,
    /// Stop after this moment.
    pub end_at: Option<Millis>,
    pub priority: Option<i64>,
    pub timeout: i64,
    pub cluster: Option<String>,
    pub label: Option<String>,
}

/// `scheduled` while runs remain, `complete` when none do, `cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleStatus {
    Scheduled,
    Complete,
    Cancelled,
}

impl ScheduleStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleStatus::Scheduled => "scheduled",
            ScheduleStatus::Complete => "complete",
            ScheduleStatus::Cancelled => "cancelled",
        }
    }
}

impl FromStr for ScheduleStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            ScheduleStatus::Scheduled,
            ScheduleStatus::Complete,
            ScheduleStatus::Cancelled,
        ]
        .into_iter()
        .find(|status| status.as_str() == s)
        .ok_or_else(|| format!("unknown schedule status {s:?}"))
    }
}

/// A schedule as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub id: String,
    pub project_id: String,
    #[serde(flatten)]
    pub spec: NewSchedule,
    pub status: ScheduleStatus,
    /// When the next run is due (`None` once complete or cancelled).
    pub next_start: Option<Millis>,
    pub last_run_time: Option<Millis>,
    pub run_count: i64,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// The name of the container that runs attempt `attempt` of a task:
/// deterministic, so a restarted dispatcher finds it on its agent.
pub fn container_name(task_id: &str, attempt: i64) -> String {
    format!("task-{task_id}-{attempt}")
}

/// A project's overlay network: one layer-2 network across the fleet's
/// hosts (VXLAN), its addresses given out by the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayNetwork {
    pub project_id: String,
    pub name: String,
    /// The VXLAN network id, unique in the fleet and never given twice.
    pub vni: u32,
    pub subnet: ipnet::Ipv4Net,
    /// No way out: no NAT, no route to the hosts' other addresses.
    pub internal: bool,
    pub created_at: Millis,
}

/// An overlay network to make: the store picks the VNI, and the subnet
/// when none is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOverlay {
    pub name: String,
    pub subnet: Option<ipnet::Ipv4Net>,
    pub internal: bool,
}

/// A task on an overlay network now: its address there, and the host
/// running its current attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayMembership {
    pub project_id: String,
    pub network: String,
    pub vni: u32,
    pub subnet: ipnet::Ipv4Net,
    pub internal: bool,
    pub task_id: String,
    pub attempt: i64,
    /// The host's id (`tasks.agent`).
    pub agent: String,
    pub address: std::net::Ipv4Addr,
}
