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
//! `state.json` is replaced atomically but not fsync'd (it is informative,
//! and the fsyncs would slow every start): after a host crash it may be
//! stale or missing.
//!
//! ## Ready fd
//!
//! With `--ready-fd N` ([`Options::ready_fd`]) the shim tells whoever
//! started it how the start went, so that the caller needs no polling. It
//! writes exactly one line to fd N:
//!
//! - `{"status":"running","pid":P}` once the container has been created
//!   and started and `state.json` has been written (P is the container's
//!   pid, the same as in `state.json`);
//! - `{"status":"failed"}` once `exit.json` has been written and records
//!   why the container never ran (bad spec, create error, …).
//!
//! Right after the line, fd N is made to point at `/dev/null` (replaced,
//! not closed, so that its number is never reused by accident), so the
//! caller may stop reading, or exit, without any effect on the shim; the
//! reader then sees end of file. SIGPIPE is ignored throughout. End of file
//! without a line means that no exit record could be written at all (the
//! shim exits with status 2 and says why on stderr). An fd N that is not
//! open for writing, or N = 2 (stderr carries diagnostics), is a usage
//! error: exit status 2 before anything is touched.
//!
//! ## Memory
//!
//! Once its container runs, a shim gives back the free heap pages only the
//! start needed: see `memory.rs` and `bench/shim_rss.sh`.

mod client;
mod control;
mod diag;
mod error;
mod log;
mod memory;
mod ready;
mod shim;
mod signals;
mod socket_path;
mod spec;
mod start;
mod state;
mod supervise;

pub use client::Client;
pub use control::{Request, Response, MAX_REQUEST_BYTES};
pub use error::ShimError;
pub use shim::{run, Options};
pub use signals::STOP_GRACE;
pub use socket_path::SocketPath;
pub use spec::{ShimSpec, DEFAULT_LOG_MAX_BYTES};
pub use state::{ExitRecord, ShimState, StateDir, Status};
