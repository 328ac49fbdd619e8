//! The dispatch lease and its fencing token, and the servers sharing the
//! store.
//!
//! Any number of servers may share one database; exactly one of them
//! dispatches (claims and places tasks, records how attempts end, marks
//! silent hosts down, fires schedules). It is the one holding the
//! [`DISPATCH_LEASE`]. Taking the lease bumps its `token`; the holder's
//! store handle carries that token ([`Store::fenced`]) and every dispatch
//! write made through it checks, in the same statement or transaction, that
//! the token is still the lease's and the lease has not expired, holding
//! the lease row shared (PostgreSQL `FOR SHARE`) so that a takeover waits
//! for writes under way and every later write of the old holder fails. A
//! leader paused past its lease (SIGSTOP, a partition, a long GC) and then
//! resumed can therefore neither place, start nor finish anything: the
//! store refuses with [`StoreError::Fenced`].
//!
//! Expiry is judged by the database's clock, never a server's, so that
//! servers with skewed clocks still agree on who leads.

use super::{Dialect, Store, Tx};
use crate::error::StoreError;
use crate::model::Millis;
use sqlx::Row;
use std::time::Duration;

/// The lease whose holder dispatches.
pub const DISPATCH_LEASE: &str = "dispatch";

/// A lease taken or renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseGrant {
    /// The fencing token of this holder's term.
    pub token: i64,
    /// When it expires unless renewed (the database's clock, ms).
    pub expires_at: Millis,
    /// The database's clock when it was granted (ms): `expires_at - now`
    /// is how long the holder has, whatever its own clock says.
    pub now: Millis,
}

/// Who holds a lease, as the database says now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LeaseHolder {
    pub holder: String,
    pub token: i64,
    pub expires_at: Millis,
    /// Whether it is still held (not expired by the database's clock).
    pub live: bool,
}

/// A server sharing the store, as it last said.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServerRecord {
    pub id: String,
    pub name: String,
    /// Where its API answers.
    pub url: String,
    pub version: String,
    pub started_at: Millis,
    pub last_seen: Millis,
}

