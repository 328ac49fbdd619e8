//! berth-net on the real kernel: a namespace attached to the default bridge
//! and to a user network, real TCP through NAT and published ports, and
//! nothing left afterwards. Needs root; each test names its own bridge and
//! table, so tests run in parallel.

mod common;
use berth_core::network::{NetworkMode, NetworkName, NetworkRequest, PublishedPort};
use berth_net::{CreateNetwork, NetConfig, NetError, Networks};
use common::inside;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::time::Duration;

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

macro_rules! need_root {
    () => {
        if !is_root() {
            assert!(std::env::var_os("CI").is_none(), "CI runs as root");
            eprintln!("skipped: needs root");
            return;
        }
    };
}

struct Fixture {
    networks: Networks,
    _dir: tempfile::TempDir,
}

/// Whatever a failed test left: its attachments, networks and table.
impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.networks.gc(&|_| false);
        for network in self.networks.list().unwrap_or_default() {
            let _ = self.networks.remove(&network.name);
        }
        let _ = berth_net::rules::remove(&self.networks.config().table);
    }
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let tag = &berth_net_test_tag();
    let config = NetConfig::new(dir.path(), &format!("bt{tag}"), Default::default());
    Fixture {
        networks: Networks::open(config).unwrap(),
        _dir: dir,
    }
}

fn berth_net_test_tag() -> String {
    let mut bytes = [0u8; 4];
    rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()).unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether the link goes within 10 s (a container's veth is set down at
/// detach; the kernel removes it with the namespace, a moment later).
fn gone_soon(name: &str) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while link_exists(name) {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

fn link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

fn echo_once(listener: TcpListener) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
    })
}

fn talk(to: SocketAddr) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(b"hello")?;
    let mut buf = vec![0u8; 5];
    s.read_exact(&mut buf)?;
    Ok(buf)
}

#[test]
fn a_bridged_namespace_reaches_the_host_and_is_reached_through_a_published_port() {
    need_root!();
    let f = fixture();
    let bridge = NetworkRequest {
        mode: NetworkMode::Bridge,
        ..Default::default()
    };
    let a = f.networks.attach("a", &["a".into()], &bridge).unwrap();
    let gateway = f.networks.inspect("bridge").unwrap().network.gateway;
    assert!(link_exists(&a.attachment.host_link));

    // The container reaches a server on the host's side of the bridge.
    let host_server = TcpListener::bind((gateway, 0)).unwrap();
    let to_host = host_server.local_addr().unwrap();
    let server = echo_once(host_server);
    assert_eq!(
        inside(&a.namespace, move || talk(to_host)).unwrap(),
        b"hello"
    );
    server.join().unwrap();

    // The host's loopback services stay out of reach, even to a container
    // that routes 127.0.0.0/8 to its gateway (as one with CAP_NET_ADMIN or
    // raw sockets could: CVE-2020-8558).
    let loopback_only = TcpListener::bind("127.0.0.1:0").unwrap();
    let to_loopback = loopback_only.local_addr().unwrap();
    let gw = gateway.to_string();
    let reached = inside(&a.namespace, move || {
        std::fs::write("/proc/sys/net/ipv4/conf/eth0/route_localnet", "1").unwrap();
        // (Its loopback is down here, so no local route claims 127/8.)
        let status = std::process::Command::new("ip")
            .args([
                "route",
                "add",
                "127.0.0.0/8",
                "via",
                gw.as_str(),
                "dev",
                "eth0",
            ])
            .status()
            .unwrap();
        assert!(status.success());
        TcpStream::connect_timeout(&to_loopback, Duration::from_secs(2)).is_ok()
    });
    assert!(!reached, "a container reached the host's 127.0.0.1");
    drop(loopback_only);

    // A published port reaches a server in a second container, from the
    // host by its bridge address and by 127.0.0.1.
    let port = PublishedPort::parse("47123:8080").unwrap();
    let published = NetworkRequest {
        mode: NetworkMode::Bridge,
        ports: port.clone(),
        ..Default::default()
    };
    let b = f.networks.attach("b", &[], &published).unwrap();
    let b_listener = inside(&b.namespace, || TcpListener::bind("0.0.0.0:8080").unwrap());
    for target in [
        SocketAddr::from((gateway, 47123)),
        SocketAddr::from((Ipv4Addr::LOCALHOST, 47123)),
    ] {
        let listener = b_listener.try_clone().unwrap();
        let server = echo_once(listener);
        assert_eq!(talk(target).unwrap(), b"hello", "through {target}");
        server.join().unwrap();
    }
    // From the first container, by the host's address.
    let server = echo_once(b_listener.try_clone().unwrap());
    assert_eq!(
        inside(&a.namespace, move || talk(SocketAddr::from((
            gateway, 47123
        ))))
        .unwrap(),
        b"hello"
    );
    server.join().unwrap();

    // The same port again is refused, and nothing of the refused one stays.
    let again = f
        .networks
        .attach("c", &[], &published)
        .err()
        .expect("a port published twice");
    assert!(matches!(again, NetError::Conflict(_)), "{again}");
    assert!(!link_exists(&berth_net::host_link_name("c")));

    // A socket holds its namespace, as a container's processes do.
    drop(b_listener);
    for (id, attached) in [("a", a), ("b", b)] {
        let link = attached.attachment.host_link.clone();
        drop(attached);
        f.networks.detach(id).unwrap();
        assert!(gone_soon(&link), "{link} left");
    }
    assert!(
        talk(SocketAddr::from((gateway, 47123))).is_err(),
        "the port is gone"
    );
    let bridge_name = f.networks.config().bridge.clone();
    f.networks.remove("bridge").unwrap();
    assert!(!link_exists(&bridge_name));
}

