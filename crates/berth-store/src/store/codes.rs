//! Codes, their revisions and packages.
//!
//! A code is a row in `codes` (name, paused, and a copy of the latest
//! revision's `max_concurrency` for the claim query) plus its immutable
//! revisions in `code_revisions`. Packages live once per SHA-256 in
//! `packages` and are referenced by revisions, so a re-upload of the same
//! zip costs nothing and a package is deleted only when no revision uses it.

use super::rows::{self, CODE_COLUMNS, REVISION_COLUMNS};
use super::{Dialect, Store};
use crate::error::StoreError;
use crate::ids::{new_id, now_millis};
use crate::model::*;
use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Row};

impl Store {
    // ----- codes ------------------------------------------------------------

    /// Stores a new revision of the code named `spec.name` (creating the
    /// code at revision 1), with its package, and returns the code with
    /// this revision as its latest. Packages are stored once per SHA-256.
    pub async fn push_code(
        &self,
        project_id: &str,
        spec: &NewCodeRevision,
        package: Option<&[u8]>,
    ) -> Result<Code, StoreError> {
        let now = now_millis();
        let env_vars = serde_json::to_string(&spec.env_vars)
            .map_err(|e| rows::corrupt("code_revisions", format!("env_vars: {e}")))?;
        let mut conn = self.durable.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;

        // The code row first (created at revision 0 if new), locked: two
        // pushes of one code number their revisions one after the other,
        // and the lock order (code, then package) is the one delete_code
        // uses too, so they cannot deadlock.
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
        let sql = format!(
            "SELECT id, paused, latest_rev, created_at FROM codes
             WHERE project_id = $1 AND name = $2 {}",
            self.dialect.pg("FOR UPDATE")
        );
        let row = sqlx::query(&sql)
            .bind(project_id)
            .bind(&spec.name)
            .fetch_one(&mut *tx)
            .await?;
        let code_id: String = row.try_get("id")?;
        let paused = row.try_get::<i64, _>("paused")? != 0;
        let created_at: i64 = row.try_get("created_at")?;
        let rev = row.try_get::<i64, _>("latest_rev")? + 1;

        let (package_sha256, package_size) = match package {
            Some(data) => {
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
                    "INSERT INTO packages (sha256, data, size) VALUES ($1, $2, $3)
                     ON CONFLICT (sha256) {conflict}"
                );
                sqlx::query(&sql)
                    .bind(&sha)
                    .bind(data)
                    .bind(data.len() as i64)
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
                 default_priority, package_sha256, package_size, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                 $17, $18)",
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
        tx.commit().await?;

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
    /// such leftovers are removed by a later `delete_code`. Packages no
    /// remaining revision references are deleted.
    pub async fn delete_code(&self, project_id: &str, code_id: &str) -> Result<bool, StoreError> {
        let now = now_millis();
        let mut conn = self.durable.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        // Lock the code first: queue_tasks holds it shared while it adds
        // tasks, so once we have it no new task of this code can appear
        // behind the cancellation below.
        let sql = format!(
            "SELECT id FROM codes WHERE id = $1 AND project_id = $2 {}",
            self.dialect.pg("FOR UPDATE")
        );
        let found = sqlx::query(&sql)
            .bind(code_id)
            .bind(project_id)
            .fetch_optional(&mut *tx)
            .await?;
        if found.is_none() {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE tasks SET status = 'cancelled', msg = 'code deleted', end_time = $3,
                 updated_at = $3
             WHERE code_id = $1 AND project_id = $2 AND status = 'queued'",
        )
        .bind(code_id)
        .bind(project_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM codes WHERE id = $1 AND project_id = $2")
            .bind(code_id)
            .bind(project_id)
            .execute(&mut *tx)
            .await?;
        remove_orphan_revisions(&mut tx, self.dialect).await?;
        tx.commit().await?;
        Ok(true)
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

/// Deletes every revision whose code is gone and that no preparing or
/// running task uses, then every package no revision references.
async fn remove_orphan_revisions(
    conn: &mut AnyConnection,
    dialect: Dialect,
) -> Result<(), StoreError> {
    let orphans = sqlx::query(
        "SELECT r.id, r.package_sha256 FROM code_revisions r
         WHERE NOT EXISTS (SELECT 1 FROM codes c WHERE c.id = r.code_id)
           AND NOT EXISTS (SELECT 1 FROM tasks t
                           WHERE t.code_id = r.code_id AND t.code_rev = r.rev
                             AND t.status IN ('preparing', 'running'))",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut packages = Vec::new();
    for row in &orphans {
        let id: String = row.try_get("id")?;
        if let Some(sha) = row.try_get::<Option<String>, _>("package_sha256")? {
            packages.push(sha);
        }
        sqlx::query("DELETE FROM code_revisions WHERE id = $1")
            .bind(id)
            .execute(&mut *conn)
            .await?;
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
        sqlx::query(
            "DELETE FROM packages WHERE sha256 = $1
             AND NOT EXISTS (SELECT 1 FROM code_revisions WHERE package_sha256 = $1)",
        )
        .bind(sha)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
