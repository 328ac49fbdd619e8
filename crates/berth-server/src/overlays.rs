//! The fleet's overlay networks as each host needs them: which other hosts
//! carry members of a network it has members of (its VXLAN peers), and
//! those members' names and addresses (its hosts files).
//!
//! Read from the store (tasks being prepared or running with an address,
//! and their hosts' addresses) at most once per [`FRESH_FOR`] by each
//! server, however many heartbeats ask: at 2,500 heartbeats a second a
//! read per beat would be the store's heaviest work. A heartbeat never
//! waits for a read another caller has begun: it gets the last view. A host hears of a new
//! member elsewhere at its next heartbeat (the dispatcher reads the view
//! again after each address it claims, so the next answers have it); a
//! new member's own host is told the network's state at once, in its
//! `CreateContainer`.

use berth_api::fleet::{fleet_overlay_name, OverlayMember, OverlaySpec};
use berth_store::{container_name, OverlayMembership, Store, StoreError};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How old a read of the fleet's overlays may be when it is answered.
pub const FRESH_FOR: Duration = Duration::from_secs(1);

/// The last read, shared by the heartbeat handlers and the dispatcher.
#[derive(Default)]
pub struct OverlayDirectory {
    last: std::sync::RwLock<Option<(Instant, Arc<OverlayView>)>>,
    /// Held by the one reading the store: others answer from the last
    /// view meanwhile (heartbeats) or wait for the new one (dispatch).
    reading: tokio::sync::Mutex<()>,
}

impl OverlayDirectory {
    /// A view at most [`FRESH_FOR`] old, for a heartbeat's answer. While
    /// another caller reads the store, the last view is answered at once
    /// (a heartbeat never waits on the store for it, unless there is no
    /// view yet).
    pub async fn view(&self, store: &Store) -> Result<Arc<OverlayView>, StoreError> {
        let since = Instant::now()
            .checked_sub(FRESH_FOR)
            .unwrap_or_else(Instant::now);
        if let Some(view) = self.read_since(since) {
            return Ok(view);
        }
        match self.reading.try_lock() {
            Ok(reading) => self.read_again(store, since, reading).await,
            Err(_) => match self.last_view() {
                Some(view) => Ok(view),
                None => {
                    let reading = self.reading.lock().await;
                    self.read_again(store, since, reading).await
                }
            },
        }
    }

    /// A view whose read began after `since`: the dispatcher asks for one
    /// with its newest claim in it (and the next heartbeats of the
    /// network's other hosts get it too).
    pub async fn view_read_after(
        &self,
        store: &Store,
        since: Instant,
    ) -> Result<Arc<OverlayView>, StoreError> {
        if let Some(view) = self.read_since(since) {
            return Ok(view);
        }
        let reading = self.reading.lock().await;
        self.read_again(store, since, reading).await
    }

    /// Reads the store, unless a read that began after `since` ended while
    /// this caller waited for its turn.
    async fn read_again(
        &self,
        store: &Store,
        since: Instant,
        _reading: tokio::sync::MutexGuard<'_, ()>,
    ) -> Result<Arc<OverlayView>, StoreError> {
        if let Some(view) = self.read_since(since) {
            return Ok(view);
        }
        let began = Instant::now();
        let view = Arc::new(read(store).await?);
        if let Ok(mut last) = self.last.write() {
            *last = Some((began, view.clone()));
        }
        Ok(view)
    }

    fn read_since(&self, since: Instant) -> Option<Arc<OverlayView>> {
        let last = self.last.read().ok()?;
        let (began, view) = last.as_ref()?;
        (*began > since).then(|| view.clone())
    }

    fn last_view(&self) -> Option<Arc<OverlayView>> {
        let last = self.last.read().ok()?;
        last.as_ref().map(|(_, view)| view.clone())
    }
}

