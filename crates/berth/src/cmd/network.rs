//! `berth network create|ls|inspect|rm`, and `berth run` on a network
//! beyond its own loopback: berth-net claims the container's place, wires
//! the namespace the runtime makes for it (or, for `cni:`, sets up one it
//! joins), and takes it off when it ends.

use crate::cli::{Global, NetworkArgs, NetworkCommand};
use crate::output::table;
use crate::CliError;
use berth_core::network::{NetworkMode, NetworkRequest};
use berth_core::ErrorReport;
use berth_core::HasErrorCode;
use berth_net::{Attached, Claimed, Driver, NetConfig, NetError, Networks};
use berth_runtime::{ContainerSpec, NetworkNamespace};
use std::os::fd::{AsRawFd, BorrowedFd};

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

/// How `berth run` puts a container on its network.
// One per `berth run`, on its stack: the variants' sizes cost nothing.
#[allow(clippy::large_enum_variant)]
pub enum Joining<'a> {
    /// `none`, `host` or `container:`: the spec says it all.
    Nothing,
    /// `cni:`: its plugins set up a namespace, held here until `leave`,
    /// which the container joins.
    Joined(Attached),
    /// A berth network: claimed here, and wired up by the runtime into the
    /// namespace it makes for the container, while the container's mounts
    /// are being built (see [`Wiring::setup`]).
    Wiring(Wiring<'a>),
}

/// A berth network's claim, until the runtime has the namespace to wire.
pub struct Wiring<'a> {
    claimed: Option<Claimed<'a>>,
    /// Why the setup failed: the runtime only carries an I/O error, and
    /// this has the right code (a limit the kernel cannot enforce, say).
    failure: Option<NetError>,
    wired: bool,
}

impl Wiring<'_> {
    /// The runtime's [`berth_runtime::NetworkSetup`]: makes the link into
    /// the container's namespace and finishes the attach. Dropped without
    /// it (the create failed before), the claim is undone.
    pub fn setup(&mut self, namespace: BorrowedFd<'_>) -> std::io::Result<()> {
        let Some(mut claimed) = self.claimed.take() else {
            return Err(std::io::Error::other("the network is set up already"));
        };
        match claimed.wire(namespace).and_then(|()| claimed.finish()) {
            Ok(_) => {
                self.wired = true;
                Ok(())
            }
            Err(e) => {
                let text = e.to_string();
                self.failure = Some(e);
                Err(std::io::Error::other(text))
            }
        }
    }
}

/// Opens berth-net when the container's network mode needs it.
pub fn networks_for(
    global: &Global,
    request: &NetworkRequest,
) -> Result<Option<Networks>, CliError> {
    match request.mode {
        NetworkMode::None | NetworkMode::Host => Ok(None),
        _ => networks(global).map(Some),
    }
}

/// Puts the container on its network, or gets it ready to be: points the
/// spec at the namespace to join and adds its name files.
pub fn join<'a>(
    global: &Global,
    request: &NetworkRequest,
    networks: Option<&'a Networks>,
    spec: &mut ContainerSpec,
) -> Result<Joining<'a>, CliError> {
    let Some(networks) = networks else {
        return Ok(Joining::Nothing);
    };
    let names = berth_net::files::names_of(spec.id.as_str(), &spec.effective_hostname());
    match &request.mode {
        NetworkMode::None | NetworkMode::Host => Ok(Joining::Nothing),
        NetworkMode::Container(target) => {
            let runtime = crate::cmd::open_runtime(global)?;
            let Some(namespace) = runtime.network_namespace_of(target) else {
                return Err(net_error(NetError::NotFound(format!(
                    "no running container {target} to share the network of"
                ))));
            };
            spec.network = NetworkNamespace::Join(namespace);
            let files = networks.files_of(target).map_err(net_error)?;
            spec.mounts.extend(files);
            Ok(Joining::Nothing)
        }
        NetworkMode::Cni(_) => {
            let attached = networks
                .attach(spec.id.as_str(), &names, request)
                .map_err(net_error)?;
            spec.network = NetworkNamespace::Join(
                format!("/proc/self/fd/{}", attached.namespace.as_raw_fd()).into(),
            );
            spec.mounts.extend(attached.mounts.iter().cloned());
            Ok(Joining::Joined(attached))
        }
        NetworkMode::Bridge | NetworkMode::Named(_) | NetworkMode::Macvlan(_) => {
            let claimed = networks
                .claim(spec.id.as_str(), &names, request)
                .map_err(net_error)?;
            spec.network = NetworkNamespace::New;
            spec.mounts.extend(claimed.mounts().iter().cloned());
            Ok(Joining::Wiring(Wiring {
                claimed: Some(claimed),
                failure: None,
                wired: false,
            }))
        }
    }
}

/// The network's own error for a create that failed in its setup.
pub fn network_failure<T>(
    joining: &mut Joining<'_>,
    outcome: Result<T, CliError>,
) -> Result<T, CliError> {
    if let (Err(_), Joining::Wiring(wiring)) = (&outcome, joining) {
        if let Some(failure) = wiring.failure.take() {
            return Err(net_error(failure));
        }
    }
    outcome
}

/// Takes the container off its network once it has ended.
pub fn leave(
    spec: &ContainerSpec,
    networks: Option<&Networks>,
    joining: Joining<'_>,
) -> Result<(), CliError> {
    let on_network = match joining {
        Joining::Nothing => false,
        Joining::Joined(attached) => {
            drop(attached.namespace);
            true
        }
        // A claim never wired was undone when dropped.
        Joining::Wiring(wiring) => wiring.wired,
    };
    match networks {
        Some(networks) if on_network => networks
            .detach(spec.id.as_str())
            .map(drop)
            .map_err(net_error),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::ErrorCode;

    fn spawn_failed() -> Result<(), CliError> {
        Err(CliError(ErrorReport::new(
            ErrorCode::SpawnFailed,
            "starting the container process: setting up the container's network: …",
        )))
    }

    #[test]
    fn a_failed_wiring_reports_the_networks_own_error() {
        let mut joining = Joining::Wiring(Wiring {
            claimed: None,
            failure: Some(NetError::Unsupported("no IFB links here".into())),
            wired: false,
        });
        let outcome = network_failure(&mut joining, spawn_failed());
        let report = outcome.unwrap_err().0;
        assert_eq!(report.code, ErrorCode::LimitUnsupported);
        assert!(report.message.contains("no IFB links here"), "{report:?}");
    }

    #[test]
    fn other_failures_and_successes_pass_through() {
        let mut nothing = Joining::Nothing;
        let outcome = network_failure(&mut nothing, spawn_failed());
        assert_eq!(outcome.unwrap_err().0.code, ErrorCode::SpawnFailed);
        let mut wired = Joining::Wiring(Wiring {
            claimed: None,
            failure: None,
            wired: true,
        });
        assert!(network_failure(&mut wired, Ok(())).is_ok());
        let outcome = network_failure(&mut wired, spawn_failed());
        assert_eq!(outcome.unwrap_err().0.code, ErrorCode::SpawnFailed);
    }
}
