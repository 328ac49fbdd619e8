//! The state every API handler shares: the agent's settings, runtime,
//! image store, event log and its table of containers (looked up, listed,
//! and deleted here; filled by `create` and `recover`).

use crate::config::AgentConfig;
use crate::error::ApiError;
use crate::events::{EventKind, EventLog};
use crate::record::{lock, Entry, Phase};
use berth_agent_dir::AgentLock;
use berth_core::ErrorCode;
use berth_image::ImageStore;
use berth_runtime::Runtime;
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::sync::{Arc, RwLock};

/// Everything the API handlers share.
pub struct AgentState {
    pub config: AgentConfig,
    pub runtime: Runtime,
    pub images: ImageStore,
    pub events: EventLog,
    /// The host's container networks.
    pub networks: berth_net::Networks,
    /// The fleet's overlay networks on this host.
    pub(crate) overlays: crate::overlay::FleetOverlays,
    /// Every container the agent knows, by id.
    pub(crate) containers: RwLock<BTreeMap<String, Arc<Entry>>>,
    /// Image imports and removals one at a time (the store is safe across
    /// processes; this keeps one agent's uploads from racing its removals).
    pub image_lock: tokio::sync::Mutex<()>,
    /// Held for the agent's life: one agent per data dir.
    _agent_lock: AgentLock,
}

impl AgentState {
    /// The state of an agent that holds `agent_lock`, with no containers
    /// yet (`recover` finds them).
    pub(crate) fn new(
        config: AgentConfig,
        runtime: Runtime,
        images: ImageStore,
        events: EventLog,
        networks: berth_net::Networks,
        agent_lock: AgentLock,
    ) -> AgentState {
        AgentState {
            config,
            runtime,
            images,
            events,
            networks,
            overlays: Default::default(),
            containers: RwLock::new(BTreeMap::new()),
            image_lock: tokio::sync::Mutex::new(()),
            _agent_lock: agent_lock,
        }
    }

    pub fn get(&self, id: &str) -> Result<Arc<Entry>, ApiError> {
        read(&self.containers)
            .get(id)
            .cloned()
            .ok_or_else(|| ApiError::no_container(id))
    }

    pub fn list(&self) -> Vec<Arc<Entry>> {
        read(&self.containers).values().cloned().collect()
    }

    /// Sum of the memory requests of containers that are not finished.
    pub fn allocated_memory(&self) -> u64 {
        requested_memory(&read(&self.containers))
    }

    /// Drops a container: its entry, state dir and image lease. False if
    /// this incarnation was already gone (a concurrent delete won).
    pub(crate) fn forget(&self, entry: &Entry) -> bool {
        {
            let mut containers = write(&self.containers);
            // Only this incarnation: a new container may have taken the id.
            let current = containers
                .get(&entry.id)
                .is_some_and(|c| std::ptr::eq(Arc::as_ptr(c), entry));
            if !current {
                return false;
            }
            containers.remove(&entry.id);
        }
        if let Err(e) = fs::remove_dir_all(entry.dir.path()) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(id = %entry.id, "removing the state dir: {e}");
            }
        }
        if let Err(e) = self.images.release(&entry.id) {
            tracing::warn!(id = %entry.id, "releasing the image lease: {e}");
        }
        true
    }

    /// Removes a finished container: its state dir, lease and entry.
    pub fn delete(&self, entry: &Arc<Entry>) -> Result<(), ApiError> {
        if !matches!(entry.phase(), Phase::Exited { .. }) {
            return Err(ApiError::new(
                ErrorCode::InvalidState,
                format!(
                    "container {} is still running; stop it first or use force=true",
                    entry.id
                ),
            ));
        }
        if !self.forget(entry) {
            return Err(ApiError::no_container(&entry.id));
        }
        self.events
            .push(&entry.id, EventKind::Deleted, serde_json::Value::Null);
        Ok(())
    }
}

/// Sum of the memory requests of containers that are not finished.
pub(crate) fn requested_memory(containers: &BTreeMap<String, Arc<Entry>>) -> u64 {
    containers
        .values()
        .filter(|e| !matches!(*e.phase.borrow(), Phase::Exited { .. }))
        .map(|e| lock(&e.record).memory_request)
        .sum()
}

pub(crate) fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}
