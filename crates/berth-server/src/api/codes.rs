//! `/codes`: uploading code revisions (image form and classic zip form),
//! listing, revisions, package download, stats, pausing the task queue.
//!
//! Validation limits of an upload's `data`:
//! - `name`: 1–255 bytes of ASCII letters, digits, `_ . - /` and spaces;
//!   it starts with a letter, digit or `_` and does not end with a space or
//!   `/`. (`/` is allowed because IronWorker Docker codes are named after
//!   their image, e.g. `iron/hello`; spaces because IronWorker allowed
//!   them.)
//! - `image` (or its synonym `stack`): an image reference as
//!   [`berth_core::ImageRef`] parses it; stored in canonical `name:tag`
//!   form. `runtime`: a stack the operator configured.
//! - `command`: at most 16 KiB, parsed as shell words (quotes must close).
//! - `file_name`: at most 1024 bytes, a regular file in the zip.
//! - `config`: a string, or any JSON object/array (stored as its JSON text).
//! - `env_vars`: an object of strings; names are non-empty, without `=` or
//!   NUL; at most 1000 of them.
//! - `max_concurrency`: 1–100000, or absent, `0` or `-1` for unlimited.
//! - `retries`: 0–10; `retries_delay`: 0–86400 s; `default_priority`: 0–2.
//! - the zip: at most `max_package_bytes`, see [`super::package`].
//!
//! What a project may keep: its packages, unpacked, take at most
//! `max_project_package_bytes` (an upload that would go over is refused
//! with 413, naming the limit and the usage, and stores nothing); each code
//! keeps its newest `code_revisions_kept` revisions, plus any a queued or
//! running task uses. Deleting a code, or a revision falling out of that
//! window, frees its package once no task needs it, here and (through the
//! dispatcher's sweep) on the agents.

use super::auth::Tenant;
use super::error::{ApiError, ApiResult};
use super::extract::{is_json, media_type, parse_json, IdParam, QueryMap};
use super::package::{self, PackageError};
use super::warnings::Warnings;
use super::wire::{self, Fields};
use crate::AppState;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_core::network::NetworkMode;
use berth_core::ImageRef;
use berth_store::{NewCodeRevision, NewPackage};
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub const MAX_NAME_BYTES: usize = 255;
pub const MAX_FILE_NAME_BYTES: usize = 1024;
pub const MAX_COMMAND_BYTES: usize = 16 * 1024;
pub const MAX_ENV_VARS: usize = 1000;
pub const MAX_RETRIES: i64 = 10;
pub const MAX_RETRIES_DELAY: i64 = 86_400;
pub const MAX_CONCURRENCY: i64 = 100_000;

/// What an upload request carried.
struct Upload {
    data: Value,
    file: Option<Vec<u8>>,
}

/// `POST /codes`: a new revision of a code.
pub async fn upload(
    tenant: Tenant,
    State(state): State<AppState>,
    warnings: Warnings,
    req: Request,
) -> ApiResult<Json<Value>> {
    let upload = read_upload(&state, req).await?;
    let spec = parse_spec(&state, upload.data, &warnings).await?;
    if let Some(NetworkMode::Named(network)) = &spec.network {
        if state
            .store
            .overlay(&tenant.project_id, network.as_str())
            .await?
            .is_none()
        {
            return Err(ApiError::bad(format!(
                "data.network {network}: the project has no network of that name (POST /networks makes one)"
            )));
        }
    }
    let package = match upload.file {
        Some(bytes) => Some(check_package(&state, &spec, bytes).await?),
        None if spec.runtime.is_some() => {
            return Err(ApiError::bad(
                "the classic form (runtime) needs a zip package in the multipart part \"file\"",
            ))
        }
        None => None,
    };
    let package = package.as_ref().map(|(data, unpacked)| NewPackage {
        data,
        unpacked_size: Some(i64::try_from(*unpacked).unwrap_or(i64::MAX)),
    });
    let code = state
        .store
        .push_code_limited(
            &tenant.project_id,
            &spec,
            package,
            state.config.code_limits(),
        )
        .await?;
    tracing::info!(project = %tenant.project_id, code = %code.id, rev = code.latest.rev, "code uploaded");
    Ok(Json(json!({
        "id": code.id,
        "msg": "Upload successful.",
        "status_code": 200,
        "rev": code.latest.rev,
    })))
}

