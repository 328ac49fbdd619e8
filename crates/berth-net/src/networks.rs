//! Networks: the default bridge (made on first use) and user networks
//! (`berth network create`), each a bridge with its gateway's address.

use crate::error::{NetError, Result};
use crate::host::{self, DEFAULT_BRIDGE_POOL, USER_NETWORK_POOL};
use crate::links;
use crate::model::{Attachment, Driver, Network, DEFAULT_NETWORK};
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
    /// Where `--network cni:NAME` finds configurations and plugins.
    pub cni: crate::cni::CniPaths,
}

impl NetConfig {
    /// A data dir's networks with `bridge` as the default network's bridge
    /// and the nf_tables table's name.
    pub fn new(data_dir: &std::path::Path, bridge: &str, cni: crate::cni::CniPaths) -> NetConfig {
        NetConfig {
            state_dir: data_dir.join("network"),
            bridge: bridge.to_owned(),
            table: bridge.to_owned(),
            cni,
        }
    }
}

/// `berth network create`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateNetwork {
    pub name: String,
    #[serde(default)]
    pub driver: Driver,
    /// The parent interface of a macvlan network.
    #[serde(default)]
    pub parent: Option<String>,
    /// Chosen from 10.96.0.0/11 when absent (a macvlan network takes its
    /// parent's).
    #[serde(default)]
    pub subnet: Option<Ipv4Net>,
    /// The subnet's first address when absent.
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    #[serde(default)]
    pub internal: bool,
    /// Where this host gives addresses from, within the subnet.
    #[serde(default)]
    pub ip_range: Option<Ipv4Net>,
    /// Overlays: the VXLAN network id (1 to 16,777,215), the same on
    /// every host of the network.
    #[serde(default)]
    pub vni: Option<u32>,
    /// Overlays: this host's underlay address (default: the route's).
    #[serde(default)]
    pub local: Option<Ipv4Addr>,
    /// Overlays: the other hosts' underlay addresses.
    #[serde(default)]
    pub peers: Vec<Ipv4Addr>,
    /// The MTU of the containers' links (default 1500; an overlay's 1450).
    /// Traffic between containers and through published ports on the host
    /// goes faster with a large one (65535 reaches loopback's speed); what
    /// leaves the host is cut to its links' MTU as usual.
    #[serde(default)]
    pub mtu: Option<u32>,
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
        let mut plan = Plan {
            name: name.to_string(),
            id: random_id(),
            driver: request.driver.clone(),
            bridge: String::new(),
            parent: None,
            subnet: request.subnet,
            gateway: request.gateway,
            internal: request.internal,
            pool: USER_NETWORK_POOL,
            ip_range: request.ip_range,
            overlay: None,
            mtu: request.mtu,
        };
        if let Some(mtu) = request.mtu {
            if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
                return Err(NetError::Invalid(format!(
                    "MTU {mtu} is outside {MIN_MTU} to {MAX_MTU}"
                )));
            }
            if request.driver == Driver::Macvlan {
                return Err(NetError::Invalid(
                    "a macvlan network's MTU is its parent's: --mtu is for bridge and overlay networks".into(),
                ));
            }
        }
        let overlay_only =
            request.vni.is_some() || request.local.is_some() || !request.peers.is_empty();
        if overlay_only && request.driver != Driver::Overlay {
            return Err(NetError::Invalid(
                "--vni, --local and --peer are for overlay networks (--driver overlay)".into(),
            ));
        }
        match request.driver {
            Driver::Bridge | Driver::Overlay => {
                if request.parent.is_some() {
                    return Err(NetError::Invalid(
                        "--parent is for macvlan networks (--driver macvlan)".into(),
                    ));
                }
                plan.bridge = format!("br-{}", plan.id);
                if request.driver == Driver::Overlay {
                    plan.overlay = Some(self.overlay_plan(request, &plan.id)?);
                }
            }
            Driver::Macvlan => {
                let parent = request.parent.clone().ok_or_else(|| {
                    NetError::Invalid("a macvlan network needs --parent INTERFACE".into())
                })?;
                berth_core::network::check_interface_name(&parent).map_err(NetError::Invalid)?;
                if request.internal {
                    return Err(NetError::Invalid(
                        "--internal is for bridge networks: a macvlan network is its parent's"
                            .into(),
                    ));
                }
                plan.parent = Some(parent);
            }
        }
        self.make(plan)
    }

    /// Checks an overlay's settings: a VNI no other network here has, and a
    /// subnet given (every host of the overlay must agree on it).
    fn overlay_plan(&self, request: &CreateNetwork, id: &str) -> Result<OverlayPlan> {
        let vni = request.vni.ok_or_else(|| {
            NetError::Invalid("an overlay network needs --vni (1 to 16777215)".into())
        })?;
        if !(1..=0xff_ffff).contains(&vni) {
            return Err(NetError::Invalid(format!(
                "VNI {vni} is outside 1 to 16777215"
            )));
        }
        if request.subnet.is_none() {
            return Err(NetError::Invalid(
                "an overlay network needs --subnet: every host of it must give the same".into(),
            ));
        }
        if let Some(other) = self.state.networks()?.iter().find(|n| n.vni == Some(vni)) {
            return Err(NetError::Conflict(format!(
                "VNI {vni} is network {}'s on this host",
                other.name
            )));
        }
        Ok(OverlayPlan {
            vni,
            vxlan: format!("vx-{id}"),
            local: request.local,
            peers: request.peers.clone(),
        })
    }

    /// The network `--network macvlan:PARENT` means: `macvlan-PARENT`,
    /// made on first use with the parent's subnet.
    pub(crate) fn macvlan_network_of(&self, parent: &str) -> Result<String> {
        let name = format!("macvlan-{parent}");
        if let Some(existing) = self.state.network(&name)? {
            if existing.parent.as_deref() != Some(parent) {
                return Err(NetError::Conflict(format!(
                    "network {name} exists and is not the macvlan network of {parent}"
                )));
            }
            return Ok(name);
        }
        let made = self.create(&CreateNetwork {
            name: name.clone(),
            driver: Driver::Macvlan,
            parent: Some(parent.to_owned()),
            ..CreateNetwork::default()
        });
        match made {
            // Another create won the race: same network.
            Ok(_) | Err(NetError::Conflict(_)) if self.state.network(&name)?.is_some() => Ok(name),
            Ok(_) => Ok(name),
            Err(e) => Err(e),
        }
    }

    /// Makes a network's link and record, then the rules (undoing the link
    /// if anything after it fails). The caller holds the state lock.
    fn make(&self, plan: Plan) -> Result<Network> {
        let route = Netlink::route().map_err(|e| NetError::io("opening a routing socket", e))?;
        let _host = host::lock_host()?;
        let berth_subnets: Vec<Ipv4Net> = self.state.networks()?.iter().map(|n| n.subnet).collect();
        let subnet = match (&plan.driver, plan.subnet) {
            (Driver::Bridge | Driver::Overlay, subnet) => {
                let mut taken = host::routed_networks()?;
                taken.extend(&berth_subnets);
                match subnet {
                    Some(subnet) => {
                        check_subnet(&subnet)?;
                        if let Some(clash) = taken.iter().find(|t| host::overlaps(t, &subnet)) {
                            return Err(NetError::Conflict(format!(
                                "subnet {subnet} overlaps {clash}, which this host already routes or a berth network uses"
                            )));
                        }
                        subnet
                    }
                    None => host::first_free(plan.pool, &taken)?,
                }
            }
            // A macvlan network is on its parent's network: its subnet is
            // the parent's (or one the caller gives), and only other berth
            // networks are in its way.
            (Driver::Macvlan, subnet) => {
                let parent = plan.parent.as_deref().unwrap_or_default();
                let index = parent_index(&route, parent)?;
                let subnet = match subnet {
                    Some(subnet) => subnet,
                    None => links::addresses_of(&route, index)
                        .map_err(|e| NetError::io("reading the parent's addresses", e))?
                        .first()
                        .map(Ipv4Net::trunc)
                        .ok_or_else(|| {
                            NetError::Invalid(format!(
                                "{parent} has no IPv4 address to take the subnet from: give --subnet"
                            ))
                        })?,
                };
                check_subnet(&subnet)?;
                if let Some(clash) = berth_subnets.iter().find(|t| host::overlaps(t, &subnet)) {
                    return Err(NetError::Conflict(format!(
                        "subnet {subnet} overlaps {clash}, which a berth network uses"
                    )));
                }
                subnet
            }
        };
        let (name, bridge, internal) = (plan.name.as_str(), plan.bridge.as_str(), plan.internal);
        let gateway = plan.gateway;
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
            id: plan.id.clone(),
            driver: plan.driver.clone(),
            bridge: bridge.to_owned(),
            parent: plan.parent.clone(),
            subnet,
            gateway,
            internal,
            created_at: u64::try_from(berth_core::time::now_millis()).unwrap_or(0),
            ip_range: plan.ip_range,
            mtu: plan.mtu.or(plan.overlay.as_ref().map(|_| OVERLAY_MTU)),
            vni: plan.overlay.as_ref().map(|o| o.vni),
            vxlan: plan
                .overlay
                .as_ref()
                .map(|o| o.vxlan.clone())
                .unwrap_or_default(),
            local: plan.overlay.as_ref().and_then(|o| o.local),
            peers: plan
                .overlay
                .as_ref()
                .map(|o| o.peers.clone())
                .unwrap_or_default(),
            remote_members: Vec::new(),
        };
        if let Some(range) = network.ip_range {
            if !network.subnet.contains(&range) {
                return Err(NetError::Invalid(format!(
                    "address range {range} is not within the subnet {subnet}"
                )));
            }
        }
        if network.has_bridge() {
            self.make_bridge(&route, &network, true)?;
        }
        let recorded = self
            .state
            .save_network(&network)
            .and_then(|()| self.reserve_parent_address(&route, &network))
            .and_then(|()| self.sync_rules());
        if let Err(e) = recorded {
            if network.has_bridge() {
                let _ = links::delete_named(&route, bridge);
                if !network.vxlan.is_empty() {
                    let _ = links::delete_named(&route, &network.vxlan);
                }
            }
            let _ = self.state.remove_network(name);
            return Err(e);
        }
        tracing::info!(network = name, %subnet, bridge, internal, "network created");
        Ok(network)
    }

    /// A macvlan network's parent keeps its own address: it is claimed
    /// for the host, so no container gets it.
    fn reserve_parent_address(&self, route: &Netlink, network: &Network) -> Result<()> {
        let Some(parent) = &network.parent else {
            return Ok(());
        };
        let index = parent_index(route, parent)?;
        let own = links::addresses_of(route, index)
            .map_err(|e| NetError::io("reading the parent's addresses", e))?;
        for address in own
            .iter()
            .map(Ipv4Net::addr)
            .filter(|a| network.subnet.contains(a))
        {
            self.state
                .claim_address(&network.name, address, HOST_CLAIM)?;
        }
        Ok(())
    }

    /// Makes the bridge of `network` with its gateway's address (again,
    /// after a reboot). Returns its index.
    /// A `fresh` network's bridge must not exist yet: berth only ever
    /// removes links it made, and a link of that name is someone else's
    /// (`--bridge docker0`, say). Made again after a reboot, one that
    /// appeared meanwhile is the other maker's of the same record.
    fn make_bridge(&self, route: &Netlink, network: &Network, fresh: bool) -> Result<u32> {
        let io = |what: &str| {
            let what = what.to_owned();
            move |e| NetError::io(what, e)
        };
        if let Some(index) =
            links::index_of(route, &network.bridge).map_err(io("looking up a bridge"))?
        {
            if fresh {
                return Err(NetError::Conflict(format!(
                    "an interface named {} already exists and berth did not make it: give berth another bridge name (--bridge)",
                    network.bridge
                )));
            }
            return Ok(index);
        }
        links::add_bridge(route, &network.bridge).map_err(io("making a bridge"))?;
        let made = (|| {
            let index = links::index_of(route, &network.bridge)
                .map_err(io("looking up a bridge"))?
                .ok_or_else(|| {
                    NetError::io("looking up a bridge", std::io::ErrorKind::NotFound.into())
                })?;
            if let Some(vni) = network.vni {
                links::set_mac(route, index, gateway_mac(vni))
                    .map_err(io("setting a bridge's MAC"))?;
            }
            links::add_address(
                route,
                index,
                network.gateway,
                network.subnet.prefix_len(),
                &format!("giving {} the address {}", network.bridge, network.gateway),
            )
            .map_err(io("addressing a bridge"))?;
            if let Some(vni) = network.vni {
                links::add_vxlan(route, &network.vxlan, vni, network.local, index).map_err(
                    |e| {
                        if links::errno_is_unsupported(&e) {
                            NetError::Unsupported(format!("this kernel has no VXLAN links: {e}"))
                        } else {
                            NetError::io("making a VXLAN link", e)
                        }
                    },
                )?;
                let vxlan = links::index_of(route, &network.vxlan)
                    .map_err(io("looking up a VXLAN link"))?
                    .ok_or_else(|| {
                        NetError::io(
                            "looking up a VXLAN link",
                            std::io::ErrorKind::NotFound.into(),
                        )
                    })?;
                for peer in &network.peers {
                    links::add_flood_peer(route, vxlan, *peer)
                        .map_err(io("adding a VXLAN peer"))?;
                }
            }
            host::allow_localhost_through(&network.bridge)?;
            if !network.internal {
                host::enable_forwarding()?;
            }
            Ok(index)
        })();
        if made.is_err() {
            let _ = links::delete_named(route, &network.bridge);
            if !network.vxlan.is_empty() {
                let _ = links::delete_named(route, &network.vxlan);
            }
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
                    None => self.make(Plan {
                        name: DEFAULT_NETWORK.into(),
                        id: random_id(),
                        driver: Driver::Bridge,
                        bridge: self.config.bridge.clone(),
                        parent: None,
                        subnet: None,
                        gateway: None,
                        internal: false,
                        pool: DEFAULT_BRIDGE_POOL,
                        ip_range: None,
                        overlay: None,
                        mtu: None,
                    })?,
                }
            }
            None => {
                return Err(NetError::NotFound(format!(
                    "no network named {name} (berth network ls lists them)"
                )))
            }
        };
        if network.driver == Driver::Macvlan {
            let index = parent_index(route, network.parent.as_deref().unwrap_or_default())?;
            return Ok((network, index));
        }
        let index = match links::index_of(route, &network.bridge)
            .map_err(|e| NetError::io("looking up a bridge", e))?
        {
            Some(index) => index,
            None => {
                // Gone since it was made (a reboot): make it and its rules again.
                let _lock = self.state.lock(true)?;
                let index = self.make_bridge(route, &network, false)?;
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
        check_recorded_name(name)?;
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
        check_recorded_name(name)?;
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
        if network.has_bridge() {
            let route =
                Netlink::route().map_err(|e| NetError::io("opening a routing socket", e))?;
            if !network.vxlan.is_empty() {
                links::delete_named(&route, &network.vxlan)
                    .map_err(|e| NetError::io("removing a VXLAN link", e))?;
            }
            links::delete_named(&route, &network.bridge)
                .map_err(|e| NetError::io("removing a bridge", e))?;
        }
        tracing::info!(network = name, "network removed");
        Ok(())
    }

    /// Rewrites the rules from the records. The caller holds the state
    /// lock exclusively.
    pub(crate) fn sync_rules(&self) -> Result<()> {
        self.sync_rules_without(None)
    }

    /// The rules as if `container` were already gone (it is on its way).
    pub(crate) fn sync_rules_without(&self, container: Option<&str>) -> Result<()> {
        let networks = self.state.networks()?;
        let attachments: Vec<Attachment> = self
            .state
            .attachments()?
            .into_iter()
            .filter(|a| !a.ports.is_empty() && Some(a.container.as_str()) != container)
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

/// What a network is made of, before it exists.
struct Plan {
    name: String,
    id: String,
    driver: Driver,
    bridge: String,
    parent: Option<String>,
    subnet: Option<Ipv4Net>,
    gateway: Option<Ipv4Addr>,
    internal: bool,
    /// Where a bridge network's subnet comes from when none is given.
    pool: (&'static str, u8),
    ip_range: Option<Ipv4Net>,
    overlay: Option<OverlayPlan>,
    mtu: Option<u32>,
}

/// An overlay's part of a plan.
struct OverlayPlan {
    vni: u32,
    vxlan: String,
    local: Option<Ipv4Addr>,
    peers: Vec<Ipv4Addr>,
}

/// IPv4's minimum, and the most a veth takes.
const MIN_MTU: u32 = 576;
const MAX_MTU: u32 = 65535;

/// VXLAN adds 50 bytes to each frame: 1500 on the underlay leaves 1450.
pub(crate) const OVERLAY_MTU: u32 = 1450;

/// The MAC every host's bridge of an overlay has (locally administered,
/// from the VNI): frames to the gateway then stay on the host they start
/// on, each host routing its own containers out.
fn gateway_mac(vni: u32) -> [u8; 6] {
    let [_, a, b, c] = vni.to_be_bytes();
    [0x02, 0xb0, a, b, c, 0x01]
}

/// The owner recorded for an address the host itself holds.
pub(crate) const HOST_CLAIM: &str = "(host)";

/// The index of a macvlan network's parent interface.
pub(crate) fn parent_index(route: &Netlink, parent: &str) -> Result<u32> {
    links::index_of(route, parent)
        .map_err(|e| NetError::io("looking up the parent interface", e))?
        .ok_or_else(|| NetError::NotFound(format!("no interface named {parent} on this host")))
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
    if subnet.prefix_len() < 8 {
        return Err(NetError::Invalid(format!(
            "subnet {subnet} is larger than a /8: no network needs that many addresses"
        )));
    }
    // Addresses a host treats specially, never a container network's.
    let special: [(&str, Ipv4Net); 5] = [
        (
            "this-network",
            Ipv4Net::new(Ipv4Addr::new(0, 0, 0, 0), 8).unwrap_or_default(),
        ),
        (
            "loopback",
            Ipv4Net::new(Ipv4Addr::new(127, 0, 0, 0), 8).unwrap_or_default(),
        ),
        (
            "link-local",
            Ipv4Net::new(Ipv4Addr::new(169, 254, 0, 0), 16).unwrap_or_default(),
        ),
        (
            "multicast",
            Ipv4Net::new(Ipv4Addr::new(224, 0, 0, 0), 4).unwrap_or_default(),
        ),
        (
            "reserved",
            Ipv4Net::new(Ipv4Addr::new(240, 0, 0, 0), 4).unwrap_or_default(),
        ),
    ];
    if let Some((what, range)) = special.iter().find(|(_, r)| host::overlaps(r, subnet)) {
        return Err(NetError::Invalid(format!(
            "subnet {subnet} overlaps the {what} range {range}"
        )));
    }
    Ok(())
}

/// A network name as it may be recorded (`bridge` and `macvlan-IF`
/// included): no path separators, nothing a file name could escape with.
fn check_recorded_name(name: &str) -> Result<()> {
    NetworkName::check(name)
        .map_err(|why| NetError::Invalid(format!("network name {name:?}: {why}")))
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
