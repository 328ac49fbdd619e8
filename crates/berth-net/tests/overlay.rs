//! An overlay network between two "hosts": two network namespaces joined
//! by a veth pair (their underlay), each running berth-net with a state
//! dir of its own. A container on one reaches a container on the other by
//! address, full-size frames included, and finds it in its hosts file.
//! Needs root; every name is unique, so tests run in parallel.

mod common;
use berth_core::network::{NetworkMode, NetworkName, NetworkRequest};
use berth_net::{Attached, CreateNetwork, Driver, Member, NetConfig, Networks};
use common::inside;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Duration;

fn tag() -> u32 {
    let mut bytes = [0u8; 4];
    rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()).unwrap();
    u32::from_ne_bytes(bytes)
}

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().unwrap();
    assert!(status.success(), "ip {args:?}");
}

/// A host: a named network namespace and berth-net's state in it.
struct Host {
    netns: String,
    networks: Networks,
    _dir: tempfile::TempDir,
}

impl Host {
    fn new(netns: String) -> Host {
        ip(&["netns", "add", &netns]);
        ip(&["-n", &netns, "link", "set", "lo", "up"]);
        let dir = tempfile::tempdir().unwrap();
        let networks =
            Networks::open(NetConfig::new(dir.path(), "berth0", Default::default())).unwrap();
        Host {
            netns,
            networks,
            _dir: dir,
        }
    }

    /// Runs `f` with this host's berth-net, on a thread inside the host.
    fn run<T: Send>(&self, f: impl FnOnce(&Networks) -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.netns);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let ns = std::fs::File::open(&path).unwrap();
                    // SAFETY: setns of this scoped thread, which ends here.
                    assert_eq!(
                        unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
                        0
                    );
                    f(&self.networks)
                })
                .join()
                .unwrap()
        })
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.run(|networks| {
            let _ = networks.gc(&|_| false);
            for network in networks.list().unwrap_or_default() {
                let _ = networks.remove(&network.name);
            }
        });
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

/// Joins two hosts by a veth pair, each end (host, link name, address in
/// a /24) up.
fn wire(one: (&Host, &str, &str), other: (&Host, &str, &str)) {
    ip(&[
        "link",
        "add",
        one.1,
        "netns",
        &one.0.netns,
        "type",
        "veth",
        "peer",
        "name",
        other.1,
        "netns",
        &other.0.netns,
    ]);
    for (host, link, address) in [one, other] {
        let address = format!("{address}/24");
        ip(&["-n", &host.netns, "addr", "add", &address, "dev", link]);
        ip(&["-n", &host.netns, "link", "set", link, "up"]);
    }
}

