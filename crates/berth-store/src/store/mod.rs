//! The [`Store`]: one API over SQLite and PostgreSQL.
//!
//! CONTRACT (the implementation must keep every point):
//! - Every project-facing method takes the caller's `project_id` and never
//!   reads or changes another project's rows; an id of another project is
//!   "not found" (`None` / `false`), never an error that reveals it exists.
//! - Writes a client is told about (queue_tasks, push_code, create_schedule,
//!   projects, tokens, stacks) are durable when the call returns (SQLite:
//!   `synchronous=FULL` on that connection; PostgreSQL: the default
//!   `synchronous_commit=on`). The dispatcher's transitions (claim_tasks,
//!   mark_running, end_attempt, fire_schedule) may use a relaxed sync
//!   (SQLite `synchronous=NORMAL` in WAL mode, PostgreSQL
//!   `synchronous_commit=off`): they survive a crash of the process, and
//!   after a power loss the dispatcher's reconciliation repairs them.
//! - Each state change is one transaction whose UPDATE is conditional on the
//!   state it expects, so concurrent writers cannot both win.
//! - Multi-row operations (queue_tasks) store all rows or none.
//!
//! Implementation: one set of SQL for both databases through sqlx's `Any`
//! driver. Placeholders are `$1, $2, …` (SQLite reads `$N` as parameter N).
//! Times are BIGINT milliseconds, booleans BIGINT 0/1 (SQLite has no
//! boolean type the `Any` driver can decode), JSON values TEXT. The few
//! places where the databases differ go through [`Dialect`]: the blob type
//! in DDL; row locks (`FOR UPDATE`, `FOR SHARE`, `SKIP LOCKED`, advisory
//! locks) that PostgreSQL needs and SQLite cannot parse; how a write
//! transaction begins (SQLite: `BEGIN IMMEDIATE`, which takes the database's
//! single write lock up front so that a transaction never has to upgrade a
//! read lock, the one case SQLite's busy timeout cannot wait out); and the
//! shape of end_attempt's write, the dispatcher's hottest (see there).
//!
//! Connections: PostgreSQL has a main pool (API reads, durable writes) and a
//! relaxed pool (`synchronous_commit=off`). SQLite has a pool of read-only
//! readers and two writer connections held for the life of the store, one
//! `synchronous=FULL` and one `synchronous=NORMAL` (see [`writer`]).

mod codes;
mod lease;
pub use lease::{LeaseGrant, LeaseHolder, ServerRecord, DISPATCH_LEASE};
mod migrations;
mod nodes;
mod overlays;
pub use nodes::{HeartbeatOutcome, HeartbeatWrite};
pub use overlays::{FIRST_FLEET_VNI, FLEET_OVERLAY_POOL, LAST_VNI};
pub use tasks::PlacementPlanner;
mod projects;
mod rows;
mod schedules;
mod sqlite;
mod tasks;
mod writer;

use crate::error::StoreError;
use crate::model::Millis;
use sqlite::{sqlite_pool, SQLITE_BUSY_TIMEOUT_MS};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Any, AnyConnection, AnyPool, ConnectOptions, Connection, Executor, Transaction};
use std::time::Duration;
use writer::Writer;

/// A higher priority's head start in the queue, per priority level.
///
/// Tasks are taken in order of `eligible_at - priority * PRIORITY_HEAD_START_MS`:
/// FIFO within a priority, higher priorities first, and a task is never
/// overtaken by a task that became eligible more than
/// `PRIORITY_HEAD_START_MS * (its priority - ours)` after it. So a
/// priority-0 task waits behind at most the higher-priority tasks that
/// arrived up to 60 s after it (the documented starvation bound).
pub const PRIORITY_HEAD_START_MS: Millis = 30_000;

/// SQLite read connections. Readers never block each other or the writer
/// in WAL mode, so a few let API reads proceed while the writers work.
const SQLITE_READERS: u32 = 4;

/// PostgreSQL connections for the API's reads and durable writes.
const PG_MAIN_CONNECTIONS: u32 = 8;
/// PostgreSQL connections for the dispatcher's relaxed transitions.
const PG_RELAXED_CONNECTIONS: u32 = 8;

