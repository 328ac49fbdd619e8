//! One attempt of one task: create its container on the agent, watch it to
//! its end, record the end exactly once, remove the container.

use super::bundle::zip_to_layer_tar;
use super::outcome::{decide, infra, Decision};
use super::request::{create_request, package_image};
use super::shared::Shared;
use crate::dispatch::AgentHandle;
use berth_api::{ClientError, ContainerView, ErrorCode};
use berth_core::network::NetworkMode;
use berth_core::time::now_millis;
use berth_store::{container_name, AttemptEnd, ClaimedTask, Millis, Task};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The first and the longest pause before an attempt whose end could not
/// be stored is driven again.
const STORE_RETRY_FIRST: Duration = Duration::from_millis(500);
const STORE_RETRY_MAX: Duration = Duration::from_secs(10);

/// How long one wait long-poll lasts on the agent.
const WAIT_POLL: Duration = Duration::from_secs(30);

/// Why an attempt could not start (or be followed to its end).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum StartError {
    /// The task's own fault: it ends in `error`.
    Task(String),
    /// Not the task's fault: run it again.
    Infra(String),
}

/// What an agent's error means for the attempt, from the agent's own
/// `retryable` flag (never from its message): an error the agent marks as
/// not retryable (an archive it cannot unpack, a limit it cannot enforce)
/// would come back on every attempt, so the task ends in `error` with the
/// agent's message; a retryable one, or no answer at all, is the
/// infrastructure's and is run again.
fn agent_failure(action: &str, error: ClientError) -> StartError {
    if error.is_retryable() {
        return StartError::Infra(format!("{action}: {error}"));
    }
    match error.report() {
        Some(report) => StartError::Task(format!("{action}: [{}] {}", report.code, report.message)),
        None => StartError::Task(format!("{action}: {error}")),
    }
}

