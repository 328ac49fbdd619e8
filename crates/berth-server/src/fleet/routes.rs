//! The fleet's routes: joins and heartbeats from hosts, and the operators'
//! view and verbs.

use super::auth::{Bearer, Joiner, Operator};
use super::check;
use super::error::FleetError;
use crate::AppState;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{Method, Uri};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use berth_api::fleet::{
    Heartbeat, HeartbeatAccepted, HostReport, JoinAccepted, JoinRequest, LabelChange, NodeInfo,
    NodeState,
};
use berth_store::{Node, NodeJoin};

/// `/fleet/join`, `/fleet/heartbeat` and `/nodes/…`, nested under `/v1`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/fleet/join", post(join))
        .route("/fleet/heartbeat", post(heartbeat))
        .route("/nodes", get(list))
        .route("/nodes/{name}", get(inspect).delete(remove))
        .route("/nodes/{name}/drain", post(drain))
        .route("/nodes/{name}/undrain", post(undrain))
        .route("/nodes/{name}/labels", put(label))
        .route("/servers", get(super::servers::list))
        .route("/pools", get(super::pools::list))
        .route(
            "/pools/{name}",
            put(super::pools::set).delete(super::pools::remove),
        )
        .fallback(not_found)
}

/// Hosts in the fleet, as this server last read them (for the heartbeat
/// interval).
fn fleet_size(state: &AppState) -> usize {
    state.dispatch.fleet_size()
}

async fn not_found(method: Method, uri: Uri) -> FleetError {
    FleetError::not_found(format!("no such API route: {method} {}", uri.path()))
}

/// A JSON body, its rejection (bad JSON, a negative figure, an unknown
/// field) a 400 in berth's error body.
fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, FleetError> {
    body.map(|Json(value)| value)
        .map_err(|e| FleetError::invalid(e.body_text()))
}

fn report_json(report: &HostReport) -> Result<String, FleetError> {
    serde_json::to_string(report).map_err(|e| FleetError::invalid(e.to_string()))
}

async fn join(
    State(state): State<AppState>,
    _: Joiner,
    request: Result<Json<JoinRequest>, JsonRejection>,
) -> Result<Json<JoinAccepted>, FleetError> {
    let request = body(request)?;
    check::join(&request)?;
    let (node, heartbeat_token) = state
        .store
        .join_node(&NodeJoin {
            name: request.name.clone(),
            node_id: request.node_id.clone(),
            address: request.address.clone(),
            credential: request.credential.clone(),
            report: report_json(&request.report)?,
        })
        .await?;
    tracing::info!(node = %node.name, id = %node.id, address = %node.address, "host joined");
    state.dispatch.host_returned(&node.id);
    Ok(Json(JoinAccepted {
        node_id: node.id,
        heartbeat_token,
        heartbeat_interval_ms: millis(state.config.fleet.interval_for(fleet_size(&state))),
        down_after_ms: millis(state.config.fleet.down_after_for(fleet_size(&state))),
    }))
}

async fn heartbeat(
    State(state): State<AppState>,
    Bearer(token): Bearer,
    beat: Result<Json<Heartbeat>, JsonRejection>,
) -> Result<Json<HeartbeatAccepted>, FleetError> {
    let beat = body(beat)?;
    check::report(&beat.report)?;
    let report = report_json(&beat.report)?;
    let Some(outcome) = state.heartbeats.record(beat.node_id, token, report).await? else {
        return Err(FleetError::unauthorized(
            "no host of this fleet has this id and token: join again",
        ));
    };
    if outcome.was_down {
        tracing::warn!(node = %outcome.name, "a host marked down is back");
        state.dispatch.host_returned(&outcome.node_id);
    }
    // The heartbeat has just brought the host up.
    let state_now = if outcome.drained {
        NodeState::Draining
    } else {
        NodeState::Ready
    };
    // Without a read of the fleet the host is told nothing of its
    // overlays (and changes nothing), never "none".
    let overlays = match state.dispatch.overlays.view(&state.store).await {
        Ok(view) => Some(view.for_host(&outcome.node_id)),
        Err(e) => {
            tracing::warn!(node = %outcome.name, "reading the fleet's overlay networks: {e}");
            None
        }
    };
    Ok(Json(HeartbeatAccepted {
        heartbeat_interval_ms: millis(state.config.fleet.interval_for(fleet_size(&state))),
        state: state_now,
        overlays,
    }))
}

