//! `berth`: the command line. Parses flags, wires the engine crates
//! together and turns their results into tables, JSON and exit codes.
//!
//! This binary owns presentation and process-level concerns (signals, the
//! terminal, exit codes); it must not implement engine logic itself.

mod arena;
mod cli;
mod client;
mod cmd;
mod handoff;
mod output;
mod when;

use berth_core::{ErrorCode, ErrorReport};
use clap::Parser;
use cli::{Cli, Command};
use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: arena::StartArena<std::alloc::System> =
    arena::StartArena::new(std::alloc::System);

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

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.global.verbose);
    if cli.command.is_long_running() {
        if let Some(e) = handoff::to_daemon_build() {
            tracing::warn!(error = %e, "could not start {}; running here", handoff::DAEMON_BUILD);
        }
    }
    let json = cli.wants_json();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
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
    }
}

fn init_tracing(verbose: u8) {
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

fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Run(args) => cmd::run::run(&cli.global, *args),
        Command::Image(args) => cmd::image::run(&cli.global, args),
        Command::Gc(args) => cmd::gc::run(&cli.global, args),
        Command::Info(args) => cmd::info::run(&cli.global, args),
        Command::Agent(args) => cmd::agent::run(&cli.global, args),
        Command::Server(args) => cmd::server::run(&cli.global, args),
        Command::Up(args) => cmd::up::run(&cli.global, args),
        Command::Project(args) => cmd::project::run(&cli.global, args),
        Command::Token(args) => cmd::token::run(&cli.global, args),
        Command::Stack(args) => cmd::stack::run(&cli.global, args),
        Command::Code(args) => cmd::code::run(args),
        Command::Task(args) => cmd::task::run(args),
        Command::Schedule(args) => cmd::schedule::run(args),
    }
}
