//! `berth run`: image → spec → container → result.

mod spec;
mod supervise;
mod user;

use crate::cli::{Global, RunArgs};
use crate::cmd::{open_runtime, open_store};
use crate::CliError;
use berth_core::ImageRef;
use berth_runtime::ContainerResult;

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
    runtime.validate(&spec)?;

    // The lease keeps `image prune` away from the layers while we run.
    store.lease(spec.id.as_str(), &image)?;
    let outcome = supervise::run(&runtime, &spec, args);
    let released = store.release(spec.id.as_str());
    let result = outcome?;
    released?;
    Ok(result)
}
