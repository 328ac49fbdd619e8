//! The fleet as the server sees it: hosts join and heartbeat
//! (`/v1/fleet/…`, see [`berth_api::fleet`]), operators list and steer them
//! (`/v1/nodes/…`, with an operator token).
//!
//! Everything about a host lives in the store, not in this server's memory,
//! so any server of the control plane answers the same.

mod auth;
mod check;
mod error;
mod pools;
mod routes;
mod servers;

pub use routes::router;

use std::time::Duration;

/// How hosts keep in touch.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// The secret hosts present to join (`--join-token-file`); `None`: this
    /// server takes no joins.
    pub join_token: Option<String>,
    /// How often a host heartbeats.
    pub heartbeat_interval: Duration,
    /// Heartbeats missing this long mark a host down.
    pub down_after: Duration,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            join_token: None,
            heartbeat_interval: Duration::from_secs(2),
            down_after: Duration::from_secs(8),
        }
    }
}
