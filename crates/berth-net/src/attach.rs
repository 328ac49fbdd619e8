//! Putting a container on a network and taking it off again.
//!
//! Attach claims the address and ports, records the attachment and writes
//! its name files ([`Networks::claim`]), then makes the veth pair (host end
//! on the bridge, `eth0` inside the namespace) with the address and default
//! route inside ([`Claimed::wire`]), then tells the network's other members
//! and writes the rules ([`Claimed::finish`]). The namespace is made here
//! ([`Networks::attach`]) or by the container's runtime, which then wires
//! it while the container is still being set up. A failure at any step
//! undoes the steps before it. Detach removes the
//! same pieces by the record; `gc` detaches every container that is gone.

use crate::error::{NetError, Result};
use crate::files;
use crate::links::{self, CONTAINER_LINK_INDEX};
use crate::model::{Attachment, Driver, Member, Network, DEFAULT_NETWORK};
use crate::namespace::Namespace;
use crate::netlink::{errno_of, Netlink};
use crate::networks::{check_host_address, Networks, HOST_CLAIM};
use crate::shaping::{self, ShapeError};
use crate::state::Lock;
use berth_core::network::{NetworkMode, NetworkRequest, PublishedPort};
use berth_core::spec::BindMount;
use sha2::{Digest, Sha256};
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// A container's place on a network, ready for it to join.
pub struct Attached {
    /// The network namespace, set up; the container joins it.
    pub namespace: OwnedFd,
    pub attachment: Attachment,
    /// The name files to bind into the container (read-only).
    pub mounts: Vec<BindMount>,
}

/// What `gc` removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Collected {
    /// Attachments of containers that are gone.
    pub attachments: Vec<String>,
    /// Addresses and ports claimed by no attachment.
    pub claims: usize,
}

impl Networks {
    /// Puts `container` on the network `request` names (the default bridge
    /// or a user network); `names` are what it answers to there. Makes the
    /// namespace for it to join: [`Networks::claim`], a namespace,
    /// [`Claimed::wire`] and [`Claimed::finish`] in one.
    pub fn attach(
        &self,
        container: &str,
        names: &[String],
        request: &NetworkRequest,
    ) -> Result<Attached> {
        request.validate()?;
        if let NetworkMode::Cni(name) = &request.mode {
            return self.attach_cni(container, names, name, request);
        }
        let mut claimed = self.claim(container, names, request)?;
        let namespace =
            Namespace::new().map_err(|e| NetError::io("making a network namespace", e))?;
        claimed.wire_with(namespace.handle.as_fd(), &namespace.route)?;
        let (attachment, mounts) = claimed.finish()?;
        Ok(Attached {
            namespace: namespace.handle,
            attachment,
            mounts,
        })
    }

