//! Schedules: recurring or delayed task launches.

use super::rows::{self, SCHEDULE_COLUMNS};
use super::tasks::queue_in;
use super::Store;
use crate::error::StoreError;
use crate::ids::new_id;
use crate::model::*;

impl Store {
    // ----- schedules ----------------------------------------------------------

    /// Stores a schedule (`next_start = start_at`). Unknown code →
    /// `UnknownCode`, nothing stored.
    pub async fn create_schedule(
        &self,
        project_id: &str,
        spec: &NewSchedule,
        now: Millis,
    ) -> Result<Schedule, StoreError> {
        let schedule = Schedule {
            id: new_id(),
            project_id: project_id.to_string(),
            spec: spec.clone(),
            status: ScheduleStatus::Scheduled,
            next_start: Some(spec.start_at),
            last_run_time: None,
            run_count: 0,
            created_at: now,
            updated_at: now,
        };
        // Inserted only if the code exists, in one statement.
        let inserted = sqlx::query(
            "INSERT INTO schedules (id, project_id, code_name, payload, start_at, run_every,
                 run_times, end_at, priority, timeout, cluster, label, status, next_start,
                 run_count, created_at, updated_at)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'scheduled', $5, 0,
                 $13, $13
             WHERE EXISTS (SELECT 1 FROM codes WHERE project_id = $2 AND name = $3)",
        )
        .bind(&schedule.id)
        .bind(project_id)
        .bind(&spec.code_name)
        .bind(&spec.payload)
        .bind(spec.start_at)
        .bind(spec.run_every)
        .bind(spec.run_times)
        .bind(spec.end_at)
        .bind(spec.priority)
        .bind(spec.timeout)
        .bind(&spec.cluster)
        .bind(&spec.label)
        .bind(now)
        .execute(&mut *self.durable.acquire().await?)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::UnknownCode(spec.code_name.clone()));
        }
        Ok(schedule)
    }

    /// Newest first, paged.
    pub async fn schedules(
        &self,
        project_id: &str,
        page: Page,
    ) -> Result<Vec<Schedule>, StoreError> {
        let (limit, offset) = rows::limit_offset(page);
        let sql = format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE project_id = $1
             ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
        );
        let found = sqlx::query(&sql)
            .bind(project_id)
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.read)
            .await?;
        found.iter().map(rows::schedule).collect()
    }

    pub async fn schedule(
        &self,
        project_id: &str,
        id: &str,
    ) -> Result<Option<Schedule>, StoreError> {
        let sql =
            format!("SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE id = $1 AND project_id = $2");
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(project_id)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(rows::schedule).transpose()
    }

    /// `scheduled` → `cancelled`; returns the schedule as it is now, `None`
    /// if unknown (an already ended schedule is returned unchanged).
    pub async fn cancel_schedule(
        &self,
        project_id: &str,
        id: &str,
        now: Millis,
    ) -> Result<Option<Schedule>, StoreError> {
        let mut conn = self.durable.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        sqlx::query(
            "UPDATE schedules SET status = 'cancelled', next_start = NULL, updated_at = $3
             WHERE id = $1 AND project_id = $2 AND status = 'scheduled'",
        )
        .bind(id)
        .bind(project_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let sql =
            format!("SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE id = $1 AND project_id = $2");
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(project_id)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        row.as_ref().map(rows::schedule).transpose()
    }

    /// Scheduled schedules with `next_start <= now`, oldest due first.
    pub async fn due_schedules(
        &self,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<Schedule>, StoreError> {
        let sql = format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules
             WHERE status = 'scheduled' AND next_start <= $1
             ORDER BY next_start, id LIMIT $2"
        );
        let found = sqlx::query(&sql)
            .bind(now)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.read)
            .await?;
        found.iter().map(rows::schedule).collect()
    }

    /// Fires one run of a due schedule in one transaction, if its
    /// `next_start` is still `expected_next_start` (so two servers cannot
    /// both fire it): queues a task (schedule_id set; the code's latest
    /// revision; delay 0), increments run_count, sets last_run_time = now,
    /// and advances next_start by whole `run_every` steps past `now` (missed
    /// runs during downtime are skipped, not replayed). The schedule becomes
    /// `complete` (next_start `None`) when `run_times` is reached, when the
    /// next start would pass `end_at`, or when it has no `run_every`.
    /// If the code was deleted the schedule becomes `complete` and no task
    /// is queued. Returns the queued task's id.
    pub async fn fire_schedule(
        &self,
        id: &str,
        expected_next_start: Millis,
        now: Millis,
    ) -> Result<Option<String>, StoreError> {
        let mut conn = self.relaxed.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        self.check_fence(&mut tx).await?;
        let sql = format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules
             WHERE id = $1 AND status = 'scheduled' AND next_start = $2 {}",
            self.dialect.pg("FOR UPDATE")
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(expected_next_start)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let schedule = rows::schedule(&row)?;
        let spec = &schedule.spec;

        let task = NewTask {
            code_name: spec.code_name.clone(),
            payload: spec.payload.clone(),
            priority: spec.priority,
            timeout: spec.timeout,
            delay: 0,
            cluster: spec.cluster.clone(),
            label: spec.label.clone(),
            schedule_id: Some(schedule.id.clone()),
            original_task_id: None,
            // A scheduled task asks what its code asks.
            placement: Default::default(),
        };
        // A run due after end_at (a schedule created that way) never fires.
        let expired = spec.end_at.is_some_and(|end| expected_next_start > end);
        let queued = if expired {
            None
        } else {
            match queue_in(&mut tx, self.dialect, &schedule.project_id, &[task], now).await {
                Ok(ids) => ids.into_iter().next(),
                // The code is gone: nothing will ever run; end the schedule.
                // queue_in wrote nothing before finding the code missing.
                Err(StoreError::UnknownCode(_)) => None,
                Err(err) => return Err(err),
            }
        };

        let run_count = schedule.run_count + 1;
        let next_start = match queued {
            None => None,
            Some(_) => next_start_after(
                expected_next_start,
                spec.run_every,
                now,
                spec.end_at,
                spec.run_times.is_some_and(|limit| run_count >= limit),
            ),
        };
        let status = match next_start {
            Some(_) => ScheduleStatus::Scheduled,
            None => ScheduleStatus::Complete,
        };
        let (run_count, last_run_time) = match queued {
            Some(_) => (run_count, Some(now)),
            None => (schedule.run_count, schedule.last_run_time),
        };
        let done = sqlx::query(
            "UPDATE schedules SET status = $3, next_start = $4, run_count = $5,
                 last_run_time = $6, updated_at = $7
             WHERE id = $1 AND next_start = $2 AND status = 'scheduled'",
        )
        .bind(id)
        .bind(expected_next_start)
        .bind(status.as_str())
        .bind(next_start)
        .bind(run_count)
        .bind(last_run_time)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            // Someone else fired it between our read and write (cannot
            // happen under the locks, but the write is conditional anyway).
            return Ok(None);
        }
        tx.commit().await?;
        Ok(queued)
    }

    /// The earliest `next_start` of a scheduled schedule.
    pub async fn next_schedule_at(&self) -> Result<Option<Millis>, StoreError> {
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT next_start FROM schedules WHERE status = 'scheduled'
             ORDER BY next_start LIMIT 1",
        )
        .fetch_optional(&self.read)
        .await?;
        Ok(next)
    }
}

