//! Links, addresses and routes: the routing-netlink requests berth makes.

use crate::netlink::{errno_of, Netlink};
use ipnet::Ipv4Net;
use netlink_packet_core::{NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoMacVlan, InfoPortData, InfoPortKind, InfoVeth,
    InfoVxlan, LinkAttribute, LinkFlag, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlag, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, BorrowedFd};

/// The index of the link named `name`, if there is one.
pub fn index_of(route: &Netlink, name: &str) -> io::Result<Option<u32>> {
    let mut message = LinkMessage::default();
    message
        .attributes
        .push(LinkAttribute::IfName(name.to_owned()));
    match route.route_get(RouteNetlinkMessage::GetLink(message)) {
        // struct ifinfomsg: family, pad, type (u16), then the index.
        Ok(payload) => Ok(payload
            .get(4..8)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_ne_bytes)),
        Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Makes a bridge named `name`, up.
pub fn add_bridge(route: &Netlink, name: &str) -> io::Result<()> {
    let mut message = LinkMessage::default();
    up(&mut message);
    message
        .attributes
        .push(LinkAttribute::IfName(name.to_owned()));
    message
        .attributes
        .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
            InfoKind::Bridge,
        )]));
    route.route_request(
        RouteNetlinkMessage::NewLink(message),
        NLM_F_CREATE | NLM_F_EXCL,
        &format!("creating the bridge {name}"),
    )
}

/// Sets link `index` up.
pub fn up_request(index: u32) -> RouteNetlinkMessage {
    let mut message = LinkMessage::default();
    message.header.index = index;
    up(&mut message);
    RouteNetlinkMessage::SetLink(message)
}

fn up(message: &mut LinkMessage) {
    message.header.flags = vec![LinkFlag::Up];
    message.header.change_mask = vec![LinkFlag::Up];
}

/// The container's end of a veth pair: its name and index in the
/// namespace it is made in.
pub const CONTAINER_LINK: &str = "eth0";
pub const CONTAINER_LINK_INDEX: u32 = 2;

/// Makes a veth pair: `host_name` on the host, up and enslaved to the
/// bridge `bridge`; its peer `eth0` (index 2, down) in the namespace `ns`;
/// both with `mtu` when given (an overlay's links carry VXLAN's 50 bytes).
pub fn add_veth_into(
    route: &Netlink,
    host_name: &str,
    bridge: u32,
    ns: BorrowedFd<'_>,
    mtu: Option<u32>,
) -> io::Result<()> {
    // The peer cannot be brought up here (veth refuses to open an end
    // before both exist): see `up_request`.
    let mut peer = LinkMessage::default();
    peer.header.index = CONTAINER_LINK_INDEX;
    peer.attributes
        .push(LinkAttribute::IfName(CONTAINER_LINK.to_owned()));
    peer.attributes.push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
    let mut message = LinkMessage::default();
    up(&mut message);
    message
        .attributes
        .push(LinkAttribute::IfName(host_name.to_owned()));
    message.attributes.push(LinkAttribute::Controller(bridge));
    if let Some(mtu) = mtu {
        peer.attributes.push(LinkAttribute::Mtu(mtu));
        message.attributes.push(LinkAttribute::Mtu(mtu));
    }
    message.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
    ]));
    route.route_request(
        RouteNetlinkMessage::NewLink(message),
        NLM_F_CREATE | NLM_F_EXCL,
        &format!("creating the veth pair {host_name}"),
    )
}

/// Makes a macvlan (bridge mode) of the link `parent`, straight in the
/// namespace `ns` as `eth0` (index 2, down).
pub fn add_macvlan_into(route: &Netlink, parent: u32, ns: BorrowedFd<'_>) -> io::Result<()> {
    let mut message = LinkMessage::default();
    message.header.index = CONTAINER_LINK_INDEX;
    message
        .attributes
        .push(LinkAttribute::IfName(CONTAINER_LINK.to_owned()));
    message.attributes.push(LinkAttribute::Link(parent));
    message
        .attributes
        .push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
    message.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::MacVlan),
        LinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(
            MACVLAN_MODE_BRIDGE,
        )])),
    ]));
    route.route_request(
        RouteNetlinkMessage::NewLink(message),
        NLM_F_CREATE | NLM_F_EXCL,
        "creating the container's macvlan link",
    )
}

