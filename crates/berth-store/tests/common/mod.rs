//! Shared harness: every test runs once on SQLite (a temporary directory)
//! and once on PostgreSQL (a throw-away database from berth-testkit).

#![allow(dead_code)]

use berth_store::*;
use berth_testkit::postgres::TestDatabase;
use std::future::Future;
use tempfile::TempDir;

/// A database for one test; it is removed when this value drops.
pub struct Db {
    pub url: String,
    _dir: Option<TempDir>,
    _pg: Option<TestDatabase>,
}

impl Db {
    pub fn sqlite() -> Db {
        let dir = TempDir::new().expect("temp dir");
        // A subdirectory that does not exist yet: open must create it.
        let url = format!("sqlite://{}/data/berth.db", dir.path().display());
        Db {
            url,
            _dir: Some(dir),
            _pg: None,
        }
    }

    /// A throw-away PostgreSQL database. The PostgreSQL variants are
    /// ignored at build time when PostgreSQL is not set up (see build.rs),
    /// so one that runs without it fails here rather than pass empty.
    pub fn postgres() -> Option<Db> {
        let pg = TestDatabase::create()
            .expect("BERTH_TEST_POSTGRES_URL was set when the tests were built but not now");
        Some(Db {
            url: pg.url().to_string(),
            _dir: None,
            _pg: Some(pg),
        })
    }

    pub fn is_sqlite(&self) -> bool {
        self.url.starts_with("sqlite:")
    }

    pub async fn open(&self) -> Store {
        Store::open(&self.url).await.expect("open store")
    }

    /// A raw connection pool, for looking behind the store's back.
    pub async fn raw(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        sqlx::AnyPool::connect(&self.url).await.expect("raw pool")
    }
}

pub async fn run_with_db<F, Fut>(db: Option<Db>, test: F)
where
    F: FnOnce(Db) -> Fut,
    Fut: Future<Output = Db>,
{
    let Some(db) = db else { return };
    // The test hands the Db back so that it outlives every Store it opened.
    let db = test(db).await;
    drop(db);
}

pub async fn run_with_store<F, Fut>(db: Option<Db>, test: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(db) = db else { return };
    let store = db.open().await;
    test(store.clone()).await;
    store.close().await;
    drop(db);
}

/// `store_tests!(a, b)` makes `sqlite::a`, `postgres::a`, … from
/// `async fn a(store: Store)`.
#[macro_export]
macro_rules! store_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $crate::common::run_with_store(Some($crate::common::Db::sqlite()), super::$name)
                        .await;
                }
            )*
        }
        mod postgres {
            $(
                #[cfg_attr(
                    not(postgres_tests),
                    ignore = "PostgreSQL is not set up here: run scripts/test.sh, or export BERTH_TEST_POSTGRES_URL=$(bash scripts/postgres.sh)"
                )]
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $crate::common::run_with_store($crate::common::Db::postgres(), super::$name)
                        .await;
                }
            )*
        }
    };
}

/// Like [`store_tests!`] for tests that open the database themselves:
/// `async fn a(db: Db) -> Db`.
#[macro_export]
macro_rules! db_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite_db {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $crate::common::run_with_db(Some($crate::common::Db::sqlite()), super::$name)
                        .await;
                }
            )*
        }
        mod postgres_db {
            $(
                #[cfg_attr(
                    not(postgres_tests),
                    ignore = "PostgreSQL is not set up here: run scripts/test.sh, or export BERTH_TEST_POSTGRES_URL=$(bash scripts/postgres.sh)"
                )]
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $crate::common::run_with_db($crate::common::Db::postgres(), super::$name)
                        .await;
                }
            )*
        }
    };
}

pub const ALL: Page = Page {
    page: 0,
    per_page: 100,
};

pub fn code_spec(name: &str) -> NewCodeRevision {
    NewCodeRevision {
        name: name.to_string(),
        image: Some("alpine:3".to_string()),
        command: Some("echo hello".to_string()),
        ..Default::default()
    }
}

pub fn new_task(code: &str) -> NewTask {
    NewTask {
        code_name: code.to_string(),
        payload: "{}".to_string(),
        priority: None,
        timeout: 3600,
        delay: 0,
        cluster: None,
        label: None,
        schedule_id: None,
        original_task_id: None,
        placement: Default::default(),
    }
}

pub fn with_priority(code: &str, priority: i64) -> NewTask {
    NewTask {
        priority: Some(priority),
        ..new_task(code)
    }
}

/// A project with one code named `code`.
pub async fn project_with_code(store: &Store, code: &str) -> (String, Code) {
    let project = store.create_project("p").await.expect("project");
    let code = store
        .push_code(&project.id, &code_spec(code), None)
        .await
        .expect("push code");
    (project.id, code)
}

pub async fn queue_one(store: &Store, project: &str, task: NewTask, now: Millis) -> String {
    store
        .queue_tasks(project, &[task], now)
        .await
        .expect("queue")
        .remove(0)
}

pub fn finished(status: TaskStatus, log: &[u8], end_time: Millis) -> AttemptEnd {
    AttemptEnd::Finished {
        status,
        msg: None,
        exit_code: Some(0),
        end_time,
        log: log.to_vec(),
    }
}

pub async fn claim_ids(store: &Store, limit: usize, now: Millis) -> Vec<String> {
    store
        .claim_tasks("agent-1", limit, now)
        .await
        .expect("claim")
        .into_iter()
        .map(|c| c.task.id)
        .collect()
}
