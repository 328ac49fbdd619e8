//! The agent API of every hollow host, on one listener: each request is
//! routed to the host whose credential it carries (`Authorization: Bearer`,
//! as the server presents it to a real agent). Only what a server asks of
//! an agent is served; the answers have the real agent's shapes
//! ([`berth_api`]'s types, its error body and codes).

use super::host::{CreateRefusal, HollowHost};
use crate::error::ApiError;
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use berth_api::{
    ContainerView, CreateContainer, DeleteQuery, ImageRef, ImageSummary, ImportImageQuery,
    KillReason, ListQuery, LogsQuery, SignalQuery, WaitQuery,
};
use berth_core::ErrorCode;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The hosts, by the SHA-256 of their credential (a lookup that takes the
/// same time whatever the credential presented shares with a real one).
pub struct Hosts {
    by_credential: HashMap<[u8; 32], Arc<HollowHost>>,
}

impl Hosts {
    pub fn new(hosts: impl IntoIterator<Item = (String, Arc<HollowHost>)>) -> Hosts {
        Hosts {
            by_credential: hosts
                .into_iter()
                .map(|(credential, host)| (Sha256::digest(credential.as_bytes()).into(), host))
                .collect(),
        }
    }
}

/// The host a request is for.
struct Host(Arc<HollowHost>);

impl FromRequestParts<Arc<Hosts>> for Host {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, hosts: &Arc<Hosts>) -> Result<Self, ApiError> {
        let credential = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        let key: [u8; 32] = Sha256::digest(credential.as_bytes()).into();
        hosts
            .by_credential
            .get(&key)
            .cloned()
            .map(Host)
            .ok_or_else(|| {
                ApiError::new(ErrorCode::Unauthorized, "a host's bearer token is required")
            })
    }
}

pub fn router(hosts: Arc<Hosts>) -> Router {
    Router::new()
        .route("/v1/containers", get(list).post(create))
        .route("/v1/containers/{id}", get(inspect).delete(remove))
        .route("/v1/containers/{id}/wait", get(wait))
        .route("/v1/containers/{id}/logs", get(logs))
        .route("/v1/containers/{id}/stop", post(stop))
        .route("/v1/containers/{id}/kill", post(kill))
        .route("/v1/images", get(images).post(import_image))
        .route("/v1/images/{reference}", delete(remove_image))
        .fallback(|| async {
            ApiError::new(ErrorCode::NotFound, "no such API route (hollow host)")
        })
        .with_state(hosts)
}

fn no_container(id: &str) -> ApiError {
    ApiError::no_container(id)
}

async fn list(Host(host): Host, Query(query): Query<ListQuery>) -> Json<Vec<ContainerView>> {
    let label = query.label.as_deref().and_then(|l| l.split_once('='));
    Json(
        host.containers()
            .iter()
            .map(|c| c.view())
            .filter(|v| query.state.is_none_or(|s| v.state == s))
            .filter(|v| {
                label.is_none_or(|(k, val)| v.labels.get(k).map(String::as_str) == Some(val))
            })
            .collect(),
    )
}

async fn create(
    Host(host): Host,
    Json(request): Json<CreateContainer>,
) -> Result<(StatusCode, Json<ContainerView>), ApiError> {
    match host.create(&request) {
        Ok(view) => Ok((StatusCode::CREATED, Json(view))),
        Err(CreateRefusal::Exists) => Err(ApiError::new(
            ErrorCode::ContainerExists,
            "a container with this id exists",
        )),
        Err(CreateRefusal::ImageNotFound(image)) => Err(ApiError::new(
            ErrorCode::ImageNotFound,
            format!("no image {image} on this hollow host"),
        )),
    }
}

async fn inspect(
    Host(host): Host,
    Path(id): Path<String>,
) -> Result<Json<ContainerView>, ApiError> {
    let container = host.container(&id).ok_or_else(|| no_container(&id))?;
    Ok(Json(container.view()))
}

async fn remove(
    Host(host): Host,
    Path(id): Path<String>,
    Query(_): Query<DeleteQuery>,
) -> Result<StatusCode, ApiError> {
    if host.remove(&id) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_container(&id))
    }
}

async fn wait(
    Host(host): Host,
    Path(id): Path<String>,
    Query(query): Query<WaitQuery>,
) -> Result<Json<ContainerView>, ApiError> {
    let container = host.container(&id).ok_or_else(|| no_container(&id))?;
    let limit = query.timeout.unwrap_or(60.0).clamp(0.0, 3600.0);
    container.wait(Duration::from_secs_f64(limit)).await;
    Ok(Json(container.view()))
}

async fn logs(
    Host(host): Host,
    Path(id): Path<String>,
    Query(query): Query<LogsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let container = host.container(&id).ok_or_else(|| no_container(&id))?;
    let output = container.output();
    let from = usize::try_from(query.offset)
        .unwrap_or(usize::MAX)
        .min(output.len());
    Ok(output[from..].to_vec())
}

async fn stop(
    Host(host): Host,
    Path(id): Path<String>,
    Query(query): Query<SignalQuery>,
) -> Result<Json<ContainerView>, ApiError> {
    let container = host.container(&id).ok_or_else(|| no_container(&id))?;
    let signal = crate::shim::parse_signal(query.signal.as_deref().unwrap_or("TERM"))?;
    container.signal(
        signal,
        Some(KillReason {
            reason: crate::record::STOPPED.into(),
            message: format!("stopped through the API (signal {signal})"),
            at: crate::clock::now_ms(),
        }),
    );
    Ok(Json(container.view()))
}

async fn kill(
    Host(host): Host,
    Path(id): Path<String>,
    Query(query): Query<SignalQuery>,
) -> Result<StatusCode, ApiError> {
    let container = host.container(&id).ok_or_else(|| no_container(&id))?;
    if container.has_ended() {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            format!("container {id} is not running"),
        ));
    }
    let signal = crate::shim::parse_signal(query.signal.as_deref().unwrap_or("KILL"))?;
    container.signal(signal, None);
    Ok(StatusCode::NO_CONTENT)
}

fn summary(reference: &str) -> Option<ImageSummary> {
    Some(ImageSummary {
        reference: ImageRef::parse(reference).ok()?,
        id: "sha256:hollow".to_owned(),
        layers: 1,
        size_bytes: 0,
        created: None,
    })
}

async fn images(Host(host): Host) -> Json<Vec<ImageSummary>> {
    Json(host.images().iter().filter_map(|r| summary(r)).collect())
}

/// Takes the archive and keeps nothing of it but the reference.
async fn import_image(
    Host(host): Host,
    Query(query): Query<ImportImageQuery>,
    _archive: axum::body::Bytes,
) -> Result<(StatusCode, Json<ImageSummary>), ApiError> {
    let image = summary(&query.reference)
        .ok_or_else(|| ApiError::invalid(format!("reference {:?}", query.reference)))?;
    host.add_image(image.reference.to_string());
    Ok((StatusCode::CREATED, Json(image)))
}

async fn remove_image(
    Host(host): Host,
    Path(reference): Path<String>,
) -> Result<StatusCode, ApiError> {
    if host.remove_image(&reference) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            ErrorCode::ImageNotFound,
            format!("no image {reference} on this hollow host"),
        ))
    }
}
