//! `/v1/node`, `/v1/ping` and `/v1/images`: the host as the agent sees it.

use berth_core::CgroupMetrics;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

/// `GET /v1/ping`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Ping {
    pub ok: bool,
    /// The agent's version.
    pub version: String,
}

/// `GET /v1/node`: what the node has, what is promised, what is used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeView {
    pub hostname: String,
    pub labels: BTreeMap<String, String>,
    pub capacity: Capacity,
    pub allocated: Allocated,
    pub used: Used,
    /// References of the images present on the node.
    pub images: Vec<String>,
    /// The host's cgroup layout, e.g. `hybrid (v1: memory, cpu, …)`.
    pub cgroups: String,
    /// The agent's version.
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Capacity {
    pub cpus: u32,
    pub memory_bytes: u64,
    /// What all containers together may use (the elastic-memory ceiling).
    pub memory_ceiling_bytes: u64,
    /// Fraction of the ceiling at which the memory policy kills.
    pub memory_pressure: f64,
    pub disk_bytes: u64,
    pub disk_free_bytes: u64,
    /// The kernel's pid limit (`kernel.pid_max`).
    pub pids: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Allocated {
    /// Containers not yet ended.
    pub containers: usize,
    pub memory_request_bytes: u64,
    pub cpus_millis: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Used {
    pub containers_running: usize,
    /// The cgroup parent's counters: all containers together.
    pub metrics: CgroupMetrics,
}

/// `POST /v1/images`: the body is an image archive (any format
/// `berth image import` takes).
#[derive(Debug, Clone, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ImportImageQuery {
    /// `name[:tag]` to give the image.
    pub reference: String,
}

/// `DELETE /v1/images/{reference}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RemoveImageQuery {
    /// Remove it even if containers use it.
    #[serde(default)]
    pub force: bool,
}
