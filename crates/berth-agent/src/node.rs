//! What the node has, what is promised, what is used.

use crate::state::AgentState;
use berth_api::{Allocated, Capacity, NodeView, Used};

pub fn view(agent: &AgentState) -> NodeView {
    let entries = agent.list();
    let live: Vec<_> = entries
        .iter()
        .filter(|e| !matches!(e.phase(), crate::record::Phase::Exited { .. }))
        .collect();
    let (disk_bytes, disk_free_bytes) = disk(&agent.config.data_dir);
    NodeView {
        hostname: rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned(),
        labels: agent.config.labels.clone(),
        capacity: Capacity {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            memory_bytes: total_memory().unwrap_or(0),
            memory_ceiling_bytes: agent.config.memory_ceiling,
            memory_pressure: agent.config.memory_pressure,
            disk_bytes,
            disk_free_bytes,
            pids: std::fs::read_to_string("/proc/sys/kernel/pid_max")
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0),
        },
        allocated: Allocated {
            containers: live.len(),
            memory_request_bytes: agent.allocated_memory(),
            cpus_millis: live
                .iter()
                .filter_map(|e| e.record().cpus_millis)
                .map(u64::from)
                .sum(),
        },
        used: Used {
            containers_running: entries.iter().filter(|e| e.is_running()).count(),
            metrics: agent.runtime.node_metrics().unwrap_or_default(),
        },
        images: agent
            .images
            .list()
            .map(|list| list.into_iter().map(|i| i.reference.to_string()).collect())
            .unwrap_or_default(),
        cgroups: agent.runtime.cgroups().describe(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    }
}

/// MemTotal from /proc/meminfo, in bytes.
pub fn total_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn disk(path: &std::path::Path) -> (u64, u64) {
    match rustix::fs::statvfs(path) {
        Ok(s) => (
            s.f_blocks.saturating_mul(s.f_frsize),
            s.f_bavail.saturating_mul(s.f_frsize),
        ),
        Err(_) => (0, 0),
    }
}
