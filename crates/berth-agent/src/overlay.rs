//! The fleet's overlay networks on this host (`fleet-<vni>`): made when the
//! first container of one arrives, kept in step with the fleet from each
//! heartbeat's answer, removed once the host has no container on them and
//! none on its way (when a container leaves, and at each heartbeat).
//!
//! The server's view behind a heartbeat's answer may be up to a second old,
//! older than a container the server has just sent here with the network's
//! newest state. So a network that a create touched within [`GRACE`] only
//! gains from an answer (peers and members are added, none taken away);
//! after that the answer is the truth.

use crate::error::ApiError;
use crate::state::AgentState;
use berth_api::fleet::{fleet_overlay_name, OverlaySpec, FLEET_OVERLAY_PREFIX};
use berth_core::network::{NetworkMode, FIRST_FLEET_VNI};
use berth_core::ErrorCode;
use berth_net::{CreateNetwork, Driver, Member, NetError, Network};
use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long after a create a heartbeat's answer may only add to a network.
pub const GRACE: Duration = Duration::from_secs(10);

/// The creates under way on each fleet overlay and when one last touched
/// it; the lock also keeps a create and a heartbeat's changes (or the
/// network's removal) apart.
#[derive(Default)]
pub struct FleetOverlays {
    state: Mutex<Overlays>,
}

#[derive(Default)]
struct Overlays {
    touched: HashMap<String, Instant>,
    /// Creates between [`AgentState::ensure_overlay`] and the end of their
    /// attach ([`AgentState::overlay_settled`]): the network must stay.
    pending: HashMap<String, usize>,
}

impl AgentState {
    /// Makes the network `spec` describes if this host lacks it, and adds
    /// the peers and members it names. `mode` is the container's network,
    /// which must be this one. On success the network is kept until
    /// [`AgentState::overlay_settled`] is called for it.
    pub(crate) fn ensure_overlay(
        &self,
        mode: &NetworkMode,
        spec: &OverlaySpec,
    ) -> Result<(), ApiError> {
        let invalid = |m: String| ApiError::new(ErrorCode::InvalidArgument, m);
        if spec.network != fleet_overlay_name(spec.vni) {
            return Err(invalid(format!(
                "overlay {}: a fleet overlay is named {} on its hosts",
                spec.network,
                fleet_overlay_name(spec.vni)
            )));
        }
        if !matches!(mode, NetworkMode::Named(name) if name.as_str() == spec.network) {
            return Err(invalid(format!(
                "overlay {} is given but the container's network is {mode}",
                spec.network
            )));
        }
        let mut overlays = lock(&self.overlays.state);
        let existing = match self.networks.inspect(&spec.network) {
            Ok(view) => Some(view.network),
            Err(NetError::NotFound(_)) => None,
            Err(e) => return Err(ApiError::from_lib(&e)),
        };
        match existing {
            Some(network) => {
                check_same(&network, spec)?;
                self.merge(&network, spec)
                    .map_err(|e| ApiError::from_lib(&e))?;
            }
            None => {
                let made = self.networks.create(&CreateNetwork {
                    name: spec.network.clone(),
                    driver: Driver::Overlay,
                    subnet: Some(spec.subnet),
                    internal: spec.internal,
                    vni: Some(spec.vni),
                    local: spec.local,
                    peers: spec.peers.clone(),
                    ..CreateNetwork::default()
                });
                made.map_err(|e| ApiError::from_lib(&e))?;
                self.networks
                    .set_remote_members(&spec.network, &members_of(spec))
                    .map_err(|e| ApiError::from_lib(&e))?;
                tracing::info!(network = %spec.network, vni = spec.vni, subnet = %spec.subnet, "fleet overlay made");
            }
        }
        overlays
            .touched
            .insert(spec.network.clone(), Instant::now());
        *overlays.pending.entry(spec.network.clone()).or_default() += 1;
        Ok(())
    }

