//! What berth-net records on disk: networks, and each container's
//! attachment to one.

use berth_core::network::{PublishedPort, Rate};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// The name of the host's default network (`--network bridge`).
pub const DEFAULT_NETWORK: &str = "bridge";

/// How a network's containers are linked to the host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// A bridge of the network's own, with the gateway's address; NAT to
    /// the outside unless internal.
    #[default]
    Bridge,
    /// Each container a macvlan link of the `parent` interface, on the
    /// parent's own network (no NAT; the host itself cannot reach them
    /// through the parent: macvlan's rule).
    Macvlan,
    /// A bridge like [`Driver::Bridge`], joined to the same network's
    /// bridges on other hosts by a VXLAN link (one VNI, flooding to the
    /// peers it is given). Every host's bridge has the same gateway address
    /// and MAC, so each host routes its own containers out.
    Overlay,
}

/// A container on another host of an overlay, as the fleet says: what
/// this host's containers find in their hosts files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub names: Vec<String>,
    pub address: Ipv4Addr,
}

/// A network on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    pub name: String,
    /// 12 hex digits, random; user networks' bridges are `br-<id>`.
    pub id: String,
    #[serde(default)]
    pub driver: Driver,
    /// The bridge device (bridge networks).
    #[serde(default)]
    pub bridge: String,
    /// The parent interface (macvlan networks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// No route out: no NAT, and the host's addresses other than the
    /// gateway's DNS are unreachable.
    #[serde(default)]
    pub internal: bool,
    /// Milliseconds since the Unix epoch.
    pub created_at: u64,
    /// Where this host gives addresses from (default: the whole subnet).
    /// Hosts that share an overlay without a server to hand out addresses
    /// each take a range of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<Ipv4Net>,
    /// The MTU of the containers' links (overlays: 1450, VXLAN's 50 bytes
    /// under 1500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Overlays: the VXLAN network id, the VXLAN link, this host's
    /// underlay address (the route's choice when absent), the other hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub vxlan: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<Ipv4Addr>,
    /// Overlays: the containers on other hosts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_members: Vec<Member>,
}

impl Network {
    /// Bridge and overlay networks have a bridge of their own on the host.
    pub fn has_bridge(&self) -> bool {
        matches!(self.driver, Driver::Bridge | Driver::Overlay)
    }
}

impl Attachment {
    /// Whether the process that attached it still runs (and is not this
    /// one): a container it is still setting up has no runtime dir yet.
    pub fn holder_alive(&self) -> bool {
        self.holder_pid != 0
            && self.holder_pid != std::process::id()
            && std::path::Path::new(&format!("/proc/{}", self.holder_pid)).exists()
    }
}

/// What one container got on one network; written before anything is made,
/// so that every piece can be found and removed again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    pub container: String,
    pub network: String,
    /// The host end of the veth pair.
    pub host_link: String,
    pub address: Ipv4Addr,
    /// The names the container answers to on its network.
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub ports: Vec<PublishedPort>,
    #[serde(default)]
    pub egress_rate: Option<Rate>,
    #[serde(default)]
    pub ingress_rate: Option<Rate>,
    /// The process that attached it (`berth run`, or the agent): while it
    /// lives, the container may still be starting (no runtime dir yet).
    #[serde(default)]
    pub holder_pid: u32,
    /// Through CNI: the configuration list and the ADD result, for DEL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni: Option<serde_json::Value>,
}
