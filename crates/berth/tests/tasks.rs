//! End-to-end tests of task execution: the real `berth up` (server, local
//! agent, SQLite, default stack), real shims and containers, spoken to over
//! the IronWorker v2 API with plain HTTP.

mod common;

use berth_testkit::http::{Endpoint, Response};
use common::Berth;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `berth up` on a private data dir, port and client config.
struct Up {
    berth: Berth,
    child: Option<Child>,
    port: u16,
    extra: Vec<String>,
    project: String,
    token: String,
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

impl Up {
    /// An `Up` whose process is not started yet.
    fn new(extra: &[&str]) -> Up {
        Up {
            berth: Berth::new(),
            child: None,
            port: free_port(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            project: String::new(),
            token: String::new(),
        }
    }

    fn start(extra: &[&str]) -> Up {
        let mut up = Up::new(extra);
        up.spawn();
        let config: Value = serde_json::from_slice(
            &std::fs::read(up.config_path()).expect("berth up writes the client config"),
        )
        .expect("client config is JSON");
        up.project = config["project_id"]
            .as_str()
            .expect("project_id")
            .to_owned();
        up.token = config["token"].as_str().expect("token").to_owned();
        up
    }

    fn home(&self) -> PathBuf {
        self.berth.dir.path().join("home")
    }

    fn config_path(&self) -> PathBuf {
        self.home().join(".config/berth/config.json")
    }

    /// Starts berth up and waits until it answers.
    fn spawn(&mut self) {
        self.launch();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self
                .endpoint()
                .request("GET", "/2/projects/x/tasks", &[], b"")
            {
                if r.status == 401 || r.status == 403 || r.status == 200 {
                    // berth up answers only once its agent's socket is bound.
                    let socket = self.berth.data_dir().join("agent.sock");
                    assert!(
                        socket.exists(),
                        "berth up answers but {} does not exist yet",
                        socket.display()
                    );
                    return;
                }
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("berth up exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "berth up never answered: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the berth up process without waiting for it.
    fn launch(&mut self) {
        std::fs::create_dir_all(self.home()).expect("home");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.berth.dir.path().join("up.log"))
            .expect("log");
        let child = self
            .berth
            .command()
            .env("HOME", self.home())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("BERTH_URL")
            .env_remove("BERTH_TOKEN")
            .env_remove("BERTH_PROJECT_ID")
            .args(["up", "--listen", &format!("127.0.0.1:{}", self.port)])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start berth up");
        self.child = Some(child);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.berth.dir.path().join("up.log")).unwrap_or_default()
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL berth up");
            child.wait().expect("reap berth up");
        }
    }

    /// SIGTERMs berth up and checks that it took the graceful path.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            let status = child.wait().expect("reap berth up");
            assert_eq!(
                status.code(),
                Some(0),
                "berth up on SIGTERM: {}",
                self.log()
            );
        }
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::Tcp(([127, 0, 0, 1], self.port).into())
    }

    fn agent(&self) -> Endpoint {
        Endpoint::unix(&self.berth.data_dir().join("agent.sock"))
    }

    fn call(&self, method: &str, path: &str, content_type: &str, body: &[u8]) -> Response {
        let auth = format!("OAuth {}", self.token);
        let path = format!("/2/projects/{}{path}", self.project);
        self.endpoint()
            .request(
                method,
                &path,
                &[("Authorization", &auth), ("Content-Type", content_type)],
                body,
            )
            .expect("request")
    }

    fn post(&self, path: &str, body: &Value) -> Value {
        let r = self.call(
            "POST",
            path,
            "application/json",
            body.to_string().as_bytes(),
        );
        assert!(
            r.status < 300,
            "POST {path} {body}: {} {}",
            r.status,
            r.text()
        );
        r.json()
    }

    fn get(&self, path: &str) -> Value {
        let r = self.call("GET", path, "application/json", b"");
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        r.json()
    }

    /// Uploads a code in the multipart form clients use.
    fn push_code(&self, data: &Value, zip: Option<&[u8]>) -> Value {
        let boundary = "berth-test-boundary-7f3a";
        let mut body = Vec::new();
        write!(
            body,
            "--{boundary}\r\nContent-Disposition: form-data; name=\"data\"\r\nContent-Type: application/json\r\n\r\n{data}\r\n"
        )
        .unwrap();
        if let Some(zip) = zip {
            write!(
                body,
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"code.zip\"\r\nContent-Type: application/zip\r\n\r\n"
            )
            .unwrap();
            body.extend_from_slice(zip);
            body.extend_from_slice(b"\r\n");
        }
        write!(body, "--{boundary}--\r\n").unwrap();
        let content_type = format!("multipart/form-data; boundary={boundary}");
        let r = self.call("POST", "/codes", &content_type, &body);
        assert_eq!(r.status, 200, "code upload: {}", r.text());
        r.json()
    }