#[test]
fn containers_on_a_user_network_know_each_other_and_an_internal_one_is_walled() {
    need_root!();
    let f = fixture();
    let name = format!("n{}", berth_net_test_tag());
    let bad = CreateNetwork {
        name: name.clone(),
        subnet: Some("10.97.0.5/24".parse().unwrap()),
        ..Default::default()
    };
    assert!(matches!(f.networks.create(&bad), Err(NetError::Invalid(_))));
    let net = f
        .networks
        .create(&CreateNetwork {
            name: name.clone(),
            internal: true,
            ..Default::default()
        })
        .unwrap();
    let clash = CreateNetwork {
        name: format!("{name}x"),
        subnet: Some(net.subnet),
        ..Default::default()
    };
    assert!(matches!(
        f.networks.create(&clash),
        Err(NetError::Conflict(_))
    ));

    let mode = NetworkMode::Named(NetworkName::new(name.clone()).unwrap());
    let fixed = Ipv4Addr::from(u32::from(net.subnet.network()) + 9);
    let request = |ip| NetworkRequest {
        mode: mode.clone(),
        ip,
        ..Default::default()
    };
    let a = f
        .networks
        .attach("a1", &["alpha".into()], &request(Some(fixed)))
        .unwrap();
    assert_eq!(a.attachment.address, fixed);
    let taken = f
        .networks
        .attach("a2", &["beta".into()], &request(Some(fixed)))
        .err()
        .unwrap();
    assert!(matches!(taken, NetError::Conflict(_)), "{taken}");
    let outside = f
        .networks
        .attach(
            "a2",
            &["beta".into()],
            &request(Some(Ipv4Addr::new(1, 2, 3, 4))),
        )
        .err()
        .unwrap();
    assert!(matches!(outside, NetError::Invalid(_)), "{outside}");
    let b = f
        .networks
        .attach("a2", &["beta".into()], &request(None))
        .unwrap();

    // Each hosts file names the other, the first one rewritten in place.
    let hosts = |attached: &berth_net::Attached| {
        std::fs::read_to_string(&attached.mounts[0].source).unwrap()
    };
    assert!(
        hosts(&a).contains(&format!("{}\tbeta", b.attachment.address)),
        "{}",
        hosts(&a)
    );
    assert!(
        hosts(&b).contains(&format!("{fixed}\talpha")),
        "{}",
        hosts(&b)
    );

    // They talk over the bridge.
    let listener = inside(&b.namespace, || TcpListener::bind("0.0.0.0:9000").unwrap());
    let server = echo_once(listener);
    let to_b = SocketAddr::from((b.attachment.address, 9000));
    assert_eq!(inside(&a.namespace, move || talk(to_b)).unwrap(), b"hello");
    server.join().unwrap();

    // A published port of a container on another network is out of reach
    // too: the internal wall comes before what a port forwards.
    let outside = f
        .networks
        .attach(
            "pub",
            &[],
            &NetworkRequest {
                mode: NetworkMode::Bridge,
                ports: PublishedPort::parse("47311:8080").unwrap(),
                ..Default::default()
            },
        )
        .unwrap();
    let published = inside(&outside.namespace, || {
        TcpListener::bind("0.0.0.0:8080").unwrap()
    });
    let through_gateway = SocketAddr::from((net.gateway, 47311));
    assert!(
        inside(&a.namespace, move || talk(through_gateway)).is_err(),
        "internal reached a published port"
    );
    drop((published, outside));
    f.networks.detach("pub").unwrap();

    // The host's own addresses other than the gateway's DNS are out of reach.
    let host_server = TcpListener::bind((net.gateway, 0)).unwrap();
    let to_host = host_server.local_addr().unwrap();
    assert!(
        inside(&a.namespace, move || talk(to_host)).is_err(),
        "internal reached the host"
    );
    drop(host_server);

    assert!(matches!(
        f.networks.remove(&name),
        Err(NetError::Conflict(_))
    ));
    drop((a, b));
    f.networks.detach("a1").unwrap();
    assert!(!hosts_file_mentions(&f, "a2", "alpha"));
    f.networks.detach("a2").unwrap();
    f.networks.remove(&name).unwrap();
    f.networks.remove("bridge").unwrap();
    assert!(!link_exists(&net.bridge));
    assert!(f.networks.list().unwrap().is_empty());
}