/// The start after a run that was due at `due` and fired at `now`: the
/// first `due + k * run_every` (k ≥ 1) later than `now`, so runs missed
/// while no server was up are skipped. `None` when there is no next run:
/// no `run_every` (or a non-positive one), the run limit was reached, or
/// the next start would pass `end_at`.
fn next_start_after(
    due: Millis,
    run_every: Option<i64>,
    now: Millis,
    end_at: Option<Millis>,
    runs_exhausted: bool,
) -> Option<Millis> {
    let step = run_every?.checked_mul(1000).filter(|step| *step > 0)?;
    if runs_exhausted {
        return None;
    }
    let steps = if now >= due {
        (now - due) / step + 1
    } else {
        1
    };
    let next = due.checked_add(steps.checked_mul(step)?)?;
    match end_at {
        Some(end) if next > end => None,
        _ => Some(next),
    }
}

#[cfg(test)]
mod tests {
    use super::next_start_after;

    #[test]
    fn next_start_skips_missed_runs() {
        // Due at 0, every 10 s, fired at 0: next at 10 s.
        assert_eq!(next_start_after(0, Some(10), 0, None, false), Some(10_000));
        // Fired 35 s late: 10, 20, 30 s were missed; next at 40 s.
        assert_eq!(
            next_start_after(0, Some(10), 35_000, None, false),
            Some(40_000)
        );
        // Fired exactly on a later step: strictly after now.
        assert_eq!(
            next_start_after(0, Some(10), 20_000, None, false),
            Some(30_000)
        );
        // Fired early (clock skew): one step.
        assert_eq!(
            next_start_after(5_000, Some(10), 0, None, false),
            Some(15_000)
        );
    }

    #[test]
    fn next_start_ends() {
        assert_eq!(next_start_after(0, None, 0, None, false), None);
        assert_eq!(next_start_after(0, Some(0), 0, None, false), None);
        assert_eq!(next_start_after(0, Some(10), 0, None, true), None);
        assert_eq!(next_start_after(0, Some(10), 0, Some(9_999), false), None);
        assert_eq!(
            next_start_after(0, Some(10), 0, Some(10_000), false),
            Some(10_000)
        );
    }
}
