//! What the host has, read from the kernel: its name, CPUs, memory, the
//! disk under a path and the pid limit. No agent state.

use std::path::Path;

/// The host's name (uname's nodename).
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// The CPUs this process may use (at least 1).
pub fn cpus() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// MemTotal from /proc/meminfo, in bytes.
pub fn total_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The size and the free space (for unprivileged users) of the filesystem
/// holding `path`, in bytes; zeros if it cannot be read.
pub fn disk(path: &Path) -> (u64, u64) {
    match rustix::fs::statvfs(path) {
        Ok(s) => (
            s.f_blocks.saturating_mul(s.f_frsize),
            s.f_bavail.saturating_mul(s.f_frsize),
        ),
        Err(_) => (0, 0),
    }
}

/// The kernel's pid limit (`kernel.pid_max`); 0 if it cannot be read.
pub fn pid_max() -> u64 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}
