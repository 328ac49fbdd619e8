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
use crate::config::ServerConfig;
use crate::dispatch::{AgentHandle, Dispatch};
use berth_api::{AgentClient, Endpoint};
use berth_core::time::now_millis;
use berth_store::{Node, Store};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How often the leader rebuilds its placement snapshot from the store
/// when the hosts did not change.
const RESYNC_EVERY: Duration = Duration::from_secs(30);

/// The leader's refresh: marks silent hosts down (a fenced write), reads the
/// hosts, and rebuilds the placement snapshot from the store's truth when
/// it is due (`force`: at once, as a term begins).
///
/// The snapshot follows placements and ends as they happen; it is rebuilt
/// when the hosts or the pools changed for placement, and every
/// [`RESYNC_EVERY`] against drift. (Rebuilt every heartbeat interval, a
/// fleet of thousands cost the leader a fifth of its CPU.)
pub(super) async fn refresh(shared: &Shared, force: bool) -> Result<(), berth_store::StoreError> {
    let down_after = shared
        .config
        .fleet
        .down_after_for(shared.dispatch.fleet_size());
    let down_after = i64::try_from(down_after.as_millis()).unwrap_or(i64::MAX);
    for node in shared
        .store
        .mark_silent_nodes_down(now_millis().saturating_sub(down_after))
        .await?
    {
        tracing::warn!(node = %node.name, id = %node.id, "host missed its heartbeats: marked down");
    }
    let nodes = read_fleet(&shared.store, &shared.dispatch, &shared.config).await?;
    let pools = shared.store.pools().await?;
    let pools_changed = !shared.placer.lock().await.has_pools(&pools);
    // Asked every time: a rebuild, whatever its cause, resets the clock.
    let due = shared.dispatch.snapshot_due(RESYNC_EVERY);
    if !(force || pools_changed || due) {
        return Ok(());
    }
    // Held while the active tasks are read, so that no claim falls between.
    let mut placer = shared.placer.lock().await;
    let active = shared.store.active_tasks().await?;
    *placer = Placer::build(
        &nodes,
        &active,
        &pools,
        default_placement(&shared.config.task),
    );
    Ok(())
}

/// Rebuilds the agent handles and the fleet's capacity from the store; any
/// server does this, leading or not (cancels and live logs reach agents
/// from whichever server the client asked). Handles of hosts that did not
/// change are kept (their slots and image cache with them); those of hosts
/// gone or down are marked lost. Returns the hosts read.
pub(crate) async fn read_fleet(
    store: &Store,
    dispatch: &Dispatch,
    config: &ServerConfig,
) -> Result<Vec<Node>, berth_store::StoreError> {
    let nodes = store.nodes().await?;
    let current = dispatch.agents();
    let mut by_name: HashMap<&str, &Arc<AgentHandle>> =
        current.iter().map(|a| (a.name.as_str(), a)).collect();
    let mut next: Vec<Arc<AgentHandle>> = Vec::with_capacity(nodes.len());
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
                Ok(endpoint) => Some(AgentClient::pooled(
                    endpoint,
                    Some(node.credential.clone()),
                    dispatch.connections.clone(),
                )),
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
                    config.max_tasks_per_agent,
                ))
            }
        };
        handle.set_lost(false);
        handle.set_accepts_work(!node.drained);
        next.push(handle);
    }
    // Hosts removed from the fleet.
    for gone in by_name.into_values() {
        gone.set_lost(true);
    }
    dispatch.set_agents(next);
    if !dispatch.note_placement_facts(&nodes) {
        return Ok(nodes);
    }
    // What a task is checked against at queue time: the hosts and what
    // each offers, no reservations.
    if let Some(capacity) =
        Placer::build(&nodes, &[], &[], default_placement(&config.task)).capacity()
    {
        dispatch.set_capacity(Arc::new(capacity));
    }
    Ok(nodes)
}

/// How often the hosts are read: every heartbeat interval, stretched as the
/// fleet grows (a report changes no faster than its host sends it).
pub(crate) fn read_every(dispatch: &Dispatch, config: &ServerConfig) -> std::time::Duration {
    config.fleet.interval_for(dispatch.fleet_size())
}

/// Refreshes the hosts every (stretched) heartbeat interval, and at once when the fleet
/// API says something changed. Never returns.
pub(super) async fn watch_forever(shared: Arc<Shared>) {
    loop {
        if let Err(e) = refresh(&shared, false).await {
            shared.term.refused(&e);
            tracing::error!("reading the fleet's hosts: {e}");
        }
        tokio::select! {
            _ = shared.dispatch.fleet.notified() => {}
            _ = tokio::time::sleep(read_every(&shared.dispatch, &shared.config)) => {}
        }
    }
}
