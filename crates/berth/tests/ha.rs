//! A control plane without a single point of failure: two `berthd server`s
//! on one PostgreSQL database, real agents joined to both, real tasks in
//! real containers. The leader is killed with `kill -9`, frozen past its
//! lease with SIGSTOP, or stopped and started again (a rolling upgrade);
//! every task must end exactly once, on its first attempt.
//!
//! Needs PostgreSQL (`scripts/test.sh` starts it; under `CI=true` a missing
//! one fails the test rather than skip it).

mod common;

use berth_testkit::postgres::TestDatabase;
use common::daemons::{berthd, free_port, Daemon};
use common::{berth_binary, Berth, Run};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const JOIN_TOKEN: &str = "join-token-of-the-ha-tests-0123456789";
/// Short, so that the tests wait little for a dead leader's lease.
const SHORT_LEASE: &str = "2s";

struct Server {
    name: String,
    port: u16,
    daemon: Daemon,
    /// Its data dir and log.
    dir: tempfile::TempDir,
}

impl Server {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

/// One host. Fields drop in order: the agent is killed before its data dir
/// and cgroup parent go.
struct Host {
    agent: Daemon,
    dir: Berth,
    port: u16,
}

impl Drop for Host {
    /// After a failed test: the agent, then the shims it left.
    fn drop(&mut self) {
        self.agent.kill9();
        self.dir.kill_leftover_shims();
    }
}

struct Cluster {
    servers: Vec<Server>,
    hosts: Vec<Host>,
    /// Dropped last, once every daemon using it is gone.
    db: TestDatabase,
    join_file: tempfile::NamedTempFile,
    project: String,
    token: String,
    operator_token: String,
    /// The servers' --lease-ttl.
    lease_ttl: &'static str,
}

impl Cluster {
    /// Two servers (server-1 starts first, so it leads) and two hosts
    /// joined to both. `None` when PostgreSQL is not set up here.
    fn start(lease_ttl: &'static str) -> Option<Cluster> {
        let db = TestDatabase::create()?;
        let mut join_file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut join_file, JOIN_TOKEN.as_bytes()).unwrap();
        // Operator commands open the database directly (and make its
        // schema).
        let operator_dir = tempfile::TempDir::new().unwrap();
        let berthd_json = |args: &[&str]| {
            let out = Command::new(berthd())
                .arg("--data-dir")
                .arg(operator_dir.path())
                .args(args)
                .args(["--database", db.url()])
                .output()
                .unwrap();
            let run = Run::from(out);
            assert_eq!(run.code, 0, "berthd {args:?}: {}", run.stderr);
            run.json()
        };
        let operator_token = berthd_json(&["token", "create", "--operator", "--json"])["token"]
            .as_str()
            .expect("an operator token")
            .to_owned();
        let project = berthd_json(&["project", "create", "ha", "--json"]);
        let mut cluster = Cluster {
            servers: Vec::new(),
            hosts: Vec::new(),
            project: project["id"].as_str().unwrap().to_owned(),
            token: project["token"].as_str().unwrap().to_owned(),
            db,
            join_file,
            operator_token,
            lease_ttl,
        };
        for name in ["server-1", "server-2"] {
            let port = free_port();
            let dir = tempfile::Builder::new()
                .prefix("berth-ha")
                .tempdir_in("/var/tmp")
                .unwrap();
            let daemon = cluster.spawn_server(name, port, dir.path());
            cluster.servers.push(Server {
                name: name.to_owned(),
                port,
                daemon,
                dir,
            });
            cluster.wait_until(&format!("{name} answers"), |c| {
                c.servers_seen_by(c.servers.len() - 1).is_some()
            });
        }
        for _ in 0..2 {
            cluster.add_host();
        }
        cluster.wait_until("both hosts are ready", |c| {
            let nodes = c.berth(&["node", "ls", "--json"]);
            nodes.code == 0
                && nodes
                    .json()
                    .as_array()
                    .is_some_and(|n| n.len() == 2 && n.iter().all(|n| n["state"] == "ready"))
        });
        Some(cluster)
    }

