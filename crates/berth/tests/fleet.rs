//! The fleet end to end: `scripts/fleet.sh` makes a server and three agent
//! hosts, each in a network namespace of its own; tasks are queued through
//! the real CLI and placed by the real server on real containers.
//!
//! One test walks the whole story (spread, constraints, group rules, no
//! overcommit, drain, a host lost and back) because a fleet takes seconds
//! to make and the steps build on each other.

mod common;

use common::berth_binary;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Memory each host offers: 512 MiB; tasks below reserve 200 MiB, so at
/// most two fit on a host at once.
const HOST_MEMORY: u64 = 512 << 20;
const TASK_MEMORY: u64 = 200 << 20;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fleet made by scripts/fleet.sh, taken down when dropped.
struct Fleet {
    dir: tempfile::TempDir,
    env: BTreeMap<String, String>,
    home: PathBuf,
}

impl Fleet {
    fn up() -> Fleet {
        // Short: the hosts' data dirs (and their sockets) live below it.
        let dir = tempfile::Builder::new()
            .prefix("bfp.")
            .tempdir_in("/tmp")
            .unwrap();
        let fleet_dir = dir.path().join("f");
        let bin_dir = berth_binary().parent().unwrap().to_owned();
        let out = Command::new("bash")
            .arg(repo().join("scripts/fleet.sh"))
            .args(["up", "--hosts", "3", "--dir"])
            .arg(&fleet_dir)
            .arg("--bin-dir")
            .arg(&bin_dir)
            .args([
                "--allocatable",
                "cpus=1,memory=512m",
                "--labels",
                "host-3:gpu=true",
            ])
            .env("BERTH_TEST_BUSYBOX_TAR", common_busybox(dir.path()))
            .output()
            .unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let mut fleet = Fleet {
            env: BTreeMap::new(),
            dir,
            home,
        };
        assert!(
            out.status.success(),
            "fleet.sh up failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        fleet.env = std::fs::read_to_string(fleet_dir.join("env"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        fleet
    }

    fn fleet_dir(&self) -> PathBuf {
        self.dir.path().join("f")
    }

    fn script(&self, args: &[&str]) -> String {
        let out = Command::new("bash")
            .arg(repo().join("scripts/fleet.sh"))
            .args(args)
            .arg("--dir")
            .arg(self.fleet_dir())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "fleet.sh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `berth ARGS` as this fleet's client (project and operator): its
    /// standard output; it must succeed.
    fn berth_text(&self, args: &[&str]) -> String {
        let out = Command::new(berth_binary())
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .envs(&self.env)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "berth {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The same, its last line of output as JSON (`null` if none).
    fn berth(&self, args: &[&str]) -> Value {
        let text = self.berth_text(args);
        let last = text.lines().last().unwrap_or("null");
        serde_json::from_str(last).unwrap_or(Value::Null)
    }

    fn queue(&self, code: &str, count: u32, extra: &[&str]) -> Vec<String> {
        let count = count.to_string();
        let mut args = vec!["task", "queue", code, "--json", "--count", &count];
        args.extend_from_slice(extra);
        let answer = self.berth(&args);
        answer["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect()
    }

    fn tasks(&self) -> HashMap<String, Value> {
        let mut all = HashMap::new();
        for page in 0.. {
            let answer = self.berth(&[
                "task",
                "ls",
                "--json",
                "--per-page",
                "100",
                "--page",
                &page.to_string(),
            ]);
            let tasks = answer["tasks"].as_array().cloned().unwrap_or_default();
            let done = tasks.len() < 100;
            for task in tasks {
                all.insert(task["id"].as_str().unwrap().to_owned(), task);
            }
            if done {
                break;
            }
        }
        all
    }

    /// Waits until every task of `ids` is in one of `statuses`, checking
    /// on the way that no host ever holds more than it offers.
    fn wait_for(&self, ids: &[String], statuses: &[&str], secs: u64) -> HashMap<String, Value> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let tasks = self.tasks();
            assert_no_overcommit(&tasks);
            let done = ids.iter().all(|id| {
                tasks
                    .get(id)
                    .is_some_and(|t| statuses.contains(&t["status"].as_str().unwrap_or("")))
            });
            if done {
                return tasks;
            }
            assert!(
                Instant::now() < deadline,
                "tasks not {statuses:?} after {secs}s: {:#?}",
                ids.iter()
                    .map(|id| (&tasks[id]["status"], &tasks[id]["node"], &tasks[id]["msg"]))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo().join("scripts/fleet.sh"))
            .args(["down", "--dir"])
            .arg(self.fleet_dir())
            .output();
    }
}

fn common_busybox(dir: &Path) -> PathBuf {
    match std::env::var_os("BERTH_TEST_BUSYBOX_TAR") {
        Some(path) => PathBuf::from(path),
        None => common::busybox_tarball(dir),
    }
}

/// No host holds more memory in reservations (of tasks preparing or
/// running) than it offers.
fn assert_no_overcommit(tasks: &HashMap<String, Value>) {
    let mut held: HashMap<&str, u64> = HashMap::new();
    for task in tasks.values() {
        let status = task["status"].as_str().unwrap_or("");
        if status != "preparing" && status != "running" {
            continue;
        }
        let node = task["node"].as_str().unwrap_or("?");
        *held.entry(node).or_default() += task["reserved"]["memory_request"].as_u64().unwrap_or(0);
    }
    for (node, bytes) in held {
        assert!(
            bytes <= HOST_MEMORY,
            "{node} holds {bytes} bytes, more than {HOST_MEMORY}"
        );
    }
}

fn nodes_of<'a>(tasks: &'a HashMap<String, Value>, ids: &[String]) -> Vec<&'a str> {
    ids.iter()
        .map(|id| tasks[id]["node"].as_str().unwrap_or("-"))
        .collect()
}

#[test]
fn a_fleet_places_by_resources_labels_and_groups_and_survives_a_lost_host() {
    let fleet = Fleet::up();
    let pkg = fleet.dir.path().join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(pkg.join("run.sh"), "sleep \"${SLEEP:-2}\"; echo done\n").unwrap();
    let pkg = pkg.to_str().unwrap().to_owned();
    let memory = format!("{TASK_MEMORY}");
    fleet.berth(&[
        "code",
        "push",
        "work",
        "--runtime",
        "sh",
        "--file",
        "run.sh",
        "--dir",
        &pkg,
        "--memory",
        &memory,
        "--json",
    ]);
    fleet.berth(&[
        "code",
        "push",
        "quick",
        "--runtime",
        "sh",
        "--file",
        "run.sh",
        "--dir",
        &pkg,
        "--memory",
        "16m",
        "--env",
        "SLEEP=0",
        "--json",
    ]);
    fleet.berth(&[
        "code",
        "push",
        "long",
        "--runtime",
        "sh",
        "--file",
        "run.sh",
        "--dir",
        &pkg,
        "--memory",
        "16m",
        "--env",
        "SLEEP=15",
        "--json",
    ]);

    // Spread: six tasks of 200 MiB on three hosts of 512 MiB go two by two.
    let spread = fleet.queue("work", 6, &[]);
    let tasks = fleet.wait_for(&spread, &["complete"], 90);
    let mut per_host: BTreeMap<&str, usize> = BTreeMap::new();
    for node in nodes_of(&tasks, &spread) {
        *per_host.entry(node).or_default() += 1;
    }
    assert_eq!(per_host.len(), 3, "spread over every host: {per_host:?}");

    // Constraints: gpu hosts, a zone, a host by name.
    let gpu = fleet.queue("quick", 2, &["--constraint", "gpu==true"]);
    let zone_b = fleet.queue("quick", 2, &["--constraint", "zone==b"]);
    let named = fleet.queue("quick", 1, &["--constraint", "node==host-1"]);
    let tasks = fleet.wait_for(
        &[gpu.clone(), zone_b.clone(), named.clone()].concat(),
        &["complete"],
        60,
    );
    assert_eq!(nodes_of(&tasks, &gpu), ["host-3", "host-3"]);
    assert_eq!(nodes_of(&tasks, &zone_b), ["host-2", "host-2"]);
    assert_eq!(nodes_of(&tasks, &named), ["host-1"]);

    // A task no host could ever take is refused at queue time, with why.
    let out = Command::new(berth_binary())
        .args(["task", "queue", "quick", "--memory", "4g"])
        .env_clear()
        .env("HOME", &fleet.home)
        .envs(&fleet.env)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("could never run"),
        "{stderr}"
    );