async fn list(
    State(state): State<AppState>,
    _: Operator,
) -> Result<Json<Vec<NodeInfo>>, FleetError> {
    let nodes = state.store.nodes().await?;
    Ok(Json(nodes.iter().map(info).collect::<Result<_, _>>()?))
}

async fn inspect(
    State(state): State<AppState>,
    _: Operator,
    Path(name): Path<String>,
) -> Result<Json<NodeInfo>, FleetError> {
    let node = state
        .store
        .node_by_name(&name)
        .await?
        .ok_or_else(|| no_host(&name))?;
    Ok(Json(info(&node)?))
}

async fn drain(
    State(state): State<AppState>,
    _: Operator,
    Path(name): Path<String>,
) -> Result<Json<NodeInfo>, FleetError> {
    set_drained(state, name, true).await
}

async fn undrain(
    State(state): State<AppState>,
    _: Operator,
    Path(name): Path<String>,
) -> Result<Json<NodeInfo>, FleetError> {
    set_drained(state, name, false).await
}

async fn set_drained(
    state: AppState,
    name: String,
    drained: bool,
) -> Result<Json<NodeInfo>, FleetError> {
    let node = state
        .store
        .set_node_drained(&name, drained)
        .await?
        .ok_or_else(|| no_host(&name))?;
    tracing::info!(node = %name, drained, "host drain changed");
    state.dispatch.fleet_changed();
    Ok(Json(info(&node)?))
}

async fn label(
    State(state): State<AppState>,
    _: Operator,
    Path(name): Path<String>,
    change: Result<Json<LabelChange>, JsonRejection>,
) -> Result<Json<NodeInfo>, FleetError> {
    let change = body(change)?;
    check::labels(&change.set)?;
    let node = state
        .store
        .change_node_labels(&name, &change.set, &change.remove)
        .await?
        .ok_or_else(|| no_host(&name))?;
    state.dispatch.fleet_changed();
    Ok(Json(info(&node)?))
}

async fn remove(
    State(state): State<AppState>,
    _: Operator,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, FleetError> {
    if !state.store.remove_node(&name).await? {
        return Err(no_host(&name));
    }
    tracing::info!(node = %name, "host removed from the fleet");
    state.dispatch.fleet_changed();
    Ok(Json(serde_json::json!({ "removed": name })))
}

fn no_host(name: &str) -> FleetError {
    FleetError::not_found(format!("no host named {name:?} in this fleet"))
}

fn node_state(node: &Node) -> NodeState {
    if node.down {
        NodeState::Down
    } else if node.drained {
        NodeState::Draining
    } else {
        NodeState::Ready
    }
}

/// A stored host as the API shows it: its labels with the operator's on top.
fn info(node: &Node) -> Result<NodeInfo, FleetError> {
    let report: HostReport = serde_json::from_str(&node.report).map_err(|e| {
        FleetError::new(
            berth_core::ErrorCode::StoreCorrupt,
            format!("host {}: its stored report does not parse: {e}", node.name),
        )
    })?;
    let mut labels = report.labels.clone();
    labels.extend(node.operator_labels.clone());
    Ok(NodeInfo {
        id: node.id.clone(),
        name: node.name.clone(),
        address: node.address.clone(),
        state: node_state(node),
        drained: node.drained,
        labels,
        operator_labels: node.operator_labels.clone(),
        report,
        joined_at_ms: node.joined_at,
        last_heartbeat_ms: node.last_heartbeat,
    })
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
