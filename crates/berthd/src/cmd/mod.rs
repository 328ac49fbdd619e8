//! One module per subcommand of berthd.

pub mod agent;
pub mod hollow;
pub mod operator;
pub mod project;
pub mod server;
pub mod stack;
pub mod stop_signal;
pub mod token;
pub mod up;

use crate::cli::DatabaseArgs;
use berth::cli::Global;

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
