//! The schedule runner: queues a task whenever a schedule is due.
//!
//! Each run is one conditional store transaction ([`Store::fire_schedule`]),
//! so a restarted server, or two servers on one database, never queue the
//! same run twice. Runs missed while no server ran are skipped, not
//! replayed in a burst.

use crate::dispatch::Dispatch;
use crate::leadership::Term;
use berth_core::time::now_millis;
use berth_store::Store;
use std::sync::Arc;
use std::time::Duration;

/// Longest sleep between looks at the schedules.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Schedules fired per look.
const BATCH: usize = 100;

/// Runs until its term ends (`store` is fenced by the term).
pub(crate) async fn run(store: Store, dispatch: Arc<Dispatch>, term: Term) {
    loop {
        let now = now_millis();
        match store.due_schedules(now, BATCH).await {
            Ok(due) => {
                for schedule in due {
                    let Some(expected) = schedule.next_start else {
                        continue;
                    };
                    match store.fire_schedule(&schedule.id, expected, now).await {
                        Ok(Some(task)) => {
                            tracing::debug!(schedule = %schedule.id, task, "scheduled run queued");
                            dispatch.tasks_changed();
                        }
                        Ok(None) => {}
                        Err(e) => {
                            // Fenced: the term is ending; it drops this loop.
                            term.refused(&e);
                            tracing::error!(schedule = %schedule.id, "firing: {e}");
                        }
                    }
                }
            }
            Err(e) => tracing::error!("reading due schedules: {e}"),
        }
        let wait = match store.next_schedule_at().await {
            Ok(Some(at)) if at > now_millis() => {
                Duration::from_millis((at - now_millis()) as u64).min(IDLE_POLL)
            }
            Ok(Some(_)) => Duration::from_millis(10),
            _ => IDLE_POLL,
        };
        tokio::select! {
            _ = dispatch.schedules.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