fn hosts_file_mentions(f: &Fixture, container: &str, name: &str) -> bool {
    let path = f
        .networks
        .config()
        .state_dir
        .join("files")
        .join(container)
        .join("hosts");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .contains(name)
}

/// Bits per second `receive` takes in from `send`, over a steady
/// stretch (the first half second, where the bucket's burst and the
/// queue fill, is left out).
fn measure(
    listener: TcpListener,
    send: impl FnOnce(SocketAddr) + Send + 'static,
    to: SocketAddr,
) -> f64 {
    let sender = std::thread::spawn(move || send(to));
    let (mut s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let start = std::time::Instant::now();
    let (mut from, mut bytes) = (None, 0u64);
    while start.elapsed() < Duration::from_millis(3500) {
        let n = s.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        if start.elapsed() >= Duration::from_millis(500) {
            from.get_or_insert_with(std::time::Instant::now);
            bytes += n as u64;
        }
    }
    let seconds = from.map_or(0.0, |f| f.elapsed().as_secs_f64());
    drop(s);
    let _ = sender.join();
    bytes as f64 * 8.0 / seconds
}

fn blast(to: SocketAddr) {
    let Ok(mut s) = TcpStream::connect_timeout(&to, Duration::from_secs(3)) else {
        return;
    };
    let chunk = vec![7u8; 64 * 1024];
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(4) && s.write_all(&chunk).is_ok() {}
}

#[test]
fn rate_limits_hold_within_ten_percent_both_ways() {
    need_root!();
    let f = fixture();
    let request = NetworkRequest {
        mode: NetworkMode::Bridge,
        egress_rate: Some("10mbit".parse().unwrap()),
        ingress_rate: Some("20mbit".parse().unwrap()),
        ..Default::default()
    };
    let a = f.networks.attach("shaped", &[], &request).unwrap();
    let gateway = f.networks.inspect("bridge").unwrap().network.gateway;
    let ifb = berth_net::ifb_name("shaped");
    assert!(link_exists(&ifb));

    // What the container sends: 10 Mbit/s.
    let host = TcpListener::bind((gateway, 0)).unwrap();
    let to = host.local_addr().unwrap();
    let ns = a.namespace.try_clone().unwrap();
    let sent = measure(host, move |to| inside(&ns, move || blast(to)), to);
    eprintln!("egress: {sent:.0} bit/s through a 10mbit limit");
    assert!(
        (9e6..=11e6).contains(&sent),
        "egress {sent:.0} bit/s, limit 10 Mbit/s"
    );

    // What it receives: 20 Mbit/s.
    let listener = inside(&a.namespace, || TcpListener::bind("0.0.0.0:7000").unwrap());
    let to = SocketAddr::from((a.attachment.address, 7000));
    let received = measure(listener, blast, to);
    eprintln!("ingress: {received:.0} bit/s through a 20mbit limit");
    assert!(
        (18e6..=22e6).contains(&received),
        "ingress {received:.0} bit/s, limit 20 Mbit/s"
    );

    drop(a);
    f.networks.detach("shaped").unwrap();
    assert!(!link_exists(&ifb), "the ifb outlived its container");
}

#[test]
fn a_rate_the_shaper_cannot_take_is_refused_before_anything_is_made() {
    need_root!();
    let f = fixture();
    let request = NetworkRequest {
        mode: NetworkMode::None,
        egress_rate: Some("1mbit".parse().unwrap()),
        ..Default::default()
    };
    assert!(matches!(
        f.networks.attach("x", &[], &request),
        Err(NetError::Invalid(_))
    ));
    assert!("100gbit".parse::<berth_core::network::Rate>().is_err());
    assert!(f.networks.list().unwrap().is_empty(), "nothing made");
}

#[test]
fn isolated_containers_do_not_reach_each_other_and_names_are_reused_at_once() {
    need_root!();
    let f = fixture();
    let isolated = NetworkRequest {
        mode: NetworkMode::Bridge,
        isolated: true,
        ..Default::default()
    };
    let a = f.networks.attach("iso-a", &[], &isolated).unwrap();
    let b = f.networks.attach("iso-b", &[], &isolated).unwrap();
    let open = NetworkRequest {
        mode: NetworkMode::Bridge,
        ..Default::default()
    };
    let c = f.networks.attach("open-c", &[], &open).unwrap();

    let listener = inside(&b.namespace, || TcpListener::bind("0.0.0.0:9100").unwrap());
    let to_b = SocketAddr::from((b.attachment.address, 9100));
    assert!(
        inside(&a.namespace, move || talk(to_b)).is_err(),
        "one isolated container reached another"
    );
    let server = echo_once(listener);
    assert_eq!(
        inside(&c.namespace, move || talk(to_b)).unwrap(),
        b"hello",
        "a container that is not isolated reaches an isolated one"
    );
    server.join().unwrap();

    // The same id again right after its end: the old link, set down and
    // waiting for the kernel's cleanup, is no obstacle.
    for (id, attached) in [("iso-a", a), ("iso-b", b), ("open-c", c)] {
        drop(attached);
        f.networks.detach(id).unwrap();
    }
    let again = f.networks.attach("iso-a", &[], &isolated).unwrap();
    drop(again);
    f.networks.detach("iso-a").unwrap();
}

#[test]
fn a_thousand_published_ports_fit_one_rules_transaction() {
    need_root!();
    let f = fixture();
    let ports = PublishedPort::parse("41000-41999:1000-1999").unwrap();
    let request = NetworkRequest {
        mode: NetworkMode::Bridge,
        ports,
        ..Default::default()
    };
    let a = f.networks.attach("many", &[], &request).unwrap();
    let gateway = f.networks.inspect("bridge").unwrap().network.gateway;
    let listener = inside(&a.namespace, || TcpListener::bind("0.0.0.0:1999").unwrap());
    let server = echo_once(listener);
    assert_eq!(talk(SocketAddr::from((gateway, 41999))).unwrap(), b"hello");
    server.join().unwrap();
    let too_many = NetworkRequest {
        mode: NetworkMode::Bridge,
        ports: PublishedPort::parse("30000-31100:1000-2100").unwrap(),
        ..Default::default()
    };
    assert!(matches!(
        f.networks.attach("too-many", &[], &too_many),
        Err(NetError::Invalid(_))
    ));
    drop(a);
    f.networks.detach("many").unwrap();
    assert!(talk(SocketAddr::from((gateway, 41999))).is_err());
}

#[test]
fn a_network_gives_its_links_the_mtu_it_was_made_with() {
    need_root!();
    let f = fixture();
    let name = format!("m{}", berth_net_test_tag());
    let create = |mtu| CreateNetwork {
        name: name.clone(),
        mtu: Some(mtu),
        ..Default::default()
    };
    assert!(matches!(
        f.networks.create(&create(100)),
        Err(NetError::Invalid(_))
    ));
    f.networks.create(&create(65535)).unwrap();
    let request = NetworkRequest {
        mode: NetworkMode::Named(NetworkName::new(name.clone()).unwrap()),
        ..Default::default()
    };
    let a = f.networks.attach("mtu-a", &[], &request).unwrap();
    let inner = inside(&a.namespace, || {
        std::process::Command::new("ip")
            .args(["-o", "link", "show", "eth0"])
            .output()
            .unwrap()
    });
    assert!(
        String::from_utf8_lossy(&inner.stdout).contains("mtu 65535"),
        "{}",
        String::from_utf8_lossy(&inner.stdout)
    );
    let host_end =
        std::fs::read_to_string(format!("/sys/class/net/{}/mtu", a.attachment.host_link)).unwrap();
    assert_eq!(host_end.trim(), "65535");
    drop(a);
    f.networks.detach("mtu-a").unwrap();
    f.networks.remove(&name).unwrap();
}

#[test]
fn a_published_port_is_reached_from_another_host() {
    need_root!();
    let f = fixture();
    // Another host: a network namespace joined to this one by a veth
    // pair, routing through this host.
    let tag = berth_net_test_tag();
    let n = u32::from_str_radix(&tag[..4], 16).unwrap() % 200 + 20;
    let other = format!("oh{tag}");
    let (here, there) = (format!("oa{tag}"), format!("ob{tag}"));
    let ip = |args: &[&str]| {
        let status = std::process::Command::new("ip")
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "ip {args:?}");
    };
    ip(&["netns", "add", &other]);
    let _gone = NetnsGuard(other.clone());
    ip(&[
        "link", "add", &here, "type", "veth", "peer", "name", &there, "netns", &other,
    ]);
    ip(&["addr", "add", &format!("172.29.{n}.1/24"), "dev", &here]);
    ip(&["link", "set", &here, "up"]);
    ip(&[
        "-n",
        &other,
        "addr",
        "add",
        &format!("172.29.{n}.2/24"),
        "dev",
        &there,
    ]);
    ip(&["-n", &other, "link", "set", &there, "up"]);

    let request = NetworkRequest {
        mode: NetworkMode::Bridge,
        ports: PublishedPort::parse("47411:8080").unwrap(),
        ..Default::default()
    };
    let a = f.networks.attach("reached", &[], &request).unwrap();
    let listener = inside(&a.namespace, || TcpListener::bind("0.0.0.0:8080").unwrap());
    let server = echo_once(listener);
    let to = SocketAddr::from((format!("172.29.{n}.1").parse::<Ipv4Addr>().unwrap(), 47411));
    let path = format!("/run/netns/{other}");
    let answer = std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).unwrap();
        // SAFETY: setns of this short-lived thread into the other host.
        assert_eq!(
            unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) },
            0
        );
        talk(to)
    })
    .join()
    .unwrap();
    assert_eq!(answer.unwrap(), b"hello");
    server.join().unwrap();
    drop(a);
    f.networks.detach("reached").unwrap();
}