    /// A create that [`AgentState::ensure_overlay`] let through is on the
    /// network now, or failed: the network may go once idle.
    pub(crate) fn overlay_settled(&self, network: &str) {
        let mut overlays = lock(&self.overlays.state);
        if let Some(count) = overlays.pending.get_mut(network) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                overlays.pending.remove(network);
            }
        }
    }

    /// Removes every fleet overlay of this host no container is on or on
    /// its way to (after recovery).
    pub(crate) fn remove_idle_overlays(&self) {
        let overlays = lock(&self.overlays.state);
        for network in self.fleet_overlays() {
            if let Err(e) = self.remove_if_idle(&network.name, &overlays) {
                tracing::warn!(network = %network.name, "removing an idle fleet overlay: {e}");
            }
        }
    }

    /// Removes `name` if it is a fleet overlay no container is on or on its
    /// way to (after a container left it); any other network stays.
    pub(crate) fn remove_overlay_if_idle(&self, name: &str) {
        if !name.starts_with(FLEET_OVERLAY_PREFIX) {
            return;
        }
        let overlays = lock(&self.overlays.state);
        if let Err(e) = self.remove_if_idle(name, &overlays) {
            tracing::warn!(network = %name, "removing an idle fleet overlay: {e}");
        }
    }

    /// The host's fleet overlays (none, logged, when they cannot be read).
    fn fleet_overlays(&self) -> Vec<Network> {
        match self.networks.list() {
            Ok(networks) => networks.into_iter().filter(is_fleet_overlay).collect(),
            Err(e) => {
                tracing::warn!("reading the host's networks: {e}");
                Vec::new()
            }
        }
    }

    /// Adds what `spec` says to `network` (takes nothing away).
    fn merge(&self, network: &Network, spec: &OverlaySpec) -> Result<(), NetError> {
        let peers: BTreeSet<Ipv4Addr> = network.peers.iter().chain(&spec.peers).copied().collect();
        let mut members = network.remote_members.clone();
        members.retain(|m| !spec.members.iter().any(|new| new.address == m.address));
        members.extend(members_of(spec));
        self.set_overlay(network, &peers.into_iter().collect::<Vec<_>>(), &members)
    }

    /// Makes `network`'s peers and members those of `spec`.
    fn replace(&self, network: &Network, spec: &OverlaySpec) -> Result<(), NetError> {
        self.set_overlay(network, &spec.peers, &members_of(spec))
    }

    /// Gives `network` these peers and members, touching only what differs.
    fn set_overlay(
        &self,
        network: &Network,
        peers: &[Ipv4Addr],
        members: &[Member],
    ) -> Result<(), NetError> {
        if !same_set(peers, &network.peers) {
            self.networks.set_peers(&network.name, peers)?;
        }
        if !same_members(members, &network.remote_members) {
            self.networks.set_remote_members(&network.name, members)?;
        }
        Ok(())
    }

    /// Takes a heartbeat's answer: the networks this host has members of,
    /// as the server read them.
    pub fn follow_overlays(&self, specs: &[OverlaySpec]) {
        let mut overlays = lock(&self.overlays.state);
        overlays.touched.retain(|_, at| at.elapsed() < GRACE);
        for network in &self.fleet_overlays() {
            let fresh = overlays.touched.contains_key(&network.name);
            let outcome = match specs.iter().find(|s| s.network == network.name) {
                Some(spec) if fresh => self.merge(network, spec),
                Some(spec) => self.replace(network, spec),
                None => self.remove_if_idle(&network.name, &overlays),
            };
            if let Err(e) = outcome {
                tracing::warn!(network = %network.name, "keeping the fleet overlay in step: {e}");
            }
        }
    }

    /// Removes `name` if it is a fleet overlay no container of this host is
    /// on or on its way to; any other network, or none, stays as it is.
    /// The caller holds the overlays' lock.
    fn remove_if_idle(&self, name: &str, overlays: &Overlays) -> Result<(), NetError> {
        if overlays.pending.contains_key(name) {
            return Ok(());
        }
        let view = match self.networks.inspect(name) {
            Ok(view) => view,
            Err(NetError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        if !is_fleet_overlay(&view.network) || !view.containers.is_empty() {
            return Ok(());
        }
        self.networks.remove(name)?;
        tracing::info!(network = %name, "fleet overlay removed: no container of this host is on it");
        Ok(())
    }
}

/// A network berth made for the fleet (not one an operator made by hand).
fn is_fleet_overlay(network: &Network) -> bool {
    network.driver == Driver::Overlay
        && network
            .vni
            .is_some_and(|vni| vni >= FIRST_FLEET_VNI && network.name == fleet_overlay_name(vni))
        && network.name.starts_with(FLEET_OVERLAY_PREFIX)
}

/// An existing network of the name must be the one `spec` describes.
fn check_same(network: &Network, spec: &OverlaySpec) -> Result<(), ApiError> {
    if network.driver != Driver::Overlay
        || network.vni != Some(spec.vni)
        || network.subnet != spec.subnet
    {
        return Err(ApiError::new(
            ErrorCode::NetworkConflict,
            format!(
                "network {} exists on this host and is not the fleet's overlay {} ({}): remove it",
                network.name, spec.vni, spec.subnet
            ),
        ));
    }
    Ok(())
}

fn members_of(spec: &OverlaySpec) -> Vec<Member> {
    spec.members
        .iter()
        .map(|m| Member {
            names: m.names.clone(),
            address: m.address,
        })
        .collect()
}

fn same_set(a: &[Ipv4Addr], b: &[Ipv4Addr]) -> bool {
    a.iter().collect::<BTreeSet<_>>() == b.iter().collect::<BTreeSet<_>>()
}

fn same_members(a: &[Member], b: &[Member]) -> bool {
    let key = |m: &Member| (m.address, m.names.clone());
    a.iter().map(key).collect::<BTreeSet<_>>() == b.iter().map(key).collect::<BTreeSet<_>>()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
