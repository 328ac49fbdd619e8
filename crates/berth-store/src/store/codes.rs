//! Codes, their revisions and packages.
//!
//! A code is a row in `codes` (name, paused, and a copy of the latest
//! revision's `max_concurrency` for the claim query) plus its immutable
//! revisions in `code_revisions`. Packages live once per SHA-256 in
//! `packages` and are referenced by revisions, so a re-upload of the same
//! zip costs nothing and a package is deleted only when no revision uses it.
//!
//! What is kept ([`CodeLimits`]): a code's newest `revisions_kept`
//! revisions, and any revision a queued, preparing or running task uses
//! (the task runs the revision it was queued with). A revision that is
//! neither (older than that, or of a deleted code) is deleted, by the
//! upload that pushed it out, by `delete_code`, or once its last task has
//! ended by [`Store::collect_garbage`]; and with the last revision that
//! references it, a package.

use super::rows::{self, CODE_COLUMNS, REVISION_COLUMNS};
use super::{Dialect, Store};
use crate::error::StoreError;
use crate::ids::new_id;
use crate::model::*;
use berth_core::time::now_millis;
use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Row};
use std::collections::HashSet;

impl Store {
    // ----- codes ------------------------------------------------------------

    /// Stores a new revision of the code named `spec.name` (creating the
    /// code at revision 1), with its package, and returns the code with
    /// this revision as its latest. Packages are stored once per SHA-256.
    /// No limits: every revision is kept ([`Store::push_code_limited`]).
    pub async fn push_code(
        &self,
        project_id: &str,
        spec: &NewCodeRevision,
        package: Option<&[u8]>,
    ) -> Result<Code, StoreError> {
        let package = package.map(|data| NewPackage {
            data,
            unpacked_size: None,
        });
        self.push_code_limited(project_id, spec, package, CodeLimits::default())
            .await
    }