/// Deletes a named network namespace (and the links in it) when dropped.
struct NetnsGuard(String);

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

#[test]
fn a_claim_wired_into_a_runtimes_namespace_reaches_out_and_one_that_fails_is_undone() {
    need_root!();
    let f = fixture();
    let published = |host_port| NetworkRequest {
        mode: NetworkMode::Bridge,
        ports: PublishedPort::parse(&format!("127.0.0.1:{host_port}:80")).unwrap(),
        ..Default::default()
    };
    // What a runtime does: it makes the namespace; berth-net claims first,
    // then wires the namespace it is given.
    let namespace = common::new_namespace();
    let mut claimed = f
        .networks
        .claim("wired", &["wired".into()], &published(18081))
        .unwrap();
    assert!(claimed
        .mounts()
        .iter()
        .any(|m| m.destination == "/etc/hosts"));
    claimed.wire(namespace.as_fd()).unwrap();
    let (wired, _mounts) = claimed.finish().unwrap();
    let gateway = f.networks.inspect("bridge").unwrap().network.gateway;
    let host_server = TcpListener::bind((gateway, 0)).unwrap();
    let to_host = host_server.local_addr().unwrap();
    let server = echo_once(host_server);
    assert_eq!(inside(&namespace, move || talk(to_host)).unwrap(), b"hello");
    server.join().unwrap();

    // A second container wired into the same namespace finds its eth0
    // taken: the wiring fails, and dropping the claim undoes it all.
    let mut second = f
        .networks
        .claim("second", &["second".into()], &published(18082))
        .unwrap();
    let failed = second.wire(namespace.as_fd());
    assert!(matches!(failed, Err(NetError::Io { .. })), "{failed:?}");
    drop(second);
    let left = f.networks.inspect("bridge").unwrap().containers;
    assert_eq!(
        left.iter()
            .map(|a| a.container.as_str())
            .collect::<Vec<_>>(),
        ["wired"],
        "the failed claim's record is gone"
    );
    assert!(!link_exists(&berth_net::host_link_name("second")));
    // Its port is free again: the next claim gets it.
    let next = f.networks.claim("next", &[], &published(18082)).unwrap();
    drop(next);

    drop(namespace);
    f.networks.detach(&wired.container).unwrap();
    assert!(gone_soon(&wired.host_link));
}
