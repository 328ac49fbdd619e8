//! Writer connections: a pool on PostgreSQL, one held connection on SQLite.

use crate::error::StoreError;
use sqlx::any::AnyConnectOptions;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Connection, Executor};
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use tokio::sync::{Mutex, OwnedMappedMutexGuard, OwnedMutexGuard};

/// Where writes go.
///
/// On SQLite, one connection held for the life of the store: SQLite has
/// one writer at a time anyway, so more connections would only queue in
/// its busy handler, and a pool's acquire and release cost a few thread
/// hand-offs per operation, which measured as about a third of a
/// dispatcher transition. Writers queue fairly on the mutex instead. A
/// local file does not go stale the way a network connection can, so the
/// connection is replaced only when a failure left it unusable (see
/// [`Writer::acquire`]). On PostgreSQL, a pool.
#[derive(Clone)]
pub(crate) enum Writer {
    Pool(AnyPool),
    /// `None` once the store is closed.
    Held(Arc<Mutex<Option<HeldConn>>>),
}

/// The held SQLite connection and what a cancelled caller may have left on
/// it.
pub(crate) struct HeldConn {
    conn: AnyConnection,
    /// How to open a replacement, should this one be left unusable.
    options: AnyConnectOptions,
    pragmas: &'static [&'static str],
    /// A [`WriteConn::fetch_batch`] was started and has not been seen to
    /// finish: its caller was cancelled mid-way, and SQLite's worker thread
    /// stops a batch whose caller has gone after the statement it is on,
    /// which can leave the batch's transaction open.
    batch_pending: bool,
}

/// A writer connection, exclusively ours until dropped.
pub(crate) enum WriteConn {
    Pooled(PoolConnection<Any>),
    Held {
        conn: OwnedMappedMutexGuard<Option<HeldConn>, HeldConn>,
        /// Where `conn` lives, to clean up after an abandoned batch.
        home: Arc<Mutex<Option<HeldConn>>>,
    },
}

impl Drop for WriteConn {
    /// A batch abandoned mid-way may hold SQLite's write lock in an open
    /// transaction, stalling every other writer of the database until this
    /// connection is used again; so roll it back as soon as the connection
    /// is free rather than at its next use.
    fn drop(&mut self) {
        let WriteConn::Held { conn, home } = self else {
            return;
        };
        if !conn.batch_pending {
            return;
        }
        // Outside a runtime, the next acquire rolls it back instead (or
        // closing the connection does).
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let home = home.clone();
        runtime.spawn(async move {
            if let Some(held) = home.lock().await.as_mut() {
                if held.batch_pending {
                    roll_back(&mut held.conn).await;
                    held.batch_pending = false;
                }
            }
        });
    }
}

impl Deref for WriteConn {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        match self {
            WriteConn::Pooled(conn) => conn,
            WriteConn::Held { conn, .. } => &conn.conn,
        }
    }
}

impl DerefMut for WriteConn {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self {
            WriteConn::Pooled(conn) => conn,
            WriteConn::Held { conn, .. } => &mut conn.conn,
        }
    }
}

impl WriteConn {
    /// Runs a batch of statements that begins and commits its own
    /// transaction (`BEGIN IMMEDIATE; …; COMMIT`), in one round trip to
    /// SQLite's worker thread instead of one per statement. Returns the
    /// rows the batch produced.
    ///
    /// Should the batch fail, or its caller be cancelled while it runs, the
    /// transaction is rolled back (now, or when the connection is next
    /// acquired), so it is all or nothing like any other transaction.
    pub(crate) async fn fetch_batch<'q>(
        &mut self,
        query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    ) -> Result<Vec<sqlx::any::AnyRow>, StoreError> {
        match self {
            WriteConn::Pooled(conn) => Ok(query.fetch_all(&mut **conn).await?),
            WriteConn::Held { conn: held, .. } => {
                held.batch_pending = true;
                let result = query.fetch_all(&mut held.conn).await;
                if result.is_err() {
                    roll_back(&mut held.conn).await;
                }
                held.batch_pending = false;
                Ok(result?)
            }
        }
    }
}

/// Ends whatever transaction a batch left open. "No transaction is active"
/// (the batch had committed or never began) is the expected failure and
/// means there is nothing to do.
async fn roll_back(conn: &mut AnyConnection) {
    let _ = conn.execute("ROLLBACK").await;
}

/// Makes the held connection usable again after a transaction was dropped
/// without ending cleanly (no caller holds one while the connection is
/// ours).
///
/// Usually the dropped transaction's rollback is only still queued on the
/// connection's worker thread, and one round trip lets it run. But when a
/// statement or COMMIT fails with SQLITE_FULL or SQLITE_IOERR, SQLite may
/// already have rolled the transaction back itself; the driver's rollback
/// then fails with "no transaction is active" and the driver keeps
/// counting a transaction that no longer exists, refusing every later
/// BEGIN. A connection in that state is replaced by a fresh one, so that
/// a full disk fails the writes made while it is full and no more.
async fn repair(held: &mut HeldConn) -> Result<(), StoreError> {
    roll_back(&mut held.conn).await;
    if !held.conn.is_in_transaction() {
        return Ok(());
    }
    tracing::warn!("a failed SQLite write left its connection unusable; reopening it");
    let fresh = super::sqlite::sqlite_connection(&held.options, held.pragmas).await?;
    let stale = std::mem::replace(&mut held.conn, fresh);
    // Whatever the stale connection still holds ends with it; it has
    // nothing uncommitted that anyone was told about.
    let _ = stale.close().await;
    Ok(())
}

impl Writer {
    /// A held SQLite connection opened with `options` and set up with
    /// `pragmas` (again so for any replacement).
    pub(crate) async fn held(
        options: AnyConnectOptions,
        pragmas: &'static [&'static str],
    ) -> Result<Writer, sqlx::Error> {
        let conn = super::sqlite::sqlite_connection(&options, pragmas).await?;
        Ok(Writer::Held(Arc::new(Mutex::new(Some(HeldConn {
            conn,
            options,
            pragmas,
            batch_pending: false,
        })))))
    }

    pub(crate) async fn acquire(&self) -> Result<WriteConn, StoreError> {
        match self {
            Writer::Pool(pool) => Ok(WriteConn::Pooled(pool.acquire().await?)),
            Writer::Held(home) => {
                let guard = home.clone().lock_owned().await;
                let mut held = OwnedMutexGuard::try_map(guard, Option::as_mut)
                    .map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?;
                if held.batch_pending {
                    // The worker runs commands in order, so this comes after
                    // whatever part of the abandoned batch it still ran.
                    roll_back(&mut held.conn).await;
                    held.batch_pending = false;
                }
                if held.conn.is_in_transaction() {
                    repair(&mut held).await?;
                }
                Ok(WriteConn::Held {
                    conn: held,
                    home: home.clone(),
                })
            }
        }
    }

    pub(crate) async fn close(&self) {
        match self {
            Writer::Pool(pool) => pool.close().await,
            Writer::Held(held) => {
                if let Some(held) = held.lock().await.take() {
                    // Every write was committed before its call returned;
                    // an abandoned batch's transaction ends with the
                    // connection.
                    let _ = held.conn.close().await;
                }
            }
        }
    }
}
