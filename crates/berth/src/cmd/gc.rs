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
            })
        );
    } else if containers.is_empty() && leases.is_empty() && temp.is_empty() && !state_unmounted {
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
        if state_unmounted {
            println!("unmounted the idle agent state tmpfs");
        }
    }
    Ok(0)
}