/// Sets the link named `name` down; a link already gone is no error.
pub fn set_down(route: &Netlink, name: &str) -> io::Result<()> {
    let mut message = LinkMessage::default();
    message.header.change_mask = vec![LinkFlag::Up];
    message
        .attributes
        .push(LinkAttribute::IfName(name.to_owned()));
    match route.route_request(
        RouteNetlinkMessage::SetLink(message),
        0,
        &format!("setting {name} down"),
    ) {
        Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(()),
        other => other,
    }
}

/// Cuts the bridge port `name` off from the bridge's other isolated ports
/// (`IFLA_BRPORT_ISOLATED`): its container and theirs no longer reach each
/// other at layer 2, while all still reach the bridge's own address.
pub fn isolate_port(route: &Netlink, name: &str) -> io::Result<()> {
    let mut message = LinkMessage::default();
    message
        .attributes
        .push(LinkAttribute::IfName(name.to_owned()));
    message.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::PortKind(InfoPortKind::Bridge),
        LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::Isolated(
            true,
        )])),
    ]));
    route.route_request(
        RouteNetlinkMessage::NewLink(message),
        0,
        &format!("isolating the bridge port {name}"),
    )
}

/// The UDP port of VXLAN (IANA's).
pub const VXLAN_PORT: u16 = 4789;

/// Makes the VXLAN link `name` of `vni`, up, learning, from `local` (the
/// host's underlay address; the route's choice when absent), enslaved to
/// the bridge `bridge`.
pub fn add_vxlan(
    route: &Netlink,
    name: &str,
    vni: u32,
    local: Option<std::net::Ipv4Addr>,
    bridge: u32,
) -> io::Result<()> {
    let mut data = vec![
        InfoVxlan::Id(vni),
        InfoVxlan::Port(VXLAN_PORT),
        InfoVxlan::Learning(true),
    ];
    if let Some(local) = local {
        data.push(InfoVxlan::Local(local.octets().to_vec()));
    }
    let mut message = LinkMessage::default();
    up(&mut message);
    message
        .attributes
        .push(LinkAttribute::IfName(name.to_owned()));
    message.attributes.push(LinkAttribute::Controller(bridge));
    message.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Vxlan),
        LinkInfo::Data(InfoData::Vxlan(data)),
    ]));
    route.route_request(
        RouteNetlinkMessage::NewLink(message),
        NLM_F_CREATE | NLM_F_EXCL,
        &format!("creating the VXLAN link {name}"),
    )
}

/// Gives link `index` a fixed MAC address.
pub fn set_mac(route: &Netlink, index: u32, mac: [u8; 6]) -> io::Result<()> {
    let mut message = LinkMessage::default();
    message.header.index = index;
    message
        .attributes
        .push(LinkAttribute::Address(mac.to_vec()));
    route.route_request(
        RouteNetlinkMessage::SetLink(message),
        0,
        "setting a MAC address",
    )
}

/// A forwarding entry of the VXLAN link `vxlan`: frames for `mac` go to
/// `peer` (all zeros: the entry unknown and broadcast frames are flooded by).
fn fdb_entry(vxlan: u32, mac: [u8; 6], peer: std::net::Ipv4Addr) -> NeighbourMessage {
    let mut message = NeighbourMessage::default();
    message.header.family = AddressFamily::Bridge;
    message.header.ifindex = vxlan;
    message.header.state = NeighbourState::Permanent;
    message.header.flags = vec![NeighbourFlag::Own];
    message
        .attributes
        .push(NeighbourAttribute::LinkLocalAddress(mac.to_vec()));
    message
        .attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
            peer,
        )));
    message
}

/// Floods unknown and broadcast frames of the VXLAN link `vxlan` to
/// `peer` too (an all-zeros forwarding entry: head-end replication).
pub fn add_flood_peer(route: &Netlink, vxlan: u32, peer: std::net::Ipv4Addr) -> io::Result<()> {
    match route.route_request(
        RouteNetlinkMessage::NewNeighbour(fdb_entry(vxlan, [0; 6], peer)),
        NLM_F_CREATE | NLM_F_APPEND,
        &format!("adding the VXLAN peer {peer}"),
    ) {
        Err(e) if errno_of(&e) == Some(libc::EEXIST) => Ok(()),
        other => other,
    }
}

/// Forgets `peer`: its flood entry and every address learned behind it
/// (which would otherwise keep sending there until they age out, 5 min).
pub fn remove_peer(route: &Netlink, vxlan: u32, peer: std::net::Ipv4Addr) -> io::Result<()> {
    for (mac, dst) in fdb_entries(route, vxlan)? {
        if dst != peer {
            continue;
        }
        match route.route_request(
            RouteNetlinkMessage::DelNeighbour(fdb_entry(vxlan, mac, peer)),
            0,
            &format!("removing the VXLAN peer {peer}"),
        ) {
            Err(e) if errno_of(&e) == Some(libc::ENOENT) => {}
            other => other?,
        }
    }
    Ok(())
}

