//! berth's whole ruleset, rebuilt from the records and swapped in as one
//! nf_tables transaction: NAT out of each network, published ports, and
//! the walls around internal networks.
//!
//! Rebuilding all of it on each change (a network made or removed, a
//! container with published ports started or ended) needs no rule handles
//! and heals whatever a crash left half done; it costs one netlink batch.

use crate::model::{Attachment, Network};
use crate::netlink::Netlink;
use crate::nft::{apply, BaseChain, Change, Expr, Hook};
use std::io;
use std::net::Ipv4Addr;

const DNS_PORT: u16 = 53;

/// The changes that replace `table` with the rules for `networks` and the
/// published ports of `attachments`.
pub fn ruleset(networks: &[Network], attachments: &[Attachment]) -> Vec<Change> {
    let base = |name: &str, hook, priority, kind| Change::AddChain {
        name: name.to_owned(),
        base: Some(BaseChain {
            hook,
            priority,
            kind,
        }),
    };
    let rule = |chain: &str, exprs: Vec<Expr>| Change::AddRule {
        chain: chain.to_owned(),
        exprs,
    };
    // Add first so that the delete never fails on a missing table.
    let mut changes = vec![Change::AddTable, Change::DeleteTable, Change::AddTable];
    changes.push(Change::AddChain {
        name: "ports".into(),
        base: None,
    });
    changes.push(base("prerouting", Hook::Prerouting, -100, "nat"));
    changes.push(base("output", Hook::Output, -100, "nat"));
    changes.push(base("postrouting", Hook::Postrouting, 100, "nat"));
    changes.push(base("forward", Hook::Forward, 0, "filter"));
    changes.push(base("input", Hook::Input, 0, "filter"));
    for chain in ["prerouting", "output"] {
        changes.push(rule(
            chain,
            vec![Expr::ToLocalAddress, Expr::Jump("ports".into())],
        ));
    }
    for attachment in attachments {
        for port in &attachment.ports {
            let mut exprs = Vec::new();
            if let Some(ip) = port.host_ip {
                exprs.push(Expr::DestinationNet {
                    net: ip,
                    prefix: 32,
                    equal: true,
                });
            }
            exprs.push(Expr::Protocol(port.protocol.number()));
            exprs.push(Expr::DestinationPort(port.host_port));
            exprs.push(Expr::Dnat {
                address: attachment.address,
                port: port.container_port,
            });
            changes.push(rule("ports", exprs));
        }
    }
    // The forward chain, in order: the walls of internal networks (nothing
    // in or out, published ports included), then what a published port
    // forwards (allowed), then the separation of networks.
    let mut walls = Vec::new();
    let mut separations = Vec::new();
    // Macvlan networks do not pass through the host: nothing to rule.
    let networks: Vec<&Network> = networks.iter().filter(|n| n.has_bridge()).collect();
    for network in &networks {
        let subnet = |equal| Expr::SourceNet {
            net: network.subnet.network(),
            prefix: network.subnet.prefix_len(),
            equal,
        };
        let on = |equal| Expr::OutputInterface {
            name: network.bridge.clone(),
            equal,
        };
        let from = |equal| Expr::InputInterface {
            name: network.bridge.clone(),
            equal,
        };
        // A container reaching another on its own bridge through a
        // published port: the answer must come back through the host.
        changes.push(rule(
            "postrouting",
            vec![
                on(true),
                Expr::WasDestinationNatted,
                subnet(true),
                Expr::Masquerade,
            ],
        ));
        // The host itself through 127.0.0.1 (route_localnet is on for
        // berth's bridges).
        changes.push(rule(
            "postrouting",
            vec![
                on(true),
                Expr::SourceNet {
                    net: Ipv4Addr::LOCALHOST,
                    prefix: 8,
                    equal: true,
                },
                Expr::Masquerade,
            ],
        ));
        // 127.0.0.1 is the host's alone: with route_localnet on (for
        // published ports on 127.0.0.1), a container could otherwise send
        // to the host's loopback services through its gateway (the attack
        // of CVE-2020-8558).
        changes.push(rule(
            "input",
            vec![
                from(true),
                Expr::DestinationNet {
                    net: Ipv4Addr::LOCALHOST,
                    prefix: 8,
                    equal: true,
                },
                // The answers to the host's own connections through its
                // published ports on 127.0.0.1 come back this way.
                Expr::NotAnAnswer,
                Expr::Drop,
            ],
        ));
        // Containers never send VXLAN: a container could otherwise reach
        // another host's overlays through this host's masquerade, from an
        // address those hosts take VXLAN from (their peer's).
        walls.push(rule(
            "forward",
            vec![
                from(true),
                Expr::Protocol(17),
                Expr::DestinationPort(crate::links::VXLAN_PORT),
                Expr::Drop,
            ],
        ));
        if network.internal {
            walls.push(rule("forward", vec![from(true), on(false), Expr::Drop]));
            walls.push(rule("forward", vec![on(true), from(false), Expr::Drop]));
            // Only the gateway's DNS port on the host.
            for protocol in [6, 17] {
                changes.push(rule(
                    "input",
                    vec![
                        from(true),
                        Expr::DestinationNet {
                            net: network.gateway,
                            prefix: 32,
                            equal: true,
                        },
                        Expr::Protocol(protocol),
                        Expr::DestinationPort(DNS_PORT),
                        Expr::Accept,
                    ],
                ));
            }
            changes.push(rule("input", vec![from(true), Expr::Drop]));
        } else {
            changes.push(rule(
                "postrouting",
                vec![subnet(true), on(false), Expr::Masquerade],
            ));
        }
        // Networks do not reach each other directly (as Docker's do not).
        for other in networks.iter().filter(|o| o.bridge != network.bridge) {
            separations.push(rule(
                "forward",
                vec![
                    from(true),
                    Expr::OutputInterface {
                        name: other.bridge.clone(),
                        equal: true,
                    },
                    Expr::Drop,
                ],
            ));
        }
    }
    // VXLAN has no authentication: whoever can send UDP to this host's
    // port 4789 could put frames on an overlay (a container included, by
    // the gateway). Only the overlays' peers may.
    let peers: std::collections::BTreeSet<Ipv4Addr> = networks
        .iter()
        .filter(|n| n.vni.is_some())
        .flat_map(|n| n.peers.iter().copied())
        .collect();
    if networks.iter().any(|n| n.vni.is_some()) {
        let vxlan = || {
            vec![
                Expr::Protocol(17),
                Expr::DestinationPort(crate::links::VXLAN_PORT),
            ]
        };
        for peer in peers {
            let mut exprs = vec![Expr::SourceNet {
                net: peer,
                prefix: 32,
                equal: true,
            }];
            exprs.extend(vxlan());
            exprs.push(Expr::Accept);
            changes.push(rule("input", exprs));
        }
        let mut exprs = vxlan();
        exprs.push(Expr::Drop);
        changes.push(rule("input", exprs));
    }
    changes.extend(walls);
    changes.push(rule(
        "forward",
        vec![Expr::WasDestinationNatted, Expr::Accept],
    ));
    changes.extend(separations);
    changes
}

