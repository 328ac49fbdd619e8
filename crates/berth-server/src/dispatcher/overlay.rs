//! A task's place on its code's overlay network: its address there
//! (claimed in the store at the first attempt, the same on every retry,
//! whatever the host) and what its host is to know of the network now.

use super::attempt::StartError;
use super::request::OverlayPlace;
use super::shared::Shared;
use crate::dispatch::AgentHandle;
use crate::overlays::underlay_address;
use berth_store::{StoreError, Task};

/// The place of `task` on the project's network `network`, on `agent`'s
/// host. A network that is gone, or full, ends the task in `error`; a
/// store that cannot answer now is the infrastructure's (run again).
pub(super) async fn place(
    shared: &Shared,
    agent: &AgentHandle,
    task: &Task,
    network: &str,
) -> Result<OverlayPlace, StartError> {
    let store = &shared.store;
    let infra = |e: StoreError| StartError::Infra(format!("network {network}: {e}"));
    let gone = || {
        StartError::Task(format!(
            "network {network}: the project has no network of that name any more"
        ))
    };
    let (overlay, address) = match store
        .claim_overlay_address(&task.project_id, network, &task.id)
        .await
    {
        Ok(Some(claimed)) => claimed,
        Ok(None) => return Err(gone()),
        Err(StoreError::Conflict(why)) => return Err(StartError::Task(why)),
        Err(e) => return Err(infra(e)),
    };
    let claimed_at = std::time::Instant::now();
    let view = shared
        .dispatch
        .overlays
        .view_read_after(store, claimed_at)
        .await
        .map_err(infra)?;
    // The host's address now: it may have joined since the view was read.
    let local = underlay_address(&agent.address()).await;
    let mut spec = view.spec(
        &agent.name,
        local,
        overlay.vni,
        overlay.subnet,
        overlay.internal,
    );
    // Never the task itself as a member elsewhere (a view read before this
    // retry left its last host).
    spec.members.retain(|member| member.address != address);
    Ok(OverlayPlace { spec, address })
}
