//! Writer connections: a pool on PostgreSQL, one held connection on SQLite.

use crate::error::StoreError;
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
/// local file does not go stale the way a network connection can, so
/// nothing is lost by never reconnecting. On PostgreSQL, a pool.
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

impl Writer {
    pub(crate) fn held(conn: AnyConnection) -> Writer {
        Writer::Held(Arc::new(Mutex::new(Some(HeldConn {
            conn,
            batch_pending: false,
        }))))
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
