//! Networks: the default bridge (made on first use) and user networks
//! (`berth network create`), each a bridge with its gateway's address.

use crate::error::{NetError, Result};
use crate::host::{self, DEFAULT_BRIDGE_POOL, USER_NETWORK_POOL};
use crate::links;
use crate::model::{Attachment, Network, DEFAULT_NETWORK};
use crate::netlink::Netlink;
use crate::rules;
use crate::state::StateDir;
use berth_core::network::NetworkName;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// Where berth-net keeps its state and what it names its host objects.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// `<data dir>/network`.
    pub state_dir: PathBuf,
    /// The default network's bridge device (`berth0`).
    pub bridge: String,
    /// The nf_tables table (family `ip`) holding every berth rule (`berth`).
    pub table: String,
}

impl NetConfig {
    /// The defaults for a data dir: bridge `berth0`, table `berth`.
    pub fn new(data_dir: &std::path::Path) -> NetConfig {
        NetConfig {
            state_dir: data_dir.join("network"),
            bridge: "berth0".into(),
            table: "berth".into(),
        }
    }
}

/// `berth network create`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateNetwork {
    pub name: String,
    /// Chosen from 10.96.0.0/11 when absent.
    #[serde(default)]
    pub subnet: Option<Ipv4Net>,
    /// The subnet's first address when absent.
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    #[serde(default)]
    pub internal: bool,
}

/// A network and the containers on it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkView {
    #[serde(flatten)]
    pub network: Network,
    pub containers: Vec<Attachment>,
}

/// The host's container networks.
pub struct Networks {
    pub(crate) config: NetConfig,
    pub(crate) state: StateDir,
}

impl Networks {
    /// Opens the state dir. Its nf_tables table is fixed the first time
    /// (so that `berth gc` or a restart with other flags still rewrites
    /// the same one), as the default bridge is once made.
    pub fn open(mut config: NetConfig) -> Result<Networks> {
        berth_core::network::check_interface_name(&config.bridge).map_err(NetError::Invalid)?;
        let state = StateDir::new(config.state_dir.clone());
        state.prepare()?;
        config.table = state.table_name(&config.table)?;
        Ok(Networks { config, state })
    }

    pub fn config(&self) -> &NetConfig {
        &self.config
    }

    /// Makes a user network.
    pub fn create(&self, request: &CreateNetwork) -> Result<Network> {
        let name = NetworkName::new(request.name.clone())?;
        let _lock = self.state.lock(true)?;
        if self.state.network(name.as_str())?.is_some() {
            return Err(NetError::Conflict(format!(
                "a network named {name} already exists"
            )));
        }
        let id = random_id();
        let bridge = format!("br-{id}");
        let network = self.make(
            name.as_str(),
            &id,
            &bridge,
            request.subnet,
            request.gateway,
            request.internal,
            USER_NETWORK_POOL,
        )?;
        Ok(network)
    }

    /// Makes a network's bridge and record, then the rules (undoing the
    /// bridge if anything after it fails). The caller holds the state lock.
    #[allow(clippy::too_many_arguments)]
    fn make(
        &self,
        name: &str,
        id: &str,
        bridge: &str,
        subnet: Option<Ipv4Net>,
        gateway: Option<Ipv4Addr>,
        internal: bool,
        pool: (&str, u8),
    ) -> Result<Network> {
        let _host = host::lock_host()?;
        let mut taken = host::routed_networks()?;
        taken.extend(self.state.networks()?.iter().map(|n| n.subnet));
        let subnet = match subnet {
            Some(subnet) => {
                check_subnet(&subnet)?;
                if let Some(clash) = taken.iter().find(|t| host::overlaps(t, &subnet)) {
                    return Err(NetError::Conflict(format!(
                        "subnet {subnet} overlaps {clash}, which this host already routes or a berth network uses"
                    )));
                }
                subnet
            }
            None => host::first_free(pool, &taken)?,
        };
        let gateway = match gateway {
            Some(gateway) => {
                check_host_address(&subnet, gateway, "gateway")?;
                gateway
            }
            None => subnet.hosts().next().ok_or_else(|| {
                NetError::Invalid(format!("subnet {subnet} has no host addresses"))
            })?,
        };
        let network = Network {
            name: name.to_owned(),
            id: id.to_owned(),
            bridge: bridge.to_owned(),
            subnet,
            gateway,
            internal,
            created_at: u64::try_from(berth_core::time::now_millis()).unwrap_or(0),
        };
        let route = Netlink::route().map_err(|e| NetError::io("opening a routing socket", e))?;
        self.make_bridge(&route, &network)?;
        let recorded = self
            .state
            .save_network(&network)
            .and_then(|()| self.sync_rules());
        if let Err(e) = recorded {
            let _ = links::delete_named(&route, bridge);
            let _ = self.state.remove_network(name);
            return Err(e);
        }
        tracing::info!(network = name, %subnet, bridge, internal, "network created");
        Ok(network)
    }

    /// Makes the bridge of `network` with its gateway's address (again,
    /// after a reboot). Returns its index.
    fn make_bridge(&self, route: &Netlink, network: &Network) -> Result<u32> {
        let io = |what: &str| {
            let what = what.to_owned();
            move |e| NetError::io(what, e)
        };
        if let Some(index) =
            links::index_of(route, &network.bridge).map_err(io("looking up a bridge"))?
        {
            return Ok(index);
        }
        links::add_bridge(route, &network.bridge).map_err(io("making a bridge"))?;
        let made = (|| {
            let index = links::index_of(route, &network.bridge)
                .map_err(io("looking up a bridge"))?
                .ok_or_else(|| {
                    NetError::io("looking up a bridge", std::io::ErrorKind::NotFound.into())
                })?;
            links::add_address(
                route,
                index,
                network.gateway,
                network.subnet.prefix_len(),
                &format!("giving {} the address {}", network.bridge, network.gateway),
            )
            .map_err(io("addressing a bridge"))?;
            host::allow_localhost_through(&network.bridge)?;
            if !network.internal {
                host::enable_forwarding()?;
            }
            Ok(index)
        })();
        if made.is_err() {
            let _ = links::delete_named(route, &network.bridge);
        }
        made
    }

