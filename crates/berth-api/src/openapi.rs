//! The OpenAPI 3.1 document of the agent's API, generated from the types
//! of this crate: the agent serves it at `/v1/openapi.json`, and a test
//! checks real answers of a real agent against its schemas.
//!
//! The functions below are never called: they are the place each route's
//! documentation is attached to, since the handlers live in the agent.

#![allow(dead_code)]

use crate::fleet::{OverlayMember, OverlaySpec};
use crate::{
    Allocated, Capacity, ContainerState, ContainerView, CreateContainer, DeleteQuery, ErrorBody,
    Event, EventKind, EventsQuery, ImportImageQuery, InlineFile, KillReason, ListQuery, LogsQuery,
    NodeView, Ping, PruneReport, RemoveImageQuery, SignalQuery, Used, WaitQuery,
};
use berth_core::spec::{
    BindMount, Limits, NetworkMode, Rlimit, RlimitResource, Scratch, SwapLimit,
};
use berth_core::{
    ByteSize, CgroupMetrics, ContainerId, ContainerResult, CpuQuota, ErrorCode, ErrorReport,
    ImageSummary,
};
use std::sync::OnceLock;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The generated document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "berth agent API",
        description = "The host agent's API: containers run by detached shims, images, the node, \
events. On the unix socket no credentials are needed; on TCP every request needs \
`Authorization: Bearer <token>`. Every error is `{\"error\":{\"code\",\"message\",\"retryable\"}}` \
with a stable code.",
    ),
    paths(
        ping, openapi_document, list_containers, create_container, get_container,
        delete_container, wait_container, container_logs, stop_container, kill_container,
        container_metrics, list_images, import_image, remove_image, prune_images, node, events,
        prometheus,
    ),
    components(schemas(
        CreateContainer, InlineFile, ContainerView, ContainerState, KillReason, ContainerResult,
        ErrorBody, ErrorReport, ErrorCode, NodeView, Capacity, Allocated, Used, CgroupMetrics,
        Event, EventKind, Ping, ImageSummary, PruneReport, Limits, SwapLimit, BindMount, NetworkMode, Rlimit,
        RlimitResource, Scratch, ByteSize, CpuQuota, ContainerId, OverlaySpec, OverlayMember,
    )),
    modifiers(&BearerOnTcp),
)]
pub struct AgentApi;

/// Documents the bearer token that TCP listeners require.
struct BearerOnTcp;

impl Modify for BearerOnTcp {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer_on_tcp",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as JSON, built once.
pub fn json() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        // Serialising a document of plain maps and strings cannot fail.
        AgentApi::openapi()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    })
}

/// The document as a value, for tests that check answers against it.
pub fn document() -> serde_json::Value {
    serde_json::to_value(AgentApi::openapi()).unwrap_or_default()
}

#[utoipa::path(get, path = "/v1/ping", tag = "system",
    responses((status = 200, description = "The agent answers", body = Ping)))]
fn ping() {}

#[utoipa::path(get, path = "/v1/openapi.json", tag = "system",
    responses((status = 200, description = "This document", content_type = "application/json")))]
fn openapi_document() {}

#[utoipa::path(get, path = "/v1/containers", tag = "containers", params(ListQuery),
    responses(
        (status = 200, description = "The containers the agent knows", body = [ContainerView]),
        (status = 400, description = "A malformed query", body = ErrorBody),
    ))]
fn list_containers() {}

#[utoipa::path(post, path = "/v1/containers", tag = "containers", request_body = CreateContainer,
    responses(
        (status = 201, description = "Created and started (or failed to start: see `state` and `error`)", body = ContainerView),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 404, description = "No such image", body = ErrorBody),
        (status = 409, description = "The id is taken, or the node's memory is fully requested", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 422, description = "A limit this host cannot enforce", body = ErrorBody),
        (status = 503, description = "A host fault; retrying may succeed", body = ErrorBody),
    ))]
fn create_container() {}

#[utoipa::path(get, path = "/v1/containers/{id}", tag = "containers",
    params(("id" = String, Path, description = "Container id")),
    responses(
        (status = 200, description = "The container", body = ContainerView),
        (status = 404, description = "No such container", body = ErrorBody),
    ))]
fn get_container() {}

#[utoipa::path(delete, path = "/v1/containers/{id}", tag = "containers",
    params(("id" = String, Path, description = "Container id"), DeleteQuery),
    responses(
        (status = 204, description = "Removed with all its files"),
        (status = 404, description = "No such container", body = ErrorBody),
        (status = 409, description = "Still running (use force)", body = ErrorBody),
    ))]
