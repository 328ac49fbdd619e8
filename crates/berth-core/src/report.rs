//! What a container did and used: the result of a finished container and
//! resource-use snapshots of cgroups. Filled in by the runtime, carried by
//! the agent's API, read by the CLI and the control plane; and the summary
//! of a stored image.

use crate::ImageRef;
use serde::{Deserialize, Serialize};

/// What a finished container did and used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ContainerResult {
    pub id: String,
    /// The process's exit code, if it exited.
    pub exit_code: Option<i32>,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    pub oom_killed: bool,
    pub timed_out: bool,
    pub wall_time_ms: f64,
    pub cpu_time_ms: Option<f64>,
    pub peak_memory_bytes: Option<u64>,
    /// Time to tear everything down after the process ended.
    pub teardown_ms: f64,
}

impl ContainerResult {
    /// The exit code a CLI should return for this container.
    pub fn shell_code(&self) -> i32 {
        match (self.exit_code, self.signal) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            (None, None) => 125,
        }
    }
}

/// A snapshot of a cgroup's resource use. `None` = the host does not
/// expose it.
///
/// Memory and CPU figures are hierarchical: a cgroup's figures include
/// its descendants' (v1 `total_*` keys of `memory.stat`, `cpuacct.*`; v2
/// files are hierarchical anyway). The exceptions are noted per field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CgroupMetrics {
    /// Memory charged to the cgroup: anonymous memory, page cache, kernel
    /// memory. v1 `memory.usage_in_bytes` (the kernel documents it as
    /// approximate, batched per CPU), v2 `memory.current`.
    pub memory_usage_bytes: Option<u64>,
    /// Usage minus inactive file pages (saturating at zero): memory the
    /// kernel could not simply drop under pressure. The figure cAdvisor and
    /// the kubelet call the working set. v1 `total_inactive_file`, v2
    /// `inactive_file` of `memory.stat`.
    pub memory_working_set_bytes: Option<u64>,
    /// Anonymous memory. v1 `total_rss` of `memory.stat` (it already
    /// includes transparent huge pages, `total_rss_huge` is a subset), v2
    /// `anon` (which includes `anon_thp` likewise).
    pub memory_rss_bytes: Option<u64>,
    /// Page cache, including tmpfs and shared memory. v1 `total_cache`, v2
    /// `file` of `memory.stat`.
    pub memory_cache_bytes: Option<u64>,
    /// Memory swapped out. v1 `total_swap` of `memory.stat` (only with swap
    /// accounting), v2 `memory.swap.current`.
    pub memory_swap_bytes: Option<u64>,
    /// Highest usage seen. v1 `memory.max_usage_in_bytes`, v2 `memory.peak`
    /// (Linux 5.19+).
    pub memory_peak_bytes: Option<u64>,
    /// The cgroup's own memory limit (an ancestor's may be lower); `None`
    /// when unlimited. v1 `memory.limit_in_bytes`, v2 `memory.max`.
    pub memory_limit_bytes: Option<u64>,
    /// Times the cgroup's memory limit was reached and an allocation was
    /// about to fail. v2: `oom` of `memory.events`. v1 has no such counter:
    /// this is `oom_kill + under_oom` of `memory.oom_control`, i.e. the
    /// kills, plus one while an OOM is in progress and has not killed yet
    /// (an OOM that ends without a kill is not counted). On v1 the kernel
    /// does not propagate memory events to ancestors, so a parent cgroup
    /// counts only its own.
    pub oom_events: u64,
    /// Processes of the cgroup killed by an OOM killer (the cgroup's or
    /// the host's). v1 `oom_kill` of `memory.oom_control` (Linux 4.13+),
    /// v2 `oom_kill` of `memory.events`. Not propagated to ancestors on v1.
    pub oom_kills: u64,
    /// CPU time used, in nanoseconds. v1 `cpuacct.usage`, v2 `usage_usec`
    /// of `cpu.stat`.
    pub cpu_usage_ns: Option<u64>,
    /// CPU time in user mode, in nanoseconds. v1 `user` of `cpuacct.stat`
    /// (USER_HZ ticks, so a 10 ms resolution), v2 `user_usec` of `cpu.stat`.
    pub cpu_user_ns: Option<u64>,
    /// CPU time in kernel mode, in nanoseconds. v1 `system` of
    /// `cpuacct.stat`, v2 `system_usec` of `cpu.stat`.
    pub cpu_system_ns: Option<u64>,
    /// CFS periods in which the cgroup ran out of its quota: `nr_throttled`
    /// of `cpu.stat` (v1 cpu controller, v2 with the cpu controller
    /// enabled). Counts the cgroup's own quota only, not its descendants'.
    pub cpu_throttled_periods: Option<u64>,
    /// Time the cgroup spent throttled, in nanoseconds: v1 `throttled_time`,
    /// v2 `throttled_usec` of `cpu.stat`. Own quota only, as above.
    pub cpu_throttled_ns: Option<u64>,
    /// Tasks (threads) in the cgroup and its descendants: `pids.current`.
    pub pids_current: Option<u64>,
    /// The cgroup's own task limit, `pids.max`; `None` when `max`.
    pub pids_limit: Option<u64>,
}

/// One tagged image, as `berth images` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImageSummary {
    pub reference: ImageRef,
    /// `sha256:<hex>` of the config blob.
    pub id: String,
    /// Number of layers in the image's manifest.
    pub layers: usize,
    /// Sum of the image's **layer blob sizes** as stored in `blobs/` (that is,
    /// compressed where the layer was imported compressed), from the manifest,
    /// so listing never walks a directory. Layers shared between images count
    /// in each of them.
    pub size_bytes: u64,
    /// The `created` time recorded in the image config (RFC 3339), if any.
    pub created: Option<String>,
}