    /// The network a container asks for by name (the default one is made
    /// on first use), with its bridge's index.
    pub(crate) fn resolve(&self, name: &str, route: &Netlink) -> Result<(Network, u32)> {
        let network = match self.state.network(name)? {
            Some(network) => network,
            None if name == DEFAULT_NETWORK => {
                let _lock = self.state.lock(true)?;
                match self.state.network(name)? {
                    Some(network) => network,
                    None => {
                        let id = random_id();
                        let bridge = self.config.bridge.clone();
                        self.make(
                            DEFAULT_NETWORK,
                            &id,
                            &bridge,
                            None,
                            None,
                            false,
                            DEFAULT_BRIDGE_POOL,
                        )?
                    }
                }
            }
            None => {
                return Err(NetError::NotFound(format!(
                    "no network named {name} (berth network ls lists them)"
                )))
            }
        };
        let index = match links::index_of(route, &network.bridge)
            .map_err(|e| NetError::io("looking up a bridge", e))?
        {
            Some(index) => index,
            None => {
                // Gone since it was made (a reboot): make it and its rules again.
                let _lock = self.state.lock(true)?;
                let index = self.make_bridge(route, &network)?;
                self.sync_rules()?;
                index
            }
        };
        Ok((network, index))
    }

    pub fn list(&self) -> Result<Vec<Network>> {
        self.state.networks()
    }

    pub fn inspect(&self, name: &str) -> Result<NetworkView> {
        let network = self
            .state
            .network(name)?
            .ok_or_else(|| NetError::NotFound(format!("no network named {name}")))?;
        let mut containers: Vec<Attachment> = self
            .state
            .attachments()?
            .into_iter()
            .filter(|a| a.network == name)
            .collect();
        containers.sort_by_key(|a| a.address);
        Ok(NetworkView {
            network,
            containers,
        })
    }

    /// Removes a network no container uses: its bridge, rules and record.
    pub fn remove(&self, name: &str) -> Result<()> {
        let _lock = self.state.lock(true)?;
        let network = self
            .state
            .network(name)?
            .ok_or_else(|| NetError::NotFound(format!("no network named {name}")))?;
        let users: Vec<String> = self
            .state
            .attachments()?
            .into_iter()
            .filter(|a| a.network == name)
            .map(|a| a.container)
            .collect();
        if !users.is_empty() {
            return Err(NetError::Conflict(format!(
                "network {name} is in use by {}",
                users.join(", ")
            )));
        }
        self.state.remove_network(name)?;
        self.sync_rules()?;
        let route = Netlink::route().map_err(|e| NetError::io("opening a routing socket", e))?;
        links::delete_named(&route, &network.bridge)
            .map_err(|e| NetError::io("removing a bridge", e))?;
        tracing::info!(network = name, "network removed");
        Ok(())
    }

    /// Rewrites the rules from the records. The caller holds the state
    /// lock exclusively.
    pub(crate) fn sync_rules(&self) -> Result<()> {
        let networks = self.state.networks()?;
        let attachments: Vec<Attachment> = self
            .state
            .attachments()?
            .into_iter()
            .filter(|a| !a.ports.is_empty())
            .collect();
        if networks.is_empty() {
            return rules::remove(&self.config.table)
                .map_err(|e| NetError::io("removing berth's nf_tables table", e));
        }
        rules::sync(&self.config.table, &networks, &attachments).map_err(|e| {
            if crate::netlink::errno_of(&e) == Some(libc::EPROTONOSUPPORT) {
                NetError::Unsupported(format!("this kernel has no nf_tables: {e}"))
            } else {
                NetError::io("writing berth's nf_tables rules", e)
            }
        })
    }
}

fn check_subnet(subnet: &Ipv4Net) -> Result<()> {
    if subnet.prefix_len() > 30 {
        return Err(NetError::Invalid(format!(
            "subnet {subnet} is too small: a network needs at least a /30"
        )));
    }
    if subnet.addr() != subnet.network() {
        return Err(NetError::Invalid(format!(
            "subnet {subnet} is not a network address; did you mean {}?",
            subnet.trunc()
        )));
    }
    Ok(())
}

/// `address` must be a host address of `subnet` (not its network or
/// broadcast address).
pub(crate) fn check_host_address(subnet: &Ipv4Net, address: Ipv4Addr, what: &str) -> Result<()> {
    if !subnet.contains(&address) {
        return Err(NetError::Invalid(format!(
            "{what} {address} is outside the subnet {subnet}"
        )));
    }
    if address == subnet.network() || address == subnet.broadcast() {
        return Err(NetError::Invalid(format!(
            "{what} {address} is the network or broadcast address of {subnet}"
        )));
    }
    Ok(())
}

/// 12 random hex digits.
pub(crate) fn random_id() -> String {
    let mut bytes = [0u8; 6];
    if rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()).is_err() {
        // Unique enough for a name when the kernel's pool fails (it does not).
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes.copy_from_slice(&nanos.to_le_bytes()[..6]);
    }
    hex::encode(bytes)
}
