//! End-to-end tests of `berth agent`: the real binary, real shims, real
//! containers, spoken to over its unix socket (and TCP) with plain HTTP.

mod common;

use berth_testkit::http::Endpoint;
use common::{unique, Berth};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A running agent on a private data dir, with the busybox image imported.
struct Agent {
    berth: Berth,
    args: Vec<String>,
    child: Option<Child>,
    api: Endpoint,
}

fn shim_binary() -> PathBuf {
    common::berth_binary().with_file_name("berth-shim")
}

impl Agent {
    fn start(args: &[&str]) -> Agent {
        Agent::start_with(Berth::new(), args)
    }

    /// [`Agent::start`] on a data dir the caller prepared.
    fn start_with(berth: Berth, args: &[&str]) -> Agent {
        berth.import_busybox("busybox");
        let api = Endpoint::unix(&berth.data_dir().join("agent.sock"));
        let mut agent = Agent {
            berth,
            args: args.iter().map(|s| s.to_string()).collect(),
            child: None,
            api,
        };
        agent.spawn();
        agent
    }

    /// Starts the agent process and waits until it answers.
    fn spawn(&mut self) {
        let child = self
            .berth
            .command()
            .arg("agent")
            .arg("--shim")
            .arg(shim_binary())
            .args(&self.args)
            .stdin(Stdio::null())
            .spawn()
            .expect("start berth agent");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = self.api.request("GET", "/v1/ping", &[], b"") {
                if r.status == 200 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "the agent never answered");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9` the agent: containers must not notice.
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL the agent");
            child.wait().expect("reap the agent");
        }
    }

    fn create(&self, body: Value) -> Value {
        let r = self.api.post_json("/v1/containers", &body);
        assert_eq!(r.status, 201, "create {body}: {}", r.text());
        r.json()
    }

    fn inspect(&self, id: &str) -> Value {
        let r = self.api.get(&format!("/v1/containers/{id}"));
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    fn wait(&self, id: &str) -> Value {
        let r = self
            .api
            .get(&format!("/v1/containers/{id}/wait?timeout=60"));
        assert_eq!(r.status, 200, "{}", r.text());
        let view = r.json();
        assert_ne!(view["state"], "running", "{id} did not end: {view}");
        view
    }

    fn events(&self) -> Vec<Value> {
        let r = self.api.get("/v1/events");
        assert_eq!(r.status, 200);
        r.text()
            .lines()
            .map(|l| serde_json::from_str(l).expect("event JSON"))
            .collect()
    }

    /// Force-deletes every container, then checks that nothing is left:
    /// no shim, no container dir, cgroup or mount.
    fn delete_all_and_check_clean(&self) {
        let list = self.api.get("/v1/containers").json();
        for c in list.as_array().expect("list") {
            let id = c["id"].as_str().expect("id");
            let r = self.api.delete(&format!("/v1/containers/{id}?force=true"));
            assert_eq!(r.status, 204, "delete {id}: {}", r.text());
        }
        assert_eq!(self.api.get("/v1/containers").json(), json!([]));
        // A shim exits right after its exit record is durable.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.shims().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let shims = self.shims();
        assert!(shims.is_empty(), "shims left: {shims:?}");
        let states: Vec<_> = std::fs::read_dir(self.berth.data_dir().join("agent/run/containers"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(states.is_empty(), "state dirs left: {states:?}");
        self.berth.assert_clean();
    }

    /// Live shim processes serving this agent's data dir.
    fn shims(&self) -> Vec<u32> {
        self.berth.shims()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // Only reached with containers left when a test failed: stop their
        // shims (the containers die with them) and let gc clean up.
        self.kill9();
        self.berth.kill_leftover_shims();
    }
}

fn sh(script: &str) -> Value {
    json!(["sh", "-c", script])
}

#[test]
fn a_container_runs_end_to_end_through_the_api() {
    let agent = Agent::start(&[]);
    let id = unique("life");
    let view = agent.create(json!({
        "id": id, "image": "busybox",
        "command": sh("echo out; echo err >&2; echo \"$GREETING\"; exit 3"),
        "env": ["GREETING=hello"],
        "labels": {"team": "a"},
        "memory_request": 8 << 20,
        "limits": {"memory": 64 << 20, "pids": 32}
    }));
    assert_eq!(view["id"], id.as_str());
    assert!(
        view["state"] == "running" || view["state"] == "exited",
        "{view}"
    );
    assert_eq!(view["memory_request"], 8 << 20);

    let done = agent.wait(&id);
    assert_eq!(done["state"], "exited");
    assert_eq!(done["result"]["exit_code"], 3);
    assert_eq!(done["labels"]["team"], "a");

    let logs = agent.api.get(&format!("/v1/containers/{id}/logs"));
    assert_eq!(logs.status, 200);
    // stdout and stderr are two pipes: order holds within each stream only.
    let mut lines: Vec<String> = logs.text().lines().map(str::to_owned).collect();
    let stdout: Vec<&String> = lines.iter().filter(|l| *l != "err").collect();
    assert_eq!(stdout, ["out", "hello"], "{lines:?}");
    lines.sort();
    assert_eq!(lines, ["err", "hello", "out"]);
    let tail = agent.api.get(&format!("/v1/containers/{id}/logs?offset=4"));
    assert_eq!(tail.body, logs.body[4..]);
    assert_eq!(tail.header("x-berth-log-offset"), Some("4"));

    let listed = agent.api.get("/v1/containers?label=team=a").json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    let none = agent.api.get("/v1/containers?label=team=b").json();
    assert_eq!(none, json!([]));
    let exited = agent.api.get("/v1/containers?state=exited").json();
    assert_eq!(exited.as_array().map(Vec::len), Some(1));

    let kinds: Vec<String> = agent
        .events()
        .iter()
        .filter(|e| e["container"] == id.as_str())
        .map(|e| e["kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(kinds, ["created", "started", "exited"]);

    let r = agent.api.delete(&format!("/v1/containers/{id}"));
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(agent.api.get(&format!("/v1/containers/{id}")).status, 404);
    let deleted = agent
        .events()
        .iter()
        .any(|e| e["container"] == id.as_str() && e["kind"] == "deleted");
    assert!(deleted);
    agent.delete_all_and_check_clean();
}

/// A 64-character id below an ordinary data dir puts the shim's socket
/// past the 107 bytes a socket address holds: it is bound and reached
/// through its directory's descriptor instead (every call failed before).
#[test]
fn a_container_with_the_longest_id_is_driven_through_its_shim() {
    let agent = Agent::start(&[]);
    let id = format!("{}-{}", unique("long"), "x".repeat(64))
        .chars()
        .take(64)
        .collect::<String>();
    let socket = agent
        .berth
        .data_dir()
        .join("agent/run/containers")
        .join(&id)
        .join("shim.sock");
    assert!(socket.as_os_str().len() > 107, "{}", socket.display());
    agent.create(json!({"id": id, "image": "busybox", "command": sh("sleep 30")}));
    let r = agent
        .api
        .post_json(&format!("/v1/containers/{id}/stop?grace=1"), &json!({}));
    assert!(r.status < 300, "stop: {}", r.text());
    let done = agent.wait(&id);
    assert_eq!(done["state"], "exited", "{done}");
    agent.delete_all_and_check_clean();
}

#[test]
fn logs_follow_streams_until_the_container_ends() {
    let agent = Agent::start(&[]);
    let id = unique("follow");
    agent.create(json!({
        "id": id, "image": "busybox",
        "command": sh("i=1; while [ $i -le 50 ]; do echo line-$i; i=$((i+1)); usleep 20000; done")
    }));
    let r = agent
        .api
        .get(&format!("/v1/containers/{id}/logs?follow=true"));
    let expected: String = (1..=50).map(|i| format!("line-{i}\n")).collect();
    assert_eq!(r.text(), expected);
    assert_eq!(agent.inspect(&id)["state"], "exited");
    agent.delete_all_and_check_clean();
}

#[test]
fn stop_escalates_to_sigkill_after_the_grace_period_and_kill_signals() {
    let agent = Agent::start(&[]);
    let stubborn = unique("stubborn");
    agent.create(json!({"id": stubborn, "image": "busybox",
        "command": sh("trap '' TERM; echo ready; while true; do usleep 10000; done")}));
    let polite = unique("polite");
    agent.create(json!({"id": polite, "image": "busybox",
        "command": sh("trap 'exit 42' USR1; while true; do usleep 10000; done")}));

    // Deleting a running container needs force.
    let r = agent.api.delete(&format!("/v1/containers/{stubborn}"));
    assert_eq!(r.status, 409);
    assert_eq!(r.error_code(), "invalid_state");

    let started = Instant::now();
    let r = agent
        .api
        .post(&format!("/v1/containers/{stubborn}/stop?grace=0.5"), b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let view = r.json();
    assert_eq!(view["state"], "exited");
    assert_eq!(view["result"]["signal"], libc::SIGKILL);
    assert_eq!(view["kill_reason"]["reason"], "stopped");
    assert!(started.elapsed() >= Duration::from_millis(500));

    // Give the shell a moment to install its trap.
    std::thread::sleep(Duration::from_millis(300));
    let r = agent
        .api
        .post(&format!("/v1/containers/{polite}/kill?signal=USR1"), b"");
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(agent.wait(&polite)["result"]["exit_code"], 42);
    let r = agent
        .api
        .post(&format!("/v1/containers/{polite}/kill"), b"");
    assert_eq!(r.status, 409, "killing an exited container: {}", r.text());
    agent.delete_all_and_check_clean();
}

#[test]
fn bad_requests_get_clear_json_errors_and_change_nothing() {
    let token_dir = tempfile::tempdir().expect("tempdir");
    let token_file = token_dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token-for-tests\n").expect("write token");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let agent = Agent::start(&[
        "--listen",
        &listen,
        "--token-file",
        token_file.to_str().unwrap_or_default(),
    ]);
    let api = &agent.api;
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "POST",
            "/v1/containers",
            b"{not json".to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            "/v1/containers",
            br#"{"image":"busybox","comand":["true"]}"#.to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            "/v1/containers",
            br#"{"image":"busybox","limits":{"memroy":1}}"#.to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            "/v1/containers",
            br#"{"image":"busybox","id":"../etc"}"#.to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            "/v1/containers",
            br#"{"image":"nope:1"}"#.to_vec(),
            404,
            "image_not_found",
        ),
        (
            "POST",
            "/v1/containers",
            br#"{"image":"busybox","command":["/no/such"]}"#.to_vec(),
            400,
            "command_not_found",
        ),
        (
            "POST",
            "/v1/containers",
            br#"{"image":"busybox","command":["true"],"limits":{"memory":1024}}"#.to_vec(),
            400,
            "invalid_limit",
        ),
        (
            "POST",
            "/v1/containers",
            br#"{"image":"busybox","command":["true"],"memory_request":999999999999999}"#.to_vec(),
            409,
            "insufficient_resources",
        ),
        (
            "POST",
            "/v1/containers",
            br#"{"image":"busybox","command":["true"],"limits":{"memory":67108864},"memory_request":134217728}"#
                .to_vec(),
            400,
            "invalid_limit",
        ),
        (
            "POST",
            "/v1/containers",
            vec![b' '; 2 << 20],
            413,
            "payload_too_large",
        ),
        (
            "GET",
            "/v1/containers/nope",
            vec![],
            404,
            "container_not_found",
        ),
        (
            "GET",
            "/v1/containers/nope/wait",
            vec![],
            404,
            "container_not_found",
        ),
        (
            "GET",
            "/v1/containers/nope/logs",
            vec![],
            404,
            "container_not_found",
        ),
        (
            "POST",
            "/v1/containers/nope/stop",
            vec![],
            404,
            "container_not_found",
        ),
        (
            "POST",
            "/v1/containers/nope/kill",
            vec![],
            404,
            "container_not_found",
        ),
        (
            "DELETE",
            "/v1/containers/nope",
            vec![],
            404,
            "container_not_found",
        ),
        (
            "GET",
            "/v1/containers?state=bogus",
            vec![],
            400,
            "invalid_argument",
        ),
        (
            "GET",
            "/v1/containers?colour=red",
            vec![],
            400,
            "invalid_argument",
        ),
        (
            "GET",
            "/v1/events?since=minus",
            vec![],
            400,
            "invalid_argument",
        ),
        (
            "POST",
            "/v1/images?reference=x:1",
            b"this is not an archive".to_vec(),
            400,
            "invalid_archive",
        ),
        (
            "POST",
            "/v1/images?reference=Bad%20Name",
            b"x".to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "DELETE",
            "/v1/images/nope:1",
            vec![],
            404,
            "image_not_found",
        ),
        ("GET", "/v1/nothing-here", vec![], 404, "not_found"),
        ("PUT", "/v1/containers", vec![], 405, "invalid_argument"),
    ];
    let images_before = api.get("/v1/images").json();
    let store_before = agent.berth.store_listing();
    for (method, path, body, status, code) in &cases {
        let r = api
            .request(method, path, &[("Content-Type", "application/json")], body)
            .unwrap_or_else(|e| panic!("{method} {path} ({} bytes): {e}", body.len()));
        assert_eq!(r.status, *status, "{method} {path}: {}", r.text());
        assert_eq!(r.error_code(), *code, "{method} {path}: {}", r.text());
        assert!(r.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        // The agent keeps serving after every one.
        assert_eq!(api.get("/v1/ping").status, 200);
    }
    // Nothing was created or imported by any of them.
    // A body that is no archive: refused, and the answer names no path of
    // the agent's host (the upload's temp file).
    let r = api.post("/v1/images?reference=junk:1", b"not an archive");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.error_code(), "invalid_archive");
    let message = r.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let data_dir = agent.berth.data_dir().display().to_string();
    assert!(!message.contains(&data_dir), "a host path in {message:?}");
    assert_eq!(api.get("/v1/containers").json(), json!([]));
    assert_eq!(api.get("/v1/images").json(), images_before);
    assert_eq!(agent.berth.store_listing(), store_before);

    // TCP: no token, a wrong token → 401; the right one works.
    let tcp = Endpoint::Tcp(listen.parse().expect("addr"));
    let r = tcp.get("/v1/node");
    assert_eq!(r.status, 401);
    assert_eq!(r.error_code(), "unauthorized");
    let r = tcp
        .request("GET", "/v1/node", &[("Authorization", "Bearer wrong")], b"")
        .expect("request");
    assert_eq!(r.status, 401);
    let r = tcp
        .request(
            "POST",
            "/v1/containers",
            &[("Authorization", "Basic abc")],
            br#"{"image":"busybox"}"#,
        )
        .expect("request");
    assert_eq!(r.status, 401);
    let r = tcp
        .request(
            "GET",
            "/v1/node",
            &[("Authorization", "Bearer s3cret-token-for-tests")],
            b"",
        )
        .expect("request");
    assert_eq!(r.status, 200, "{}", r.text());
    agent.delete_all_and_check_clean();
}

/// Idle clients on the agent's TCP port (no token, not a byte sent) beyond
/// its connection cap neither exhaust its file descriptors nor stay
/// forever: each is closed after the header timeout, a client with the
/// token is answered, and the unix socket keeps running containers
/// meanwhile (issue 16: the TCP listener had no cap and no timeout).
#[test]
fn idle_tcp_clients_beyond_the_cap_are_closed_and_the_agent_keeps_working() {
    const CAP: usize = 8;
    const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
    let token_dir = tempfile::tempdir().expect("tempdir");
    let token_file = token_dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token-for-tests\n").expect("write token");
    let listen: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let agent = Agent::start(&[
        "--listen",
        &listen.to_string(),
        "--token-file",
        token_file.to_str().unwrap_or_default(),
        "--max-connections",
        &CAP.to_string(),
        "--header-timeout",
        "1s",
    ]);
    let mut idle = berth_testkit::flood::open_idle(listen, 4 * CAP, Duration::from_secs(3));
    assert_eq!(idle.len(), 4 * CAP, "the listen backlog holds these few");

    // An authorised client behind them all is answered once slots free up.
    let authorised = std::thread::spawn(move || {
        Endpoint::Tcp(listen)
            .request(
                "GET",
                "/v1/node",
                &[("Authorization", "Bearer s3cret-token-for-tests")],
                b"",
            )
            .map(|r| r.status)
    });
    // Meanwhile the local API runs a container.
    let created =
        agent.create(json!({"id": unique("flood"), "image": "busybox", "command": sh("echo ok")}));
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(agent.wait(&id)["result"]["exit_code"], 0);

    for client in &mut idle {
        let after = client
            .closed_by_server(Duration::from_secs(30))
            .expect("an idle client was never closed");
        assert!(
            after >= HEADER_TIMEOUT - Duration::from_millis(100),
            "closed after {after:?}, before the header timeout"
        );
    }
    assert_eq!(authorised.join().expect("thread").expect("request"), 200);
    agent.delete_all_and_check_clean();
}

/// Output a full disk kept out of a container's log is not lost silently:
/// the log the agent serves ends with a line saying how many bytes were
/// dropped and why, matching the view's `log_dropped_bytes` (issue 16: a
/// log cut by a full disk carried no marker).
#[test]
fn a_log_cut_by_a_full_disk_ends_with_a_marker_line() {
    let berth = Berth::new();
    // The agent's per-container state (logs included) on a small disk.
    let disk = berth_testkit::tmpfs::SmallTmpfs::mount(&berth.data_dir().join("agent/run"), "8m");
    let mut agent = Agent::start_with(berth, &[]);
    let id = unique("diskfull");
    // Output only once the disk has been filled.
    agent.create(json!({"id": id, "image": "busybox", "command": sh(
        "echo before; sleep 2; i=0; while [ $i -lt 2000 ]; do echo line-$i-of-output-nobody-will-read; i=$((i+1)); done; echo last"
    )}));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !agent
        .api
        .get(&format!("/v1/containers/{id}/logs"))
        .text()
        .contains("before")
    {
        assert!(Instant::now() < deadline, "the container never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    disk.fill();
    // It writes into the full disk and ends; its exit record waits for room.
    std::thread::sleep(Duration::from_secs(4));
    disk.free();
    let view = agent.wait(&id);
    assert_eq!(view["result"]["exit_code"], 0, "{view}");
    let dropped = view["log_dropped_bytes"]
        .as_u64()
        .expect("log_dropped_bytes");
    assert!(dropped > 10_000, "{view}");
    let log = agent.api.get(&format!("/v1/containers/{id}/logs")).text();
    let last = log.lines().last().unwrap_or_default();
    assert_eq!(
        last,
        format!(
            "[berth: {dropped} bytes of output were dropped: the log could not be written \
             (No space left on device (os error 28))]"
        ),
        "{log}"
    );
    assert!(log.starts_with("before\n"), "{log}");

    let r = agent.api.delete(&format!("/v1/containers/{id}?force=true"));
    assert_eq!(r.status, 204, "{}", r.text());
    agent.kill9();
    disk.unmount();
    agent.berth.assert_clean();
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[test]
fn images_are_uploaded_listed_and_removed() {
    let agent = Agent::start(&[]);
    let tar = std::fs::read(common::busybox_tarball(agent.berth.dir.path())).expect("read tarball");
    let r = agent
        .api
        .request(
            "POST",
            "/v1/images?reference=stack:v2",
            &[("Content-Type", "application/octet-stream")],
            &tar,
        )
        .expect("upload");
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["reference"], "stack:v2");
    let list = agent.api.get("/v1/images").json();
    let refs: Vec<&str> = list
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|i| i["reference"].as_str())
        .collect();
    assert_eq!(refs, ["busybox:latest", "stack:v2"]);
    let node = agent.api.get("/v1/node").json();
    assert_eq!(node["images"], json!(["busybox:latest", "stack:v2"]));
    // The uploaded image runs.
    let id = unique("img");
    agent.create(json!({"id": id, "image": "stack:v2", "command": ["true"]}));
    assert_eq!(agent.wait(&id)["result"]["exit_code"], 0);
    // Its container holds the image until it is deleted.
    let r = agent.api.delete("/v1/images/stack:v2");
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.error_code(), "image_in_use");
    assert_eq!(
        agent.api.delete(&format!("/v1/containers/{id}")).status,
        204
    );
    let r = agent.api.delete("/v1/images/stack:v2");
    assert_eq!(r.status, 204, "{}", r.text());
    let uploads: Vec<_> = std::fs::read_dir(agent.berth.data_dir().join("agent/uploads"))
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(uploads.is_empty(), "upload temp files left");
    agent.delete_all_and_check_clean();
}

#[test]
fn node_reports_capacity_allocation_usage_and_labels() {
    let agent = Agent::start(&["--label", "zone=z1", "--memory-ceiling", "1g"]);
    for request in [16u64 << 20, 32 << 20] {
        agent.create(json!({"image": "busybox", "command": ["sleep", "1000"],
            "memory_request": request, "limits": {"cpus": 500}}));
    }
    let node = agent.api.get("/v1/node").json();
    assert_eq!(node["labels"]["zone"], "z1");
    assert!(
        node["capacity"]["cpus"].as_u64().is_some_and(|c| c >= 1),
        "{node}"
    );
    assert!(node["capacity"]["memory_bytes"]
        .as_u64()
        .is_some_and(|m| m > 1 << 30));
    assert_eq!(node["capacity"]["memory_ceiling_bytes"], 1u64 << 30);
    assert!(node["capacity"]["disk_bytes"]
        .as_u64()
        .is_some_and(|d| d > 0));
    assert!(node["capacity"]["pids"].as_u64().is_some_and(|p| p > 0));
    assert_eq!(node["allocated"]["containers"], 2);
    assert_eq!(node["allocated"]["memory_request_bytes"], 48u64 << 20);
    assert_eq!(node["allocated"]["cpus_millis"], 1000);
    assert_eq!(node["used"]["containers_running"], 2);
    assert!(node["used"]["metrics"]["memory_usage_bytes"]
        .as_u64()
        .is_some_and(|u| u > 0));
    // Requests beyond the ceiling are refused until room is made.
    let r = agent.api.post_json(
        "/v1/containers",
        &json!({"image": "busybox", "command": ["true"], "memory_request": 1000u64 << 20}),
    );
    assert_eq!(r.status, 409);
    assert_eq!(r.error_code(), "insufficient_resources");
    agent.delete_all_and_check_clean();
}

#[test]
fn the_api_is_described_by_its_openapi_document() {
    let agent = Agent::start(&[]);
    let doc = agent.api.get("/v1/openapi.json").json();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    for path in [
        "/v1/containers",
        "/v1/containers/{id}",
        "/v1/containers/{id}/wait",
        "/v1/containers/{id}/logs",
        "/v1/containers/{id}/stop",
        "/v1/containers/{id}/kill",
        "/v1/containers/{id}/metrics",
        "/v1/images",
        "/v1/images/{reference}",
        "/v1/images/prune",
        "/v1/node",
        "/v1/events",
        "/metrics",
        "/v1/ping",
        "/v1/openapi.json",
    ] {
        assert!(paths.contains_key(path), "{path} is not documented");
    }
    // And every documented path is served (not the 404 fallback).
    for path in paths.keys() {
        let concrete = path.replace("{id}", "x").replace("{reference}", "x:1");
        for (method, _) in paths[path].as_object().expect("ops") {
            let r = agent
                .api
                .request(
                    &method.to_uppercase(),
                    &format!("{concrete}?reference=x:1"),
                    &[],
                    b"",
                )
                .expect("request");
            assert!(
                r.status != 404 || r.error_code() != "not_found",
                "{method} {path} is documented but not routed"
            );
            assert_ne!(
                r.status, 405,
                "{method} {path} is documented but not routed"
            );
        }
    }
}

/// Checks one real answer against the document: its status must be one
/// the route documents, and a JSON body (or each line of an NDJSON one)
/// must match the schema documented for that status. Object schemas are
/// made strict (`additionalProperties: false`), so a field the agent sends
/// that the contract does not name fails too.
fn check_against_document(
    doc: &Value,
    method: &str,
    route: &str,
    r: &berth_testkit::http::Response,
) {
    let operation = &doc["paths"][route][method];
    assert!(operation.is_object(), "{method} {route} is not documented");
    let documented = &operation["responses"][r.status.to_string()];
    assert!(
        documented.is_object(),
        "{method} {route} answered {} which it does not document: {}",
        r.status,
        r.text()
    );
    let content = &documented["content"];
    let Some((content_type, media)) = content.as_object().and_then(|c| c.iter().next()) else {
        assert!(
            r.body.is_empty(),
            "{method} {route}: undocumented body {}",
            r.text()
        );
        return;
    };
    let answered = r.header("content-type").unwrap_or_default();
    assert!(
        answered.starts_with(content_type.as_str()),
        "{method} {route}: content type {answered:?}, documented {content_type:?}"
    );
    if media.get("schema").is_none() {
        return;
    }
    let values: Vec<Value> = if content_type == "application/x-ndjson" {
        r.text()
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).expect("NDJSON line"))
            .collect()
    } else {
        vec![r.json()]
    };
    for value in values {
        let errors = schema_errors(doc, method, route, r.status, &value);
        assert!(
            errors.is_empty(),
            "{method} {route} {}: {value} does not match: {errors:?}",
            r.status
        );
    }
}

/// Where `value` departs from the schema documented for this answer.
fn schema_errors(
    doc: &Value,
    method: &str,
    route: &str,
    status: u16,
    value: &Value,
) -> Vec<String> {
    let content = &doc["paths"][route][method]["responses"][status.to_string()]["content"];
    let media = content
        .as_object()
        .and_then(|c| c.values().next())
        .expect("documented content");
    let mut components = doc["components"].clone();
    make_strict(&mut components);
    let root = json!({"$ref": "#/$defs/answer", "$defs": {"answer": media["schema"]}, "components": components});
    let validator = jsonschema::validator_for(&root).expect("the document's schema compiles");
    validator
        .iter_errors(value)
        .map(|e| e.to_string())
        .collect()
}

fn make_strict(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if map.get("type") == Some(&json!("object")) && map.contains_key("properties") {
                map.insert("additionalProperties".into(), json!(false));
            }
            for value in map.values_mut() {
                make_strict(value);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(make_strict),
        _ => {}
    }
}

#[test]
fn real_answers_match_the_openapi_document() {
    let agent = Agent::start(&[]);
    let doc = agent.api.get("/v1/openapi.json").json();
    let api = &agent.api;
    let check = |method: &str, route: &str, r: berth_testkit::http::Response| {
        check_against_document(&doc, method, route, &r);
        r
    };
    check("get", "/v1/ping", api.get("/v1/ping"));
    check("get", "/v1/node", api.get("/v1/node"));
    check("get", "/v1/images", api.get("/v1/images"));
    // A container with every kind of field: labels, limits, inline files.
    let body = json!({
        "id": unique("openapi"), "image": "busybox", "command": ["sh", "-c", "echo out; sleep 30"],
        "labels": {"berth.test": "openapi"}, "limits": {"memory": 64u64 << 20, "pids": 32},
        "files": [{"path": "/etc/greeting", "content": "hi"}],
    });
    let created = check(
        "post",
        "/v1/containers",
        api.post_json("/v1/containers", &body),
    )
    .json();
    let id = created["id"].as_str().expect("id").to_owned();
    // The check has teeth: an undocumented field, or a wrong type, fails it.
    let mut extra = created.clone();
    extra["surprise"] = json!(1);
    assert!(!schema_errors(&doc, "post", "/v1/containers", 201, &extra).is_empty());
    let mut wrong = created.clone();
    wrong["state"] = json!("sleeping");
    assert!(!schema_errors(&doc, "post", "/v1/containers", 201, &wrong).is_empty());
    check("get", "/v1/containers", api.get("/v1/containers"));
    check(
        "get",
        "/v1/containers/{id}",
        api.get(&format!("/v1/containers/{id}")),
    );
    check(
        "get",
        "/v1/containers/{id}/metrics",
        api.get(&format!("/v1/containers/{id}/metrics")),
    );
    check(
        "post",
        "/v1/containers/{id}/stop",
        api.post(&format!("/v1/containers/{id}/stop?grace=5"), b""),
    );
    check(
        "get",
        "/v1/containers/{id}/wait",
        api.get(&format!("/v1/containers/{id}/wait?timeout=5")),
    );
    check(
        "get",
        "/v1/containers/{id}/logs",
        api.get(&format!("/v1/containers/{id}/logs")),
    );
    check("get", "/v1/events", api.get("/v1/events"));
    // Errors are documented with their statuses and bodies too.
    check(
        "get",
        "/v1/containers/{id}",
        api.get("/v1/containers/nosuch"),
    );
    check(
        "post",
        "/v1/containers/{id}/kill",
        api.post(&format!("/v1/containers/{id}/kill"), b""),
    );
    check(
        "post",
        "/v1/containers",
        api.post_json(
            "/v1/containers",
            &json!({"image": "nosuch", "command": ["true"]}),
        ),
    );
    check(
        "post",
        "/v1/containers",
        api.post_json("/v1/containers", &json!({"image": "busybox", "bogus": 1})),
    );
    check(
        "delete",
        "/v1/containers/{id}",
        api.delete(&format!("/v1/containers/{id}")),
    );
    check(
        "delete",
        "/v1/images/{reference}",
        api.delete("/v1/images/nosuch:1"),
    );
    agent.delete_all_and_check_clean();
}

#[test]
fn a_killed_agent_loses_nothing_and_kills_nothing() {
    let mut agent = Agent::start(&[]);
    // 30 long sleepers, 10 that exit with known codes and 10 that write
    // numbered lines, both of which finish while the agent is down.
    let sleepers: Vec<String> = (0..30).map(|i| format!("{}-s{i}", unique("rs"))).collect();
    let quitters: Vec<String> = (0..10).map(|i| format!("{}-q{i}", unique("rs"))).collect();
    let writers: Vec<String> = (0..10).map(|i| format!("{}-w{i}", unique("rs"))).collect();
    let mut pids = Vec::new();
    for id in &sleepers {
        let view =
            agent.create(json!({"id": id, "image": "busybox", "command": ["sleep", "1000"]}));
        pids.push(view["pid"].as_i64().expect("pid") as i32);
    }
    for (i, id) in quitters.iter().enumerate() {
        agent.create(json!({"id": id, "image": "busybox", "command": sh(&format!("sleep 2; exit {}", 10 + i))}));
    }
    const LINES: usize = 300;
    for id in &writers {
        agent.create(json!({"id": id, "image": "busybox", "command": sh(&format!(
            "i=1; while [ $i -le {LINES} ]; do echo line-$i; i=$((i+1)); usleep 5000; done; exit 7"
        ))}));
    }
    let early = quitters[0].clone();
    assert_eq!(
        agent.inspect(&early)["state"],
        "running",
        "the downtime must come before the quitters end"
    );
    agent.kill9();

    // While the agent is down, the quitters and writers finish on their own.
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in quitters.iter().chain(&writers) {
        let exit = agent
            .berth
            .data_dir()
            .join(format!("agent/run/containers/{id}/exit.json"));
        while !exit.exists() {
            assert!(Instant::now() < deadline, "{id} never finished");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    agent.spawn();

    let list = agent.api.get("/v1/containers").json();
    assert_eq!(list.as_array().map(Vec::len), Some(50), "{list}");
    for (id, pid) in sleepers.iter().zip(&pids) {
        let view = agent.inspect(id);
        assert_eq!(view["state"], "running", "{id}: {view}");
        assert_eq!(view["pid"], *pid, "{id} is not the same process");
        assert!(Path::new(&format!("/proc/{pid}")).exists(), "{id} died");
    }
    for (i, id) in quitters.iter().enumerate() {
        // A wait re-issued after the restart answers with the right status.
        let view = agent.wait(id);
        assert_eq!(view["state"], "exited");
        assert_eq!(view["result"]["exit_code"], 10 + i as i64, "{id}: {view}");
    }
    let expected: String = (1..=LINES).map(|i| format!("line-{i}\n")).collect();
    for id in &writers {
        assert_eq!(agent.wait(id)["result"]["exit_code"], 7);
        let logs = agent.api.get(&format!("/v1/containers/{id}/logs"));
        assert_eq!(
            logs.text(),
            expected,
            "{id}'s log is not complete and in order"
        );
    }
    // Every container's events: created and started once; exited once
    // for those that ended, none for those still running.
    let events = agent.events();
    for id in sleepers.iter().chain(&quitters).chain(&writers) {
        let count = |kind: &str| {
            events
                .iter()
                .filter(|e| e["container"] == id.as_str() && e["kind"] == kind)
                .count()
        };
        assert_eq!(count("created"), 1, "{id}");
        assert_eq!(count("started"), 1, "{id}");
        let ended = !sleepers.contains(id);
        assert_eq!(count("exited"), usize::from(ended), "{id}");
    }
    // The new agent controls the old containers (`sleep` as pid 1 ignores
    // SIGTERM, so stop ends with SIGKILL).
    let r = agent.api.post(
        &format!("/v1/containers/{}/stop?grace=0.2", sleepers[0]),
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "exited");
    assert_eq!(r.json()["kill_reason"]["reason"], "stopped");
    agent.delete_all_and_check_clean();
}

#[test]
fn a_dead_shim_is_noticed_and_cleaned_up() {
    let agent = Agent::start(&[]);
    let id = unique("lost");
    let view = agent.create(json!({"id": id, "image": "busybox", "command": ["sleep", "1000"]}));
    let shim = view["shim_pid"].as_i64().expect("shim pid") as i32;
    let pid = view["pid"].as_i64().expect("pid") as i32;
    unsafe { libc::kill(shim, libc::SIGKILL) };
    let view = agent.wait(&id);
    assert_eq!(view["state"], "failed", "{view}");
    assert_eq!(view["error"]["code"], "host_io");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() {
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_or(true, |s| s.contains(") Z "));
        if zombie {
            break;
        }
        assert!(Instant::now() < deadline, "the container outlived its shim");
        std::thread::sleep(Duration::from_millis(20));
    }
    agent.delete_all_and_check_clean();
}

#[test]
fn memory_pressure_kills_only_the_container_above_its_request() {
    let agent = Agent::start(&[
        "--memory-ceiling",
        "256m",
        "--memory-pressure",
        "0.5",
        "--memory-interval",
        "100ms",
    ]);
    let calm: Vec<String> = (0..2).map(|i| format!("{}-{i}", unique("calm"))).collect();
    for id in &calm {
        // Each holds 24 MiB, within its 32 MiB request.
        agent.create(json!({"id": id, "image": "busybox",
            "command": sh("dd if=/dev/zero bs=24M count=1 | sleep 1000"),
            "memory_request": 32 << 20, "limits": {"memory": 64 << 20}}));
    }
    let greedy = unique("greedy");
    agent.create(json!({"id": greedy, "image": "busybox",
        "command": sh("sleep 0.5; dd if=/dev/zero bs=160M count=1 | sleep 1000"),
        "memory_request": 32 << 20, "limits": {"memory": 512 << 20}}));
    let view = agent.wait(&greedy);
    assert_eq!(view["result"]["signal"], libc::SIGKILL, "{view}");
    assert_eq!(view["kill_reason"]["reason"], "memory_pressure", "{view}");
    let message = view["kill_reason"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("above its request"), "{message}");
    for id in &calm {
        let v = agent.inspect(id);
        assert_eq!(v["state"], "running", "{id}: {v}");
        assert!(v.get("kill_reason").is_none(), "{v}");
    }
    let killed: Vec<Value> = agent
        .events()
        .into_iter()
        .filter(|e| e["kind"] == "memory_killed")
        .collect();
    assert_eq!(killed.len(), 1, "{killed:?}");
    assert_eq!(killed[0]["container"], greedy.as_str());
    agent.delete_all_and_check_clean();
}

#[test]
fn metrics_report_rss_and_cache_honestly() {
    const ANON_MIB: u64 = 48;
    const FILE_MIB: u64 = 32;
    let agent = Agent::start(&[]);
    let data = agent.berth.dir.path().join("volume");
    std::fs::create_dir(&data).expect("mkdir");
    let file = data.join("data.bin");
    std::fs::write(&file, vec![7u8; (FILE_MIB << 20) as usize]).expect("write file");
    evict_from_page_cache(&file);
    let id = unique("metrics");
    agent.create(json!({"id": id, "image": "busybox",
        "mounts": [{"source": data, "destination": "/data", "read_only": true}],
        "command": sh(&format!("cat /data/data.bin >/dev/null && dd if=/dev/zero bs={ANON_MIB}M count=1 | sleep 1000"))}));
    let mib = |v: &Value| v.as_u64().expect("a number") as f64 / (1u64 << 20) as f64;
    let within = |got: f64, want: u64| (got - want as f64).abs() <= want as f64 * 0.10;
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let m = agent
            .api
            .get(&format!("/v1/containers/{id}/metrics"))
            .json();
        if within(mib(&m["memory_rss_bytes"]), ANON_MIB)
            && within(mib(&m["memory_cache_bytes"]), FILE_MIB)
        {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "rss/cache never settled near {ANON_MIB}/{FILE_MIB} MiB: {m}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        mib(&metrics["memory_usage_bytes"]) >= (ANON_MIB + FILE_MIB) as f64 * 0.9,
        "{metrics}"
    );
    assert!(metrics["memory_working_set_bytes"].as_u64() <= metrics["memory_usage_bytes"].as_u64());
    assert!(metrics["pids_current"].as_u64().is_some() || metrics["pids_current"].is_null());
    // The same figures in the Prometheus exposition.
    let text = agent.api.get("/metrics").text();
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("berth_container_memory_rss_bytes{")
                && l.contains(&format!("id=\"{id}\""))
        })
        .unwrap_or_else(|| panic!("no rss line for {id} in:\n{text}"));
    let value: f64 = line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("a value");
    assert!(within(value / (1u64 << 20) as f64, ANON_MIB), "{line}");
    assert!(text.contains("# TYPE berth_node_cpu_usage_seconds_total counter"));
    assert!(text.contains("berth_node_containers_running 1"));
    agent.delete_all_and_check_clean();
}

/// Makes sure the container's read is what brings the file into memory
/// (and so is charged to the container).
fn evict_from_page_cache(path: &Path) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).expect("open");
    f.sync_all().expect("fsync");
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise");
}

#[test]
fn events_can_be_followed_live() {
    let agent = Agent::start(&[]);
    let since = agent
        .events()
        .last()
        .map_or(0, |e| e["seq"].as_u64().unwrap_or(0));
    let api = agent.api.clone();
    // A follower with a short life: it reads until it has seen an exit.
    let follower = std::thread::spawn(move || {
        let mut stream = match &api {
            berth_testkit::http::Endpoint::Unix(p) => {
                std::os::unix::net::UnixStream::connect(p).expect("connect")
            }
            _ => unreachable!(),
        };
        use std::io::{BufRead, Write};
        write!(
            stream,
            "GET /v1/events?follow=true&since={since} HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        .expect("send");
        let mut reader = std::io::BufReader::new(stream);
        let mut kinds = vec![];
        let mut line = String::new();
        while reader.read_line(&mut line).expect("read") > 0 {
            if let Ok(event) = serde_json::from_str::<Value>(line.trim()) {
                let kind = event["kind"].as_str().unwrap_or_default().to_owned();
                kinds.push(kind.clone());
                if kind == "exited" {
                    break;
                }
            }
            line.clear();
        }
        kinds
    });
    std::thread::sleep(Duration::from_millis(200));
    let id = unique("ev");
    agent.create(json!({"id": id, "image": "busybox", "command": ["true"]}));
    let kinds = follower.join().expect("follower");
    assert_eq!(kinds, ["created", "started", "exited"]);
    agent.delete_all_and_check_clean();
}

/// Sends a request on a raw connection and hangs up without reading.
fn send_and_hang_up(api: &Endpoint, request: &str) {
    use std::io::Write;
    let Endpoint::Unix(path) = api else {
        panic!("unix endpoint expected")
    };
    let mut stream = std::os::unix::net::UnixStream::connect(path).expect("connect");
    stream.write_all(request.as_bytes()).expect("send");
    std::thread::sleep(Duration::from_millis(50));
    drop(stream);
}

#[test]
fn requests_abandoned_by_their_caller_still_finish() {
    let agent = Agent::start(&[]);
    // A create whose caller hangs up at once still ends with a managed
    // container.
    let id = unique("orphan");
    let body = json!({"id": id, "image": "busybox", "command": sh("trap '' TERM; while true; do usleep 10000; done")}).to_string();
    send_and_hang_up(
        &agent.api,
        &format!(
            "POST /v1/containers HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = agent.api.get(&format!("/v1/containers/{id}"));
        if r.status == 200 && r.json()["state"] == "running" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the abandoned create never finished: {}",
            r.text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A stop whose caller hangs up during the grace period still ends in
    // SIGKILL.
    send_and_hang_up(
        &agent.api,
        &format!("POST /v1/containers/{id}/stop?grace=0.5 HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"),
    );
    let view = agent.wait(&id);
    assert_eq!(view["result"]["signal"], libc::SIGKILL, "{view}");
    agent.delete_all_and_check_clean();
}

#[test]
fn a_reused_id_gets_fresh_events() {
    let agent = Agent::start(&[]);
    let id = unique("again");
    for code in [0, 3] {
        agent.create(json!({"id": id, "image": "busybox", "command": sh(&format!("exit {code}"))}));
        assert_eq!(agent.wait(&id)["result"]["exit_code"], code);
        assert_eq!(
            agent.api.delete(&format!("/v1/containers/{id}")).status,
            204
        );
    }
    let kinds: Vec<String> = agent
        .events()
        .iter()
        .filter(|e| e["container"] == id.as_str())
        .map(|e| e["kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    let once = ["created", "started", "exited", "deleted"];
    assert_eq!(kinds, [once, once].concat());
    agent.delete_all_and_check_clean();
}

#[test]
fn one_agent_per_data_dir_and_sigterm_leaves_containers_running() {
    let mut agent = Agent::start(&[]);
    let out = agent
        .berth
        .command()
        .args(["agent", "--shim"])
        .arg(shim_binary())
        .output()
        .expect("second agent");
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("another agent is running"), "{stderr}");
    assert_eq!(agent.api.get("/v1/ping").status, 200);

    let id = unique("survivor");
    let pid = agent.create(json!({"id": id, "image": "busybox", "command": ["sleep", "1000"]}))
        ["pid"]
        .as_i64()
        .expect("pid");
    // A follower that never hangs up must not hold the shutdown.
    let Endpoint::Unix(socket) = agent.api.clone() else {
        panic!("unix endpoint expected")
    };
    let mut follower = std::os::unix::net::UnixStream::connect(socket).expect("connect");
    use std::io::Write;
    follower
        .write_all(b"GET /v1/events?follow=true HTTP/1.1\r\nHost: a\r\n\r\n")
        .expect("send");
    std::thread::sleep(Duration::from_millis(200));
    let mut child = agent.child.take().expect("agent process");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the agent ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the container died with the agent"
    );
    drop(follower);
    agent.spawn();
    assert_eq!(agent.inspect(&id)["state"], "running");
    agent.delete_all_and_check_clean();
}

/// A SIGTERM the moment the agent's socket appears, before it has answered
/// anything, still takes the graceful path: the stop handlers are in place
/// before the socket is bound, so the agent exits 0 and removes its socket.
#[test]
fn sigterm_as_soon_as_the_socket_appears_still_stops_the_agent_cleanly() {
    let berth = Berth::new();
    let socket = berth.data_dir().join("agent.sock");
    for round in 1..=3 {
        let child = berth
            .command()
            .args(["agent", "--shim"])
            .arg(shim_binary())
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start berth agent");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "round {round}: no socket");
            std::hint::spin_loop();
        }
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let out = child.wait_with_output().expect("reap the agent");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "round {round}: {stderr}");
        assert!(
            stderr.contains("berth agent: stopped"),
            "round {round}: {stderr}"
        );
        assert!(!socket.exists(), "round {round}: the socket stays");
    }
    berth.assert_clean();
}

fn fetch(port: u16) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text)
}

fn fetch_until_served(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match fetch(port) {
            Ok(text) if text.contains("served") => return text,
            other if Instant::now() >= deadline => panic!("port {port} never served: {other:?}"),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// A container on the agent's bridge serves through its published port,
/// keeps serving through a `kill -9` and restart of the agent, and is
/// taken off the network when it ends.
#[test]
fn a_bridged_container_keeps_its_published_port_through_an_agent_restart() {
    let mut agent = Agent::start(&[]);
    let port = free_port();
    let id = unique("web");
    let serve = "while true; do echo -e 'HTTP/1.0 200 OK\\r\\n\\r\\nserved' | nc -l -p 8080; done";
    let view = agent.create(json!({
        "id": id, "image": "busybox", "command": sh(serve),
        "network": "bridge",
        "ports": [{"host_port": port, "container_port": 8080}],
    }));
    assert_eq!(view["state"], "running", "{view}");
    fetch_until_served(port);

    // A second container in the first one's namespace reaches it on
    // localhost.
    let guest = unique("guest");
    agent.create(json!({
        "id": guest, "image": "busybox",
        "command": sh("wget -qO- http://127.0.0.1:8080/"),
        "network": format!("container:{id}"),
    }));
    let done = agent.wait(&guest);
    assert_eq!(done["result"]["exit_code"], 0, "{done}");
    let logs = agent
        .api
        .get(&format!("/v1/containers/{guest}/logs"))
        .text();
    assert!(logs.contains("served"), "{logs}");

    // Bad network input: refused, nothing made.
    let r = agent.api.post_json(
        "/v1/containers",
        &json!({"image": "busybox", "command": sh("true"), "network": "bridge",
                "ports": [{"host_port": port, "container_port": 80}]}),
    );
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "network_conflict");
    let r = agent.api.post_json(
        "/v1/containers",
        &json!({"image": "busybox", "command": sh("true"), "network": "no-such-net"}),
    );
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "network_not_found");

    agent.kill9();
    fetch_until_served(port);
    agent.spawn();
    fetch_until_served(port);

    let attachments = agent.berth.data_dir().join("network/attachments");
    assert_eq!(std::fs::read_dir(&attachments).unwrap().count(), 1);
    agent.delete_all_and_check_clean();
    assert_eq!(std::fs::read_dir(&attachments).unwrap().count(), 0);
    assert!(fetch(port).is_err(), "the port is still forwarded");
}
