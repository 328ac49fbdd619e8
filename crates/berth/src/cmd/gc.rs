//! `berth gc`: clean up after crashed berth processes.

use crate::cli::{GcArgs, Global};
use crate::cmd::{image::release_stale_leases, open_runtime, open_store};
use berth_agent_dir::AgentDir;
use berth_core::{ErrorCode, ErrorReport};

pub fn run(global: &Global, args: GcArgs) -> anyhow::Result<u8> {
    let runtime = open_runtime(global)?;
    let mut containers = runtime.gc().map_err(crate::CliError::from)?;
    // The agent keeps its memory-scratch containers apart.
    let agent_dir = AgentDir::of(&global.data_dir);
    let agent_containers = agent_dir.volatile_runtime_dir();
    containers.extend(
        runtime
            .gc_dir(&agent_containers)
            .map_err(crate::CliError::from)?,
    );
    // After the runtime's gc a container runs if its runtime dir is there;
    // one still being set up has none yet, but its attaching process lives.
    let networks = crate::cmd::network::networks(global)?;
    let runtime_dirs = [
        runtime.config().containers_dir.clone(),
        agent_containers.clone(),
    ];
    let alive = |a: &berth_net::Attachment| {
        runtime_dirs.iter().any(|d| d.join(&a.container).exists()) || a.holder_alive()
    };
    let detached = networks
        .gc(&alive)
        .map_err(crate::cmd::network::net_error)?;
    let store = open_store(global)?;
    let leases = release_stale_leases(global, &store)?;
    let temp = store
        .remove_orphaned_temp()
        .map_err(crate::CliError::from)?;
    let state_unmounted = agent_dir
        .release_idle_state()
        .map_err(|e| crate::CliError(ErrorReport::new(ErrorCode::HostIo, e.to_string())))?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "containers_removed": containers,
                "leases_released": leases,
                "image_temp_removed": temp,
                "agent_state_unmounted": state_unmounted,
                "network_attachments_removed": detached.attachments,
                "network_claims_freed": detached.claims,
            })
        );
    } else if containers.is_empty()
        && leases.is_empty()
        && temp.is_empty()
        && !state_unmounted
        && detached == berth_net::Collected::default()
    {
        println!("nothing to clean up");
    } else {
        for id in &containers {
            println!("removed container {id}");
        }
        for holder in &leases {
            println!("released lease of {holder}");
        }
        for name in &temp {
            println!("removed images/tmp/{name} (its process is gone)");
        }
        for id in &detached.attachments {
            println!("took container {id} off its network");
        }
        if detached.claims > 0 {
            println!(
                "freed {} network addresses and ports no container held",
                detached.claims
            );
        }
        if state_unmounted {
            println!("unmounted the idle agent state tmpfs");
        }
    }
    Ok(0)
}
