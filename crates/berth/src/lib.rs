//! The berth command line, as the library of its two binaries: `berth`
//! (`src/main.rs`: containers, images, the task platform's client) and
//! `berthd` (`crates/berthd`: the daemons, and the operator commands that
//! open the control plane's store). They share the global flags, the
//! errors and exit codes, the output helpers and the client config.
//!
//! This crate owns presentation and process-level concerns (signals, the
//! terminal, exit codes); it must not implement engine logic itself. It
//! must not depend on the server, the store or the agent either: `berth`
//! is started once per container, and links only what `berth run` and the
//! clients need.

pub mod cli;
pub mod client;
pub mod cmd;
pub mod output;
pub mod when;

use berth_core::{ErrorCode, ErrorReport};
use std::process::ExitCode;

/// Exit codes of berth itself (the container's own code passes through).
pub mod exit {
    /// berth failed before or around the container (Docker uses 125 too).
    pub const BERTH_ERROR: u8 = 125;
    /// The command exists but cannot be executed.
    pub const NOT_EXECUTABLE: u8 = 126;
    /// The command does not exist in the image.
    pub const NOT_FOUND: u8 = 127;
    /// Bad flags or arguments (as clap reports them).
    pub const USAGE: u8 = 2;
}

/// An error that knows its stable code, carried up to `main`.
#[derive(Debug)]
pub struct CliError(pub ErrorReport);

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::error::Error for CliError {}

impl<E: berth_core::HasErrorCode> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError(e.report())
    }
}

/// A command's result as the process's exit code, printing the error (as
/// JSON on stdout when `json`, else on stderr).
pub fn finish(result: anyhow::Result<u8>, json: bool) -> ExitCode {
    let err = match result {
        Ok(code) => return ExitCode::from(code),
        Err(err) => err,
    };
    let report = match err.downcast::<CliError>() {
        Ok(e) => e.0,
        Err(other) => ErrorReport::new(ErrorCode::Internal, format!("{other:#}")),
    };
    if json {
        let body = serde_json::json!({ "error": report });
        println!("{body}");
    } else {
        eprintln!("berth: error: {} [{}]", report.message, report.code);
    }
    ExitCode::from(match report.code {
        ErrorCode::CommandNotFound => exit::NOT_FOUND,
        ErrorCode::CommandNotExecutable => exit::NOT_EXECUTABLE,
        ErrorCode::InvalidArgument => exit::USAGE,
        _ => exit::BERTH_ERROR,
    })
}

/// Logging to stderr at the level of `--verbose`, or as `BERTH_LOG` says.
pub fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => tracing::Level::WARN,
        1 => tracing::Level::INFO,
        _ => tracing::Level::DEBUG,
    };
    let fmt = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .without_time();
    // A plain level needs no EnvFilter, whose directive parsing and
    // per-callsite matching `berth run` would pay for on every start.
    let Some(spec) = std::env::var_os("BERTH_LOG") else {
        return fmt.with_max_level(level).init();
    };
    match tracing_subscriber::EnvFilter::try_new(spec.to_string_lossy()) {
        Ok(filter) => fmt.with_env_filter(filter).init(),
        Err(e) => {
            fmt.with_max_level(level).init();
            tracing::warn!(error = %e, "ignoring BERTH_LOG");
        }
    }
}
