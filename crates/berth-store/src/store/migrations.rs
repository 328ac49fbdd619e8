//! Versioned schema migrations.
//!
//! The schema is an ordered list of migrations kept in code. Each is applied
//! in its own transaction together with its row in `schema_migrations`, so
//! a migration is either wholly applied and recorded or not at all, and a
//! reopened database applies only what it lacks. Concurrent openers of one
//! database (two processes starting at once) are serialized: PostgreSQL by a
//! transaction-scoped advisory lock, SQLite by `BEGIN IMMEDIATE`; the one
//! that waited then sees the version the other recorded and applies nothing.

use super::{Dialect, Store};
use crate::error::StoreError;
use berth_core::time::now_millis;

/// One schema change. `sql` is shared by both databases; `{blob}` stands
/// for the byte-string type (BLOB / BYTEA), the only DDL difference berth
/// has. Integers are BIGINT (SQLite gives them INTEGER affinity), booleans
/// BIGINT 0/1, times BIGINT milliseconds, JSON TEXT.
struct Migration {
    version: i64,
    sql: &'static str,
}

/// Every migration, in order. Never edit one that has shipped: add another.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sql: r#"
CREATE TABLE projects (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects (id),
    name TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX tokens_project ON tokens (project_id, created_at);

CREATE TABLE stacks (
    runtime TEXT PRIMARY KEY,
    image TEXT NOT NULL,
    command TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE packages (
    sha256 TEXT PRIMARY KEY,
    data {blob} NOT NULL,
    size BIGINT NOT NULL
);

CREATE TABLE codes (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    name TEXT NOT NULL,
    paused BIGINT NOT NULL DEFAULT 0,
    max_concurrency BIGINT,
    latest_rev BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (project_id, name)
);

-- No foreign key to codes: a deleted code's revisions stay while a task
-- still runs them (see delete_code).
CREATE TABLE code_revisions (
    id TEXT PRIMARY KEY,
    code_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    rev BIGINT NOT NULL,
    name TEXT NOT NULL,
    image TEXT,
    runtime TEXT,
    file_name TEXT,
    command TEXT,
    config TEXT,
    env_vars TEXT NOT NULL,
    max_concurrency BIGINT,
    retries BIGINT NOT NULL,
    retries_delay BIGINT NOT NULL,
    default_priority BIGINT NOT NULL,
    package_sha256 TEXT REFERENCES packages (sha256),
    package_size BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (code_id, rev)
);
CREATE INDEX code_revisions_package ON code_revisions (package_sha256);

-- No foreign keys: tasks outlive their code, and every insert of the hot
-- path would pay for the check.
CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    code_id TEXT NOT NULL,
    code_name TEXT NOT NULL,
    code_rev BIGINT NOT NULL,
    status TEXT NOT NULL,
    msg TEXT,
    payload TEXT NOT NULL,
    priority BIGINT NOT NULL,
    timeout BIGINT NOT NULL,
    delay BIGINT NOT NULL,
    cluster TEXT,
    label TEXT,
    schedule_id TEXT,
    original_task_id TEXT,
    retry_count BIGINT NOT NULL DEFAULT 0,
    infra_failures BIGINT NOT NULL DEFAULT 0,
    percent BIGINT,
    exit_code BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    eligible_at BIGINT NOT NULL,
    sort_key BIGINT NOT NULL,
    start_time BIGINT,
    end_time BIGINT,
    attempt BIGINT NOT NULL DEFAULT 0,
    agent TEXT,
    cancel_requested BIGINT NOT NULL DEFAULT 0
);
-- The dispatcher changes a task's status three to four times; every index
-- that contains the status is rewritten each time, and those writes are
-- most of the cost of a transition. So the indexes the dispatcher needs
-- are partial, holding only the rows in the states they serve.
-- claim_tasks: queued tasks in queue order.
CREATE INDEX tasks_queue ON tasks (sort_key, id) WHERE status = 'queued';
-- next_eligible_at.
CREATE INDEX tasks_eligible ON tasks (eligible_at) WHERE status = 'queued';
-- active_tasks.
CREATE INDEX tasks_active ON tasks (id) WHERE status IN ('preparing', 'running');
-- GET /tasks, newest first.
CREATE INDEX tasks_project_created ON tasks (project_id, created_at, id);
-- max_concurrency counts, code stats, delete_code's cancellations.
CREATE INDEX tasks_code_status ON tasks (code_id, status);

CREATE TABLE task_logs (
    task_id TEXT PRIMARY KEY,
    data {blob} NOT NULL
);

CREATE TABLE schedules (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    code_name TEXT NOT NULL,
    payload TEXT NOT NULL,
    start_at BIGINT NOT NULL,
    run_every BIGINT,
    run_times BIGINT,
    end_at BIGINT,
    priority BIGINT,
    timeout BIGINT NOT NULL,
    cluster TEXT,
    label TEXT,
    status TEXT NOT NULL,
    next_start BIGINT,
    last_run_time BIGINT,
    run_count BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX schedules_due ON schedules (status, next_start);
CREATE INDEX schedules_project ON schedules (project_id, created_at, id);
"#,
    },
    Migration {
        version: 2,
        sql: r#"
-- What a package expands to (what it costs on agents; the project quota
-- counts it). NULL for packages stored before: they count at their size.
ALTER TABLE packages ADD COLUMN unpacked_size BIGINT;
-- A project's package usage, at every upload.
CREATE INDEX code_revisions_project ON code_revisions (project_id, package_sha256);
"#,
    },
    Migration {
        version: 3,
        sql: r#"
-- The fleet's hosts. `credential` is the bearer the server presents to the
-- host's agent (the agent made it; the server must send it as it is);
-- heartbeats are checked against the SHA-256 of the host's heartbeat
-- token. `report` is the host's last report (JSON: capacity, allocatable,
-- allocated, used, images, labels, version).
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    address TEXT NOT NULL,
    credential TEXT NOT NULL,
    heartbeat_sha256 TEXT NOT NULL UNIQUE,
    drained BIGINT NOT NULL DEFAULT 0,
    down BIGINT NOT NULL DEFAULT 0,
    operator_labels TEXT NOT NULL DEFAULT '{}',
    report TEXT NOT NULL,
    joined_at BIGINT NOT NULL,
    last_heartbeat BIGINT NOT NULL
);
CREATE INDEX nodes_heartbeat ON nodes (down, last_heartbeat);