async fn read(store: &Store) -> Result<OverlayView, StoreError> {
    let members = store.overlay_members().await?;
    if members.is_empty() {
        return Ok(OverlayView::default());
    }
    let hosts: HashSet<&str> = members.iter().map(|m| m.agent.as_str()).collect();
    let mut addresses = HashMap::new();
    for node in store.nodes().await? {
        if hosts.contains(node.id.as_str()) {
            if let Some(ip) = underlay_address(&node.address).await {
                addresses.insert(node.id, ip);
            }
        }
    }
    Ok(OverlayView::build(&members, addresses))
}

/// How long a host's name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(1);

/// The IPv4 address of an agent's base URL (`http://10.0.0.7:7420`, or a
/// name, resolved): where the host's VXLAN traffic goes. `None` for a
/// unix socket, or a name that does not resolve to IPv4 (logged).
pub async fn underlay_address(url: &str) -> Option<Ipv4Addr> {
    let uri: axum::http::Uri = url.parse().ok()?;
    let host = uri.host()?;
    if let Ok(ip) = host.parse() {
        return Some(ip);
    }
    let port = uri.port_u16().unwrap_or(80);
    let resolved =
        tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port))).await;
    let found = match resolved {
        Ok(Ok(mut addresses)) => addresses.find_map(|a| match a.ip() {
            std::net::IpAddr::V4(ip) => Some(ip),
            std::net::IpAddr::V6(_) => None,
        }),
        Ok(Err(e)) => {
            tracing::warn!(%url, "a host's name does not resolve, so it takes no overlay traffic: {e}");
            None
        }
        Err(_) => {
            tracing::warn!(%url, "a host's name took over {RESOLVE_TIMEOUT:?} to resolve; no overlay traffic to it now");
            None
        }
    };
    found
}

/// One network's members, by host.
#[derive(Debug, Clone)]
struct NetworkMembers {
    subnet: ipnet::Ipv4Net,
    internal: bool,
    by_host: BTreeMap<String, Vec<OverlayMember>>,
}

/// The overlays of the fleet as of one read.
#[derive(Debug, Default)]
pub struct OverlayView {
    networks: BTreeMap<u32, NetworkMembers>,
    /// The VNIs each host has members of.
    of_host: HashMap<String, BTreeSet<u32>>,
    /// Each host's address on the hosts' network (by host id).
    addresses: HashMap<String, Ipv4Addr>,
}

impl OverlayView {
    pub fn build(members: &[OverlayMembership], addresses: HashMap<String, Ipv4Addr>) -> Self {
        let mut view = OverlayView {
            addresses,
            ..OverlayView::default()
        };
        for member in members {
            let network = view
                .networks
                .entry(member.vni)
                .or_insert_with(|| NetworkMembers {
                    subnet: member.subnet,
                    internal: member.internal,
                    by_host: BTreeMap::new(),
                });
            network
                .by_host
                .entry(member.agent.clone())
                .or_default()
                .push(OverlayMember {
                    names: member_names(&member.task_id, member.attempt),
                    address: member.address,
                });
            view.of_host
                .entry(member.agent.clone())
                .or_default()
                .insert(member.vni);
        }
        view
    }

    /// What `host`, whose VXLAN address is `local`, is to know of the
    /// network `vni` (whether or not it has members there yet): the other
    /// hosts with members, and theirs.
    pub fn spec(
        &self,
        host: &str,
        local: Option<Ipv4Addr>,
        vni: u32,
        subnet: ipnet::Ipv4Net,
        internal: bool,
    ) -> OverlaySpec {
        let mut peers = BTreeSet::new();
        let mut members = Vec::new();
        if let Some(network) = self.networks.get(&vni) {
            for (other, theirs) in network.by_host.iter().filter(|(h, _)| h.as_str() != host) {
                if let Some(address) = self.addresses.get(other) {
                    peers.insert(*address);
                }
                members.extend(theirs.iter().cloned());
            }
        }
        if let Some(local) = local {
            // Two hosts behind one address (agents sharing a machine's
            // address) are one VXLAN endpoint, never their own peer.
            peers.remove(&local);
        }
        OverlaySpec {
            network: fleet_overlay_name(vni),
            vni,
            subnet,
            internal,
            local,
            peers: peers.into_iter().collect(),
            members,
        }
    }

