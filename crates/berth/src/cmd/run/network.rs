//! `berth run` on a network beyond its own loopback: the container joins a
//! namespace berth-net set up, and leaves it when it ends.

use crate::cli::{Global, RunArgs};
use crate::CliError;
use berth_core::network::NetworkMode;
use berth_core::ErrorReport;
use berth_core::HasErrorCode;
use berth_net::{Attached, NetConfig, Networks};
use berth_runtime::{BindMount, ContainerSpec, NetworkNamespace};
use std::os::fd::AsRawFd;

/// berth-net as configured by the global flags.
pub fn networks(global: &Global) -> Result<Networks, CliError> {
    let mut config = NetConfig::new(&global.data_dir);
    config.bridge = global.bridge.clone();
    config.table = global.bridge.clone();
    Networks::open(config).map_err(net_error)
}

pub fn net_error(e: berth_net::NetError) -> CliError {
    CliError(ErrorReport::new(e.code(), e.to_string()))
}

/// Attaches the container when its mode needs it, pointing the spec at the
/// namespace (held by this process until `leave`) and its name files.
pub fn join(
    global: &Global,
    args: &RunArgs,
    spec: &mut ContainerSpec,
) -> Result<Option<Attached>, CliError> {
    let request = super::spec::network_request(args)?;
    match &request.mode {
        NetworkMode::None | NetworkMode::Host => return Ok(None),
        NetworkMode::Bridge | NetworkMode::Named(_) => {}
        other => {
            return Err(net_error(berth_net::NetError::Unsupported(format!(
                "network mode {other} is not built yet"
            ))))
        }
    }
    let networks = networks(global)?;
    let mut names = vec![spec.id.to_string(), spec.effective_hostname()];
    names.dedup();
    let attached = networks
        .attach(spec.id.as_str(), &names, &request)
        .map_err(net_error)?;
    spec.network =
        NetworkNamespace::Join(format!("/proc/self/fd/{}", attached.namespace.as_raw_fd()).into());
    for (source, destination) in &attached.mounts {
        spec.mounts.push(BindMount {
            source: source.clone(),
            destination: (*destination).to_owned(),
            read_only: false,
        });
    }
    Ok(Some(attached))
}

/// Takes the container off its network once it has ended.
pub fn leave(
    global: &Global,
    spec: &ContainerSpec,
    attached: Option<Attached>,
) -> Result<(), CliError> {
    let Some(attached) = attached else {
        return Ok(());
    };
    drop(attached.namespace);
    networks(global)?
        .detach(spec.id.as_str())
        .map_err(net_error)
}
