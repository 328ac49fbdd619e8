//! berth-store: the control plane's durable state.
//!
//! It owns the projects, tokens, stacks, code revisions (with their zip
//! packages), tasks, task logs, schedules and overlay networks, in SQLite (the embedded
//! default: one file, WAL) or PostgreSQL, behind one [`Store`] with one set of
//! versioned schema migrations. Every query a project can reach is scoped by
//! its project id here, so that a handler cannot forget the tenant check.
//!
//! It must not know HTTP, agents or containers: it stores what the server's
//! API and dispatcher decide, and makes each state change a single
//! conditional write so that a task reaches exactly one terminal status even
//! when two writers race (a cancel against a completion, a restarted server
//! against its predecessor).

mod error;
mod ids;
pub mod model;
mod store;

pub use error::StoreError;
pub use ids::new_id;
pub use model::*;
pub use store::{
    Dialect, HeartbeatOutcome, HeartbeatWrite, LeaseGrant, LeaseHolder, PlacementPlanner,
    ServerRecord, Store, DISPATCH_LEASE, FIRST_FLEET_VNI, FLEET_OVERLAY_POOL, LAST_VNI,
    PRIORITY_HEAD_START_MS,
};