    // Hard anti-affinity: three members on three hosts; a fourth waits
    // with the reason; a soft member is placed anyway.
    let web = fleet.queue("work", 3, &["--anti-affinity", "web", "--memory", "16m"]);
    let tasks = fleet.wait_for(&web, &["running", "complete"], 60);
    let mut hosts: Vec<&str> = nodes_of(&tasks, &web);
    hosts.sort();
    hosts.dedup();
    assert_eq!(
        hosts.len(),
        3,
        "one web member per host: {:?}",
        nodes_of(&tasks, &web)
    );
    let fourth = fleet.queue("work", 1, &["--anti-affinity", "web", "--memory", "16m"]);
    std::thread::sleep(Duration::from_secs(1));
    let waiting = &fleet.tasks()[&fourth[0]];
    if waiting["status"] == "queued" {
        assert!(
            waiting["msg"]
                .as_str()
                .unwrap_or("")
                .contains("anti-affinity"),
            "{waiting}"
        );
    }
    let soft = fleet.queue("quick", 1, &["--anti-affinity", "web:soft"]);
    fleet.wait_for(
        &[web.clone(), fourth.clone(), soft.clone()].concat(),
        &["complete"],
        90,
    );

    // Affinity: members go where the first one is.
    let db = fleet.queue("work", 2, &["--affinity", "db", "--memory", "16m"]);
    let tasks = fleet.wait_for(&db, &["complete"], 60);
    let db_hosts = nodes_of(&tasks, &db);
    assert_eq!(db_hosts[0], db_hosts[1], "affinity keeps db together");

