//! `/metrics`: the node's and every running container's cgroup metrics in
//! the Prometheus text format (version 0.0.4).

use crate::state::AgentState;
use berth_core::ContainerId;
use berth_runtime::CgroupMetrics;
use std::fmt::Write;

/// One metric family: name, help, type, and how to read it.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    value: fn(&CgroupMetrics) -> Option<f64>,
}

fn opt(v: Option<u64>) -> Option<f64> {
    v.map(|v| v as f64)
}

const FAMILIES: &[Family] = &[
    Family {
        name: "memory_usage_bytes",
        help: "Memory charged to the cgroup.",
        kind: "gauge",
        value: |m| opt(m.memory_usage_bytes),
    },
    Family {
        name: "memory_working_set_bytes",
        help: "Memory usage minus inactive file cache.",
        kind: "gauge",
        value: |m| opt(m.memory_working_set_bytes),
    },
    Family {
        name: "memory_rss_bytes",
        help: "Anonymous memory.",
        kind: "gauge",
        value: |m| opt(m.memory_rss_bytes),
    },
    Family {
        name: "memory_cache_bytes",
        help: "Page cache.",
        kind: "gauge",
        value: |m| opt(m.memory_cache_bytes),
    },
    Family {
        name: "memory_swap_bytes",
        help: "Swap used.",
        kind: "gauge",
        value: |m| opt(m.memory_swap_bytes),
    },
    Family {
        name: "memory_peak_bytes",
        help: "Highest memory usage seen.",
        kind: "gauge",
        value: |m| opt(m.memory_peak_bytes),
    },
    Family {
        name: "memory_limit_bytes",
        help: "Memory limit (absent when unlimited).",
        kind: "gauge",
        value: |m| opt(m.memory_limit_bytes),
    },
    Family {
        name: "memory_oom_events_total",
        help: "Times the memory limit was hit.",
        kind: "counter",
        value: |m| Some(m.oom_events as f64),
    },
    Family {
        name: "memory_oom_kills_total",
        help: "Processes killed by the OOM killer.",
        kind: "counter",
        value: |m| Some(m.oom_kills as f64),
    },
    Family {
        name: "cpu_usage_seconds_total",
        help: "CPU time used.",
        kind: "counter",
        value: |m| m.cpu_usage_ns.map(|n| n as f64 / 1e9),
    },
    Family {
        name: "cpu_user_seconds_total",
        help: "CPU time used in user mode.",
        kind: "counter",
        value: |m| m.cpu_user_ns.map(|n| n as f64 / 1e9),
    },
    Family {
        name: "cpu_system_seconds_total",
        help: "CPU time used in kernel mode.",
        kind: "counter",
        value: |m| m.cpu_system_ns.map(|n| n as f64 / 1e9),
    },
    Family {
        name: "cpu_throttled_periods_total",
        help: "CFS periods in which the cgroup was throttled.",
        kind: "counter",
        value: |m| opt(m.cpu_throttled_periods),
    },
    Family {
        name: "cpu_throttled_seconds_total",
        help: "Time the cgroup was throttled.",
        kind: "counter",
        value: |m| m.cpu_throttled_ns.map(|n| n as f64 / 1e9),
    },
    Family {
        name: "pids_current",
        help: "Tasks in the cgroup.",
        kind: "gauge",
        value: |m| opt(m.pids_current),
    },
    Family {
        name: "pids_limit",
        help: "Task limit (absent when unlimited).",
        kind: "gauge",
        value: |m| opt(m.pids_limit),
    },
];

/// Renders the exposition: `berth_node_*` for all containers together and
/// `berth_container_*{id="…",image="…"}` per running container.
pub fn render(agent: &AgentState) -> String {
    let node = agent.runtime.node_metrics().unwrap_or_default();
    let containers: Vec<(String, String, CgroupMetrics)> = agent
        .list()
        .into_iter()
        .filter(|e| e.is_running())
        .filter_map(|e| {
            let id = ContainerId::new(e.id.clone()).ok()?;
            let metrics = agent.runtime.container_metrics(&id).ok()?;
            Some((e.id.clone(), e.record().image, metrics))
        })
        .collect();
    let mut out = String::new();
    for family in FAMILIES {
        let name = format!("berth_node_{}", family.name);
        if let Some(v) = (family.value)(&node) {
            header(&mut out, &name, family);
            let _ = writeln!(out, "{name} {v}");
        }
        let name = format!("berth_container_{}", family.name);
        let mut first = true;
        for (id, image, metrics) in &containers {
            if let Some(v) = (family.value)(metrics) {
                if first {
                    header(&mut out, &name, family);
                    first = false;
                }
                let _ = writeln!(
                    out,
                    "{name}{{id=\"{}\",image=\"{}\"}} {v}",
                    escape(id),
                    escape(image)
                );
            }
        }
    }
    let live = agent.list().iter().filter(|e| e.is_running()).count();
    let _ = writeln!(
        out,
        "# HELP berth_node_containers_running Containers running."
    );
    let _ = writeln!(out, "# TYPE berth_node_containers_running gauge");
    let _ = writeln!(out, "berth_node_containers_running {live}");
    let _ = writeln!(
        out,
        "# HELP berth_node_memory_requested_bytes Sum of the memory requests of live containers."
    );
    let _ = writeln!(out, "# TYPE berth_node_memory_requested_bytes gauge");
    let _ = writeln!(
        out,
        "berth_node_memory_requested_bytes {}",
        agent.allocated_memory()
    );
    out
}

fn header(out: &mut String, name: &str, family: &Family) {
    let _ = writeln!(out, "# HELP {name} {}", family.help);
    let _ = writeln!(out, "# TYPE {name} {}", family.kind);
}

/// Label values escape backslash, quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
