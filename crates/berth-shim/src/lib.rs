//! berth-shim: the monitor of one container.
//!
//! One small, single-threaded process per container, detached from the host
//! agent (its own session), so that the agent can die, restart or be
//! upgraded while containers keep running and nothing is lost. The shim owns
//! exactly one container's lifetime, its output (`output.log`) and its exit
//! record (`exit.json`), and answers a tiny line-based JSON protocol on a
//! unix socket in the container's state dir.
//!
//! It must not touch images (it receives layer directories in its spec),
//! other containers, or any network API: the agent builds on it.
//!
//! Files of a state dir (see [`StateDir`]): `spec.json` (written by the
//! caller), `state.json`, `output.log`, `shim.sock` while the shim serves,
//! and `exit.json` once it is done. `exit.json` is durable before
//! `shim.sock` disappears, so a caller that finds no socket can rely on it.

mod client;
mod control;
mod error;
mod log;
mod poll;
mod shim;
mod signals;
mod spec;
mod state;
mod supervise;

pub use client::Client;
pub use control::{Request, Response, MAX_REQUEST_BYTES};
pub use error::ShimError;
pub use shim::{run, Options, STOP_GRACE};
pub use spec::{ShimSpec, DEFAULT_LOG_MAX_BYTES};
pub use state::{ExitRecord, ShimState, StateDir, Status};
