//! `berth network create|ls|inspect|rm`, and `berth run` on a network
//! beyond its own loopback: the container joins a namespace berth-net set
//! up, and leaves it when it ends.

use crate::cli::{Global, NetworkArgs, NetworkCommand, RunArgs};
use crate::output::table;
use crate::CliError;
use berth_core::network::NetworkMode;
use berth_core::ErrorReport;
use berth_core::HasErrorCode;
use berth_net::{Attached, Driver, NetConfig, Networks};
use berth_runtime::{ContainerSpec, NetworkNamespace};
use std::os::fd::AsRawFd;

pub fn run(global: &Global, args: NetworkArgs) -> anyhow::Result<u8> {
    let networks = networks(global)?;
    match args.command {
        NetworkCommand::Create(args) => {
            let json = args.json;
            let network = networks.create(&args.request()).map_err(net_error)?;
            if json {
                println!("{}", serde_json::to_string(&network)?);
            } else {
                println!("{}", network.id);
            }
        }
        NetworkCommand::Ls { json } => {
            let list = networks.list().map_err(net_error)?;
            if json {
                println!("{}", serde_json::to_string(&list)?);
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|n| {
                        vec![
                            n.id.clone(),
                            n.name.clone(),
                            match n.driver {
                                Driver::Bridge => format!("bridge {}", n.bridge),
                                Driver::Macvlan => {
                                    format!("macvlan on {}", n.parent.as_deref().unwrap_or("?"))
                                }
                                Driver::Overlay => format!(
                                    "overlay {} vni {} ({} peers)",
                                    n.bridge,
                                    n.vni.unwrap_or(0),
                                    n.peers.len()
                                ),
                            },
                            n.subnet.to_string(),
                            n.gateway.to_string(),
                            if n.internal { "yes" } else { "no" }.into(),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "NETWORK ID",
                        "NAME",
                        "LINK",
                        "SUBNET",
                        "GATEWAY",
                        "INTERNAL",
                    ],
                    &rows,
                );
            }
        }
        NetworkCommand::Inspect { name } => {
            let view = networks.inspect(&name).map_err(net_error)?;
            println!("{}", serde_json::to_string_pretty(&view)?);
        }
        NetworkCommand::Rm { names, json } => {
            let mut removed = Vec::new();
            for name in &names {
                networks.remove(name).map_err(net_error)?;
                removed.push(name.clone());
                if !json {
                    println!("{name}");
                }
            }
            if json {
                println!("{}", serde_json::json!({ "removed": removed }));
            }
        }
    }
    Ok(0)
}

/// berth-net as configured by the global flags.
pub fn networks(global: &Global) -> Result<Networks, CliError> {
    let config = NetConfig::new(&global.data_dir, &global.bridge, global.cni_paths());
    Networks::open(config).map_err(net_error)
}

pub fn net_error(e: berth_net::NetError) -> CliError {
    CliError(ErrorReport::new(e.code(), e.to_string()))
}

/// A container on a network, and berth-net to take it off again.
pub struct Joined {
    networks: Networks,
    attached: Attached,
}

/// Attaches the container when its mode needs it, pointing the spec at the
/// namespace (held by this process until `leave`) and its name files.
pub fn join(
    global: &Global,
    args: &RunArgs,
    spec: &mut ContainerSpec,
) -> Result<Option<Joined>, CliError> {
    let request = crate::cmd::run::network_request(args)?;
    match &request.mode {
        NetworkMode::None | NetworkMode::Host => return Ok(None),
        NetworkMode::Container(target) => {
            let runtime = crate::cmd::open_runtime(global)?;
            let Some(namespace) = runtime.network_namespace_of(target) else {
                return Err(net_error(berth_net::NetError::NotFound(format!(
                    "no running container {target} to share the network of"
                ))));
            };
            spec.network = NetworkNamespace::Join(namespace);
            let files = networks(global)?.files_of(target).map_err(net_error)?;
            spec.mounts.extend(files);
            return Ok(None);
        }
        NetworkMode::Bridge
        | NetworkMode::Named(_)
        | NetworkMode::Macvlan(_)
        | NetworkMode::Cni(_) => {}
    }
    let networks = networks(global)?;
    let names = berth_net::files::names_of(spec.id.as_str(), &spec.effective_hostname());
    let attached = networks
        .attach(spec.id.as_str(), &names, &request)
        .map_err(net_error)?;
    spec.network =
        NetworkNamespace::Join(format!("/proc/self/fd/{}", attached.namespace.as_raw_fd()).into());
    spec.mounts.extend(attached.mounts.iter().cloned());
    Ok(Some(Joined { networks, attached }))
}

/// Takes the container off its network once it has ended.
pub fn leave(spec: &ContainerSpec, joined: Option<Joined>) -> Result<(), CliError> {
    let Some(Joined { networks, attached }) = joined else {
        return Ok(());
    };
    drop(attached.namespace);
    networks
        .detach(spec.id.as_str())
        .map(drop)
        .map_err(net_error)
}
