//! What this host's kernel offers for networks, found by trying it in a
//! throwaway namespace (a monolithic kernel has no modules to look for, and
//! `/proc/config.gz` is not always there).

use crate::links::{self, Trial};
use crate::namespace::Namespace;
use crate::netlink::Netlink;
use crate::nft;
use serde::Serialize;

/// The kernel features berth's network modes need, each `true` when a
/// trial worked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Features {
    pub bridge: bool,
    pub veth: bool,
    pub macvlan: bool,
    pub vxlan: bool,
    pub ifb: bool,
    pub nf_tables: bool,
    /// `net.ipv4.ip_forward` (berth turns it on when it makes a network
    /// with NAT).
    pub ip_forward: bool,
}

/// Tries each feature in a new namespace, gone when this returns.
pub fn features() -> Features {
    let mut found = Features {
        ip_forward: crate::host::forwarding_enabled(),
        ..Features::default()
    };
    let Ok(ns) = Namespace::new() else {
        return found;
    };
    let route = &ns.route;
    found.bridge = links::trial(route, Trial::Bridge);
    found.veth = links::trial(route, Trial::Veth);
    found.ifb = links::trial(route, Trial::Ifb);
    found.vxlan = links::trial(route, Trial::Vxlan);
    found.macvlan = found.veth && links::trial(route, Trial::MacvlanOnVeth);
    found.nf_tables = ns
        .enter(Netlink::netfilter)
        .and_then(|opened| opened)
        .is_ok_and(|socket| nft::available(&socket, "berth_probe").is_ok());
    found
}
