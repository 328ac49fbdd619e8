//! `berth agent`: the host daemon in the foreground.

use crate::cli::AgentArgs;
use crate::cmd::server::connection_limits;
use crate::cmd::stop_signal::StopSignal;
use berth::cli::Global;
use berth::cmd::invalid;
use berth::CliError;
use berth_agent::join::{Allocatable, Identity, JoinConfig};
use berth_agent::AgentConfig;
use berth_core::ByteSize;
use std::path::PathBuf;

pub fn run(global: &Global, args: AgentArgs) -> anyhow::Result<u8> {
    if let Some(count) = args.hollow {
        return super::hollow::run(global, args, count);
    }
    let join = join_config(&args)?;
    let mut config = config(global, args)?;
    let join = match join {
        Some(join) => {
            let identity =
                Identity::load_or_create(&config.data_dir).map_err(|e| invalid(e.to_string()))?;
            // The server presents this credential: it is the TCP bearer
            // (unless --token-file set one, which then serves as both).
            match &config.token {
                Some(token) => {
                    let identity = Identity {
                        credential: token.clone(),
                        ..identity
                    };
                    Some((join, identity))
                }
                None => {
                    config.token = Some(identity.credential.clone());
                    Some((join, identity))
                }
            }
        }
        None => None,
    };
    // The agent's threads never fork: shims are spawned (fork+exec in one
    // step by the standard library), so a multi-threaded runtime is safe.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(config, join))?;
    Ok(0)
}

async fn serve(config: AgentConfig, join: Option<(JoinConfig, Identity)>) -> Result<(), CliError> {
    let stop = StopSignal::catch()?;
    let socket = config.socket.clone();
    let tcp = config.tcp_listen;
    let agent = berth_agent::open(config)
        .await
        .map_err(|e| CliError(e.report))?;
    let containers = agent.list();
    let running = containers.iter().filter(|e| e.is_running()).count();
    let known = containers.len();
    let joining = join.map(|(join, identity)| {
        eprintln!(
            "berth agent: joining the fleet of {} as {} ({})",
            join.servers
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            join.name,
            join.advertise
        );
        tokio::spawn(berth_agent::join::run(agent.clone(), join, identity))
    });
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
    if let Some(joining) = joining {
        joining.abort();
    }
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
    config.bridge = global.bridge.clone();
    config.cni = global.cni_paths();
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
    if config.tcp_listen.is_some() && config.token.is_none() && args.join.is_none() {
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

/// The fleet to join, from --join and its companions; `None` without --join.
pub(super) fn join_config(args: &AgentArgs) -> Result<Option<JoinConfig>, CliError> {
    let Some(url) = &args.join else {
        for (flag, given) in [
            ("--join-token-file", args.join_token_file.is_some()),
            ("--name", args.name.is_some()),
            ("--advertise", args.advertise.is_some()),
            ("--allocatable", args.allocatable.is_some()),
        ] {
            if given {
                return Err(invalid(format!(
                    "{flag} only means something with --join URL"
                )));
            }
        }
        return Ok(None);
    };
    // Servers sharing one store: any of them takes joins and heartbeats.
    let servers = url
        .split(',')
        .map(str::trim)
        .map(|one| {
            berth_api::Endpoint::parse(one)
                .ok()
                .filter(|_| one.starts_with("http://"))
                .ok_or_else(|| {
                    invalid(format!(
                        "--join {url:?}: expected the server's http://HOST:PORT \
                         (or several, comma separated)"
                    ))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let Some(token_file) = &args.join_token_file else {
        return Err(invalid(
            "--join needs --join-token-file: the fleet's join token",
        ));
    };
    let join_token = std::fs::read_to_string(token_file)
        .map_err(|e| invalid(format!("--join-token-file {}: {e}", token_file.display())))?
        .trim()
        .to_owned();
    if join_token.is_empty() {
        return Err(invalid(format!(
            "--join-token-file {} is empty",
            token_file.display()
        )));
    }
    let Some(listen) = args.listen else {
        return Err(invalid(
            "--join needs --listen HOST:PORT: the server reaches the agent there",
        ));
    };
    let advertise = match &args.advertise {
        Some(address) => address.clone(),
        None if listen.ip().is_unspecified() => {
            return Err(invalid(format!(
                "--listen {listen} is every address: say which one the server reaches with --advertise HOST:PORT"
            )))
        }
        None => listen.to_string(),
    };
    if advertise.contains('/') || !advertise.contains(':') {
        return Err(invalid(format!(
            "--advertise {advertise:?}: expected HOST:PORT"
        )));
    }
    let name = match &args.name {
        Some(name) => name.clone(),
        None => hostname()?,
    };
    let allocatable = match &args.allocatable {
        Some(spec) => parse_allocatable(spec)?,
        None => Allocatable::default(),
    };
    Ok(Some(JoinConfig {
        servers,
        join_token,
        name,
        advertise: format!("http://{advertise}"),
        allocatable,
    }))
}

fn hostname() -> Result<String, CliError> {
    let name = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    if name.is_empty() {
        return Err(invalid(
            "this machine has no hostname: give the host one with --name",
        ));
    }
    Ok(name.to_ascii_lowercase())
}

/// `cpus=1.5,memory=4g,disk=20g,pids=5000`, any subset.
pub(super) fn parse_allocatable(spec: &str) -> Result<Allocatable, CliError> {
    let mut allocatable = Allocatable::default();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| invalid(format!("--allocatable {part:?}: expected KEY=VALUE")))?;
        let bytes = |what: &str| -> Result<u64, CliError> {
            value
                .parse::<ByteSize>()
                .map(|size| size.bytes())
                .map_err(|e| invalid(format!("--allocatable {what}={value}: {e}")))
        };
        match key {
            "cpus" => {
                let cpus: f64 = value
                    .parse()
                    .ok()
                    .filter(|c: &f64| c.is_finite() && *c >= 0.0 && *c <= 100_000.0)
                    .ok_or_else(|| {
                        invalid(format!(
                            "--allocatable cpus={value}: a number of CPUs, e.g. 1.5"
                        ))
                    })?;
                allocatable.cpu_millis = Some((cpus * 1000.0).round() as u64);
            }
            "memory" => allocatable.memory_bytes = Some(bytes("memory")?),
            "disk" => allocatable.disk_bytes = Some(bytes("disk")?),
            "pids" => {
                allocatable.pids =
                    Some(value.parse().map_err(|_| {
                        invalid(format!("--allocatable pids={value}: a whole number"))
                    })?)
            }
            other => {
                return Err(invalid(format!(
                    "--allocatable {other:?}: known are cpus, memory, disk and pids"
                )))
            }
        }
    }
    Ok(allocatable)
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
