//! `/tasks`: queueing (JSON batches and webhooks), listing, a task, its
//! log, cancel, retry and progress.
//!
//! Validation limits of a task: `code_name` required; `payload` a string
//! of at most `max_payload_bytes` bytes (413 above; JSON payloads must be
//! sent encoded as a string, as IronWorker required); `priority` 0–2
//! (default: the code's `default_priority`); `timeout` 1–`max_timeout_secs`
//! (default `max_timeout_secs`); `delay` 0–`max_delay_secs` (default 0);
//! `label` and `cluster` at most 255 bytes. At most
//! `max_tasks_per_request` tasks per request, and at least one. A task
//! naming a code the project does not have is 404 and nothing is queued.
//!
//! Fields IronWorker clients send that berth does not act on are accepted
//! and reported in `Warning` headers (see [`super::warnings`]): `name`
//! when it differs from `code_name` (the Python client sends the code's
//! name twice), `sync: true` (every berth task keeps its output, at `/log`
//! and `/outlog`), and any field berth does not know.

use super::auth::Tenant;
use super::error::{ApiError, ApiResult};
use super::extract::{read_body, IdParam, JsonValue, OptionalJson, QueryMap};
use super::task_fields::{check_payload, take_client_extras, take_payload, MAX_TAG_BYTES};
use super::warnings::Warnings;
use super::wire::{self, Fields, BODY};
use crate::config::ServerConfig;
use crate::AppState;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_core::time::now_millis;
use berth_store::{CancelOutcome, NewTask, TaskFilter, TaskStatus};
use serde_json::{json, Value};

/// Longest progress `msg`.
pub const MAX_PROGRESS_MSG_BYTES: usize = 4096;

/// A task's options common to the JSON and webhook forms.
struct Options {
    priority: Option<i64>,
    timeout: Option<i64>,
    delay: Option<i64>,
}

impl Options {
    fn into_task(
        self,
        config: &ServerConfig,
        code_name: String,
        payload: String,
        label: Option<String>,
        cluster: Option<String>,
    ) -> NewTask {
        NewTask {
            code_name,
            payload,
            priority: self.priority,
            timeout: self.timeout.unwrap_or(config.max_timeout_secs),
            delay: self.delay.unwrap_or(0),
            cluster,
            label,
            schedule_id: None,
            original_task_id: None,
            placement: Default::default(),
        }
    }
}

fn parse_task(
    config: &ServerConfig,
    what: String,
    value: Value,
    warnings: &Warnings,
) -> ApiResult<NewTask> {
    let mut f = Fields::new(what, value)?;
    let code_name = f
        .string("code_name")?
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad(format!("{}.code_name is required", f.what())))?;
    take_client_extras(&mut f, &code_name)?;
    let payload = take_payload(&mut f, config)?;
    let options = Options {
        priority: f.int_in("priority", 0..=2)?,
        timeout: f.int_in("timeout", 1..=config.max_timeout_secs)?,
        delay: f.int_in("delay", 0..=config.max_delay_secs)?,
    };
    let label = f.short_string("label", MAX_TAG_BYTES)?;
    let cluster = f.short_string("cluster", MAX_TAG_BYTES)?;
    let placement = super::placement_fields::take_placement(&mut f)?;
    f.finish(warnings);
    let mut task = options.into_task(config, code_name, payload, label, cluster);
    task.placement = placement;
    Ok(task)
}

