//! Watching containers to their end: one watcher task per container that
//! follows its shim, promotes a container to running once its shim says
//! so, and records its end (exit record and events) or its loss (a shim
//! that died without one, and the runtime dirs it left behind).

use crate::clock::now_ms;
use crate::events::{EventKind, EventLog};
use crate::record::{lock, write_json, Entry, Phase, MEMORY_PRESSURE};
use crate::shim;
use crate::state::AgentState;
use berth_core::{ErrorCode, ErrorReport};
use berth_shim::{ExitRecord, Request, ShimState};
use std::fs;
use std::sync::Arc;
use std::time::Duration;

/// Cleans up after dead shims in both runtime dirs.
pub(crate) fn gc_runtime_dirs(agent: &AgentState) -> berth_runtime::Result<Vec<String>> {
    let mut removed = agent.runtime.gc_dir(&agent.config.volatile_runtime_dir())?;
    removed.extend(agent.runtime.gc()?);
    Ok(removed)
}

/// Records a container's end and its events, and takes it off its network
/// (its address and ports are free again at once).
pub(crate) fn finish(agent: &AgentState, entry: &Entry, record: ExitRecord) {
    // Detaching waits on a lock, the kernel and maybe CNI plugins: off the
    // async worker's hands when it can be.
    let leave = || agent.leave_network(&entry.id);
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(leave)
        }
        _ => leave(),
    }
    let events = &agent.events;
    let (started_at, exited_at) = match entry.dir.read_state() {
        Ok(Some(state)) => (Some(state.started_at), state.exited_at),
        _ => (None, None),
    };
    let exited_at = exited_at.or_else(|| Some(now_ms()));
    let detail = match &record {
        ExitRecord::Finished { result, error, .. } => serde_json::json!({
            "exit_code": result.exit_code,
            "signal": result.signal,
            "oom_killed": result.oom_killed,
            "timed_out": result.timed_out,
            "error": error,
        }),
        ExitRecord::Failed { error } => serde_json::json!({ "error": error }),
    };
    if let Some(result) = record.result() {
        if result.oom_killed {
            events.ensure(&entry.id, EventKind::Oom, serde_json::Value::Null);
        }
        if result.timed_out {
            events.ensure(&entry.id, EventKind::TimedOut, serde_json::Value::Null);
        }
    }
    if let Some(reason) = &lock(&entry.record).kill_reason {
        if reason.reason == MEMORY_PRESSURE {
            events.ensure(
                &entry.id,
                EventKind::MemoryKilled,
                serde_json::json!(reason),
            );
        }
    }
    events.ensure(&entry.id, EventKind::Exited, detail);
    entry.phase.send_replace(Phase::Exited {
        record,
        started_at,
        exited_at,
    });
}

/// The `started` event for the container the shim's state describes
/// (once per incarnation).
pub(crate) fn note_started(events: &EventLog, entry: &Entry, state: &ShimState) {
    events.ensure(
        &entry.id,
        EventKind::Started,
        serde_json::json!({ "pid": state.container_pid, "shim_pid": state.shim_pid }),
    );
}

/// Records that the container runs, as its shim's state says.
pub(crate) fn mark_running(events: &EventLog, entry: &Entry, state: &ShimState) {
    note_started(events, entry, state);
    entry.phase.send_replace(Phase::Running {
        pid: state.container_pid,
        shim_pid: state.shim_pid,
        started_at: state.started_at,
    });
}

/// The shim died without an exit record: its container died with it
/// (parent-death signal). Record that and clean up what it left.
async fn mark_lost(agent: &Arc<AgentState>, entry: &Entry, shim_pid: u32) {
    let message = match shim_pid {
        // A create the previous agent never finished: no shim recorded
        // its pid, none was found.
        0 => "no shim of the container was found (its agent stopped while creating it); it is not running"
            .to_owned(),
        pid => format!("the container's shim (pid {pid}) died; the container died with it"),
    };
    let error = ErrorReport::new(ErrorCode::HostIo, message);
    let record = ExitRecord::Failed { error };
    if let Err(e) = write_json(&entry.dir.exit_file(), &record) {
        tracing::warn!(id = %entry.id, "writing exit.json for a lost container: {e}");
    }
    let _ = fs::remove_file(entry.dir.socket());
    let this = agent.clone();
    let gc = tokio::task::spawn_blocking(move || gc_runtime_dirs(&this)).await;
    match gc {
        Ok(Ok(removed)) if !removed.is_empty() => {
            tracing::info!(?removed, "cleaned up after a dead shim")
        }
        Ok(Err(e)) => tracing::warn!("gc after a dead shim: {e}"),
        _ => {}
    }
    finish(agent, entry, record);
}

/// Follows a container until it ends, then records the end. A container
/// still `Creating` (found so by a restarted agent) is promoted to
/// `Running` once its shim has written its state.
pub(crate) fn spawn_watcher(agent: Arc<AgentState>, entry: Arc<Entry>, shim_pid: u32) {
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        loop {
            if let Ok(Some(record)) = entry.dir.read_exit() {
                finish(&agent, &entry, record);
                return;
            }
            let pid = match shim_pid {
                0 => shim::recorded_pid(&entry.dir),
                pid => pid,
            };
            let pid = match pid {
                0 => shim::find_shim(&entry.dir).unwrap_or(0),
                pid => pid,
            };
            if !shim::shim_alive(pid, &entry.dir) {
                // Gone without a record (re-read: it may have just written
                // one), or never found: give an unregistered shim a few
                // seconds, then call the container lost.
                if let Ok(Some(record)) = entry.dir.read_exit() {
                    finish(&agent, &entry, record);
                } else if pid == 0 && started.elapsed() < Duration::from_secs(5) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                } else {
                    mark_lost(&agent, &entry, pid).await;
                }
                return;
            }
            if matches!(entry.phase(), Phase::Creating) {
                match entry.dir.read_state() {
                    Ok(Some(state)) => mark_running(&agent.events, &entry, &state),
                    _ => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                }
            }
            match shim::request(&entry.dir, &Request::Wait, None).await {
                // Answered once exit.json is durable.
                Ok(_) => {
                    if let Ok(Some(record)) = entry.dir.read_exit() {
                        finish(&agent, &entry, record);
                        return;
                    }
                }
                Err(e) if !shim::is_gone(&e) => {
                    tracing::warn!(id = %entry.id, "waiting on the shim: {e}");
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}