    /// The first half of an attach, for a container whose runtime makes its
    /// namespace: claims the address and ports, records the attachment and
    /// writes its name files. The link follows with [`Claimed::wire`], once
    /// the namespace exists. Not for `cni:` networks (a CNI plugin makes
    /// everything in one ADD).
    pub fn claim(
        &self,
        container: &str,
        names: &[String],
        request: &NetworkRequest,
    ) -> Result<Claimed<'_>> {
        request.validate()?;
        let macvlan_name;
        let name = match &request.mode {
            NetworkMode::Bridge => DEFAULT_NETWORK,
            NetworkMode::Named(name) => name.as_str(),
            NetworkMode::Macvlan(parent) => {
                macvlan_name = self.macvlan_network_of(parent)?;
                macvlan_name.as_str()
            }
            other => {
                return Err(NetError::Invalid(format!(
                    "network mode {other} is not one berth-net attaches"
                )))
            }
        };
        let route = Netlink::route().map_err(|e| NetError::io("opening a routing socket", e))?;
        let (network, bridge) = self.resolve(name, &route)?;
        let macvlan = network.driver == Driver::Macvlan;
        if macvlan && !request.ports.is_empty() {
            return Err(NetError::Invalid(format!(
                "network {name} is a macvlan network: its containers are on {}'s own network, with nothing to publish ports through",
                network.parent.as_deref().unwrap_or("the parent")
            )));
        }
        if macvlan && (request.egress_rate.is_some() || request.ingress_rate.is_some()) {
            return Err(NetError::Unsupported(format!(
                "network {name} is a macvlan network: bandwidth limits need a bridge network (berth shapes on the host end of a veth)"
            )));
        }
        if macvlan && request.isolated {
            return Err(NetError::Unsupported(format!(
                "network {name} is a macvlan network: isolating a container needs a bridge port"
            )));
        }
        if network.internal && !request.ports.is_empty() {
            return Err(NetError::Invalid(format!(
                "network {name} is internal: nothing from outside reaches it, so no port can be published"
            )));
        }
        let shares_names = network.name != DEFAULT_NETWORK;
        let lock = self.state.lock(shares_names || !request.ports.is_empty())?;
        if let Some(existing) = self.state.attachment(container)? {
            return Err(NetError::Conflict(format!(
                "container {container} is already on network {}",
                existing.network
            )));
        }
        let mut undo = Undo::new(self, container, &network.name);
        let address = self.claim_address(&network, container, request.ip)?;
        undo.address = Some(address);
        for port in &request.ports {
            let key = port_key(port);
            if !self.state.claim_port(&key, container)? {
                let holder = self.state.port_holder(&key).unwrap_or_default();
                return Err(NetError::Conflict(format!(
                    "host port {}/{} is already published by container {holder}",
                    port.host_port, port.protocol
                )));
            }
            undo.ports.push(key);
        }
        let attachment = Attachment {
            container: container.to_owned(),
            network: network.name.clone(),
            // A macvlan lives only in the container's namespace.
            host_link: if macvlan {
                String::new()
            } else {
                host_link_name(container)
            },
            address,
            names: names.to_vec(),
            ports: request.ports.clone(),
            egress_rate: request.egress_rate,
            ingress_rate: request.ingress_rate,
            holder_pid: std::process::id(),
            cni: None,
        };
        self.state.save_attachment(&attachment)?;
        undo.record = true;