    /// [`Store::push_code`], held to `limits`: revisions of this code
    /// beyond `revisions_kept` are deleted with it (see the module docs),
    /// and an upload that would take the project's package usage over
    /// `max_project_package_bytes` (and raise it) stores nothing and gives
    /// [`StoreError::QuotaExceeded`].
    pub async fn push_code_limited(
        &self,
        project_id: &str,
        spec: &NewCodeRevision,
        package: Option<NewPackage<'_>>,
        limits: CodeLimits,
    ) -> Result<Code, StoreError> {
        let now = now_millis();
        let placement = serde_json::to_string(&spec.placement)
            .map_err(|e| rows::corrupt("code_revisions", format!("placement: {e}")))?;
        let env_vars = serde_json::to_string(&spec.env_vars)
            .map_err(|e| rows::corrupt("code_revisions", format!("env_vars: {e}")))?;
        let mut conn = self.durable.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;

        // The usage before, with the project locked first: two uploads of
        // one project are checked one after the other (PostgreSQL; SQLite
        // serializes writers anyway). Nothing else locks a project row in
        // a write, so this adds no lock-order cycle.
        let in_use = match limits.max_project_package_bytes {
            Some(_) => {
                let lock = format!(
                    "SELECT id FROM projects WHERE id = $1 {}",
                    self.dialect.pg("FOR UPDATE")
                );
                sqlx::query(&lock)
                    .bind(project_id)
                    .execute(&mut *tx)
                    .await?;
                Some(project_package_bytes(&mut tx, project_id).await?)
            }
            None => None,
        };

        // The code row first (created at revision 0 if new), locked: two
        // pushes of one code number their revisions one after the other,
        // and the lock order (code, then package) is the one delete_code
        // uses too, so they cannot deadlock.
        let sql = format!(
            "SELECT id, paused, latest_rev, created_at FROM codes
             WHERE project_id = $1 AND name = $2 {}",
            self.dialect.pg("FOR UPDATE")
        );
        let mut attempts = 0;
        let row = loop {
            sqlx::query(
                "INSERT INTO codes (id, project_id, name, paused, latest_rev, created_at, updated_at)
                 VALUES ($1, $2, $3, 0, 0, $4, $4)
                 ON CONFLICT (project_id, name) DO NOTHING",
            )
            .bind(new_id())
            .bind(project_id)
            .bind(&spec.name)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let found = sqlx::query(&sql)
                .bind(project_id)
                .bind(&spec.name)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(row) = found {
                break row;
            }
            // PostgreSQL: a delete_code of this code committed between the
            // two statements (the insert saw its row, the lock found it
            // gone). The code is new again: insert it now.
            attempts += 1;
            if attempts >= 3 {
                return Err(StoreError::Conflict(format!(
                    "code {:?} was deleted while this revision was being stored; try again",
                    spec.name
                )));
            }
        };
        let code_id: String = row.try_get("id")?;
        let paused = row.try_get::<i64, _>("paused")? != 0;
        let created_at: i64 = row.try_get("created_at")?;
        let rev = row.try_get::<i64, _>("latest_rev")? + 1;

        // Revisions this one pushes out go first, before the package is
        // inserted: a push then never holds a package row while it waits for
        // the lock that guards package deletion (see remove_unused_revisions).
        let removed = match limits.revisions_kept {
            Some(kept) => {
                remove_unused_revisions(
                    &mut tx,
                    self.dialect,
                    Unused::OlderThan {
                        code_id: &code_id,
                        rev: rev - kept.max(1) + 1,
                    },
                )
                .await?
            }
            None => GarbageReport::default(),
        };

        let (package_sha256, package_size) = match package {
            Some(NewPackage {
                data,
                unpacked_size,
            }) => {
                let sha = hex::encode(Sha256::digest(data));
                // PostgreSQL: DO UPDATE (of a small column) takes the row
                // lock, so a concurrent delete_code cannot remove the
                // package between this insert and the revision's. SQLite
                // serializes writers and need not rewrite the blob.
                let conflict = match self.dialect {
                    Dialect::Sqlite => "DO NOTHING",
                    Dialect::Postgres => "DO UPDATE SET size = excluded.size",
                };
                let sql = format!(
                    "INSERT INTO packages (sha256, data, size, unpacked_size) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (sha256) {conflict}"
                );
                sqlx::query(&sql)
                    .bind(&sha)
                    .bind(data)
                    .bind(data.len() as i64)
                    .bind(unpacked_size)
                    .execute(&mut *tx)
                    .await?;
                (Some(sha), data.len() as i64)
            }
            None => (None, 0),
        };

        let revision = CodeRevision {
            code_id: code_id.clone(),
            id: new_id(),
            project_id: project_id.to_string(),
            rev,
            spec: spec.clone(),
            package_sha256,
            package_size,
            created_at: now,
        };
        sqlx::query(
            "INSERT INTO code_revisions (id, code_id, project_id, rev, name, image, runtime,
                 file_name, command, config, env_vars, max_concurrency, retries, retries_delay,
                 default_priority, package_sha256, package_size, created_at, placement, network)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                 $17, $18, $19, $20)",
        )
        .bind(&revision.id)
        .bind(&revision.code_id)
        .bind(&revision.project_id)
        .bind(revision.rev)
        .bind(&spec.name)
        .bind(&spec.image)
        .bind(&spec.runtime)
        .bind(&spec.file_name)
        .bind(&spec.command)
        .bind(&spec.config)
        .bind(env_vars)
        .bind(spec.max_concurrency)
        .bind(spec.retries)
        .bind(spec.retries_delay)
        .bind(spec.default_priority)
        .bind(&revision.package_sha256)
        .bind(revision.package_size)
        .bind(revision.created_at)
        .bind(placement)
        .bind(revision.spec.network.as_ref().map(|n| n.to_string()))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE codes SET latest_rev = $2, max_concurrency = $3, updated_at = $4
             WHERE id = $1",
        )
        .bind(&code_id)
        .bind(rev)
        .bind(spec.max_concurrency)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if let (Some(limit), Some(in_use)) = (limits.max_project_package_bytes, in_use) {
            let would_use = project_package_bytes(&mut tx, project_id).await?;
            // An upload that does not add to the usage (a revision without
            // a package, one whose package the project has) passes even
            // when the limit was lowered below the usage.
            if would_use > limit && would_use > in_use {
                tx.rollback().await?;
                return Err(StoreError::QuotaExceeded {
                    limit,
                    in_use,
                    would_use,
                });
            }
        }
        tx.commit().await?;
        drop(conn);
        if removed.packages > 0 {
            self.reclaim_space().await;
        }

        Ok(Code {
            id: code_id,
            project_id: project_id.to_string(),
            name: spec.name.clone(),
            paused,
            created_at,
            latest: revision,
        })
    }

    /// Codes by name, paged.
    pub async fn codes(&self, project_id: &str, page: Page) -> Result<Vec<Code>, StoreError> {
        let (limit, offset) = rows::limit_offset(page);
        let sql = format!(
            "SELECT {CODE_COLUMNS}, {REVISION_COLUMNS}
             FROM codes c JOIN code_revisions r ON r.code_id = c.id AND r.rev = c.latest_rev
             WHERE c.project_id = $1 ORDER BY c.name LIMIT $2 OFFSET $3"
        );
        let found = sqlx::query(&sql)
            .bind(project_id)
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.read)
            .await?;
        found.iter().map(rows::code).collect()
    }

    pub async fn code(&self, project_id: &str, code_id: &str) -> Result<Option<Code>, StoreError> {
        let sql = format!(
            "SELECT {CODE_COLUMNS}, {REVISION_COLUMNS}
             FROM codes c JOIN code_revisions r ON r.code_id = c.id AND r.rev = c.latest_rev
             WHERE c.project_id = $1 AND c.id = $2"
        );
        let row = sqlx::query(&sql)
            .bind(project_id)
            .bind(code_id)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(rows::code).transpose()
    }

    pub async fn code_by_name(
        &self,
        project_id: &str,
        name: &str,
    ) -> Result<Option<Code>, StoreError> {
        let sql = format!(
            "SELECT {CODE_COLUMNS}, {REVISION_COLUMNS}
             FROM codes c JOIN code_revisions r ON r.code_id = c.id AND r.rev = c.latest_rev
             WHERE c.project_id = $1 AND c.name = $2"
        );
        let row = sqlx::query(&sql)
            .bind(project_id)
            .bind(name)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(rows::code).transpose()
    }

    /// Deletes the code and its revisions; its queued tasks become
    /// `cancelled` with msg "code deleted" (running ones finish normally;
    /// their rows keep the code's name). False if unknown.
    ///
    /// A revision that a preparing or running task still uses is kept
    /// (invisible: its code is gone) until that task has ended, so that
    /// [`Store::active_tasks`] can still hand it to a restarted dispatcher;
    /// such leftovers are removed by [`Store::collect_garbage`] (or a later
    /// `delete_code`). Packages no remaining revision references are deleted.
    pub async fn delete_code(&self, project_id: &str, code_id: &str) -> Result<bool, StoreError> {
        let now = now_millis();
        let mut conn = self.durable.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        let cancelled = lock_code_and_cancel_queued(
            &mut tx,
            self.dialect,
            project_id,
            code_id,
            "code deleted",
            now,
        )
        .await?;
        if cancelled.is_none() {
            return Ok(false);
        }
        sqlx::query("DELETE FROM codes WHERE id = $1 AND project_id = $2")
            .bind(code_id)
            .bind(project_id)
            .execute(&mut *tx)
            .await?;
        let removed =
            remove_unused_revisions(&mut tx, self.dialect, Unused::OfDeletedCodes).await?;
        tx.commit().await?;
        drop(conn);
        if removed.packages > 0 {
            self.reclaim_space().await;
        }
        Ok(true)
    }

    /// Deletes the revisions nothing keeps any more (see the module docs):
    /// of deleted codes, and beyond `revisions_kept` of each code, once no
    /// queued, preparing or running task uses them; then the packages no
    /// revision references. The dispatcher calls it now and then, since a
    /// task's end can release a revision.
    pub async fn collect_garbage(
        &self,
        revisions_kept: Option<i64>,
    ) -> Result<GarbageReport, StoreError> {
        // Most calls find nothing: look before taking the write lock.
        let mut kinds = vec![Unused::OfDeletedCodes];
        if let Some(kept) = revisions_kept {
            kinds.push(Unused::BeyondKept(kept));
        }
        let mut found = false;
        {
            let mut read = self.read.acquire().await?;
            for kind in &kinds {
                found = found || any_unused(&mut read, *kind).await?;
            }
        }
        if !found {
            return Ok(GarbageReport::default());
        }
        let mut conn = self.durable.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        self.check_fence(&mut tx).await?;
        let mut removed = GarbageReport::default();
        for kind in kinds {
            let more = remove_unused_revisions(&mut tx, self.dialect, kind).await?;
            removed.revisions += more.revisions;
            removed.packages += more.packages;
        }
        tx.commit().await?;
        drop(conn);
        if removed.packages > 0 {
            self.reclaim_space().await;
        }
        Ok(removed)
    }

    /// The SHA-256 of every stored package (the dispatcher keeps the
    /// agents' package images of these, and removes the others).
    pub async fn package_digests(&self) -> Result<HashSet<String>, StoreError> {
        let digests: Vec<String> = sqlx::query_scalar("SELECT sha256 FROM packages")
            .fetch_all(&self.read)
            .await?;
        Ok(digests.into_iter().collect())
    }

    /// Bytes the project's packages take, unpacked (see [`CodeLimits`]).
    pub async fn package_usage(&self, project_id: &str) -> Result<i64, StoreError> {
        let mut conn = self.read.acquire().await?;
        project_package_bytes(&mut conn, project_id).await
    }

    /// SQLite: gives the pages of deleted packages back to the file system
    /// (databases created with incremental auto-vacuum; older ones reuse
    /// them for later writes). A failure is logged: the rows are gone
    /// either way.
    async fn reclaim_space(&self) {
        if self.dialect != Dialect::Sqlite {
            return;
        }
        let result = async {
            let mut conn = self.durable.acquire().await?;
            sqlx::query("PRAGMA incremental_vacuum")
                .fetch_all(&mut *conn)
                .await?;
            Ok::<_, StoreError>(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!("returning deleted packages' space to the file system: {e}");
        }
    }

    /// Revisions, newest first, paged; `None` if the code is unknown.
    pub async fn revisions(
        &self,
        project_id: &str,
        code_id: &str,
        page: Page,
    ) -> Result<Option<Vec<CodeRevision>>, StoreError> {
        let (limit, offset) = rows::limit_offset(page);
        let mut conn = self.read.acquire().await?;
        let exists = sqlx::query("SELECT 1 FROM codes WHERE id = $1 AND project_id = $2")
            .bind(code_id)
            .bind(project_id)
            .fetch_optional(&mut *conn)
            .await?;
        if exists.is_none() {
            return Ok(None);
        }
        let sql = format!(
            "SELECT {REVISION_COLUMNS} FROM code_revisions r
             WHERE r.code_id = $1 AND r.project_id = $2
             ORDER BY r.rev DESC LIMIT $3 OFFSET $4"
        );
        let found = sqlx::query(&sql)
            .bind(code_id)
            .bind(project_id)
            .bind(limit)
            .bind(offset)
            .fetch_all(&mut *conn)
            .await?;
        found
            .iter()
            .map(rows::revision)
            .collect::<Result<_, _>>()
            .map(Some)
    }

    /// A revision (the latest when `rev` is `None`) and its package bytes
    /// (empty if it has none); `None` if the code or revision is unknown.
    pub async fn package(
        &self,
        project_id: &str,
        code_id: &str,
        rev: Option<i64>,
    ) -> Result<Option<(CodeRevision, Vec<u8>)>, StoreError> {
        let sql = format!(
            "SELECT {REVISION_COLUMNS}, p.data AS package_data
             FROM codes c
             JOIN code_revisions r ON r.code_id = c.id AND r.rev = COALESCE($3, c.latest_rev)
             LEFT JOIN packages p ON p.sha256 = r.package_sha256
             WHERE c.id = $1 AND c.project_id = $2"
        );
        let row = sqlx::query(&sql)
            .bind(code_id)
            .bind(project_id)
            .bind(rev)
            .fetch_optional(&self.read)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let data: Option<Vec<u8>> = row.try_get("package_data")?;
        Ok(Some((rows::revision(&row)?, data.unwrap_or_default())))
    }

    /// Package bytes by SHA-256, for the dispatcher to ship to agents.
    pub async fn package_by_sha256(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let data: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT data FROM packages WHERE sha256 = $1")
                .bind(sha256)
                .fetch_optional(&self.read)
                .await?;
        Ok(data)
    }

    /// Pauses or resumes the code's task queue (paused: queued tasks stay
    /// queued, none is claimed). False if unknown.
    pub async fn set_paused(
        &self,
        project_id: &str,
        code_id: &str,
        paused: bool,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE codes SET paused = $3, updated_at = $4 WHERE id = $1 AND project_id = $2",
        )
        .bind(code_id)
        .bind(project_id)
        .bind(i64::from(paused))
        .bind(now_millis())
        .execute(&mut *self.durable.acquire().await?)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Task counts by status; `None` if the code is unknown.
    pub async fn code_stats(
        &self,
        project_id: &str,
        code_id: &str,
    ) -> Result<Option<CodeStats>, StoreError> {
        let mut conn = self.read.acquire().await?;
        let exists = sqlx::query("SELECT 1 FROM codes WHERE id = $1 AND project_id = $2")
            .bind(code_id)
            .bind(project_id)
            .fetch_optional(&mut *conn)
            .await?;
        if exists.is_none() {
            return Ok(None);
        }
        let counts = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM tasks
             WHERE code_id = $1 AND project_id = $2 GROUP BY status",
        )
        .bind(code_id)
        .bind(project_id)
        .fetch_all(&mut *conn)
        .await?;
        let mut stats = CodeStats::default();
        for row in &counts {
            let status: String = row.try_get("status")?;
            let n: i64 = row.try_get("n")?;
            let status: TaskStatus = status.parse().map_err(|e| rows::corrupt("tasks", e))?;
            let slot = match status {
                TaskStatus::Queued => &mut stats.queued,
                TaskStatus::Preparing => &mut stats.preparing,
                TaskStatus::Running => &mut stats.running,
                TaskStatus::Complete => &mut stats.complete,
                TaskStatus::Error => &mut stats.error,
                TaskStatus::Cancelled => &mut stats.cancelled,
                TaskStatus::Killed => &mut stats.killed,
                TaskStatus::Timeout => &mut stats.timeout,
            };
            *slot += n;
        }
        Ok(Some(stats))
    }
}