-- Tokens of the fleet's operators (hosts, pools): no project's.
CREATE TABLE operator_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
"#,
    },
    Migration {
        version: 4,
        sql: r#"
-- What a code asks of the fleet for its tasks, and what a task overrides
-- (JSON PlacementSpec: resources, constraints, group rules, pool); what the
-- dispatcher reserved for the current attempt (JSON TaskPlacement, set at
-- placement) and the name of the host it placed it on.
ALTER TABLE code_revisions ADD COLUMN placement TEXT NOT NULL DEFAULT '{}';
ALTER TABLE tasks ADD COLUMN placement TEXT NOT NULL DEFAULT '{}';
ALTER TABLE tasks ADD COLUMN reserved TEXT;
ALTER TABLE tasks ADD COLUMN node_name TEXT;
"#,
    },
    Migration {
        version: 5,
        sql: r#"
-- Fair-share pools an operator configured (JSON Resources for min and max;
-- max NULL: no maximum). A pool not here has weight 1, no minimum, no
-- maximum (every project's own pool, unless configured).
CREATE TABLE pools (
    name TEXT PRIMARY KEY,
    weight BIGINT NOT NULL,
    min_resources TEXT NOT NULL,
    max_resources TEXT,
    updated_at BIGINT NOT NULL
);
"#,
    },
    Migration {
        version: 6,
        sql: r#"
-- Which server dispatches: one row per lease. `token` grows by one each
-- time the lease changes hands and fences the holder's writes;
-- `expires_at` is in the database's clock (milliseconds).
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    token BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
-- The servers sharing this store, as each last said (`berth server ls`).
CREATE TABLE servers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    url TEXT NOT NULL,
    version TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    last_seen BIGINT NOT NULL
);
"#,
    },
    Migration {
        version: 7,
        sql: r#"
-- The fair-share pool a task counts against (its own, else its code's,
-- else its project's), fixed when it is queued: the dispatcher takes
-- candidates from every pool's queue, so that one pool's backlog cannot
-- hide another's work from the fair-share order. Tasks queued before this
-- version are grouped by project for that choice (their pool still counts
-- for the share).
ALTER TABLE tasks ADD COLUMN pool TEXT;
UPDATE tasks SET pool = project_id WHERE status = 'queued';
CREATE INDEX tasks_pool_queue ON tasks (pool, sort_key, id) WHERE status = 'queued';
"#,
    },
    Migration {
        version: 8,
        sql: r#"
-- The network a code's tasks run on (`none`, `bridge`, or a user network's
-- name); NULL: the host's default bridge.
ALTER TABLE code_revisions ADD COLUMN network TEXT;
"#,
    },
    Migration {
        version: 9,
        sql: r#"
-- A project's overlay networks across the fleet. The VNI is the fleet's
-- (never given twice); subnets never overlap, so that any host can carry
-- any set of them.
CREATE TABLE overlay_networks (
    project_id TEXT NOT NULL REFERENCES projects(id),
    name TEXT NOT NULL,
    vni BIGINT NOT NULL UNIQUE,
    subnet TEXT NOT NULL UNIQUE,
    internal BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    -- The address given last: the next claim starts after it, so that an
    -- address just given back is not given again at once (other hosts'
    -- hosts files and ARP caches still know it as the old task's).
    last_address TEXT,
    PRIMARY KEY (project_id, name)
);
-- A task's address on its code's overlay network, claimed by the
-- dispatcher at its first attempt and kept while the task is queued or
-- runs (a retry on another host keeps it); a claim of a task that ended is
-- taken back by the next claim on that network.
CREATE TABLE overlay_addresses (
    task_id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    network TEXT NOT NULL,
    address TEXT NOT NULL,
    UNIQUE (project_id, network, address)
);
"#,
    },
];

/// The newest schema version this binary knows.
pub(crate) fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// A PostgreSQL advisory lock key ("berth" and 1) held while migrating.
const PG_MIGRATION_LOCK: i64 = 0x6265_7274_6801;

/// Applies every migration the database lacks, one transaction each.
pub(super) async fn migrate(store: &Store) -> Result<(), StoreError> {
    let known = latest_version();
    loop {
        let mut conn = store.durable.acquire().await?;
        let mut tx = store.begin_write(&mut conn).await?;
        if store.dialect == Dialect::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(PG_MIGRATION_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        // Created under the lock: PostgreSQL's CREATE TABLE IF NOT EXISTS
        // is not safe against a concurrent one.
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version BIGINT PRIMARY KEY,
                 applied_at BIGINT NOT NULL
             )",
        )
        .execute(&mut *tx)
        .await?;
        let found: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
                .fetch_one(&mut *tx)
                .await?;
        if found > known {
            return Err(StoreError::SchemaTooNew { found, known });
        }
        let Some(next) = MIGRATIONS.iter().find(|m| m.version > found) else {
            tx.commit().await?;
            return Ok(());
        };
        let sql = next.sql.replace("{blob}", store.dialect.blob_type());
        sqlx::raw_sql(&sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(next.version)
            .bind(now_millis())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(version = next.version, "applied schema migration");
    }
}
