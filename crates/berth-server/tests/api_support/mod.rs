//! What the API tests share: the real router served in-process over a real
//! store (SQLite in a tempdir, or a throw-away PostgreSQL database), a
//! small HTTP client bound to a project's token, and zip builders.
//!
//! Every test body is a `fn(&Harness)`; [`both!`] makes a SQLite and a
//! PostgreSQL test of each.

#![allow(dead_code)]

use berth_server::{router, AppState, Dispatch, HeartbeatWriter, ServerConfig};
use berth_store::Store;
use berth_testkit::http::{multipart, Endpoint, Part, Response};
use serde_json::{json, Value};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

/// Generates `mod NAME { fn sqlite(); fn postgres(); }` for each test body
/// `fn NAME(&Harness)` of the calling file.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn sqlite() {
                    crate::api_support::run_sqlite(super::$name);
                }

                #[test]
                #[cfg_attr(
                    not(postgres_tests),
                    ignore = "PostgreSQL is not set up here: run scripts/test.sh, or export BERTH_TEST_POSTGRES_URL=$(bash scripts/postgres.sh)"
                )]
                fn postgres() {
                    crate::api_support::run_postgres(super::$name);
                }
            }
        )*
    };
}

/// The fleet's join token in the tests.
pub const JOIN_TOKEN: &str = "join-token-of-the-test-fleet";

/// The limits the tests run with: the defaults, but smaller bodies,
/// packages and quotas so that "too large" is cheap to send.
pub fn test_config() -> ServerConfig {
    ServerConfig {
        max_json_bytes: 256 * 1024,
        max_package_bytes: 2 * 1024 * 1024,
        max_project_package_bytes: Some(3 * 1024 * 1024),
        code_revisions_kept: Some(3),
        fleet: berth_server::FleetConfig {
            join_token: Some(JOIN_TOKEN.to_owned()),
            ..berth_server::FleetConfig::default()
        },
        ..ServerConfig::default()
    }
}

/// `len` bytes that do not compress.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ seed;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn run_sqlite(test: fn(&Harness)) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/berth.db", dir.path().display());
    let harness = Harness::start(&url, Backing::Sqlite(dir));
    test(&harness);
}

pub fn run_postgres(test: fn(&Harness)) {
    // Ignored at build time when PostgreSQL is not set up (see build.rs):
    // a variant that runs without it fails rather than pass empty.
    let db = berth_testkit::postgres::TestDatabase::create()
        .expect("BERTH_TEST_POSTGRES_URL was set when the tests were built but not now");
    let url = db.url().to_owned();
    let harness = Harness::start(&url, Backing::Postgres(db));
    test(&harness);
}

/// What must outlive the store.
pub enum Backing {
    Sqlite(tempfile::TempDir),
    Postgres(berth_testkit::postgres::TestDatabase),
}

/// A project's view of the API: its id and token.
#[derive(Debug, Clone)]
pub struct Client {
    pub endpoint: Endpoint,
    pub project: String,
    pub token: String,
}

impl Client {
    /// `/2/projects/{project}/{rest}`.
    pub fn path(&self, rest: &str) -> String {
        format!("/2/projects/{}/{}", self.project, rest)
    }

    fn auth(&self) -> String {
        format!("OAuth {}", self.token)
    }

    /// Any request to any path (absolute), with this client's token.
    pub fn raw(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        let auth = self.auth();
        let mut all = vec![("Authorization", auth.as_str())];
        all.extend_from_slice(headers);
        self.endpoint
            .request(method, path, &all, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub fn get(&self, rest: &str) -> Response {
        self.raw("GET", &self.path(rest), &[], b"")
    }

    pub fn delete(&self, rest: &str) -> Response {
        self.raw("DELETE", &self.path(rest), &[], b"")
    }

    pub fn post_json(&self, rest: &str, body: &Value) -> Response {
        self.post(rest, "application/json", body.to_string().as_bytes())
    }

    pub fn post(&self, rest: &str, content_type: &str, body: &[u8]) -> Response {
        self.raw(
            "POST",
            &self.path(rest),
            &[("Content-Type", content_type)],
            body,
        )
    }

    /// `POST /codes` as multipart: `data` and, if given, `file`.
    pub fn upload(&self, data: &Value, zip: Option<&[u8]>) -> Response {
        let mut parts = vec![Part::field("data", data.to_string())];
        if let Some(zip) = zip {
            parts.push(Part::file("file", "code.zip", "application/zip", zip));
        }
        let (content_type, body) = multipart(&parts);
        self.post("codes", &content_type, &body)
    }

    /// Uploads an image-form code; returns its id.
    pub fn image_code(&self, name: &str) -> String {
        let r = self.upload(
            &json!({"name": name, "image": "busybox", "command": "echo hi"}),
            None,
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["id"].as_str().expect("code id").to_owned()
    }

    /// Queues tasks of `code` with these payloads; returns their ids.
    pub fn queue(&self, code: &str, payloads: &[&str]) -> Vec<String> {
        let tasks: Vec<Value> = payloads
            .iter()
            .map(|p| json!({"code_name": code, "payload": p}))
            .collect();
        let r = self.post_json("tasks", &json!({ "tasks": tasks }));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["msg"], "Queued up");
        ids(&r.json()["tasks"])
    }

    /// Every task of the project (up to 100).
    pub fn all_tasks(&self) -> Vec<Value> {
        let r = self.get("tasks?per_page=100");
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["tasks"].as_array().expect("tasks").clone()
    }

    pub fn all_codes(&self) -> Vec<Value> {
        let r = self.get("codes?per_page=100");
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["codes"].as_array().expect("codes").clone()
    }

    pub fn all_schedules(&self) -> Vec<Value> {
        let r = self.get("schedules?per_page=100");
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["schedules"].as_array().expect("schedules").clone()
    }
}

/// The `id`s of a JSON array of objects.
pub fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("array")
        .iter()
        .map(|t| t["id"].as_str().expect("id").to_owned())
        .collect()
}

/// The `Warning` headers of a response, in order.
pub fn warnings(r: &Response) -> Vec<String> {
    r.headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("warning"))
        .map(|(_, v)| v.clone())
        .collect()
}

