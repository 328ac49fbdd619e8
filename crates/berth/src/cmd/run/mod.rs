//! `berth run`: image → spec → container → result.

mod spec;
pub use spec::network_request;
mod supervise;

use crate::cli::{Global, RunArgs};
use crate::cmd::network::{self, Joining};
use crate::cmd::{open_runtime, open_store};
use crate::CliError;
use berth_core::ImageRef;
use berth_runtime::ContainerResult;
use std::os::fd::BorrowedFd;

pub fn run(global: &Global, args: RunArgs) -> anyhow::Result<u8> {
    let json = args.json;
    let result = run_container(global, &args)?;
    if json {
        println!("{}", serde_json::to_string(&result)?);
    } else if result.timed_out || result.oom_killed {
        let why = if result.timed_out {
            "timed out"
        } else {
            "killed: out of memory"
        };
        eprintln!("berth: container {} {why}", result.id);
    }
    Ok(result.shell_code().clamp(0, 255) as u8)
}

fn run_container(global: &Global, args: &RunArgs) -> Result<ContainerResult, CliError> {
    let reference = ImageRef::parse(&args.image).map_err(|e| crate::cmd::invalid(e.to_string()))?;
    let store = open_store(global)?;
    let image = store.resolve(&reference)?;
    let spec = spec::build(args, &image)?;
    let runtime = open_runtime(global)?;

    // A name in use is refused before leasing: the lease is keyed by the
    // container id and would replace the running container's.
    if runtime
        .config()
        .containers_dir
        .join(spec.id.as_str())
        .exists()
    {
        return Err(berth_runtime::RuntimeError::ContainerExists(spec.id.to_string()).into());
    }
    // The lease keeps `image prune` away from the layers while we run.
    store.lease(spec.id.as_str(), &image)?;
    let mut spec = spec;
    // Checked before the network is made: a bad host name must not reach
    // the other containers' hosts files.
    if let Err(e) = runtime.validate(&spec) {
        let _ = store.release(spec.id.as_str());
        return Err(e.into());
    }
    let opened = network_request(args)
        .and_then(|request| Ok((network::networks_for(global, &request)?, request)));
    let (networks, request) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            let _ = store.release(spec.id.as_str());
            return Err(e);
        }
    };
    let mut joining = match network::join(global, &request, networks.as_ref(), &mut spec) {
        Ok(joining) => joining,
        Err(e) => {
            let _ = store.release(spec.id.as_str());
            return Err(e);
        }
    };
    let outcome = match &mut joining {
        Joining::Wiring(wiring) => {
            let mut setup = |namespace: BorrowedFd<'_>| wiring.setup(namespace);
            supervise::run(&runtime, &spec, args, Some(&mut setup))
        }
        _ => supervise::run(&runtime, &spec, args, None),
    };
    let outcome = network::network_failure(&mut joining, outcome);
    let detached = network::leave(&spec, networks.as_ref(), joining);
    if let Err(e) = &outcome {
        if e.0.code == berth_core::ErrorCode::ContainerExists {
            // Lost a race for the name: the lease now belongs to the winner.
            return outcome;
        }
    }
    let released = store.release(spec.id.as_str());
    let result = outcome?;
    released?;
    detached?;
    Ok(result)
}