/// Reads a multipart upload (`data` and optionally `file`) or a JSON body
/// (the data alone).
async fn read_upload(state: &AppState, req: Request) -> ApiResult<Upload> {
    let max_json = state.config.max_json_bytes;
    let max_package = state.config.max_package_bytes;
    match media_type(req.headers()).as_deref() {
        Some("multipart/form-data") => {}
        Some(media) if is_json(media) => {
            // The route admits a whole package; data alone is held to the
            // JSON limit, without buffering more than that.
            let bytes = axum::body::to_bytes(req.into_body(), max_json)
                .await
                .map_err(|e| {
                    let e = e.into_inner();
                    if e.downcast_ref::<http_body_util::LengthLimitError>().is_some()
                        || e.source().is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                    {
                        ApiError::TooLarge(format!(
                            "the request body is larger than {max_json} bytes"
                        ))
                    } else {
                        ApiError::bad(format!("could not read the request body: {e}"))
                    }
                })?;
            return Ok(Upload {
                data: parse_json(&bytes)?,
                file: None,
            });
        }
        Some(media) => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "send the upload as multipart/form-data (parts data and file) or application/json, not {media}"
            )))
        }
        None => {
            return Err(ApiError::UnsupportedMediaType(
                "send the upload as multipart/form-data (parts data and file) or application/json"
                    .to_owned(),
            ))
        }
    }
    let mut multipart = Multipart::from_request(req, &())
        .await
        .map_err(|e| ApiError::bad(format!("malformed multipart body: {}", e.body_text())))?;
    let mut data = None;
    let mut file = None;
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_owned();
        let (slot, limit) = match name.as_str() {
            "data" => (&mut data, max_json),
            "file" => (&mut file, max_package),
            other => {
                return Err(ApiError::bad(format!(
                    "unknown multipart part {other:?}: expected \"data\" (JSON) and \"file\" (zip)"
                )))
            }
        };
        if slot.is_some() {
            return Err(ApiError::bad(format!(
                "multipart part {name:?} appears twice"
            )));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
            if bytes.len() + chunk.len() > limit {
                return Err(ApiError::TooLarge(format!(
                    "multipart part {name:?} is larger than {limit} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        *slot = Some(bytes);
    }
    let data = data.ok_or_else(|| {
        ApiError::bad("the multipart body has no \"data\" part (the code's JSON description)")
    })?;
    Ok(Upload {
        data: parse_json(&data).map_err(|e| ApiError::bad(format!("part \"data\": {e}")))?,
        file,
    })
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge("the upload is larger than the server accepts".to_owned())
    } else {
        ApiError::bad(format!("malformed multipart body: {}", e.body_text()))
    }
}

/// Validates an upload's `data` into a revision (see the module docs).
async fn parse_spec(
    state: &AppState,
    data: Value,
    warnings: &Warnings,
) -> ApiResult<NewCodeRevision> {
    let mut f = Fields::new("data", data)?;
    let name = f
        .string("name")?
        .ok_or_else(|| ApiError::bad("data.name is required"))?;
    check_name(&name)?;
    let image = f.string("image")?;
    let stack = f.string("stack")?;
    let runtime = f.short_string("runtime", MAX_NAME_BYTES)?;
    let file_name = f.short_string("file_name", MAX_FILE_NAME_BYTES)?;
    let command = f.short_string("command", MAX_COMMAND_BYTES)?;
    let config = match f.take("config") {
        None => None,
        Some(Value::String(s)) => Some(s),
        Some(v @ (Value::Object(_) | Value::Array(_))) => Some(v.to_string()),
        Some(other) => {
            return Err(ApiError::bad(format!(
                "data.config must be a string or a JSON object, not {}",
                wire::kind(&other)
            )))
        }
    };
    let env_vars = match f.take("env_vars") {
        None => BTreeMap::new(),
        Some(v) => env_vars(v)?,
    };
    let max_concurrency = match f.int("max_concurrency")? {
        None | Some(0) | Some(-1) => None,
        Some(n) if (1..=MAX_CONCURRENCY).contains(&n) => Some(n),
        Some(n) => {
            return Err(ApiError::bad(format!(
                "data.max_concurrency must be between 1 and {MAX_CONCURRENCY} (or -1 for unlimited), not {n}"
            )))
        }
    };
    let retries = f.int_in("retries", 0..=MAX_RETRIES)?.unwrap_or(0);
    let retries_delay = f
        .int_in("retries_delay", 0..=MAX_RETRIES_DELAY)?
        .unwrap_or(0);
    let default_priority = f.int_in("default_priority", 0..=2)?.unwrap_or(0);
    let placement = super::placement_fields::take_placement(&mut f)?;
    let network = f
        .short_string("network", 80)?
        .map(|text| task_network(&text))
        .transpose()?;
    f.finish(warnings);

    if let Some(command) = &command {
        match shell_words::split(command) {
            Ok(words) if words.is_empty() => {
                return Err(ApiError::bad("data.command is empty"));
            }
            Ok(_) => {}
            Err(e) => {
                return Err(ApiError::bad(format!(
                    "data.command is not a valid shell command line: {e}"
                )))
            }
        }
    }
    if let Some(file_name) = &file_name {
        if file_name.is_empty() || package::normalize_file_name(file_name).is_empty() {
            return Err(ApiError::bad("data.file_name is empty"));
        }
    }
    let image = match (image, stack) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad(
                "data.image and data.stack are synonyms: give only one",
            ))
        }
        (Some(i), None) | (None, Some(i)) => Some(
            ImageRef::parse(&i)
                .map_err(|e| ApiError::bad(format!("data.image {i:?}: {e}")))?
                .to_string(),
        ),
        (None, None) => None,
    };
    match (&image, &runtime) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad(
                "give either data.image (image form) or data.runtime (classic form), not both",
            ))
        }
        (None, None) => {
            return Err(ApiError::bad(
                "data needs image (the image form) or runtime and file_name with a zip file (the classic form)",
            ))
        }
        (None, Some(runtime)) => {
            if state.store.stack(runtime).await?.is_none() {
                let known: Vec<String> = state
                    .store
                    .stacks()
                    .await?
                    .into_iter()
                    .map(|s| s.runtime)
                    .collect();
                return Err(ApiError::bad(if known.is_empty() {
                    format!("unknown runtime {runtime:?}: this server has no runtimes; use the image form")
                } else {
                    format!(
                        "unknown runtime {runtime:?}; known runtimes: {}",
                        known.join(", ")
                    )
                }));
            }
            if file_name.is_none() {
                return Err(ApiError::bad(
                    "data.file_name is required with a runtime: the file in the zip to run",
                ));
            }
            if command.is_some() {
                return Err(ApiError::bad(
                    "data.command belongs to the image form; a runtime runs file_name with its own command",
                ));
            }
        }
        (Some(_), None) => {}
    }
    Ok(NewCodeRevision {
        name,
        image,
        runtime,
        file_name,
        command,
        config,
        env_vars,
        max_concurrency,
        retries,
        retries_delay,
        default_priority,
        placement,
        network,
    })
}