/// Refuses (400) a batch in which a task could never run on this fleet,
/// whatever else runs: more than any host offers, or constraints no host
/// meets. An empty fleet refuses nothing (hosts may still join), and
/// neither does a fleet the dispatcher has not read yet.
async fn refuse_what_can_never_run(
    state: &AppState,
    project_id: &str,
    tasks: &[NewTask],
) -> ApiResult<()> {
    let Some(fleet) = state.dispatch.capacity() else {
        return Ok(());
    };
    if fleet.nodes().is_empty() {
        return Ok(());
    }
    let defaults = crate::dispatcher::default_placement(&state.config.task);
    let mut codes = std::collections::HashMap::new();
    for (i, task) in tasks.iter().enumerate() {
        if !codes.contains_key(&task.code_name) {
            let code = state
                .store
                .code_by_name(project_id, &task.code_name)
                .await?;
            codes.insert(task.code_name.clone(), code);
        }
        // An unknown code is the store's to refuse.
        let Some(Some(code)) = codes.get(&task.code_name) else {
            continue;
        };
        let reserved = task
            .placement
            .over(&code.latest.spec.placement)
            .resolve(&defaults)
            .map_err(|e| ApiError::bad(format!("tasks[{i}]: {e}")))?;
        let request =
            crate::dispatcher::request_for(&format!("tasks[{i}]"), &code.latest, &reserved)
                .map_err(|e| ApiError::bad(format!("tasks[{i}]: {e}")))?;
        if let Err(refusal) = berth_sched::can_ever_fit(&fleet, &request) {
            return Err(ApiError::bad(format!(
                "tasks[{i}] could never run on this fleet: {refusal}"
            )));
        }
    }
    Ok(())
}

/// `POST /tasks`: `{"tasks": [...]}`, all queued or none.
pub async fn queue(
    tenant: Tenant,
    State(state): State<AppState>,
    warnings: Warnings,
    JsonValue(body): JsonValue,
) -> ApiResult<Json<Value>> {
    let config = &state.config;
    let mut f = Fields::new(BODY, body)?;
    let tasks = match f.take("tasks") {
        Some(Value::Array(tasks)) => tasks,
        Some(other) => {
            return Err(ApiError::bad(format!(
                "tasks must be an array, not {}",
                wire::kind(&other)
            )))
        }
        None => return Err(ApiError::bad("the body needs \"tasks\": [...]")),
    };
    f.finish(&warnings);
    if tasks.is_empty() {
        return Err(ApiError::bad("tasks is empty: give at least one task"));
    }
    if tasks.len() > config.max_tasks_per_request {
        return Err(ApiError::bad(format!(
            "{} tasks in one request; at most {} are allowed",
            tasks.len(),
            config.max_tasks_per_request
        )));
    }
    let tasks = tasks
        .into_iter()
        .enumerate()
        .map(|(i, t)| parse_task(config, format!("tasks[{i}]"), t, &warnings))
        .collect::<ApiResult<Vec<_>>>()?;
    refuse_what_can_never_run(&state, &tenant.project_id, &tasks).await?;
    let ids = state
        .store
        .queue_tasks(&tenant.project_id, &tasks, now_millis())
        .await?;
    state.dispatch.tasks_changed();
    Ok(Json(queued(&ids)))
}

/// `{"msg": "Queued up", "tasks": [{"id": …}, …]}`.
fn queued(ids: &[String]) -> Value {
    let tasks: Vec<Value> = ids.iter().map(|id| json!({ "id": id })).collect();
    json!({ "msg": "Queued up", "tasks": tasks })
}

/// `POST /tasks/webhook?code_name=NAME`: the raw body (any content type)
/// is the payload; options come from the query. The router bounds the body
/// at `max_payload_bytes`.
pub async fn webhook(
    tenant: Tenant,
    State(state): State<AppState>,
    query: QueryMap,
    req: Request,
) -> ApiResult<Json<Value>> {
    let config = &state.config;
    let code_name = query
        .get("code_name")
        .ok_or_else(|| ApiError::bad("query parameter code_name is required"))?
        .to_owned();
    let options = Options {
        priority: query.int_in("priority", 0..=2)?,
        timeout: query.int_in("timeout", 1..=config.max_timeout_secs)?,
        delay: query.int_in("delay", 0..=config.max_delay_secs)?,
    };
    let tag = |key: &str| -> ApiResult<Option<String>> {
        match query.get(key) {
            Some(v) if v.len() > MAX_TAG_BYTES => Err(ApiError::bad(format!(
                "query parameter {key} is longer than {MAX_TAG_BYTES} bytes"
            ))),
            v => Ok(v.map(str::to_owned)),
        }
    };
    let (label, cluster) = (tag("label")?, tag("cluster")?);
    let body = read_body(req, config.max_payload_bytes).await?;
    let payload = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::bad("the webhook body (the payload) must be UTF-8 text"))?;
    check_payload(config, "the payload", &payload)?;
    let task = options.into_task(config, code_name, payload, label, cluster);
    let ids = state
        .store
        .queue_tasks(&tenant.project_id, &[task], now_millis())
        .await?;
    state.dispatch.tasks_changed();
    let id = ids.into_iter().next().unwrap_or_default();
    Ok(Json(
        json!({ "id": id, "msg": "Queued up", "status_code": 200 }),
    ))
}

