//! `berth agent`: the host daemon in the foreground.

use crate::cli::AgentArgs;
use crate::cmd::server::connection_limits;
use crate::cmd::stop_signal::StopSignal;
use berth::cli::Global;
use berth::cmd::invalid;
use berth::CliError;
use berth_agent::AgentConfig;
use berth_core::ByteSize;
use std::path::PathBuf;

pub fn run(global: &Global, args: AgentArgs) -> anyhow::Result<u8> {
    let config = config(global, args)?;
    // The agent's threads never fork: shims are spawned (fork+exec in one
    // step by the standard library), so a multi-threaded runtime is safe.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(config))?;
    Ok(0)
}

async fn serve(config: AgentConfig) -> Result<(), CliError> {
    let stop = StopSignal::catch()?;
    let socket = config.socket.clone();
    let tcp = config.tcp_listen;
    let agent = berth_agent::open(config)
        .await
        .map_err(|e| CliError(e.report))?;
    let containers = agent.list();
    let running = containers.iter().filter(|e| e.is_running()).count();
    let known = containers.len();
    let listening = berth_agent::listen(agent)
        .await
        .map_err(|e| CliError(e.report))?;
    eprintln!(
        "berth agent: serving unix:{}{} ({} containers known, {running} running)",
        socket.display(),
        tcp.map(|a| format!(" and tcp:{a}")).unwrap_or_default(),
        known,
    );
    listening
        .serve(stop.received())
        .await
        .map_err(|e| CliError(e.report))?;
    eprintln!("berth agent: stopped; containers keep running under their shims");
    Ok(())
}

fn config(global: &Global, args: AgentArgs) -> Result<AgentConfig, CliError> {
    let shim = match args.shim {
        Some(path) => path,
        None => default_shim()?,
    };
    let mut config = AgentConfig::new(global.data_dir.clone(), shim);
    config.cgroup_parent = global.cgroup_parent.clone();
    if let Some(socket) = args.socket {
        config.socket = socket;
    }
    config.tcp_listen = args.listen;
    config.state_tmpfs = args.state_tmpfs;
    let listeners = if config.tcp_listen.is_some() { 2 } else { 1 };
    config.connections = connection_limits(&args.connections, listeners)?;
    if let Some(path) = args.token_file {
        let token = std::fs::read_to_string(&path)
            .map_err(|e| invalid(format!("--token-file {}: {e}", path.display())))?;
        let token = token.trim().to_owned();
        if token.len() < 16 {
            return Err(invalid("the bearer token must be at least 16 characters"));
        }
        config.token = Some(token);
    }
    if config.tcp_listen.is_some() && config.token.is_none() {
        return Err(invalid(
            "--listen requires --token-file: remote callers must authenticate",
        ));
    }
    for label in args.labels {
        let (key, value) = label
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| invalid(format!("--label {label:?}: expected KEY=VALUE")))?;
        config.labels.insert(key.to_owned(), value.to_owned());
    }
    if let Some(ceiling) = args.memory_ceiling {
        let size: ByteSize = ceiling
            .parse()
            .map_err(|e| invalid(format!("--memory-ceiling: {e}")))?;
        if size.bytes() == 0 {
            return Err(invalid("--memory-ceiling must be above zero"));
        }
        config.memory_ceiling = size.bytes();
    }
    if !(args.memory_pressure > 0.0 && args.memory_pressure <= 1.0) {
        return Err(invalid("--memory-pressure must be in (0, 1]"));
    }
    config.memory_pressure = args.memory_pressure;
    config.memory_interval = humantime::parse_duration(&args.memory_interval)
        .map_err(|e| invalid(format!("--memory-interval: {e}")))?;
    if config.memory_interval.is_zero() {
        return Err(invalid("--memory-interval must be above zero"));
    }
    Ok(config)
}

/// `berth-shim` next to this binary (as `cargo build` and `scripts/build.sh`
/// lay them out).
pub fn default_shim() -> Result<PathBuf, CliError> {
    let me = std::env::current_exe().map_err(|e| invalid(format!("locating this binary: {e}")))?;
    let shim = me.with_file_name("berth-shim");
    if shim.is_file() {
        Ok(shim)
    } else {
        Err(invalid(format!(
            "{} not found; build it (cargo build -p berth-shim) or pass --shim",
            shim.display()
        )))
    }
}
