//! `GET /v1/servers`: the servers sharing the store and which one leads.

use super::auth::Operator;
use super::error::FleetError;
use crate::AppState;
use axum::extract::State;
use axum::Json;
use berth_api::fleet::{ServerInfo, ServerList, ServerState};
use berth_store::DISPATCH_LEASE;

/// A server not heard of for this long is shown `silent` (they say they
/// are there every second).
const SILENT_AFTER_MS: i64 = 5_000;

pub(super) async fn list(
    State(state): State<AppState>,
    _: Operator,
) -> Result<Json<ServerList>, FleetError> {
    let (servers, now) = state.store.servers().await?;
    let lease = state.store.lease(DISPATCH_LEASE).await?;
    let leader = lease
        .as_ref()
        .filter(|lease| lease.live)
        .map(|lease| lease.holder.as_str());
    let servers = servers
        .into_iter()
        .map(|server| {
            let ago = (now - server.last_seen).max(0);
            ServerInfo {
                leader: leader == Some(server.id.as_str()),
                state: if ago > SILENT_AFTER_MS {
                    ServerState::Silent
                } else {
                    ServerState::Up
                },
                started_at_ms: server.started_at,
                last_seen_ago_ms: ago,
                id: server.id,
                name: server.name,
                url: server.url,
                version: server.version,
            }
        })
        .collect();
    Ok(Json(ServerList {
        servers,
        term: lease.map(|lease| lease.token),
    }))
}
