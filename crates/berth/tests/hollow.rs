//! Hollow hosts (`berthd agent --hollow N`, a test tool): fifty simulated
//! hosts in one process join a real `berthd server`, take real placements
//! and report their simulated containers finished; killed, they go down.

mod common;

use common::daemons::{berthd, free_port, Daemon};
use common::{berth_binary, Run};
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const JOIN_TOKEN: &str = "join-token-of-the-hollow-test-012345";
const HOSTS: usize = 50;

struct Env {
    url: String,
    project: String,
    token: String,
    operator: String,
}

impl Env {
    fn berth(&self, args: &[&str]) -> Run {
        Run::from(
            Command::new(berth_binary())
                .args(args)
                .env("BERTH_URL", &self.url)
                .env("BERTH_PROJECT_ID", &self.project)
                .env("BERTH_TOKEN", &self.token)
                .env("BERTH_OPERATOR_TOKEN", &self.operator)
                .env("BERTH_CONFIG", "/nonexistent/berth-config.json")
                .output()
                .unwrap(),
        )
    }

    fn nodes(&self) -> Vec<Value> {
        let run = self.berth(&["node", "ls", "--json"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        run.json().as_array().cloned().unwrap_or_default()
    }

    fn wait_until(&self, what: &str, secs: u64, done: impl Fn(&Env) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !done(self) {
            assert!(Instant::now() < deadline, "{what}: not within {secs} s");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn operator_json(data_dir: &std::path::Path, args: &[&str]) -> Value {
    let run = Run::from(
        Command::new(berthd())
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 0, "berthd {args:?}: {}", run.stderr);
    run.json()
}

#[test]
fn hollow_hosts_join_take_placements_and_go_down_when_killed() {
    let dir = tempfile::TempDir::new().unwrap();
    let join_file = dir.path().join("join.token");
    std::fs::write(&join_file, JOIN_TOKEN).unwrap();
    let server_data = dir.path().join("server");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let _server = Daemon(Some(
        Command::new(berthd())
            .arg("--data-dir")
            .arg(&server_data)
            .args(["server", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--join-token-file")
            .arg(&join_file)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the server never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    let operator = operator_json(&server_data, &["token", "create", "--operator", "--json"])
        ["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let project = operator_json(&server_data, &["project", "create", "hollow", "--json"]);
    let env = Env {
        url: url.clone(),
        project: project["id"].as_str().unwrap().to_owned(),
        token: project["token"].as_str().unwrap().to_owned(),
        operator,
    };

    let hollow_port = free_port();
    let hollow_log = std::fs::File::create(dir.path().join("hollow.log")).unwrap();
    let mut hollow = Daemon(Some(
        Command::new(berthd())
            .arg("--data-dir")
            .arg(dir.path().join("hollow"))
            .args(["agent", "--hollow", &HOSTS.to_string()])
            .args(["--listen", &format!("127.0.0.1:{hollow_port}")])
            .args(["--join", &url, "--name", "sim"])
            .arg("--join-token-file")
            .arg(&join_file)
            .args(["--labels", "zone=a", "--allocatable", "cpus=2,memory=4g"])
            .args(["--hollow-images", "busybox:latest"])
            .stdin(Stdio::null())
            .stdout(hollow_log.try_clone().unwrap())
            .stderr(hollow_log)
            .spawn()
            .unwrap(),
    ));
    env.wait_until("every hollow host ready", 60, |env| {
        let nodes = env.nodes();
        nodes.len() == HOSTS && nodes.iter().all(|n| n["state"] == "ready")
    });
    let nodes = env.nodes();
    assert_eq!(nodes[0]["labels"]["hollow"], "true");
    assert_eq!(nodes[0]["labels"]["zone"], "a");
    assert_eq!(nodes[0]["report"]["allocatable"]["cpu_millis"], 2000);

    let pushed = env.berth(&[
        "code",
        "push",
        "nap",
        "--image",
        "busybox:latest",
        "--command",
        "sh -c 'sleep 1; echo done'",
        "--memory",
        "1g",
    ]);
    assert_eq!(pushed.code, 0, "{}{}", pushed.stdout, pushed.stderr);
    let queued = env.berth(&["task", "queue", "nap", "--count", "300", "--json"]);
    assert_eq!(queued.code, 0, "{}", queued.stderr);
    let ids: Vec<String> = queued.json()["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 300);
    // 4 tasks of 1 GiB fit a 4 GiB host: 200 at once, the rest after.
    let tasks = || -> Vec<Value> {
        let mut all = Vec::new();
        for page in 0..3 {
            let run = env.berth(&[
                "task",
                "ls",
                "--json",
                "--per-page",
                "100",
                "--page",
                &page.to_string(),
            ]);
            all.extend(run.json()["tasks"].as_array().cloned().unwrap_or_default());
        }
        all
    };
    env.wait_until("every task complete", 120, |_| {
        let all = tasks();
        all.len() == 300 && all.iter().all(|t| t["status"] == "complete")
    });
    let hosts_used: BTreeSet<String> = tasks()
        .iter()
        .map(|t| t["node"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        hosts_used.len() >= 40 && hosts_used.iter().all(|h| h.starts_with("sim-h")),
        "spread over the hollow hosts: {hosts_used:?}"
    );
    let log = env.berth(&["task", "log", &ids[0]]);
    assert_eq!(log.stdout, "hollow\n");

    hollow.kill9();
    env.wait_until("the hollow hosts go down", 60, |env| {
        env.nodes().iter().all(|n| n["state"] == "down")
    });
}
