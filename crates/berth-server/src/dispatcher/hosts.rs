//! The fleet's hosts as the dispatcher drives them: read from the store,
//! silent ones marked down, one agent handle per live host.
//!
//! A host marked down is lost: attempts waiting on it stop waiting and are
//! run again elsewhere as system retries (see `attempt::watch`); the store's
//! conditional transitions make sure each attempt ends once, whichever
//! server or watcher gets there first. When the host comes back, its sweep
//! removes the containers of attempts that ended meanwhile.

use super::placement::{default_placement, Placer};
use super::shared::Shared;
use crate::dispatch::AgentHandle;
use berth_api::{AgentClient, Endpoint};
use berth_core::time::now_millis;
use std::collections::HashMap;
use std::sync::Arc;

/// Marks silent hosts down and rebuilds the agent handles from the store.
/// Handles of hosts that did not change are kept (their slots and image
/// cache with them); those of hosts gone or down are marked lost.
pub(super) async fn refresh(shared: &Shared) -> Result<(), berth_store::StoreError> {
    let down_after = i64::try_from(shared.config.fleet.down_after.as_millis()).unwrap_or(i64::MAX);
    for node in shared
        .store
        .mark_silent_nodes_down(now_millis().saturating_sub(down_after))
        .await?
    {
        tracing::warn!(node = %node.name, id = %node.id, "host missed its heartbeats: marked down");
    }
    let nodes = shared.store.nodes().await?;
    let current = shared.dispatch.agents();
    let mut by_name: HashMap<&str, &Arc<AgentHandle>> =
        current.iter().map(|a| (a.name.as_str(), a)).collect();
    // The agents given with --agent stay as they are.
    let mut next: Vec<Arc<AgentHandle>> =
        current.iter().filter(|a| !a.from_fleet).cloned().collect();
    for node in &nodes {
        let existing = by_name.remove(node.id.as_str());
        if node.down {
            if let Some(handle) = existing {
                handle.set_lost(true);
            }
            continue;
        }
        let client = || -> Option<AgentClient> {
            match Endpoint::parse(&node.address) {
                Ok(endpoint) => Some(AgentClient::new(endpoint, Some(node.credential.clone()))),
                Err(e) => {
                    tracing::error!(node = %node.name, "host address {:?}: {e}", node.address);
                    None
                }
            }
        };
        let handle = match existing {
            // A rejoin at another address (or with another credential) is
            // the same host: attempts under way carry on through the new one.
            Some(handle) => {
                if !handle.reached_at(&node.address, &node.credential) {
                    let Some(client) = client() else { continue };
                    tracing::info!(node = %node.name, address = %node.address, "host reached at a new address");
                    handle.reach_at(client, &node.address, &node.credential);
                }
                handle.clone()
            }
            None => {
                let Some(client) = client() else { continue };
                Arc::new(AgentHandle::of_host(
                    node,
                    client,
                    shared.config.max_tasks_per_agent,
                ))
            }
        };
        handle.set_lost(false);
        handle.set_accepts_work(!node.drained);
        next.push(handle);
    }
    // Hosts removed from the fleet.
    for gone in by_name.into_values().filter(|a| a.from_fleet) {
        gone.set_lost(true);
    }
    shared.dispatch.set_agents(next);
    // The placement snapshot, from the store's truth: held while the
    // active tasks are read, so that no claim falls between.
    let mut placer = shared.placer.lock().await;
    let active = shared.store.active_tasks().await?;
    let pools = shared.store.pools().await?;
    *placer = Placer::build(
        &nodes,
        &active,
        &pools,
        default_placement(&shared.config.task),
    );
    if let Some(capacity) = placer.capacity() {
        shared.dispatch.set_capacity(std::sync::Arc::new(capacity));
    }
    Ok(())
}

/// Refreshes the hosts every heartbeat interval, and at once when the fleet
/// API says something changed. Never returns.
pub(super) async fn watch_forever(shared: Arc<Shared>) {
    loop {
        if let Err(e) = refresh(&shared).await {
            tracing::error!("reading the fleet's hosts: {e}");
        }
        tokio::select! {
            _ = shared.dispatch.fleet.notified() => {}
            _ = tokio::time::sleep(shared.config.fleet.heartbeat_interval) => {}
        }
    }
}
