//! `berth run` on networks, end to end: real namespaces, a real bridge,
//! real TCP through NAT and published ports. Each test has its own bridge
//! (and so its own nf_tables table).

mod common;
use common::Berth;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

/// A berth (with a bridge of its own, see `common::Berth`).
struct Bridged {
    b: Berth,
    bridge: String,
}

fn berth_with_bridge() -> Bridged {
    let b = Berth::new();
    let bridge = b.bridge.clone();
    Bridged { b, bridge }
}

fn rand_u32() -> u32 {
    let mut bytes = [0u8; 4];
    rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()).unwrap();
    u32::from_ne_bytes(bytes)
}

/// Answers one HTTP request with `body`.
fn serve_once(listener: TcpListener, body: &'static str) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf);
        let reply = format!(
            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(reply.as_bytes()).unwrap();
    })
}

#[test]
fn a_bridged_container_fetches_from_the_host_and_publishes_a_port() {
    let fixture = berth_with_bridge();
    let (b, bridge) = (&fixture.b, fixture.bridge.clone());
    b.import_busybox("busybox");
    let run = |args: &[&str]| b.run(args);

    // A server on the host, reached through the container's gateway.
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = serve_once(listener, "from the host");
    let script = format!(
        "gw=$(ip route | awk '/default/ {{print $3}}'); wget -qO- http://$gw:{port}/ && cat /etc/hosts"
    );
    let out = run(&[
        "run",
        "--network",
        "bridge",
        "--name",
        "fetcher",
        "busybox",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.starts_with("from the host"), "{}", out.stdout);
    assert!(
        out.stdout.contains("\tfetcher"),
        "own name in /etc/hosts: {}",
        out.stdout
    );
    server.join().unwrap();

    // A published port, reached from the host while the container serves.
    let host_port = 20000 + (rand_u32() % 20000) as u16;
    let publish = format!("{host_port}:8080");
    let mut web = b
        .command()
        .args(["run", "--network", "bridge", "-p", &publish, "busybox"])
        .args([
            "sh",
            "-c",
            "echo -e 'HTTP/1.0 200 OK\\r\\n\\r\\nfrom the container' | nc -l -p 8080",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let body = loop {
        let got = std::net::TcpStream::connect(("127.0.0.1", host_port)).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut text = String::new();
            s.read_to_string(&mut text)?;
            Ok(text)
        });
        match got {
            Ok(text) if text.contains("from the container") => break text,
            _ if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            other => panic!("never reached the published port: {other:?}"),
        }
    };
    assert!(body.contains("from the container"));
    assert!(web.wait().unwrap().success());

    // Bad input is refused with its code, and changes nothing.
    let out = run(&["run", "--network", "bridge", "-p", "80", "busybox", "true"]);
    assert_eq!(out.code, 2, "a usage error: {}", out.stderr);
    assert!(out.stderr.contains("invalid_argument"), "{}", out.stderr);
    let out = run(&["run", "--network", "nosuchnet", "busybox", "true"]);
    assert!(out.stderr.contains("network_not_found"), "{}", out.stderr);
    let out = run(&["run", "-p", "8080:80", "busybox", "true"]);
    assert!(
        out.stderr.contains("publishing ports needs"),
        "{}",
        out.stderr
    );

    // Nothing of any container is left on the host, and the bridge goes
    // with its network.
    let state = b.data_dir().join("network");
    for dir in ["attachments", "ports", "files"] {
        let left: Vec<_> = std::fs::read_dir(state.join(dir)).unwrap().collect();
        assert!(left.is_empty(), "{dir}: {left:?}");
    }
    // Each veth was set down when its container ended; the kernel removes
    // the pair with the namespace, in its own batched cleanup.
    let veths_on_bridge = || -> Vec<String> {
        std::fs::read_dir("/sys/class/net")
            .unwrap()
            .filter_map(|l| l.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("bv"))
            .filter(|n| {
                std::fs::read_link(format!("/sys/class/net/{n}/master"))
                    .is_ok_and(|m| m.ends_with(&bridge))
            })
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !veths_on_bridge().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let veths = veths_on_bridge();
    assert!(veths.is_empty(), "veths left on {bridge}: {veths:?}");
    b.assert_clean();
    drop(fixture);
    assert!(!std::path::Path::new("/sys/class/net")
        .join(&bridge)
        .exists());
}

impl Bridged {
    fn run(&self, args: &[&str]) -> common::Run {
        self.b.run(args)
    }

    fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.b
            .command()
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn assert_nothing_attached(&self) {
        let state = self.b.data_dir().join("network");
        for dir in ["attachments", "ports", "files"] {
            let left: Vec<_> = std::fs::read_dir(state.join(dir))
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            assert!(left.is_empty(), "{dir}: {left:?}");
        }
        let ipam: Vec<_> = std::fs::read_dir(state.join("ipam"))
            .map(|d| {
                d.flatten()
                    .flat_map(|n| {
                        std::fs::read_dir(n.path())
                            .unwrap()
                            .flatten()
                            .map(|e| e.file_name())
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            ipam.iter().all(|n| n == "last"),
            "addresses still claimed: {ipam:?}"
        );
    }
}

/// Waits until `berth run` prints its container's first line.
fn first_line(child: &mut std::process::Child) -> String {
    use std::io::BufRead;
    let stdout = child.stdout.as_mut().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    line
}

#[test]
fn containers_on_a_user_network_reach_each_other_by_name_and_internal_ones_stay_in() {
    let f = berth_with_bridge();
    f.b.import_busybox("busybox");
    let net = format!("n{:08x}", rand_u32());
    let walled = format!("w{:08x}", rand_u32());
    let out = f.run(&["network", "create", "--json", &net]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let subnet = out.json()["subnet"].as_str().unwrap().to_owned();
    let prefix = subnet.rsplit_once('.').unwrap().0.to_owned();

    // Bad input: clear errors, nothing made.
    let out = f.run(&["network", "create", "--subnet", &subnet, "other"]);
    assert!(
        out.stderr.contains("network_conflict") && out.stderr.contains("overlaps"),
        "{}",
        out.stderr
    );
    let out = f.run(&["network", "create", &net]);
    assert!(out.stderr.contains("already exists"), "{}", out.stderr);
    let out = f.run(&["network", "create", "--subnet", "10.99.0.1/24", "x"]);
    assert!(
        out.stderr.contains("did you mean 10.99.0.0/24"),
        "{}",
        out.stderr
    );
    let out = f.run(&[
        "run",
        "--network",
        &net,
        "--ip",
        "192.168.200.9",
        "busybox",
        "true",
    ]);
    assert!(out.stderr.contains("outside the subnet"), "{}", out.stderr);
    let out = f.run(&[
        "run",
        "--network",
        "bridge",
        "--ip",
        &format!("{prefix}.9"),
        "busybox",
        "true",
    ]);
    assert!(
        out.stderr.contains("--ip needs a user network"),
        "{}",
        out.stderr
    );

    // A server with a fixed address; a client finds it by name.
    let fixed = format!("{prefix}.9");
    let mut server = f.spawn(&[
        "run", "--network", &net, "--ip", &fixed, "--name", "srv", "busybox", "sh", "-c",
        "ip -4 addr show eth0 | awk '/inet/ {print $2}'; echo -e 'HTTP/1.0 200 OK\\r\\n\\r\\nby name' | nc -l -p 8080",
    ]);
    assert_eq!(first_line(&mut server).trim(), format!("{fixed}/24"));
    let out = f.run(&["run", "--network", &net, "--ip", &fixed, "busybox", "true"]);
    assert!(
        out.stderr.contains("taken by container srv"),
        "{}",
        out.stderr
    );
    let out = f.run(&[
        "run",
        "--network",
        &net,
        "busybox",
        "wget",
        "-qO-",
        "http://srv:8080/",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "by name");
    assert!(server.wait().unwrap().success());
    let out = f.run(&["network", "inspect", &net]);
    let view: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(view["containers"], serde_json::json!([]), "{}", out.stdout);

    // An internal network: its containers talk, the host is out of reach.
    let out = f.run(&["network", "create", "--internal", &walled]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let pong = Pong::start();
    let addresses = [common::host_address()];
    for address in &addresses {
        let script = format!("echo \"[$(nc -w 2 {address} {} </dev/null)]\"", pong.port);
        let out = f.run(&["run", "--network", &walled, "busybox", "sh", "-c", &script]);
        assert_eq!(out.stdout.trim(), "[]", "internal reached {address}");
        let out = f.run(&["run", "--network", &net, "busybox", "sh", "-c", &script]);
        assert_eq!(
            out.stdout.trim(),
            "[pong]",
            "a normal network did not reach {address}"
        );
    }
    drop(pong);

    let mut busy = f.spawn(&[
        "run",
        "--network",
        &walled,
        "busybox",
        "sh",
        "-c",
        "echo up; sleep 30",
    ]);
    first_line(&mut busy);
    let out = f.run(&["network", "rm", &walled]);
    assert!(out.stderr.contains("in use by"), "{}", out.stderr);
    busy.kill().unwrap();
    busy.wait().unwrap();
    let out = f.run(&["gc"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = f.run(&["network", "rm", &walled, &net]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    f.assert_nothing_attached();
    f.b.assert_clean();
}

/// A host server that answers every connection with "pong" and hangs up.
struct Pong {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Pong {
    fn start() -> Pong {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = TcpListener::bind("0.0.0.0:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.write_all(b"pong");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Pong {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Pong {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn after_kill_9_gc_takes_the_container_off_its_network() {
    let f = berth_with_bridge();
    f.b.import_busybox("busybox");
    let host_port = 20000 + (rand_u32() % 20000) as u16;
    let publish = format!("{host_port}:80");
    let mut child = f.spawn(&[
        "run",
        "--network",
        "bridge",
        "-p",
        &publish,
        "--egress-rate",
        "10mbit",
        "--name",
        "doomed",
        "busybox",
        "sh",
        "-c",
        "echo up; sleep 100",
    ]);
    first_line(&mut child);
    let attachment = f.b.data_dir().join("network/attachments/doomed.json");
    assert!(attachment.exists());
    let ifb = std::path::Path::new("/sys/class/net").join(berth_net::ifb_name("doomed"));
    assert!(ifb.exists(), "its egress is shaped through an ifb");
    let procs = f.b.running_container_procs("doomed");
    child.kill().unwrap(); // SIGKILL: no teardown runs
    child.wait().unwrap();
    f.b.assert_container_processes_end(&procs);
    assert!(attachment.exists(), "nothing removed it yet");
    let out = f.run(&["gc", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.json()["network_attachments_removed"][0],
        "doomed",
        "{}",
        out.stdout
    );
    f.assert_nothing_attached();
    for link in [
        berth_net::host_link_name("doomed"),
        berth_net::ifb_name("doomed"),
    ] {
        assert!(
            !std::path::Path::new("/sys/class/net").join(&link).exists(),
            "{link} left"
        );
    }
    // The port is free for the next container.
    let out = f.run(&[
        "run",
        "--network",
        "bridge",
        "-p",
        &publish,
        "busybox",
        "true",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    f.b.assert_clean();
}

/// A veth pair made for a test: one end (`parent`, no address) for
/// macvlan containers to hang off, the other on the host with the
/// subnet's first address. Removed when dropped.
struct Wire {
    parent: String,
    subnet_prefix: String,
}

impl Wire {
    fn new() -> Wire {
        let tag = format!("{:06x}", rand_u32() & 0xff_ffff);
        let third = rand_u32() % 200 + 20;
        let wire = Wire {
            parent: format!("mvp{tag}"),
            subnet_prefix: format!("10.77.{third}"),
        };
        let peer = format!("mvq{tag}");
        for args in [
            vec![
                "link",
                "add",
                &wire.parent,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
            ],
            vec!["link", "set", &wire.parent, "up"],
            vec![
                "addr",
                "add",
                &format!("{}.1/24", wire.subnet_prefix),
                "dev",
                &peer,
            ],
            vec!["link", "set", &peer, "up"],
        ] {
            let status = std::process::Command::new("ip")
                .args(&args)
                .status()
                .unwrap();
            assert!(status.success(), "ip {args:?}");
        }
        wire
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.parent])
            .status();
    }
}

#[test]
fn macvlan_containers_sit_on_their_parents_network() {
    let f = berth_with_bridge();
    f.b.import_busybox("busybox");
    let wire = Wire::new();
    let subnet = format!("{}.0/24", wire.subnet_prefix);
    let lan = format!("l{:08x}", rand_u32());
    let out = f.run(&[
        "network",
        "create",
        "--driver",
        "macvlan",
        "--parent",
        &wire.parent,
        "--subnet",
        &subnet,
        &lan,
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);

    // Bad input.
    let out = f.run(&[
        "network",
        "create",
        "--driver",
        "macvlan",
        "--parent",
        "nosuchif0",
        "x",
    ]);
    assert!(out.stderr.contains("network_not_found"), "{}", out.stderr);
    let out = f.run(&["run", "--network", "macvlan:nosuchif0", "busybox", "true"]);
    assert!(
        out.stderr.contains("no interface named nosuchif0"),
        "{}",
        out.stderr
    );
    let out = f.run(&["run", "--network", &lan, "-p", "8080:80", "busybox", "true"]);
    assert!(out.stderr.contains("macvlan network"), "{}", out.stderr);

    // A fixed address on the parent's network; the host end of the wire
    // (another machine on that network, as far as the container knows)
    // answers.
    let pong = Pong::start();
    let fixed = format!("{}.9", wire.subnet_prefix);
    let script = address_then_reach(&wire.subnet_prefix, pong.port);
    let out = f.run(&[
        "run",
        "--network",
        &lan,
        "--ip",
        &fixed,
        "busybox",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, format!("{fixed}/24\npong"));
    drop(pong);

    // Two macvlan containers of one parent reach each other by name.
    let mut server = f.spawn(&[
        "run",
        "--network",
        &lan,
        "--name",
        "mvsrv",
        "busybox",
        "sh",
        "-c",
        "echo up; echo -e 'HTTP/1.0 200 OK\\r\\n\\r\\nover macvlan' | nc -l -p 8080",
    ]);
    first_line(&mut server);
    let out = f.run(&[
        "run",
        "--network",
        &lan,
        "busybox",
        "wget",
        "-qO-",
        "http://mvsrv:8080/",
    ]);
    assert_eq!(out.stdout.trim(), "over macvlan", "{}", out.stderr);
    assert!(server.wait().unwrap().success());

    let out = f.run(&["network", "rm", &lan]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    f.assert_nothing_attached();
    f.b.assert_clean();
}

#[test]
fn a_container_joins_anothers_network_namespace() {
    let f = berth_with_bridge();
    f.b.import_busybox("busybox");
    let out = f.run(&["run", "--network", "container:nobody", "busybox", "true"]);
    assert!(
        out.stderr.contains("no running container nobody"),
        "{}",
        out.stderr
    );

    let mut server = f.spawn(&[
        "run",
        "--network",
        "bridge",
        "--name",
        "shared",
        "busybox",
        "sh",
        "-c",
        "echo up; echo -e 'HTTP/1.0 200 OK\\r\\n\\r\\nsame namespace' | nc -l -p 8080",
    ]);
    first_line(&mut server);
    let out = f.run(&[
        "run",
        "--network",
        "container:shared",
        "busybox",
        "sh",
        "-c",
        "wget -qO- http://127.0.0.1:8080/; grep -c shared /etc/hosts",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "same namespace\n1\n");
    assert!(server.wait().unwrap().success());
    f.assert_nothing_attached();
    f.b.assert_clean();
}

/// A CNI configuration (Debian's bridge, host-local, portmap and bandwidth
/// plugins) in a directory of its own; its bridge goes when dropped.
struct CniSetup {
    dir: tempfile::TempDir,
    name: String,
    bridge: String,
    prefix: String,
}

impl CniSetup {
    fn new() -> CniSetup {
        let dir = tempfile::tempdir().unwrap();
        let tag = format!("{:08x}", rand_u32());
        let prefix = format!("10.66.{}", rand_u32() % 200 + 20);
        let setup = CniSetup {
            name: format!("cni{tag}"),
            bridge: format!("cb{tag}"),
            prefix,
            dir,
        };
        let config = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": setup.name,
            "plugins": [
                {"type": "bridge", "bridge": setup.bridge, "isGateway": true, "ipMasq": false,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": format!("{}.0/24", setup.prefix)}]],
                          "dataDir": setup.dir.path().join("ipam")}},
                {"type": "portmap", "capabilities": {"portMappings": true}},
                {"type": "bandwidth", "capabilities": {"bandwidth": true}},
            ],
        });
        std::fs::write(
            setup.dir.path().join("10-test.conflist"),
            config.to_string(),
        )
        .unwrap();
        setup
    }

    /// Addresses host-local still holds for containers.
    fn leases(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.path().join("ipam").join(&self.name))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| n.starts_with("10."))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for CniSetup {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

#[test]
fn a_cni_configuration_runs_with_debians_plugins() {
    if !std::path::Path::new("/usr/lib/cni/bridge").exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "scripts/ensure-deps.sh installs them"
        );
        eprintln!("skipped: containernetworking-plugins is not installed");
        return;
    }
    let f = berth_with_bridge();
    f.b.import_busybox("busybox");
    let cni = CniSetup::new();
    let conf_dir = cni.dir.path().to_str().unwrap().to_owned();
    let out = f.run(&[
        "--cni-conf-dir",
        &conf_dir,
        "run",
        "--network",
        "cni:nosuch",
        "busybox",
        "true",
    ]);
    assert!(out.stderr.contains("network_not_found"), "{}", out.stderr);

    let pong = Pong::start();
    let mode = format!("cni:{}", cni.name);
    let script = address_then_reach(&cni.prefix, pong.port);
    let out = f.run(&[
        "--cni-conf-dir",
        &conf_dir,
        "run",
        "--network",
        &mode,
        "busybox",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (address, answer) = out.stdout.split_once('\n').unwrap();
    assert!(
        address.starts_with(&format!("{}.", cni.prefix)),
        "{}",
        out.stdout
    );
    assert_eq!(answer, "pong");
    // DEL ran: host-local gave the address back, berth holds nothing.
    assert!(
        cni.leases().is_empty(),
        "host-local still holds {:?}",
        cni.leases()
    );
    f.assert_nothing_attached();
    f.b.assert_clean();
}

/// A container's script: print its address on eth0, then reach `port` on
/// `PREFIX.1` (the other end of its network).
fn address_then_reach(prefix: &str, port: u16) -> String {
    format!(
        "ip -4 addr show eth0 | awk '/inet/ {{print $2}}'; nc -w 2 {prefix}.1 {port} </dev/null"
    )
}
