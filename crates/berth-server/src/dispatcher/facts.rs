//! What placement reads of the fleet's hosts, fingerprinted, to tell
//! whether a read of the hosts changed anything for placement (see
//! `hosts::refresh`).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// What placement depends on of each host (its state, labels, what it
/// offers, its images), fingerprinted: a fleet of thousands is read every
/// heartbeat interval, and its reports change with every container (what
/// is used and allocated), which placement takes from the store instead.
#[derive(Default)]
pub(crate) struct PlacementFacts {
    /// Host id → the hash of its last report and the fingerprint of what
    /// placement reads of it (hashes, not the reports: 10,000 of them are
    /// megabytes to copy each read).
    reports: HashMap<String, (u64, u64)>,
    fingerprint: Option<u64>,
    /// A change not yet taken into the leader's snapshot, or when it was
    /// last rebuilt.
    snapshot_stale: bool,
    snapshot_built: Option<std::time::Instant>,
}

impl PlacementFacts {
    /// Takes `nodes` in; true when they differ for placement from the last.
    pub(crate) fn note(&mut self, nodes: &[berth_store::Node]) -> bool {
        let mut reports = HashMap::with_capacity(nodes.len());
        let mut fleet = std::hash::DefaultHasher::new();
        for node in nodes {
            let report = {
                let mut hasher = std::hash::DefaultHasher::new();
                node.report.hash(&mut hasher);
                hasher.finish()
            };
            let facts = match self.reports.remove(&node.id) {
                Some((known, facts)) if known == report => facts,
                _ => report_facts(&node.report),
            };
            (
                &node.id,
                &node.name,
                node.down,
                node.drained,
                &node.operator_labels,
                facts,
            )
                .hash(&mut fleet);
            reports.insert(node.id.clone(), (report, facts));
        }
        self.reports = reports;
        let fingerprint = Some(fleet.finish());
        let changed = fingerprint != self.fingerprint;
        self.fingerprint = fingerprint;
        self.snapshot_stale |= changed;
        changed
    }

    /// Whether the leader's snapshot is to be rebuilt: the hosts changed
    /// since it was, or it is older than `resync`. Answering true counts as
    /// rebuilt.
    pub(crate) fn snapshot_due(&mut self, resync: std::time::Duration) -> bool {
        let due =
            self.snapshot_stale || self.snapshot_built.is_none_or(|at| at.elapsed() >= resync);
        if due {
            self.snapshot_stale = false;
            self.snapshot_built = Some(std::time::Instant::now());
        }
        due
    }
}

/// The fingerprint of what placement reads of a host's report: what it
/// offers, its labels and images (not what is used or allocated now).
fn report_facts(report: &str) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    match serde_json::from_str::<berth_api::fleet::HostReport>(report) {
        Ok(report) => {
            report.allocatable.hash(&mut hasher);
            report.labels.hash(&mut hasher);
            report.images.hash(&mut hasher);
        }
        // Placement leaves such a host out; any other text is a change.
        Err(_) => report.hash(&mut hasher),
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    fn node(used_containers: u64, label: &str) -> berth_store::Node {
        let report = json!({
            "capacity": {"cpus": 4, "memory_bytes": 8u64 << 30, "memory_ceiling_bytes": 8u64 << 30,
                         "memory_pressure": 0.9, "disk_bytes": 1u64 << 40, "disk_free_bytes": 1u64 << 39,
                         "pids": 100_000},
            "allocatable": {"cpu_millis": 4000, "memory_bytes": 4u64 << 30,
                            "disk_bytes": 1u64 << 39, "pids": 50_000},
            "allocated": {},
            "used": {"containers_running": used_containers, "metrics": {"oom_events": 0, "oom_kills": 0}},
            "images": [], "labels": {"zone": label}, "version": "test"
        });
        berth_store::Node {
            id: "id-h1".into(),
            name: "h1".into(),
            address: "http://127.0.0.1:1".into(),
            credential: "c".into(),
            drained: false,
            down: false,
            operator_labels: Default::default(),
            report: report.to_string(),
            joined_at: 0,
            last_heartbeat: 0,
        }
    }

    /// What is used now is no change for placement; a label, a drain or a
    /// host going down is, and makes the snapshot due once.
    #[test]
    fn only_what_placement_reads_is_a_change() {
        let mut facts = PlacementFacts::default();
        assert!(facts.note(&[node(0, "a")]), "the first read is a change");
        assert!(facts.snapshot_due(Duration::from_secs(30)));
        assert!(!facts.note(&[node(7, "a")]), "containers running changed");
        assert!(!facts.snapshot_due(Duration::from_secs(30)));
        assert!(facts.note(&[node(7, "b")]), "a label changed");
        let mut drained = node(7, "b");
        drained.drained = true;
        assert!(facts.note(&[drained]));
        assert!(facts.snapshot_due(Duration::from_secs(30)));
        assert!(!facts.snapshot_due(Duration::from_secs(30)), "due once");
        assert!(facts.snapshot_due(Duration::ZERO), "and again when old");
        assert!(facts.note(&[]), "a host gone");
    }
}
