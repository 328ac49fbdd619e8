//! `/schedules`: creating (all of a request or none), listing, one
//! schedule, cancel.
//!
//! Validation limits of a schedule: `code_name` required and a code of the
//! project; `payload` as for tasks; `start_at` RFC 3339 (default now; the
//! forms `berth_core::time::parse_rfc3339` accepts);
//! `run_every` at least `min_schedule_interval_secs` and at most 10 years
//! (absent: run once); `run_times` ≥ 1; `end_at` RFC 3339, not before
//! `start_at`; `priority` 0–2; `timeout` 1–`max_timeout_secs` (default
//! `max_timeout_secs`); `label`/`cluster` at most 255 bytes. At most
//! `max_tasks_per_request` schedules per request.
//!
//! Accepted without being acted on, and reported in `Warning` headers when
//! their value asks for something: `name` and `sync` as for tasks, and
//! `delay` (the Python client sends `0`) when it is not 0. Unknown fields
//! are reported too.

use super::auth::Tenant;
use super::error::{ApiError, ApiResult};
use super::extract::{IdParam, JsonValue, QueryMap};
use super::task_fields::{take_client_extras, take_payload, MAX_TAG_BYTES};
use super::warnings::Warnings;
use super::wire::{self, Fields, BODY};
use crate::config::ServerConfig;
use crate::AppState;
use axum::extract::State;
use axum::Json;
use berth_core::time::{now_millis, parse_rfc3339};
use berth_store::{Millis, NewSchedule, ScheduleStatus};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// Longest `run_every` (ten years): beyond it a schedule is a typo.
pub const MAX_RUN_EVERY_SECS: i64 = 10 * 365 * 86_400;

fn time_field(f: &mut Fields, key: &str) -> ApiResult<Option<Millis>> {
    match f.take(key) {
        None => Ok(None),
        Some(Value::String(text)) => parse_rfc3339(&text).map(Some).map_err(|e| {
            ApiError::bad(format!(
                "{}.{key} must be an RFC 3339 time such as 2026-11-21T10:00:00Z, not {text:?}: {}",
                f.what(),
                e.reason()
            ))
        }),
        Some(other) => Err(ApiError::bad(format!(
            "{}.{key} must be an RFC 3339 time string, not {}",
            f.what(),
            wire::kind(&other)
        ))),
    }
}

fn parse_schedule(
    config: &ServerConfig,
    what: String,
    value: Value,
    now: Millis,
    warnings: &Warnings,
) -> ApiResult<NewSchedule> {
    let mut f = Fields::new(what, value)?;
    let code_name = f
        .string("code_name")?
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad(format!("{}.code_name is required", f.what())))?;
    take_client_extras(&mut f, &code_name)?;
    if f.int_in("delay", 0..=config.max_delay_secs)?
        .is_some_and(|delay| delay != 0)
    {
        f.warn(
            "delay",
            "berth queues a schedule's runs at their times without delay; use start_at; the field is ignored",
        );
    }
    let payload = take_payload(&mut f, config)?;
    let start_at = time_field(&mut f, "start_at")?.unwrap_or(now);
    let end_at = time_field(&mut f, "end_at")?;
    let run_every = f.int_in(
        "run_every",
        config.min_schedule_interval_secs.max(1)..=MAX_RUN_EVERY_SECS,
    )?;
    let run_times = f.int_in("run_times", 1..=i64::MAX)?;
    let priority = f.int_in("priority", 0..=2)?;
    let timeout = f
        .int_in("timeout", 1..=config.max_timeout_secs)?
        .unwrap_or(config.max_timeout_secs);
    let label = f.short_string("label", MAX_TAG_BYTES)?;
    let cluster = f.short_string("cluster", MAX_TAG_BYTES)?;
    let what = f.what().to_owned();
    f.finish(warnings);
    if let Some(end_at) = end_at {
        if end_at < start_at {
            return Err(ApiError::bad(format!(
                "{what}.end_at is before its start_at"
            )));
        }
    }
    Ok(NewSchedule {
        code_name,
        payload,
        start_at,
        run_every,
        run_times,
        end_at,
        priority,
        timeout,
        cluster,
        label,
    })
}

