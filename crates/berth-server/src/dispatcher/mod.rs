//! The dispatcher: takes queued tasks from the store, runs each attempt on
//! an agent, records how it ended.
//!
//! Crash safety comes from the store and from deterministic container
//! names: a task is claimed (`preparing`, attempt N, agent A) before its
//! container `task-<id>-<N>` is created, so a restarted server finds every
//! attempt its predecessor began ([`Dispatcher::run`] reconciles them
//! first) and never starts the same attempt twice. Containers whose attempt
//! is over are swept from the agents, and so are the package images of
//! deleted code ([`garbage`]).

mod attempt;
mod bundle;
mod facts;
mod garbage;
mod hosts;
mod outcome;
mod overlay;
mod placement;
mod request;
mod shared;

pub(crate) use facts::PlacementFacts;
pub(crate) use hosts::{read_every, read_fleet};
pub(crate) use placement::{default_placement, request_for};
pub use request::{CONFIG_FILE, PAYLOAD_FILE, TASK_DIR};
use shared::Shared;

use crate::config::ServerConfig;
use crate::dispatch::{AgentHandle, Dispatch};
use crate::leadership::Term;
use berth_api::ListQuery;
use berth_core::time::now_millis;
use berth_store::{AttemptEnd, ClaimedTask, PlaceDecision, Store};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Tasks taken from the store in one claim.
const CLAIM_BATCH: usize = 256;
/// How often containers of finished attempts are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Longest sleep with nothing to do (another server may share the store).
const IDLE_POLL: Duration = Duration::from_secs(1);

/// The dispatcher of one term of the dispatch lease.
pub(crate) struct Dispatcher {
    shared: Arc<Shared>,
}

impl Dispatcher {
    /// A dispatcher for `term`, writing through `store` (fenced by it).
    pub fn new(
        store: Store,
        dispatch: Arc<Dispatch>,
        config: Arc<ServerConfig>,
        term: Term,
    ) -> Dispatcher {
        let defaults = placement::default_placement(&config.task);
        Dispatcher {
            shared: Arc::new(Shared {
                store,
                term,
                dispatch,
                config,
                in_flight: Mutex::new(HashSet::new()),
                placer: tokio::sync::Mutex::new(placement::Placer::build(&[], &[], &[], defaults)),
            }),
        }
    }