/// The peers the VXLAN link `vxlan` floods to.
pub fn flood_peers(route: &Netlink, vxlan: u32) -> io::Result<Vec<std::net::Ipv4Addr>> {
    Ok(fdb_entries(route, vxlan)?
        .into_iter()
        .filter(|(mac, _)| *mac == [0; 6])
        .map(|(_, peer)| peer)
        .collect())
}

/// Every forwarding entry of the VXLAN link `vxlan` that sends to a peer:
/// (MAC, peer).
fn fdb_entries(route: &Netlink, vxlan: u32) -> io::Result<Vec<([u8; 6], std::net::Ipv4Addr)>> {
    let mut request = NeighbourMessage::default();
    request.header.family = AddressFamily::Bridge;
    let mut entries = Vec::new();
    for answer in route.route_dump(RouteNetlinkMessage::GetNeighbour(request))? {
        let RouteNetlinkMessage::NewNeighbour(entry) = answer else {
            continue;
        };
        if entry.header.ifindex != vxlan {
            continue;
        }
        let mut mac = None;
        let mut peer = None;
        for attribute in &entry.attributes {
            match attribute {
                NeighbourAttribute::LinkLocalAddress(bytes) => {
                    mac = <[u8; 6]>::try_from(bytes.as_slice()).ok();
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => peer = Some(*ip),
                // In a bridge-family answer the crate cannot tell the
                // destination's family, and keeps its bytes.
                NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => {
                    peer = <[u8; 4]>::try_from(bytes.as_slice())
                        .ok()
                        .map(std::net::Ipv4Addr::from);
                }
                _ => {}
            }
        }
        if let (Some(mac), Some(peer)) = (mac, peer) {
            entries.push((mac, peer));
        }
    }
    Ok(entries)
}

/// Removes the link named `name`; a link already gone is no error.
pub fn delete_named(route: &Netlink, name: &str) -> io::Result<()> {
    let mut message = LinkMessage::default();
    message
        .attributes
        .push(LinkAttribute::IfName(name.to_owned()));
    match route.route_request(
        RouteNetlinkMessage::DelLink(message),
        0,
        &format!("removing the link {name}"),
    ) {
        Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(()),
        other => other,
    }
}

/// Adds `address/prefix` to link `index`.
pub fn address_request(index: u32, address: Ipv4Addr, prefix: u8) -> RouteNetlinkMessage {
    let mut message = AddressMessage::default();
    message.header.family = AddressFamily::Inet;
    message.header.prefix_len = prefix;
    message.header.index = index;
    message
        .attributes
        .push(AddressAttribute::Local(IpAddr::V4(address)));
    message
        .attributes
        .push(AddressAttribute::Address(IpAddr::V4(address)));
    if let Ok(net) = Ipv4Net::new(address, prefix) {
        if prefix < 31 {
            message
                .attributes
                .push(AddressAttribute::Broadcast(net.broadcast()));
        }
    }
    RouteNetlinkMessage::NewAddress(message)
}

/// Adds (or keeps) `address/prefix` on link `index`.
pub fn add_address(
    route: &Netlink,
    index: u32,
    address: Ipv4Addr,
    prefix: u8,
    what: &str,
) -> io::Result<()> {
    match route.route_request(
        address_request(index, address, prefix),
        NLM_F_CREATE | NLM_F_REPLACE,
        what,
    ) {
        Err(e) if errno_of(&e) == Some(libc::EEXIST) => Ok(()),
        other => other,
    }
}

/// A default route via `gateway` on link `index`.
pub fn default_route_request(index: u32, gateway: Ipv4Addr) -> RouteNetlinkMessage {
    let mut message = RouteMessage::default();
    message.header = RouteHeader {
        address_family: AddressFamily::Inet,
        table: RouteHeader::RT_TABLE_MAIN,
        protocol: RouteProtocol::Boot,
        scope: RouteScope::Universe,
        kind: RouteType::Unicast,
        ..RouteHeader::default()
    };
    message
        .attributes
        .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
    message.attributes.push(RouteAttribute::Oif(index));
    RouteNetlinkMessage::NewRoute(message)
}

/// Whether a refusal means the kernel lacks the feature (a link kind,
/// qdisc, classifier or action it does not know).
pub fn errno_is_unsupported(e: &io::Error) -> bool {
    matches!(
        errno_of(e),
        Some(libc::EOPNOTSUPP | libc::ENOENT | libc::EPROTONOSUPPORT | libc::EAFNOSUPPORT)
    )
}

/// A link kind to try (see [`trial`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trial {
    Bridge,
    Veth,
    Ifb,
    Vxlan,
    /// A macvlan on a veth made for the trial (no dummy links needed).
    MacvlanOnVeth,
}

