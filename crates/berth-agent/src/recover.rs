//! Recovery after a restart: rebuilds the table of containers from the
//! state dirs a previous agent left, settles each one from its shim and its
//! records, hands it to a watcher, and forgets creates that never reached
//! a shim.

use crate::error::ApiError;
use crate::events::EventKind;
use crate::record::{ContainerRecord, Entry, Phase, AGENT_FILE};
use crate::shim;
use crate::state::{read, write, AgentState};
use crate::watch::{finish, mark_running, note_started, spawn_watcher};
use berth_shim::{Request, Response, StateDir, Status};
use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Rebuilds the table of containers from the state dirs and the shims.
pub(crate) async fn rediscover(agent: &Arc<AgentState>) -> Result<(), ApiError> {
    let root = agent.config.state_root();
    let dirs =
        fs::read_dir(&root).map_err(|e| ApiError::io(format!("listing {}", root.display()), e))?;
    let mut tasks = tokio::task::JoinSet::new();
    for dir in dirs.flatten() {
        let this = agent.clone();
        tasks.spawn(async move { recover(this, &dir.path()).await });
    }
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            tracing::warn!("recovering a container: {e}");
        }
    }
    // Attachments of containers that ended or vanished while no agent ran.
    // Alive: running under this agent, or anyone's container whose runtime
    // dir is there (`berth run` shares the data dir's networks), or still
    // being set up by a live process.
    let runtime_dirs = [
        agent.config.runtime_containers_dir(),
        agent.config.volatile_runtime_dir(),
    ];
    let alive = |attachment: &berth_net::Attachment| {
        let ours_running = read(&agent.containers)
            .get(&attachment.container)
            .is_some_and(|e| !matches!(*e.phase.borrow(), Phase::Exited { .. }));
        ours_running
            || runtime_dirs
                .iter()
                .any(|d| d.join(&attachment.container).exists())
            || attachment.holder_alive()
    };
    match agent.networks.gc(&alive) {
        Ok(collected) if !collected.attachments.is_empty() => {
            tracing::info!(containers = ?collected.attachments, "took ended containers off their networks")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("collecting network attachments: {e}"),
    }
    agent.remove_idle_overlays();
    Ok(())
}

/// Takes back one container from its state dir (and its shim, if alive).
async fn recover(agent: Arc<AgentState>, path: &Path) {
    let dir = StateDir::new(path);
    let record: ContainerRecord = match fs::read(path.join(AGENT_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
    {
        Some(r) => r,
        None => {
            forget_unfinished_create(path);
            return;
        }
    };
    let entry = Arc::new(Entry {
        id: record.id.clone(),
        dir: dir.clone(),
        record: Mutex::new(record),
        phase: watch::channel(Phase::Creating).0,
    });
    write(&agent.containers).insert(entry.id.clone(), entry.clone());
    agent
        .events
        .ensure(&entry.id, EventKind::Created, serde_json::Value::Null);
    if let Ok(Some(state)) = dir.read_state() {
        note_started(&agent.events, &entry, &state);
    }
    if let Ok(Some(record)) = dir.read_exit() {
        finish(&agent, &entry, record);
        return;
    }
    // The common case, settled here so a restarted agent serves with
    // its containers already known as running; everything else (a shim
    // still starting, one that died) is the watcher's to sort out.
    let reply = shim::request(&dir, &Request::State, Some(Duration::from_secs(2))).await;
    let running = matches!(
        reply,
        Ok(Response::State {
            status: Status::Running,
            ..
        })
    );
    let state = dir.read_state().ok().flatten();
    if let (true, Some(state)) = (running, &state) {
        mark_running(&agent.events, &entry, state);
    }
    spawn_watcher(
        agent.clone(),
        entry.clone(),
        state.map_or(0, |s| s.shim_pid),
    );
}

/// A state dir without a readable agent.json is a create that died before
/// its shim existed, and is removed, but only if nothing but the spec is in
/// it: anything a shim wrote is kept (and reported) rather than destroyed.
fn forget_unfinished_create(path: &Path) {
    let names: Vec<String> = fs::read_dir(path)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let only_inputs = names
        .iter()
        .all(|n| n == "spec.json" || n.ends_with(".tmp"));
    if only_inputs {
        tracing::info!("removing the unfinished state dir {}", path.display());
        if let Err(e) = fs::remove_dir_all(path) {
            tracing::warn!("removing {}: {e}", path.display());
        }
    } else {
        tracing::warn!(
            "{} has no readable agent.json but holds {names:?}; left alone for an operator",
            path.display()
        );
    }
}
