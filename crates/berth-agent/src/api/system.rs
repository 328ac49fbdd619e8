//! Images, node, events, metrics, and the API's own description.

use super::extract::Params;
use crate::error::ApiError;
use crate::Agent;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_api::ImageSummary;
use berth_api::{
    Event, EventsQuery, ImportImageQuery, NodeView, Ping, PruneReport, RemoveImageQuery,
};
use berth_core::{ErrorCode, HasErrorCode, ImageRef};
use futures_util::StreamExt;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

pub async fn ping() -> Json<Ping> {
    Json(Ping {
        ok: true,
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })
}

/// The OpenAPI document of this API, generated from the contract's types.
pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        berth_api::openapi::json(),
    )
        .into_response()
}

pub async fn node(State(agent): State<Agent>) -> Result<Json<NodeView>, ApiError> {
    tokio::task::spawn_blocking(move || Json(crate::node::view(&agent)))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))
}

pub async fn prometheus(State(agent): State<Agent>) -> Result<Response, ApiError> {
    let text = tokio::task::spawn_blocking(move || crate::metrics::render(&agent))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

pub async fn list_images(State(agent): State<Agent>) -> Result<Json<Vec<ImageSummary>>, ApiError> {
    tokio::task::spawn_blocking(move || agent.images.list())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map(Json)
        .map_err(|e| ApiError::from_lib(&e))
}

/// Streams the body (any format `berth image import` takes) to a temp file
/// in the data dir, then imports it. The store is unchanged on any error.
pub async fn import_image(
    State(agent): State<Agent>,
    Params(query): Params<ImportImageQuery>,
    request: Request,
) -> Result<(StatusCode, Json<ImageSummary>), ApiError> {
    let reference = ImageRef::parse(&query.reference)
        .map_err(|e| ApiError::invalid(format!("reference: {e}")))?;
    let uploads = agent.config.agent_dir().path().join("uploads");
    tokio::fs::create_dir_all(&uploads)
        .await
        .map_err(|e| ApiError::io("creating the uploads dir", e))?;
    let upload = tempfile::Builder::new()
        .prefix("upload-")
        .tempfile_in(&uploads)
        .map_err(|e| ApiError::io("creating an upload file", e))?;
    let (file, path) = upload.into_parts();
    let mut file = tokio::fs::File::from_std(file);
    let max = agent.config.max_image_bytes;
    let mut received: u64 = 0;
    let mut body = request.into_body().into_data_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ApiError::invalid(format!("reading the upload: {e}")))?;
        received += chunk.len() as u64;
        if received > max {
            return Err(ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("image uploads are limited to {max} bytes"),
            ));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| ApiError::io("writing the upload", e))?;
    }
    file.flush()
        .await
        .map_err(|e| ApiError::io("writing the upload", e))?;
    drop(file);
    let _guard = agent.image_lock.lock().await;
    let this = agent.clone();
    let summary = tokio::task::spawn_blocking(move || {
        // `path` (a TempPath) removes the upload when dropped here.
        this.images
            .import(&reference, &path, &mut |_| {})
            .map_err(|e| {
                // The client sent a body, not a file: the agent's temp path
                // means nothing to it and tells it about the host.
                let upload = path.display().to_string();
                ApiError::new(
                    e.code(),
                    e.to_string().replace(&upload, "the uploaded archive"),
                )
            })
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok((StatusCode::CREATED, Json(summary)))
}

pub async fn remove_image(
    State(agent): State<Agent>,
    Path(reference): Path<String>,
    Params(query): Params<RemoveImageQuery>,
) -> Result<StatusCode, ApiError> {
    let reference =
        ImageRef::parse(&reference).map_err(|e| ApiError::invalid(format!("reference: {e}")))?;
    let _guard = agent.image_lock.lock().await;
    let this = agent.clone();
    tokio::task::spawn_blocking(move || this.images.remove(&reference, query.force))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::from_lib(&e))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes the blobs and unpacked layers that no image and no container
/// uses any more (after `DELETE /v1/images/…`, a removed image's layers
/// stay until this), and leftovers of crashed imports.
pub async fn prune_images(State(agent): State<Agent>) -> Result<Json<PruneReport>, ApiError> {
    let _guard = agent.image_lock.lock().await;
    let this = agent.clone();
    let report = tokio::task::spawn_blocking(move || this.images.prune())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::from_lib(&e))?;
    tracing::info!(
        layers = report.layers_removed,
        blobs = report.blobs_removed,
        bytes = report.bytes_freed,
        "pruned images"
    );
    Ok(Json(PruneReport {
        blobs_removed: report.blobs_removed as u64,
        layers_removed: report.layers_removed as u64,
        staging_removed: report.staging_removed as u64,
        bytes_freed: report.bytes_freed,
    }))
}

/// How often a quiet event stream sends an empty line.
const HEARTBEAT: Duration = Duration::from_secs(30);

/// Newline-delimited JSON events; with `follow`, the stream stays open and
/// carries new events as they happen (and an empty line every 30 s while
/// nothing happens).
pub async fn events(State(agent): State<Agent>, Params(query): Params<EventsQuery>) -> Response {
    struct Cursor {
        agent: Agent,
        since: u64,
        follow: bool,
        container: Option<String>,
        rx: tokio::sync::watch::Receiver<u64>,
    }
    let rx = agent.events.subscribe();
    let cursor = Cursor {
        agent,
        since: query.since,
        follow: query.follow,
        container: query.container,
        rx,
    };
    let stream = futures_util::stream::unfold(cursor, |mut c| async move {
        loop {
            // Marks the current value seen before reading, so an event
            // appended after the read wakes us.
            c.rx.borrow_and_update();
            let batch: Vec<Event> = c.agent.events.after(c.since, c.container.as_deref(), 1000);
            if let Some(last) = batch.last() {
                c.since = last.seq;
                let mut bytes = Vec::new();
                for event in &batch {
                    if serde_json::to_writer(&mut bytes, event).is_ok() {
                        bytes.push(b'\n');
                    }
                }
                return Some((Ok::<_, std::io::Error>(bytes), c));
            }
            if !c.follow {
                return None;
            }
            // A quiet stream sends an empty line every 30 s: a heartbeat
            // for the client, and the write that reveals a client that
            // went away (the stream then ends).
            let woke = tokio::time::timeout(HEARTBEAT, c.rx.changed()).await;
            if woke.is_err() {
                return Some((Ok(b"\n".to_vec()), c));
            }
        }
    });
    let mut response = Body::from_stream(stream).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/x-ndjson"),
    );
    response
}
