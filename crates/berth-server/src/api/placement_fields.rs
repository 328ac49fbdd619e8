//! The fields a code (its tasks' defaults) or a task (its overrides) may
//! give about where and with what its tasks run:
//!
//! - `memory` (the limit), `memory_request` (reserved on the host; default:
//!   the limit), `disk`: bytes, or a size such as `"256m"` or `"1GiB"`;
//! - `cpus`: CPUs, e.g. `0.5` (reserved, and the container's quota);
//! - `pids`: processes and threads (reserved, and the container's limit);
//! - `constraints`: host constraints such as `"zone==a"`, `"gpu!=true"`,
//!   `"rack==r1*"`, `"node=~^db-"` (see berth-sched);
//! - `affinity`, `anti_affinity`: group names, each `GROUP` (hard) or
//!   `GROUP:soft`;
//! - `pool`: the fair-share pool (default: the project).
//!
//! Everything is checked here, constraint syntax included, so a bad field
//! is a 400 that says where.

use super::error::{ApiError, ApiResult};
use super::wire::{kind, Fields};
use berth_core::placement::{GroupRule, PlacementSpec, Relation, MAX_RULES};
use berth_core::ByteSize;
use serde_json::Value;

/// Takes the placement fields of `f`.
pub fn take_placement(f: &mut Fields) -> ApiResult<PlacementSpec> {
    let spec = PlacementSpec {
        memory: size(f, "memory")?,
        memory_request: size(f, "memory_request")?,
        cpu_millis: cpus(f)?,
        disk: size(f, "disk")?,
        pids: f.int_in("pids", 1..=(1 << 22))?.map(|pids| pids as u64),
        constraints: constraints(f)?,
        groups: groups(f, "affinity", Relation::Affinity)?
            .into_iter()
            .chain(groups(f, "anti_affinity", Relation::AntiAffinity)?)
            .collect(),
        pool: f.short_string("pool", berth_core::placement::MAX_GROUP_NAME)?,
    };
    spec.validate()
        .map_err(|e| ApiError::bad(format!("{}: {e}", f.what())))?;
    Ok(spec)
}

/// Bytes as a number, or a size string (`"256m"`, `"1.5GiB"`).
fn size(f: &mut Fields, key: &str) -> ApiResult<Option<u64>> {
    let what = f.what().to_owned();
    match f.take(key) {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
            ApiError::bad(format!(
                "{what}.{key} must be a whole number of bytes, not {n}"
            ))
        }),
        Some(Value::String(text)) => text
            .parse::<ByteSize>()
            .map(|size| Some(size.bytes()))
            .map_err(|e| ApiError::bad(format!("{what}.{key}: {e}"))),
        Some(other) => Err(ApiError::bad(format!(
            "{what}.{key} must be bytes or a size such as \"256m\", not {}",
            kind(&other)
        ))),
    }
}

/// CPUs as a number (`0.5`) or a string (`"0.5"`), in thousandths.
fn cpus(f: &mut Fields) -> ApiResult<Option<u64>> {
    let what = f.what().to_owned();
    let value = match f.take("cpus") {
        None => return Ok(None),
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(text)) => text.trim().parse::<f64>().ok(),
        Some(other) => {
            return Err(ApiError::bad(format!(
                "{what}.cpus must be a number of CPUs such as 0.5, not {}",
                kind(&other)
            )))
        }
    };
    match value {
        Some(cpus) if cpus.is_finite() && cpus > 0.0 && cpus <= 4096.0 => {
            Ok(Some((cpus * 1000.0).round().max(1.0) as u64))
        }
        _ => Err(ApiError::bad(format!(
            "{what}.cpus must be a number of CPUs above 0 and at most 4096, such as 0.5"
        ))),
    }
}

fn strings(f: &mut Fields, key: &str) -> ApiResult<Vec<String>> {
    let what = f.what().to_owned();
    let items = match f.take(key) {
        None => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(ApiError::bad(format!(
                "{what}.{key} must be an array of strings, not {}",
                kind(&other)
            )))
        }
    };
    if items.len() > MAX_RULES {
        return Err(ApiError::bad(format!(
            "{what}.{key} has {} entries; at most {MAX_RULES}",
            items.len()
        )));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(text) => Ok(text),
            other => Err(ApiError::bad(format!(
                "{what}.{key}[{i}] must be a string, not {}",
                kind(&other)
            ))),
        })
        .collect()
}

fn constraints(f: &mut Fields) -> ApiResult<Vec<String>> {
    let what = f.what().to_owned();
    let constraints = strings(f, "constraints")?;
    for (i, text) in constraints.iter().enumerate() {
        berth_sched::Constraint::parse(text)
            .map_err(|e| ApiError::bad(format!("{what}.constraints[{i}]: {e}")))?;
    }
    Ok(constraints)
}

fn groups(f: &mut Fields, key: &str, relation: Relation) -> ApiResult<Vec<GroupRule>> {
    let what = f.what().to_owned();
    strings(f, key)?
        .iter()
        .enumerate()
        .map(|(i, text)| {
            GroupRule::parse(text, relation)
                .map_err(|e| ApiError::bad(format!("{what}.{key}[{i}]: {e}")))
        })
        .collect()
}

/// The placement fields of a code or task as the API shows them.
pub fn placement_json(spec: &PlacementSpec) -> Value {
    let rules = |relation| -> Vec<String> {
        spec.groups
            .iter()
            .filter(|r| r.relation == relation)
            .map(|r| {
                if r.hard {
                    r.group.clone()
                } else {
                    format!("{}:soft", r.group)
                }
            })
            .collect()
    };
    serde_json::json!({
        "memory": spec.memory,
        "memory_request": spec.memory_request,
        "cpus": spec.cpu_millis.map(|m| m as f64 / 1000.0),
        "disk": spec.disk,
        "pids": spec.pids,
        "constraints": spec.constraints,
        "affinity": rules(Relation::Affinity),
        "anti_affinity": rules(Relation::AntiAffinity),
        "pool": spec.pool,
    })
}
