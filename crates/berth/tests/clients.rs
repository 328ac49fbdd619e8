//! The official IronWorker clients, unchanged, against a real `berth up`
//! (server, local agent, SQLite, default stack): the Python client
//! (iron-worker 1.3.8) and the Node client (iron_worker 0.1.8) upload a
//! code, queue tasks with options, wait, read logs, retry, cancel and
//! manage schedules. The steps live in tests/clients/*.py and *.js, run
//! with the clients' own configuration (IRON_* variables); this file starts
//! berth, runs them and shows what failed.
//!
//! scripts/clients.sh installs the clients (scripts/test.sh runs it). A
//! missing client or interpreter fails the test under CI=true; elsewhere
//! the test says that it was skipped and why.

mod common;

use common::Berth;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The longest a client's script may take (it normally takes ~10 s).
const SCRIPT_LIMIT: Duration = Duration::from_secs(180);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Whether `path` exists; if not, fails under CI=true and otherwise says
/// loudly that the test is skipped.
fn installed(path: &Path, what: &str) -> bool {
    if path.exists() {
        return true;
    }
    let why = format!(
        "{what} is not installed ({} is missing): run scripts/clients.sh",
        path.display()
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why}");
    }
    eprintln!("SKIPPED: {why}");
    false
}

/// A running `berth up` on a private data dir, port and HOME.
struct Up {
    berth: Berth,
    child: Child,
    port: u16,
    project: String,
    token: String,
}

impl Up {
    fn start() -> Up {
        let berth = Berth::new();
        let home = berth.dir.path().join("home");
        std::fs::create_dir_all(&home).expect("home");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = std::fs::File::create(berth.dir.path().join("up.log")).expect("log");
        let child = berth
            .command()
            .env("HOME", &home)
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("BERTH_URL")
            .env_remove("BERTH_TOKEN")
            .env_remove("BERTH_PROJECT_ID")
            .args(["up", "--listen", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start berth up");
        let mut up = Up {
            berth,
            child,
            port,
            project: String::new(),
            token: String::new(),
        };
        // berth up writes the client config, then answers.
        let config_path = home.join(".config/berth/config.json");
        let deadline = Instant::now() + Duration::from_secs(30);
        let endpoint = berth_testkit::http::Endpoint::Tcp(([127, 0, 0, 1], port).into());
        loop {
            let answered = endpoint
                .request("GET", "/2/projects/x/tasks", &[], b"")
                .is_ok_and(|r| r.status == 401);
            if answered && config_path.exists() {
                break;
            }
            if let Ok(Some(status)) = up.child.try_wait() {
                panic!("berth up exited ({status}): {}", up.log());
            }
            assert!(
                Instant::now() < deadline,
                "berth up never answered: {}",
                up.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let config: Value =
            serde_json::from_slice(&std::fs::read(&config_path).expect("client config"))
                .expect("client config is JSON");
        up.project = config["project_id"].as_str().expect("project_id").into();
        up.token = config["token"].as_str().expect("token").into();
        up
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.berth.dir.path().join("up.log")).unwrap_or_default()
    }

    /// Runs a client's script in a fresh working directory and HOME (the
    /// clients read iron.json from both), configured the clients' way.
    fn run_client(&self, mut command: Command) -> Output {
        let work = self.berth.dir.path().join("client");
        std::fs::create_dir_all(&work).expect("client dir");
        command
            .current_dir(&work)
            .env("HOME", &work)
            .env("IRON_PROTOCOL", "http") // Python
            .env("IRON_SCHEME", "http") // Node
            .env("IRON_HOST", "127.0.0.1")
            .env("IRON_PORT", self.port.to_string())
            .env("IRON_PROJECT_ID", &self.project)
            .env("IRON_TOKEN", &self.token)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start the client's script");
        // Read the pipes on threads so that a chatty script cannot block.
        let mut stdout = child.stdout.take().expect("stdout");
        let mut stderr = child.stderr.take().expect("stderr");
        let out = std::thread::spawn(move || {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut stdout, &mut buf).map(|_| buf)
        });
        let err = std::thread::spawn(move || {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut stderr, &mut buf).map(|_| buf)
        });
        let deadline = Instant::now() + SCRIPT_LIMIT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for the script") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                break child.wait().expect("reap the script");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Output {
            status,
            stdout: out.join().expect("stdout thread").unwrap_or_default(),
            stderr: err.join().expect("stderr thread").unwrap_or_default(),
        }
    }

    /// Asserts that the script passed, showing its output and berth's log
    /// if not.
    fn assert_passed(&self, client: &str, out: &Output) {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        print!("{stdout}");
        assert!(
            out.status.success(),
            "the {client} client failed ({}); the last step above is the one that \
             failed.\n--- its stderr:\n{stderr}\n--- berth up's log:\n{}",
            out.status,
            self.log()
        );
    }

    /// Stops berth up with SIGTERM and checks that no container of it is
    /// left (the scripts cancel what they start).
    fn stop_and_check_clean(mut self) {
        let agent = berth_testkit::http::Endpoint::unix(&self.berth.data_dir().join("agent.sock"));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = agent.get("/v1/containers").json();
            if left.as_array().is_some_and(|l| l.is_empty()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "containers left on the agent: {left}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("pid");
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let status = self.child.wait().expect("reap berth up");
        assert_eq!(
            status.code(),
            Some(0),
            "berth up on SIGTERM: {}",
            self.log()
        );
        self.berth.assert_clean();
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            // Containers a failed test left: force them out so that no shim
            // or cgroup outlives the test.
            let _ = self
                .berth
                .command()
                .arg("gc")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

#[test]
fn the_official_python_client_works_unchanged() {
    let root = repo_root();
    let python = root.join("target/clients/python/bin/python");
    if !installed(&python, "the IronWorker Python client (iron-worker 1.3.8)") {
        return;
    }
    let up = Up::start();
    let mut command = Command::new(&python);
    command.arg(root.join("tests/clients/python_client.py"));
    let out = up.run_client(command);
    up.assert_passed("Python", &out);
    up.stop_and_check_clean();
}

#[test]
fn the_official_node_client_works_unchanged() {
    let root = repo_root();
    let modules = root.join("tests/clients/node_modules");
    if !installed(
        &modules.join("iron_worker/package.json"),
        "the IronWorker Node client (iron_worker 0.1.8)",
    ) {
        return;
    }
    let up = Up::start();
    let mut command = Command::new("node");
    command
        .arg(root.join("tests/clients/node_client.js"))
        .env("NODE_PATH", &modules);
    let out = up.run_client(command);
    up.assert_passed("Node", &out);
    up.stop_and_check_clean();
}