    fn spawn_server(&self, name: &str, port: u16, dir: &Path) -> Daemon {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .unwrap();
        let child = Command::new(berthd())
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["server", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--database", self.db.url(), "--name", name])
            .args(["--lease-ttl", self.lease_ttl])
            .arg("--join-token-file")
            .arg(self.join_file.path())
            .env("BERTH_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start berthd server");
        Daemon(Some(child))
    }

    fn add_host(&mut self) {
        let dir = Berth::new();
        dir.import_busybox("busybox:latest");
        let port = free_port();
        let agent = self.spawn_agent(&dir, port, self.hosts.len() + 1);
        self.hosts.push(Host { agent, dir, port });
    }

    fn spawn_agent(&self, dir: &Berth, port: u16, index: usize) -> Daemon {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.dir.path().join("agent.log"))
            .unwrap();
        let child = Command::new(berthd())
            .arg("--data-dir")
            .arg(dir.data_dir())
            .arg("--cgroup-parent")
            .arg(&dir.cgroup_parent)
            .arg("--bridge")
            .arg(&dir.bridge)
            .args(["agent", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--join", &self.urls(), "--name", &format!("host-{index}")])
            .arg("--join-token-file")
            .arg(self.join_file.path())
            .args(["--allocatable", "cpus=2,memory=16g"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start berthd agent");
        Daemon(Some(child))
    }

    /// Every server's URL, comma separated, as clients and agents take them.
    fn urls(&self) -> String {
        self.servers
            .iter()
            .map(Server::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `berth ARGS` as this cluster's client (project and operator), with
    /// every server's URL.
    fn berth(&self, args: &[&str]) -> Run {
        self.berth_at(&self.urls(), args)
    }

    fn berth_at(&self, urls: &str, args: &[&str]) -> Run {
        let out = Command::new(berth_binary())
            .args(args)
            .env("BERTH_URL", urls)
            .env("BERTH_PROJECT_ID", &self.project)
            .env("BERTH_TOKEN", &self.token)
            .env("BERTH_OPERATOR_TOKEN", &self.operator_token)
            .env("BERTH_CONFIG", "/nonexistent/berth-config.json")
            .output()
            .unwrap();
        Run::from(out)
    }

    /// `berth server ls --json` asked of server `index` alone.
    fn servers_seen_by(&self, index: usize) -> Option<Value> {
        let run = self.berth_at(&self.servers[index].url(), &["server", "ls", "--json"]);
        (run.code == 0).then(|| run.json())
    }

    /// The name of the server that leads, as server `index` says.
    fn leader_seen_by(&self, index: usize) -> Option<String> {
        let view = self.servers_seen_by(index)?;
        view["servers"]
            .as_array()?
            .iter()
            .find(|s| s["leader"] == true)
            .and_then(|s| s["name"].as_str())
            .map(str::to_owned)
    }

    fn wait_until(&self, what: &str, done: impl Fn(&Cluster) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "{what}: not within 60 s\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for server in &self.servers {
            let log = server.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            out += &format!("--- {} (last lines)\n", server.name);
            for line in tail.iter().rev() {
                out += line;
                out += "\n";
            }
        }
        out
    }

    /// A SQL query's rows on the cluster's database (psql -At).
    fn sql(&self, query: &str) -> String {
        let out = Command::new("psql")
            .args([self.db.url(), "-v", "ON_ERROR_STOP=1", "-qAtc", query])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql {query:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn count(&self, condition: &str) -> u64 {
        self.sql(&format!("SELECT count(*) FROM tasks WHERE {condition}"))
            .parse()
            .unwrap()
    }

    /// Pushes a code whose tasks sleep `secs` and queues `count` of them
    /// (in requests of at most 1000).
    fn queue(&self, code: &str, secs: u32, count: usize) -> usize {
        let command = format!("sh -c 'sleep {secs}; echo done'");
        let pushed = self.berth(&[
            "code",
            "push",
            code,
            "--image",
            "busybox:latest",
            "--command",
            &command,
            "--memory",
            "64m",
            "--memory-request",
            "8m",
        ]);
        assert_eq!(pushed.code, 0, "code push: {}", pushed.stderr);
        let mut queued = 0;
        while queued < count {
            let batch = (count - queued).min(1000).to_string();
            let run = self.berth(&["task", "queue", code, "--count", &batch, "--json"]);
            assert_eq!(run.code, 0, "task queue: {}", run.stderr);
            queued += run.json()["tasks"].as_array().unwrap().len();
        }
        queued
    }

    /// Waits until every task of the project has ended, then checks that
    /// each ended once, complete, on its first attempt (never placed twice,
    /// never started again), with its output.
    fn assert_all_complete_once(&self, total: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let open =
                self.count("status NOT IN ('complete', 'error', 'cancelled', 'killed', 'timeout')");
            if open == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{open} task(s) still not ended after {within:?}: {}\n{}",
                self.sql("SELECT status, count(*) FROM tasks GROUP BY status"),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        let by_status = self.sql("SELECT status, count(*) FROM tasks GROUP BY status ORDER BY 1");
        assert_eq!(
            by_status,
            format!("complete|{total}"),
            "every task complete"
        );
        let again = self.sql(
            "SELECT id, attempt, infra_failures, retry_count FROM tasks
             WHERE attempt <> 1 OR infra_failures <> 0 OR retry_count <> 0 LIMIT 10",
        );
        assert_eq!(again, "", "tasks placed or started more than once");
        let logs = self.sql(
            "SELECT count(*) FROM tasks t JOIN task_logs l ON l.task_id = t.id
             WHERE convert_from(l.data, 'UTF8') = 'done' || chr(10)",
        );
        assert_eq!(logs, total.to_string(), "each task's output, once");
    }
}

fn tasks_env() -> usize {
    std::env::var("BERTH_HA_TASKS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000)
}

#[test]
fn the_leader_killed_under_load_hands_over_and_no_task_is_lost_or_doubled() {
    let Some(mut cluster) = Cluster::start(SHORT_LEASE) else {
        eprintln!("skipped: PostgreSQL is not set up here (scripts/test.sh sets it up)");
        return;
    };
    assert_eq!(cluster.leader_seen_by(1).as_deref(), Some("server-1"));
    let total = tasks_env();
    cluster.queue("steady", 3, total);
    // In flight: some running on the hosts, many still queued.
    cluster.wait_until("tasks running", |c| c.count("status = 'running'") >= 50);
    assert!(cluster.count("status = 'queued'") > 0, "all placed already");

    let killed_at = Instant::now();
    cluster.servers[0].daemon.kill9();
    cluster.wait_until("server-2 leads", |c| {
        c.leader_seen_by(1).as_deref() == Some("server-2")
    });
    let handover = killed_at.elapsed();
    assert!(
        handover <= Duration::from_secs(5),
        "server-2 led {handover:?} after server-1 was killed"
    );
    // Clients listing both servers go on through the live one.
    let more = cluster.queue("late", 1, 20);
    cluster.assert_all_complete_once(total + more, Duration::from_secs(600));
    // The dead server could not leave the list: it is shown silent.
    let view = cluster.servers_seen_by(1).unwrap();
    let server_1 = view["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "server-1")
        .cloned()
        .expect("a killed server stays listed");
    assert_eq!(server_1["state"], "silent", "{view}");
}

#[test]
fn a_leader_frozen_past_its_lease_writes_nothing_when_it_wakes() {
    let Some(cluster) = Cluster::start(SHORT_LEASE) else {
        eprintln!("skipped: PostgreSQL is not set up here (scripts/test.sh sets it up)");
        return;
    };
    let total = 60;
    cluster.queue("frozen", 4, total);
    cluster.wait_until("tasks running", |c| c.count("status = 'running'") >= 20);
    // server-1 leads and drives the running tasks; freeze it.
    cluster.servers[0].daemon.signal(libc::SIGSTOP);
    let frozen_at = Instant::now();
    cluster.wait_until("server-2 leads", |c| {
        c.leader_seen_by(1).as_deref() == Some("server-2")
    });
    // Past the end of the tasks server-1 was driving: server-2 adopted
    // them and recorded their ends.
    cluster.wait_until("the tasks it drove ended", |c| {
        c.count("status = 'running'") == 0 && frozen_at.elapsed() > Duration::from_secs(5)
    });
    cluster.servers[0].daemon.signal(libc::SIGCONT);
    // Woken, it learns that its term is over; whatever it tried to write
    // meanwhile was refused by the store.
    cluster.wait_until("server-1 follows", |c| {
        let log = c.servers[0].log();
        log.contains("another server took the dispatch lease")
            || log.contains("a write was refused")
            || log.contains("could not be renewed in time")
    });
    assert_eq!(cluster.leader_seen_by(0).as_deref(), Some("server-2"));
    cluster.assert_all_complete_once(total, Duration::from_secs(300));
}

#[test]
fn servers_and_agents_restart_one_by_one_with_tasks_in_flight() {
    // A long lease: a stop that did not hand over would leave nobody
    // dispatching for seconds.
    let Some(mut cluster) = Cluster::start("10s") else {
        eprintln!("skipped: PostgreSQL is not set up here (scripts/test.sh sets it up)");
        return;
    };
    let total = 200;
    cluster.queue("rolling", 6, total);
    cluster.wait_until("tasks running", |c| c.count("status = 'running'") >= 40);
    // Each server in turn: stopped (SIGTERM: it hands the lease over at
    // once) and started again, as an upgrade to a new binary would.
    for index in 0..cluster.servers.len() {
        let name = cluster.servers[index].name.clone();
        assert!(cluster.servers[index].daemon.stop(), "{name} did not stop");
        let stopped_at = Instant::now();
        let other = 1 - index;
        cluster.wait_until("the other server leads", |c| {
            c.leader_seen_by(other).is_some_and(|l| l != name)
        });
        assert!(
            stopped_at.elapsed() < Duration::from_secs(3),
            "a graceful stop hands over at once, not when its 10 s lease ends: {:?}",
            stopped_at.elapsed()
        );
        let port = cluster.servers[index].port;
        let daemon = cluster.spawn_server(&name, port, cluster.servers[index].dir.path());
        cluster.servers[index].daemon = daemon;
        cluster.wait_until("it answers again", |c| c.servers_seen_by(index).is_some());
    }
    // Then each agent: its containers live on in their shims.
    for index in 0..cluster.hosts.len() {
        assert!(
            cluster.hosts[index].agent.stop(),
            "agent {index} did not stop"
        );
        let port = cluster.hosts[index].port;
        let agent = cluster.spawn_agent(&cluster.hosts[index].dir, port, index + 1);
        cluster.hosts[index].agent = agent;
    }
    cluster.assert_all_complete_once(total, Duration::from_secs(300));
}

/// Forwards every connection to 127.0.0.1:`port` on to `target`, in
/// threads that end with the test process: a database that "comes up".
fn forward(port: u16, target: String) {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind the forwarder");
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(upstream) = std::net::TcpStream::connect(&target) else {
                continue;
            };
            let (mut a, mut b) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
            let (mut c, mut d) = (upstream, client);
            std::thread::spawn(move || std::io::copy(&mut a, &mut b));
            std::thread::spawn(move || std::io::copy(&mut c, &mut d));
        }
    });
}

#[test]
fn a_server_waits_for_its_database_and_serves_once_it_answers() {
    let Some(db) = TestDatabase::create() else {
        eprintln!("skipped: PostgreSQL is not set up here (scripts/test.sh sets it up)");
        return;
    };
    // The database's address, and the same URL through a port where
    // nothing answers yet.
    let (head, tail) = db.url().split_once('@').unwrap();
    let (address, database) = tail.split_once('/').unwrap();
    let database_port = free_port();
    let late_url = format!("{head}@127.0.0.1:{database_port}/{database}");
    let dir = tempfile::TempDir::new().unwrap();
    let port = free_port();
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut server = Daemon(Some(
        Command::new(berthd())
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["server", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--database", &late_url])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    ));
    let answers = || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log_path)
        .unwrap_or_default()
        .contains("cannot be used")
    {
        assert!(
            Instant::now() < deadline,
            "the server never said why it waits"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        matches!(server.0.as_mut().unwrap().try_wait(), Ok(None)),
        "the server gave up: {}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
    assert!(!answers(), "it serves before it has its database");

    forward(database_port, address.to_owned());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !answers() {
        assert!(
            Instant::now() < deadline,
            "the server never came up once the database answered: {}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(server.stop(), "it stops gracefully");
}