/// Runs the attempt to its recorded end. With `resume`, the container may
/// already exist (a restarted server picking up where it left off).
pub(super) async fn run(
    shared: Arc<Shared>,
    agent: Arc<AgentHandle>,
    claimed: ClaimedTask,
    resume: bool,
) {
    let container = container_name(&claimed.task.id, claimed.task.attempt);
    shared.in_flight_insert(&container);
    let mut claimed = claimed;
    let mut resume = resume;
    let mut backoff = STORE_RETRY_FIRST;
    while let Err(e) = drive(&shared, &agent, &claimed, &container, resume).await {
        if shared.term.refused(&e) {
            // The term is over: the next leader drives this attempt, its
            // container included. Touch nothing more.
            tracing::warn!(task = %claimed.task.id, "the dispatch lease was lost: leaving the attempt to the next leader");
            shared.in_flight_remove(&container);
            return;
        }
        // The store failed (a full disk, a lost connection) before the
        // attempt's end was recorded. Keep the container and try again: a
        // resumed drive finds it (or learns that it vanished) and records
        // the end once the store works, so the task never stays `running`
        // with its container gone.
        tracing::error!(
            task = %claimed.task.id,
            "recording the attempt: {e}; trying again in {backoff:?}"
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(STORE_RETRY_MAX);
        resume = true;
        match shared
            .store
            .task(&claimed.task.project_id, &claimed.task.id)
            .await
        {
            Ok(Some(now))
                if now.attempt == claimed.task.attempt
                    && matches!(
                        now.status,
                        berth_store::TaskStatus::Preparing | berth_store::TaskStatus::Running
                    ) =>
            {
                claimed.task = now;
            }
            // Ended, or moved on to another attempt, meanwhile.
            Ok(_) => break,
            // Still failing: the next drive says so again.
            Err(_) => {}
        }
    }
    remove_container(&agent, &container).await;
    shared.in_flight_remove(&container);
    shared.dispatch.tasks_changed();
}

async fn drive(
    shared: &Shared,
    agent: &AgentHandle,
    claimed: &ClaimedTask,
    container: &str,
    resume: bool,
) -> Result<(), berth_store::StoreError> {
    let task = &claimed.task;
    let started = match begin(shared, agent, claimed, container, resume).await {
        Ok(view) => view,
        Err(StartError::Task(msg)) => {
            let end = AttemptEnd::Finished {
                status: berth_store::TaskStatus::Error,
                msg: Some(msg),
                exit_code: None,
                end_time: now_millis(),
                log: Vec::new(),
            };
            shared
                .store
                .end_attempt(&task.id, task.attempt, end, now_millis())
                .await?;
            return Ok(());
        }
        Err(StartError::Infra(msg)) => {
            let decision = infra(task, shared.config.max_infra_retries, msg);
            return record(shared, task, decision, Vec::new(), None).await;
        }
    };
    if let Some(view) = &started {
        let start_time = view
            .started_at
            .map(|ms| ms as Millis)
            .unwrap_or_else(now_millis);
        if task.status == berth_store::TaskStatus::Preparing {
            shared
                .store
                .mark_running(&task.id, task.attempt, start_time)
                .await?;
        }
        // A cancel that came while the container was being created found
        // nothing to stop.
        if let Some(now) = shared.store.task(&task.project_id, &task.id).await? {
            if now.cancel_requested {
                let _ = shared.dispatch.stop(&agent.name, container).await;
            }
        }
    }
    let view = match watch(shared, agent, container).await {
        Ok(view) => view,
        Err(StartError::Task(msg)) => {
            let decision = Decision::Finish {
                status: berth_store::TaskStatus::Error,
                msg: Some(msg),
                exit_code: None,
            };
            return record(shared, task, decision, Vec::new(), None).await;
        }
        Err(StartError::Infra(lost)) => {
            let decision = infra(task, shared.config.max_infra_retries, lost);
            return record(shared, task, decision, Vec::new(), None).await;
        }
    };
    if task.status == berth_store::TaskStatus::Preparing && started.is_none() {
        let start_time = view
            .started_at
            .map(|ms| ms as Millis)
            .unwrap_or_else(now_millis);
        shared
            .store
            .mark_running(&task.id, task.attempt, start_time)
            .await?;
    }
    // A task that wrote nothing has no log to fetch.
    let log = match view.log_bytes {
        Some(0) => Vec::new(),
        _ => match logs_patiently(shared, agent, container).await {
            Ok(bytes) => bytes.to_vec(),
            Err(e) => {
                tracing::warn!(task = %task.id, "reading the log: {e}");
                format!("[berth: the task's output could not be read: {e}]\n").into_bytes()
            }
        },
    };
    // The task as it is now: a cancel may have come, counts moved.
    let current = shared
        .store
        .task(&task.project_id, &task.id)
        .await?
        .unwrap_or_else(|| task.clone());
    let decision = decide(
        &view,
        &current,
        &claimed.code,
        shared.config.max_infra_retries,
    );
    let end_time = view.exited_at.map(|ms| ms as Millis);
    record(shared, &current, decision, log, end_time).await
}

/// Stores the decision (conditional on the attempt: a second report of the
/// same end changes nothing).
async fn record(
    shared: &Shared,
    task: &Task,
    decision: Decision,
    log: Vec<u8>,
    end_time: Option<Millis>,
) -> Result<(), berth_store::StoreError> {
    let now = now_millis();
    let end = match decision {
        Decision::Finish {
            status,
            msg,
            exit_code,
        } => AttemptEnd::Finished {
            status,
            msg,
            exit_code,
            end_time: end_time.unwrap_or(now),
            log,
        },
        Decision::RetryTask { delay_secs, msg } => AttemptEnd::Requeue {
            eligible_at: now + delay_secs * 1000,
            infra: false,
            msg: Some(msg),
            log: Some(log),
        },
        Decision::RetryInfra { msg } => {
            tracing::warn!(task = %task.id, attempt = task.attempt, "infrastructure fault, running it again: {msg}");
            // 0.2 s, 0.4 s, 0.8 s … up to 10 s.
            let backoff = (200i64 << task.infra_failures.clamp(0, 6)).min(10_000);
            AttemptEnd::Requeue {
                eligible_at: now + backoff,
                infra: true,
                msg: None,
                log: None,
            }
        }
    };
    let recorded = shared
        .store
        .end_attempt(&task.id, task.attempt, end, now)
        .await?;
    if !recorded {
        tracing::debug!(task = %task.id, attempt = task.attempt, "the attempt's end was already recorded");
    }
    Ok(())
}

/// Starts the attempt, or (`resume`) finds its container from before a
/// restart: `None` when the agent cannot say now (the watch decides).
async fn begin(
    shared: &Shared,
    agent: &AgentHandle,
    claimed: &ClaimedTask,
    container: &str,
    resume: bool,
) -> Result<Option<ContainerView>, StartError> {
    if !resume {
        return start(shared, agent, claimed, container).await.map(Some);
    }
    match agent.client().get(container).await {
        Ok(view) => Ok(Some(view)),
        // The create never reached the agent: make it now.
        Err(e) if e.is_not_found() && claimed.task.status == berth_store::TaskStatus::Preparing => {
            start(shared, agent, claimed, container).await.map(Some)
        }
        Err(e) if e.is_not_found() => Err(StartError::Infra(format!(
            "container {container} vanished from agent {}",
            agent.name
        ))),
        Err(_) => Ok(None),
    }
}

/// Creates and starts the container (a container that already exists is
/// this attempt's, from before a restart).
async fn start(
    shared: &Shared,
    agent: &AgentHandle,
    claimed: &ClaimedTask,
    container: &str,
) -> Result<ContainerView, StartError> {
    let task = &claimed.task;
    let code = &claimed.code;
    let stack = match &code.spec.runtime {
        Some(runtime) => shared
            .store
            .stack(runtime)
            .await
            .map_err(|e| StartError::Infra(format!("reading the stack: {e}")))?,
        None => None,
    };
    let overlay = match &code.spec.network {
        Some(NetworkMode::Named(network)) => {
            Some(super::overlay::place(shared, agent, task, network.as_str()).await?)
        }
        _ => None,
    };
    let request = create_request(
        task,
        code,
        stack.as_ref(),
        &shared.config.task,
        overlay.as_ref(),
    )
    .map_err(|e| StartError::Task(e.0))?;
    if let Some(sha) = &code.package_sha256 {
        ensure_package(shared, agent, sha, code.spec.file_name.as_deref()).await?;
    }
    let created = create_patiently(shared, agent, &request).await;
    match created {
        Ok(view) => Ok(view),
        Err(e) if e.code() == Some(ErrorCode::ContainerExists) => agent
            .client()
            .get(container)
            .await
            .map_err(|e| StartError::Infra(e.to_string())),
        Err(e) if e.code() == Some(ErrorCode::ImageNotFound) && code.package_sha256.is_some() => {
            // Removed behind our back: import it again next time.
            agent.images_forget();
            Err(StartError::Infra(e.to_string()))
        }
        Err(e) => Err(agent_failure("creating the container", e)),
    }
}

/// Creates the container, waiting out an agent that does not answer (it is
/// restarting, or being upgraded) for as long as a running attempt would
/// wait for it (`agent_lost_after`), unless its host is marked down
/// meanwhile; so a rolling restart of agents starts no task twice. A create
/// that did reach the agent before the answer was lost is asked again and
/// finds its container (`ContainerExists`).
async fn create_patiently(
    shared: &Shared,
    agent: &AgentHandle,
    request: &berth_api::CreateContainer,
) -> Result<ContainerView, ClientError> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        let created = agent.client().create(request).await;
        let unreachable = matches!(created, Err(ClientError::Unreachable { .. }));
        if !unreachable
            || agent.is_lost()
            || started.elapsed() + pause >= shared.config.agent_lost_after
        {
            return created;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// The container's whole output, waiting out an agent that does not answer
/// (restarting, upgraded) as [`create_patiently`] does: the shim keeps the
/// output, so a restart of the agent must not cost the task its log.
async fn logs_patiently(
    shared: &Shared,
    agent: &AgentHandle,
    container: &str,
) -> Result<axum::body::Bytes, ClientError> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        let log = agent.client().logs(container, 0).await;
        let unreachable = matches!(log, Err(ClientError::Unreachable { .. }));
        if !unreachable
            || agent.is_lost()
            || started.elapsed() + pause >= shared.config.agent_lost_after
        {
            return log;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// Imports the code package on the agent as a one-layer image, once.
async fn ensure_package(
    shared: &Shared,
    agent: &AgentHandle,
    sha: &str,
    file_name: Option<&str>,
) -> Result<(), StartError> {
    let reference = package_image(sha);
    if agent.has_image(&reference) {
        return Ok(());
    }
    let _one_at_a_time = agent.uploads.lock().await;
    if agent.has_image(&reference) {
        return Ok(());
    }
    // A restarted server: the agent may have it from before.
    if let Ok(images) = agent.client().images().await {
        agent.images_remember(images.iter().map(|image| image.reference.to_string()));
        if agent.has_image(&reference) {
            return Ok(());
        }
    }
    let zip = shared
        .store
        .package_by_sha256(sha)
        .await
        .map_err(|e| StartError::Infra(format!("reading the package: {e}")))?
        .ok_or_else(|| {
            StartError::Task(format!("the code package {sha} is missing from the store"))
        })?;
    let executable = file_name.map(str::to_owned);
    let tar = tokio::task::spawn_blocking(move || zip_to_layer_tar(&zip, executable.as_deref()))
        .await
        .map_err(|e| StartError::Infra(format!("converting the package: {e}")))?
        .map_err(|e| StartError::Task(e.to_string()))?;
    agent
        .client()
        .import_image(&reference, tar.into(), Duration::from_secs(300))
        .await
        .map_err(|e| agent_failure("importing the code package", e))?;
    agent.images_remember([reference]);
    Ok(())
}

/// Waits for the container to end. An infrastructure error means it is
/// lost: gone from its agent, or the agent unreachable for longer than the
/// server allows; a task error, that the agent refused the wait with an
/// error it marks as not retryable.
async fn watch(
    shared: &Shared,
    agent: &AgentHandle,
    container: &str,
) -> Result<ContainerView, StartError> {
    let mut unreachable_since: Option<Instant> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        if agent.is_lost() {
            return Err(StartError::Infra(format!(
                "host {} was marked down (missed its heartbeats)",
                agent.label
            )));
        }
        let client = agent.client();
        let waited = tokio::select! {
            waited = client.wait(container, WAIT_POLL) => waited,
            () = agent.lost() => continue,
        };
        match waited {
            Ok(view) if view.state.has_ended() => return Ok(view),
            Ok(_) => unreachable_since = None,
            // The container is gone: the host lost it, not the task.
            Err(e) if e.is_not_found() => {
                return Err(StartError::Infra(format!(
                    "container {container} vanished from agent {}",
                    agent.name
                )))
            }
            Err(e) if !e.is_retryable() => {
                return Err(agent_failure("waiting for the container", e))
            }
            Err(e) => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= shared.config.agent_lost_after {
                    return Err(StartError::Infra(format!(
                        "agent {} unreachable for {:?}: {e}",
                        agent.name, shared.config.agent_lost_after
                    )));
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Removes the container and its files from the agent. A failure is left
/// to the sweep.
pub(super) async fn remove_container(agent: &AgentHandle, container: &str) {
    match agent.client().remove(container, true).await {
        Ok(_) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) => tracing::warn!(container, "removing the container: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::ErrorReport;

    fn api_error(code: ErrorCode) -> ClientError {
        ClientError::Api {
            endpoint: "unix:///agent.sock".to_owned(),
            status: 400,
            report: ErrorReport::new(
                code,
                "entry \"task/a/b\": parent \"task/a\" is not a directory",
            ),
        }
    }

    #[test]
    fn an_error_the_agent_marks_not_retryable_ends_the_task() {
        assert_eq!(
            agent_failure(
                "importing the code package",
                api_error(ErrorCode::InvalidArchive)
            ),
            StartError::Task(
                "importing the code package: [invalid_archive] entry \"task/a/b\": \
                 parent \"task/a\" is not a directory"
                    .to_owned()
            )
        );
    }

    #[test]
    fn retryable_errors_and_silence_are_the_infrastructures() {
        assert!(matches!(
            agent_failure("importing", api_error(ErrorCode::HostIo)),
            StartError::Infra(_)
        ));
        let unreachable = ClientError::Unreachable {
            endpoint: "unix:///agent.sock".to_owned(),
            message: "connection refused".to_owned(),
        };
        assert!(matches!(
            agent_failure("importing", unreachable),
            StartError::Infra(_)
        ));
    }
}
