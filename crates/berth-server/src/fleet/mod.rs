//! The fleet as the server sees it: hosts join and heartbeat
//! (`/v1/fleet/…`, see [`berth_api::fleet`]), operators list and steer them
//! (`/v1/nodes/…`, with an operator token).
//!
//! Everything about a host lives in the store, not in this server's memory,
//! so any server of the control plane answers the same.

mod auth;
mod check;
mod error;
mod heartbeats;
mod pools;
mod routes;
mod servers;

pub use heartbeats::HeartbeatWriter;
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

/// The most heartbeats per second the interval is stretched to stay under
/// as a fleet grows (Nomad bounds its heartbeat rate the same way): up to
/// 5,000 hosts every host beats every 2 s; beyond, less often.
pub const MAX_HEARTBEATS_PER_SECOND: u64 = 2_500;

impl FleetConfig {
    /// How often each of `hosts` hosts heartbeats: the configured interval,
    /// stretched so that the fleet sends at most
    /// [`MAX_HEARTBEATS_PER_SECOND`].
    pub fn interval_for(&self, hosts: usize) -> Duration {
        let floor = Duration::from_millis(hosts as u64 * 1000 / MAX_HEARTBEATS_PER_SECOND);
        self.heartbeat_interval.max(floor)
    }

    /// How long a host of a fleet of `hosts` may stay silent before it is
    /// marked down: the configured time, or four stretched intervals.
    pub fn down_after_for(&self, hosts: usize) -> Duration {
        let stretch = self
            .interval_for(hosts)
            .saturating_sub(self.heartbeat_interval);
        self.down_after + stretch * 4
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_fleet_heartbeats_less_often_and_is_given_longer() {
        let fleet = FleetConfig::default();
        assert_eq!(fleet.interval_for(3), Duration::from_secs(2));
        assert_eq!(fleet.interval_for(5_000), Duration::from_secs(2));
        assert_eq!(fleet.down_after_for(5_000), Duration::from_secs(8));
        assert_eq!(fleet.interval_for(10_000), Duration::from_secs(4));
        assert_eq!(fleet.down_after_for(10_000), Duration::from_secs(16));
    }
}