/// `POST /schedules`: `{"schedules": [...]}`. Every schedule is validated,
/// and every code checked, before any is stored; so a request with one bad
/// schedule stores none.
pub async fn create(
    tenant: Tenant,
    State(state): State<AppState>,
    warnings: Warnings,
    JsonValue(body): JsonValue,
) -> ApiResult<Json<Value>> {
    let config = &state.config;
    let now = now_millis();
    let mut f = Fields::new(BODY, body)?;
    let schedules = match f.take("schedules") {
        Some(Value::Array(list)) => list,
        Some(other) => {
            return Err(ApiError::bad(format!(
                "schedules must be an array, not {}",
                wire::kind(&other)
            )))
        }
        None => return Err(ApiError::bad("the body needs \"schedules\": [...]")),
    };
    f.finish(&warnings);
    if schedules.is_empty() {
        return Err(ApiError::bad(
            "schedules is empty: give at least one schedule",
        ));
    }
    if schedules.len() > config.max_tasks_per_request {
        return Err(ApiError::bad(format!(
            "{} schedules in one request; at most {} are allowed",
            schedules.len(),
            config.max_tasks_per_request
        )));
    }
    let specs = schedules
        .into_iter()
        .enumerate()
        .map(|(i, s)| parse_schedule(config, format!("schedules[{i}]"), s, now, &warnings))
        .collect::<ApiResult<Vec<_>>>()?;
    let names: BTreeSet<&str> = specs.iter().map(|s| s.code_name.as_str()).collect();
    for name in names {
        if state
            .store
            .code_by_name(&tenant.project_id, name)
            .await?
            .is_none()
        {
            return Err(ApiError::not_found(format!("code not found: {name:?}")));
        }
    }
    let mut ids = Vec::with_capacity(specs.len());
    for spec in &specs {
        match state
            .store
            .create_schedule(&tenant.project_id, spec, now)
            .await
        {
            Ok(schedule) => ids.push(schedule.id),
            Err(e) => {
                // A code deleted meanwhile: undo what this request made, so
                // that it still stores all or nothing (as far as it can).
                for id in &ids {
                    if let Err(undo) = state
                        .store
                        .cancel_schedule(&tenant.project_id, id, now)
                        .await
                    {
                        tracing::warn!(schedule = %id, error = %undo, "undoing a schedule failed");
                    }
                }
                return Err(e.into());
            }
        }
    }
    state.dispatch.schedules_changed();
    let schedules: Vec<Value> = ids.iter().map(|id| json!({ "id": id })).collect();
    Ok(Json(json!({ "msg": "Scheduled", "schedules": schedules })))
}

/// `GET /schedules`, newest first.
pub async fn list(
    tenant: Tenant,
    State(state): State<AppState>,
    query: QueryMap,
) -> ApiResult<Json<Value>> {
    let page = query.page()?;
    let schedules = state.store.schedules(&tenant.project_id, page).await?;
    let schedules: Vec<Value> = schedules.iter().map(wire::schedule).collect();
    Ok(Json(json!({ "schedules": schedules })))
}

fn no_schedule(id: &str) -> ApiError {
    ApiError::not_found(format!("schedule not found: {id:?}"))
}

/// `GET /schedules/{id}`.
pub async fn get(
    tenant: Tenant,
    State(state): State<AppState>,
    IdParam(id): IdParam,
) -> ApiResult<Json<Value>> {
    let schedule = state
        .store
        .schedule(&tenant.project_id, &id)
        .await?
        .ok_or_else(|| no_schedule(&id))?;
    Ok(Json(wire::schedule(&schedule)))
}

/// `POST /schedules/{id}/cancel`. Cancelling a cancelled schedule again is
/// a success; one that has completed is 409.
pub async fn cancel(
    tenant: Tenant,
    State(state): State<AppState>,
    IdParam(id): IdParam,
) -> ApiResult<Json<Value>> {
    let schedule = state
        .store
        .cancel_schedule(&tenant.project_id, &id, now_millis())
        .await?
        .ok_or_else(|| no_schedule(&id))?;
    if schedule.status == ScheduleStatus::Complete {
        return Err(ApiError::Conflict(
            "schedule has already completed".to_owned(),
        ));
    }
    state.dispatch.schedules_changed();
    Ok(Json(wire::msg("Cancelled")))
}
