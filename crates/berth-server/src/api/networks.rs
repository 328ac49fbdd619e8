//! `/networks`: a project's overlay networks across the fleet (a berth
//! extension; IronWorker had none). A code names one in `network`; its
//! tasks then reach each other by task id from any host, each with an
//! address the server gives and keeps across retries.
//!
//! Body of a create: `name` (required; letters, digits, `_.-`, at most 64,
//! not `none`, `host`, `bridge` or `default`), `subnet` (an IPv4 network
//! inside the fleet's pool 10.128.0.0/11, /16 to /29; default: the pool's
//! next free /24), `internal` (no way out of the network; default false).
//! A project has at most [`MAX_NETWORKS_PER_PROJECT`].
//!
//! Subnets come from the pool only: a project must not be able to cover
//! addresses the hosts reach through their own routes (the server, a
//! resolver), which a bridge's route on each host would take over.

use super::auth::Tenant;
use super::error::{ApiError, ApiResult};
use super::extract::{IdParam, JsonValue};
use super::warnings::Warnings;
use super::wire::{self, Fields, BODY};
use crate::AppState;
use axum::extract::State;
use axum::Json;
use berth_core::network::NetworkName;
use berth_core::time::now_millis;
use berth_store::{NewOverlay, OverlayNetwork, FLEET_OVERLAY_POOL};
use ipnet::Ipv4Net;
use serde_json::{json, Value};

/// Overlay networks a project may have: subnets are the fleet's to share.
pub const MAX_NETWORKS_PER_PROJECT: usize = 64;
/// Largest and smallest subnets: a /16 holds 65,534 tasks; a /29, 5.
const WIDEST_PREFIX: u8 = 16;
const NARROWEST_PREFIX: u8 = 29;

/// `POST /networks`.
pub async fn create(
    tenant: Tenant,
    State(state): State<AppState>,
    warnings: Warnings,
    JsonValue(body): JsonValue,
) -> ApiResult<Json<Value>> {
    let mut f = Fields::new(BODY, body)?;
    let name = f
        .short_string("name", 64)?
        .ok_or_else(|| ApiError::bad("name is required"))?;
    let name = NetworkName::new(name).map_err(|e| ApiError::bad(e.to_string()))?;
    let subnet = f
        .string("subnet")?
        .map(|text| parse_subnet(&text))
        .transpose()?;
    let internal = f.bool("internal")?.unwrap_or(false);
    f.finish(&warnings);
    let network = state
        .store
        .create_overlay(
            &tenant.project_id,
            &NewOverlay {
                name: name.as_str().to_owned(),
                subnet,
                internal,
            },
            MAX_NETWORKS_PER_PROJECT,
            now_millis(),
        )
        .await?;
    tracing::info!(project = %tenant.project_id, network = %network.name, vni = network.vni, subnet = %network.subnet, "overlay network made");
    Ok(Json(shape(&network, None)))
}

/// `GET /networks`.
pub async fn list(tenant: Tenant, State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let networks = state.store.overlays(&tenant.project_id).await?;
    let networks: Vec<Value> = networks.iter().map(|n| shape(n, None)).collect();
    Ok(Json(json!({ "networks": networks })))
}

/// `GET /networks/{name}`: the network and its tasks now (being prepared
/// or running), with their addresses and hosts.
pub async fn get(
    tenant: Tenant,
    State(state): State<AppState>,
    IdParam(name): IdParam,
) -> ApiResult<Json<Value>> {
    let network = state
        .store
        .overlay(&tenant.project_id, &name)
        .await?
        .ok_or_else(|| no_network(&name))?;
    let hosts: std::collections::HashMap<String, String> = state
        .store
        .nodes()
        .await?
        .into_iter()
        .map(|node| (node.id, node.name))
        .collect();
    let members: Vec<Value> = state
        .store
        .overlay_members()
        .await?
        .into_iter()
        .filter(|m| m.project_id == tenant.project_id && m.network == network.name)
        .map(|m| {
            json!({
                "task_id": m.task_id,
                "address": m.address.to_string(),
                "node": hosts.get(&m.agent).unwrap_or(&m.agent),
            })
        })
        .collect();
    Ok(Json(shape(&network, Some(members))))
}

/// `DELETE /networks/{name}`: refused (409) while a task that is queued or
/// runs holds an address on it.
pub async fn delete(
    tenant: Tenant,
    State(state): State<AppState>,
    IdParam(name): IdParam,
) -> ApiResult<Json<Value>> {
    if !state
        .store
        .delete_overlay(&tenant.project_id, &name)
        .await?
    {
        return Err(no_network(&name));
    }
    tracing::info!(project = %tenant.project_id, network = %name, "overlay network removed");
    Ok(Json(wire::msg("Deleted")))
}

fn no_network(name: &str) -> ApiError {
    ApiError::not_found(format!("network not found: {name:?}"))
}

fn shape(network: &OverlayNetwork, members: Option<Vec<Value>>) -> Value {
    let mut value = json!({
        "name": network.name,
        "driver": "overlay",
        "vni": network.vni,
        "subnet": network.subnet.to_string(),
        "gateway": gateway(&network.subnet).to_string(),
        "internal": network.internal,
        "created_at": wire::format_time(network.created_at),
    });
    if let Some(members) = members {
        value["tasks"] = Value::Array(members);
    }
    value
}

/// Every host's bridge of the network has this address (the first).
fn gateway(subnet: &Ipv4Net) -> std::net::Ipv4Addr {
    subnet.hosts().next().unwrap_or(subnet.network())
}

fn parse_subnet(text: &str) -> ApiResult<Ipv4Net> {
    let subnet: Ipv4Net = text.parse().map_err(|_| {
        ApiError::bad(format!(
            "subnet {text:?} is not an IPv4 network such as 10.42.0.0/24"
        ))
    })?;
    if subnet != subnet.trunc() {
        return Err(ApiError::bad(format!(
            "subnet {text} has host bits set: did you mean {}?",
            subnet.trunc()
        )));
    }
    if !(WIDEST_PREFIX..=NARROWEST_PREFIX).contains(&subnet.prefix_len()) {
        return Err(ApiError::bad(format!(
            "subnet {text}: give a /{WIDEST_PREFIX} to a /{NARROWEST_PREFIX}"
        )));
    }
    if !FLEET_OVERLAY_POOL.contains(&subnet) {
        return Err(ApiError::bad(format!(
            "subnet {text} is outside the fleet's overlay pool {FLEET_OVERLAY_POOL}: give one inside it, or none"
        )));
    }
    Ok(subnet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_must_be_in_the_pool_whole_and_of_a_sensible_size() {
        assert_eq!(
            parse_subnet("10.130.7.0/24").unwrap().to_string(),
            "10.130.7.0/24"
        );
        for (bad, why) in [
            ("10.130.7.1/24", "host bits"),
            ("10.42.0.0/24", "outside the fleet's overlay pool"),
            ("8.8.8.0/24", "outside the fleet's overlay pool"),
            ("10.128.0.0/11", "/16 to a /29"),
            ("10.128.0.0/30", "/16 to a /29"),
            ("nope", "not an IPv4 network"),
        ] {
            let err = parse_subnet(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
