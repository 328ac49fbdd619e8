//! Usage counters of a container's cgroups.

use super::files::{read_keyed, read_u64};
use super::{CgroupPaths, Controller};
use serde::{Deserialize, Serialize};

/// A snapshot of what a container has used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupStats {
    /// Current memory charge, in bytes.
    pub memory_usage: Option<u64>,
    /// Highest memory charge seen, in bytes.
    pub memory_peak: Option<u64>,
    /// Times the kernel's OOM killer killed a process of the container.
    pub oom_kills: u64,
    /// CPU time consumed (user + system), in nanoseconds.
    pub cpu_usage_ns: Option<u64>,
    /// Tasks currently in the container.
    pub pids_current: Option<u64>,
}

pub(super) fn read(paths: &CgroupPaths) -> CgroupStats {
    let mut stats = CgroupStats::default();
    if let Some(dir) = paths.dir_for(Controller::Memory) {
        if paths.is_v1(Controller::Memory) {
            stats.memory_usage = read_u64(&dir.join("memory.usage_in_bytes"));
            stats.memory_peak = read_u64(&dir.join("memory.max_usage_in_bytes"));
            stats.oom_kills = read_keyed(&dir.join("memory.oom_control"), "oom_kill").unwrap_or(0);
        } else {
            stats.memory_usage = read_u64(&dir.join("memory.current"));
            stats.memory_peak = read_u64(&dir.join("memory.peak"));
            stats.oom_kills = read_keyed(&dir.join("memory.events"), "oom_kill").unwrap_or(0);
        }
    }
    if let Some(dir) = paths.dir_for(Controller::Cpuacct) {
        stats.cpu_usage_ns = if paths.is_v1(Controller::Cpuacct) {
            read_u64(&dir.join("cpuacct.usage"))
        } else {
            read_keyed(&dir.join("cpu.stat"), "usage_usec").map(|us| us * 1000)
        };
    }
    if let Some(dir) = paths.dir_for(Controller::Pids) {
        stats.pids_current = read_u64(&dir.join("pids.current"));
    }
    stats
}
