//! Tasks: queueing and reading them for the API, and the dispatcher's
//! transitions (claim, running, end of attempt).
//!
//! Every transition is an UPDATE conditional on the state it expects
//! (`status`, and `attempt` for the dispatcher's), so of two racing writers
//! exactly one changes the row and the other learns it lost from the row
//! count.

use super::rows::{self, REVISION_COLUMNS, TASK_COLUMNS};
use super::{Dialect, Store, Tx, PRIORITY_HEAD_START_MS};
use crate::error::StoreError;
use crate::ids::new_id;
use crate::model::*;
use sqlx::{AnyConnection, Row};
use std::collections::HashMap;

/// A PostgreSQL advisory lock key ("berth" and 2) that serializes claimers,
/// so that the max_concurrency counts one claimer reads cannot be made stale
/// by another's uncommitted claims. SQLite's `BEGIN IMMEDIATE` serializes
/// them already.
const PG_CLAIM_LOCK: i64 = 0x6265_7274_6802;

/// The most tasks one claim takes: each is a bound parameter of one
/// statement, and SQLite allows some thousands.
const MAX_CLAIM: usize = 1000;

/// How many pages of candidates one claim reads at most when codes at their
/// max_concurrency fill the first pages; the rest waits for the next call.
const CLAIM_ROUNDS: usize = 8;

/// The fewest candidates a pool with queued work offers a placement round.
const MIN_PER_POOL: usize = 8;

/// Ends an attempt as finished. Binds: $1 id, $2 attempt, $3 status,
/// $4 msg, $5 exit_code, $6 end_time, $7 now.
const FINISH_SQL: &str = "UPDATE tasks SET status = $3, msg = $4, exit_code = $5, \
     end_time = $6, updated_at = $7 \
     WHERE id = $1 AND attempt = $2 AND status IN ('preparing', 'running')";

/// Ends an attempt for another run, or as cancelled if a cancel was
/// requested meanwhile: one conditional UPDATE decides on the row's own
/// cancel_requested, so a cancel that lands just before cannot be lost.
/// Binds: $1 id, $2 attempt, $3 eligible_at, $4 msg, $5 infra (0/1),
/// $6 now, $7 PRIORITY_HEAD_START_MS.
const REQUEUE_SQL: &str = "UPDATE tasks SET \
     status = CASE WHEN cancel_requested <> 0 THEN 'cancelled' ELSE 'queued' END, \
     msg = CASE WHEN cancel_requested <> 0 THEN 'cancelled' ELSE $4 END, \
     end_time = CASE WHEN cancel_requested <> 0 THEN $6 ELSE NULL END, \
     eligible_at = $3, \
     sort_key = $3 - priority * $7, \
     retry_count = retry_count + CASE WHEN cancel_requested <> 0 THEN 0 ELSE 1 END, \
     infra_failures = infra_failures + CASE WHEN cancel_requested <> 0 THEN 0 ELSE $5 END, \
     updated_at = $6 \
     WHERE id = $1 AND attempt = $2 AND status IN ('preparing', 'running')";

/// A code as queue_tasks needs it: its id, latest revision and default
/// priority.
struct CodeHead {
    id: String,
    rev: i64,
    default_priority: i64,
    /// Its revision's placement (what a task leaves unsaid comes from it).
    placement: berth_core::placement::PlacementSpec,
}

/// One value for a query assembled at run time.
enum Bind {
    Text(String),
    Int(i64),
}

impl Store {
    // ----- tasks (API) ------------------------------------------------------