/// Whether the kernel makes a link of this kind: makes one named
/// `berth-probe…` and removes it. Meant for a throwaway namespace.
pub fn trial(route: &Netlink, kind: Trial) -> bool {
    let make = |name: &str, info: Vec<LinkInfo>, link: Option<u32>| {
        let mut message = LinkMessage::default();
        message
            .attributes
            .push(LinkAttribute::IfName(name.to_owned()));
        if let Some(parent) = link {
            message.attributes.push(LinkAttribute::Link(parent));
        }
        message.attributes.push(LinkAttribute::LinkInfo(info));
        route
            .route_request(
                RouteNetlinkMessage::NewLink(message),
                NLM_F_CREATE | NLM_F_EXCL,
                name,
            )
            .is_ok()
    };
    let made = match kind {
        Trial::Bridge => make("probe-br", vec![LinkInfo::Kind(InfoKind::Bridge)], None),
        Trial::Veth => make("probe-veth", vec![LinkInfo::Kind(InfoKind::Veth)], None),
        Trial::Ifb => make("probe-ifb", vec![LinkInfo::Kind(InfoKind::Ifb)], None),
        Trial::Vxlan => make(
            "probe-vxlan",
            vec![
                LinkInfo::Kind(InfoKind::Vxlan),
                LinkInfo::Data(InfoData::Vxlan(vec![InfoVxlan::Id(4242)])),
            ],
            None,
        ),
        Trial::MacvlanOnVeth => {
            make("probe-parent", vec![LinkInfo::Kind(InfoKind::Veth)], None)
                && index_of(route, "probe-parent")
                    .ok()
                    .flatten()
                    .is_some_and(|parent| {
                        make(
                            "probe-macvlan",
                            vec![
                                LinkInfo::Kind(InfoKind::MacVlan),
                                LinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(
                                    MACVLAN_MODE_BRIDGE,
                                )])),
                            ],
                            Some(parent),
                        )
                    })
        }
    };
    for name in [
        "probe-br",
        "probe-veth",
        "probe-ifb",
        "probe-vxlan",
        "probe-macvlan",
        "probe-parent",
    ] {
        let _ = delete_named(route, name);
    }
    made
}

/// macvlan's bridge mode: the macvlans of one parent talk to each other.
pub const MACVLAN_MODE_BRIDGE: u32 = 4;

/// Every IPv4 network the host routes to directly or has an address in
/// (for refusing a subnet that would clash with one).
pub fn host_networks(route: &Netlink) -> io::Result<Vec<Ipv4Net>> {
    let mut nets = Vec::new();
    let mut message = RouteMessage::default();
    message.header.address_family = AddressFamily::Inet;
    for answer in route.route_dump(RouteNetlinkMessage::GetRoute(message))? {
        let RouteNetlinkMessage::NewRoute(r) = answer else {
            continue;
        };
        if r.header.table != RouteHeader::RT_TABLE_MAIN || r.header.destination_prefix_length == 0 {
            continue;
        }
        for attribute in &r.attributes {
            if let RouteAttribute::Destination(RouteAddress::Inet(dest)) = attribute {
                if let Ok(net) = Ipv4Net::new(*dest, r.header.destination_prefix_length) {
                    nets.push(net.trunc());
                }
            }
        }
    }
    Ok(nets)
}

/// The IPv4 addresses (with prefix) on link `index`.
pub fn addresses_of(route: &Netlink, index: u32) -> io::Result<Vec<Ipv4Net>> {
    let mut message = AddressMessage::default();
    message.header.family = AddressFamily::Inet;
    let mut out = Vec::new();
    for answer in route.route_dump(RouteNetlinkMessage::GetAddress(message))? {
        let RouteNetlinkMessage::NewAddress(a) = answer else {
            continue;
        };
        if a.header.index != index {
            continue;
        }
        for attribute in &a.attributes {
            if let AddressAttribute::Local(IpAddr::V4(ip)) = attribute {
                if let Ok(net) = Ipv4Net::new(*ip, a.header.prefix_len) {
                    out.push(net);
                }
            }
        }
    }
    Ok(out)
}
