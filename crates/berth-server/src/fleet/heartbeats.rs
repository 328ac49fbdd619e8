//! Heartbeats written in batches: the beats that reach this server while
//! the store writes the previous ones go to it together, in one statement
//! (see [`Store::heartbeats`]).
//!
//! Nothing waits on a timer: with few hosts each beat is written at once,
//! alone; with thousands, a batch forms while the last one is written. At
//! 2,500 beats a second this takes the store's work from a statement per
//! beat to a statement per few dozen.

use super::error::FleetError;
use berth_core::ErrorCode;
use berth_store::{HeartbeatOutcome, HeartbeatWrite, Store};
use tokio::sync::{mpsc, oneshot};

/// The most beats written in one statement (three parameters each, far
/// under PostgreSQL's 65,535).
const MAX_BATCH: usize = 1_000;

/// Beats queued for the writer beyond what it is writing: at the cap a
/// heartbeat waits for room (the HTTP server's connection cap bounds the
/// waiters).
const QUEUE: usize = 4 * MAX_BATCH;

/// Hands heartbeats to the writer task; cheap to clone.
#[derive(Clone)]
pub struct HeartbeatWriter {
    queue: mpsc::Sender<Pending>,
}

struct Pending {
    node_id: String,
    token: String,
    report: String,
    answer: oneshot::Sender<Result<Option<HeartbeatOutcome>, String>>,
}

impl HeartbeatWriter {
    /// Starts the writer on the current runtime; it ends when every
    /// handle is dropped.
    pub fn spawn(store: Store) -> HeartbeatWriter {
        let (queue, beats) = mpsc::channel(QUEUE);
        tokio::spawn(write_forever(store, beats));
        HeartbeatWriter { queue }
    }

    /// Records one heartbeat with those that arrive with it; `None` when no
    /// host has this id and token.
    pub async fn record(
        &self,
        node_id: String,
        token: String,
        report: String,
    ) -> Result<Option<HeartbeatOutcome>, FleetError> {
        let (answer, answered) = oneshot::channel();
        let pending = Pending {
            node_id,
            token,
            report,
            answer,
        };
        let stopped = || FleetError::new(ErrorCode::Internal, "the heartbeat writer has stopped");
        self.queue.send(pending).await.map_err(|_| stopped())?;
        answered
            .await
            .map_err(|_| stopped())?
            .map_err(|message| FleetError::new(ErrorCode::Internal, message))
    }
}

async fn write_forever(store: Store, mut beats: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while beats.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let writes: Vec<HeartbeatWrite<'_>> = batch
            .iter()
            .map(|p| HeartbeatWrite {
                node_id: &p.node_id,
                token: &p.token,
                report: &p.report,
            })
            .collect();
        let written = store.heartbeats(&writes).await;
        drop(writes);
        match written {
            Ok(outcomes) => {
                for (pending, outcome) in batch.drain(..).zip(outcomes) {
                    let _ = pending.answer.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::error!(beats = batch.len(), "recording heartbeats: {e}");
                let message = format!("recording the heartbeat: {e}");
                for pending in batch.drain(..) {
                    let _ = pending.answer.send(Err(message.clone()));
                }
            }
        }
    }
}