    fn queue(&self, tasks: Vec<Value>) -> Vec<String> {
        let answer = self.post("/tasks", &json!({ "tasks": tasks }));
        answer["tasks"]
            .as_array()
            .expect("tasks")
            .iter()
            .map(|t| t["id"].as_str().expect("id").to_owned())
            .collect()
    }

    fn task(&self, id: &str) -> Value {
        self.get(&format!("/tasks/{id}"))
    }

    /// Polls until the task has one of `statuses`.
    fn wait_for(&self, id: &str, statuses: &[&str], limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let task = self.task(id);
            if statuses.contains(&task["status"].as_str().unwrap_or_default()) {
                return task;
            }
            assert!(
                Instant::now() < deadline,
                "task {id} never reached {statuses:?}: {task}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_of(&self, id: &str) -> String {
        let r = self.call("GET", &format!("/tasks/{id}/log"), "text/plain", b"");
        assert_eq!(r.status, 200, "log: {}", r.text());
        r.text()
    }

    /// Stops berth up, then checks that no container, shim, cgroup or
    /// mount of it is left.
    fn stop_and_check_clean(mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = self.agent().get("/v1/containers").json();
            if left.as_array().is_some_and(|l| l.is_empty()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "containers left on the agent: {left}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop();
        let states: Vec<_> = std::fs::read_dir(self.berth.data_dir().join("agent/run/containers"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(states.is_empty(), "state dirs left: {states:?}");
        let run = self.berth.data_dir().join("agent/run");
        assert!(
            berth_testkit::mounts_under(&run).is_empty(),
            "the state tmpfs is still mounted; it holds {:?}\n{}",
            walk(&run),
            self.log()
        );
        self.berth.assert_clean();
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        self.kill9();
        // Containers a failed test left: force them out through a fresh
        // agent so that no shim or cgroup outlives the test.
        if self.berth.data_dir().join("agent/run/containers").exists() {
            let _ = Command::new(env!("CARGO_BIN_EXE_berth"))
                .arg("--data-dir")
                .arg(self.berth.data_dir())
                .arg("--cgroup-parent")
                .arg(&self.berth.cgroup_parent)
                .arg("gc")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn zip_of(files: &[(&str, &str)]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, content) in files {
        writer
            .start_file(*name, zip::write::SimpleFileOptions::default())
            .expect("zip entry");
        writer.write_all(content.as_bytes()).expect("zip write");
    }
    writer.finish().expect("zip").into_inner()
}

#[test]
fn classic_shell_package_reads_its_payload_and_config_and_its_log_comes_back() {
    let up = Up::start(&[]);
    let script = r#"echo "args: $*"
echo "payload: $(cat "$PAYLOAD_FILE")"
echo "config: $(cat "$CONFIG_FILE")"
echo "task: $TASK_ID dir: $TASK_DIR pwd: $(pwd)"
echo "data: $(cat data/greeting.txt)"
echo "to stderr" >&2
"#;
    let zip = zip_of(&[
        ("hello.sh", script),
        ("data/greeting.txt", "hi from the package"),
    ]);
    let code = up.push_code(
        &json!({"name": "hello", "runtime": "sh", "file_name": "hello.sh", "config": "{\"greeting\":\"ahoy\"}"}),
        Some(&zip),
    );
    assert_eq!(code["rev"], 1, "{code}");
    let ids = up.queue(vec![
        json!({"code_name": "hello", "payload": "{\"name\":\"berth\"}"}),
    ]);
    let task = up.wait_for(
        &ids[0],
        &["complete", "error", "killed", "timeout"],
        Duration::from_secs(60),
    );
    assert_eq!(task["status"], "complete", "{task}\n{}", up.log_of(&ids[0]));
    let log = up.log_of(&ids[0]);
    let id = &ids[0];
    assert!(
        log.contains(&format!(
            "args: -id {id} -d /task -payload /.berth/payload.json -config /.berth/config.json"
        )),
        "{log}"
    );
    assert!(log.contains("payload: {\"name\":\"berth\"}"), "{log}");
    assert!(log.contains("config: {\"greeting\":\"ahoy\"}"), "{log}");
    assert!(
        log.contains(&format!("task: {id} dir: /task pwd: /task")),
        "{log}"
    );
    assert!(log.contains("data: hi from the package"), "{log}");
    assert!(log.contains("to stderr"), "{log}");
    assert_eq!(task["retry_count"], 0);
    assert!(
        task["start_time"].is_string() && task["end_time"].is_string(),
        "{task}"
    );
    up.stop_and_check_clean();
}

/// Stores a code revision straight into a running `berth up`'s SQLite
/// file, past the API's checks: a package an older, laxer server accepted.
fn push_code_past_the_api(up: &Up, spec: berth_store::NewCodeRevision, zip: &[u8]) {
    let url = format!(
        "sqlite://{}",
        up.berth.data_dir().join("server/berth.db").display()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = berth_store::Store::open(&url)
            .await
            .expect("open the store");
        store
            .push_code(&up.project, &spec, Some(zip))
            .await
            .expect("push the code");
        store.close().await;
    });
}

#[test]
fn an_error_the_agent_marks_not_retryable_ends_the_task_at_once() {
    let up = Up::start(&[]);
    // A file `a` and a file under `a/`: the agent cannot unpack it (this
    // server refuses such a zip at upload, so it goes in past the API).
    let zip = zip_of(&[
        ("hello.sh", "echo hi\n"),
        ("a", "a file"),
        ("a/b", "under a file"),
    ]);
    let spec = berth_store::NewCodeRevision {
        name: "unpackable".to_owned(),
        runtime: Some("sh".to_owned()),
        file_name: Some("hello.sh".to_owned()),
        ..Default::default()
    };
    push_code_past_the_api(&up, spec, &zip);
    let id = up
        .queue(vec![json!({"code_name": "unpackable", "payload": ""})])
        .remove(0);
    let task = up.wait_for(
        &id,
        &["complete", "error", "killed", "cancelled", "timeout"],
        Duration::from_secs(120),
    );
    assert_eq!(task["status"], "error", "{task}");
    assert_eq!(
        task["retry_count"], 0,
        "not run again as an infrastructure fault: {task}"
    );
    let msg = task["msg"].as_str().unwrap_or_default();
    assert!(
        msg.contains("invalid_archive") && msg.contains("not a directory"),
        "the agent's own message: {task}"
    );
    up.stop_and_check_clean();
}

/// Total size of the files below `dir`.
fn bytes_under(dir: &Path) -> u64 {
    walk(dir)
        .iter()
        .filter_map(|p| std::fs::symlink_metadata(p).ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// The agent's package images (`berth-code/…`).
fn package_images(up: &Up) -> Vec<String> {
    up.agent()
        .get("/v1/images")
        .json()
        .as_array()
        .expect("images")
        .iter()
        .filter_map(|i| i["reference"].as_str())
        .filter(|r| r.starts_with("berth-code/"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn deleting_a_code_frees_its_package_on_the_agent() {
    let up = Up::start(&[]);
    let big = "x".repeat(8 << 20);
    let zip = zip_of(&[("hello.sh", "echo ran\n"), ("big.txt", &big)]);
    let code = up.push_code(
        &json!({"name": "bulky", "runtime": "sh", "file_name": "hello.sh"}),
        Some(&zip),
    );
    let id = up
        .queue(vec![json!({"code_name": "bulky", "payload": ""})])
        .remove(0);
    let task = up.wait_for(&id, &["complete", "error"], Duration::from_secs(60));
    assert_eq!(task["status"], "complete", "{task}");
    let sha = up.get(&format!("/codes/{}", code["id"].as_str().unwrap()))["latest_checksum"]
        .as_str()
        .expect("checksum")
        .to_owned();
    let image = format!("berth-code/{}:latest", &sha[..32]);
    assert_eq!(
        package_images(&up),
        vec![image.clone()],
        "the package was imported"
    );
    let images = up.berth.data_dir().join("images");
    let before = bytes_under(&images);
    assert!(
        before > 16 << 20,
        "the layer blob and its unpacked files: {before}"
    );

    // A code deleted while its task runs: the task keeps what it runs.
    let busy = zip_of(&[("hello.sh", "sleep 2; echo still here\n")]);
    let busy_code = up.push_code(
        &json!({"name": "busy", "runtime": "sh", "file_name": "hello.sh"}),
        Some(&busy),
    );
    let busy_task = up
        .queue(vec![json!({"code_name": "busy", "payload": ""})])
        .remove(0);
    up.wait_for(&busy_task, &["running"], Duration::from_secs(60));
    let r = up.call(
        "DELETE",
        &format!("/codes/{}", busy_code["id"].as_str().unwrap()),
        "application/json",
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());

    let r = up.call(
        "DELETE",
        &format!("/codes/{}", code["id"].as_str().unwrap()),
        "application/json",
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = package_images(&up);
        let now = bytes_under(&images);
        if !left.contains(&image) && before.saturating_sub(now) > 16 << 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the deleted code's package is still on the agent: {left:?}, {now} of {before} bytes\n{}",
            up.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let task = up.wait_for(&busy_task, &["complete", "error"], Duration::from_secs(60));
    assert_eq!(task["status"], "complete", "{task}");
    assert!(up.log_of(&busy_task).contains("still here"));
    up.stop_and_check_clean();
}

/// Every path below `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        found.push(path.clone());
        if path.is_dir() {
            found.extend(walk(&path));
        }
    }
    found
}

/// The file system type mounted exactly at `dir`, if anything is.
fn fs_type_at(dir: &Path) -> Option<String> {
    let target = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|line| line.split(' ').nth(4) == Some(target.as_str()))
        .filter_map(|line| line.split(" - ").nth(1))
        .filter_map(|tail| tail.split(' ').next().map(str::to_owned))
        .next_back()
}

/// A SIGTERM the moment berth up's agent socket appears, before anything
/// has answered, still takes the graceful path (the stop handlers are in
/// place before anything is bound): exit 0, the state tmpfs unmounted.
#[test]
fn sigterm_as_soon_as_up_listens_still_stops_it_cleanly() {
    let mut up = Up::new(&[]);
    let socket = up.berth.data_dir().join("agent.sock");
    let run = up.berth.data_dir().join("agent/run");
    for round in 1..=3 {
        up.launch();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "no agent socket: {}", up.log());
            std::hint::spin_loop();
        }
        up.stop();
        let log = up.log();
        assert_eq!(
            log.matches("berth up: stopped").count(),
            round,
            "round {round}: {log}"
        );
        assert!(!socket.exists(), "round {round}: the socket stays");
        assert!(
            berth_testkit::mounts_under(&run).is_empty(),
            "round {round}: the state tmpfs stays mounted: {log}"
        );
    }
    up.berth.assert_clean();
}

#[test]
fn container_state_lives_on_a_tmpfs_that_outlives_a_crash_and_goes_once_empty() {
    let mut up = Up::start(&[]);
    let state = up.berth.data_dir().join("agent/run");
    assert_eq!(fs_type_at(&state).as_deref(), Some("tmpfs"), "{}", up.log());
    up.push_code(
        &json!({"name": "sleeper", "runtime": "sh", "file_name": "run.sh"}),
        Some(&zip_of(&[("run.sh", "echo started; sleep 2; echo done")])),
    );
    let id = up.queue(vec![json!({"code_name": "sleeper"})]).remove(0);
    up.wait_for(&id, &["running"], Duration::from_secs(30));

    // A crash keeps the mount: the running task's state is on it.
    up.kill9();
    assert_eq!(fs_type_at(&state).as_deref(), Some("tmpfs"));
    let gc = up.berth.run(&["gc", "--json"]);
    assert_eq!(gc.code, 0, "{}", gc.stderr);
    assert_eq!(gc.json()["agent_state_unmounted"], false, "{}", gc.stdout);

    // The next berth up finds the task on it and finishes it.
    up.spawn();
    let task = up.wait_for(&id, &["complete", "error"], Duration::from_secs(60));
    assert_eq!(task["status"], "complete", "{task}");
    assert!(
        up.log_of(&id).contains("started\ndone"),
        "{}",
        up.log_of(&id)
    );

    // Once the container is deleted and no agent runs, gc takes it down.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !up
        .agent()
        .get("/v1/containers")
        .json()
        .as_array()
        .is_some_and(|l| l.is_empty())
    {
        assert!(Instant::now() < deadline, "the container was never deleted");
        std::thread::sleep(Duration::from_millis(50));
    }
    up.kill9();
    let gc = up.berth.run(&["gc", "--json"]);
    assert_eq!(gc.json()["agent_state_unmounted"], true, "{}", gc.stdout);
    assert_eq!(fs_type_at(&state), None);

    // And a clean stop of berth up takes down the one it mounted itself.
    up.spawn();
    assert_eq!(fs_type_at(&state).as_deref(), Some("tmpfs"));
    up.stop_and_check_clean();
}

#[test]
fn exit_codes_retries_timeouts_and_cancels_end_in_the_right_status() {
    let up = Up::start(&[]);
    // Image form: the default stack with a command.
    up.push_code(
        &json!({"name": "fails", "image": "berth/stack-busybox", "command": "sh -c 'echo attempt; exit 3'", "retries": 2, "retries_delay": 0}),
        None,
    );
    up.push_code(
        &json!({"name": "sleeper", "image": "berth/stack-busybox", "command": "sleep 30"}),
        None,
    );
    up.push_code(
        &json!({"name": "missing", "image": "berth/stack-busybox", "command": "no-such-command"}),
        None,
    );
    let fails = up
        .queue(vec![json!({"code_name": "fails", "payload": ""})])
        .remove(0);
    let slow = up
        .queue(vec![
            json!({"code_name": "sleeper", "payload": "", "timeout": 1}),
        ])
        .remove(0);
    let cancelled = up
        .queue(vec![json!({"code_name": "sleeper", "payload": ""})])
        .remove(0);
    let missing = up
        .queue(vec![json!({"code_name": "missing", "payload": ""})])
        .remove(0);

    let task = up.wait_for(&fails, &["error", "complete"], Duration::from_secs(60));
    assert_eq!(task["status"], "error", "{task}");
    assert_eq!(
        task["retry_count"], 2,
        "a non-zero exit is retried as the code says: {task}"
    );
    assert!(
        task["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("exited with code 3"),
        "{task}"
    );
    assert!(up.log_of(&fails).contains("attempt"));

    let task = up.wait_for(
        &slow,
        &["timeout", "complete", "error"],
        Duration::from_secs(60),
    );
    assert_eq!(task["status"], "timeout", "{task}");

    up.wait_for(&cancelled, &["running"], Duration::from_secs(60));
    let r = up.call(
        "POST",
        &format!("/tasks/{cancelled}/cancel"),
        "application/json",
        b"{}",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let task = up.wait_for(
        &cancelled,
        &["cancelled", "error", "complete"],
        Duration::from_secs(30),
    );
    assert_eq!(task["status"], "cancelled", "{task}");

    let task = up.wait_for(&missing, &["error", "complete"], Duration::from_secs(60));
    assert_eq!(task["status"], "error", "{task}");
    assert_eq!(
        task["retry_count"], 0,
        "a task's own failure is not retried: {task}"
    );
    up.stop_and_check_clean();
}

/// Finds the shim of a task's container through the agent.
fn shim_pid(up: &Up, container: &str) -> i32 {
    let view = up
        .agent()
        .get(&format!("/v1/containers/{container}"))
        .json();
    view["shim_pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("no shim pid: {view}")) as i32
}

#[test]
fn an_infrastructure_failure_is_retried_invisibly() {
    let up = Up::start(&[]);
    up.push_code(
        &json!({"name": "steady", "image": "berth/stack-busybox", "command": "sh -c 'sleep 2; echo finished'"}),
        None,
    );
    let id = up
        .queue(vec![json!({"code_name": "steady", "payload": ""})])
        .remove(0);
    up.wait_for(&id, &["running"], Duration::from_secs(60));
    // The container's monitor dies: the host lost track of the task.
    let shim = shim_pid(&up, &format!("task-{id}-1"));
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(shim).expect("pid"),
        rustix::process::Signal::KILL,
    )
    .expect("kill the shim");
    let task = up.wait_for(
        &id,
        &["complete", "error", "killed", "cancelled", "timeout"],
        Duration::from_secs(60),
    );
    assert_eq!(task["status"], "complete", "{task}\n{}", up.log());
    assert_eq!(task["retry_count"], 1, "{task}");
    assert!(
        task["msg"].is_null() || task["msg"] == "",
        "no failure shown: {task}"
    );
    assert!(up.log_of(&id).contains("finished"));
    up.stop_and_check_clean();
}

#[test]
fn schedules_queue_their_runs() {
    let up = Up::start(&["--min-schedule-interval", "1"]);
    up.push_code(
        &json!({"name": "tick", "image": "berth/stack-busybox", "command": "echo tick"}),
        None,
    );
    let answer = up.post(
        "/schedules",
        &json!({"schedules": [{"code_name": "tick", "payload": "p", "run_every": 1, "run_times": 3}]}),
    );
    let schedule = answer["schedules"][0]["id"]
        .as_str()
        .expect("schedule id")
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = up.get(&format!("/schedules/{schedule}"));
        if s["status"] == "complete" {
            assert_eq!(s["run_count"], 3, "{s}");
            break;
        }
        assert!(Instant::now() < deadline, "schedule never completed: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let tasks = up.get("/tasks?code_name=tick&complete=1");
        let runs: Vec<&Value> = tasks["tasks"]
            .as_array()
            .expect("tasks")
            .iter()
            .filter(|t| t["schedule_id"] == schedule.as_str())
            .collect();
        if runs.len() == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "3 completed runs expected: {tasks}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    up.stop_and_check_clean();
}

/// Reads the task table straight from the SQLite file of a stopped server.
fn tasks_in_store(data_dir: &Path, project: &str, statuses: &[&str]) -> Vec<(String, String, i64)> {
    let url = format!("sqlite://{}", data_dir.join("server/berth.db").display());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = berth_store::Store::open(&url)
            .await
            .expect("open the store");
        let filter = berth_store::TaskFilter {
            statuses: statuses
                .iter()
                .map(|s| s.parse().expect("status"))
                .collect(),
            ..Default::default()
        };
        let mut out = Vec::new();
        for page in 0.. {
            let tasks = store
                .tasks(
                    project,
                    &filter,
                    berth_store::Page {
                        page,
                        per_page: 100,
                    },
                )
                .await
                .expect("list");
            if tasks.is_empty() {
                break;
            }
            out.extend(
                tasks
                    .into_iter()
                    .map(|t| (t.id, t.status.to_string(), t.attempt)),
            );
        }
        store.close().await;
        out
    })
}

/// A soak test (minutes): `bash bench/soak.sh` runs it, `cargo test` does not.
#[test]
#[ignore = "soak test: run by bench/soak.sh"]
fn ten_thousand_tasks_survive_a_server_crash() {
    const TASKS: usize = 10_000;
    let mut up = Up::start(&[]);
    up.push_code(
        &json!({"name": "noop", "image": "berth/stack-busybox", "command": "true"}),
        None,
    );
    let mut ids = Vec::with_capacity(TASKS);
    for _ in 0..TASKS / 100 {
        let batch = (0..100)
            .map(|_| json!({"code_name": "noop", "payload": ""}))
            .collect();
        ids.extend(up.queue(batch));
    }
    assert_eq!(ids.len(), TASKS);
    // Let it get well into the run, then kill -9 the whole process (server
    // and its in-process agent; the shims live on).
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let complete = up.get("/tasks?code_name=noop&complete=1&per_page=100&page=9");
        if complete["tasks"].as_array().is_some_and(|t| !t.is_empty()) {
            break; // at least 901 complete
        }
        assert!(
            Instant::now() < deadline,
            "the run never got going: {}",
            up.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    up.kill9();
    let active_at_crash: std::collections::HashSet<String> =
        tasks_in_store(&up.berth.data_dir(), &up.project, &["preparing", "running"])
            .into_iter()
            .map(|(id, _, _)| id)
            .collect();
    let unfinished = tasks_in_store(
        &up.berth.data_dir(),
        &up.project,
        &["queued", "preparing", "running"],
    );
    assert!(
        !unfinished.is_empty(),
        "the crash came too late to test anything"
    );

    up.spawn();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let left = tasks_in_store_live(&up);
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} tasks never finished: {}",
            up.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    up.stop();
    let all = tasks_in_store(&up.berth.data_dir(), &up.project, &[]);
    assert_eq!(all.len(), TASKS, "no task lost, none added");
    let mut seen = std::collections::HashSet::new();
    for (id, status, attempt) in &all {
        assert!(seen.insert(id.clone()), "task {id} listed twice");
        assert_eq!(status, "complete", "task {id}");
        assert!(
            *attempt == 1 || active_at_crash.contains(id),
            "task {id} ran {attempt} times but was not under way at the crash"
        );
    }
    for id in &ids {
        assert!(seen.contains(id), "task {id} lost");
    }
    up.spawn();
    up.stop_and_check_clean();
}

/// Tasks not yet ended, through the API's stats.
fn tasks_in_store_live(up: &Up) -> i64 {
    let codes = up.get("/codes");
    let id = codes["codes"][0]["id"]
        .as_str()
        .expect("code id")
        .to_owned();
    let stats = up.get(&format!("/codes/{id}/stats"));
    ["queued", "preparing", "running"]
        .iter()
        .map(|k| stats[k].as_i64().unwrap_or(0))
        .sum()
}
