//! The dispatch lease, its fencing token and the servers' list, on SQLite
//! and on PostgreSQL (see `common`).

#[macro_use]
mod common;

use berth_store::*;
use std::time::Duration;

store_tests!(
    one_holder_at_a_time_and_each_term_a_new_token,
    an_expired_lease_is_taken_over,
    a_fenced_handle_writes_only_while_its_term_holds,
    servers_are_listed_and_forgotten,
);

const LONG: Duration = Duration::from_secs(60);

async fn one_holder_at_a_time_and_each_term_a_new_token(store: Store) {
    assert_eq!(store.lease(DISPATCH_LEASE).await.unwrap(), None);
    let a = store
        .acquire_lease(DISPATCH_LEASE, "server-a", LONG)
        .await
        .unwrap()
        .expect("a free lease is taken");
    assert!(a.expires_at - a.now >= 59_000, "{a:?}");
    assert_eq!(
        store
            .acquire_lease(DISPATCH_LEASE, "server-b", LONG)
            .await
            .unwrap(),
        None,
        "a held lease is not taken"
    );
    let renewed = store
        .renew_lease(DISPATCH_LEASE, "server-a", a.token, LONG)
        .await
        .unwrap()
        .expect("the holder renews");
    assert_eq!(renewed.token, a.token, "a renewal is the same term");
    let held = store.lease(DISPATCH_LEASE).await.unwrap().unwrap();
    assert_eq!(
        (held.holder.as_str(), held.token, held.live),
        ("server-a", a.token, true)
    );

    // A graceful stop hands over at once, and the next term has a new token.
    assert!(store
        .release_lease(DISPATCH_LEASE, "server-a", a.token)
        .await
        .unwrap());
    let b = store
        .acquire_lease(DISPATCH_LEASE, "server-b", LONG)
        .await
        .unwrap()
        .expect("a released lease is taken");
    assert!(b.token > a.token, "{b:?} after {a:?}");
    // The old term can neither renew nor release.
    assert_eq!(
        store
            .renew_lease(DISPATCH_LEASE, "server-a", a.token, LONG)
            .await
            .unwrap(),
        None
    );
    assert!(!store
        .release_lease(DISPATCH_LEASE, "server-a", a.token)
        .await
        .unwrap());
    // Nor a stale token of the right holder.
    assert_eq!(
        store
            .renew_lease(DISPATCH_LEASE, "server-b", a.token, LONG)
            .await
            .unwrap(),
        None
    );
}

async fn an_expired_lease_is_taken_over(store: Store) {
    let a = store
        .acquire_lease(DISPATCH_LEASE, "server-a", Duration::from_millis(300))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .acquire_lease(DISPATCH_LEASE, "server-b", LONG)
            .await
            .unwrap(),
        None
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let held = store.lease(DISPATCH_LEASE).await.unwrap().unwrap();
    assert!(!held.live, "expired by the database's clock: {held:?}");
    assert_eq!(
        store
            .renew_lease(DISPATCH_LEASE, "server-a", a.token, LONG)
            .await
            .unwrap(),
        None,
        "an expired term is over, even when nobody took the lease"
    );
    let b = store
        .acquire_lease(DISPATCH_LEASE, "server-b", LONG)
        .await
        .unwrap()
        .expect("an expired lease is taken over");
    assert_eq!(b.token, a.token + 1);
}

fn is_fenced<T: std::fmt::Debug>(result: Result<T, StoreError>) -> bool {
    matches!(result, Err(StoreError::Fenced { .. }))
}

