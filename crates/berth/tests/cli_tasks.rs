//! End-to-end tests of the task-platform commands: a real `berth server`
//! (SQLite, no agents, so queued tasks stay queued), a project made with
//! `berth project create`, and the client commands run as processes.

mod common;

use serde_json::Value;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `berth server` on a free port with its own database; killed on drop.
struct Server {
    dir: tempfile::TempDir,
    child: Child,
    url: String,
    db: String,
}

/// A project of a server and its first token.
struct Project {
    id: String,
    token: String,
}

/// What a `berth` process did.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {:?} (stderr {:?})",
                self.stdout, self.stderr
            )
        })
    }

    fn ok(self) -> Out {
        assert_eq!(
            self.code, 0,
            "failed: stdout {:?} stderr {:?}",
            self.stdout, self.stderr
        );
        self
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// A `berth` command with no client settings from the environment: no
/// BERTH_*/IRON_* variables, and a private HOME so that no real client
/// config file is found.
fn bare_berth(home: &Path) -> Command {
    let mut c = Command::new(common::berth_binary());
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("BERTH_") || key.starts_with("IRON_") || key == "XDG_CONFIG_HOME" {
            c.env_remove(&key);
        }
    }
    c.env("HOME", home).stdin(Stdio::null());
    c
}

fn output(mut command: Command) -> Out {
    let out = command.output().expect("run berth");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = format!("sqlite://{}", dir.path().join("berth.db").display());
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("server.log")).expect("server log");
        let child = bare_berth(dir.path())
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args([
                "server",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--database",
                &db,
            ])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start berth server");
        let mut server = Server {
            dir,
            child,
            url: format!("http://127.0.0.1:{port}"),
            db,
        };
        server.wait_until_up(port);
        server
    }

    fn wait_until_up(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("berth server exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "berth server never answered: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// `berth ARGS --database DB` (operator commands).
    fn operator(&self, args: &[&str]) -> Out {
        let mut c = bare_berth(&self.home());
        c.args(args).args(["--database", &self.db]);
        output(c)
    }

    fn project(&self, name: &str) -> Project {
        let out = self.operator(&["project", "create", name, "--json"]).ok();
        let json = out.json();
        assert_eq!(json["name"], name);
        let keys: Vec<&String> = json.as_object().expect("object").keys().collect();
        assert_eq!(keys, ["id", "name", "token"], "{json}");
        Project {
            id: json["id"].as_str().expect("id").to_owned(),
            token: json["token"].as_str().expect("token").to_owned(),
        }
    }

    /// A client command with the settings in BERTH_* variables.
    fn client(&self, project: &Project) -> Command {
        let mut c = bare_berth(&self.home());
        c.env("BERTH_URL", &self.url)
            .env("BERTH_PROJECT_ID", &project.id)
            .env("BERTH_TOKEN", &project.token);
        c
    }

    fn run(&self, project: &Project, args: &[&str]) -> Out {
        let mut c = self.client(project);
        c.args(args);
        output(c)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ids(out: &Out) -> Vec<String> {
    out.stdout.lines().map(str::to_owned).collect()
}

#[test]
fn codes_and_tasks_round_trip() {
    let server = Server::start();
    let p = server.project("round-trip");

    let pushed = server
        .run(
            &p,
            &[
                "code",
                "push",
                "hello",
                "--image",
                "busybox",
                "--command",
                "echo hi",
                "--json",
            ],
        )
        .ok()
        .json();
    assert_eq!(pushed["rev"], 1, "{pushed}");
    let code_id = pushed["id"].as_str().expect("code id").to_owned();
    let out = server
        .run(
            &p,
            &[
                "code",
                "push",
                "hello",
                "--image",
                "busybox",
                "-e",
                "A=1",
                "--max-concurrency",
                "2",
            ],
        )
        .ok();
    assert!(
        out.stdout.contains("pushed hello revision 2"),
        "{}",
        out.stdout
    );

    let codes = server.run(&p, &["code", "ls", "--json"]).ok().json();
    assert_eq!(codes["codes"][0]["name"], "hello");
    assert_eq!(codes["codes"][0]["rev"], 2);
    let table = server.run(&p, &["code", "ls"]).ok().stdout;
    assert!(table.starts_with("NAME "), "{table}");
    assert!(table.contains("REV") && table.contains("hello"), "{table}");
    let shown = server
        .run(&p, &["code", "show", &code_id, "--json"])
        .ok()
        .json();
    assert_eq!(shown["env_vars"]["A"], "1");
    assert_eq!(shown["max_concurrency"], 2);
    let shown = server.run(&p, &["code", "show", "hello"]).ok().stdout;
    assert!(shown.contains("max concurrency    2"), "{shown}");
    let revisions = server
        .run(&p, &["code", "revisions", "hello", "--json"])
        .ok()
        .json();
    assert_eq!(revisions["revisions"].as_array().map(Vec::len), Some(2));

    // One task, then 150 in two batches.
    let queued = server
        .run(
            &p,
            &[
                "task",
                "queue",
                "hello",
                "--payload",
                "{\"n\": 1}",
                "--label",
                "first",
                "--json",
            ],
        )
        .ok()
        .json();
    assert_eq!(queued["msg"], "Queued up");
    let first = queued["tasks"][0]["id"]
        .as_str()
        .expect("task id")
        .to_owned();
    let many = server
        .run(
            &p,
            &[
                "task",
                "queue",
                "hello",
                "--count",
                "150",
                "--priority",
                "2",
            ],
        )
        .ok();
    let many_ids = ids(&many);
    assert_eq!(many_ids.len(), 150, "{}", many.stdout);

    let listed = server
        .run(
            &p,
            &[
                "task",
                "ls",
                "--code",
                "hello",
                "--status",
                "queued",
                "--per-page",
                "100",
                "--json",
            ],
        )
        .ok()
        .json();
    assert_eq!(listed["tasks"].as_array().map(Vec::len), Some(100));
    let page = server
        .run(
            &p,
            &[
                "task",
                "ls",
                "--per-page",
                "100",
                "--page",
                "1",
                "--from",
                "1h",
                "--json",
            ],
        )
        .ok()
        .json();
    assert_eq!(page["tasks"].as_array().map(Vec::len), Some(51));
    let table = server
        .run(&p, &["task", "ls", "--per-page", "5"])
        .ok()
        .stdout;
    assert!(table.starts_with("ID "), "{table}");
    assert!(
        table.contains("STATUS") && table.contains("queued"),
        "{table}"
    );
    assert_eq!(table.lines().count(), 6, "{table}");

    let task = server
        .run(&p, &["task", "show", &first, "--json"])
        .ok()
        .json();
    assert_eq!(task["status"], "queued");
    assert_eq!(task["payload"], "{\"n\": 1}");
    assert_eq!(task["label"], "first");
    let shown = server.run(&p, &["task", "show", &first]).ok().stdout;
    assert!(
        shown.contains("status") && shown.contains("queued"),
        "{shown}"
    );
    let log = server.run(&p, &["task", "log", &first]).ok();
    assert_eq!(log.stdout, "");

    server.run(&p, &["task", "cancel", &first]).ok();
    let task = server
        .run(&p, &["task", "show", &first, "--json"])
        .ok()
        .json();
    assert_eq!(task["status"], "cancelled");
    let retried = server
        .run(&p, &["task", "retry", &first, "--delay", "1m"])
        .ok();
    let retry_id = retried.stdout.trim().to_owned();
    assert_eq!(retry_id.len(), 24, "{}", retried.stdout);
    let retry = server
        .run(&p, &["task", "show", &retry_id, "--json"])
        .ok()
        .json();
    assert_eq!(retry["original_task_id"], first.as_str());
    assert_eq!(retry["delay"], 60);
    // Retrying a task that has not ended is refused.
    let out = server.run(&p, &["task", "retry", &many_ids[0]]);
    assert_eq!(out.code, 125, "{}", out.stderr);

    let stats = server
        .run(&p, &["code", "stats", "hello", "--json"])
        .ok()
        .json();
    assert_eq!(stats["queued"], 151);
    assert_eq!(stats["cancelled"], 1);
    let stats = server.run(&p, &["code", "stats", "hello"]).ok().stdout;
    assert!(stats.starts_with("STATUS"), "{stats}");

    server.run(&p, &["code", "pause", "hello"]).ok();
    let shown = server
        .run(&p, &["code", "show", "hello", "--json"])
        .ok()
        .json();
    assert_eq!(shown["paused"], true);
    server.run(&p, &["code", "resume", "hello"]).ok();
    server.run(&p, &["code", "rm", "hello"]).ok();
    let codes = server.run(&p, &["code", "ls", "--json"]).ok().json();
    assert_eq!(codes["codes"], serde_json::json!([]));
    let task = server
        .run(&p, &["task", "show", &many_ids[0], "--json"])
        .ok()
        .json();
    assert_eq!(task["status"], "cancelled");
}

#[test]
fn classic_code_from_a_directory() {
    let server = Server::start();
    let p = server.project("classic");
    server.operator(&["stack", "map", "sh", "busybox"]).ok();
    let stacks = server.operator(&["stack", "ls", "--json"]).ok().json();
    assert_eq!(
        stacks["stacks"][0]["command"],
        serde_json::json!(["sh", "{file}"])
    );
    assert!(server
        .operator(&["stack", "ls"])
        .ok()
        .stdout
        .starts_with("RUNTIME"));

    let pkg = server.dir.path().join("pkg");
    std::fs::create_dir_all(pkg.join("lib")).expect("mkdir");
    std::fs::write(pkg.join("run.sh"), "echo hello from sh\n").expect("write");
    std::fs::write(pkg.join("lib/util.sh"), "true\n").expect("write");
    std::os::unix::fs::symlink("../run.sh", pkg.join("lib/again.sh")).expect("symlink");
    let pkg_arg = pkg.to_str().expect("utf-8");
    let config = server.dir.path().join("config.yml");
    std::fs::write(&config, "answer: 42\n").expect("write");
    let config_arg = config.to_str().expect("utf-8");

    // `berth code push report --runtime sh --dir PKG` and then `extra`.
    let push_report = |extra: &[&str]| {
        let mut args = vec![
            "code",
            "push",
            "report",
            "--runtime",
            "sh",
            "--dir",
            pkg_arg,
        ];
        args.extend_from_slice(extra);
        server.run(&p, &args)
    };
    let out = push_report(&["--file", "nope.sh"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("nope.sh"), "{}", out.stderr);

    let pushed = push_report(&[
        "--file",
        "run.sh",
        "--config-file",
        config_arg,
        "--retries",
        "2",
        "--retries-delay",
        "30s",
        "--json",
    ])
    .ok()
    .json();
    assert_eq!(pushed["rev"], 1, "{pushed}");
    let code = server
        .run(&p, &["code", "show", "report", "--json"])
        .ok()
        .json();
    assert_eq!(code["runtime"], "sh");
    assert_eq!(code["file_name"], "run.sh");
    assert_eq!(code["config"], "answer: 42\n");
    assert_eq!(code["retries_delay"], 30);

    let zip_path = server.dir.path().join("report.zip");
    server
        .run(
            &p,
            &[
                "code",
                "download",
                "report",
                "--revision",
                "1",
                "-o",
                zip_path.to_str().expect("utf-8"),
            ],
        )
        .ok();
    let bytes = std::fs::read(&zip_path).expect("downloaded zip");
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("a zip");
    let mut script = String::new();
    archive
        .by_name("lib/again.sh")
        .expect("the symlink, stored as its target")
        .read_to_string(&mut script)
        .expect("read");
    assert_eq!(script, "echo hello from sh\n");

    // A link out of the directory is refused before anything is sent.
    std::os::unix::fs::symlink("/etc/passwd", pkg.join("passwd")).expect("symlink");
    let out = push_report(&["--file", "run.sh"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("leads out"), "{}", out.stderr);
    let out = server.run(&p, &["code", "download", "report", "--revision", "9"]);
    assert_eq!(out.code, 125, "{}", out.stderr);

    server.operator(&["stack", "rm", "sh"]).ok();
    assert_eq!(server.operator(&["stack", "rm", "sh"]).code, 125);
    assert_eq!(
        server.operator(&["stack", "map", "cobol", "cobol:1"]).code,
        2
    );
}

#[test]
fn berth_hands_daemon_and_operator_commands_to_berthd() {
    let home = tempfile::tempdir().expect("home");
    // Next to berth (as built): berthd's own help, named as typed.
    let help = output({
        let mut c = bare_berth(home.path());
        c.args(["up", "--help"]);
        c
    })
    .ok();
    assert!(help.stdout.contains("--state-on-disk"), "{}", help.stdout);
    assert!(help.stdout.contains("Usage: berth up"), "{}", help.stdout);
    // A berth without berthd beside it or on PATH says so, and does nothing.
    let alone = tempfile::tempdir().expect("dir");
    let berth = alone.path().join("berth");
    std::fs::copy(common::berth_binary(), &berth).expect("copy berth");
    for command in ["up", "server", "agent", "project", "token", "stack"] {
        let out = output({
            let mut c = Command::new(&berth);
            c.env("PATH", "/nonexistent")
                .env("HOME", home.path())
                .arg("--data-dir")
                .arg(alone.path().join("data"))
                .arg(command)
                .stdin(Stdio::null());
            c
        });
        assert_eq!(out.code, 125, "{command}: {out:?}");
        assert!(
            out.stderr
                .contains(&format!("`berth {command}` is served by berthd"))
                && out.stderr.contains("nor on PATH"),
            "{command}: {}",
            out.stderr
        );
    }
    assert!(!alone.path().join("data").exists(), "something was made");
}

#[test]
fn errors_have_exit_codes() {
    let server = Server::start();
    let p = server.project("errors");
    server
        .run(&p, &["code", "push", "hello", "--image", "busybox"])
        .ok();

    // Unknown ids and names.
    let out = server.run(&p, &["task", "show", "000000000000000000000000"]);
    assert_eq!(out.code, 125, "{}", out.stderr);
    assert!(out.stderr.contains("not found"), "{}", out.stderr);
    let out = server.run(&p, &["task", "show", "000000000000000000000000", "--json"]);
    assert_eq!(out.code, 125);
    assert_eq!(out.json()["error"]["code"], "not_found");
    let out = server.run(&p, &["code", "show", "nope"]);
    assert_eq!(out.code, 125);
    assert!(
        out.stderr.contains("no code named \"nope\""),
        "{}",
        out.stderr
    );
    let out = server.run(&p, &["task", "queue", "nope"]);
    assert_eq!(out.code, 125, "{}", out.stderr);
    assert!(out.stderr.contains("nope"), "{}", out.stderr);

    // A bad token.
    let bad = Project {
        id: p.id.clone(),
        token: "bt_wrong".into(),
    };
    let out = server.run(&bad, &["task", "ls"]);
    assert_eq!(out.code, 125, "{}", out.stderr);
    assert!(out.stderr.contains("token"), "{}", out.stderr);
    let out = server.run(&bad, &["code", "ls", "--json"]);
    assert_eq!(out.json()["error"]["code"], "unauthorized");

    // Bad usage, caught by clap or by the server.
    let out = server.run(&p, &["task", "queue", "hello", "--priority", "5"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let out = server.run(&p, &["schedule", "create", "hello", "--run-every", "10"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let out = server.run(&p, &["task", "ls", "--from", "yesterday-ish"]);
    assert_eq!(out.code, 2, "{}", out.stderr);

    // No settings at all.
    let mut c = bare_berth(&server.home());
    c.args(["task", "ls"]);
    let out = output(c);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("berth up"), "{}", out.stderr);

    // A server that is not there.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let mut c = server.client(&p);
    c.env("BERTH_URL", &closed).args(["task", "ls"]);
    let out = output(c);
    assert_eq!(out.code, 125, "{}", out.stderr);
    assert!(
        out.stderr.contains(&closed) && out.stderr.contains("berth up"),
        "{}",
        out.stderr
    );
}

#[test]
fn waiting_exits_1_when_a_task_does_not_complete() {
    let server = Server::start();
    let p = server.project("wait");
    server
        .run(&p, &["code", "push", "hello", "--image", "busybox"])
        .ok();

    let mut c = server.client(&p);
    c.args(["task", "queue", "hello", "--wait"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut waiter = c.spawn().expect("start task queue --wait");
    // No agent runs it: find it queued and cancel it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let id = loop {
        let tasks = server.run(&p, &["task", "ls", "--json"]).ok().json();
        if let Some(id) = tasks["tasks"][0]["id"].as_str() {
            break id.to_owned();
        }
        assert!(Instant::now() < deadline, "the task was never queued");
        std::thread::sleep(Duration::from_millis(50));
    };

    let mut c = server.client(&p);
    c.args(["task", "log", "-f", &id]).stdout(Stdio::piped());
    let mut follower = c.spawn().expect("start task log -f");

    std::thread::sleep(Duration::from_millis(300));
    server.run(&p, &["task", "cancel", &id]).ok();
    let status = wait_with_deadline(&mut waiter, Duration::from_secs(30));
    assert_eq!(status, 1, "--wait should exit 1 for a cancelled task");
    let mut stderr = String::new();
    if let Some(mut pipe) = waiter.stderr.take() {
        pipe.read_to_string(&mut stderr).expect("read stderr");
    }
    assert!(stderr.contains("cancelled"), "{stderr}");
    let status = wait_with_deadline(&mut follower, Duration::from_secs(30));
    assert_eq!(status, 0, "log -f should end when the task ends");
}

fn wait_with_deadline(child: &mut Child, limit: Duration) -> i32 {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process did not end in {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn schedules_round_trip() {
    let server = Server::start();
    let p = server.project("schedules");
    server
        .run(&p, &["code", "push", "hello", "--image", "busybox"])
        .ok();

    let out = server
        .run(
            &p,
            &[
                "schedule",
                "create",
                "hello",
                "--start-at",
                "+10m",
                "--run-every",
                "1h",
                "--run-times",
                "3",
                "--payload",
                "tick",
                "--priority",
                "1",
            ],
        )
        .ok();
    let id = out.stdout.trim().to_owned();
    assert_eq!(id.len(), 24, "{}", out.stdout);
    let listed = server.run(&p, &["schedule", "ls", "--json"]).ok().json();
    let schedule = &listed["schedules"][0];
    assert_eq!(schedule["id"], id.as_str());
    assert_eq!(schedule["run_every"], 3600);
    assert_eq!(schedule["run_times"], 3);
    assert_eq!(schedule["status"], "scheduled");
    let table = server.run(&p, &["schedule", "ls"]).ok().stdout;
    assert!(table.starts_with("ID "), "{table}");
    assert!(table.contains("EVERY") && table.contains("0/3"), "{table}");
    let shown = server
        .run(&p, &["schedule", "show", &id, "--json"])
        .ok()
        .json();
    assert_eq!(shown["payload"], "tick");
    server.run(&p, &["schedule", "cancel", &id]).ok();
    let shown = server
        .run(&p, &["schedule", "show", &id, "--json"])
        .ok()
        .json();
    assert_eq!(shown["status"], "cancelled");
    let out = server.run(&p, &["schedule", "show", "000000000000000000000000"]);
    assert_eq!(out.code, 125);
}

#[test]
fn projects_and_tokens() {
    let server = Server::start();
    let p = server.project("first");
    let listed = server.operator(&["project", "ls", "--json"]).ok().json();
    assert_eq!(listed["projects"][0]["id"], p.id.as_str());
    assert!(server
        .operator(&["project", "ls"])
        .ok()
        .stdout
        .starts_with("ID "));

    let made = server
        .operator(&["token", "create", &p.id, "--name", "ci", "--json"])
        .ok()
        .json();
    let second = Project {
        id: p.id.clone(),
        token: made["token"].as_str().expect("secret").to_owned(),
    };
    server.run(&second, &["code", "ls"]).ok();
    let tokens = server
        .operator(&["token", "ls", &p.id, "--json"])
        .ok()
        .json();
    assert_eq!(tokens["tokens"].as_array().map(Vec::len), Some(2));
    let table = server.operator(&["token", "ls", &p.id]).ok().stdout;
    assert!(table.contains("REVOKED") && table.contains("ci"), "{table}");
    let token_id = made["id"].as_str().expect("token id");
    server.operator(&["token", "revoke", token_id]).ok();
    assert_eq!(server.run(&second, &["code", "ls"]).code, 125);
    assert_eq!(server.operator(&["token", "revoke", token_id]).code, 125);
    assert_eq!(server.operator(&["token", "create", "nope"]).code, 125);

    // A project's token does not open another project.
    let other = server.project("second");
    let crossed = Project {
        id: other.id.clone(),
        token: p.token.clone(),
    };
    assert_eq!(server.run(&crossed, &["code", "ls"]).code, 125);
}

#[test]
fn settings_come_from_the_config_file() {
    let server = Server::start();
    let p = server.project("config");
    let write = |path: &Path, url: &str, project: &str, token: &str| {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        let body = serde_json::json!({ "url": url, "project_id": project, "token": token });
        std::fs::write(path, body.to_string()).expect("write config");
    };

    // The default place: $HOME/.config/berth/config.json.
    let default = server.home().join(".config/berth/config.json");
    write(&default, &server.url, &p.id, &p.token);
    let mut c = bare_berth(&server.home());
    c.args(["code", "ls", "--json"]);
    let out = output(c).ok();
    assert_eq!(out.json()["codes"], serde_json::json!([]));

    // $XDG_CONFIG_HOME wins over $HOME; BERTH_CONFIG and --client-config name a file.
    let xdg = server.dir.path().join("xdg");
    write(
        &xdg.join("berth/config.json"),
        &server.url,
        &p.id,
        "bt_wrong",
    );
    let mut c = bare_berth(&server.home());
    c.env("XDG_CONFIG_HOME", &xdg).args(["code", "ls"]);
    assert_eq!(output(c).code, 125);
    let named = server.dir.path().join("named.json");
    write(&named, &server.url, &p.id, &p.token);
    let mut c = bare_berth(&server.home());
    c.env("XDG_CONFIG_HOME", &xdg)
        .env("BERTH_CONFIG", &named)
        .args(["code", "ls"]);
    output(c).ok();
    let mut c = bare_berth(&server.home());
    c.env("XDG_CONFIG_HOME", &xdg)
        .args(["code", "ls", "--client-config"])
        .arg(&named);
    output(c).ok();
    let mut c = bare_berth(&server.home());
    c.args(["code", "ls", "--client-config"])
        .arg(server.dir.path().join("missing.json"));
    assert_eq!(output(c).code, 2);
}

#[test]
fn flags_beat_variables_beat_the_file() {
    let server = Server::start();
    let p = server.project("precedence");
    let dead = format!("http://127.0.0.1:{}", free_port());
    let file = server.dir.path().join("config.json");
    let body = serde_json::json!({ "url": dead, "project_id": p.id, "token": "bt_from_file" });
    std::fs::write(&file, body.to_string()).expect("write config");
    let berth = |env: &[(&str, &str)], args: &[&str]| {
        let mut c = bare_berth(&server.home());
        c.env("BERTH_CONFIG", &file);
        for (k, v) in env {
            c.env(k, v);
        }
        c.args(["task", "ls"]).args(args);
        output(c)
    };

    // The file alone: a dead URL.
    let out = berth(&[], &[]);
    assert_eq!(out.code, 125);
    assert!(out.stderr.contains(&dead), "{}", out.stderr);
    // Variables beat the file (IRON_TOKEN counts as a fallback).
    berth(&[("BERTH_URL", &server.url), ("IRON_TOKEN", &p.token)], &[]).ok();
    // BERTH_TOKEN beats IRON_TOKEN.
    let out = berth(
        &[
            ("BERTH_URL", &server.url),
            ("BERTH_TOKEN", "bt_env"),
            ("IRON_TOKEN", &p.token),
        ],
        &[],
    );
    assert_eq!(out.code, 125, "{}", out.stderr);
    // Flags beat variables.
    berth(
        &[("BERTH_URL", &dead), ("BERTH_TOKEN", "bt_env")],
        &["--url", &server.url, "--token", &p.token],
    )
    .ok();
    let out = berth(
        &[("BERTH_URL", &server.url), ("BERTH_TOKEN", &p.token)],
        &["--project", "6b0000000000000000000000"],
    );
    assert_eq!(out.code, 125, "{}", out.stderr);
}
