//! berth-sched: berth's placement engine.
//!
//! Owns: deciding which host takes a request — feasibility (resources, label and
//! host-name constraints, host state, hard group rules), ranking (spread or
//! binpack, image preference, soft group rules given up one at a time), explained
//! refusals, the "can this ever fit?" check done at queue time, and the order in
//! which fair-share pools are served. All of it as pure, deterministic functions of
//! a [`Fleet`] snapshot and a [`Request`]: the same input always gives the same
//! answer.
//!
//! Must not touch: I/O of any kind (files, network, the store, the agents), the
//! clock, threads, async, global randomness (every random choice comes from the
//! request's seed), logging. The server reads the fleet from the store, asks this
//! crate, and records the answer; it owns reservations, retries and dispatch.
//!
//! Borrows from berth-core: [`Resources`], [`ResourceKind`] and [`Relation`] are
//! berth-core's placement types, re-exported here, so the server hands the engine
//! what it stores without converting. (berth-core never depends on this crate.)
//!
//! Entry points: [`place`], [`can_ever_fit`], [`Fleet::commit`] /
//! [`Fleet::release`], [`serve_order`] / [`next_pool`]. The pipeline is described
//! in this crate's README.md, one file per stage.

mod class;
mod constraint;
mod feasibility;
mod groups;
mod place;
mod pools;
mod rank;
mod refusal;
mod request;
mod sample;
mod snapshot;

pub use berth_core::placement::{Relation, ResourceKind, Resources};
pub use constraint::{Constraint, ConstraintError, Op, NODE_KEY};
pub use groups::{split_container_name, GroupRule, Hardness, SoftKey};
pub use place::{can_ever_fit, place, Placement};
pub use pools::{
    next_pool, serve_order, validate as validate_pools, Held, Hold, PoolDemand, PoolError,
    PoolSpec, ServeOrder, Tier, Turn,
};
pub use rank::IMAGE_BONUS;
pub use refusal::{Reason, Refusal, RefusalGroup, RefusalScope, MAX_NAMED_HOSTS};
pub use request::{seed_from_id, Request, RequestError, Strategy, MAX_GROUP_RULES};
pub use snapshot::{CommitError, Fleet, Node, NodeState, SnapshotError};