/// A transaction left idle this long has its session ended by PostgreSQL.
/// berth's transactions never wait on their client that long; a server
/// frozen (SIGSTOP, a VM paused) inside one, holding the dispatch lease's
/// row FOR SHARE (every fenced transaction does), would otherwise keep the
/// next leader from taking the lease for as long as it stays frozen.
const IDLE_IN_TRANSACTION_LIMIT: &str = "SET idle_in_transaction_session_timeout = '2s'";

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// `clause` on PostgreSQL, nothing on SQLite: for row-locking clauses
    /// (`FOR UPDATE`, `FOR SHARE`) SQLite neither needs (its writers are
    /// serialized by `BEGIN IMMEDIATE`) nor parses.
    pub(crate) fn pg(self, clause: &'static str) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => clause,
        }
    }

    /// The type of byte-string columns in DDL.
    pub(crate) fn blob_type(self) -> &'static str {
        match self {
            Dialect::Sqlite => "BLOB",
            Dialect::Postgres => "BYTEA",
        }
    }
}

/// The control plane's state. Cheap to clone (pools inside).
#[derive(Clone)]
pub struct Store {
    dialect: Dialect,
    /// API reads. SQLite: several `query_only` connections (WAL readers run
    /// beside the writer); PostgreSQL: the main pool.
    read: AnyPool,
    /// Writes a client is told about: SQLite `synchronous=FULL`;
    /// PostgreSQL default `synchronous_commit=on` (the main pool).
    durable: Writer,
    /// The dispatcher's transitions: SQLite `synchronous=NORMAL`,
    /// PostgreSQL `synchronous_commit=off`.
    relaxed: Writer,
    /// The dispatch lease term this handle's dispatch writes are fenced by
    /// (see [`lease`]); `None` for the API's handle.
    fence: Option<i64>,
}

/// A write transaction on a [`WriteConn`].
pub(crate) type Tx<'c> = Transaction<'c, Any>;

impl Store {
    // ----- opening --------------------------------------------------------

    /// Opens (creating if needed) the database at `url` and applies every
    /// migration it has not had, in order, each in its own transaction,
    /// recorded in a `schema_migrations` table.
    ///
    /// `url`: `sqlite://PATH` (the file and its directory are created; WAL
    /// mode; busy timeout) or `postgres://…` / `postgresql://…`. A database
    /// whose schema is newer than this binary knows gives
    /// [`StoreError::SchemaTooNew`].
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let store = if let Some(path) = sqlite_path(url)? {
            Store::open_sqlite(path).await?
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Store::open_postgres(url).await?
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        };
        if let Err(err) = migrations::migrate(&store).await {
            store.close().await;
            return Err(err);
        }
        Ok(store)
    }

    async fn open_sqlite(path: &str) -> Result<Store, StoreError> {
        if let Some(parent) = std::path::Path::new(path).parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(sqlx::Error::Io)?;
            }
        }
        // Let sqlx build the URL so that odd characters in the path are
        // escaped the way its own parser expects.
        let sqlite = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true);
        let options = AnyConnectOptions::from_url(&sqlite.to_url_lossy())?;

        set_wal(&options).await?;

        const DURABLE: &[&str] = &["PRAGMA synchronous = FULL"];
        const RELAXED: &[&str] = &["PRAGMA synchronous = NORMAL"];
        const READER: &[&str] = &["PRAGMA query_only = 1"];
        let durable = Writer::held(options.clone(), DURABLE).await?;
        let relaxed = match Writer::held(options.clone(), RELAXED).await {
            Ok(writer) => writer,
            Err(err) => {
                durable.close().await;
                return Err(err.into());
            }
        };
        let read = match sqlite_pool(&options, SQLITE_READERS, READER).await {
            Ok(pool) => pool,
            Err(err) => {
                durable.close().await;
                relaxed.close().await;
                return Err(err.into());
            }
        };
        Ok(Store {
            dialect: Dialect::Sqlite,
            read,
            durable,
            relaxed,
            fence: None,
        })
    }

    async fn open_postgres(url: &str) -> Result<Store, StoreError> {
        let options: AnyConnectOptions = url.parse()?;
        let durable = AnyPoolOptions::new()
            .max_connections(PG_MAIN_CONNECTIONS)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute(IDLE_IN_TRANSACTION_LIMIT).await?;
                    Ok(())
                })
            })
            .connect_with(options.clone())
            .await?;
        let relaxed = AnyPoolOptions::new()
            .max_connections(PG_RELAXED_CONNECTIONS)
            // Not pinged before each use: a round trip per transition is
            // a large part of one, and the dispatcher retries a transition
            // that failed on a connection the server had dropped.
            .test_before_acquire(false)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("SET synchronous_commit = off").await?;
                    conn.execute(IDLE_IN_TRANSACTION_LIMIT).await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await;
        let relaxed = match relaxed {
            Ok(pool) => pool,
            Err(err) => {
                durable.close().await;
                return Err(err.into());
            }
        };
        Ok(Store {
            dialect: Dialect::Postgres,
            read: durable.clone(),
            durable: Writer::Pool(durable),
            relaxed: Writer::Pool(relaxed),
            fence: None,
        })
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The highest migration applied.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let version: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
                .fetch_one(&self.read)
                .await?;
        Ok(version)
    }

    /// Closes the pools and connections (waits for connections in use to be
    /// returned).
    pub async fn close(&self) {
        self.relaxed.close().await;
        self.durable.close().await;
        self.read.close().await;
    }

    // ----- helpers for the other modules ------------------------------------

    /// Begins a write transaction on `conn`: on SQLite with `BEGIN
    /// IMMEDIATE`, so the write lock is taken (waiting out other writers)
    /// before anything is read, and what the transaction reads cannot
    /// change before it writes.
    pub(crate) async fn begin_write<'c>(
        &self,
        conn: &'c mut AnyConnection,
    ) -> Result<Tx<'c>, StoreError> {
        Ok(match self.dialect {
            Dialect::Sqlite => conn.begin_with("BEGIN IMMEDIATE").await?,
            Dialect::Postgres => conn.begin().await?,
        })
    }
}

