//! Column lists and the mapping of rows to model types, in one place so the
//! SELECTs and the decoders cannot drift apart.

use crate::error::StoreError;
use crate::model::*;
use sqlx::any::AnyRow;
use sqlx::Row;
use std::collections::BTreeMap;

/// Every column of `tasks`, unqualified (also valid in `RETURNING`).
pub(crate) const TASK_COLUMNS: &str = "id, project_id, code_id, code_name, code_rev, status, \
     msg, payload, priority, timeout, delay, cluster, label, schedule_id, original_task_id, \
     retry_count, infra_failures, percent, exit_code, created_at, updated_at, eligible_at, \
     start_time, end_time, attempt, agent, cancel_requested, placement, reserved, node_name";

/// Every column of `code_revisions`, for a query that names it `r`.
pub(crate) const REVISION_COLUMNS: &str = "r.id, r.code_id, r.project_id, r.rev, r.name, \
     r.image, r.runtime, r.file_name, r.command, r.config, r.env_vars, r.max_concurrency, \
     r.retries, r.retries_delay, r.default_priority, r.package_sha256, r.package_size, \
     r.created_at, r.placement, r.network";

/// A code's own columns, for a query that names `codes` `c` and joins its
/// latest revision as `r` (select them with [`REVISION_COLUMNS`]).
pub(crate) const CODE_COLUMNS: &str = "c.paused AS code_paused, c.created_at AS code_created_at";

/// Every column of `schedules`.
pub(crate) const SCHEDULE_COLUMNS: &str = "id, project_id, code_name, payload, start_at, \
     run_every, run_times, end_at, priority, timeout, cluster, label, status, next_start, \
     last_run_time, run_count, created_at, updated_at";

/// A JSON column decoded into its type.
pub(crate) fn json_column<T: serde::de::DeserializeOwned>(
    row: &AnyRow,
    table: &'static str,
    column: &str,
) -> Result<T, StoreError> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|e| corrupt(table, format!("{column}: {e}")))
}

pub(crate) fn corrupt(table: &'static str, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        table,
        detail: detail.into(),
    }
}

pub(crate) fn task(row: &AnyRow) -> Result<Task, StoreError> {
    let status: String = row.try_get("status")?;
    let status = status.parse().map_err(|e: String| corrupt("tasks", e))?;
    Ok(Task {
        id: row.try_get("id")?,
        project_id: row.try_get("project_id")?,
        code_id: row.try_get("code_id")?,
        code_name: row.try_get("code_name")?,
        code_rev: row.try_get("code_rev")?,
        status,
        msg: row.try_get("msg")?,
        payload: row.try_get("payload")?,
        priority: row.try_get("priority")?,
        timeout: row.try_get("timeout")?,
        delay: row.try_get("delay")?,
        cluster: row.try_get("cluster")?,
        label: row.try_get("label")?,
        schedule_id: row.try_get("schedule_id")?,
        original_task_id: row.try_get("original_task_id")?,
        retry_count: row.try_get("retry_count")?,
        infra_failures: row.try_get("infra_failures")?,
        percent: row.try_get("percent")?,
        exit_code: row.try_get("exit_code")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        eligible_at: row.try_get("eligible_at")?,
        start_time: row.try_get("start_time")?,
        end_time: row.try_get("end_time")?,
        attempt: row.try_get("attempt")?,
        agent: row.try_get("agent")?,
        placement: json_column(row, "tasks", "placement")?,
        reserved: row
            .try_get::<Option<String>, _>("reserved")?
            .map(|text| serde_json::from_str(&text))
            .transpose()
            .map_err(|e| corrupt("tasks", format!("reserved: {e}")))?,
        node_name: row.try_get("node_name")?,
        cancel_requested: row.try_get::<i64, _>("cancel_requested")? != 0,
    })
}

pub(crate) fn revision(row: &AnyRow) -> Result<CodeRevision, StoreError> {
    let env_vars: String = row.try_get("env_vars")?;
    let env_vars: BTreeMap<String, String> = serde_json::from_str(&env_vars)
        .map_err(|e| corrupt("code_revisions", format!("env_vars: {e}")))?;
    Ok(CodeRevision {
        code_id: row.try_get("code_id")?,
        id: row.try_get("id")?,
        project_id: row.try_get("project_id")?,
        rev: row.try_get("rev")?,
        spec: NewCodeRevision {
            name: row.try_get("name")?,
            image: row.try_get("image")?,
            runtime: row.try_get("runtime")?,
            file_name: row.try_get("file_name")?,
            command: row.try_get("command")?,
            config: row.try_get("config")?,
            env_vars,
            max_concurrency: row.try_get("max_concurrency")?,
            retries: row.try_get("retries")?,
            retries_delay: row.try_get("retries_delay")?,
            default_priority: row.try_get("default_priority")?,
            placement: json_column(row, "code_revisions", "placement")?,
            network: match row.try_get::<Option<String>, _>("network")? {
                None => None,
                Some(text) => Some(
                    text.parse()
                        .map_err(|e| corrupt("code_revisions", format!("network {text:?}: {e}")))?,
                ),
            },
        },
        package_sha256: row.try_get("package_sha256")?,
        package_size: row.try_get("package_size")?,
        created_at: row.try_get("created_at")?,
    })
}

/// A code from a row of [`CODE_COLUMNS`] and [`REVISION_COLUMNS`].
pub(crate) fn code(row: &AnyRow) -> Result<Code, StoreError> {
    let latest = revision(row)?;
    Ok(Code {
        id: latest.code_id.clone(),
        project_id: latest.project_id.clone(),
        name: latest.spec.name.clone(),
        paused: row.try_get::<i64, _>("code_paused")? != 0,
        created_at: row.try_get("code_created_at")?,
        latest,
    })
}

pub(crate) fn schedule(row: &AnyRow) -> Result<Schedule, StoreError> {
    let status: String = row.try_get("status")?;
    let status = status
        .parse()
        .map_err(|e: String| corrupt("schedules", e))?;
    Ok(Schedule {
        id: row.try_get("id")?,
        project_id: row.try_get("project_id")?,
        spec: NewSchedule {
            code_name: row.try_get("code_name")?,
            payload: row.try_get("payload")?,
            start_at: row.try_get("start_at")?,
            run_every: row.try_get("run_every")?,
            run_times: row.try_get("run_times")?,
            end_at: row.try_get("end_at")?,
            priority: row.try_get("priority")?,
            timeout: row.try_get("timeout")?,
            cluster: row.try_get("cluster")?,
            label: row.try_get("label")?,
        },
        status,
        next_start: row.try_get("next_start")?,
        last_run_time: row.try_get("last_run_time")?,
        run_count: row.try_get("run_count")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// `LIMIT`/`OFFSET` values of a page (negative inputs count as 0).
pub(crate) fn limit_offset(page: Page) -> (i64, i64) {
    let per_page = page.per_page.max(0);
    (per_page, page.page.max(0).saturating_mul(per_page))
}