/// The networks a task may run on: none, the host's bridge (each task cut
/// off from the others there), or one of the project's own overlay
/// networks (by name; [`upload`] checks the project has it). Not the
/// host's own network, another container's, a host's networks or CNI: a
/// project's code must not see the host or other projects' tasks.
fn task_network(text: &str) -> ApiResult<NetworkMode> {
    let mode: NetworkMode = text
        .parse()
        .map_err(|e: berth_core::spec::SpecError| ApiError::bad(format!("data.{e}")))?;
    match mode {
        NetworkMode::None | NetworkMode::Bridge | NetworkMode::Named(_) => Ok(mode),
        other => Err(ApiError::bad(format!(
            "data.network {other} is not allowed for tasks: give none, bridge or one of the project's networks"
        ))),
    }
}

/// See the module docs for the rule.
fn check_name(name: &str) -> ApiResult<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/' | ' ');
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    if name.len() > MAX_NAME_BYTES
        || !first_ok
        || !name.chars().all(ok_char)
        || name.ends_with(' ')
        || name.ends_with('/')
    {
        return Err(ApiError::bad(format!(
            "data.name {name:?} is not a valid code name: 1–{MAX_NAME_BYTES} letters, digits, '_', '.', '-', '/' or spaces, starting with a letter, digit or '_'"
        )));
    }
    Ok(())
}

