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
mod garbage;
mod hosts;
mod outcome;
mod request;
mod shared;

pub use request::{CONFIG_FILE, PAYLOAD_FILE, TASK_DIR};
use shared::Shared;

use crate::config::ServerConfig;
use crate::dispatch::{AgentHandle, Dispatch};
use berth_api::{ContainerView, ListQuery};
use berth_core::time::now_millis;
use berth_store::{AttemptEnd, Store};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Tasks taken from the store in one claim.
const CLAIM_BATCH: usize = 64;
/// How often containers of finished attempts are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Longest sleep with nothing to do (another server may share the store).
const IDLE_POLL: Duration = Duration::from_secs(1);

/// The dispatcher of one server.
pub struct Dispatcher {
    shared: Arc<Shared>,
}

impl Dispatcher {
    pub fn new(store: Store, dispatch: Arc<Dispatch>, config: Arc<ServerConfig>) -> Dispatcher {
        Dispatcher {
            shared: Arc::new(Shared {
                store,
                dispatch,
                config,
                in_flight: Mutex::new(HashSet::new()),
            }),
        }
    }

    /// Runs until the process ends: reconciles the attempts a previous
    /// server left, then dispatches. Never returns.
    pub async fn run(self) {
        // The hosts first: reconciling must know which are alive.
        while let Err(e) = hosts::refresh(&self.shared).await {
            tracing::error!("reading the fleet's hosts: {e}; trying again in 1 s");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        if self.shared.dispatch.agents().is_empty() && self.shared.config.fleet.join_token.is_none()
        {
            tracing::warn!(
                "no agents and no --join-token-file: queued tasks wait until hosts can join"
            );
        }
        tokio::spawn(hosts::watch_forever(self.shared.clone()));
        while let Err(e) = self.reconcile().await {
            tracing::error!("reconciling active tasks: {e}; trying again in 1 s");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        tokio::spawn(sweep_forever(self.shared.clone()));
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
            let shared = shared.clone();
            tokio::spawn(async move {
                // Resumed attempts take slots too, waiting if the agent is full.
                let Ok(_permit) = agent.slots.clone().acquire_owned().await else {
                    return;
                };
                attempt::run(shared, agent, claimed, true).await;
            });
        }
        Ok(())
    }

    async fn dispatch_forever(&self) -> ! {
        let shared = &self.shared;
        loop {
            let mut claimed_any = false;
            for agent in shared.dispatch.agents() {
                if !agent.accepts_work() {
                    continue;
                }
                let free = agent.slots.available_permits().min(CLAIM_BATCH);
                if free == 0 {
                    continue;
                }
                let claimed = match shared
                    .store
                    .claim_tasks(&agent.name, free, now_millis())
                    .await
                {
                    Ok(claimed) => claimed,
                    Err(e) => {
                        tracing::error!("claiming tasks: {e}");
                        tokio::time::sleep(IDLE_POLL).await;
                        continue;
                    }
                };
                for task in claimed {
                    claimed_any = true;
                    let Ok(permit) = agent.slots.clone().try_acquire_owned() else {
                        // Only this loop takes permits for new tasks, and
                        // it counted them: a resumed attempt took one.
                        let shared = shared.clone();
                        let agent = agent.clone();
                        tokio::spawn(async move {
                            let Ok(_permit) = agent.slots.clone().acquire_owned().await else {
                                return;
                            };
                            attempt::run(shared, agent, task, false).await;
                        });
                        continue;
                    };
                    let shared = shared.clone();
                    let agent = agent.clone();
                    tokio::spawn(async move {
                        let _permit = permit;
                        attempt::run(shared, agent, task, false).await;
                    });
                }
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
}

/// Removes containers whose attempt is over from every agent, and what
/// deleted code held, now and then (and at once when a code is deleted).
async fn sweep_forever(shared: Arc<Shared>) {
    loop {
        for agent in shared.dispatch.agents() {
            if let Err(e) = sweep(&shared, &agent).await {
                tracing::warn!(agent = %agent.name, "sweeping finished task containers: {e}");
            }
        }
        garbage::collect(&shared).await;
        tokio::select! {
            _ = shared.dispatch.garbage.notified() => {}
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
        }
    }
}

async fn sweep(shared: &Shared, agent: &AgentHandle) -> Result<(), String> {
    // Containers first, then the active attempts: a container listed here
    // was created after its claim, so its attempt is in the list read next
    // unless it is over.
    let containers: Vec<ContainerView> = agent
        .client()
        .list(&ListQuery::default())
        .await
        .map_err(|e| e.to_string())?;
    let active: HashSet<String> = shared
        .store
        .active_tasks()
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .map(|c| berth_store::container_name(&c.task.id, c.task.attempt))
        .collect();
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
    Ok(())
}