#[test]
fn containers_on_two_hosts_share_an_overlay() {
    if !rustix::process::geteuid().is_root() {
        assert!(std::env::var_os("CI").is_none(), "CI runs as root");
        eprintln!("skipped: needs root");
        return;
    }
    let t = tag();
    let n = t % 200 + 20;
    let (a, b) = (
        Host::new(format!("ovA{t:08x}")),
        Host::new(format!("ovB{t:08x}")),
    );
    // The underlay: a veth pair between the hosts.
    let (under_a, under_b) = (format!("172.30.{n}.1"), format!("172.30.{n}.2"));
    wire(
        (&a, &format!("ua{t:08x}"), &under_a),
        (&b, &format!("ub{t:08x}"), &under_b),
    );

    let name = format!("ov{t:08x}");
    let subnet: ipnet::Ipv4Net = format!("10.120.{n}.0/24").parse().unwrap();
    let create = |local: &str, peer: &str, range: &str| CreateNetwork {
        name: name.clone(),
        driver: Driver::Overlay,
        subnet: Some(subnet),
        vni: Some(4000 + n),
        local: Some(local.parse().unwrap()),
        peers: vec![peer.parse().unwrap()],
        ip_range: Some(range.parse().unwrap()),
        ..Default::default()
    };
    a.run(|net| net.create(&create(&under_a, &under_b, &format!("10.120.{n}.0/26"))))
        .unwrap();
    b.run(|net| net.create(&create(&under_b, &under_a, &format!("10.120.{n}.64/26"))))
        .unwrap();
    // Bad input: no VNI, a VNI out of range.
    let no_vni = CreateNetwork {
        vni: None,
        name: format!("x{t:08x}"),
        ..create(&under_a, &under_b, &format!("10.120.{n}.0/26"))
    };
    assert!(a.run(|net| net.create(&no_vni)).is_err());

    let request = NetworkRequest {
        mode: NetworkMode::Named(NetworkName::new(name.clone()).unwrap()),
        ..Default::default()
    };
    let alpha: Attached = a
        .run(|net| net.attach("alpha-c", &["alpha".into()], &request))
        .unwrap();
    let beta: Attached = b
        .run(|net| net.attach("beta-c", &["beta".into()], &request))
        .unwrap();
    let (alpha_ip, beta_ip) = (alpha.attachment.address, beta.attachment.address);
    assert!(
        u32::from(alpha_ip) & 0xff < 64 && u32::from(beta_ip) & 0xff >= 64,
        "{alpha_ip} {beta_ip}"
    );

    // What the fleet would say of the other host's containers.
    a.run(|net| {
        net.set_remote_members(
            &name,
            &[Member {
                names: vec!["beta".into()],
                address: beta_ip,
            }],
        )
    })
    .unwrap();
    b.run(|net| {
        net.set_remote_members(
            &name,
            &[Member {
                names: vec!["alpha".into()],
                address: alpha_ip,
            }],
        )
    })
    .unwrap();
    let hosts = std::fs::read_to_string(&alpha.mounts[0].source).unwrap();
    assert!(hosts.contains(&format!("{beta_ip}\tbeta")), "{hosts}");

    // A megabyte from alpha to beta across the overlay: full-size frames
    // fit (the links' MTU leaves room for VXLAN's 50 bytes).
    let listener = inside(&beta.namespace, || {
        TcpListener::bind("0.0.0.0:7100").unwrap()
    });
    let receiver = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got.len()
    });
    let to_beta = SocketAddr::from((beta_ip, 7100));
    inside(&alpha.namespace, move || {
        let mut s = TcpStream::connect_timeout(&to_beta, Duration::from_secs(5)).unwrap();
        s.write_all(&vec![1u8; 1 << 20]).unwrap();
    });
    assert_eq!(receiver.join().unwrap(), 1 << 20);

    // A container sends no VXLAN: masqueraded, it would come from a peer's
    // address, which other hosts take VXLAN from, and could put frames on
    // their overlays. A third host C, linked to A, listens on UDP 4789
    // (and 4790, to show the path works).
    let c = Host::new(format!("ovC{t:08x}"));
    let second = format!("172.31.{n}.2");
    wire(
        (&a, &format!("ua2{t:07x}"), &format!("172.31.{n}.1")),
        (&c, &format!("uc{t:08x}"), &second),
    );
    let listen = |port: u16| {
        c.run(|_| {
            let socket = std::net::UdpSocket::bind(("0.0.0.0", port)).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            socket
        })
    };
    let (catcher, control) = (listen(4789), listen(4790));
    let second_ip: Ipv4Addr = second.parse().unwrap();
    inside(&alpha.namespace, move || {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        for port in [4789, 4790] {
            socket.send_to(b"vxlan?", (second_ip, port)).unwrap();
        }
    });
    let mut buf = [0u8; 16];
    assert!(
        control.recv(&mut buf).is_ok(),
        "the control datagram (port 4790) did not arrive"
    );
    let sent = catcher.recv(&mut buf);
    assert!(sent.is_err(), "a container sent to a VXLAN port: {sent:?}");

    // Peers follow the fleet: once the hosts drop each other, A's
    // containers no longer reach B's.
    a.run(|net| net.set_peers(&name, &[])).unwrap();
    b.run(|net| net.set_peers(&name, &[])).unwrap();
    let listener = inside(&beta.namespace, || {
        TcpListener::bind("0.0.0.0:7101").unwrap()
    });
    let to_beta = SocketAddr::from((beta_ip, 7101));
    // Alpha still knows beta's MAC (its ARP cache is warm), so its frames
    // go unicast: only the removal of what A had learned behind B (not
    // just the flood entry) stops them.
    let unreachable = inside(&alpha.namespace, move || {
        TcpStream::connect_timeout(&to_beta, Duration::from_secs(2)).is_err()
    });
    drop(listener);
    assert!(unreachable, "A still reached B with no peers");
    a.run(|net| net.set_peers(&name, &[under_b.parse::<Ipv4Addr>().unwrap()]))
        .unwrap();
    b.run(|net| net.set_peers(&name, &[under_a.parse::<Ipv4Addr>().unwrap()]))
        .unwrap();

    for (host, id, attached) in [(&a, "alpha-c", alpha), (&b, "beta-c", beta)] {
        drop(attached);
        host.run(|net| net.detach(id)).unwrap();
        host.run(|net| net.remove(&name)).unwrap();
        let left = Command::new("ip")
            .args(["-n", &host.netns, "-o", "link", "show"])
            .output()
            .unwrap();
        let left = String::from_utf8_lossy(&left.stdout).into_owned();
        assert!(!left.contains(" vx-") && !left.contains(" br-"), "{left}");
    }
}