fn delete_container() {}

#[utoipa::path(get, path = "/v1/containers/{id}/wait", tag = "containers",
    params(("id" = String, Path, description = "Container id"), WaitQuery),
    responses(
        (status = 200, description = "The container once it ended, or when the timeout passed", body = ContainerView),
        (status = 404, description = "No such container", body = ErrorBody),
    ))]
fn wait_container() {}

#[utoipa::path(get, path = "/v1/containers/{id}/logs", tag = "containers",
    params(("id" = String, Path, description = "Container id"), LogsQuery),
    responses(
        (status = 200, description = "The output log from `offset` (header `x-berth-log-offset` echoes it). The log of an ended container that lost output (past its cap, or to a failed write such as a full disk) ends with one more line, outside the file and its offsets: `[berth: N bytes of output were dropped: WHY]`", content_type = "application/octet-stream"),
        (status = 404, description = "No such container", body = ErrorBody),
    ))]
fn container_logs() {}

#[utoipa::path(post, path = "/v1/containers/{id}/stop", tag = "containers",
    params(("id" = String, Path, description = "Container id"), SignalQuery),
    responses(
        (status = 200, description = "The container, ended", body = ContainerView),
        (status = 404, description = "No such container", body = ErrorBody),
    ))]
fn stop_container() {}

#[utoipa::path(post, path = "/v1/containers/{id}/kill", tag = "containers",
    params(("id" = String, Path, description = "Container id"), SignalQuery),
    responses(
        (status = 204, description = "The signal was sent"),
        (status = 404, description = "No such container", body = ErrorBody),
        (status = 409, description = "Not running", body = ErrorBody),
    ))]
fn kill_container() {}

#[utoipa::path(get, path = "/v1/containers/{id}/metrics", tag = "containers",
    params(("id" = String, Path, description = "Container id")),
    responses(
        (status = 200, description = "Its cgroups' counters now", body = CgroupMetrics),
        (status = 409, description = "Not running", body = ErrorBody),
    ))]
fn container_metrics() {}

#[utoipa::path(get, path = "/v1/images", tag = "images",
    responses((status = 200, description = "The images on this node", body = [ImageSummary])))]
fn list_images() {}

#[utoipa::path(post, path = "/v1/images", tag = "images", params(ImportImageQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "A rootfs tar (plain, gzip or zstd), `docker save` output or an OCI layout"),
    responses(
        (status = 201, description = "Imported", body = ImageSummary),
        (status = 400, description = "A malformed or hostile archive", body = ErrorBody),
        (status = 413, description = "Over the upload limit", body = ErrorBody),
    ))]
fn import_image() {}

#[utoipa::path(delete, path = "/v1/images/{reference}", tag = "images",
    params(("reference" = String, Path, description = "`name[:tag]`, percent-encoded"), RemoveImageQuery),
    responses(
        (status = 204, description = "The tag is gone (its layers stay until `POST /v1/images/prune`)"),
        (status = 404, description = "No such image", body = ErrorBody),
        (status = 409, description = "In use by a container", body = ErrorBody),
    ))]
fn remove_image() {}

#[utoipa::path(post, path = "/v1/images/prune", tag = "images",
    responses((status = 200, description = "Deleted the layers and blobs that no image and no container uses, and leftovers of crashed imports", body = PruneReport)))]
fn prune_images() {}

#[utoipa::path(get, path = "/v1/node", tag = "system",
    responses((status = 200, description = "Capacity, allocations and use of this node", body = NodeView)))]
fn node() {}

#[utoipa::path(get, path = "/v1/events", tag = "system", params(EventsQuery),
    responses((status = 200, description = "Newline-delimited events", body = Event, content_type = "application/x-ndjson")))]
fn events() {}

#[utoipa::path(get, path = "/metrics", tag = "system",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
fn prometheus() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_names_every_route_and_schema() {
        let doc = document();
        let paths = doc["paths"].as_object().expect("paths");
        for route in [
            "/v1/containers",
            "/v1/containers/{id}",
            "/v1/containers/{id}/wait",
            "/v1/containers/{id}/logs",
            "/v1/containers/{id}/stop",
            "/v1/containers/{id}/kill",
            "/v1/images",
            "/v1/node",
            "/v1/events",
        ] {
            assert!(paths.contains_key(route), "{route} is missing");
        }
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        for schema in [
            "CreateContainer",
            "ContainerView",
            "ErrorBody",
            "NodeView",
            "Limits",
        ] {
            assert!(schemas.contains_key(schema), "{schema} is missing");
        }
        assert!(json().starts_with('{'));
    }
}
