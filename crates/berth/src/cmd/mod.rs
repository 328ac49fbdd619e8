//! One module per subcommand of berth (berthd's are in crates/berthd).

pub mod code;
pub mod gc;
pub mod image;
pub mod info;
pub mod network;
pub mod node;
pub mod overlay;
pub mod pool;
pub mod remote;
pub mod run;
pub mod schedule;
pub mod servers;
pub mod task;

use crate::cli::Global;
use crate::CliError;
use berth_core::{ErrorCode, ErrorReport};
use berth_image::ImageStore;
use berth_runtime::{Runtime, RuntimeConfig};

/// The image store under the data dir.
pub fn open_store(global: &Global) -> Result<ImageStore, CliError> {
    Ok(ImageStore::open(&global.data_dir)?)
}

/// The runtime, with container files under `<data dir>/containers`.
pub fn open_runtime(global: &Global) -> Result<Runtime, CliError> {
    Ok(Runtime::new(RuntimeConfig {
        containers_dir: global.data_dir.join("containers"),
        cgroup_parent: global.cgroup_parent.clone(),
    })?)
}

/// A not-found error.
pub fn not_found(message: impl Into<String>) -> CliError {
    CliError(ErrorReport::new(ErrorCode::NotFound, message))
}

/// A usage error with a stable code.
pub fn invalid(message: impl Into<String>) -> CliError {
    CliError(ErrorReport::new(ErrorCode::InvalidArgument, message))
}