    /// Runs until its term ends (then it is dropped): reconciles the
    /// attempts a previous leader left, then dispatches.
    pub async fn run(self) {
        // The hosts first: reconciling must know which are alive.
        while let Err(e) = hosts::refresh(&self.shared, true).await {
            self.shared.term.refused(&e);
            tracing::error!("reading the fleet's hosts: {e}; trying again in 1 s");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        if self.shared.dispatch.agents().is_empty() && self.shared.config.fleet.join_token.is_none()
        {
            tracing::warn!(
                "no agents and no --join-token-file: queued tasks wait until hosts can join"
            );
        }
        self.shared
            .term
            .spawn(hosts::watch_forever(self.shared.clone()));
        while let Err(e) = self.reconcile().await {
            self.shared.term.refused(&e);
            tracing::error!("reconciling active tasks: {e}; trying again in 1 s");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        self.shared.term.spawn(sweep_forever(self.shared.clone()));
        self.dispatch_forever().await
    }

    /// Picks up every attempt that was under way when the server stopped.
    async fn reconcile(&self) -> Result<(), berth_store::StoreError> {
        let shared = &self.shared;
        let active = shared.store.active_tasks().await?;
        if !active.is_empty() {
            tracing::info!(tasks = active.len(), "resuming tasks that were under way");
        }
        for claimed in active {
            let agent = claimed
                .task
                .agent
                .as_deref()
                .and_then(|name| shared.dispatch.agent(name));
            let Some(agent) = agent else {
                // Its agent is no longer ours: run it again elsewhere.
                let task = &claimed.task;
                let end = AttemptEnd::Requeue {
                    eligible_at: now_millis(),
                    infra: true,
                    msg: None,
                    log: None,
                };
                shared
                    .store
                    .end_attempt(&task.id, task.attempt, end, now_millis())
                    .await?;
                continue;
            };
            // Resumed attempts take slots too, waiting if the agent is full.
            shared
                .term
                .spawn(run_and_release(shared.clone(), agent, claimed, true));
        }
        Ok(())
    }

    async fn dispatch_forever(&self) -> ! {
        let shared = &self.shared;
        loop {
            let mut decided = Vec::new();
            let claimed = {
                let mut placer = shared.placer.lock().await;
                let claimed = shared
                    .store
                    .claim_placed(CLAIM_BATCH, now_millis(), &mut |candidates| {
                        let decisions = placer.plan(candidates);
                        for ((task, _), decision) in candidates.iter().zip(&decisions) {
                            if matches!(decision, PlaceDecision::On { .. }) {
                                decided.push(task.id.clone());
                            }
                        }
                        decisions
                    })
                    .await;
                // A task placed but not claimed after all (cancelled in the
                // meantime, or the store failed) holds nothing.
                let kept: HashSet<&str> = claimed
                    .as_ref()
                    .map(|c| c.iter().map(|c| c.task.id.as_str()).collect())
                    .unwrap_or_default();
                for id in decided.iter().filter(|id| !kept.contains(id.as_str())) {
                    placer.release(id);
                }
                claimed
            };
            let claimed = match claimed {
                Ok(claimed) => claimed,
                Err(e) => {
                    shared.term.refused(&e);
                    tracing::error!("claiming tasks: {e}");
                    tokio::time::sleep(IDLE_POLL).await;
                    continue;
                }
            };
            let claimed_any = !claimed.is_empty();
            for task in claimed {
                self.start(task).await;
            }
            if claimed_any {
                continue;
            }
            let wait = match shared.store.next_eligible_at().await {
                Ok(Some(at)) if at > now_millis() => {
                    Duration::from_millis((at - now_millis()) as u64).min(IDLE_POLL)
                }
                _ => IDLE_POLL,
            };
            tokio::select! {
                _ = shared.dispatch.tasks.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Runs a placed task's attempt on its host, in the background; its
    /// reservation is released when the attempt ends.
    async fn start(&self, claimed: ClaimedTask) {
        let shared = self.shared.clone();
        let agent = claimed
            .task
            .agent
            .as_deref()
            .and_then(|id| shared.dispatch.agent(id));
        let Some(agent) = agent else {
            // Its host left between the snapshot and now: run it elsewhere.
            let task = &claimed.task;
            let end = AttemptEnd::Requeue {
                eligible_at: now_millis(),
                infra: true,
                msg: Some("its host left the fleet before the task started".to_owned()),
                log: None,
            };
            if let Err(e) = shared
                .store
                .end_attempt(&task.id, task.attempt, end, now_millis())
                .await
            {
                shared.term.refused(&e);
                tracing::error!(task = %task.id, "requeueing a task whose host left: {e}");
            }
            shared.placer.lock().await.release(&task.id);
            return;
        };
        let term = shared.term.clone();
        term.spawn(run_and_release(shared, agent, claimed, false));
    }
}

/// Runs an attempt to its recorded end (waiting for a slot on its host),
/// then gives back what it held in the placement snapshot.
async fn run_and_release(
    shared: Arc<Shared>,
    agent: Arc<AgentHandle>,
    claimed: ClaimedTask,
    resume: bool,
) {
    let task_id = claimed.task.id.clone();
    if let Ok(_permit) = agent.slots.clone().acquire_owned().await {
        attempt::run(shared.clone(), agent, claimed, resume).await;
    }
    shared.placer.lock().await.release(&task_id);
}

/// Removes containers whose attempt is over from every agent, and what
/// deleted code held, now and then (and at once when a code is deleted);
/// a host that joins or comes back is swept at once, alone.
async fn sweep_forever(shared: Arc<Shared>) {
    loop {
        sweep(&shared, &shared.dispatch.agents()).await;
        garbage::collect(&shared).await;
        let next_round = tokio::time::sleep(SWEEP_EVERY);
        tokio::pin!(next_round);
        loop {
            tokio::select! {
                _ = &mut next_round => break,
                _ = shared.dispatch.garbage.notified() => garbage::collect(&shared).await,
                _ = shared.dispatch.returned_changed.notified() => {
                    // A host that has just joined may not have its handle
                    // yet (the hosts are read every heartbeat interval):
                    // wait for it a little.
                    let mut pending = shared.dispatch.take_returned();
                    for _ in 0..10 {
                        let (known, unknown): (Vec<_>, Vec<_>) = pending
                            .into_iter()
                            .partition(|id| shared.dispatch.agent(id).is_some());
                        let agents: Vec<_> =
                            known.iter().filter_map(|id| shared.dispatch.agent(id)).collect();
                        sweep(&shared, &agents).await;
                        pending = unknown;
                        if pending.is_empty() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        }
    }
}

/// Removes from these agents the containers of attempts that are over.
async fn sweep(shared: &Shared, agents: &[Arc<AgentHandle>]) {
    if agents.is_empty() {
        return;
    }
    // Containers first, then the active attempts: a container listed here
    // was created after its claim, so its attempt is in the list read next
    // unless it is over. (One read of the attempts for all the agents.)
    let mut listed = Vec::with_capacity(agents.len());
    for agent in agents {
        match agent.client().list(&ListQuery::default()).await {
            Ok(containers) => listed.push((agent, containers)),
            Err(e) => tracing::warn!(agent = %agent.name, "sweeping finished task containers: {e}"),
        }
    }
    let active: HashSet<String> = match shared.store.active_tasks().await {
        Ok(active) => active
            .iter()
            .map(|c| berth_store::container_name(&c.task.id, c.task.attempt))
            .collect(),
        Err(e) => {
            shared.term.refused(&e);
            tracing::warn!("sweeping finished task containers: {e}");
            return;
        }
    };
    for (agent, containers) in listed {
        for container in containers {
            if !container.labels.contains_key(request::TASK_LABEL) {
                continue;
            }
            if active.contains(&container.id) || shared.is_in_flight(&container.id) {
                continue;
            }
            tracing::info!(container = %container.id, "removing the container of a finished attempt");
            attempt::remove_container(agent, &container.id).await;
        }
    }
}