fn env_vars(value: Value) -> ApiResult<BTreeMap<String, String>> {
    let Value::Object(map) = value else {
        return Err(ApiError::bad(format!(
            "data.env_vars must be an object of strings, not {}",
            wire::kind(&value)
        )));
    };
    if map.len() > MAX_ENV_VARS {
        return Err(ApiError::bad(format!(
            "data.env_vars has {} variables; at most {MAX_ENV_VARS} are allowed",
            map.len()
        )));
    }
    map.into_iter()
        .map(|(k, v)| {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(ApiError::bad(format!(
                    "data.env_vars: {k:?} is not a valid variable name"
                )));
            }
            match v {
                Value::String(s) if !s.contains('\0') => Ok((k, s)),
                Value::String(_) => Err(ApiError::bad(format!(
                    "data.env_vars.{k} contains a NUL character"
                ))),
                other => Err(ApiError::bad(format!(
                    "data.env_vars.{k} must be a string, not {}",
                    wire::kind(&other)
                ))),
            }
        })
        .collect()
}

/// Validates the zip (off the async workers: it decompresses everything)
/// and that `file_name`, when given, is a regular file in it. Returns it
/// with what it expands to.
async fn check_package(
    state: &AppState,
    spec: &NewCodeRevision,
    bytes: Vec<u8>,
) -> ApiResult<(Vec<u8>, u64)> {
    let max = state.config.max_package_bytes;
    if bytes.len() > max {
        return Err(ApiError::TooLarge(format!(
            "the package is {} bytes; at most {max} are allowed",
            bytes.len()
        )));
    }
    let max_uncompressed = (max as u64).saturating_mul(package::EXPANSION_FACTOR);
    let (bytes, result) = tokio::task::spawn_blocking(move || {
        let result = package::validate(&bytes, max_uncompressed);
        (bytes, result)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("package validation panicked: {e}")))?;
    let info = result.map_err(|e| match e {
        PackageError::TooLarge(_) => ApiError::TooLarge(e.to_string()),
        other => ApiError::bad(other.to_string()),
    })?;
    if let Some(file_name) = &spec.file_name {
        if !info.files.contains(package::normalize_file_name(file_name)) {
            return Err(ApiError::bad(
                PackageError::MissingFile(file_name.clone()).to_string(),
            ));
        }
    }
    Ok((bytes, info.uncompressed_bytes))
}

/// `GET /codes`.
pub async fn list(
    tenant: Tenant,
    State(state): State<AppState>,
    query: QueryMap,
) -> ApiResult<Json<Value>> {
    let page = query.page()?;
    let codes = state.store.codes(&tenant.project_id, page).await?;
    let codes: Vec<Value> = codes.iter().map(wire::code).collect();
    Ok(Json(json!({ "codes": codes })))
}

fn no_code(id: &str) -> ApiError {
    ApiError::not_found(format!("code not found: {id:?}"))
}

/// `GET /codes/{id}`.
pub async fn get(
    tenant: Tenant,
    State(state): State<AppState>,
    IdParam(id): IdParam,
) -> ApiResult<Json<Value>> {
    let code = state
        .store
        .code(&tenant.project_id, &id)
        .await?
        .ok_or_else(|| no_code(&id))?;
    Ok(Json(wire::code(&code)))
}