/// `GET /tasks`: filters `code_name`, status flags (`queued=1&running=1`…;
/// none = every status), `from_time`/`to_time` (Unix seconds, on creation,
/// both inclusive), `page`/`per_page`. Newest first.
pub async fn list(
    tenant: Tenant,
    State(state): State<AppState>,
    query: QueryMap,
) -> ApiResult<Json<Value>> {
    let page = query.page()?;
    let mut statuses = Vec::new();
    for status in TaskStatus::ALL {
        if query.flag(status.as_str())? {
            statuses.push(status);
        }
    }
    // Seconds that fit in milliseconds.
    let seconds = 0..=(i64::MAX / 1000 - 1);
    let filter = TaskFilter {
        code_name: query.get("code_name").map(str::to_owned),
        statuses,
        from_time: query
            .int_in("from_time", seconds.clone())?
            .map(|s| s * 1000),
        // Inclusive of the whole second.
        to_time: query.int_in("to_time", seconds)?.map(|s| s * 1000 + 999),
    };
    let tasks = state.store.tasks(&tenant.project_id, &filter, page).await?;
    let tasks: Vec<Value> = tasks.iter().map(wire::task).collect();
    Ok(Json(json!({ "tasks": tasks })))
}

fn no_task(id: &str) -> ApiError {
    ApiError::not_found(format!("task not found: {id:?}"))
}

/// `GET /tasks/{id}`.
pub async fn get(
    tenant: Tenant,
    State(state): State<AppState>,
    IdParam(id): IdParam,
) -> ApiResult<Json<Value>> {
    let task = state
        .store
        .task(&tenant.project_id, &id)
        .await?
        .ok_or_else(|| no_task(&id))?;
    Ok(Json(wire::task(&task)))
}

/// `GET /tasks/{id}/log` (text/plain): the live output of a task that is
/// preparing or running (from its agent), else the stored log of its last
/// ended attempt. If the agent cannot be asked, the stored log is the best
/// there is, so it is answered rather than an error.
pub async fn log(
    tenant: Tenant,
    State(state): State<AppState>,
    IdParam(id): IdParam,
) -> ApiResult<Response> {
    let task = state
        .store
        .task(&tenant.project_id, &id)
        .await?
        .ok_or_else(|| no_task(&id))?;
    let mut live = None;
    if matches!(task.status, TaskStatus::Preparing | TaskStatus::Running) {
        if let Some(agent) = &task.agent {
            let container = berth_store::container_name(&task.id, task.attempt);
            match state.dispatch.live_log(agent, &container).await {
                Ok(log) => live = log,
                Err(e) => tracing::warn!(task = %task.id, error = %e, "live log unavailable"),
            }
        }
    }
    let bytes = match live {
        Some(bytes) => bytes,
        None => state
            .store
            .task_log(&tenant.project_id, &id)
            .await?
            .ok_or_else(|| no_task(&id))?,
    };
    let mut response = bytes.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(response)
}

