//! Shared vocabulary of berth: identifiers, resource quantities, what a
//! container asks of its host and reports back, and the stable error codes
//! that travel from the runtime up to every API.
//!
//! This crate owns *types and parsing only*. It must not touch the file system,
//! processes, the network or any clock: every other berth crate depends on it,
//! so it stays small, pure and fast to compile.

mod error;
mod names;
mod quantity;
mod report;
pub mod spec;

pub use error::{ErrorCode, ErrorReport, HasErrorCode};
pub use names::{ContainerId, ImageRef, NameError};
pub use quantity::{ByteSize, CpuQuota, QuantityError};
pub use report::{CgroupMetrics, ContainerResult, ImageSummary};
