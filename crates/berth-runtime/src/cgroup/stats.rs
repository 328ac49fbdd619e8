//! Usage counters of a container's cgroups: the few figures a finished
//! container's result needs, read with the same readers as
//! [`CgroupMetrics`](super::CgroupMetrics) but without the files only the
//! full metrics need (`memory.stat` is the costly one), since they are read
//! on every container's exit.

use super::metrics::{
    cpu_usage_ns, memory_peak, memory_usage, oom_counts, pids_current, ControllerDir,
};
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
    let memory = ControllerDir::of(paths, Controller::Memory);
    CgroupStats {
        memory_usage: memory.and_then(memory_usage),
        memory_peak: memory.and_then(memory_peak),
        oom_kills: memory.map_or(0, |m| oom_counts(m).1),
        cpu_usage_ns: ControllerDir::of(paths, Controller::Cpuacct).and_then(cpu_usage_ns),
        pids_current: ControllerDir::of(paths, Controller::Pids).and_then(pids_current),
    }
}
