//! `/v1/pools`: the fair-share pools an operator configures. A pool not
//! configured (every project's own, by default) has weight 1, no minimum
//! and no maximum.
//!
//! `PUT /v1/pools/{name}` takes `{"weight": 2, "min": {"cpus": 4, "memory":
//! "8g"}, "max": {"cpus": 16}}`: amounts as in a code's fields (`cpus`,
//! `memory`, `disk`, `pids`); what `min` leaves out is zero, what `max`
//! leaves out has no limit.

use super::auth::Operator;
use super::error::FleetError;
use crate::AppState;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::Json;
use berth_core::placement::Resources;
use berth_core::ByteSize;
use berth_store::PoolConfig;
use serde::Deserialize;
use serde_json::{json, Value};

/// Highest weight a pool may have.
const MAX_WEIGHT: u32 = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolBody {
    #[serde(default = "one")]
    weight: u32,
    #[serde(default)]
    min: Option<Amounts>,
    #[serde(default)]
    max: Option<Amounts>,
}

fn one() -> u32 {
    1
}

/// Amounts as a code gives them: CPUs as a number, sizes as bytes or text.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Amounts {
    cpus: Option<f64>,
    memory: Option<Value>,
    disk: Option<Value>,
    pids: Option<u64>,
}

fn bytes(what: &str, value: &Value) -> Result<u64, FleetError> {
    match value {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| FleetError::invalid(format!("{what}: a whole number of bytes"))),
        Value::String(text) => text
            .parse::<ByteSize>()
            .map(ByteSize::bytes)
            .map_err(|e| FleetError::invalid(format!("{what}: {e}"))),
        _ => Err(FleetError::invalid(format!(
            "{what}: bytes, or a size such as \"8g\""
        ))),
    }
}

impl Amounts {
    /// The amounts, with `missing` for what is not given.
    fn resources(&self, what: &str, missing: u64) -> Result<Resources, FleetError> {
        let cpu_millis = match self.cpus {
            None => missing,
            Some(cpus) if cpus.is_finite() && (0.0..=1e9).contains(&cpus) => {
                (cpus * 1000.0).round() as u64
            }
            Some(_) => {
                return Err(FleetError::invalid(format!(
                    "{what}.cpus: a number of CPUs, 0 or more"
                )))
            }
        };
        Ok(Resources {
            cpu_millis,
            memory_bytes: match &self.memory {
                Some(v) => bytes(&format!("{what}.memory"), v)?,
                None => missing,
            },
            disk_bytes: match &self.disk {
                Some(v) => bytes(&format!("{what}.disk"), v)?,
                None => missing,
            },
            pids: self.pids.unwrap_or(missing),
        })
    }
}

fn show(pool: &PoolConfig) -> Value {
    let amounts = |r: &Resources| {
        let or_none = |v: u64| if v == u64::MAX { None } else { Some(v) };
        json!({
            "cpus": or_none(r.cpu_millis).map(|m| m as f64 / 1000.0),
            "memory": or_none(r.memory_bytes),
            "disk": or_none(r.disk_bytes),
            "pids": or_none(r.pids),
        })
    };
    json!({
        "name": pool.name,
        "weight": pool.weight,
        "min": amounts(&pool.min),
        "max": pool.max.as_ref().map(amounts),
    })
}

pub async fn list(State(state): State<AppState>, _: Operator) -> Result<Json<Value>, FleetError> {
    let pools = state.store.pools().await?;
    Ok(Json(Value::Array(pools.iter().map(show).collect())))
}

pub async fn set(
    State(state): State<AppState>,
    _: Operator,
    Path(name): Path<String>,
    body: Result<Json<PoolBody>, JsonRejection>,
) -> Result<Json<Value>, FleetError> {
    let Json(body) = body.map_err(|e| FleetError::invalid(e.body_text()))?;
    let valid_name = !name.is_empty()
        && name.len() <= berth_core::placement::MAX_GROUP_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !valid_name {
        return Err(FleetError::invalid(format!(
            "pool {name:?}: 1 to 128 of letters, digits and - _ ."
        )));
    }
    if !(1..=MAX_WEIGHT).contains(&body.weight) {
        return Err(FleetError::invalid(format!(
            "weight {}: from 1 to {MAX_WEIGHT}",
            body.weight
        )));
    }
    let min = body.min.unwrap_or_default().resources("min", 0)?;
    let max = body
        .max
        .map(|max| max.resources("max", u64::MAX))
        .transpose()?;
    if let Some(max) = &max {
        if !min.fits_within(max) {
            return Err(FleetError::invalid("min is above max"));
        }
    }
    let pool = PoolConfig {
        name,
        weight: body.weight,
        min,
        max,
    };
    state.store.set_pool(&pool).await?;
    state.dispatch.fleet_changed();
    Ok(Json(show(&pool)))
}

pub async fn remove(
    State(state): State<AppState>,
    _: Operator,
    Path(name): Path<String>,
) -> Result<Json<Value>, FleetError> {
    if !state.store.remove_pool(&name).await? {
        return Err(FleetError::not_found(format!(
            "no pool named {name:?} is configured"
        )));
    }
    state.dispatch.fleet_changed();
    Ok(Json(json!({ "removed": name })))
}