        let dir = self.state.files_dir(container);
        let members = if shares_names {
            self.members(&network.name)?
        } else {
            vec![attachment.clone()]
        };
        files::write_new(
            &dir,
            &files::hosts(&attachment, &members, &network.remote_members),
            &files::from_host(),
        )?;
        Ok(Claimed {
            undo,
            _lock: lock,
            route,
            parent: bridge,
            network,
            isolated: request.isolated,
            members: shares_names.then_some(members),
            attachment,
            mounts: files::mounts(&dir),
        })
    }

    /// Sets the attachment's bandwidth limits on the host end of its link.
    fn shape(&self, route: &Netlink, attachment: &Attachment) -> Result<()> {
        if attachment.egress_rate.is_none() && attachment.ingress_rate.is_none() {
            return Ok(());
        }
        let lookup = "looking up the container's link";
        let link = links::index_of(route, &attachment.host_link)
            .map_err(|e| NetError::io(lookup, e))?
            .ok_or_else(|| NetError::io(lookup, std::io::ErrorKind::NotFound.into()))?;
        let shaped = match attachment.ingress_rate {
            Some(rate) => shaping::limit_ingress(route, link, rate),
            None => Ok(()),
        }
        .and_then(|()| match attachment.egress_rate {
            Some(rate) => {
                shaping::limit_egress(route, link, &ifb_name(&attachment.container), rate)
            }
            None => Ok(()),
        });
        shaped.map_err(|e| match e {
            ShapeError::Unsupported(why) => NetError::Unsupported(why),
            ShapeError::Io(e) => NetError::io("setting a bandwidth limit", e),
        })
    }

    /// The name files of an attached container, for one that joins its
    /// namespace (`--network container:ID`) to bind as well.
    pub fn files_of(&self, container: &str) -> Result<Vec<BindMount>> {
        if self.state.attachment(container)?.is_none() {
            return Ok(Vec::new());
        }
        Ok(files::mounts(&self.state.files_dir(container)))
    }

    fn claim_address(
        &self,
        network: &Network,
        container: &str,
        fixed: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr> {
        if let Some(address) = fixed {
            check_host_address(&network.subnet, address, "address")?;
            if address == network.gateway {
                return Err(NetError::Conflict(format!(
                    "address {address} is network {}'s gateway",
                    network.name
                )));
            }
            if !self
                .state
                .claim_address(&network.name, address, container)?
            {
                let holder = self
                    .state
                    .claimed_addresses(&network.name)?
                    .into_iter()
                    .find(|(a, _)| *a == address)
                    .map(|(_, c)| c)
                    .unwrap_or_default();
                return Err(NetError::Conflict(format!(
                    "address {address} on network {} is taken by container {holder}",
                    network.name
                )));
            }
            return Ok(address);
        }
        // From just after the last address given, round the subnet once
        // (by arithmetic: a /16 has 65,534 host addresses).
        let pool = network.ip_range.unwrap_or(network.subnet);
        let first = (u32::from(pool.network()) + 1).max(u32::from(network.subnet.network()) + 1);
        let last = u32::from(pool.broadcast()).min(u32::from(network.subnet.broadcast()) - 1);
        let count = (last + 1).saturating_sub(first).max(1);
        let start = self
            .state
            .address_hint(&network.name)
            .filter(|last| (first..first + count).contains(&u32::from(*last)))
            .map_or(0, |last| (u32::from(last) + 1 - first) % count);
        for i in 0..count {
            let candidate = Ipv4Addr::from(first + (start + i) % count);
            if candidate == network.gateway {
                continue;
            }
            if self
                .state
                .claim_address(&network.name, candidate, container)?
            {
                self.state.set_address_hint(&network.name, candidate);
                return Ok(candidate);
            }
        }
        Err(NetError::Conflict(format!(
            "network {} has no free address left in {}",
            network.name, network.subnet
        )))
    }

    fn members(&self, network: &str) -> Result<Vec<Attachment>> {
        Ok(self
            .state
            .attachments()?
            .into_iter()
            .filter(|a| a.network == network)
            .collect())
    }

    /// Rewrites the hosts file of every member but `except`.
    /// Rewrites the hosts file of every member but `except` (with the
    /// network's members on other hosts, for an overlay).
    fn rewrite_peers(&self, except: &str, members: &[Attachment]) -> Result<()> {
        let remote = match members.first() {
            Some(m) => self
                .state
                .network(&m.network)?
                .map(|n| n.remote_members)
                .unwrap_or_default(),
            None => Vec::new(),
        };
        for member in members.iter().filter(|m| m.container != except) {
            files::rewrite_hosts(
                &self.state.files_dir(&member.container),
                &files::hosts(member, members, &remote),
            )?;
        }
        Ok(())
    }

    /// Sets the other hosts an overlay floods to (the fleet's view, given
    /// again whenever it changes): adds the new ones' forwarding entries,
    /// removes the gone ones'.
    pub fn set_peers(&self, network: &str, peers: &[Ipv4Addr]) -> Result<()> {
        let _lock = self.state.lock(true)?;
        let mut record = self
            .state
            .network(network)?
            .ok_or_else(|| NetError::NotFound(format!("no network named {network}")))?;
        if record.driver != Driver::Overlay {
            return Err(NetError::Invalid(format!(
                "network {network} is not an overlay"
            )));
        }
        let route = Netlink::route().map_err(|e| NetError::io("opening a routing socket", e))?;
        let vxlan = links::index_of(&route, &record.vxlan)
            .map_err(|e| NetError::io("looking up a VXLAN link", e))?
            .ok_or_else(|| {
                NetError::NotFound(format!(
                    "network {network} has no VXLAN link here (made again on its next container)"
                ))
            })?;
        let now = links::flood_peers(&route, vxlan)
            .map_err(|e| NetError::io("reading VXLAN peers", e))?;
        for peer in peers.iter().filter(|p| !now.contains(p)) {
            links::add_flood_peer(&route, vxlan, *peer)
                .map_err(|e| NetError::io("adding a VXLAN peer", e))?;
        }
        for gone in now.iter().filter(|p| !peers.contains(p)) {
            links::remove_peer(&route, vxlan, *gone)
                .map_err(|e| NetError::io("removing a VXLAN peer", e))?;
        }
        record.peers = peers.to_vec();
        self.state.save_network(&record)?;
        // Only peers may send VXLAN to this host.
        self.sync_rules()
    }

    /// Sets the containers of an overlay on other hosts, and rewrites the
    /// hosts files of this host's members with them.
    pub fn set_remote_members(&self, network: &str, members: &[Member]) -> Result<()> {
        let _lock = self.state.lock(true)?;
        let mut record = self
            .state
            .network(network)?
            .ok_or_else(|| NetError::NotFound(format!("no network named {network}")))?;
        record.remote_members = members.to_vec();
        self.state.save_network(&record)?;
        let local = self.members(network)?;
        self.rewrite_peers("", &local)
    }

    /// Takes `container` off its network: its link, address, ports, name
    /// files and record. A container with no attachment is no error.
    ///
    /// The host end of its veth is set down, not removed: removing a link
    /// waits for the kernel's RCU grace periods (16-30 ms here, against
    /// ~0.1 ms for down), while the pair goes anyway, in the kernel's
    /// batched namespace cleanup, once the namespace's last user (the
    /// container, its shim) is gone. Down at once, the old namespace is
    /// off the bridge, so its address can be given again without a clash.
    /// `gc` removes links outright.
    ///
    /// Returns the network it took the container off (`None`: it had no
    /// attachment), for a caller that keeps networks only while in use.
    pub fn detach(&self, container: &str) -> Result<Option<String>> {
        self.detach_with(container, Teardown::Down)
    }

    fn detach_with(&self, container: &str, teardown: Teardown) -> Result<Option<String>> {
        let Some(peek) = self.state.attachment(container)? else {
            return Ok(None);
        };
        let shares_names = peek.network != DEFAULT_NETWORK && peek.cni.is_none();
        let _lock = self.state.lock(shares_names || !peek.ports.is_empty())?;
        // Again under the lock: a detach that ran meanwhile took it.
        let Some(attachment) = self.state.attachment(container)? else {
            return Ok(None);
        };
        // DEL is the plugins' to get right; one that fails (or is gone)
        // must not keep the rest from being freed.
        if let Err(e) = self.detach_cni(&attachment) {
            tracing::warn!(container, "CNI DEL: {e}");
        }
        let route = Netlink::route().map_err(|e| NetError::io("opening a routing socket", e))?;
        if !attachment.host_link.is_empty() {
            match teardown {
                Teardown::Down => links::set_down(&route, &attachment.host_link),
                Teardown::Remove => links::delete_named(&route, &attachment.host_link),
            }
            .map_err(|e| NetError::io("taking down the container's link", e))?;
        }
        if attachment.egress_rate.is_some() {
            links::delete_named(&route, &ifb_name(container))
                .map_err(|e| NetError::io("removing the container's ifb link", e))?;
        }
        // Rules and peers' names first, without it: if either fails, the
        // record (the last thing removed) still says what to undo, and the
        // next detach or gc tries again.
        if !attachment.ports.is_empty() {
            self.sync_rules_without(Some(container))?;
        }
        if shares_names {
            let members: Vec<Attachment> = self
                .members(&attachment.network)?
                .into_iter()
                .filter(|m| m.container != container)
                .collect();
            self.rewrite_peers(container, &members)?;
        }
        for port in &attachment.ports {
            self.state.release_port_of(&port_key(port), container)?;
        }
        self.state
            .release_address_of(&attachment.network, attachment.address, container)?;
        self.state.remove_attachment(container)?;
        tracing::debug!(container, network = %attachment.network, "detached");
        Ok(Some(attachment.network))
    }

    /// Detaches every container `alive` says is gone, and frees addresses
    /// and ports no attachment holds (a crash between claim and record).
    /// Goes on past a container it cannot detach, and returns the first
    /// such error once everything else is done.
    pub fn gc(&self, alive: &dyn Fn(&Attachment) -> bool) -> Result<Collected> {
        let mut collected = Collected::default();
        let mut first_error = None;
        for attachment in self.state.attachments()? {
            if !alive(&attachment) {
                match self.detach_with(&attachment.container, Teardown::Remove) {
                    Ok(_) => collected.attachments.push(attachment.container),
                    Err(e) => {
                        tracing::warn!(container = %attachment.container, "gc: {e}");
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        let _lock = self.state.lock(true)?;
        let attached: std::collections::HashSet<String> = self
            .state
            .attachments()?
            .into_iter()
            .map(|a| a.container)
            .collect();
        for network in self.state.networks()? {
            for (address, owner) in self.state.claimed_addresses(&network.name)? {
                if !attached.contains(&owner) && owner != HOST_CLAIM {
                    self.state
                        .release_address_of(&network.name, address, &owner)?;
                    collected.claims += 1;
                }
            }
        }
        for (key, owner) in self.state.claimed_ports()? {
            if !attached.contains(&owner) {
                self.state.release_port_of(&key, &owner)?;
                collected.claims += 1;
            }
        }
        // Whatever a crash left in the rules goes with a rewrite.
        if !self.state.networks()?.is_empty() {
            self.sync_rules()?;
        }
        first_error.map_or(Ok(collected), Err)
    }
}

/// What detach does to the host end of a container's veth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Teardown {
    /// Down: the kernel removes the pair with the namespace.
    Down,
    /// Removed now (gc: whatever holds the namespace, the link goes).
    Remove,
}

/// A container's place on a network, claimed and recorded, with its name
/// files written ([`Networks::claim`]); its link is made next by
/// [`Claimed::wire`], and [`Claimed::finish`] tells the network's other
/// members. Dropped before `finish`, everything it did is undone.
pub struct Claimed<'a> {
    // Before the lock: the undo runs while the state is still locked.
    undo: Undo<'a>,
    _lock: Lock,
    /// A routing socket in the host's namespace.
    route: Netlink,
    /// The bridge the veth's host end goes on, or a macvlan's parent link.
    parent: u32,
    network: Network,
    isolated: bool,
    /// The network's members, on a network that shares names.
    members: Option<Vec<Attachment>>,
    attachment: Attachment,
    mounts: Vec<BindMount>,
}

impl Claimed<'_> {
    /// The name files to bind into the container (read-only).
    pub fn mounts(&self) -> &[BindMount] {
        &self.mounts
    }

    /// Makes the container's link into `namespace` (`eth0` there), with
    /// its address, default route and bandwidth limits.
    pub fn wire(&mut self, namespace: BorrowedFd<'_>) -> Result<()> {
        let inside = Namespace::route_in(namespace).map_err(|e| {
            NetError::io("opening a routing socket in the container's namespace", e)
        })?;
        self.wire_with(namespace, &inside)
    }

    /// [`Claimed::wire`] with a routing socket already in `namespace`.
    fn wire_with(&mut self, namespace: BorrowedFd<'_>, inside: &Netlink) -> Result<()> {
        let (network, attachment, route) = (&self.network, &self.attachment, &self.route);
        if network.driver == Driver::Macvlan {
            links::add_macvlan_into(route, self.parent, namespace).map_err(|e| {
                if links::errno_is_unsupported(&e) {
                    NetError::Unsupported(format!("this kernel has no macvlan links: {e}"))
                } else {
                    NetError::io("making the container's macvlan link", e)
                }
            })?;
        } else {
            let make = || {
                links::add_veth_into(
                    route,
                    &attachment.host_link,
                    self.parent,
                    namespace,
                    network.mtu,
                )
            };
            match make() {
                // The link of an earlier container of this id, set down at
                // its end, waits for the kernel's namespace cleanup: no
                // record holds it any more (ids are unique among live
                // containers), so it goes now.
                Err(e) if errno_of(&e) == Some(libc::EEXIST) => {
                    links::delete_named(route, &attachment.host_link)
                        .and_then(|()| make())
                        .map_err(|e| NetError::io("making the container's link", e))?;
                }
                other => other.map_err(|e| NetError::io("making the container's link", e))?,
            }
            self.undo.link = Some(attachment.host_link.clone());
            if self.isolated {
                links::isolate_port(route, &attachment.host_link)
                    .map_err(|e| NetError::io("isolating the container's bridge port", e))?;
            }
        }
        if attachment.egress_rate.is_some() {
            self.undo.ifb = Some(ifb_name(&attachment.container));
        }
        self.undo.networks.shape(route, attachment)?;
        let address = attachment.address;
        inside
            .route_batch(vec![
                (
                    links::address_request(
                        CONTAINER_LINK_INDEX,
                        address,
                        network.subnet.prefix_len(),
                    ),
                    netlink_packet_core::NLM_F_CREATE | netlink_packet_core::NLM_F_EXCL,
                    format!("giving eth0 the address {address}"),
                ),
                (
                    links::up_request(CONTAINER_LINK_INDEX),
                    0,
                    "setting eth0 up".into(),
                ),
                (
                    links::default_route_request(CONTAINER_LINK_INDEX, network.gateway),
                    netlink_packet_core::NLM_F_CREATE | netlink_packet_core::NLM_F_EXCL,
                    format!("routing through {}", network.gateway),
                ),
            ])
            .map_err(|e| NetError::io("setting up eth0 in the container's namespace", e))
    }

    /// Ends the attach: the network's other members learn the container's
    /// names, and its published ports go into the rules. Returns the record
    /// and the name files to bind.
    pub fn finish(mut self) -> Result<(Attachment, Vec<BindMount>)> {
        let networks = self.undo.networks;
        if let Some(members) = &self.members {
            networks.rewrite_peers(&self.attachment.container, members)?;
        }
        if !self.attachment.ports.is_empty() {
            self.undo.resync = true;
            networks.sync_rules()?;
        }
        let Claimed {
            undo,
            _lock: lock,
            network,
            attachment,
            mounts,
            ..
        } = self;
        undo.disarm();
        drop(lock);
        tracing::debug!(
            container = %attachment.container,
            network = %network.name,
            address = %attachment.address,
            "attached"
        );
        Ok((attachment, mounts))
    }
}

/// Undoes a half-made attachment when dropped armed.
struct Undo<'a> {
    networks: &'a Networks,
    container: String,
    network: String,
    address: Option<Ipv4Addr>,
    ports: Vec<String>,
    link: Option<String>,
    ifb: Option<String>,
    record: bool,
    /// Its published ports may be in the rules.
    resync: bool,
}

