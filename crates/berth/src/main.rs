//! `berth`: the command line. Runs containers (`berth run`), manages images,
//! and talks to a berth server as its client; hands the daemons and the
//! operator commands to `berthd` (see `daemon.rs`).

mod arena;
mod daemon;

use berth::cli::{Cli, Command};
use berth::cmd;
use clap::Parser;
use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: arena::StartArena<std::alloc::System> =
    arena::StartArena::new(std::alloc::System);

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Code(_)
            | Command::Task(_)
            | Command::Schedule(_)
            | Command::Overlay(_)
            | Command::Node(_)
            | Command::Pool(_)
    ) {
        quiet_on_closed_pipe();
    }
    berth::init_tracing(cli.global.verbose);
    let json = cli.wants_json();
    berth::finish(run(cli), json)
}

/// A client command whose reader went away (`berth task ls --json | head`)
/// ends as other command-line tools do, by SIGPIPE, instead of panicking
/// on the write. Only the server's clients: they hold nothing to clean up,
/// while `berth run` (a container to tear down) and the image commands
/// (leases, staging) must finish their work whatever happens to stdout.
fn quiet_on_closed_pipe() {
    // SAFETY: restores the default disposition of one signal, before any
    // thread is started; no handler runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Run(args) => cmd::run::run(&cli.global, *args),
        Command::Image(args) => cmd::image::run(&cli.global, args),
        Command::Gc(args) => cmd::gc::run(&cli.global, args),
        Command::Network(args) => cmd::network::run(&cli.global, args),
        Command::Info(args) => cmd::info::run(&cli.global, args),
        Command::Code(args) => cmd::code::run(args),
        Command::Task(args) => cmd::task::run(args),
        Command::Schedule(args) => cmd::schedule::run(args),
        Command::Overlay(args) => cmd::overlay::run(args),
        Command::Node(args) => cmd::node::run(args),
        Command::Pool(args) => cmd::pool::run(args),
        // `berth server ls` is a client of the servers; the rest of
        // `berth server` is the daemon.
        Command::Server(args) if args.args.first().is_some_and(|a| a == "ls") => {
            cmd::servers::run(&args.args[1..])
        }
        // These replace this process with berthd, or say why they could not.
        Command::Agent(_) => daemon::exec("agent"),
        Command::Server(_) => daemon::exec("server"),
        Command::Up(_) => daemon::exec("up"),
        Command::Project(_) => daemon::exec("project"),
        Command::Token(_) => daemon::exec("token"),
        Command::Stack(_) => daemon::exec("stack"),
    }
}
