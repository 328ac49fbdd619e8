//! The server's settings.

use std::time::Duration;

/// Settings of `berth server` (flags and `BERTH_*` variables map onto them).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest task payload in bytes (IronWorker: 64 KB).
    pub max_payload_bytes: usize,
    /// Largest code package (zip) in bytes.
    pub max_package_bytes: usize,
    /// Most bytes one project's code packages may take, unpacked (each
    /// distinct package its kept revisions reference, once); `None`: no
    /// limit. An upload over it is refused with 413.
    pub max_project_package_bytes: Option<u64>,
    /// Revisions kept per code (newest first; revisions a queued or
    /// running task uses are kept too); `None`: all.
    pub code_revisions_kept: Option<u32>,
    /// Largest JSON request body in bytes (a batch of tasks).
    pub max_json_bytes: usize,
    /// Tasks in one `POST /tasks`.
    pub max_tasks_per_request: usize,
    /// Longest task timeout, and the default (seconds).
    pub max_timeout_secs: i64,
    /// Longest task delay (seconds; IronWorker: 7 days).
    pub max_delay_secs: i64,
    /// Shortest `run_every` of a schedule (seconds; IronWorker: 60).
    pub min_schedule_interval_secs: i64,
    /// What every task's container gets.
    pub task: TaskDefaults,
    /// Tasks one agent runs at once.
    pub max_tasks_per_agent: usize,
    /// Infrastructure faults a task may meet before it ends in `error`.
    pub max_infra_retries: i64,
    /// How long an agent may stay unreachable before the tasks it was
    /// running are run again elsewhere.
    pub agent_lost_after: Duration,
    /// The task API's connection cap and timeouts.
    pub connections: berth_http::Limits,
    /// How hosts join and keep in touch.
    pub fleet: crate::fleet::FleetConfig,
    /// This server, as the others sharing the store see it.
    pub identity: crate::leadership::ServerIdentity,
    /// How the dispatch lease is held.
    pub lease: crate::leadership::LeaseConfig,
}

/// Limits and sizes of task containers.
#[derive(Debug, Clone)]
pub struct TaskDefaults {
    /// Memory limit (bytes); the container is OOM-killed above it.
    pub memory: u64,
    /// Memory the agent reserves for it (bytes).
    pub memory_request: u64,
    /// Processes and threads.
    pub pids: u64,
    /// Cap on the task log (bytes).
    pub log_max_bytes: u64,
}

impl Default for TaskDefaults {
    fn default() -> Self {
        TaskDefaults {
            memory: 512 * 1024 * 1024,
            memory_request: 32 * 1024 * 1024,
            pids: 1024,
            log_max_bytes: 8 * 1024 * 1024,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_payload_bytes: 64 * 1024,
            max_package_bytes: 64 * 1024 * 1024,
            max_project_package_bytes: Some(DEFAULT_MAX_PROJECT_PACKAGE_BYTES),
            code_revisions_kept: Some(DEFAULT_CODE_REVISIONS_KEPT),
            max_json_bytes: 8 * 1024 * 1024,
            max_tasks_per_request: 1000,
            max_timeout_secs: 3600,
            max_delay_secs: 7 * 24 * 3600,
            min_schedule_interval_secs: 60,
            task: TaskDefaults::default(),
            max_tasks_per_agent: 256,
            max_infra_retries: 5,
            agent_lost_after: Duration::from_secs(60),
            connections: berth_http::Limits::DEFAULT,
            fleet: crate::fleet::FleetConfig::default(),
            identity: crate::leadership::ServerIdentity::default(),
            lease: crate::leadership::LeaseConfig::default(),
        }
    }
}

/// Default of [`ServerConfig::max_project_package_bytes`]: 2 GiB unpacked,
/// room for eight of the largest packages (64 MiB zips that expand 4×) or
/// hundreds of ordinary ones; an agent stores each about twice (the layer
/// blob and its unpacked files).
pub const DEFAULT_MAX_PROJECT_PACKAGE_BYTES: u64 = 2 << 30;
/// Default of [`ServerConfig::code_revisions_kept`].
pub const DEFAULT_CODE_REVISIONS_KEPT: u32 = 10;

impl ServerConfig {
    /// What the store holds code uploads to.
    pub fn code_limits(&self) -> berth_store::CodeLimits {
        berth_store::CodeLimits {
            max_project_package_bytes: self
                .max_project_package_bytes
                .map(|bytes| i64::try_from(bytes).unwrap_or(i64::MAX)),
            revisions_kept: self.code_revisions_kept.map(i64::from),
        }
    }

    pub fn max_timeout(&self) -> Duration {
        Duration::from_secs(self.max_timeout_secs as u64)
    }
}