impl Dialect {
    /// The database's clock in milliseconds since the epoch, as SQL.
    pub(crate) fn now_ms(self) -> &'static str {
        match self {
            Dialect::Sqlite => {
                "CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)"
            }
            Dialect::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Store {
    /// This store, its dispatch writes fenced by `token` (a term of the
    /// [`DISPATCH_LEASE`] this server holds): they fail with
    /// [`StoreError::Fenced`] once another server has taken the lease or it
    /// has expired.
    pub fn fenced(&self, token: i64) -> Store {
        Store {
            fence: Some(token),
            ..self.clone()
        }
    }

    /// The fencing token this handle's writes carry, if any.
    pub fn fence(&self) -> Option<i64> {
        self.fence
    }

    /// Takes `lease` for `holder` if it is free or expired (or `holder`'s
    /// own), for `ttl`, starting a new term (a new token). `None`: another
    /// server holds it.
    pub async fn acquire_lease(
        &self,
        lease: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<LeaseGrant>, StoreError> {
        let now = self.dialect.now_ms();
        // One statement: two servers racing for a free lease cannot both
        // win (the row's uniqueness, then its update, decide).
        let sql = format!(
            "INSERT INTO leases (name, holder, token, expires_at)
             VALUES ($1, $2, 1, {now} + $3)
             ON CONFLICT (name) DO UPDATE
                 SET holder = excluded.holder, token = leases.token + 1,
                     expires_at = excluded.expires_at
                 WHERE leases.expires_at <= {now} OR leases.holder = excluded.holder
             RETURNING token, expires_at, {now} AS now"
        );
        let row = sqlx::query(&sql)
            .bind(lease)
            .bind(holder)
            .bind(millis(ttl))
            // Every row, not the first: on SQLite an autocommit statement
            // commits (and reports a failed commit, a full disk) only when
            // stepped to its end.
            .fetch_all(&mut *self.durable.acquire().await?)
            .await?;
        row.first().map(grant).transpose()
    }

    /// Extends `holder`'s term `token` of `lease` by `ttl` from now. `None`:
    /// the term is over (another server took the lease, or it expired:
    /// writes of the term may have been refused meanwhile, so it cannot go
    /// on; the holder may acquire a new term); the caller must stop
    /// dispatching at once.
    pub async fn renew_lease(
        &self,
        lease: &str,
        holder: &str,
        token: i64,
        ttl: Duration,
    ) -> Result<Option<LeaseGrant>, StoreError> {
        let now = self.dialect.now_ms();
        let sql = format!(
            "UPDATE leases SET expires_at = {now} + $4
             WHERE name = $1 AND holder = $2 AND token = $3 AND expires_at > {now}
             RETURNING token, expires_at, {now} AS now"
        );
        let row = sqlx::query(&sql)
            .bind(lease)
            .bind(holder)
            .bind(token)
            .bind(millis(ttl))
            // Every row, not the first: on SQLite an autocommit statement
            // commits (and reports a failed commit, a full disk) only when
            // stepped to its end.
            .fetch_all(&mut *self.durable.acquire().await?)
            .await?;
        row.first().map(grant).transpose()
    }

    /// Gives the lease up at once (a graceful stop), so that another server
    /// takes it without waiting for it to expire. `false`: the term was
    /// already over.
    pub async fn release_lease(
        &self,
        lease: &str,
        holder: &str,
        token: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE leases SET expires_at = 0 WHERE name = $1 AND holder = $2 AND token = $3",
        )
        .bind(lease)
        .bind(holder)
        .bind(token)
        .execute(&mut *self.durable.acquire().await?)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Who holds `lease` (`None`: nobody ever took it).
    pub async fn lease(&self, lease: &str) -> Result<Option<LeaseHolder>, StoreError> {
        let now = self.dialect.now_ms();
        let row = sqlx::query(&format!(
            "SELECT holder, token, expires_at, {now} AS now FROM leases WHERE name = $1"
        ))
        .bind(lease)
        .fetch_optional(&self.read)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let expires_at: i64 = row.try_get("expires_at")?;
        let now: i64 = row.try_get("now")?;
        Ok(Some(LeaseHolder {
            holder: row.try_get("holder")?,
            token: row.try_get("token")?,
            expires_at,
            live: expires_at > now,
        }))
    }

    /// The SQL condition that this handle's term still holds the dispatch
    /// lease, with the token as parameter `$param`; `None` for an unfenced
    /// handle. On PostgreSQL it locks the lease row shared until the
    /// transaction ends, so that a takeover waits for the write.
    pub(crate) fn fence_condition(&self, param: usize) -> Option<String> {
        self.fence?;
        let now = self.dialect.now_ms();
        let lock = self.dialect.pg(" FOR SHARE");
        Some(format!(
            "EXISTS (SELECT 1 FROM leases WHERE name = '{DISPATCH_LEASE}' AND token = ${param}
                 AND expires_at > {now}{lock})"
        ))
    }

    /// Inside a write transaction: fails with [`StoreError::Fenced`] unless
    /// this handle is unfenced or its term still holds the lease (held
    /// shared to the end of the transaction, see [`Store::fence_condition`]).
    pub(crate) async fn check_fence(&self, tx: &mut Tx<'_>) -> Result<(), StoreError> {
        let (Some(token), Some(condition)) = (self.fence, self.fence_condition(1)) else {
            return Ok(());
        };
        let held: Option<i64> =
            sqlx::query_scalar(&format!("SELECT CAST(1 AS BIGINT) WHERE {condition}"))
                .bind(token)
                .fetch_optional(&mut **tx)
                .await?;
        match held {
            Some(_) => Ok(()),
            None => Err(StoreError::Fenced { token }),
        }
    }

    /// After a fenced single-statement write changed nothing: whether that
    /// was the fence (then [`StoreError::Fenced`]) or the row's state.
    pub(crate) async fn explain_no_change(&self) -> Result<(), StoreError> {
        let (Some(token), Some(condition)) = (self.fence, self.fence_condition(1)) else {
            return Ok(());
        };
        let condition = condition.replace(" FOR SHARE", "");
        let held: Option<i64> =
            sqlx::query_scalar(&format!("SELECT CAST(1 AS BIGINT) WHERE {condition}"))
                .bind(token)
                .fetch_optional(&self.read)
                .await?;
        match held {
            Some(_) => Ok(()),
            None => Err(StoreError::Fenced { token }),
        }
    }

    // ----- servers ---------------------------------------------------------

    /// Records (or refreshes) a server sharing the store; `last_seen` is
    /// the database's clock.
    pub async fn server_seen(&self, server: &ServerRecord) -> Result<(), StoreError> {
        let now = self.dialect.now_ms();
        sqlx::query(&format!(
            "INSERT INTO servers (id, name, url, version, started_at, last_seen)
             VALUES ($1, $2, $3, $4, $5, {now})
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, url = excluded.url,
                 version = excluded.version, last_seen = excluded.last_seen"
        ))
        .bind(&server.id)
        .bind(&server.name)
        .bind(&server.url)
        .bind(&server.version)
        .bind(server.started_at)
        .execute(&mut *self.durable.acquire().await?)
        .await?;
        Ok(())
    }

    /// Forgets a server (it stopped), and servers not seen since `before`
    /// (the database's clock minus `forget_after`).
    pub async fn server_gone(&self, id: &str, forget_after: Duration) -> Result<(), StoreError> {
        let now = self.dialect.now_ms();
        sqlx::query(&format!(
            "DELETE FROM servers WHERE id = $1 OR last_seen < {now} - $2"
        ))
        .bind(id)
        .bind(millis(forget_after))
        .execute(&mut *self.durable.acquire().await?)
        .await?;
        Ok(())
    }

    /// Every server recorded, oldest first, with the database's clock now.
    pub async fn servers(&self) -> Result<(Vec<ServerRecord>, Millis), StoreError> {
        let now = self.dialect.now_ms();
        let rows = sqlx::query(&format!(
            "SELECT id, name, url, version, started_at, last_seen, {now} AS now
             FROM servers ORDER BY started_at, id"
        ))
        .fetch_all(&self.read)
        .await?;
        let mut now_ms = None;
        let servers = rows
            .iter()
            .map(|row| {
                now_ms = Some(row.try_get::<i64, _>("now")?);
                Ok(ServerRecord {
                    id: row.try_get("id")?,
                    name: row.try_get("name")?,
                    url: row.try_get("url")?,
                    version: row.try_get("version")?,
                    started_at: row.try_get("started_at")?,
                    last_seen: row.try_get("last_seen")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let now = match now_ms {
            Some(now) => now,
            None => {
                sqlx::query_scalar(&format!("SELECT {now}"))
                    .fetch_one(&self.read)
                    .await?
            }
        };
        Ok((servers, now))
    }
}

fn grant(row: &sqlx::any::AnyRow) -> Result<LeaseGrant, StoreError> {
    Ok(LeaseGrant {
        token: row.try_get("token")?,
        expires_at: row.try_get("expires_at")?,
        now: row.try_get("now")?,
    })
}