/// Replaces `table` with the ruleset.
pub fn sync(table: &str, networks: &[Network], attachments: &[Attachment]) -> io::Result<()> {
    let socket = Netlink::netfilter()?;
    apply(&socket, table, &ruleset(networks, attachments))
}

/// Removes `table` (nothing of berth's left in nf_tables).
pub fn remove(table: &str) -> io::Result<()> {
    let socket = Netlink::netfilter()?;
    apply(&socket, table, &[Change::AddTable, Change::DeleteTable])
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::network::PublishedPort;

    fn network(name: &str, internal: bool) -> Network {
        Network {
            name: name.into(),
            id: "0123456789ab".into(),
            driver: crate::model::Driver::Bridge,
            bridge: format!("br-{name}"),
            parent: None,
            subnet: "10.96.1.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(10, 96, 1, 1),
            internal,
            created_at: 0,
            ip_range: None,
            mtu: None,
            vni: None,
            vxlan: String::new(),
            local: None,
            peers: Vec::new(),
            remote_members: Vec::new(),
        }
    }

    #[test]
    fn internal_networks_get_walls_and_no_nat() {
        let open = ruleset(&[network("a", false)], &[]);
        let walled = ruleset(&[network("a", true)], &[]);
        let masquerades = |changes: &[Change]| {
            changes
                .iter()
                .filter(|c| {
                    matches!(c, Change::AddRule { chain, exprs } if chain == "postrouting"
                    && exprs.contains(&Expr::OutputInterface { name: "br-a".into(), equal: false }))
                })
                .count()
        };
        assert_eq!(masquerades(&open), 1);
        assert_eq!(masquerades(&walled), 0);
        let drops = |changes: &[Change]| {
            changes
                .iter()
                .filter(|c| matches!(c, Change::AddRule { exprs, .. } if exprs.last() == Some(&Expr::Drop)))
                .count()
        };
        // Both keep containers off the host's loopback and from sending
        // VXLAN; the internal one also walls the bridge both ways and the
        // host's other addresses.
        assert_eq!(drops(&open), 2);
        assert_eq!(drops(&walled), 5);
        let vxlan_out = open.iter().any(|c| {
            matches!(c, Change::AddRule { chain, exprs } if chain == "forward"
                && exprs.contains(&Expr::InputInterface { name: "br-a".into(), equal: true })
                && exprs.contains(&Expr::DestinationPort(crate::links::VXLAN_PORT))
                && exprs.last() == Some(&Expr::Drop))
        });
        assert!(vxlan_out, "containers may not send VXLAN: {open:?}");
    }

    #[test]
    fn each_published_port_is_one_dnat_rule() {
        let attachment = Attachment {
            container: "c".into(),
            network: "a".into(),
            host_link: "bv1".into(),
            address: Ipv4Addr::new(10, 96, 1, 2),
            names: Vec::new(),
            ports: PublishedPort::parse("8000-8001:80-81").unwrap(),
            egress_rate: None,
            ingress_rate: None,
            holder_pid: 0,
            cni: None,
        };
        let changes = ruleset(&[network("a", false)], &[attachment]);
        let dnats: Vec<_> = changes
            .iter()
            .filter_map(|c| match c {
                Change::AddRule { chain, exprs } if chain == "ports" => exprs.last().cloned(),
                _ => None,
            })
            .collect();
        assert_eq!(
            dnats,
            [
                Expr::Dnat {
                    address: Ipv4Addr::new(10, 96, 1, 2),
                    port: 80
                },
                Expr::Dnat {
                    address: Ipv4Addr::new(10, 96, 1, 2),
                    port: 81
                },
            ]
        );
    }
}
