//! `berth run` on networks, end to end: real namespaces, a real bridge,
//! real TCP through NAT and published ports. Each test has its own bridge
//! (and so its own nf_tables table).

mod common;
use common::Berth;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

/// A berth whose default bridge is its own; what its networks made goes
/// when it is dropped, even after a failed assertion.
struct Bridged {
    b: Berth,
    bridge: String,
}

impl Drop for Bridged {
    fn drop(&mut self) {
        let config = berth_net::NetConfig {
            state_dir: self.b.data_dir().join("network"),
            bridge: self.bridge.clone(),
            table: self.bridge.clone(),
        };
        if let Ok(networks) = berth_net::Networks::open(config) {
            let _ = networks.gc(&|_| false);
            for network in networks.list().unwrap_or_default() {
                let _ = networks.remove(&network.name);
            }
        }
        let _ = berth_net::rules::remove(&self.bridge);
    }
}

fn berth_with_bridge() -> Bridged {
    let bridge = format!("bt{:08x}", rand_u32());
    Bridged {
        b: Berth::new(),
        bridge,
    }
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
    let run = |args: &[&str]| {
        let mut all = vec!["--bridge", bridge.as_str()];
        all.extend_from_slice(args);
        b.run(&all)
    };

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
        .args([
            "--bridge",
            &bridge,
            "run",
            "--network",
            "bridge",
            "-p",
            &publish,
            "busybox",
        ])
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
    let links = std::fs::read_dir("/sys/class/net").unwrap();
    let veths: Vec<String> = links
        .filter_map(|l| l.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("bv"))
        .filter(|n| {
            std::fs::read_link(format!("/sys/class/net/{n}/master"))
                .is_ok_and(|m| m.ends_with(&bridge))
        })
        .collect();
    assert!(veths.is_empty(), "veths left on {bridge}: {veths:?}");
    b.assert_clean();
    drop(fixture);
    assert!(!std::path::Path::new("/sys/class/net")
        .join(&bridge)
        .exists());
}
