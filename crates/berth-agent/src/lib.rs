//! berth-agent: the host daemon that runs containers for the control plane.
//!
//! It owns the host's view of its containers: an HTTP/JSON API (`/v1/…`, on
//! a unix socket and optionally on TCP behind a bearer token), one
//! [`berth-shim`](berth_shim) per container, the persisted event log, the
//! metrics read from cgroups and the elastic-memory policy.
//!
//! It must never run a container itself: containers belong to their shims,
//! which own the output and exit status, so that the agent can be killed,
//! restarted or upgraded while they run. Nor does it fork from its
//! multi-threaded runtime: shims are spawned (fork+exec done by the standard
//! library's spawn), never forked. Images are the image store's, limits and
//! isolation the runtime's; the agent only wires them together.
//!
//! State on disk, under `<data dir>/agent/`:
//! - `run/containers/<id>/`: the shim's state dir (spec, state, exit
//!   record, output log, socket) plus the agent's own `agent.json`;
//! - `run/runtime/<id>/`: the runtime's dir of a memory-scratch container
//!   (disk-scratch ones use `<data dir>/containers/`, as `berth run` does);
//! - `events.log`: one JSON event per line.
//!
//! (`run/` may be a tmpfs of its own: [`AgentConfig::state_tmpfs`]. The
//! layout, the agent's lock and that tmpfs are berth_agent_dir's, which
//! `berth gc` shares.)
//!
//! A restarted agent rebuilds everything from these files and the shims'
//! sockets; see [`open()`].

mod api;
mod clock;
mod config;
mod create;
mod error;
mod events;
pub mod hollow;
mod host;
pub mod join;
mod memory;
mod metrics;
mod node;
mod open;
mod overlay;
mod record;
mod recover;
mod shim;
mod state;
mod watch;

pub use api::{listen, router, serve, Listening};
pub use berth_api::{ContainerState, ContainerView, CreateContainer, InlineFile, KillReason};
pub use config::AgentConfig;
pub use error::ApiError;
pub use events::{Event, EventKind};

use std::sync::Arc;

/// A running agent: the shared state every API handler works on.
pub type Agent = Arc<state::AgentState>;

/// Opens the agent's state, rediscovers every container left by a previous
/// agent and starts the background work (exit watchers, memory policy).
/// Must be called inside a tokio runtime.
pub async fn open(config: AgentConfig) -> Result<Agent, ApiError> {
    open::open(config).await
}
