//! The dispatcher's store cycle (claim a batch, mark each running, end each
//! with a small log) and the queueing rate, on SQLite and (when
//! `BERTH_TEST_POSTGRES_URL` is set) PostgreSQL. A benchmark, not a test:
//! `bash bench/store.sh` runs it; `cargo test` does not.

#[path = "../tests/common/mod.rs"]
mod common;

use berth_store::*;
use common::*;

const T: Millis = 1_700_000_000_000;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    run_with_store(Some(Db::sqlite()), dispatcher_cycle_rate).await;
    if berth_testkit::postgres::server_url().is_some() {
        run_with_store(Db::postgres(), dispatcher_cycle_rate).await;
    } else {
        println!(
            "PostgreSQL: not set up (export BERTH_TEST_POSTGRES_URL=$(bash scripts/postgres.sh))"
        );
    }
}

/// Prints the rates; no timed assertion.
async fn dispatcher_cycle_rate(store: Store) {
    const TASKS: usize = 4000;
    const BATCH: usize = 50;
    let (project, _) = project_with_code(&store, "bench").await;
    let started = std::time::Instant::now();
    for _ in 0..TASKS / 100 {
        store
            .queue_tasks(&project, &vec![new_task("bench"); 100], T)
            .await
            .unwrap();
    }
    let queued = started.elapsed();

    let started = std::time::Instant::now();
    let mut done = 0;
    loop {
        let batch = store.claim_tasks("bench-agent", BATCH, T).await.unwrap();
        if batch.is_empty() {
            break;
        }
        for claimed in &batch {
            assert!(store
                .mark_running(&claimed.task.id, claimed.task.attempt, T)
                .await
                .unwrap());
        }
        for claimed in &batch {
            assert!(store
                .end_attempt(
                    &claimed.task.id,
                    claimed.task.attempt,
                    finished(TaskStatus::Complete, b"hello from the task\n", T),
                    T
                )
                .await
                .unwrap());
        }
        done += batch.len();
    }
    let cycled = started.elapsed();
    assert_eq!(done, TASKS);
    let dialect = format!("{:?}", store.dialect());
    println!(
        "{dialect}: queue_tasks {:.0} tasks/s ({} batches of 100 in {:?}); \
         dispatcher cycle {:.0} tasks/s ({TASKS} in {:?})",
        TASKS as f64 / queued.as_secs_f64(),
        TASKS / 100,
        queued,
        TASKS as f64 / cycled.as_secs_f64(),
        cycled
    );
}