    /// Every network `host` has members of, as it is to keep them.
    pub fn for_host(&self, host: &str) -> Vec<OverlaySpec> {
        let Some(vnis) = self.of_host.get(host) else {
            return Vec::new();
        };
        vnis.iter()
            .filter_map(|vni| {
                let network = self.networks.get(vni)?;
                let local = self.addresses.get(host).copied();
                Some(self.spec(host, local, *vni, network.subnet, network.internal))
            })
            .collect()
    }
}

/// The names a task answers to on its network: its id (the same on every
/// attempt, so the name follows it to another host) and its container's.
pub fn member_names(task_id: &str, attempt: i64) -> Vec<String> {
    vec![task_id.to_owned(), container_name(task_id, attempt)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(task: &str, agent: &str, vni: u32, address: &str) -> OverlayMembership {
        OverlayMembership {
            project_id: "p".into(),
            network: format!("n{vni}"),
            vni,
            subnet: "10.128.0.0/24".parse().unwrap(),
            internal: false,
            task_id: task.into(),
            attempt: 1,
            agent: agent.into(),
            address: address.parse().unwrap(),
        }
    }

    #[test]
    fn a_host_learns_the_other_hosts_and_their_members_only() {
        let members = [
            member("t1", "a", 7, "10.128.0.2"),
            member("t2", "b", 7, "10.128.0.3"),
            member("t3", "c", 7, "10.128.0.4"),
            member("t4", "c", 8, "10.128.0.2"),
        ];
        let addresses = [("a", "192.0.2.1"), ("b", "192.0.2.2"), ("c", "192.0.2.3")]
            .into_iter()
            .map(|(h, ip)| (h.to_owned(), ip.parse().unwrap()))
            .collect();
        let view = OverlayView::build(&members, addresses);
        let of_a = view.for_host("a");
        assert_eq!(of_a.len(), 1);
        assert_eq!(of_a[0].network, "fleet-7");
        assert_eq!(of_a[0].local, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(
            of_a[0].peers,
            vec![
                "192.0.2.2".parse::<Ipv4Addr>().unwrap(),
                "192.0.2.3".parse().unwrap()
            ]
        );
        let names: Vec<&str> = of_a[0]
            .members
            .iter()
            .map(|m| m.names[0].as_str())
            .collect();
        assert_eq!(names, ["t2", "t3"]);
        assert_eq!(of_a[0].members[0].names[1], "task-t2-1");
        // c has members of both networks; network 8 has no other host.
        let of_c = view.for_host("c");
        assert_eq!(of_c.len(), 2);
        assert!(of_c[1].peers.is_empty() && of_c[1].members.is_empty());
        // A host with no member yet is told the whole network.
        let fresh = view.spec("d", None, 7, "10.128.0.0/24".parse().unwrap(), false);
        assert_eq!(fresh.members.len(), 3);
        assert_eq!(fresh.local, None);
        assert!(view.for_host("d").is_empty());
    }

    #[tokio::test]
    async fn the_underlay_address_is_the_agents_ip_or_its_names() {
        assert_eq!(
            underlay_address("http://10.200.0.2:7420").await,
            Some(Ipv4Addr::new(10, 200, 0, 2))
        );
        assert_eq!(
            underlay_address("http://localhost:7420").await,
            Some(Ipv4Addr::LOCALHOST)
        );
        assert_eq!(
            underlay_address("http://no-such-host.invalid:7420").await,
            None
        );
        assert_eq!(underlay_address("unix:///run/berth.sock").await, None);
    }
}
