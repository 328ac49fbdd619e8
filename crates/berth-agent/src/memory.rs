//! Elastic memory: containers are promised their request and may burst up
//! to their limit while the node has room. When the containers' working
//! sets together cross `memory_pressure × memory_ceiling`, the agent kills
//! the container that is furthest above its request, and only such a
//! container: one within its request is never chosen.
//!
//! Usage is the working set (usage − inactive file cache, as the kubelet
//! counts it): cold page cache is reclaimable and must not get a container
//! killed.

use crate::clock::now_ms;
use crate::events::EventKind;
use crate::record::{Entry, MEMORY_PRESSURE};
use crate::state::AgentState;
use berth_api::KillReason;
use berth_core::ContainerId;
use std::sync::Arc;

/// A condemned container still running this long after its kill is
/// killed again.
const RETRY_KILL_AFTER_MS: u64 = 5_000;

/// One container's standing at a sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub id: String,
    pub working_set: u64,
    pub request: u64,
    /// Already being killed by the policy: not counted twice.
    pub condemned: bool,
}

/// The decision of one sample: whom to kill, if anyone, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub id: String,
    pub message: String,
}

/// Pure policy: given the samples, the ceiling and the threshold fraction,
/// the container to kill. Containers already condemned no longer count
/// toward the total (their memory is about to be freed).
pub fn choose_victim(samples: &[Sample], ceiling: u64, pressure: f64) -> Option<Verdict> {
    let threshold = (ceiling as f64 * pressure) as u64;
    let total: u64 = samples
        .iter()
        .filter(|s| !s.condemned)
        .map(|s| s.working_set)
        .sum();
    if total <= threshold {
        return None;
    }
    let victim = samples
        .iter()
        .filter(|s| !s.condemned && s.working_set > s.request)
        .max_by_key(|s| s.working_set - s.request)?;
    Some(Verdict {
        id: victim.id.clone(),
        message: format!(
            "node memory pressure: containers use {total} bytes, above {threshold} ({:.0}% of the {ceiling}-byte ceiling); this container used {} bytes, {} above its request of {}",
            pressure * 100.0,
            victim.working_set,
            victim.working_set - victim.request,
            victim.request
        ),
    })
}

/// Samples every `memory_interval` and acts on the verdict.
pub fn spawn_policy(agent: Arc<AgentState>) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(agent.config.memory_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let this = agent.clone();
            let verdict = tokio::task::spawn_blocking(move || {
                if !node_near_threshold(&this) {
                    return None;
                }
                let running: Vec<Arc<Entry>> =
                    this.list().into_iter().filter(|e| e.is_running()).collect();
                let samples: Vec<Sample> =
                    running.iter().filter_map(|e| sample(&this, e)).collect();
                choose_victim(
                    &samples,
                    this.config.memory_ceiling,
                    this.config.memory_pressure,
                )
            })
            .await;
            if let Ok(Some(verdict)) = verdict {
                enforce(&agent, verdict).await;
            }
        }
    });
}

/// One read of the cgroup parent (all containers together) decides
/// whether the per-container sample is needed: reading every container's
/// files each tick costs a third of a CPU with 1,000 containers. Within
/// 5% of the threshold, or when the parent cannot be read, sample all.
fn node_near_threshold(agent: &AgentState) -> bool {
    let threshold = agent.config.memory_ceiling as f64 * agent.config.memory_pressure;
    match agent.runtime.node_metrics() {
        Ok(node) => match node.memory_working_set_bytes.or(node.memory_usage_bytes) {
            Some(total) => total as f64 >= threshold * 0.95,
            None => true,
        },
        Err(_) => true,
    }
}

fn sample(agent: &AgentState, entry: &Entry) -> Option<Sample> {
    let id = ContainerId::new(entry.id.clone()).ok()?;
    let metrics = agent.runtime.container_metrics(&id).ok()?;
    let record = entry.record();
    Some(Sample {
        id: entry.id.clone(),
        working_set: metrics
            .memory_working_set_bytes
            .or(metrics.memory_usage_bytes)?,
        request: record.memory_request,
        condemned: record.kill_reason.as_ref().is_some_and(|r| {
            // A kill that has not taken effect within the window is
            // retried: the container counts (and can be chosen) again.
            r.reason == MEMORY_PRESSURE && now_ms().saturating_sub(r.at) < RETRY_KILL_AFTER_MS
        }),
    })
}

async fn enforce(agent: &Arc<AgentState>, verdict: Verdict) {
    let Ok(entry) = agent.get(&verdict.id) else {
        return;
    };
    let reason = KillReason {
        reason: MEMORY_PRESSURE.into(),
        message: verdict.message,
        at: now_ms(),
    };
    tracing::warn!(id = %entry.id, "{}", reason.message);
    // The reason is on disk before the kill, so no restart can lose it.
    if let Err(e) = entry.set_kill_reason(reason) {
        tracing::warn!(id = %entry.id, "{e}");
    }
    match crate::shim::kill(&entry.dir, libc::SIGKILL).await {
        Ok(()) => agent.events.ensure(
            &entry.id,
            EventKind::MemoryKilled,
            serde_json::json!(entry.record().kill_reason),
        ),
        Err(e) => tracing::warn!(id = %entry.id, "killing for memory pressure: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(id: &str, ws: u64, request: u64) -> Sample {
        Sample {
            id: id.into(),
            working_set: ws,
            request,
            condemned: false,
        }
    }

    #[test]
    fn nobody_dies_below_the_threshold() {
        let samples = [s("a", 50, 10), s("b", 30, 40)];
        assert_eq!(choose_victim(&samples, 100, 0.9), None);
    }

    #[test]
    fn the_one_furthest_above_its_request_dies() {
        let samples = [s("a", 40, 30), s("b", 35, 10), s("c", 20, 50)];
        let verdict = choose_victim(&samples, 100, 0.9).expect("a victim");
        assert_eq!(verdict.id, "b");
        assert!(verdict.message.contains("25 above its request of 10"));
    }

    #[test]
    fn containers_within_their_request_are_never_chosen() {
        let samples = [s("a", 60, 60), s("b", 40, 50)];
        assert_eq!(choose_victim(&samples, 100, 0.5), None);
    }

    #[test]
    fn a_condemned_container_is_not_killed_twice() {
        let mut doomed = s("a", 80, 10);
        doomed.condemned = true;
        let samples = [doomed, s("b", 15, 10)];
        assert_eq!(choose_victim(&samples, 100, 0.9), None);
    }
}
