//! One module per subcommand.

pub mod agent;
pub mod code;
pub mod gc;
pub mod image;
pub mod info;
pub mod operator;
pub mod project;
pub mod remote;
pub mod run;
pub mod schedule;
pub mod server;
pub mod stack;
pub mod stop_signal;
pub mod task;
pub mod token;
pub mod up;

use crate::cli::{DatabaseArgs, Global};
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

/// A usage error with a stable code.
pub fn invalid(message: impl Into<String>) -> CliError {
    CliError(ErrorReport::new(ErrorCode::InvalidArgument, message))
}

/// The control plane's database URL: the flag (or `BERTH_DATABASE`), else
/// SQLite under the data dir.
pub fn database_url(global: &Global, args: &DatabaseArgs) -> String {
    match &args.database {
        Some(url) => url.clone(),
        None => format!(
            "sqlite://{}",
            global.data_dir.join("server").join("berth.db").display()
        ),
    }
}
