//! berth-api: the host agent's `/v1` API as a typed contract.
//!
//! It owns what travels between an agent and its clients (the control
//! plane, the CLI, the tests): the request and response types, the error
//! body with its typed [`ErrorCode`] and the HTTP
//! status each code is answered with, the OpenAPI document generated from
//! these types ([`openapi`]), and the one HTTP client that speaks it
//! ([`AgentClient`] typed, [`Transport`] raw, [`blocking`] for tests).
//!
//! It must not run, inspect or touch anything on a host: it depends on
//! berth-core's plain types only, so a crate that depends on it (the
//! server) cannot start a container by accident. The agent implements the
//! routes; this crate only says what they take and give.
//!
//! ```no_run
//! # async fn demo() -> Result<(), berth_api::ClientError> {
//! use berth_api::{AgentClient, CreateContainer, Endpoint};
//! let agent = AgentClient::new(Endpoint::parse("unix:///var/lib/berth/agent.sock").unwrap(), None);
//! let request: CreateContainer =
//!     serde_json::from_value(serde_json::json!({"image": "busybox", "command": ["true"]})).unwrap();
//! let created = agent.create(&request).await?;
//! let ended = agent.wait(&created.id, std::time::Duration::from_secs(60)).await?;
//! println!("{:?}", ended.result.map(|r| r.exit_code));
//! agent.remove(&created.id, true).await?;
//! # Ok(()) }
//! ```

pub mod blocking;
mod client;
mod containers;
mod endpoint;
mod error;
mod events;
pub mod fleet;
mod node;
pub mod openapi;
mod transport;

pub use client::AgentClient;
pub use containers::{
    ContainerState, ContainerView, CreateContainer, DeleteQuery, InlineFile, KillReason, ListQuery,
    LogsQuery, SignalQuery, WaitQuery, DEFAULT_FILE_MODE,
};
pub use endpoint::Endpoint;
pub use error::{status_for, ClientError, ErrorBody};
pub use events::{Event, EventKind, EventsQuery};
pub use node::{
    Allocated, Capacity, ImportImageQuery, NodeView, Ping, PruneReport, RemoveImageQuery, Used,
};
pub use transport::{ConnectionPool, RawResponse, Transport};

/// Re-exported so that users of the contract need no direct berth-core
/// dependency for the types it carries.
pub use berth_core::{
    spec, CgroupMetrics, ContainerId, ContainerResult, ErrorCode, ErrorReport, ImageRef,
    ImageSummary,
};