async fn a_fenced_handle_writes_only_while_its_term_holds(store: Store) {
    let (project, _) = common::project_with_code(&store, "c").await;
    let now = berth_core::time::now_millis();
    let ids = store
        .queue_tasks(
            &project,
            &[common::new_task("c"), common::new_task("c")],
            now,
        )
        .await
        .unwrap();
    let schedule = store
        .create_schedule(
            &project,
            &NewSchedule {
                code_name: "c".into(),
                payload: "{}".into(),
                start_at: now - 1000,
                run_every: Some(3600),
                run_times: None,
                end_at: None,
                priority: None,
                timeout: 60,
                cluster: None,
                label: None,
            },
            now,
        )
        .await
        .unwrap();
    let place_on_h1 = |candidates: &[(Task, CodeRevision)]| {
        candidates
            .iter()
            .map(|_| PlaceDecision::On {
                agent: "node-1".into(),
                node_name: "h1".into(),
                reserved: berth_core::placement::TaskPlacement {
                    memory_limit: 64 << 20,
                    request: Default::default(),
                    constraints: Vec::new(),
                    groups: Vec::new(),
                    pool: None,
                },
            })
            .collect()
    };

    let a = store
        .acquire_lease(DISPATCH_LEASE, "server-a", Duration::from_millis(400))
        .await
        .unwrap()
        .unwrap();
    let leader_a = store.fenced(a.token);
    let claimed = leader_a
        .claim_placed(1, now, &mut place_on_h1.clone())
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "the holder claims");
    let first = claimed[0].task.clone();
    assert!(leader_a
        .mark_running(&first.id, first.attempt, now)
        .await
        .unwrap());

    // server-a pauses past its lease; server-b takes over.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let b = store
        .acquire_lease(DISPATCH_LEASE, "server-b", LONG)
        .await
        .unwrap()
        .unwrap();
    let leader_b = store.fenced(b.token);

    // Every dispatch write of the old term is refused and changes nothing.
    let before = store.task(&project, &first.id).await.unwrap().unwrap();
    assert!(is_fenced(
        leader_a
            .end_attempt(
                &first.id,
                first.attempt,
                common::finished(TaskStatus::Complete, b"late", now),
                now
            )
            .await
    ));
    assert!(is_fenced(
        leader_a
            .end_attempt(
                &first.id,
                first.attempt,
                AttemptEnd::Requeue {
                    eligible_at: now,
                    infra: true,
                    msg: None,
                    log: None,
                },
                now
            )
            .await
    ));
    assert_eq!(
        store.task(&project, &first.id).await.unwrap().unwrap(),
        before
    );
    assert!(is_fenced(
        leader_a
            .claim_placed(10, now, &mut place_on_h1.clone())
            .await
    ));
    let second = store.task(&project, &ids[1]).await.unwrap().unwrap();
    assert_eq!(
        second.status,
        TaskStatus::Queued,
        "nothing placed by the old term"
    );
    assert!(is_fenced(
        leader_a
            .fire_schedule(&schedule.id, schedule.next_start.unwrap(), now)
            .await
    ));
    assert!(is_fenced(leader_a.mark_silent_nodes_down(now).await));
    // Garbage to collect: revisions beyond the one kept.
    for _ in 0..3 {
        store
            .push_code(&project, &common::code_spec("often"), None)
            .await
            .unwrap();
    }
    assert!(is_fenced(leader_a.collect_garbage(Some(1)).await));

    // The new term writes.
    let claimed = leader_b
        .claim_placed(10, now, &mut place_on_h1.clone())
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(leader_b
        .end_attempt(
            &first.id,
            first.attempt,
            common::finished(TaskStatus::Complete, b"done", now),
            now
        )
        .await
        .unwrap());
    // A write that changes nothing because of the row's state is no fence.
    assert!(!leader_b
        .mark_running(&first.id, first.attempt, now)
        .await
        .unwrap());
    assert!(leader_b
        .fire_schedule(&schedule.id, schedule.next_start.unwrap(), now)
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        leader_b.collect_garbage(Some(1)).await.unwrap().revisions,
        2
    );
}

async fn servers_are_listed_and_forgotten(store: Store) {
    let record = |id: &str, started_at| ServerRecord {
        id: id.into(),
        name: format!("name-{id}"),
        url: format!("http://{id}:8380"),
        version: "0.1.0".into(),
        started_at,
        last_seen: 0,
    };
    store.server_seen(&record("s1", 1)).await.unwrap();
    store.server_seen(&record("s2", 2)).await.unwrap();
    store.server_seen(&record("s1", 1)).await.unwrap();
    let (servers, now) = store.servers().await.unwrap();
    let ids: Vec<&str> = servers.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["s1", "s2"]);
    assert!(servers.iter().all(|s| (now - s.last_seen).abs() < 60_000));
    store.server_gone("s1", LONG).await.unwrap();
    let (servers, _) = store.servers().await.unwrap();
    assert_eq!(servers.len(), 1);
    assert_eq!(servers[0].url, "http://s2:8380");
}
