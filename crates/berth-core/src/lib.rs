//! Shared vocabulary of berth: identifiers, resource quantities, what a
//! container asks of its host and reports back, the stable error codes
//! that travel from the runtime up to every API, and times ([`time`]).
//!
//! This crate owns *types and parsing only*. It must not touch the file system,
//! processes or the network, and reads the clock in one place only,
//! [`time::now_millis`] (so that berth has a single notion of "now"): every
//! other berth crate depends on it, so it stays small, pure and fast to
//! compile.

mod error;
mod names;
pub mod placement;
mod quantity;
mod report;
pub mod spec;
pub mod time;

pub use error::{ErrorCode, ErrorReport, HasErrorCode};
pub use names::{ContainerId, ImageRef, NameError};
pub use quantity::{ByteSize, CpuQuota, QuantityError};
pub use report::{CgroupMetrics, ContainerResult, ImageSummary};