    // A drained host gets nothing new.
    fleet.berth(&["node", "drain", "host-1", "--json"]);
    let after_drain = fleet.queue("quick", 6, &[]);
    let tasks = fleet.wait_for(&after_drain, &["complete"], 60);
    assert!(
        !nodes_of(&tasks, &after_drain).contains(&"host-1"),
        "{:?}",
        nodes_of(&tasks, &after_drain)
    );
    fleet.berth(&["node", "undrain", "host-1", "--json"]);

    // A host lost under load: its tasks run again elsewhere, once each.
    let load = fleet.queue("long", 6, &["--constraint", "node!=host-1"]);
    let tasks = fleet.wait_for(&load, &["running"], 60);
    let on_host_2: Vec<String> = load
        .iter()
        .filter(|id| tasks[*id]["node"] == "host-2")
        .cloned()
        .collect();
    assert!(
        !on_host_2.is_empty(),
        "some load on host-2: {:?}",
        nodes_of(&tasks, &load)
    );
    let killed_at = Instant::now();
    fleet.script(&["kill-host", "host-2"]);
    let nodes = fleet.berth(&["node", "ls", "--json"]);
    let tasks = fleet.wait_for(&load, &["complete"], 120);
    for id in &on_host_2 {
        assert_ne!(tasks[id]["node"], "host-2", "{id} ran again elsewhere");
        assert!(
            tasks[id]["retry_count"].as_i64() >= Some(1),
            "{}",
            tasks[id]
        );
    }
    eprintln!(
        "kill-host to every moved task complete: {:?} (nodes then: {nodes})",
        killed_at.elapsed()
    );

