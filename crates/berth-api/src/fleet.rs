//! The fleet's contract: how an agent joins a server and keeps itself
//! registered, and how operators see and steer the hosts.
//!
//! An agent joins with `POST /v1/fleet/join`, presenting the fleet's join
//! token as its bearer. It hands the server its own API's address and a
//! credential of its own making, which the server presents on every call to
//! that agent (never the join token, which every host knows). The server
//! answers with the host's identity and a heartbeat token of this host
//! alone. From then on the agent sends `POST /v1/fleet/heartbeat` with that
//! token every `heartbeat_interval_ms`; a host whose heartbeats stop is
//! marked down after [`JoinAccepted::down_after_ms`].
//!
//! Operators read and steer hosts under `/v1/nodes` with an operator token.

use crate::node::{Capacity, Used};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

pub use berth_core::placement::Resources;

/// What a host tells the server, at join and in every heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostReport {
    /// What the machine has.
    pub capacity: Capacity,
    /// What the host offers tasks (the capacity minus a reserve for the
    /// system, or what `--allocatable` says).
    pub allocatable: Resources,
    /// What the containers on it were promised (their requests).
    pub allocated: Resources,
    /// What they use now (the cgroup parent's counters).
    pub used: Used,
    /// References of the images present on the host.
    pub images: Vec<String>,
    /// The host's own labels (`--labels`); operators may add theirs.
    pub labels: BTreeMap<String, String>,
    /// The agent's version.
    pub version: String,
}

/// `POST /v1/fleet/join` (bearer: the join token).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The host's name in the fleet (unique; DNS-label-like).
    pub name: String,
    /// The identity an earlier join gave this host, when it has one: a
    /// restarted agent keeps its identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// Base URL of the agent's `/v1` API, as the server reaches it
    /// (`http://HOST:PORT`).
    pub address: String,
    /// The bearer the server presents to this agent's API.
    pub credential: String,
    pub report: HostReport,
}

/// The answer to a join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JoinAccepted {
    pub node_id: String,
    /// The bearer of this host's heartbeats (shown once).
    pub heartbeat_token: String,
    pub heartbeat_interval_ms: u64,
    /// Heartbeats missing this long mark the host down.
    pub down_after_ms: u64,
}

/// `POST /v1/fleet/heartbeat` (bearer: the host's heartbeat token).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub node_id: String,
    pub report: HostReport,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatAccepted {
    pub heartbeat_interval_ms: u64,
    /// What the server makes of the host now.
    pub state: NodeState,
    /// The overlay networks this host has members of, as the server last
    /// read the fleet (at most about a second old): the host keeps its
    /// VXLAN peers and its hosts files in step with them, and removes the
    /// fleet's overlays it no longer has members of. Absent from older
    /// servers' answers, and when the server could not read the fleet:
    /// the host then changes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlays: Option<Vec<OverlaySpec>>,
}

/// How a fleet overlay network is named on its hosts: `fleet-<vni>`.
pub const FLEET_OVERLAY_PREFIX: &str = "fleet-";

/// The name a fleet overlay network has on a host (`fleet-<vni>`): VNIs are
/// unique in a fleet, project names are not.
pub fn fleet_overlay_name(vni: u32) -> String {
    format!("{FLEET_OVERLAY_PREFIX}{vni}")
}

/// A project's overlay network as one host needs it: the agent makes it on
/// first use (in `CreateContainer::overlay`) and keeps it in step with the
/// fleet from each heartbeat's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OverlaySpec {
    /// Its name on the host ([`fleet_overlay_name`] of the VNI).
    pub network: String,
    /// The VXLAN network id, unique in the fleet.
    pub vni: u32,
    /// The same on every host of the network.
    #[schema(value_type = String)]
    pub subnet: ipnet::Ipv4Net,
    /// No way out of the network (no NAT, no route to the hosts).
    pub internal: bool,
    /// This host's address on the hosts' own network: where VXLAN leaves
    /// from (the host part of the address the agent joined with; none for
    /// an agent reached over a unix socket, alone on its machine).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub local: Option<std::net::Ipv4Addr>,
    /// The other hosts with members of the network, by the same kind of
    /// address: where VXLAN goes, and the only senders taken.
    #[schema(value_type = Vec<String>)]
    pub peers: Vec<std::net::Ipv4Addr>,
    /// The members on other hosts, for this host's hosts files.
    pub members: Vec<OverlayMember>,
}

/// A container of an overlay network on another host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OverlayMember {
    /// The names it answers to (a task's id, then its container's).
    pub names: Vec<String>,
    #[schema(value_type = String)]
    pub address: std::net::Ipv4Addr,
}

/// Where a host stands in the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Takes new work.
    Ready,
    /// Takes no new work; finishes what it runs (`berth node drain`).
    Draining,
    /// Missed its heartbeats: its tasks are run elsewhere.
    Down,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Ready => "ready",
            NodeState::Draining => "draining",
            NodeState::Down => "down",
        }
    }
}

/// `GET /v1/nodes` and `GET /v1/nodes/{name}`: a host as the server knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeInfo {
    pub id: String,
    pub name: String,
    pub address: String,
    pub state: NodeState,
    /// Set by `berth node drain` (the state says `draining` unless down).
    pub drained: bool,
    /// The host's labels with the operator's on top.
    pub labels: BTreeMap<String, String>,
    /// The operator's own labels (`berth node label`).
    pub operator_labels: BTreeMap<String, String>,
    pub report: HostReport,
    pub joined_at_ms: i64,
    pub last_heartbeat_ms: i64,
}

/// `GET /v1/servers`: a server sharing the control plane's store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ServerInfo {
    /// Unique per process start.
    pub id: String,
    pub name: String,
    /// Where its API answers.
    pub url: String,
    pub version: String,
    /// Whether it holds the dispatch lease now (dispatches and fires
    /// schedules).
    pub leader: bool,
    /// `up`, or `silent` once it has not been heard of for a few seconds
    /// (killed, paused or cut off; a stopped server leaves the list).
    pub state: ServerState,
    pub started_at_ms: i64,
    /// How long ago it was last heard of, by the database's clock.
    pub last_seen_ago_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServerState {
    Up,
    Silent,
}

/// `GET /v1/servers`: the servers, and the dispatch lease's current term.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ServerList {
    pub servers: Vec<ServerInfo>,
    /// The dispatch lease's term (its fencing token), if any server ever
    /// led.
    pub term: Option<i64>,
}

/// `PUT /v1/nodes/{name}/labels`: the operator's labels, set and removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelChange {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_with_an_unknown_field_is_refused() {
        let err = serde_json::from_value::<LabelChange>(serde_json::json!({"sett": {}}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field"), "{err}");
    }
}
