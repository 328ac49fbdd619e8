//! `berth agent --hollow N`: simulated hosts for testing a control plane
//! at scale (see `berth_agent::hollow`). A test and benchmark tool.

use super::agent::{join_config, parse_allocatable};
use crate::cli::AgentArgs;
use crate::cmd::server::{bind, connection_limits};
use crate::cmd::stop_signal::StopSignal;
use berth::cli::Global;
use berth::cmd::invalid;
use berth::CliError;
use berth_agent::hollow::{HollowConfig, HollowFleet};
use berth_api::fleet::Resources;
use std::collections::BTreeMap;
use std::time::Duration;

/// What a hollow host offers unless --allocatable says.
const DEFAULT_ALLOCATABLE: Resources = Resources {
    cpu_millis: 4000,
    memory_bytes: 16 << 30,
    disk_bytes: 100 << 30,
    pids: 10_000,
};

/// Joins per second while a hollow fleet comes up (their heartbeats stay
/// spread the same way).
const JOINS_PER_SECOND: u64 = 250;

pub fn run(global: &Global, args: AgentArgs, count: u32) -> anyhow::Result<u8> {
    for (flag, given) in [
        ("--socket", args.socket.is_some()),
        ("--token-file", args.token_file.is_some()),
        ("--memory-ceiling", args.memory_ceiling.is_some()),
        ("--shim", args.shim.is_some()),
        ("--state-tmpfs", args.state_tmpfs),
    ] {
        if given {
            return Err(invalid(format!(
                "{flag} means nothing with --hollow: hollow hosts run no containers"
            ))
            .into());
        }
    }
    let Some(join) = join_config(&args)? else {
        return Err(invalid("--hollow needs --join URL, --join-token-file and --listen").into());
    };
    let listen = args
        .listen
        .ok_or_else(|| invalid("--hollow needs --listen HOST:PORT"))?;
    let given = match &args.allocatable {
        Some(spec) => parse_allocatable(spec)?,
        None => Default::default(),
    };
    let allocatable = Resources {
        cpu_millis: given.cpu_millis.unwrap_or(DEFAULT_ALLOCATABLE.cpu_millis),
        memory_bytes: given
            .memory_bytes
            .unwrap_or(DEFAULT_ALLOCATABLE.memory_bytes),
        disk_bytes: given.disk_bytes.unwrap_or(DEFAULT_ALLOCATABLE.disk_bytes),
        pids: given.pids.unwrap_or(DEFAULT_ALLOCATABLE.pids),
    };
    let mut labels = BTreeMap::new();
    for label in &args.labels {
        let (key, value) = label
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| invalid(format!("--labels {label:?}: expected KEY=VALUE")))?;
        labels.insert(key.to_owned(), value.to_owned());
    }
    for image in &args.hollow_images {
        berth_api::ImageRef::parse(image)
            .map_err(|e| invalid(format!("--hollow-images {image:?}: {e}")))?;
    }
    let limits = connection_limits(&args.connections, 1)?;
    let config = HollowConfig {
        count: count as usize,
        name_prefix: join.name.clone(),
        data_dir: global.data_dir.join("hollow"),
        join,
        allocatable,
        labels,
        images: args.hollow_images.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let stop = StopSignal::catch()?;
        let fleet = HollowFleet::new(config).map_err(|e| invalid(e.to_string()))?;
        let listener = bind(listen).await?;
        let router = fleet.router();
        let ramp = Duration::from_millis(u64::from(count) * 1000 / JOINS_PER_SECOND);
        let joining = tokio::spawn(fleet.keep_joined(ramp));
        eprintln!(
            "berth agent: {count} hollow hosts (a test tool: they run nothing) serving on {listen}, \
             joining over {ramp:?}"
        );
        berth_http::serve(listener, router, limits, stop.received()).await;
        joining.abort();
        eprintln!("berth agent: hollow hosts stopped");
        Ok::<_, CliError>(())
    })?;
    Ok(0)
}