impl<'a> Undo<'a> {
    /// One with nothing to undo yet, for `container` on `network`.
    fn new(networks: &'a Networks, container: &str, network: &str) -> Undo<'a> {
        Undo {
            networks,
            container: container.to_owned(),
            network: network.to_owned(),
            address: None,
            ports: Vec::new(),
            link: None,
            ifb: None,
            record: false,
            resync: false,
        }
    }

    fn disarm(mut self) {
        self.address = None;
        self.ports.clear();
        self.link = None;
        self.ifb = None;
        self.record = false;
        self.resync = false;
    }
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        let state = &self.networks.state;
        if self.link.is_some() || self.ifb.is_some() {
            if let Ok(route) = Netlink::route() {
                for link in [&self.link, &self.ifb].into_iter().flatten() {
                    let _ = links::delete_named(&route, link);
                }
            }
        }
        if self.record {
            let _ = state.remove_attachment(&self.container);
        }
        for key in &self.ports {
            let _ = state.release_port_of(key, &self.container);
        }
        if let Some(address) = self.address {
            let _ = state.release_address_of(&self.network, address, &self.container);
        }
        // Rules written for it (a sync that failed after writing) go too.
        if self.resync {
            let _ = self.networks.sync_rules_without(Some(&self.container));
        }
    }
}

/// The claim file of a host port.
fn port_key(port: &PublishedPort) -> String {
    format!("{}-{}", port.protocol, port.host_port)
}

/// The host end of a container's veth pair: `bv` and 12 hex digits of the
/// container id's hash (interface names are at most 15 bytes).
pub fn host_link_name(container: &str) -> String {
    format!("bv{}", short_hash(container))
}

/// The IFB link that shapes what a container sends: `bi` and the same hash.
pub fn ifb_name(container: &str) -> String {
    format!("bi{}", short_hash(container))
}

fn short_hash(container: &str) -> String {
    let digest = Sha256::digest(container.as_bytes());
    hex::encode(&digest[..6])
}