/// The file path of a `sqlite://PATH` or `sqlite:PATH` URL; `None` for
/// other schemes.
fn sqlite_path(url: &str) -> Result<Option<&str>, StoreError> {
    let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return Ok(None);
    };
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    // The store always opens read-write-create; accept the spelling of that
    // and refuse parameters it would silently ignore. An in-memory database
    // cannot be shared by the store's several pools.
    let query_ok = matches!(query, None | Some("") | Some("mode=rwc"));
    if path.is_empty() || path == ":memory:" || !query_ok {
        return Err(StoreError::UnsupportedUrl(url.to_string()));
    }
    Ok(Some(path))
}

/// Puts the database in WAL mode (a property of the file, so once is
/// enough): readers then never block the writer nor the writer them. A new
/// database also gets incremental auto-vacuum, so that the space of deleted
/// code packages can be given back to the file system (SQLite allows that
/// only before the first table exists; an older database keeps reusing
/// freed pages instead).
async fn set_wal(options: &AnyConnectOptions) -> Result<(), StoreError> {
    let mut conn = AnyConnection::connect_with(options).await?;
    let result = async {
        conn.execute(format!("PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}").as_str())
            .await?;
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL").await?;
        // Changing the journal mode needs an exclusive lock that the busy
        // timeout does not wait for; another process opening the same new
        // file at this moment can make it fail, so retry for a while.
        let mut attempts = 0;
        loop {
            let mode: Result<String, sqlx::Error> = sqlx::query_scalar("PRAGMA journal_mode = WAL")
                .fetch_one(&mut conn)
                .await;
            match mode {
                Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
                Ok(mode) if attempts >= 200 => {
                    return Err(StoreError::Database(sqlx::Error::Configuration(
                        format!("could not switch the SQLite database to WAL mode ({mode:?})")
                            .into(),
                    )))
                }
                Err(err) if attempts >= 200 => return Err(err.into()),
                _ => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    .await;
    // The connection was only for this; a failure to close it cleanly
    // changes nothing about the file.
    let _ = conn.close().await;
    result
}
