//! Shared vocabulary of berth: identifiers, resource quantities, what a
//! container asks of its host and reports back, what a task asks of the
//! fleet ([`placement`]: the [`placement::Resources`] it reserves, counted
//! per [`placement::ResourceKind`], its group rules' [`placement::Relation`],
//! its defaults and overrides), the stable error codes that travel from the
//! runtime up to every API, and times ([`time`]). The placement engine
//! (berth-sched) and the server share these placement types rather than
//! converting between copies.
//!
//! This crate owns *types and parsing only*. It must not touch the file system,
//! processes or the network, and reads the clock in one place only,
//! [`time::now_millis`] (so that berth has a single notion of "now"): every
//! other berth crate depends on it, so it stays small, pure and fast to
//! compile.

mod error;
mod names;
pub mod network;
pub mod placement;
mod quantity;
mod report;
pub mod spec;
pub mod time;

pub use error::{ErrorCode, ErrorReport, HasErrorCode};
pub use names::{ContainerId, ImageRef, NameError};
pub use quantity::{ByteSize, CpuQuota, QuantityError};
pub use report::{CgroupMetrics, ContainerResult, ImageSummary};
