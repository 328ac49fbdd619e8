//! `/v1/node`: what the node has, what is promised, what is used.

use crate::host;
use crate::record::Phase;
use crate::state::AgentState;
use berth_api::{Allocated, Capacity, NodeView, Used};

/// The node as `/v1/node` describes it.
pub fn view(agent: &AgentState) -> NodeView {
    let entries = agent.list();
    let live: Vec<_> = entries
        .iter()
        .filter(|e| !matches!(e.phase(), Phase::Exited { .. }))
        .collect();
    let (disk_bytes, disk_free_bytes) = host::disk(&agent.config.data_dir);
    NodeView {
        hostname: host::hostname(),
        labels: agent.config.labels.clone(),
        capacity: Capacity {
            cpus: host::cpus(),
            memory_bytes: host::total_memory().unwrap_or(0),
            memory_ceiling_bytes: agent.config.memory_ceiling,
            memory_pressure: agent.config.memory_pressure,
            disk_bytes,
            disk_free_bytes,
            pids: host::pid_max(),
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