/// Asserts an error answer: this status, JSON `{"msg": …}` containing
/// `needle` (case-insensitive).
#[track_caller]
pub fn assert_error(r: &Response, status: u16, needle: &str) {
    assert_eq!(r.status, status, "body: {}", r.text());
    let body = r.json();
    let msg = body["msg"]
        .as_str()
        .unwrap_or_else(|| panic!("no msg in {}", r.text()));
    assert!(
        msg.to_lowercase().contains(&needle.to_lowercase()),
        "msg {msg:?} does not mention {needle:?}"
    );
    assert_eq!(
        body.as_object().map(|o| o.len()),
        Some(1),
        "error body has more than msg: {}",
        r.text()
    );
}

/// The server, its store and the first project's client.
pub struct Harness {
    pub client: Client,
    pub store: Store,
    pub addr: SocketAddr,
    pub config: ServerConfig,
    rt: tokio::runtime::Runtime,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    backing: Option<Backing>,
}

impl std::ops::Deref for Harness {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Harness {
    pub fn start(url: &str, backing: Backing) -> Harness {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let config = test_config();
        let store = rt.block_on(Store::open(url)).expect("open store");
        let heartbeats = rt.block_on(async { HeartbeatWriter::spawn(store.clone()) });
        let state = AppState {
            heartbeats,
            store: store.clone(),
            dispatch: Arc::new(Dispatch::default()),
            config: Arc::new(config.clone()),
        };
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let limits = config.connections;
        let server = rt.spawn(async move {
            berth_http::serve(listener, router(state), limits, async {
                let _ = rx.await;
            })
            .await;
        });
        let endpoint = Endpoint::Tcp(addr);
        let mut harness = Harness {
            client: Client {
                endpoint,
                project: String::new(),
                token: String::new(),
            },
            store,
            addr,
            config,
            rt,
            shutdown: Some(tx),
            server: Some(server),
            backing: Some(backing),
        };
        harness.client = harness.new_project("first");
        harness
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// A new project with a token, and its client.
    pub fn new_project(&self, name: &str) -> Client {
        let project = self
            .block_on(self.store.create_project(name))
            .expect("create project");
        let (_, token) = self
            .block_on(self.store.create_token(&project.id, "test"))
            .expect("create token");
        Client {
            endpoint: Endpoint::Tcp(self.addr),
            project: project.id,
            token,
        }
    }

    /// Configures the runtime `name` (classic form).
    pub fn stack(&self, name: &str) {
        self.block_on(self.store.set_stack(
            name,
            "busybox:latest",
            &["sh".to_owned(), "{file}".to_owned()],
        ))
        .expect("set stack");
    }

    /// Claims every queued task as agent `agent` (so they are preparing),
    /// returning (id, attempt) pairs.
    pub fn claim_all(&self, agent: &str) -> Vec<(String, i64)> {
        let claimed = self
            .block_on(self.store.claim_tasks(
                agent,
                1000,
                berth_core::time::now_millis() + 10_000_000,
            ))
            .expect("claim");
        claimed
            .into_iter()
            .map(|c| (c.task.id, c.task.attempt))
            .collect()
    }

    /// Runs a claimed task to `status` with `log` as its output.
    pub fn finish(&self, id: &str, attempt: i64, status: berth_store::TaskStatus, log: &[u8]) {
        let now = berth_core::time::now_millis();
        assert!(self
            .block_on(self.store.mark_running(id, attempt, now))
            .expect("mark running"));
        let end = berth_store::AttemptEnd::Finished {
            status,
            msg: None,
            exit_code: Some(0),
            end_time: now + 1500,
            log: log.to_vec(),
        };
        assert!(self
            .block_on(self.store.end_attempt(id, attempt, end, now + 1500))
            .expect("end attempt"));
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = self.rt.block_on(server);
        }
        self.rt.block_on(self.store.close());
        // The database goes last, after every connection is closed.
        drop(self.backing.take());
    }
}

// ----- zips -------------------------------------------------------------------

/// A zip of `(name, content)` regular files (directories: names ending
/// in `/`).
pub fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o755);
    for (name, content) in files {
        if name.ends_with('/') {
            writer.add_directory(*name, options).expect("add directory");
        } else {
            writer.start_file(*name, options).expect("start file");
            writer.write_all(content).expect("write");
        }
    }
    writer.finish().expect("finish zip").into_inner()
}

/// A zip with a regular file and a symbolic link.
pub fn zip_with_symlink() -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default();
    writer.start_file("hello.sh", options).expect("start file");
    writer.write_all(b"echo hi\n").expect("write");
    writer
        .add_symlink("passwd", "/etc/passwd", options)
        .expect("symlink");
    writer.finish().expect("finish zip").into_inner()
}