    /// Queues the tasks in one transaction, each bound to the latest revision
    /// of its code (priority defaults to the code's `default_priority`,
    /// `eligible_at = now + delay*1000`). Returns their ids in order. A task
    /// naming an unknown code → `UnknownCode`, and nothing is stored.
    pub async fn queue_tasks(
        &self,
        project_id: &str,
        tasks: &[NewTask],
        now: Millis,
    ) -> Result<Vec<String>, StoreError> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.durable.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        // An error returns early and drops `tx`, which rolls it back.
        let ids = queue_in(&mut tx, self.dialect, project_id, tasks, now).await?;
        tx.commit().await?;
        Ok(ids)
    }

    /// Tasks matching the filter, newest first (by created_at, then id),
    /// paged.
    pub async fn tasks(
        &self,
        project_id: &str,
        filter: &TaskFilter,
        page: Page,
    ) -> Result<Vec<Task>, StoreError> {
        let mut sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE project_id = $1");
        let mut binds = vec![Bind::Text(project_id.to_string())];
        if let Some(name) = &filter.code_name {
            binds.push(Bind::Text(name.clone()));
            sql.push_str(&format!(" AND code_name = ${}", binds.len()));
        }
        if !filter.statuses.is_empty() {
            let mut statuses = filter.statuses.clone();
            statuses.sort_by_key(|s| s.as_str());
            statuses.dedup();
            let mut placeholders = Vec::with_capacity(statuses.len());
            for status in statuses {
                binds.push(Bind::Text(status.as_str().to_string()));
                placeholders.push(format!("${}", binds.len()));
            }
            sql.push_str(&format!(" AND status IN ({})", placeholders.join(", ")));
        }
        if let Some(from) = filter.from_time {
            binds.push(Bind::Int(from));
            sql.push_str(&format!(" AND created_at >= ${}", binds.len()));
        }
        if let Some(to) = filter.to_time {
            binds.push(Bind::Int(to));
            sql.push_str(&format!(" AND created_at <= ${}", binds.len()));
        }
        let (limit, offset) = rows::limit_offset(page);
        binds.push(Bind::Int(limit));
        binds.push(Bind::Int(offset));
        sql.push_str(&format!(
            " ORDER BY created_at DESC, id DESC LIMIT ${} OFFSET ${}",
            binds.len() - 1,
            binds.len()
        ));
        let mut query = sqlx::query(&sql);
        for bind in binds {
            query = match bind {
                Bind::Text(text) => query.bind(text),
                Bind::Int(int) => query.bind(int),
            };
        }
        let found = query.fetch_all(&self.read).await?;
        found.iter().map(rows::task).collect()
    }

    pub async fn task(&self, project_id: &str, id: &str) -> Result<Option<Task>, StoreError> {
        let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1 AND project_id = $2");
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(project_id)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(rows::task).transpose()
    }

    /// The stored log (of the last attempt that ended); `None` if the task
    /// is unknown, `Some(empty)` if no attempt has ended yet.
    pub async fn task_log(
        &self,
        project_id: &str,
        id: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query(
            "SELECT l.data FROM tasks t LEFT JOIN task_logs l ON l.task_id = t.id
             WHERE t.id = $1 AND t.project_id = $2",
        )
        .bind(id)
        .bind(project_id)
        .fetch_optional(&self.read)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let data: Option<Vec<u8>> = row.try_get("data")?;
        Ok(Some(data.unwrap_or_default()))
    }

    /// Cancels a task; `None` if unknown. See [`CancelOutcome`].
    pub async fn cancel_task(
        &self,
        project_id: &str,
        id: &str,
        now: Millis,
    ) -> Result<Option<CancelOutcome>, StoreError> {
        let mut conn = self.durable.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        // Read and decide under the row lock (PostgreSQL) or the write lock
        // (SQLite), so the status cannot move between the read and the
        // conditional write.
        let sql = format!(
            "SELECT status, agent, attempt FROM tasks WHERE id = $1 AND project_id = $2 {}",
            self.dialect.pg("FOR UPDATE")
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(project_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let status: String = row.try_get("status")?;
        let status: TaskStatus = status.parse().map_err(|e| rows::corrupt("tasks", e))?;
        let outcome = match status {
            TaskStatus::Queued => {
                sqlx::query(
                    "UPDATE tasks SET status = 'cancelled', msg = 'cancelled', end_time = $2,
                         updated_at = $2
                     WHERE id = $1 AND status = 'queued'",
                )
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                CancelOutcome::Cancelled
            }
            TaskStatus::Preparing | TaskStatus::Running => {
                sqlx::query(
                    "UPDATE tasks SET cancel_requested = 1, updated_at = $2
                     WHERE id = $1 AND status IN ('preparing', 'running')",
                )
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                let agent: Option<String> = row.try_get("agent")?;
                let attempt: i64 = row.try_get("attempt")?;
                CancelOutcome::Requested {
                    agent: agent.unwrap_or_default(),
                    container: container_name(id, attempt),
                }
            }
            ended => CancelOutcome::AlreadyFinished(ended),
        };
        tx.commit().await?;
        Ok(Some(outcome))
    }

    /// Cancels every unfinished task of a code, as [`Store::cancel_task`]
    /// does one: queued ones become `cancelled` at once, preparing and
    /// running ones get `cancel_requested`, and the caller must stop their
    /// containers. In one transaction, after locking the code (as
    /// `delete_code` does), so no task of the code is queued behind it.
    /// `None` if the project has no such code.
    pub async fn cancel_code_tasks(
        &self,
        project_id: &str,
        code_id: &str,
        now: Millis,
    ) -> Result<Option<CodeCancel>, StoreError> {
        let mut conn = self.durable.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        let Some(queued) = super::codes::lock_code_and_cancel_queued(
            &mut tx,
            self.dialect,
            project_id,
            code_id,
            "cancelled",
            now,
        )
        .await?
        else {
            return Ok(None);
        };
        let sql = format!(
            "SELECT id, agent, attempt FROM tasks
             WHERE code_id = $1 AND project_id = $2 AND status IN ('preparing', 'running')
             ORDER BY id {}",
            self.dialect.pg("FOR UPDATE")
        );
        let rows = sqlx::query(&sql)
            .bind(code_id)
            .bind(project_id)
            .fetch_all(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE tasks SET cancel_requested = 1, updated_at = $3
             WHERE code_id = $1 AND project_id = $2 AND status IN ('preparing', 'running')",
        )
        .bind(code_id)
        .bind(project_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let mut stops = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.try_get("id")?;
            let agent: Option<String> = row.try_get("agent")?;
            let attempt: i64 = row.try_get("attempt")?;
            stops.push(TaskStop {
                task_id: id.clone(),
                agent: agent.unwrap_or_default(),
                container: container_name(&id, attempt),
            });
        }
        tx.commit().await?;
        Ok(Some(CodeCancel {
            cancelled: queued,
            stops,
        }))
    }

    /// Queues a copy of an ended task (same code name, payload, priority,
    /// timeout, label, cluster; latest revision of the code) with
    /// `original_task_id` set and the given delay; returns the new id.
    /// `None` if unknown; `Conflict` if it has not ended; `UnknownCode` if
    /// its code was deleted.
    pub async fn retry_task(
        &self,
        project_id: &str,
        id: &str,
        delay: i64,
        now: Millis,
    ) -> Result<Option<String>, StoreError> {
        let mut conn = self.durable.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1 AND project_id = $2");
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(project_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let task = rows::task(&row)?;
        if !task.status.is_terminal() {
            return Err(StoreError::Conflict(format!(
                "task {id} has not ended (it is {})",
                task.status
            )));
        }
        let copy = NewTask {
            code_name: task.code_name,
            payload: task.payload,
            priority: Some(task.priority),
            timeout: task.timeout,
            delay,
            cluster: task.cluster,
            label: task.label,
            schedule_id: None,
            original_task_id: Some(task.id),
            placement: task.placement,
        };
        let ids = queue_in(&mut tx, self.dialect, project_id, &[copy], now).await?;
        tx.commit().await?;
        Ok(ids.into_iter().next())
    }

    /// Records progress reported by the task; false if unknown or ended.
    /// A `None` leaves the stored value as it is.
    ///
    /// Written with the relaxed sync: running tasks report often, progress
    /// is not among the writes the contract makes durable, and the next
    /// report (or the task's end) supersedes a lost one.
    pub async fn set_progress(
        &self,
        project_id: &str,
        id: &str,
        percent: Option<i64>,
        msg: Option<&str>,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE tasks SET percent = COALESCE($3, percent), msg = COALESCE($4, msg),
                 updated_at = $5
             WHERE id = $1 AND project_id = $2 AND status IN ('queued', 'preparing', 'running')",
        )
        .bind(id)
        .bind(project_id)
        .bind(percent)
        .bind(msg)
        .bind(now)
        .execute(&mut *self.relaxed.acquire().await?)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    // ----- tasks (dispatcher; not project-scoped) ---------------------------

    /// A write transaction in which to choose and take queued tasks. On
    /// PostgreSQL, claims are serialized by a transaction-scoped advisory
    /// lock, so that two dispatchers never choose the same rows; SQLite's
    /// `BEGIN IMMEDIATE` already serializes writers. A fenced handle's
    /// claim fails unless its term still holds the dispatch lease.
    async fn begin_claim<'c>(&self, conn: &'c mut AnyConnection) -> Result<Tx<'c>, StoreError> {
        let mut tx = self.begin_write(conn).await?;
        if self.dialect == Dialect::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(PG_CLAIM_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        self.check_fence(&mut tx).await?;
        Ok(tx)
    }

    /// Takes up to `limit` queued tasks that may start now, in queue order
    /// (see [`PRIORITY_HEAD_START_MS`]), skipping paused codes and codes at
    /// their `max_concurrency` (counting their preparing and running tasks
    /// and the ones taken in this call), and marks them `preparing` on
    /// `agent` with `attempt + 1`. Returns them with their code revision.
    /// Two concurrent callers never take the same task.
    ///
    /// At most 1000 tasks are taken per call, whatever `limit`.
    pub async fn claim_tasks(
        &self,
        agent: &str,
        limit: usize,
        now: Millis,
    ) -> Result<Vec<ClaimedTask>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.relaxed.acquire().await?;
        let mut tx = self.begin_claim(&mut conn).await?;

        let chosen = choose_claimable(&mut tx, self.dialect, limit, now).await?;
        if chosen.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }

        let placeholders: Vec<String> = (0..chosen.len()).map(|i| format!("${}", i + 3)).collect();
        let sql = format!(
            "UPDATE tasks SET status = 'preparing', attempt = attempt + 1, agent = $1,
                 updated_at = $2
             WHERE status = 'queued' AND id IN ({})
             RETURNING {TASK_COLUMNS}",
            placeholders.join(", ")
        );
        let mut update = sqlx::query(&sql).bind(agent).bind(now);
        for id in &chosen {
            update = update.bind(id);
        }
        let updated = update.fetch_all(&mut *tx).await?;
        let mut claimed: HashMap<String, Task> = HashMap::with_capacity(updated.len());
        for row in &updated {
            let task = rows::task(row)?;
            claimed.insert(task.id.clone(), task);
        }
        let mut revisions = RevisionCache::default();
        let mut out = Vec::with_capacity(claimed.len());
        for id in &chosen {
            if let Some(task) = claimed.remove(id) {
                let code = revisions.get(&mut tx, &task).await?;
                out.push(ClaimedTask { task, code });
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Takes about `limit` queued tasks that may start now, from every
    /// pool's queue (each pool's in queue order, see
    /// `choose_claimable_by_pool`), and asks `plan` where each
    /// goes (it answers one decision per task, in the order given), within
    /// one transaction: a task placed on a host becomes `preparing` there
    /// with `attempt + 1`, its reservation and its host's name; a task that
    /// fits nowhere stays queued with the reason in its `msg` (written only
    /// when it changed). Returns the placed ones with their code revision.
    /// Two concurrent callers never take the same task.
    pub async fn claim_placed(
        &self,
        limit: usize,
        now: Millis,
        plan: &mut PlacementPlanner<'_>,
    ) -> Result<Vec<ClaimedTask>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.relaxed.acquire().await?;
        let mut tx = self.begin_claim(&mut conn).await?;
        let chosen = choose_claimable_by_pool(&mut tx, self.dialect, limit, now).await?;
        if chosen.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        // One read of every chosen task and one write of every placed one:
        // a batch costs a few round trips, not two per task.
        let placeholders: Vec<String> = (1..=chosen.len()).map(|i| format!("${i}")).collect();
        let select = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE status = 'queued' AND id IN ({})",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(&select);
        for id in &chosen {
            query = query.bind(id);
        }
        let mut found: HashMap<String, Task> = HashMap::with_capacity(chosen.len());
        for row in query.fetch_all(&mut *tx).await? {
            let task = rows::task(&row)?;
            found.insert(task.id.clone(), task);
        }
        let mut revisions = RevisionCache::default();
        let mut candidates = Vec::with_capacity(found.len());
        for id in &chosen {
            if let Some(task) = found.remove(id) {
                let code = revisions.get(&mut tx, &task).await?;
                candidates.push((task, code));
            }
        }
        let decisions = plan(&candidates);
        let mut placed = Vec::new();
        let mut codes: HashMap<String, CodeRevision> = HashMap::new();
        for ((task, code), decision) in candidates.into_iter().zip(decisions) {
            match decision {
                PlaceDecision::On {
                    agent,
                    node_name,
                    reserved,
                } => {
                    let reserved = serde_json::to_string(&reserved)
                        .map_err(|e| rows::corrupt("tasks", format!("reserved: {e}")))?;
                    placed.push((task.id.clone(), agent, node_name, reserved));
                    codes.insert(task.id, code);
                }
                PlaceDecision::Waits { msg } => {
                    if task.msg.as_deref() != Some(msg.as_str()) {
                        sqlx::query(
                            "UPDATE tasks SET msg = $2 WHERE id = $1 AND status = 'queued'",
                        )
                        .bind(&task.id)
                        .bind(&msg)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(placed.len());
        if !placed.is_empty() {
            // VALUES rows name their columns column1… in both databases.
            let rows: Vec<String> = (0..placed.len())
                .map(|i| {
                    format!(
                        "(${}, ${}, ${}, ${})",
                        4 * i + 2,
                        4 * i + 3,
                        4 * i + 4,
                        4 * i + 5
                    )
                })
                .collect();
            // Unqualified columns are the task's (v's are column1…).
            let sql = format!(
                "UPDATE tasks SET status = 'preparing', attempt = attempt + 1,
                     agent = v.column2, node_name = v.column3, reserved = v.column4, msg = NULL,
                     updated_at = $1
                 FROM (VALUES {}) AS v
                 WHERE id = v.column1 AND status = 'queued'
                 RETURNING {TASK_COLUMNS}",
                rows.join(", ")
            );
            let mut update = sqlx::query(&sql).bind(now);
            for (id, agent, node_name, reserved) in &placed {
                update = update.bind(id).bind(agent).bind(node_name).bind(reserved);
            }
            let mut claimed: HashMap<String, Task> = HashMap::with_capacity(placed.len());
            for row in update.fetch_all(&mut *tx).await? {
                let task = rows::task(&row)?;
                claimed.insert(task.id.clone(), task);
            }
            // In queue order, as they were chosen.
            for (id, ..) in &placed {
                if let (Some(task), Some(code)) = (claimed.remove(id), codes.remove(id)) {
                    out.push(ClaimedTask { task, code });
                }
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    /// `preparing` → `running` with its start time, if the task is still at
    /// this attempt and preparing. False otherwise (nothing changed).
    pub async fn mark_running(
        &self,
        task_id: &str,
        attempt: i64,
        start_time: Millis,
    ) -> Result<bool, StoreError> {
        let fence = self
            .fence_condition(4)
            .map_or_else(String::new, |fence| format!(" AND {fence}"));
        let sql = format!(
            "UPDATE tasks SET status = 'running', start_time = $3, updated_at = $3
             WHERE id = $1 AND attempt = $2 AND status = 'preparing'{fence}"
        );
        let query = sqlx::query(&sql)
            .bind(task_id)
            .bind(attempt)
            .bind(start_time);
        let query = match self.fence() {
            Some(token) => query.bind(token),
            None => query,
        };
        let done = query.execute(&mut *self.relaxed.acquire().await?).await?;
        let started = done.rows_affected() > 0;
        if !started {
            self.explain_no_change().await?;
        }
        Ok(started)
    }

    /// Ends an attempt (see [`AttemptEnd`]) if the task is still at this
    /// attempt and preparing or running. False otherwise: nothing changed,
    /// which is how a second report of the same end is ignored.
    /// A `Requeue` of a task with `cancel_requested` makes it `cancelled`
    /// instead.
    ///
    /// A `Finished` whose status is not terminal is refused with
    /// `Conflict`: it would leave the task in a state no one advances.
    pub async fn end_attempt(
        &self,
        task_id: &str,
        attempt: i64,
        end: AttemptEnd,
        now: Millis,
    ) -> Result<bool, StoreError> {
        if let AttemptEnd::Finished { status, .. } = &end {
            if !status.is_terminal() {
                return Err(StoreError::Conflict(format!(
                    "an attempt cannot finish as {status}: not a terminal status"
                )));
            }
        }
        let (base, log) = match &end {
            AttemptEnd::Finished { log, .. } => (FINISH_SQL, Some(log.as_slice())),
            AttemptEnd::Requeue { log, .. } => (REQUEUE_SQL, log.as_deref()),
        };
        // The status change and the log are written together, the log only
        // if the conditional UPDATE matched. This is the dispatcher's
        // hottest write, and each statement costs a round trip (to the
        // server, or to SQLite's worker thread), so each database gets the
        // form that takes the fewest: PostgreSQL one statement with a
        // writable CTE; SQLite (which has none) one batch that runs its own
        // transaction, the log's INSERT guarded by changes() and the
        // UPDATE's RETURNING saying whether it matched (sqlite3_changes()
        // after COMMIT would repeat an older statement's count).
        // A fenced handle's write holds only while its term of the dispatch
        // lease does: the condition is the token, $8.
        let (base, log_param) = match self.fence_condition(8) {
            Some(fence) => (format!("{base} AND {fence}"), 9),
            None => (base.to_string(), 8),
        };
        let sql = match (log, self.dialect) {
            (None, _) => base,
            (Some(_), Dialect::Postgres) => format!(
                "WITH ended AS ({base} RETURNING id)
                 INSERT INTO task_logs (task_id, data) SELECT id, ${log_param} FROM ended
                 ON CONFLICT (task_id) DO UPDATE SET data = excluded.data"
            ),
            (Some(_), Dialect::Sqlite) => format!(
                "BEGIN IMMEDIATE;
                 {base} RETURNING 1;
                 INSERT INTO task_logs (task_id, data) SELECT $1, ${log_param}
                     WHERE changes() > 0
                 ON CONFLICT (task_id) DO UPDATE SET data = excluded.data;
                 COMMIT"
            ),
        };
        // Both statements bind $1 id, $2 attempt and five more values; then
        // the fence's token if fenced, then the log.
        let query = sqlx::query(&sql).bind(task_id).bind(attempt);
        let query = match &end {
            AttemptEnd::Finished {
                status,
                msg,
                exit_code,
                end_time,
                ..
            } => query
                .bind(status.as_str())
                .bind(msg.as_deref())
                .bind(*exit_code)
                .bind(*end_time)
                .bind(now),
            AttemptEnd::Requeue {
                eligible_at,
                infra,
                msg,
                ..
            } => query
                .bind(*eligible_at)
                .bind(msg.as_deref())
                .bind(i64::from(*infra))
                .bind(now)
                .bind(PRIORITY_HEAD_START_MS),
        };
        let query = match self.fence() {
            Some(token) => query.bind(token),
            None => query,
        };
        let query = match log {
            Some(log) => query.bind(log),
            None => query,
        };

        let mut conn = self.relaxed.acquire().await?;
        let ended = if log.is_some() && self.dialect == Dialect::Sqlite {
            !conn.fetch_batch(query).await?.is_empty()
        } else {
            // A single statement is its own transaction.
            query.execute(&mut *conn).await?.rows_affected() > 0
        };
        drop(conn);
        if !ended {
            self.explain_no_change().await?;
        }
        Ok(ended)
    }

    /// Every task preparing or running (for the dispatcher to reconcile
    /// after a restart).
    pub async fn active_tasks(&self) -> Result<Vec<ClaimedTask>, StoreError> {
        let mut conn = self.read.acquire().await?;
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks
             WHERE status IN ('preparing', 'running') ORDER BY id"
        );
        let found = sqlx::query(&sql).fetch_all(&mut *conn).await?;
        let mut revisions = RevisionCache::default();
        let mut out = Vec::with_capacity(found.len());
        for row in &found {
            let task = rows::task(row)?;
            let code = revisions.get(&mut conn, &task).await?;
            out.push(ClaimedTask { task, code });
        }
        Ok(out)
    }

    /// The earliest `eligible_at` of a queued task of an unpaused code, so
    /// the dispatcher can sleep until then.
    pub async fn next_eligible_at(&self) -> Result<Option<Millis>, StoreError> {
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT t.eligible_at FROM tasks t JOIN codes c ON c.id = t.code_id
             WHERE t.status = 'queued' AND t.cancel_requested = 0 AND c.paused = 0
             ORDER BY t.eligible_at LIMIT 1",
        )
        .fetch_optional(&self.read)
        .await?;
        Ok(next)
    }
}

/// Stores `tasks` of `project_id` on `conn` (inside the caller's
/// transaction): the shared body of queue_tasks, retry_task and
/// fire_schedule. An unknown code name → `UnknownCode`; the caller's
/// transaction must then be rolled back.
pub(super) async fn queue_in(
    conn: &mut AnyConnection,
    dialect: Dialect,
    project_id: &str,
    tasks: &[NewTask],
    now: Millis,
) -> Result<Vec<String>, StoreError> {
    // Ids are time-prefixed but random within a second; sorting a batch's
    // ids keeps its order as the tie-break of equal queue positions.
    let mut ids: Vec<String> = tasks.iter().map(|_| new_id()).collect();
    ids.sort();
    let mut heads: HashMap<&str, CodeHead> = HashMap::new();
    for (task, id) in tasks.iter().zip(&ids) {
        let name = task.code_name.as_str();
        if !heads.contains_key(name) {
            let head = code_head(conn, dialect, project_id, name)
                .await?
                .ok_or_else(|| StoreError::UnknownCode(task.code_name.clone()))?;
            heads.insert(name, head);
        }
        let Some(head) = heads.get(name) else {
            continue;
        };
        let priority = task.priority.unwrap_or(head.default_priority);
        let eligible_at = now.saturating_add(task.delay.saturating_mul(1000));
        let sort_key = eligible_at.saturating_sub(priority.saturating_mul(PRIORITY_HEAD_START_MS));
        sqlx::query(
            "INSERT INTO tasks (id, project_id, code_id, code_name, code_rev, status, payload,
                 priority, timeout, delay, cluster, label, schedule_id, original_task_id,
                 created_at, updated_at, eligible_at, sort_key, placement, pool)
             VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7, $8, $9, $10, $11, $12, $13,
                 $14, $14, $15, $16, $17, $18)",
        )
        .bind(id)
        .bind(project_id)
        .bind(&head.id)
        .bind(name)
        .bind(head.rev)
        .bind(&task.payload)
        .bind(priority)
        .bind(task.timeout)
        .bind(task.delay)
        .bind(&task.cluster)
        .bind(&task.label)
        .bind(&task.schedule_id)
        .bind(&task.original_task_id)
        .bind(now)
        .bind(eligible_at)
        .bind(sort_key)
        .bind(
            serde_json::to_string(&task.placement)
                .map_err(|e| rows::corrupt("tasks", format!("placement: {e}")))?,
        )
        // The pool it counts against: its own or its code's (the merge the
        // dispatcher makes), else its project's.
        .bind(
            task.placement
                .over(&head.placement)
                .pool
                .unwrap_or_else(|| project_id.to_owned()),
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(ids)
}

/// The code named `name` in the project, with its latest revision. On
/// PostgreSQL the code row is locked shared until the transaction ends, so
/// a concurrent delete_code waits for the tasks being queued and then
/// cancels them too.
async fn code_head(
    conn: &mut AnyConnection,
    dialect: Dialect,
    project_id: &str,
    name: &str,
) -> Result<Option<CodeHead>, StoreError> {
    let sql = format!(
        "SELECT c.id, c.latest_rev, r.default_priority, r.placement
         FROM codes c JOIN code_revisions r ON r.code_id = c.id AND r.rev = c.latest_rev
         WHERE c.project_id = $1 AND c.name = $2 {}",
        dialect.pg("FOR SHARE OF c")
    );
    let row = sqlx::query(&sql)
        .bind(project_id)
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|row| {
        let placement: String = row.try_get("placement")?;
        Ok(CodeHead {
            id: row.try_get("id")?,
            rev: row.try_get("latest_rev")?,
            default_priority: row.try_get("default_priority")?,
            placement: serde_json::from_str(&placement)
                .map_err(|e| rows::corrupt("code_revisions", format!("placement: {e}")))?,
        })
    })
    .transpose()
}

/// What [`Store::claim_placed`] asks where the candidate tasks go: one
/// decision per task, in the order given.
pub type PlacementPlanner<'a> =
    dyn FnMut(&[(Task, CodeRevision)]) -> Vec<PlaceDecision> + Send + 'a;

/// The ids of up to `limit` (at most [`MAX_CLAIM`]) queued tasks that may
/// start now, in queue order, skipping paused codes and codes at their
/// `max_concurrency` (counting the ones chosen here). The caller holds the
/// claim lock (PostgreSQL) or the write transaction (SQLite).
async fn choose_claimable(
    tx: &mut AnyConnection,
    dialect: Dialect,
    limit: usize,
    now: Millis,
) -> Result<Vec<String>, StoreError> {
    choose_in_queue(tx, dialect, None, limit, now, &mut HashMap::new()).await
}

/// Like [`choose_claimable`], but from every pool's queue: the pools with
/// queued work each give up to an equal part of `limit` (at least
/// [`MIN_PER_POOL`]) of their first claimable tasks, so the fair-share
/// order sees every pool that waits, not only the one whose backlog is at
/// the head of the whole queue. At most [`MAX_CLAIM`] in all; when more
/// pools wait than that allows, the pool served first turns each second.
async fn choose_claimable_by_pool(
    tx: &mut AnyConnection,
    dialect: Dialect,
    limit: usize,
    now: Millis,
) -> Result<Vec<String>, StoreError> {
    // The distinct pools with queued tasks, one index probe each (a loose
    // index scan: both databases would otherwise read every queued row).
    let pools: Vec<String> = sqlx::query_scalar(
        "WITH RECURSIVE p(pool) AS (
             SELECT (SELECT min(pool) FROM tasks WHERE status = 'queued')
             UNION ALL
             SELECT (SELECT min(t.pool) FROM tasks t
                     WHERE t.status = 'queued' AND t.pool > p.pool)
             FROM p WHERE p.pool IS NOT NULL)
         SELECT pool FROM p WHERE pool IS NOT NULL",
    )
    .fetch_all(&mut *tx)
    .await?;
    if pools.len() <= 1 {
        return choose_claimable(tx, dialect, limit, now).await;
    }
    let each = limit.div_ceil(pools.len()).max(MIN_PER_POOL);
    let first = usize::try_from(now / 1000).unwrap_or(0) % pools.len();
    let mut busy = HashMap::new();
    let mut chosen = Vec::new();
    for pool in pools[first..].iter().chain(&pools[..first]) {
        let room = MAX_CLAIM.saturating_sub(chosen.len());
        if room == 0 {
            break;
        }
        let found =
            choose_in_queue(tx, dialect, Some(pool), each.min(room), now, &mut busy).await?;
        chosen.extend(found);
    }
    Ok(chosen)
}

/// The claimable tasks of one pool's queue, or of the whole queue.
/// `busy` counts, per code with a `max_concurrency`, its tasks under way
/// plus those chosen so far (shared across calls of one claim).
async fn choose_in_queue(
    tx: &mut AnyConnection,
    dialect: Dialect,
    pool: Option<&str>,
    limit: usize,
    now: Millis,
    busy: &mut HashMap<String, i64>,
) -> Result<Vec<String>, StoreError> {
    // Candidates in queue order, read along the queue index: an
    // eligible task's sort_key is at most now (priorities are not
    // negative), which bounds the scan, and `eligible_at + 0` keeps the
    // planner from preferring the eligible_at index and sorting every
    // eligible task (PostgreSQL did, before its statistics existed).
    // Codes already at their limit are excluded here so that a long
    // queue of one saturated code does not fill every page; the
    // per-code cap within this batch is applied below. SKIP LOCKED
    // passes over rows another writer (a cancel) holds instead of
    // waiting for it.
    let limit = limit.min(MAX_CLAIM);
    let page_size = limit as i64;
    let candidates_sql = format!(
        "SELECT t.id, t.code_id, t.sort_key, c.max_concurrency
             FROM tasks t
             JOIN codes c ON c.id = t.code_id
             JOIN code_revisions r ON r.code_id = t.code_id AND r.rev = t.code_rev
             WHERE t.status = 'queued' AND t.sort_key <= $1 AND t.eligible_at + 0 <= $1
               AND t.cancel_requested = 0
               AND c.paused = 0
               AND (c.max_concurrency IS NULL
                    OR (SELECT COUNT(*) FROM tasks a
                        WHERE a.code_id = t.code_id AND a.status IN ('preparing', 'running'))
                       < c.max_concurrency)
               AND (t.sort_key, t.id) > ($2, $3)
               {}
             ORDER BY t.sort_key, t.id
             LIMIT $4 {}",
        if pool.is_some() {
            "AND t.pool = $5"
        } else {
            ""
        },
        dialect.pg("FOR UPDATE OF t SKIP LOCKED")
    );
    let mut after: (i64, String) = (i64::MIN, String::new());
    let mut chosen: Vec<String> = Vec::new();
    'rounds: for _ in 0..CLAIM_ROUNDS {
        let query = sqlx::query(&candidates_sql)
            .bind(now)
            .bind(after.0)
            .bind(&after.1)
            .bind(page_size);
        let query = match pool {
            Some(pool) => query.bind(pool),
            None => query,
        };
        let candidates = query.fetch_all(&mut *tx).await?;
        let full_page = candidates.len() as i64 == page_size;
        for row in &candidates {
            let id: String = row.try_get("id")?;
            let code_id: String = row.try_get("code_id")?;
            after = (row.try_get("sort_key")?, id.clone());
            if let Some(max) = row.try_get::<Option<i64>, _>("max_concurrency")? {
                let n = match busy.get(&code_id) {
                    Some(n) => *n,
                    None => {
                        sqlx::query_scalar(
                            "SELECT COUNT(*) FROM tasks
                                 WHERE code_id = $1 AND status IN ('preparing', 'running')",
                        )
                        .bind(&code_id)
                        .fetch_one(&mut *tx)
                        .await?
                    }
                };
                if n >= max {
                    busy.insert(code_id, n);
                    continue;
                }
                busy.insert(code_id, n + 1);
            }
            chosen.push(id);
            if chosen.len() == limit {
                break 'rounds;
            }
        }
        if !full_page {
            break;
        }
    }
    Ok(chosen)
}

/// Revisions read once per (code, rev) within one call: a batch of tasks
/// usually shares a few.
#[derive(Default)]
struct RevisionCache {
    by_key: HashMap<(String, i64), CodeRevision>,
}

impl RevisionCache {
    async fn get(
        &mut self,
        conn: &mut AnyConnection,
        task: &Task,
    ) -> Result<CodeRevision, StoreError> {
        let key = (task.code_id.clone(), task.code_rev);
        if let Some(revision) = self.by_key.get(&key) {
            return Ok(revision.clone());
        }
        let sql = format!(
            "SELECT {REVISION_COLUMNS} FROM code_revisions r WHERE r.code_id = $1 AND r.rev = $2"
        );
        let row = sqlx::query(&sql)
            .bind(&task.code_id)
            .bind(task.code_rev)
            .fetch_optional(&mut *conn)
            .await?;
        let Some(row) = row else {
            return Err(rows::corrupt(
                "code_revisions",
                format!(
                    "task {} uses revision {} of code {}, which is missing",
                    task.id, task.code_rev, task.code_id
                ),
            ));
        };
        let revision = rows::revision(&row)?;
        self.by_key.insert(key, revision.clone());
        Ok(revision)
    }
}