/// A PostgreSQL advisory lock key ("berth" and 2) held by a transaction
/// that deletes packages.
const PG_PACKAGE_DELETION_LOCK: i64 = 0x6265_7274_6802;

/// No queued, preparing or running task uses revision `r`.
const UNUSED: &str = "NOT EXISTS (SELECT 1 FROM tasks t
                       WHERE t.code_id = r.code_id AND t.code_rev = r.rev
                         AND t.status IN ('queued', 'preparing', 'running'))";

/// Which revisions [`remove_unused_revisions`] looks at.
#[derive(Clone, Copy)]
enum Unused<'a> {
    /// Those whose code is gone.
    OfDeletedCodes,
    /// This code's, numbered below `rev`.
    OlderThan { code_id: &'a str, rev: i64 },
    /// Every code's, beyond its newest this many.
    BeyondKept(i64),
}

impl Unused<'_> {
    /// The revisions (`r`) of this kind, whether used or not; `$1`, `$2`
    /// are bound by [`Unused::bind`].
    fn selection(self) -> &'static str {
        match self {
            Unused::OfDeletedCodes => {
                "FROM code_revisions r
                 WHERE NOT EXISTS (SELECT 1 FROM codes c WHERE c.id = r.code_id)"
            }
            Unused::OlderThan { .. } => "FROM code_revisions r WHERE r.code_id = $1 AND r.rev < $2",
            Unused::BeyondKept(_) => {
                "FROM code_revisions r JOIN codes c ON c.id = r.code_id
                 WHERE r.rev <= c.latest_rev - $1"
            }
        }
    }

    fn bind<'q, O>(
        self,
        query: sqlx::query::QueryAs<'q, sqlx::Any, O, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::QueryAs<'q, sqlx::Any, O, sqlx::any::AnyArguments<'q>>
    where
        Self: 'q,
    {
        match self {
            Unused::OfDeletedCodes => query,
            Unused::OlderThan { code_id, rev } => query.bind(code_id).bind(rev),
            // At least the latest revision is kept.
            Unused::BeyondKept(kept) => query.bind(kept.max(1)),
        }
    }
}