/// `POST /tasks/{id}/cancel`. A queued task is cancelled at once; a
/// preparing or running one has its container stopped (the dispatcher then
/// records it as cancelled). Cancelling a cancelled task again is a
/// success (so a client may repeat it); cancelling one that ended
/// otherwise is 409 naming its status.
pub async fn cancel(
    tenant: Tenant,
    State(state): State<AppState>,
    IdParam(id): IdParam,
) -> ApiResult<Json<Value>> {
    let outcome = state
        .store
        .cancel_task(&tenant.project_id, &id, now_millis())
        .await?
        .ok_or_else(|| no_task(&id))?;
    match outcome {
        CancelOutcome::Cancelled => {}
        CancelOutcome::Requested { agent, container } => {
            // The request is recorded: if the agent cannot be reached now,
            // the dispatcher's reconciliation stops the container later.
            if let Err(e) = state.dispatch.stop(&agent, &container).await {
                tracing::warn!(task = %id, error = %e, "stopping a cancelled task's container failed");
            }
        }
        CancelOutcome::AlreadyFinished(TaskStatus::Cancelled) => {}
        CancelOutcome::AlreadyFinished(status) => {
            return Err(ApiError::Conflict(format!(
                "task has already ended with status {status}"
            )))
        }
    }
    state.dispatch.tasks_changed();
    Ok(Json(wire::msg("Cancelled")))
}

/// `POST /codes/{id}/cancel_all` (the Node client's `tasksCancelAll`):
/// cancels every queued, preparing and running task of a code, each as
/// [`cancel`] would, in one store transaction. Answers how many tasks it
/// cancelled or asked to stop (`{"msg": "Cancelled", "cancelled": N}`).
pub async fn cancel_all(
    tenant: Tenant,
    State(state): State<AppState>,
    IdParam(code_id): IdParam,
) -> ApiResult<Json<Value>> {
    let done = state
        .store
        .cancel_code_tasks(&tenant.project_id, &code_id, now_millis())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("code not found: {code_id:?}")))?;
    for stop in &done.stops {
        // Recorded already: the dispatcher's reconciliation stops it later
        // if the agent cannot be reached now.
        if let Err(e) = state.dispatch.stop(&stop.agent, &stop.container).await {
            tracing::warn!(task = %stop.task_id, error = %e, "stopping a cancelled task's container failed");
        }
    }
    state.dispatch.tasks_changed();
    let cancelled = done.cancelled + done.stops.len() as u64;
    Ok(Json(json!({ "msg": "Cancelled", "cancelled": cancelled })))
}

/// `POST /tasks/{id}/retry` with an optional `{"delay": secs}`: queues a
/// copy of an ended task. 409 if it has not ended.
pub async fn retry(
    tenant: Tenant,
    State(state): State<AppState>,
    IdParam(id): IdParam,
    warnings: Warnings,
    OptionalJson(body): OptionalJson,
) -> ApiResult<Json<Value>> {
    let delay = match body {
        None => 0,
        Some(body) => {
            let mut f = Fields::new(BODY, body)?;
            let delay = f.int_in("delay", 0..=state.config.max_delay_secs)?;
            f.finish(&warnings);
            delay.unwrap_or(0)
        }
    };
    let new_id = state
        .store
        .retry_task(&tenant.project_id, &id, delay, now_millis())
        .await?
        .ok_or_else(|| no_task(&id))?;
    state.dispatch.tasks_changed();
    Ok(Json(queued(&[new_id])))
}

/// `POST /tasks/{id}/progress` `{"percent": 0–100, "msg": "…"}` (either
/// or both), reported by the task itself. 409 once the task has ended.
pub async fn progress(
    tenant: Tenant,
    State(state): State<AppState>,
    IdParam(id): IdParam,
    warnings: Warnings,
    JsonValue(body): JsonValue,
) -> ApiResult<Json<Value>> {
    let mut f = Fields::new(BODY, body)?;
    let percent = f.int_in("percent", 0..=100)?;
    let msg = f.short_string("msg", MAX_PROGRESS_MSG_BYTES)?;
    f.finish(&warnings);
    if percent.is_none() && msg.is_none() {
        return Err(ApiError::bad("give percent (0–100), msg, or both"));
    }
    let set = state
        .store
        .set_progress(
            &tenant.project_id,
            &id,
            percent,
            msg.as_deref(),
            now_millis(),
        )
        .await?;
    if !set {
        let task = state
            .store
            .task(&tenant.project_id, &id)
            .await?
            .ok_or_else(|| no_task(&id))?;
        return Err(ApiError::Conflict(format!(
            "task has already ended with status {}",
            task.status
        )));
    }
    Ok(Json(wire::msg("Progress set")))
}
