//! `berthd`: berth's daemons and operator commands.
//!
//! `up`, `server` and `agent` serve until stopped; `project`, `token` and
//! `stack` open the control plane's store directly, as its owner. They link
//! the server, the store and the agent, which `berth` (started once per
//! container) does not: `berth up …` and the others replace themselves with
//! `berthd up …` (crates/berth/src/daemon.rs). The flags, errors and exit
//! codes are berth's (the `berth` library).

mod cli;
mod cmd;

use clap::Parser;
use cli::{Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    berth::init_tracing(cli.global.verbose);
    let json = cli.wants_json();
    berth::finish(run(cli), json)
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Agent(args) => cmd::agent::run(&cli.global, args),
        Command::Server(args) => cmd::server::run(&cli.global, args),
        Command::Up(args) => cmd::up::run(&cli.global, args),
        Command::Project(args) => cmd::project::run(&cli.global, args),
        Command::Token(args) => cmd::token::run(&cli.global, args),
        Command::Stack(args) => cmd::stack::run(&cli.global, args),
    }
}
