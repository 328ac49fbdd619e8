//! The IronWorker v2 HTTP API, so that existing IronWorker clients work
//! unchanged: every route is under `/2/projects/{project_id}/`, needs a
//! token of that project (see [`auth`]), and answers JSON; every error is
//! `{"msg": "…"}` (see [`error`]), including unknown routes, wrong methods,
//! bad JSON and oversized bodies. A request that is accepted with fields
//! berth does not know or does not act on says so in `Warning` headers
//! (see [`warnings`]), so that clients written for IronWorker work
//! unchanged.

mod auth;
mod codes;
mod error;
mod extract;
mod networks;
mod package;
mod placement_fields;
mod schedules;
mod task_fields;
mod tasks;
mod warnings;
mod wire;

use crate::AppState;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::http::{Method, Uri};
use axum::routing::{get, post};
use axum::Router;
use error::ApiError;

/// Room for the `data` part and multipart framing beside a package of
/// `max_package_bytes`.
pub const UPLOAD_SLACK_BYTES: usize = 1024 * 1024;

fn project(path: &str) -> String {
    format!("/2/projects/{{project_id}}{path}")
}

/// Every route under `/2/projects/{project_id}/`.
///
/// Bodies are bounded: JSON bodies at `max_json_bytes`, code uploads at
/// `max_package_bytes` plus `UPLOAD_SLACK_BYTES`, webhook bodies (which
/// are a payload) at `max_payload_bytes`; beyond that → 413.
pub fn router(state: AppState) -> Router {
    let config = state.config.clone();
    let upload_limit = config.max_package_bytes.saturating_add(UPLOAD_SLACK_BYTES);
    Router::new()
        .route(
            &project("/codes"),
            get(codes::list).post(codes::upload.layer(DefaultBodyLimit::max(upload_limit))),
        )
        .route(
            &project("/codes/{id}"),
            get(codes::get).delete(codes::delete),
        )
        .route(&project("/codes/{id}/revisions"), get(codes::revisions))
        .route(&project("/codes/{id}/download"), get(codes::download))
        .route(&project("/codes/{id}/stats"), get(codes::stats))
        .route(&project("/codes/{id}/pause_task_queue"), post(codes::pause))
        .route(
            &project("/codes/{id}/resume_task_queue"),
            post(codes::resume),
        )
        .route(&project("/codes/{id}/cancel_all"), post(tasks::cancel_all))
        .route(&project("/tasks"), get(tasks::list).post(tasks::queue))
        .route(
            &project("/tasks/webhook"),
            post(tasks::webhook.layer(DefaultBodyLimit::max(config.max_payload_bytes))),
        )
        .route(&project("/tasks/{id}"), get(tasks::get))
        .route(&project("/tasks/{id}/log"), get(tasks::log))
        // IronWorker's clients read a task's output here too (`stdout()`,
        // `tasksStdout`); berth keeps one log of stdout and stderr.
        .route(&project("/tasks/{id}/outlog"), get(tasks::log))
        .route(&project("/tasks/{id}/cancel"), post(tasks::cancel))
        .route(&project("/tasks/{id}/retry"), post(tasks::retry))
        .route(&project("/tasks/{id}/progress"), post(tasks::progress))
        .route(
            &project("/schedules"),
            get(schedules::list).post(schedules::create),
        )
        .route(&project("/schedules/{id}"), get(schedules::get))
        .route(&project("/schedules/{id}/cancel"), post(schedules::cancel))
        .route(
            &project("/networks"),
            get(networks::list).post(networks::create),
        )
        .route(
            &project("/networks/{id}"),
            get(networks::get).delete(networks::delete),
        )
        .nest("/v1", crate::fleet::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(config.max_json_bytes))
        .layer(axum::middleware::from_fn(warnings::layer))
        .with_state(state)
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no such API route: {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}