/// `DELETE /codes/{id}`: its queued tasks are cancelled by the store.
pub async fn delete(
    tenant: Tenant,
    State(state): State<AppState>,
    IdParam(id): IdParam,
) -> ApiResult<Json<Value>> {
    if !state.store.delete_code(&tenant.project_id, &id).await? {
        return Err(no_code(&id));
    }
    tracing::info!(project = %tenant.project_id, code = %id, "code deleted");
    state.dispatch.tasks_changed();
    // Its package images on the agents can go now.
    state.dispatch.garbage_changed();
    Ok(Json(wire::msg("Deleted")))
}

/// `GET /codes/{id}/revisions`, newest first.
pub async fn revisions(
    tenant: Tenant,
    State(state): State<AppState>,
    IdParam(id): IdParam,
    query: QueryMap,
) -> ApiResult<Json<Value>> {
    let page = query.page()?;
    let revisions = state
        .store
        .revisions(&tenant.project_id, &id, page)
        .await?
        .ok_or_else(|| no_code(&id))?;
    let revisions: Vec<Value> = revisions.iter().map(wire::revision).collect();
    Ok(Json(json!({ "revisions": revisions })))
}

/// `GET /codes/{id}/download[?revision=N]`: the zip of a revision (the
/// latest by default).
pub async fn download(
    tenant: Tenant,
    State(state): State<AppState>,
    IdParam(id): IdParam,
    query: QueryMap,
) -> ApiResult<Response> {
    let rev = query.int_in("revision", 1..=i64::MAX)?;
    let (revision, bytes) = state
        .store
        .package(&tenant.project_id, &id, rev)
        .await?
        .ok_or_else(|| match rev {
            Some(rev) => ApiError::not_found(format!("revision {rev} of code {id:?} not found")),
            None => no_code(&id),
        })?;
    if revision.package_sha256.is_none() {
        return Err(ApiError::not_found(format!(
            "revision {} of code {id:?} has no package",
            revision.rev
        )));
    }
    let file_name: String = revision
        .spec
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let disposition = format!("attachment; filename=\"{file_name}_{}.zip\"", revision.rev);
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zip"),
    );
    // Only ASCII letters, digits and `_.-` remain, so this cannot fail.
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// `GET /codes/{id}/stats`: task counts by status.
pub async fn stats(
    tenant: Tenant,
    State(state): State<AppState>,
    IdParam(id): IdParam,
) -> ApiResult<Json<Value>> {
    let stats = state
        .store
        .code_stats(&tenant.project_id, &id)
        .await?
        .ok_or_else(|| no_code(&id))?;
    Ok(Json(wire::stats(&stats)))
}

/// `POST /codes/{id}/pause_task_queue`.
pub async fn pause(
    tenant: Tenant,
    State(state): State<AppState>,
    IdParam(id): IdParam,
) -> ApiResult<Json<Value>> {
    set_paused(tenant, state, id, true).await
}

/// `POST /codes/{id}/resume_task_queue`.
pub async fn resume(
    tenant: Tenant,
    State(state): State<AppState>,
    IdParam(id): IdParam,
) -> ApiResult<Json<Value>> {
    set_paused(tenant, state, id, false).await
}

async fn set_paused(
    tenant: Tenant,
    state: AppState,
    id: String,
    paused: bool,
) -> ApiResult<Json<Value>> {
    if !state
        .store
        .set_paused(&tenant.project_id, &id, paused)
        .await?
    {
        return Err(no_code(&id));
    }
    // Resumed tasks may run now.
    state.dispatch.tasks_changed();
    Ok(Json(wire::msg(if paused { "Paused" } else { "Resumed" })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names() {
        for ok in ["hello", "hello_worker-2.1", "iron/hello", "My Worker", "_x"] {
            assert!(check_name(ok).is_ok(), "{ok:?} refused");
        }
        for bad in [
            "",
            " x",
            "x ",
            "-x",
            "/x",
            "x/",
            "a\"b",
            "a\nb",
            "é",
            &"x".repeat(256),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