    // Back: nothing stale runs there.
    fleet.script(&["revive-host", "host-2"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let nodes = fleet.berth(&["node", "ls", "--json"]);
        let host_2 = nodes
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == "host-2")
            .unwrap()
            .clone();
        if host_2["state"] == "ready" && host_2["report"]["used"]["containers_running"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "host-2 never came back clean: {host_2}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = fleet.script(&["status", "--json"]);
    let status: Value = serde_json::from_str(&status).unwrap();
    assert!(
        status["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["alive"] == true),
        "{status}"
    );
}

/// A project's overlay network across the fleet: a task on one host
/// reaches a task on another by its id; a task moved by a lost host keeps
/// its address and name; an internal overlay has no way out; the hosts
/// remove the network once no task of theirs is on it.
#[test]
fn an_overlay_carries_tasks_between_hosts_by_name() {
    let fleet = Fleet::up();
    let pkg = fleet.dir.path().join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(
        pkg.join("serve.sh"),
        "mkdir -p /tmp/www\n\
         echo \"hello from $TASK_ID\" > /tmp/www/index.html\n\
         exec httpd -f -p 8080 -h /tmp/www\n",
    )
    .unwrap();
    // Busybox's wget crashes on its own -T timeout: the loop bounds it.
    std::fs::write(
        pkg.join("fetch.sh"),
        "target=$(cat \"$PAYLOAD_FILE\"); i=0\n\
         while [ $i -lt 150 ]; do\n\
           if wget -q -O - \"http://$target:8080/\"; then exit 0; fi\n\
           i=$((i+1)); sleep 0.2\n\
         done\n\
         exit 1\n",
    )
    .unwrap();
    std::fs::write(
        pkg.join("reach.sh"),
        "if timeout 5 nc -w 3 $(cat \"$PAYLOAD_FILE\") </dev/null 2>/dev/null; then echo reached; else echo blocked; fi\n",
    )
    .unwrap();
    let pkg = pkg.to_str().unwrap().to_owned();
    let made = fleet.berth(&["overlay", "create", "backend", "--json"]);
    assert_eq!(
        made["vni"].as_u64().map(|v| v >= 1 << 20),
        Some(true),
        "{made}"
    );
    fleet.berth(&["overlay", "create", "walled", "--internal", "--json"]);
    for (code, file, network) in [
        ("serve", "serve.sh", "backend"),
        ("fetch", "fetch.sh", "backend"),
        ("reach", "reach.sh", "backend"),
        ("reach-walled", "reach.sh", "walled"),
    ] {
        fleet.berth(&[
            "code",
            "push",
            code,
            "--runtime",
            "sh",
            "--file",
            file,
            "--dir",
            &pkg,
            "--memory",
            "16m",
            "--network",
            network,
            "--json",
        ]);
    }

    // A server in zone a (host-1 or host-3), a client in zone b (host-2).
    let server = fleet.queue("serve", 1, &["--constraint", "zone==a"]);
    let tasks = fleet.wait_for(&server, &["running"], 60);
    let first_host = tasks[&server[0]]["node"].as_str().unwrap().to_owned();
    let address_of = |task: &str| {
        let network = fleet.berth(&["overlay", "inspect", "backend", "--json"]);
        network["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["task_id"] == task)
            .map(|t| (t["address"].as_str().unwrap().to_owned(), t["node"].clone()))
    };
    let (address, node) = address_of(&server[0]).expect("the server is on the network");
    assert_eq!(node, first_host.as_str());
    let fetch = |fleet: &Fleet| {
        let client = fleet.queue(
            "fetch",
            1,
            &["--constraint", "zone==b", "--payload", &server[0]],
        );
        let tasks = fleet.wait_for(&client, &["complete", "error"], 90);
        let log = fleet.berth_text(&["task", "log", &client[0]]);
        assert_eq!(tasks[&client[0]]["status"], "complete", "{log}");
        assert_eq!(log.trim(), format!("hello from {}", server[0]));
    };
    fetch(&fleet);

    // The server's host is lost: the retry runs on the other zone-a host,
    // at the same address, and is reached by the same name.
    fleet.script(&["kill-host", &first_host]);
    let deadline = Instant::now() + Duration::from_secs(90);
    let moved_to = loop {
        let tasks = fleet.tasks();
        let task = &tasks[&server[0]];
        if task["status"] == "running" && task["node"] != first_host.as_str() {
            break task["node"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "the server never moved: {task}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        address_of(&server[0]),
        Some((address.clone(), Value::String(moved_to)))
    );
    fetch(&fleet);

    // Out of the network: the server's address is reached from a plain
    // overlay, not from an internal one.
    let server_at = fleet.env["BERTH_URL"]
        .trim_start_matches("http://")
        .replace(':', " ");
    for (code, expected) in [("reach", "reached"), ("reach-walled", "blocked")] {
        let task = fleet.queue(code, 1, &["--payload", &server_at]);
        fleet.wait_for(&task, &["complete"], 60);
        assert_eq!(
            fleet.berth_text(&["task", "log", &task[0]]).trim(),
            expected,
            "{code}"
        );
    }

    // Every task ends; the lost host comes back; no host keeps a fleet
    // overlay's links, and the networks can go.
    fleet.berth(&["task", "cancel", &server[0], "--json"]);
    fleet.script(&["revive-host", &first_host]);
    let status: Value = serde_json::from_str(&fleet.script(&["status", "--json"])).unwrap();
    let namespaces: Vec<String> = status["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["namespace"].as_str().unwrap().to_owned())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left: Vec<String> = namespaces
            .iter()
            .flat_map(|ns| {
                let out = Command::new("ip")
                    .args(["netns", "exec", ns, "ip", "-br", "link"])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter_map(|l| l.split_whitespace().next())
                    .filter(|link| link.starts_with("vx-") || link.starts_with("br-"))
                    .map(|link| format!("{ns}: {link}"))
                    .collect::<Vec<_>>()
            })
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fleet overlays left on the hosts: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    fleet.berth(&["overlay", "rm", "backend", "--json"]);
    fleet.berth(&["overlay", "rm", "walled", "--json"]);
    assert_eq!(
        fleet.berth(&["overlay", "ls", "--json"])["networks"],
        Value::Array(Vec::new())
    );
}
