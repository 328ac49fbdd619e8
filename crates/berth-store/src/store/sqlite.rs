//! How berth opens SQLite connections: the busy timeout every connection
//! needs and the per-connection pragmas, for the reader pool and the
//! writers alike.

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, Connection, Executor};

/// How long a SQLite connection waits for another writer's lock before
/// giving up with "database is locked". Writers hold the lock for
/// milliseconds; ten seconds only runs out when something is stuck.
pub(super) const SQLITE_BUSY_TIMEOUT_MS: u64 = 10_000;

/// A SQLite connection set up with `pragmas`.
pub(super) async fn sqlite_connection(
    options: &AnyConnectOptions,
    pragmas: &'static [&'static str],
) -> Result<AnyConnection, sqlx::Error> {
    let mut conn = AnyConnection::connect_with(options).await?;
    match sqlite_setup(&mut conn, pragmas).await {
        Ok(()) => Ok(conn),
        Err(err) => {
            let _ = conn.close().await;
            Err(err)
        }
    }
}

/// A pool of SQLite connections, each set up with `pragmas`.
pub(super) async fn sqlite_pool(
    options: &AnyConnectOptions,
    max_connections: u32,
    pragmas: &'static [&'static str],
) -> Result<AnyPool, sqlx::Error> {
    AnyPoolOptions::new()
        .max_connections(max_connections)
        // A local file does not go stale the way a network connection
        // can; pinging it before every use would cost a round trip to the
        // connection's worker thread per operation.
        .test_before_acquire(false)
        .after_connect(move |conn, _| Box::pin(sqlite_setup(conn, pragmas)))
        .connect_with(options.clone())
        .await
}

/// Runs the busy timeout, which every connection needs, then `pragmas`
/// (per-connection settings: SQLite keeps them for the connection only).
async fn sqlite_setup(conn: &mut AnyConnection, pragmas: &[&str]) -> Result<(), sqlx::Error> {
    conn.execute(format!("PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}").as_str())
        .await?;
    for pragma in pragmas {
        conn.execute(*pragma).await?;
    }
    Ok(())
}
