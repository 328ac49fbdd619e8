//! A fleet on loopback: a real `berthd server` and real agents that join it
//! (`berthd agent --join`), steered with `berth node …`, running tasks
//! through real shims and containers. (The fleet in network namespaces is
//! `scripts/fleet.sh`'s.)

mod common;

use common::daemons::{berthd, free_port, Daemon};
use common::{berth_binary, Berth, Run};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const JOIN_TOKEN: &str = "join-token-of-this-test-0123456789";

/// One joined host. Fields drop in order: the agent is killed before its
/// data dir and cgroup parent go, or its next heartbeat (which reads the
/// parent's usage, creating it if missing) could re-create the parent
/// after the test removed it.
struct Host {
    name: String,
    agent: Daemon,
    dir: Berth,
}

struct Fleet {
    /// Killed when the fleet is dropped, before its data dir goes.
    _server: Daemon,
    /// The server's data dir (its SQLite store).
    server_dir: Berth,
    url: String,
    join_file: PathBuf,
    hosts: Vec<Host>,
    ops: String,
}

impl Fleet {
    fn start(hosts: usize) -> Fleet {
        let server_dir = Berth::new();
        let join_file = server_dir.dir.path().join("join.token");
        std::fs::write(&join_file, JOIN_TOKEN).unwrap();
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let log = std::fs::File::create(server_dir.dir.path().join("server.log")).unwrap();
        let server = Command::new(berthd())
            .arg("--data-dir")
            .arg(server_dir.data_dir())
            .args(["server", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--join-token-file")
            .arg(&join_file)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start berthd server");
        let mut fleet = Fleet {
            _server: Daemon(Some(server)),
            server_dir,
            url,
            join_file,
            hosts: Vec::new(),
            ops: String::new(),
        };
        fleet.ops = fleet
            .operator(&["token", "create", "--operator", "--json"])
            .json()["token"]
            .as_str()
            .expect("an operator token")
            .to_owned();
        for i in 1..=hosts {
            fleet.add_host(&format!("host-{i}"), if i % 2 == 1 { "a" } else { "b" });
        }
        fleet.wait_for(|nodes| nodes.len() == hosts && nodes.iter().all(|n| n["state"] == "ready"));
        fleet
    }

    fn add_host(&mut self, name: &str, zone: &str) {
        let host = Berth::new();
        host.import_busybox("busybox:latest");
        let port = free_port();
        let log = std::fs::File::create(host.dir.path().join("agent.log")).unwrap();
        let agent = Command::new(berthd())
            .arg("--data-dir")
            .arg(host.data_dir())
            .arg("--cgroup-parent")
            .arg(&host.cgroup_parent)
            .arg("--bridge")
            .arg(&host.bridge)
            .args(["agent", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--join", &self.url, "--name", name])
            .arg("--join-token-file")
            .arg(&self.join_file)
            .args(["--labels", &format!("zone={zone}")])
            .args(["--allocatable", "cpus=1,memory=1g"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start berthd agent");
        self.hosts.push(Host {
            name: name.to_owned(),
            agent: Daemon(Some(agent)),
            dir: host,
        });
    }

    /// `berthd ARGS` on the server's store.
    fn operator(&self, args: &[&str]) -> Run {
        let out = Command::new(berthd())
            .arg("--data-dir")
            .arg(self.server_dir.data_dir())
            .args(args)
            .output()
            .unwrap();
        Run::from(out)
    }

    /// `berth node ARGS` as an operator of this fleet.
    fn node(&self, args: &[&str]) -> Run {
        let out = Command::new(berth_binary())
            .arg("node")
            .args(args)
            .env("BERTH_URL", &self.url)
            .env("BERTH_OPERATOR_TOKEN", &self.ops)
            .env("BERTH_CONFIG", "/nonexistent/berth-config.json")
            .output()
            .unwrap();
        Run::from(out)
    }

    fn nodes(&self) -> Vec<Value> {
        let run = self.node(&["ls", "--json"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        run.json().as_array().cloned().unwrap_or_default()
    }

    fn wait_for(&self, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let nodes = self.nodes();
            if done(&nodes) {
                return nodes;
            }
            assert!(
                Instant::now() < deadline,
                "the fleet never got there: {nodes:#?}\nserver log:\n{}",
                std::fs::read_to_string(self.server_dir.dir.path().join("server.log"))
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn host(&self, name: &str) -> &Berth {
        &self.hosts.iter().find(|h| h.name == name).unwrap().dir
    }
}

fn state_of(nodes: &[Value], name: &str) -> String {
    nodes
        .iter()
        .find(|n| n["name"] == name)
        .map(|n| n["state"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

#[test]
fn hosts_join_are_steered_and_a_silent_one_goes_down() {
    let fleet = Fleet::start(2);
    let nodes = fleet.nodes();
    assert_eq!(nodes[0]["name"], "host-1");
    assert_eq!(nodes[0]["labels"]["zone"], "a");
    assert_eq!(nodes[1]["labels"]["zone"], "b");
    assert_eq!(nodes[0]["report"]["allocatable"]["cpu_millis"], 1000);
    assert_eq!(
        nodes[0]["report"]["allocatable"]["memory_bytes"],
        1u64 << 30
    );
    assert!(nodes[0]["report"]["images"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i == "busybox:latest"));
    let table = fleet.node(&["ls"]);
    assert!(table.stdout.contains("host-2") && table.stdout.contains("ready"));

    // Drain, label, and the errors.
    let drained = fleet.node(&["drain", "host-1", "--json"]);
    assert_eq!(drained.json()["state"], "draining");
    let labelled = fleet.node(&["label", "host-2", "gpu=true", "zone-", "--json"]);
    assert_eq!(labelled.code, 0, "{}", labelled.stderr);
    assert_eq!(
        labelled.json()["labels"],
        serde_json::json!({"gpu": "true", "zone": "b"}),
        "an operator can only remove labels the operator set"
    );
    let missing = fleet.node(&["drain", "nope"]);
    assert_eq!(missing.code, 125);
    assert!(
        missing.stderr.contains("no host named"),
        "{}",
        missing.stderr
    );
    let wrong = Command::new(berth_binary())
        .args([
            "node",
            "ls",
            "--url",
            &fleet.url,
            "--operator-token",
            "bt_wrong",
        ])
        .env("BERTH_CONFIG", "/nonexistent/berth-config.json")
        .output()
        .unwrap();
    assert_eq!(Run::from(wrong).code, 125);

    // Pools, configured by an operator.
    let pool = |args: &[&str]| {
        let out = Command::new(berth_binary())
            .arg("pool")
            .args(args)
            .env("BERTH_URL", &fleet.url)
            .env("BERTH_OPERATOR_TOKEN", &fleet.ops)
            .env("BERTH_CONFIG", "/nonexistent/berth-config.json")
            .output()
            .unwrap();
        Run::from(out)
    };
    let set = pool(&[
        "set",
        "web",
        "--weight",
        "2",
        "--min",
        "cpus=0.5,memory=256m",
        "--max",
        "cpus=1",
        "--json",
    ]);
    assert_eq!(set.code, 0, "{}", set.stderr);
    assert_eq!(set.json()["max"]["cpus"], 1.0);
    let listed = pool(&["ls"]);
    assert!(
        listed.stdout.contains("web") && listed.stdout.contains("memory=256MiB"),
        "{}",
        listed.stdout
    );
    let bad = pool(&["set", "web", "--min", "cpus=2", "--max", "cpus=1"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("min is above max"), "{}", bad.stderr);
    assert_eq!(pool(&["rm", "web"]).code, 0);
    assert_eq!(pool(&["rm", "web"]).code, 125);

    // A reader that went away ends the client quietly, as it would `ls`.
    let mut child = Command::new(berth_binary())
        .args(["node", "ls", "--json"])
        .env("BERTH_URL", &fleet.url)
        .env("BERTH_OPERATOR_TOKEN", &fleet.ops)
        .env("BERTH_CONFIG", "/nonexistent/berth-config.json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{stderr}");

    // A restarted agent is the same host.
    let id_before = fleet.nodes()[1]["id"].clone();
    let identity: Value = serde_json::from_slice(
        &std::fs::read(fleet.host("host-2").data_dir().join("agent/identity.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(identity["node_id"], id_before);

    // A host whose agent dies is marked down.
    let mut fleet = fleet;
    fleet.hosts[1].agent.kill9();
    let started = Instant::now();
    let nodes = fleet.wait_for(|nodes| state_of(nodes, "host-2") == "down");
    assert_eq!(state_of(&nodes, "host-1"), "draining");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "marked down after {:?}",
        started.elapsed()
    );

    // A host removed while its agent runs: its next heartbeat is refused
    // as unknown, and the agent joins again, a new host to the fleet.
    let removed_id = id_of(&fleet.nodes(), "host-1");
    let removed = fleet.node(&["rm", "host-1"]);
    assert_eq!(removed.code, 0, "{}", removed.stderr);
    let nodes = fleet.wait_for(|nodes| state_of(nodes, "host-1") == "ready");
    assert_ne!(
        id_of(&nodes, "host-1"),
        removed_id,
        "a removed host comes back as a new one"
    );
    drop(fleet);
}

fn id_of(nodes: &[Value], name: &str) -> String {
    nodes
        .iter()
        .find(|n| n["name"] == name)
        .and_then(|n| n["id"].as_str())
        .unwrap_or_default()
        .to_owned()
}
