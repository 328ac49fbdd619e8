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
    /// An open-files limit (soft and hard) to start berth up with.
    nofile: Option<u64>,
    /// A HOME shared with another instance (default: one of its own).
    shared_home: Option<PathBuf>,
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
            nofile: None,
            shared_home: None,
            project: String::new(),
            token: String::new(),
        }
    }

    fn start(extra: &[&str]) -> Up {
        Up::new(extra).started()
    }

    /// Spawns `self` and reads the project and token berth up made.
    fn started(mut self) -> Up {
        self.spawn();
        let mut up = self;
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
        match &self.shared_home {
            Some(home) => home.clone(),
            None => self.berth.dir.path().join("home"),
        }
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
        let mut command = self.berth.command();
        if let Some(nofile) = self.nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: runs in the forked child before exec and only makes
            // one system call (no allocation, no lock).
            unsafe {
                command.pre_exec(move || {
                    let limit = rustix::process::Rlimit {
                        current: Some(nofile),
                        maximum: Some(nofile),
                    };
                    rustix::process::setrlimit(rustix::process::Resource::Nofile, limit)
                        .map_err(std::io::Error::from)
                });
            }
        }
        let child = command
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

    /// How many file descriptors the berth up process has open.
    fn open_fds(&self) -> usize {
        let pid = self.child.as_ref().expect("berth up runs").id();
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|dir| dir.count())
            .unwrap_or(0)
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
        Endpoint::Tcp(self.addr())
    }

    fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.port).into()
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
        let r = self.try_push_code(data, zip);
        assert_eq!(r.status, 200, "code upload: {}", r.text());
        r.json()
    }

    fn try_push_code(&self, data: &Value, zip: Option<&[u8]>) -> Response {
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
        self.call("POST", "/codes", &content_type, &body)
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

    /// The output so far of the task's first attempt, from the agent.
    fn agent_log_of(&self, id: &str) -> String {
        self.agent()
            .get(&format!("/v1/containers/task-{id}-1/logs"))
            .text()
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
            let _ = Command::new(common::berth_binary())
                .arg("--data-dir")
                .arg(self.berth.data_dir())
                .arg("--cgroup-parent")
                .arg(&self.berth.cgroup_parent)
                .arg("--bridge")
                .arg(&self.berth.bridge)
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

/// A flood of idle clients (no token, not a byte sent) far beyond the task
/// API's connection cap: berth up holds no more than the cap of them, so
/// its file descriptors stay free for its own work; the dispatcher claims
/// and runs a task meanwhile; the idle clients are closed after the header
/// timeout; and an authorised client is answered (issue 16: ~20,000 idle
/// connections took every descriptor and the dispatcher stopped).
#[test]
fn idle_clients_beyond_the_cap_do_not_starve_the_dispatcher() {
    const CAP: usize = 16;
    const FLOOD: usize = 1500;
    const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
    let mut up = Up::new(&["--max-connections", "16", "--header-timeout", "2s"]);
    // Low enough that the flood alone would exhaust it without the cap.
    up.nofile = Some(1100);
    let up = up.started();
    up.push_code(
        &json!({"name": "hi", "image": "berth/stack-busybox", "command": "echo dispatched"}),
        None,
    );
    // Claimed only once the flood is in place.
    let id = up
        .queue(vec![json!({"code_name": "hi", "delay": 5})])
        .remove(0);
    let fds_before = up.open_fds();
    let flood_started = Instant::now();
    let mut idle = berth_testkit::flood::open_idle(up.addr(), FLOOD, Duration::from_secs(3));
    eprintln!(
        "{} of {FLOOD} idle clients connected in {:?}; berth up had {fds_before} descriptors",
        idle.len(),
        flood_started.elapsed()
    );
    assert!(idle.len() > 4 * CAP, "the flood never got going");

    // The store, read behind the server's back (its API is behind the
    // flood): the task runs to its end while the clients sit there, and
    // berth up never holds more than the cap of them.
    let mut most_fds = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        most_fds = most_fds.max(up.open_fds());
        let done = tasks_in_store(&up.berth.data_dir(), &up.project, &["complete"]);
        if done.iter().any(|(task, _, _)| *task == id) {
            break;
        }
        let ended = tasks_in_store(
            &up.berth.data_dir(),
            &up.project,
            &["error", "killed", "timeout", "cancelled"],
        );
        assert!(
            ended.is_empty(),
            "the task ended badly: {ended:?}\n{}",
            up.log()
        );
        assert!(
            Instant::now() < deadline,
            "the task was not run during the flood: {:?}\n{}",
            tasks_in_store(&up.berth.data_dir(), &up.project, &[]),
            up.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "the task completed {:?} into the flood; berth up held at most {most_fds} descriptors",
        flood_started.elapsed()
    );
    // Its own (store, agent socket, shims, this task) plus the capped
    // clients, with room for the task's container and shim.
    assert!(
        most_fds <= fds_before + CAP + 64,
        "berth up held {most_fds} descriptors during the flood ({fds_before} before)"
    );

    // The first clients were let in and closed for sending no request.
    for client in idle.iter_mut().take(CAP) {
        let after = client
            .closed_by_server(Duration::from_secs(30))
            .expect("an idle client was never closed");
        assert!(
            after >= HEADER_TIMEOUT - Duration::from_millis(100),
            "closed after {after:?}, before the header timeout"
        );
    }
    // The rest go away; an authorised client is then answered.
    drop(idle);
    let task = up.wait_for(&id, &["complete"], Duration::from_secs(60));
    assert_eq!(up.log_of(&id), "dispatched\n", "{task}");
    up.stop_and_check_clean();
}

/// A task that handles the cancel's SIGTERM and exits 0 still ends
/// `cancelled`: a requested cancel that reached the task wins over its exit
/// code (issue 16: it ended `complete`).
#[test]
fn a_cancelled_task_that_exits_0_from_its_sigterm_handler_is_cancelled() {
    let up = Up::start(&[]);
    up.push_code(
        &json!({"name": "graceful", "image": "berth/stack-busybox",
                "command": "sh -c 'trap \"echo got TERM; exit 0\" TERM; echo ready; while true; do sleep 1 & wait $!; done'"}),
        None,
    );
    let id = up.queue(vec![json!({"code_name": "graceful"})]).remove(0);
    up.wait_for(&id, &["running"], Duration::from_secs(60));
    // The trap is set once it has said so.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !up.agent_log_of(&id).contains("ready") {
        assert!(Instant::now() < deadline, "the task never got ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = up.call(
        "POST",
        &format!("/tasks/{id}/cancel"),
        "application/json",
        b"{}",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let task = up.wait_for(
        &id,
        &["cancelled", "complete", "error", "killed"],
        Duration::from_secs(30),
    );
    assert_eq!(task["status"], "cancelled", "{task}");
    assert!(up.log_of(&id).contains("got TERM"), "{}", up.log_of(&id));
    up.stop_and_check_clean();
}

/// When the store cannot take an attempt's end (its disk is full), the
/// dispatcher keeps the container and tries again, so the task never shows
/// `running` with its container gone; once there is room the end and the
/// whole log are stored (issue 16: the container was removed and the task
/// stayed `running` until a restart).
#[test]
fn a_task_whose_end_cannot_be_stored_yet_keeps_its_container_and_ends_later() {
    let mut up = Up::new(&[]);
    let disk = berth_testkit::tmpfs::SmallTmpfs::mount(&up.berth.dir.path().join("db"), "32m");
    let url = format!("sqlite://{}/berth.db", disk.path().display());
    up.extra.extend(["--database".to_owned(), url]);
    let mut up = up.started();
    // A log too big for the pages the database already has.
    up.push_code(
        &json!({"name": "big", "image": "berth/stack-busybox",
                "command": "sh -c 'echo started; sleep 2; head -c 2000000 /dev/zero | tr \"\\0\" x; echo; echo finished'"}),
        None,
    );
    let id = up.queue(vec![json!({"code_name": "big"})]).remove(0);
    let container = format!("/v1/containers/task-{id}-1");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !up.agent_log_of(&id).contains("started") {
        assert!(
            Instant::now() < deadline,
            "the task never started: {}",
            up.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    disk.fill();
    // The container ends; the dispatcher fails to store that, a few times.
    let deadline = Instant::now() + Duration::from_secs(60);
    while up.agent().get(&container).json()["state"] != "exited" {
        assert!(Instant::now() < deadline, "the container never ended");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    let task = up.task(&id);
    assert_eq!(task["status"], "running", "{task}");
    let kept = up.agent().get(&container);
    assert_eq!(
        kept.status,
        200,
        "the container of a running task is gone: {}",
        kept.text()
    );

    disk.free();
    let task = up.wait_for(
        &id,
        &["complete", "error", "killed"],
        Duration::from_secs(60),
    );
    assert_eq!(task["status"], "complete", "{task}");
    let log = up.log_of(&id);
    assert!(
        log.starts_with("started\n") && log.ends_with("x\nfinished\n"),
        "{} bytes",
        log.len()
    );
    assert_eq!(
        log.len(),
        "started\n".len() + 2_000_000 + "\nfinished\n".len()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while up.agent().get(&container).status != 404 {
        assert!(
            Instant::now() < deadline,
            "the container stayed after its end was stored"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    up.stop();
    disk.unmount();
    up.berth.assert_clean();
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .expect("JSON")
}

/// A second `berth up` (another data dir and port) never redirects the
/// user's client config to itself: it writes its own settings under its
/// data dir and says how to use them. The first instance, restarted on
/// another port, still updates the config (it is the same instance); and
/// a config naming an address whose server is gone is taken over by the
/// instance that now serves there (issue 16: the second instance silently
/// overwrote ~/.config/berth/config.json).
#[test]
fn a_second_instance_leaves_the_users_client_config_alone() {
    let first = Up::start(&[]);
    let home = first.home();
    let config_path = first.config_path();
    let mine = read_json(&config_path);
    assert_eq!(mine["url"], format!("http://127.0.0.1:{}", first.port));

    let mut second = Up::new(&[]);
    second.shared_home = Some(home.clone());
    second.spawn();
    assert_eq!(
        read_json(&config_path),
        mine,
        "the second instance redirected the CLI"
    );
    let own = second.berth.data_dir().join("client.json");
    let theirs = read_json(&own);
    assert_eq!(theirs["url"], format!("http://127.0.0.1:{}", second.port));
    assert_ne!(theirs["token"], mine["token"]);
    second.project = theirs["project_id"].as_str().expect("project").to_owned();
    second.token = theirs["token"].as_str().expect("token").to_owned();
    let told = second.log();
    assert!(
        told.contains(&format!("export BERTH_CONFIG={}", own.display())),
        "{told}"
    );
    // The CLI reaches each instance: the default one by default, the second
    // one through its own file.
    let code_ls = |config: Option<&Path>| {
        let mut command = first.berth.command();
        command
            .env("HOME", &home)
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("BERTH_URL")
            .env_remove("BERTH_TOKEN")
            .env_remove("BERTH_PROJECT_ID")
            .env_remove("BERTH_CONFIG");
        if let Some(config) = config {
            command.env("BERTH_CONFIG", config);
        }
        let out = command
            .args(["code", "ls", "--json"])
            .output()
            .expect("berth code ls");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    second.push_code(
        &json!({"name": "only-on-second", "image": "berth/stack-busybox", "command": "true"}),
        None,
    );
    assert!(!code_ls(None).contains("only-on-second"));
    assert!(code_ls(Some(&own)).contains("only-on-second"));

    // Restarted on another port, the second instance's own file follows;
    // the user's config still does not.
    second.stop();
    second.port = free_port();
    second.spawn();
    assert_eq!(
        read_json(&own)["url"],
        format!("http://127.0.0.1:{}", second.port)
    );
    assert_eq!(read_json(&own)["token"], theirs["token"]);
    assert_eq!(read_json(&config_path), mine);

    // The first instance moved to another port: the config is its own, so
    // it follows.
    let mut first = first;
    first.stop();
    first.port = free_port();
    first.spawn();
    let moved = read_json(&config_path);
    assert_eq!(moved["url"], format!("http://127.0.0.1:{}", first.port));
    assert_eq!(moved["token"], mine["token"]);

    // A config naming the second instance's address with a token from
    // elsewhere (its server is long gone): the instance now serving there
    // takes it over.
    first.stop();
    let stale = json!({"url": format!("http://127.0.0.1:{}", second.port), "project_id": "gone", "token": "gone"});
    std::fs::write(&config_path, stale.to_string()).unwrap();
    second.stop();
    second.spawn();
    assert_eq!(read_json(&config_path), read_json(&own));
    second.stop_and_check_clean();
    first.berth.assert_clean();
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

/// Tasks reach the network by default (as on IronWorker): one fetches a
/// page from a server on the host's address. A code that says
/// `"network": "none"` gets none, and `host` is refused for tasks.
#[test]
fn a_task_fetches_a_url_from_the_host_and_a_code_can_ask_for_no_network() {
    use std::io::{Read, Write as _};
    let up = Up::start(&[]);
    let address = common::host_address();
    let listener = std::net::TcpListener::bind((address.as_str(), 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf);
        s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 11\r\n\r\nfrom a page")
            .unwrap();
    });
    let fetch = format!("wget -qO- http://{address}:{port}/");
    let code = up.push_code(
        &json!({"name": "fetch", "image": "berth/stack-busybox", "command": fetch}),
        None,
    );
    let shown = up.call(
        "GET",
        &format!("/codes/{}", code["id"].as_str().unwrap()),
        "",
        b"",
    );
    assert_eq!(shown.json()["network"], "bridge", "{}", shown.text());
    let offline = up.push_code(
        &json!({"name": "offline", "image": "berth/stack-busybox", "command": fetch, "network": "none"}),
        None,
    );
    let shown = up.call(
        "GET",
        &format!("/codes/{}", offline["id"].as_str().unwrap()),
        "",
        b"",
    );
    assert_eq!(shown.json()["network"], "none", "{}", shown.text());
    let refused = up.try_push_code(
        &json!({"name": "h", "image": "berth/stack-busybox", "command": "true", "network": "host"}),
        None,
    );
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(
        refused.text().contains("not allowed for tasks"),
        "{}",
        refused.text()
    );

    let ids = up.queue(vec![
        json!({"code_name": "fetch", "payload": ""}),
        json!({"code_name": "offline", "payload": ""}),
    ]);
    let ends = ["complete", "error", "killed", "timeout"];
    let fetched = up.wait_for(&ids[0], &ends, Duration::from_secs(60));
    assert_eq!(
        fetched["status"],
        "complete",
        "{fetched}\n{}",
        up.log_of(&ids[0])
    );
    assert_eq!(up.log_of(&ids[0]).trim(), "from a page");
    server.join().unwrap();
    let offline = up.wait_for(&ids[1], &ends, Duration::from_secs(60));
    assert_eq!(
        offline["status"],
        "error",
        "{offline}\n{}",
        up.log_of(&ids[1])
    );
    up.stop_and_check_clean();
}

/// On one host (`berth up`, no fleet), a project's overlay network works
/// as a private network: tasks reach each other by task id, and the
/// network leaves the host with its last task.
#[test]
fn tasks_of_an_overlay_on_one_host_reach_each_other_by_name() {
    let up = Up::start(&[]);
    let made = up.post("/networks", &json!({"name": "backend"}));
    assert_eq!(made["subnet"], "10.128.0.0/24", "{made}");
    up.push_code(
        &json!({"name": "serve", "image": "berth/stack-busybox", "network": "backend",
                "command": "sh -c 'mkdir /tmp/w && echo \"hi from $TASK_ID\" > /tmp/w/index.html && exec httpd -f -p 8080 -h /tmp/w'"}),
        None,
    );
    up.push_code(
        &json!({"name": "fetch", "image": "berth/stack-busybox", "network": "backend",
                "command": "sh -c 'for i in $(seq 50); do wget -qO- http://$(cat $PAYLOAD_FILE):8080/ && exit 0; sleep 0.2; done; exit 1'"}),
        None,
    );
    let server = up.queue(vec![json!({"code_name": "serve", "payload": ""})]);
    up.wait_for(&server[0], &["running"], Duration::from_secs(60));
    let client = up.queue(vec![json!({"code_name": "fetch", "payload": server[0]})]);
    let ends = ["complete", "error", "killed", "timeout"];
    let fetched = up.wait_for(&client[0], &ends, Duration::from_secs(60));
    assert_eq!(
        fetched["status"],
        "complete",
        "{fetched}\n{}",
        up.log_of(&client[0])
    );
    assert_eq!(
        up.log_of(&client[0]).trim(),
        format!("hi from {}", server[0])
    );
    let shown = up.get("/networks/backend");
    assert_eq!(shown["tasks"][0]["task_id"], server[0].as_str(), "{shown}");
    assert_eq!(shown["tasks"][0]["address"], "10.128.0.2", "{shown}");
    up.post(&format!("/tasks/{}/cancel", server[0]), &json!({}));
    up.wait_for(
        &server[0],
        &ends[1..]
            .iter()
            .chain(&["cancelled"])
            .copied()
            .collect::<Vec<_>>(),
        Duration::from_secs(30),
    );
    let state = up.berth.data_dir().join("network/networks");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_dir(&state).is_ok_and(|d| {
        d.flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("fleet-"))
    }) {
        assert!(Instant::now() < deadline, "the overlay stayed on the host");
        std::thread::sleep(Duration::from_millis(100));
    }
    up.stop_and_check_clean();
}