/// Whether any revision of kind `which` is unused (a read, before taking
/// the write lock to delete them).
async fn any_unused(conn: &mut AnyConnection, which: Unused<'_>) -> Result<bool, StoreError> {
    let sql = format!("SELECT r.id {} AND {UNUSED} LIMIT 1", which.selection());
    let found: Option<(String,)> = which
        .bind(sqlx::query_as(&sql))
        .fetch_optional(&mut *conn)
        .await?;
    Ok(found.is_some())
}

/// Deletes the revisions of kind `which` that no queued, preparing or
/// running task uses, then every package none references any more.
async fn remove_unused_revisions(
    conn: &mut AnyConnection,
    dialect: Dialect,
    which: Unused<'_>,
) -> Result<GarbageReport, StoreError> {
    let sql = format!(
        "SELECT r.id, r.package_sha256 {} AND {UNUSED}",
        which.selection()
    );
    let doomed: Vec<(String, Option<String>)> = which
        .bind(sqlx::query_as(&sql))
        .fetch_all(&mut *conn)
        .await?;
    if doomed.is_empty() {
        return Ok(GarbageReport::default());
    }
    if dialect == Dialect::Postgres {
        // One package deleter at a time: each locks several package rows,
        // and two of them (or one and a push that pushes revisions out)
        // could otherwise each hold a row the other waits for.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PG_PACKAGE_DELETION_LOCK)
            .execute(&mut *conn)
            .await?;
    }
    let mut report = GarbageReport::default();
    let mut packages = Vec::new();
    for (id, sha) in doomed {
        if let Some(sha) = sha {
            packages.push(sha);
        }
        sqlx::query("DELETE FROM code_revisions WHERE id = $1")
            .bind(id)
            .execute(&mut *conn)
            .await?;
        report.revisions += 1;
    }
    // In a fixed order, so two deleters lock packages alike.
    packages.sort();
    packages.dedup();
    let lock = format!(
        "SELECT sha256 FROM packages WHERE sha256 = $1 {}",
        dialect.pg("FOR UPDATE")
    );
    for sha in &packages {
        // PostgreSQL: with the row locked, a push that is adding a revision
        // for it either committed before (and the check below, a new
        // statement, sees its revision) or waits and re-inserts the package.
        sqlx::query(&lock).bind(sha).execute(&mut *conn).await?;
        let deleted = sqlx::query(
            "DELETE FROM packages WHERE sha256 = $1
             AND NOT EXISTS (SELECT 1 FROM code_revisions WHERE package_sha256 = $1)",
        )
        .bind(sha)
        .execute(&mut *conn)
        .await?;
        report.packages += deleted.rows_affected();
    }
    Ok(report)
}

/// Bytes the project's packages take unpacked: each distinct package its
/// revisions reference, once.
async fn project_package_bytes(
    conn: &mut AnyConnection,
    project_id: &str,
) -> Result<i64, StoreError> {
    let bytes: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(COALESCE(p.unpacked_size, p.size)), 0) AS BIGINT)
         FROM packages p
         WHERE p.sha256 IN (SELECT r.package_sha256 FROM code_revisions r
                            WHERE r.project_id = $1 AND r.package_sha256 IS NOT NULL)",
    )
    .bind(project_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(bytes)
}

/// Locks the project's code for the rest of `tx` and cancels its queued
/// tasks with `msg`: how many, or `None` (nothing done) if the project has
/// no such code.
/// queue_tasks holds the code's row shared while it adds tasks, so once this
/// holds it no new task of the code can appear behind the cancellation.
pub(super) async fn lock_code_and_cancel_queued(
    tx: &mut super::Tx<'_>,
    dialect: Dialect,
    project_id: &str,
    code_id: &str,
    msg: &str,
    now: Millis,
) -> Result<Option<u64>, StoreError> {
    let sql = format!(
        "SELECT id FROM codes WHERE id = $1 AND project_id = $2 {}",
        dialect.pg("FOR UPDATE")
    );
    let found = sqlx::query(&sql)
        .bind(code_id)
        .bind(project_id)
        .fetch_optional(&mut **tx)
        .await?;
    if found.is_none() {
        return Ok(None);
    }
    let cancelled = sqlx::query(
        "UPDATE tasks SET status = 'cancelled', msg = $4, end_time = $3, updated_at = $3
         WHERE code_id = $1 AND project_id = $2 AND status = 'queued'",
    )
    .bind(code_id)
    .bind(project_id)
    .bind(now)
    .bind(msg)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(Some(cancelled))
}
