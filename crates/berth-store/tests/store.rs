//! berth-store against real databases: every test runs on SQLite and on
//! PostgreSQL (see `common`).

#[macro_use]
mod common;

use berth_core::time::now_millis;
use berth_store::*;
use common::*;
use sha2::{Digest, Sha256};
use sqlx::Row;
use std::collections::HashSet;
use std::time::Duration;

const T: Millis = 1_700_000_000_000;

store_tests!(
    projects_and_tokens,
    stacks_crud,
    code_revisions_and_packages,
    delete_code_cancels_queued_tasks,
    old_revisions_go_unless_a_task_needs_them,
    project_package_quota,
    pause_resume_and_stats,
    tenant_isolation,
    queue_tasks_is_atomic,
    listing_filters_and_paging,
    claim_order,
    claim_respects_delay,
    claim_respects_max_concurrency_and_pause,
    claim_skips_cancel_requested,
    conditional_transitions,
    cancel_races_completion,
    cancel_races_claim,
    cancel_all_of_a_code,
    requeue,
    requeue_with_cancel_requested_cancels,
    abandoned_calls_leave_nothing_half_done,
    retry_task,
    progress_and_log,
    active_tasks_and_next_eligible,
    schedules_create_and_cancel,
    schedules_fire,
    schedule_of_deleted_code_completes,
    overlay_networks_and_their_addresses,
);

db_tests!(
    migrations_fresh_and_reopen,
    schema_too_new_is_refused,
    concurrent_opens_migrate_once,
    token_secret_is_not_stored,
    concurrent_claimers_never_share_a_task,
    durability_across_reopen,
    claim_skips_queued_rows_with_cancel_requested,
    concurrent_claimers_respect_max_concurrency,
    packages_are_stored_once,
    deleted_packages_give_their_space_back,
    concurrent_pushes_deletes_and_collections_all_succeed,
    concurrent_address_claims_all_succeed_and_never_share,
);

// ----- opening and migrations -------------------------------------------------

#[tokio::test]
async fn unsupported_urls_are_refused() {
    for url in [
        "mysql://localhost/berth",
        "berth.db",
        "sqlite::memory:",
        "sqlite://",
        "sqlite://x.db?mode=ro",
    ] {
        match Store::open(url).await {
            Err(StoreError::UnsupportedUrl(u)) => assert_eq!(u, url),
            Err(other) => panic!("{url}: expected UnsupportedUrl, got {other:?}"),
            Ok(_) => panic!("{url}: expected UnsupportedUrl, got a store"),
        }
    }
}

#[tokio::test]
async fn sqlite_colon_path_form_is_accepted() {
    let dir = tempfile::TempDir::new().unwrap();
    let url = format!("sqlite:{}/a/b/berth.db?mode=rwc", dir.path().display());
    let store = Store::open(&url).await.unwrap();
    assert_eq!(store.dialect(), Dialect::Sqlite);
    store.create_project("x").await.unwrap();
    store.close().await;
    assert!(dir.path().join("a/b/berth.db").exists());
}

async fn migrations_fresh_and_reopen(db: Db) -> Db {
    let store = db.open().await;
    let version = store.schema_version().await.unwrap();
    assert!(version >= 1);
    assert_eq!(
        store.dialect(),
        if db.is_sqlite() {
            Dialect::Sqlite
        } else {
            Dialect::Postgres
        }
    );
    let project = store.create_project("kept").await.unwrap();
    store.close().await;

    // Reopening applies nothing again and keeps the data.
    let store = db.open().await;
    assert_eq!(store.schema_version().await.unwrap(), version);
    assert_eq!(store.project(&project.id).await.unwrap(), Some(project));
    store.close().await;

    let raw = db.raw().await;
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM schema_migrations")
        .fetch_one(&raw)
        .await
        .unwrap();
    assert_eq!(rows, version, "one row per migration");
    if db.is_sqlite() {
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&raw)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
    }
    raw.close().await;
    db
}

async fn schema_too_new_is_refused(db: Db) -> Db {
    let store = db.open().await;
    let known = store.schema_version().await.unwrap();
    store.close().await;

    let raw = db.raw().await;
    sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
        .bind(known + 100)
        .bind(now_millis())
        .execute(&raw)
        .await
        .unwrap();
    raw.close().await;

    match Store::open(&db.url).await {
        Err(StoreError::SchemaTooNew { found, known: k }) => {
            assert_eq!(found, known + 100);
            assert_eq!(k, known);
        }
        Err(other) => panic!("expected SchemaTooNew, got {other:?}"),
        Ok(_) => panic!("expected SchemaTooNew, got a store"),
    }
    db
}

async fn concurrent_opens_migrate_once(db: Db) -> Db {
    let (a, b, c) = tokio::join!(
        Store::open(&db.url),
        Store::open(&db.url),
        Store::open(&db.url)
    );
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    let version = a.schema_version().await.unwrap();
    assert_eq!(b.schema_version().await.unwrap(), version);
    for store in [a, b, c] {
        store.close().await;
    }
    let raw = db.raw().await;
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM schema_migrations")
        .fetch_one(&raw)
        .await
        .unwrap();
    assert_eq!(rows, version);
    raw.close().await;
    db
}

// ----- projects, tokens, stacks -------------------------------------------------

async fn projects_and_tokens(store: Store) {
    let a = store.create_project("alpha").await.unwrap();
    let b = store.create_project("beta").await.unwrap();
    assert_eq!(a.id.len(), 24);
    assert_eq!(store.project(&a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(store.project("nope").await.unwrap(), None);
    let all = store.projects().await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(all.contains(&a) && all.contains(&b));

    match store.create_token("nope", "t").await {
        Err(StoreError::UnknownProject(p)) => assert_eq!(p, "nope"),
        other => panic!("expected UnknownProject, got {other:?}"),
    }

    let (token, secret) = store.create_token(&a.id, "ci").await.unwrap();
    assert!(secret.starts_with("bt_"));
    assert_eq!(secret.len(), 43);
    assert!(secret[3..].chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(token.project_id, a.id);
    assert_eq!(token.revoked_at, None);
    let (_, secret2) = store.create_token(&a.id, "other").await.unwrap();
    assert_ne!(secret, secret2);
    let (_, secret_b) = store.create_token(&b.id, "b").await.unwrap();

    assert_eq!(
        store.authenticate(&secret).await.unwrap(),
        Some(a.id.clone())
    );
    assert_eq!(
        store.authenticate(&secret_b).await.unwrap(),
        Some(b.id.clone())
    );
    assert_eq!(store.authenticate("bt_wrong").await.unwrap(), None);
    assert_eq!(store.authenticate("").await.unwrap(), None);

    let tokens = store.tokens(&a.id).await.unwrap();
    assert_eq!(tokens.len(), 2);
    assert!(tokens.contains(&token));
    assert_eq!(store.tokens(&b.id).await.unwrap().len(), 1);

    assert!(store.revoke_token(&token.id).await.unwrap());
    assert!(!store.revoke_token(&token.id).await.unwrap());
    assert!(!store.revoke_token("nope").await.unwrap());
    assert_eq!(store.authenticate(&secret).await.unwrap(), None);
    assert_eq!(
        store.authenticate(&secret2).await.unwrap(),
        Some(a.id.clone())
    );
    let revoked = store.tokens(&a.id).await.unwrap();
    let revoked = revoked.iter().find(|t| t.id == token.id).unwrap();
    assert!(revoked.revoked_at.is_some());
}

async fn token_secret_is_not_stored(db: Db) -> Db {
    let store = db.open().await;
    let project = store.create_project("p").await.unwrap();
    let (token, secret) = store.create_token(&project.id, "t").await.unwrap();
    store.close().await;

    let raw = db.raw().await;
    let row = sqlx::query("SELECT id, project_id, name, secret_sha256 FROM tokens")
        .fetch_one(&raw)
        .await
        .unwrap();
    let stored: String = row.try_get("secret_sha256").unwrap();
    assert_eq!(stored, hex::encode(Sha256::digest(secret.as_bytes())));
    for column in ["id", "project_id", "name", "secret_sha256"] {
        let value: String = row.try_get(column).unwrap();
        assert!(!value.contains(&secret[3..]), "{column} holds the secret");
    }
    assert_eq!(row.try_get::<String, _>("id").unwrap(), token.id);
    raw.close().await;
    db
}

async fn stacks_crud(store: Store) {
    assert_eq!(store.stack("sh").await.unwrap(), None);
    let cmd = vec!["sh".to_string(), "{file}".to_string()];
    let sh = store.set_stack("sh", "busybox:1", &cmd).await.unwrap();
    assert_eq!(sh.command, cmd);
    assert_eq!(store.stack("sh").await.unwrap(), Some(sh.clone()));
    let bin = store
        .set_stack("binary", "debian:12", &["./{file}".to_string()])
        .await
        .unwrap();
    assert_eq!(store.stacks().await.unwrap(), vec![bin.clone(), sh]);

    // Replace.
    let sh2 = store.set_stack("sh", "alpine:3", &cmd).await.unwrap();
    assert_eq!(store.stack("sh").await.unwrap().unwrap().image, "alpine:3");
    assert_eq!(store.stacks().await.unwrap(), vec![bin, sh2]);

    assert!(store.remove_stack("sh").await.unwrap());
    assert!(!store.remove_stack("sh").await.unwrap());
    assert_eq!(store.stack("sh").await.unwrap(), None);
    assert_eq!(store.stacks().await.unwrap().len(), 1);
}

// ----- codes ---------------------------------------------------------------------

async fn code_revisions_and_packages(store: Store) {
    let project = store.create_project("p").await.unwrap().id;
    let zip1 = b"PK\x03\x04 first package".to_vec();
    let zip2 = b"PK\x03\x04 second package".to_vec();
    let mut spec = code_spec("worker");
    spec.env_vars.insert("A".into(), "1".into());
    spec.max_concurrency = Some(3);
    spec.retries = 2;
    spec.retries_delay = 5;
    spec.default_priority = 1;
    spec.config = Some("cfg".into());

    let v1 = store.push_code(&project, &spec, Some(&zip1)).await.unwrap();
    assert_eq!(v1.latest.rev, 1);
    assert_eq!(v1.name, "worker");
    assert!(!v1.paused);
    assert_eq!(v1.latest.spec, spec);
    assert_eq!(v1.latest.package_size, zip1.len() as i64);
    let sha1 = v1.latest.package_sha256.clone().unwrap();
    assert_eq!(sha1, hex::encode(Sha256::digest(&zip1)));

    // Same package again: a new revision, the same stored package.
    spec.env_vars.insert("B".into(), "2".into());
    let v2 = store.push_code(&project, &spec, Some(&zip1)).await.unwrap();
    assert_eq!(v2.id, v1.id);
    assert_eq!(v2.latest.rev, 2);
    assert_eq!(v2.created_at, v1.created_at);
    assert_eq!(v2.latest.package_sha256.as_deref(), Some(sha1.as_str()));
    assert_ne!(v2.latest.id, v1.latest.id);

    let v3 = store.push_code(&project, &spec, Some(&zip2)).await.unwrap();
    assert_eq!(v3.latest.rev, 3);
    let sha2 = v3.latest.package_sha256.clone().unwrap();
    assert_ne!(sha1, sha2);
    // And one without a package.
    let v4 = store.push_code(&project, &spec, None).await.unwrap();
    assert_eq!(v4.latest.rev, 4);
    assert_eq!(v4.latest.package_sha256, None);
    assert_eq!(v4.latest.package_size, 0);

    // Latest.
    assert_eq!(
        store.code(&project, &v1.id).await.unwrap(),
        Some(v4.clone())
    );
    assert_eq!(
        store.code_by_name(&project, "worker").await.unwrap(),
        Some(v4.clone())
    );
    assert_eq!(store.code_by_name(&project, "other").await.unwrap(), None);

    // Downloads: the latest (no package: empty), and old revisions.
    let (rev, data) = store
        .package(&project, &v1.id, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((rev.rev, data.len()), (4, 0));
    let (rev, data) = store
        .package(&project, &v1.id, Some(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((rev, data), (v1.latest.clone(), zip1.clone()));
    let (_, data) = store
        .package(&project, &v1.id, Some(3))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(data, zip2);
    assert_eq!(
        store.package(&project, &v1.id, Some(9)).await.unwrap(),
        None
    );
    assert_eq!(store.package_by_sha256(&sha1).await.unwrap(), Some(zip1));
    assert_eq!(store.package_by_sha256("00").await.unwrap(), None);

    // Revisions: newest first, paged.
    let revs = store
        .revisions(&project, &v1.id, ALL)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        revs.iter().map(|r| r.rev).collect::<Vec<_>>(),
        vec![4, 3, 2, 1]
    );
    assert_eq!(revs[3], v1.latest);
    let page1 = store
        .revisions(
            &project,
            &v1.id,
            Page {
                page: 1,
                per_page: 3,
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(page1.iter().map(|r| r.rev).collect::<Vec<_>>(), vec![1]);
    assert_eq!(store.revisions(&project, "nope", ALL).await.unwrap(), None);

    // Codes listing: by name, paged.
    for name in ["c", "a", "b"] {
        store
            .push_code(&project, &code_spec(name), None)
            .await
            .unwrap();
    }
    let names = |codes: Vec<Code>| codes.into_iter().map(|c| c.name).collect::<Vec<_>>();
    assert_eq!(
        names(store.codes(&project, ALL).await.unwrap()),
        vec!["a", "b", "c", "worker"]
    );
    assert_eq!(
        names(
            store
                .codes(
                    &project,
                    Page {
                        page: 1,
                        per_page: 2
                    }
                )
                .await
                .unwrap()
        ),
        vec!["c", "worker"]
    );
    assert_eq!(
        store
            .codes(
                &project,
                Page {
                    page: 2,
                    per_page: 2
                }
            )
            .await
            .unwrap(),
        vec![]
    );
}

async fn delete_code_cancels_queued_tasks(store: Store) {
    let project = store.create_project("p").await.unwrap().id;
    let shared = b"shared package".to_vec();
    let own = b"own package".to_vec();
    let keep = store
        .push_code(&project, &code_spec("keep"), Some(&shared))
        .await
        .unwrap();
    store
        .push_code(&project, &code_spec("doomed"), Some(&shared))
        .await
        .unwrap();
    let doomed = store
        .push_code(&project, &code_spec("doomed"), Some(&own))
        .await
        .unwrap();
    let own_sha = doomed.latest.package_sha256.clone().unwrap();
    let shared_sha = keep.latest.package_sha256.clone().unwrap();

    let running = queue_one(&store, &project, new_task("doomed"), T).await;
    let claimed = claim_ids(&store, 1, T).await;
    assert_eq!(claimed, vec![running.clone()]);
    assert!(store.mark_running(&running, 1, T).await.unwrap());
    let queued = store
        .queue_tasks(&project, &[new_task("doomed"), new_task("doomed")], T)
        .await
        .unwrap();
    let other = queue_one(&store, &project, new_task("keep"), T).await;

    assert!(!store.delete_code(&project, "nope").await.unwrap());
    assert!(store.delete_code(&project, &doomed.id).await.unwrap());
    assert!(!store.delete_code(&project, &doomed.id).await.unwrap());
    assert_eq!(store.code(&project, &doomed.id).await.unwrap(), None);
    assert_eq!(store.code_by_name(&project, "doomed").await.unwrap(), None);
    assert_eq!(
        store.revisions(&project, &doomed.id, ALL).await.unwrap(),
        None
    );
    assert_eq!(
        store.package(&project, &doomed.id, Some(1)).await.unwrap(),
        None
    );

    for id in &queued {
        let task = store.task(&project, id).await.unwrap().unwrap();
        assert_eq!(task.status, TaskStatus::Cancelled);
        assert_eq!(task.msg.as_deref(), Some("code deleted"));
        assert!(task.end_time.is_some());
    }
    let task = store.task(&project, &running).await.unwrap().unwrap();
    assert_eq!(task.status, TaskStatus::Running);
    assert_eq!(task.code_name, "doomed");
    assert_eq!(
        store.task(&project, &other).await.unwrap().unwrap().status,
        TaskStatus::Queued
    );

    // The running task's revision stays available to a restarted dispatcher.
    let active = store.active_tasks().await.unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].code.rev, 2);
    assert_eq!(
        active[0].code.package_sha256.as_deref(),
        Some(own_sha.as_str())
    );
    assert!(store.package_by_sha256(&own_sha).await.unwrap().is_some());
    // The shared package stays; nothing claims the deleted code's tasks.
    assert!(store
        .package_by_sha256(&shared_sha)
        .await
        .unwrap()
        .is_some());
    assert_eq!(claim_ids(&store, 10, T).await, vec![other.clone()]);

    // Once the task has ended, the next deletion removes the leftovers.
    assert!(store
        .end_attempt(&running, 1, finished(TaskStatus::Complete, b"", T), T)
        .await
        .unwrap());
    let again = store
        .push_code(&project, &code_spec("doomed"), None)
        .await
        .unwrap();
    assert_ne!(again.id, doomed.id);
    assert_eq!(again.latest.rev, 1);
    assert!(store.delete_code(&project, &again.id).await.unwrap());
    assert_eq!(store.package_by_sha256(&own_sha).await.unwrap(), None);
    assert!(store
        .package_by_sha256(&shared_sha)
        .await
        .unwrap()
        .is_some());

    // Deleting the last user of the shared package removes it (once its
    // claimed task has ended).
    assert!(store
        .end_attempt(&other, 1, finished(TaskStatus::Complete, b"", T), T)
        .await
        .unwrap());
    assert!(store.delete_code(&project, &keep.id).await.unwrap());
    assert_eq!(store.package_by_sha256(&shared_sha).await.unwrap(), None);
    assert_eq!(store.codes(&project, ALL).await.unwrap(), vec![]);
}

fn package(data: &[u8], unpacked_size: i64) -> Option<NewPackage<'_>> {
    Some(NewPackage {
        data,
        unpacked_size: Some(unpacked_size),
    })
}

fn keep(revisions: i64) -> CodeLimits {
    CodeLimits {
        max_project_package_bytes: None,
        revisions_kept: Some(revisions),
    }
}

async fn old_revisions_go_unless_a_task_needs_them(store: Store) {
    let project = store.create_project("p").await.unwrap().id;
    let spec = code_spec("w");
    let zips: Vec<Vec<u8>> = (1..=5).map(|i| format!("zip {i}").into_bytes()).collect();
    let sha = |rev: usize| hex::encode(Sha256::digest(&zips[rev - 1]));
    let push = |rev: usize| {
        let store = store.clone();
        let project = project.clone();
        let spec = spec.clone();
        let zip = zips[rev - 1].clone();
        async move {
            store
                .push_code_limited(&project, &spec, package(&zip, 100), keep(2))
                .await
                .unwrap()
        }
    };
    let code = push(1).await;
    // A task queued on revision 1 keeps it (it runs what it was queued
    // with), running or waiting.
    let on_rev1 = queue_one(&store, &project, new_task("w"), T).await;
    push(2).await;
    let on_rev2 = queue_one(&store, &project, new_task("w"), T + 1).await;
    assert_eq!(claim_ids(&store, 1, T + 10).await, vec![on_rev1.clone()]);
    push(3).await;
    push(4).await;
    let revs = |list: Vec<CodeRevision>| list.iter().map(|r| r.rev).collect::<Vec<_>>();
    assert_eq!(
        revs(
            store
                .revisions(&project, &code.id, ALL)
                .await
                .unwrap()
                .unwrap()
        ),
        vec![4, 3, 2, 1],
        "revisions 1 (preparing) and 2 (queued) are in use"
    );
    push(5).await;
    // Revision 3 was neither kept nor used: gone with its package.
    assert_eq!(
        revs(
            store
                .revisions(&project, &code.id, ALL)
                .await
                .unwrap()
                .unwrap()
        ),
        vec![5, 4, 2, 1]
    );
    assert_eq!(store.package_by_sha256(&sha(3)).await.unwrap(), None);
    assert!(store.package_by_sha256(&sha(1)).await.unwrap().is_some());
    assert_eq!(
        store.package(&project, &code.id, Some(3)).await.unwrap(),
        None
    );
    assert_eq!(
        store.package_digests().await.unwrap(),
        [1, 2, 4, 5].map(sha).into_iter().collect::<HashSet<_>>()
    );
    // Nothing to collect while the tasks live.
    assert_eq!(
        store.collect_garbage(Some(2)).await.unwrap(),
        GarbageReport::default()
    );
    // Once they have ended, the next collection takes their revisions.
    assert!(store.mark_running(&on_rev1, 1, T).await.unwrap());
    assert!(store
        .end_attempt(&on_rev1, 1, finished(TaskStatus::Complete, b"", T), T)
        .await
        .unwrap());
    assert_eq!(
        store.cancel_task(&project, &on_rev2, T).await.unwrap(),
        Some(CancelOutcome::Cancelled)
    );
    assert_eq!(
        store.collect_garbage(Some(2)).await.unwrap(),
        GarbageReport {
            revisions: 2,
            packages: 2
        }
    );
    assert_eq!(
        revs(
            store
                .revisions(&project, &code.id, ALL)
                .await
                .unwrap()
                .unwrap()
        ),
        vec![5, 4]
    );
    assert_eq!(
        store.package_digests().await.unwrap(),
        [4, 5].map(sha).into_iter().collect::<HashSet<_>>()
    );
    // Without retention (push_code), everything stays.
    store.push_code(&project, &spec, None).await.unwrap();
    store.push_code(&project, &spec, None).await.unwrap();
    assert_eq!(
        revs(
            store
                .revisions(&project, &code.id, ALL)
                .await
                .unwrap()
                .unwrap()
        ),
        vec![7, 6, 5, 4]
    );
    assert_eq!(
        store.collect_garbage(None).await.unwrap(),
        GarbageReport::default()
    );
    // A deleted code's revisions used by a running task wait for its end,
    // then the collection takes them.
    let running = queue_one(&store, &project, new_task("w"), T).await;
    assert_eq!(claim_ids(&store, 1, T + 10).await, vec![running.clone()]);
    assert!(store.delete_code(&project, &code.id).await.unwrap());
    assert_eq!(store.active_tasks().await.unwrap().len(), 1);
    assert!(store
        .end_attempt(&running, 1, finished(TaskStatus::Complete, b"", T), T)
        .await
        .unwrap());
    let collected = store.collect_garbage(None).await.unwrap();
    assert_eq!(collected.revisions, 1, "{collected:?}");
    assert_eq!(store.package_digests().await.unwrap(), HashSet::new());
    assert_eq!(store.package_usage(&project).await.unwrap(), 0);
}

async fn project_package_quota(store: Store) {
    let project = store.create_project("p").await.unwrap().id;
    let other = store.create_project("other").await.unwrap().id;
    let limits = CodeLimits {
        max_project_package_bytes: Some(1000),
        revisions_kept: Some(2),
    };
    let a = b"package a".to_vec();
    let b = b"package b".to_vec();
    let c = b"package c".to_vec();
    store
        .push_code_limited(&project, &code_spec("x"), package(&a, 600), limits)
        .await
        .unwrap();
    assert_eq!(store.package_usage(&project).await.unwrap(), 600);
    // The same package again, in another code: counted once.
    store
        .push_code_limited(&project, &code_spec("y"), package(&a, 600), limits)
        .await
        .unwrap();
    assert_eq!(store.package_usage(&project).await.unwrap(), 600);
    // 600 + 500 > 1000: refused, and nothing stored.
    let before = store.codes(&project, ALL).await.unwrap();
    match store
        .push_code_limited(&project, &code_spec("z"), package(&b, 500), limits)
        .await
    {
        Err(StoreError::QuotaExceeded {
            limit: 1000,
            in_use: 600,
            would_use: 1100,
        }) => {}
        other => panic!("expected QuotaExceeded, got {other:?}"),
    }
    let err = store
        .push_code_limited(&project, &code_spec("x"), package(&b, 500), limits)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("limit of 1000 bytes")
            && err.to_string().contains("600 bytes in use"),
        "{err}"
    );
    assert_eq!(store.codes(&project, ALL).await.unwrap(), before);
    assert_eq!(
        store
            .package_by_sha256(&hex::encode(Sha256::digest(&b)))
            .await
            .unwrap(),
        None
    );
    // Another project has its own quota, and the shared package counts for it too.
    store
        .push_code_limited(&other, &code_spec("x"), package(&b, 500), limits)
        .await
        .unwrap();
    assert_eq!(store.package_usage(&other).await.unwrap(), 500);
    // Revisions without a package always pass.
    store
        .push_code_limited(&project, &code_spec("z"), None, limits)
        .await
        .unwrap();
    // A revision that pushes the old package out makes room: code x keeps
    // 2 revisions, so its a-revision goes once two newer exist … but code
    // y still uses a, so usage stays 600 and c (500) does not fit.
    store
        .push_code_limited(&project, &code_spec("x"), None, limits)
        .await
        .unwrap();
    assert!(matches!(
        store
            .push_code_limited(&project, &code_spec("x"), package(&c, 500), limits)
            .await,
        Err(StoreError::QuotaExceeded { .. })
    ));
    // Deleting y frees a only once x has pushed it out as well.
    let y = store.code_by_name(&project, "y").await.unwrap().unwrap();
    assert!(store.delete_code(&project, &y.id).await.unwrap());
    assert_eq!(store.package_usage(&project).await.unwrap(), 600);
    store
        .push_code_limited(&project, &code_spec("x"), None, limits)
        .await
        .unwrap();
    assert_eq!(store.package_usage(&project).await.unwrap(), 0);
    store
        .push_code_limited(&project, &code_spec("x"), package(&c, 500), limits)
        .await
        .unwrap();
    assert_eq!(store.package_usage(&project).await.unwrap(), 500);
    // A limit lowered below the usage refuses growth only.
    let lowered = CodeLimits {
        max_project_package_bytes: Some(100),
        ..limits
    };
    store
        .push_code_limited(&project, &code_spec("x"), package(&c, 500), lowered)
        .await
        .unwrap();
    assert!(matches!(
        store
            .push_code_limited(&project, &code_spec("w"), package(&a, 600), lowered)
            .await,
        Err(StoreError::QuotaExceeded {
            limit: 100,
            in_use: 500,
            would_use: 1100
        })
    ));
}

async fn pause_resume_and_stats(store: Store) {
    let (project, code) = project_with_code(&store, "c").await;
    assert_eq!(
        store.code_stats(&project, &code.id).await.unwrap(),
        Some(CodeStats::default())
    );
    let ids = store
        .queue_tasks(&project, &vec![new_task("c"); 5], T)
        .await
        .unwrap();

    assert!(store.set_paused(&project, &code.id, true).await.unwrap());
    assert!(
        store
            .code(&project, &code.id)
            .await
            .unwrap()
            .unwrap()
            .paused
    );
    assert_eq!(claim_ids(&store, 10, T).await, Vec::<String>::new());
    assert_eq!(store.next_eligible_at().await.unwrap(), None);
    // A new revision keeps the pause.
    assert!(
        store
            .push_code(&project, &code_spec("c"), None)
            .await
            .unwrap()
            .paused
    );

    assert!(store.set_paused(&project, &code.id, false).await.unwrap());
    assert!(
        !store
            .code(&project, &code.id)
            .await
            .unwrap()
            .unwrap()
            .paused
    );
    assert!(!store.set_paused(&project, "nope", true).await.unwrap());

    let claimed = claim_ids(&store, 3, T).await;
    assert_eq!(claimed, ids[..3].to_vec());
    assert!(store.mark_running(&ids[0], 1, T).await.unwrap());
    assert!(store
        .end_attempt(&ids[1], 1, finished(TaskStatus::Error, b"", T), T)
        .await
        .unwrap());
    store.cancel_task(&project, &ids[3], T).await.unwrap();
    let stats = store.code_stats(&project, &code.id).await.unwrap().unwrap();
    assert_eq!(
        stats,
        CodeStats {
            queued: 1,
            preparing: 1,
            running: 1,
            error: 1,
            cancelled: 1,
            ..Default::default()
        }
    );
    assert_eq!(store.code_stats(&project, "nope").await.unwrap(), None);
}

/// `cancel_code_tasks`: queued tasks of the code are cancelled, running
/// ones asked to stop, other codes' tasks and ended ones untouched.
async fn cancel_all_of_a_code(store: Store) {
    let (project, code) = project_with_code(&store, "c").await;
    store
        .push_code(&project, &code_spec("d"), None)
        .await
        .unwrap();
    let mut ids = Vec::new();
    // Queued a millisecond apart: claimed in that order.
    for i in 0..4 {
        ids.push(queue_one(&store, &project, new_task("c"), T + i).await);
    }
    let other = queue_one(&store, &project, new_task("d"), T + 4).await;
    assert_eq!(claim_ids(&store, 2, T + 10).await, ids[..2].to_vec());
    assert!(store.mark_running(&ids[0], 1, T).await.unwrap());
    store.cancel_task(&project, &ids[3], T).await.unwrap();

    let stranger = store.create_project("q").await.unwrap().id;
    assert_eq!(
        store
            .cancel_code_tasks(&stranger, &code.id, T)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.cancel_code_tasks(&project, "nope", T).await.unwrap(),
        None
    );
    assert_eq!(
        store.task(&project, &ids[2]).await.unwrap().unwrap().status,
        TaskStatus::Queued
    );

    let done = store
        .cancel_code_tasks(&project, &code.id, T + 5)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.cancelled, 1);
    let mut stopped: Vec<_> = done.stops.iter().map(|s| s.task_id.clone()).collect();
    stopped.sort();
    let mut running = ids[..2].to_vec();
    running.sort();
    assert_eq!(stopped, running);
    assert!(done.stops.iter().all(|s| s.agent == "agent-1"));
    assert!(done
        .stops
        .iter()
        .all(|s| s.container == container_name(&s.task_id, 1)));

    let task = |id: String| {
        let store = store.clone();
        let project = project.clone();
        async move { store.task(&project, &id).await.unwrap().unwrap() }
    };
    let queued = task(ids[2].clone()).await;
    assert_eq!(queued.status, TaskStatus::Cancelled);
    assert_eq!(queued.end_time, Some(T + 5));
    for id in &ids[..2] {
        let t = task(id.clone()).await;
        assert!(t.cancel_requested, "{id} has no cancel request");
        assert!(matches!(
            t.status,
            TaskStatus::Preparing | TaskStatus::Running
        ));
    }
    assert_eq!(task(ids[3].clone()).await.status, TaskStatus::Cancelled);
    let other = task(other).await;
    assert_eq!(other.status, TaskStatus::Queued);
    assert!(!other.cancel_requested);
}

// ----- tenant isolation ------------------------------------------------------------

async fn tenant_isolation(store: Store) {
    let a = store.create_project("a").await.unwrap().id;
    let (b, b_code) = project_with_code(&store, "shared-name").await;
    // A has a code of the same name: names are per project.
    let a_code = store
        .push_code(&a, &code_spec("shared-name"), None)
        .await
        .unwrap();
    assert_ne!(a_code.id, b_code.id);
    assert_eq!(a_code.latest.rev, 1);

    let b_task = queue_one(&store, &b, new_task("shared-name"), T).await;
    let b_ended = queue_one(&store, &b, new_task("shared-name"), T).await;
    store.cancel_task(&b, &b_ended, T).await.unwrap();
    let b_schedule = store
        .create_schedule(&b, &schedule_spec("shared-name", T, Some(60)), T)
        .await
        .unwrap();

    assert_eq!(store.task(&a, &b_task).await.unwrap(), None);
    assert_eq!(store.task_log(&a, &b_task).await.unwrap(), None);
    assert_eq!(store.cancel_task(&a, &b_task, T).await.unwrap(), None);
    assert_eq!(store.retry_task(&a, &b_ended, 0, T).await.unwrap(), None);
    assert!(!store
        .set_progress(&a, &b_task, Some(50), Some("x"), T)
        .await
        .unwrap());
    assert_eq!(store.code(&a, &b_code.id).await.unwrap(), None);
    assert_eq!(store.revisions(&a, &b_code.id, ALL).await.unwrap(), None);
    assert_eq!(store.package(&a, &b_code.id, None).await.unwrap(), None);
    assert_eq!(store.package(&a, &b_code.id, Some(1)).await.unwrap(), None);
    assert_eq!(store.schedule(&a, &b_schedule.id).await.unwrap(), None);
    assert_eq!(
        store.cancel_schedule(&a, &b_schedule.id, T).await.unwrap(),
        None
    );
    assert!(!store.set_paused(&a, &b_code.id, true).await.unwrap());
    assert_eq!(store.code_stats(&a, &b_code.id).await.unwrap(), None);
    assert!(!store.delete_code(&a, &b_code.id).await.unwrap());
    assert_eq!(
        store.tasks(&a, &TaskFilter::default(), ALL).await.unwrap(),
        vec![]
    );
    assert_eq!(store.schedules(&a, ALL).await.unwrap(), vec![]);
    assert_eq!(store.codes(&a, ALL).await.unwrap(), vec![a_code.clone()]);
    assert_eq!(
        store.code_stats(&a, &a_code.id).await.unwrap(),
        Some(CodeStats::default())
    );
    // A's task of the same code name goes to A's code.
    let a_task = queue_one(&store, &a, new_task("shared-name"), T).await;
    assert_eq!(
        store.task(&a, &a_task).await.unwrap().unwrap().code_id,
        a_code.id
    );

    // Nothing of B changed.
    let task = store.task(&b, &b_task).await.unwrap().unwrap();
    assert_eq!(task.status, TaskStatus::Queued);
    assert_eq!(task.percent, None);
    assert!(!store.code(&b, &b_code.id).await.unwrap().unwrap().paused);
    assert_eq!(
        store
            .schedule(&b, &b_schedule.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        ScheduleStatus::Scheduled
    );
    assert_eq!(
        store
            .tasks(&b, &TaskFilter::default(), ALL)
            .await
            .unwrap()
            .len(),
        2
    );
}

// ----- queueing and listing ----------------------------------------------------------

async fn queue_tasks_is_atomic(store: Store) {
    let (project, _) = project_with_code(&store, "known").await;
    let batch = [new_task("known"), new_task("unknown"), new_task("known")];
    match store.queue_tasks(&project, &batch, T).await {
        Err(StoreError::UnknownCode(name)) => assert_eq!(name, "unknown"),
        other => panic!("expected UnknownCode, got {other:?}"),
    }
    assert_eq!(
        store
            .tasks(&project, &TaskFilter::default(), ALL)
            .await
            .unwrap(),
        vec![]
    );
    assert_eq!(claim_ids(&store, 10, T).await, Vec::<String>::new());
    assert_eq!(
        store.queue_tasks(&project, &[], T).await.unwrap(),
        Vec::<String>::new()
    );

    // A good batch: all stored, ids in order, defaults applied.
    let mut spec = code_spec("known");
    spec.default_priority = 2;
    store.push_code(&project, &spec, None).await.unwrap();
    let mut delayed = new_task("known");
    delayed.delay = 30;
    delayed.label = Some("l".into());
    delayed.cluster = Some("c".into());
    let ids = store
        .queue_tasks(
            &project,
            &[new_task("known"), with_priority("known", 0), delayed],
            T,
        )
        .await
        .unwrap();
    assert_eq!(ids.len(), 3);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 3);
    let first = store.task(&project, &ids[0]).await.unwrap().unwrap();
    assert_eq!(first.status, TaskStatus::Queued);
    assert_eq!(first.priority, 2);
    assert_eq!(first.code_rev, 2);
    assert_eq!(first.code_name, "known");
    assert_eq!(first.created_at, T);
    assert_eq!(first.eligible_at, T);
    assert_eq!(first.attempt, 0);
    assert_eq!(first.retry_count, 0);
    assert!(!first.cancel_requested);
    assert_eq!(
        store
            .task(&project, &ids[1])
            .await
            .unwrap()
            .unwrap()
            .priority,
        0
    );
    let third = store.task(&project, &ids[2]).await.unwrap().unwrap();
    assert_eq!(third.eligible_at, T + 30_000);
    assert_eq!(third.delay, 30);
    assert_eq!(third.label.as_deref(), Some("l"));
    assert_eq!(third.cluster.as_deref(), Some("c"));
}

async fn listing_filters_and_paging(store: Store) {
    let project = store.create_project("p").await.unwrap().id;
    store
        .push_code(&project, &code_spec("a"), None)
        .await
        .unwrap();
    store
        .push_code(&project, &code_spec("b"), None)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..10 {
        let code = if i % 2 == 0 { "a" } else { "b" };
        ids.push(queue_one(&store, &project, new_task(code), T + i * 1000).await);
    }
    // ids[9] is newest. Cancel two of them.
    store.cancel_task(&project, &ids[0], T).await.unwrap();
    store.cancel_task(&project, &ids[1], T).await.unwrap();

    let list = |filter: TaskFilter, page: Page| {
        let store = store.clone();
        let project = project.clone();
        async move {
            store
                .tasks(&project, &filter, page)
                .await
                .unwrap()
                .into_iter()
                .map(|t| t.id)
                .collect::<Vec<_>>()
        }
    };
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(list(TaskFilter::default(), ALL).await, newest_first);
    assert_eq!(
        list(
            TaskFilter::default(),
            Page {
                page: 0,
                per_page: 3
            }
        )
        .await,
        newest_first[..3].to_vec()
    );
    assert_eq!(
        list(
            TaskFilter::default(),
            Page {
                page: 3,
                per_page: 3
            }
        )
        .await,
        newest_first[9..].to_vec()
    );
    assert_eq!(
        list(
            TaskFilter::default(),
            Page {
                page: 4,
                per_page: 3
            }
        )
        .await,
        Vec::<String>::new()
    );

    let by_code = TaskFilter {
        code_name: Some("a".into()),
        ..Default::default()
    };
    assert_eq!(
        list(by_code, ALL).await,
        vec![
            ids[8].clone(),
            ids[6].clone(),
            ids[4].clone(),
            ids[2].clone(),
            ids[0].clone()
        ]
    );
    let cancelled = TaskFilter {
        statuses: vec![TaskStatus::Cancelled],
        ..Default::default()
    };
    assert_eq!(
        list(cancelled, ALL).await,
        vec![ids[1].clone(), ids[0].clone()]
    );
    let both = TaskFilter {
        statuses: vec![
            TaskStatus::Cancelled,
            TaskStatus::Queued,
            TaskStatus::Queued,
        ],
        ..Default::default()
    };
    assert_eq!(list(both, ALL).await.len(), 10);
    let running = TaskFilter {
        statuses: vec![TaskStatus::Running],
        ..Default::default()
    };
    assert_eq!(list(running, ALL).await, Vec::<String>::new());

    let window = TaskFilter {
        from_time: Some(T + 2000),
        to_time: Some(T + 4000),
        ..Default::default()
    };
    assert_eq!(
        list(window, ALL).await,
        vec![ids[4].clone(), ids[3].clone(), ids[2].clone()]
    );
    let combined = TaskFilter {
        code_name: Some("b".into()),
        statuses: vec![TaskStatus::Queued],
        from_time: Some(T + 3000),
        to_time: None,
    };
    assert_eq!(
        list(
            combined,
            Page {
                page: 0,
                per_page: 2
            }
        )
        .await,
        vec![ids[9].clone(), ids[7].clone()]
    );
}

// ----- claiming ----------------------------------------------------------------------

async fn claim_order(store: Store) {
    let (project, _) = project_with_code(&store, "c").await;
    // FIFO within a priority, higher priorities first.
    let a = queue_one(&store, &project, with_priority("c", 0), T).await;
    let b = queue_one(&store, &project, with_priority("c", 0), T + 1).await;
    let c = queue_one(&store, &project, with_priority("c", 2), T + 2).await;
    let d = queue_one(&store, &project, with_priority("c", 1), T + 3).await;
    let e = queue_one(&store, &project, with_priority("c", 2), T + 4).await;
    // A batch keeps its order among equal queue positions.
    let batch = store
        .queue_tasks(&project, &vec![with_priority("c", 1); 5], T + 5)
        .await
        .unwrap();
    let claimed = claim_ids(&store, 2, T + 10).await;
    assert_eq!(claimed, vec![c, e]);
    let mut expected = vec![d];
    expected.extend(batch);
    expected.extend([a, b]);
    assert_eq!(claim_ids(&store, 100, T + 10).await, expected);
    assert_eq!(claim_ids(&store, 100, T + 10).await, Vec::<String>::new());

    // The head-start bound: a priority-0 task queued 61 s before a
    // priority-2 one goes first; 59 s before, it goes second.
    let old = queue_one(&store, &project, with_priority("c", 0), T).await;
    let urgent = queue_one(&store, &project, with_priority("c", 2), T + 61_000).await;
    assert_eq!(claim_ids(&store, 10, T + 61_000).await, vec![old, urgent]);
    let old = queue_one(&store, &project, with_priority("c", 0), T).await;
    let urgent = queue_one(&store, &project, with_priority("c", 2), T + 59_000).await;
    assert_eq!(claim_ids(&store, 10, T + 61_000).await, vec![urgent, old]);

    // What a claim returns.
    let id = queue_one(&store, &project, new_task("c"), T).await;
    let claimed = store.claim_tasks("agent-7", 5, T + 99).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let ClaimedTask { task, code } = &claimed[0];
    assert_eq!(task.id, id);
    assert_eq!(task.status, TaskStatus::Preparing);
    assert_eq!(task.attempt, 1);
    assert_eq!(task.agent.as_deref(), Some("agent-7"));
    assert_eq!(task.updated_at, T + 99);
    assert_eq!(
        (code.code_id.as_str(), code.rev),
        (task.code_id.as_str(), 1)
    );
    assert_eq!(
        store.task(&project, &id).await.unwrap().as_ref(),
        Some(task)
    );
}

async fn claim_respects_delay(store: Store) {
    let (project, _) = project_with_code(&store, "c").await;
    let mut delayed = new_task("c");
    delayed.delay = 10;
    let id = queue_one(&store, &project, delayed, T).await;
    assert_eq!(store.next_eligible_at().await.unwrap(), Some(T + 10_000));
    assert_eq!(claim_ids(&store, 10, T + 9_999).await, Vec::<String>::new());
    assert_eq!(claim_ids(&store, 10, T + 10_000).await, vec![id]);
    assert_eq!(store.next_eligible_at().await.unwrap(), None);
}

async fn claim_respects_max_concurrency_and_pause(store: Store) {
    let project = store.create_project("p").await.unwrap().id;
    let mut limited = code_spec("limited");
    limited.max_concurrency = Some(2);
    let limited = store.push_code(&project, &limited, None).await.unwrap();
    store
        .push_code(&project, &code_spec("free"), None)
        .await
        .unwrap();
    let paused = store
        .push_code(&project, &code_spec("paused"), None)
        .await
        .unwrap();
    assert!(store.set_paused(&project, &paused.id, true).await.unwrap());

    // Ten limited tasks ahead of three free ones and two paused ones.
    let lim = store
        .queue_tasks(&project, &vec![new_task("limited"); 10], T)
        .await
        .unwrap();
    let free = store
        .queue_tasks(&project, &vec![new_task("free"); 3], T + 1)
        .await
        .unwrap();
    let held = store
        .queue_tasks(&project, &vec![new_task("paused"); 2], T + 2)
        .await
        .unwrap();

    // One batch: two limited ones (the cap within the batch), then the
    // free ones even though they come after eight more limited ones.
    let claimed = claim_ids(&store, 4, T + 5).await;
    assert_eq!(
        claimed,
        vec![
            lim[0].clone(),
            lim[1].clone(),
            free[0].clone(),
            free[1].clone()
        ]
    );
    // The limited code is at its limit: only free tasks now.
    assert_eq!(claim_ids(&store, 10, T + 5).await, vec![free[2].clone()]);
    assert_eq!(claim_ids(&store, 10, T + 5).await, Vec::<String>::new());

    // Running counts as well as preparing; ending one frees one slot.
    assert!(store.mark_running(&lim[0], 1, T + 6).await.unwrap());
    assert_eq!(claim_ids(&store, 10, T + 6).await, Vec::<String>::new());
    assert!(store
        .end_attempt(
            &lim[0],
            1,
            finished(TaskStatus::Complete, b"", T + 7),
            T + 7
        )
        .await
        .unwrap());
    assert_eq!(claim_ids(&store, 10, T + 7).await, vec![lim[2].clone()]);

    // A new revision's max_concurrency applies.
    let mut more = code_spec("limited");
    more.max_concurrency = Some(4);
    store.push_code(&project, &more, None).await.unwrap();
    assert_eq!(claim_ids(&store, 10, T + 8).await, lim[3..5].to_vec());
    let mut unlimited = code_spec("limited");
    unlimited.max_concurrency = None;
    store.push_code(&project, &unlimited, None).await.unwrap();
    assert_eq!(claim_ids(&store, 10, T + 8).await, lim[5..].to_vec());
    // The pre-existing tasks still run the revision they were queued with.
    let task = store.task(&project, &lim[9]).await.unwrap().unwrap();
    assert_eq!(
        (task.code_id.clone(), task.code_rev),
        (limited.id.clone(), 1)
    );

    // Resume: the paused code's tasks come.
    assert!(store.set_paused(&project, &paused.id, false).await.unwrap());
    assert_eq!(claim_ids(&store, 10, T + 9).await, held);
}

async fn claim_skips_cancel_requested(store: Store) {
    let (project, _) = project_with_code(&store, "c").await;
    let id = queue_one(&store, &project, new_task("c"), T).await;
    assert_eq!(claim_ids(&store, 1, T).await, vec![id.clone()]);
    // Cancel while preparing, then an infrastructure requeue: it must not
    // come back (it becomes cancelled).
    let outcome = store.cancel_task(&project, &id, T).await.unwrap().unwrap();
    assert_eq!(
        outcome,
        CancelOutcome::Requested {
            agent: "agent-1".into(),
            container: container_name(&id, 1)
        }
    );
    assert!(
        store
            .task(&project, &id)
            .await
            .unwrap()
            .unwrap()
            .cancel_requested
    );
    assert!(store
        .end_attempt(
            &id,
            1,
            AttemptEnd::Requeue {
                eligible_at: T,
                infra: true,
                msg: Some("agent lost".into()),
                log: None
            },
            T + 1
        )
        .await
        .unwrap());
    assert_eq!(claim_ids(&store, 1, T + 100).await, Vec::<String>::new());
}

async fn claim_skips_queued_rows_with_cancel_requested(db: Db) -> Db {
    let store = db.open().await;
    let (project, _) = project_with_code(&store, "c").await;
    let flagged = queue_one(&store, &project, new_task("c"), T).await;
    let plain = queue_one(&store, &project, new_task("c"), T + 1).await;
    // No API path leaves a queued task flagged; a writer of another
    // version might, and the claim must still not take it.
    let raw = db.raw().await;
    sqlx::query("UPDATE tasks SET cancel_requested = 1 WHERE id = $1")
        .bind(&flagged)
        .execute(&raw)
        .await
        .unwrap();
    raw.close().await;
    assert_eq!(claim_ids(&store, 10, T + 10).await, vec![plain]);
    store.close().await;
    db
}

// ----- transitions -------------------------------------------------------------------

async fn conditional_transitions(store: Store) {
    let (project, _) = project_with_code(&store, "c").await;
    let id = queue_one(&store, &project, new_task("c"), T).await;
    // Nothing before a claim.
    assert!(!store.mark_running(&id, 0, T).await.unwrap());
    assert!(!store
        .end_attempt(&id, 0, finished(TaskStatus::Complete, b"", T), T)
        .await
        .unwrap());
    assert!(!store.mark_running("nope", 1, T).await.unwrap());

    assert_eq!(claim_ids(&store, 1, T).await, vec![id.clone()]);
    assert!(!store.mark_running(&id, 2, T).await.unwrap());
    assert!(store.mark_running(&id, 1, T + 5).await.unwrap());
    assert!(!store.mark_running(&id, 1, T + 6).await.unwrap());
    let task = store.task(&project, &id).await.unwrap().unwrap();
    assert_eq!(task.status, TaskStatus::Running);
    assert_eq!(task.start_time, Some(T + 5));

    // A Finished with a non-terminal status is refused.
    assert!(matches!(
        store
            .end_attempt(&id, 1, finished(TaskStatus::Running, b"", T), T)
            .await,
        Err(StoreError::Conflict(_))
    ));

    // Requeue attempt 1, claim attempt 2; attempt 1's late report is ignored.
    assert!(store
        .end_attempt(
            &id,
            1,
            AttemptEnd::Requeue {
                eligible_at: T + 10,
                infra: false,
                msg: Some("exit 1".into()),
                log: Some(b"attempt 1".to_vec())
            },
            T + 10
        )
        .await
        .unwrap());
    assert_eq!(claim_ids(&store, 1, T + 10).await, vec![id.clone()]);
    assert!(!store
        .end_attempt(&id, 1, finished(TaskStatus::Complete, b"stale", T), T)
        .await
        .unwrap());
    let end = AttemptEnd::Finished {
        status: TaskStatus::Error,
        msg: Some("exit 3".into()),
        exit_code: Some(3),
        end_time: T + 20,
        log: b"attempt 2".to_vec(),
    };
    assert!(store
        .end_attempt(&id, 2, end.clone(), T + 21)
        .await
        .unwrap());
    // The same report again changes nothing.
    assert!(!store.end_attempt(&id, 2, end, T + 22).await.unwrap());
    assert!(!store
        .end_attempt(&id, 2, finished(TaskStatus::Complete, b"other", T), T)
        .await
        .unwrap());
    let task = store.task(&project, &id).await.unwrap().unwrap();
    assert_eq!(task.status, TaskStatus::Error);
    assert_eq!(task.msg.as_deref(), Some("exit 3"));
    assert_eq!(task.exit_code, Some(3));
    assert_eq!(task.end_time, Some(T + 20));
    assert_eq!(task.updated_at, T + 21);
    assert_eq!(task.attempt, 2);
    assert_eq!(
        store.task_log(&project, &id).await.unwrap(),
        Some(b"attempt 2".to_vec())
    );
}

/// A caller that gives up mid-call (a timeout, a dropped request) leaves
/// each transition wholly done or not done, and the store usable.
async fn abandoned_calls_leave_nothing_half_done(store: Store) {
    let (project, _) = project_with_code(&store, "c").await;
    let ids = store
        .queue_tasks(&project, &vec![new_task("c"); 40], T)
        .await
        .unwrap();
    assert_eq!(claim_ids(&store, 40, T).await.len(), 40);
    let mut abandoned_landed = 0;
    for (i, id) in ids.iter().enumerate() {
        let log = format!("log {i}").into_bytes();
        // Give up at a varying moment: before, during or after the write.
        let end = store.end_attempt(id, 1, finished(TaskStatus::Complete, &log, T), T);
        let _ = tokio::time::timeout(Duration::from_micros(25 * i as u64), end).await;
        // The same report again: it lands if the abandoned one did not (an
        // abandoned statement may still be running; this one waits for it).
        if !store
            .end_attempt(id, 1, finished(TaskStatus::Complete, &log, T), T)
            .await
            .unwrap()
        {
            abandoned_landed += 1;
        }
        // Either way the task ended once, wholly: status and log together.
        let task = store.task(&project, id).await.unwrap().unwrap();
        assert_eq!(task.status, TaskStatus::Complete);
        assert_eq!(store.task_log(&project, id).await.unwrap(), Some(log));
    }
    eprintln!("{abandoned_landed} of 40 abandoned end_attempt calls had landed");
    // Nothing was left open on the writers: new writes are visible to the
    // readers (other connections) at once.
    let id = queue_one(&store, &project, new_task("c"), T).await;
    assert_eq!(claim_ids(&store, 1, T).await, vec![id.clone()]);
    assert!(store.mark_running(&id, 1, T).await.unwrap());
    assert_eq!(
        store.task(&project, &id).await.unwrap().unwrap().status,
        TaskStatus::Running
    );
}

async fn cancel_races_completion(store: Store) {
    let (project, _) = project_with_code(&store, "c").await;
    for i in 0..20 {
        let id = queue_one(&store, &project, new_task("c"), T + i).await;
        assert_eq!(claim_ids(&store, 1, T + i).await, vec![id.clone()]);
        assert!(store.mark_running(&id, 1, T + i).await.unwrap());
        let (cancel, ended) = tokio::join!(
            store.cancel_task(&project, &id, T + i),
            store.end_attempt(
                &id,
                1,
                finished(TaskStatus::Complete, b"done", T + i),
                T + i
            )
        );
        let task = store.task(&project, &id).await.unwrap().unwrap();
        assert!(ended.unwrap(), "the completion always lands");
        assert_eq!(task.status, TaskStatus::Complete);
        match cancel.unwrap().unwrap() {
            CancelOutcome::Requested { container, .. } => {
                assert_eq!(container, container_name(&id, 1));
                assert!(task.cancel_requested);
            }
            CancelOutcome::AlreadyFinished(status) => {
                assert_eq!(status, TaskStatus::Complete);
                assert!(!task.cancel_requested);
            }
            CancelOutcome::Cancelled => panic!("a running task cannot be cancelled outright"),
        }
        // A cancel after the end.
        assert_eq!(
            store.cancel_task(&project, &id, T + i).await.unwrap(),
            Some(CancelOutcome::AlreadyFinished(TaskStatus::Complete))
        );
    }
}

async fn cancel_races_claim(store: Store) {
    let (project, _) = project_with_code(&store, "c").await;
    for i in 0..20 {
        let id = queue_one(&store, &project, new_task("c"), T + i).await;
        let (cancel, claimed) = tokio::join!(
            store.cancel_task(&project, &id, T + i),
            store.claim_tasks("agent-1", 1, T + i)
        );
        let claimed = claimed.unwrap();
        match cancel.unwrap().unwrap() {
            CancelOutcome::Cancelled => assert!(claimed.is_empty()),
            CancelOutcome::Requested { agent, .. } => {
                assert_eq!(agent, "agent-1");
                assert_eq!(claimed.len(), 1);
                // The agent fails to start it: the requeue ends it instead.
                assert!(store
                    .end_attempt(
                        &id,
                        1,
                        AttemptEnd::Requeue {
                            eligible_at: T + i,
                            infra: true,
                            msg: None,
                            log: None
                        },
                        T + i
                    )
                    .await
                    .unwrap());
            }
            other => panic!("unexpected {other:?}"),
        }
        let task = store.task(&project, &id).await.unwrap().unwrap();
        assert_eq!(task.status, TaskStatus::Cancelled);
        assert!(task.end_time.is_some());
    }
    assert_eq!(claim_ids(&store, 100, T + 100).await, Vec::<String>::new());
}

async fn requeue(store: Store) {
    let (project, _) = project_with_code(&store, "c").await;
    let id = queue_one(&store, &project, with_priority("c", 1), T).await;
    let other = queue_one(&store, &project, with_priority("c", 0), T).await;
    assert_eq!(claim_ids(&store, 1, T).await, vec![id.clone()]);
    assert!(store.mark_running(&id, 1, T).await.unwrap());
    assert!(store
        .end_attempt(
            &id,
            1,
            AttemptEnd::Requeue {
                eligible_at: T + 45_000,
                infra: true,
                msg: Some("agent lost".into()),
                log: Some(b"partial".to_vec()),
            },
            T + 1
        )
        .await
        .unwrap());
    let task = store.task(&project, &id).await.unwrap().unwrap();
    assert_eq!(task.status, TaskStatus::Queued);
    assert_eq!(task.eligible_at, T + 45_000);
    assert_eq!(task.retry_count, 1);
    assert_eq!(task.infra_failures, 1);
    assert_eq!(task.msg.as_deref(), Some("agent lost"));
    assert_eq!(task.agent.as_deref(), Some("agent-1"));
    assert_eq!(task.end_time, None);
    assert_eq!(task.attempt, 1);
    assert_eq!(
        store.task_log(&project, &id).await.unwrap(),
        Some(b"partial".to_vec())
    );

    // Not before its new eligible_at (the priority-0 task waiting since T
    // goes meanwhile); its sort key is recomputed from the new eligible_at.
    assert_eq!(claim_ids(&store, 10, T + 44_999).await, vec![other.clone()]);
    assert!(store
        .end_attempt(&other, 1, finished(TaskStatus::Complete, b"", T), T)
        .await
        .unwrap());
    // Its new sort key, T + 45 s - 30 s, puts it ahead of a priority-0 task
    // eligible since T + 16 s.
    let later = queue_one(&store, &project, with_priority("c", 0), T + 16_000).await;
    let claimed = store.claim_tasks("agent-2", 10, T + 45_000).await.unwrap();
    let order: Vec<&str> = claimed.iter().map(|c| c.task.id.as_str()).collect();
    assert_eq!(order, vec![id.as_str(), later.as_str()]);
    assert_eq!(claimed[0].task.attempt, 2);
    assert_eq!(claimed[0].task.agent.as_deref(), Some("agent-2"));

    // A non-infra requeue without a log keeps the previous log.
    assert!(store
        .end_attempt(
            &id,
            2,
            AttemptEnd::Requeue {
                eligible_at: T + 50_000,
                infra: false,
                msg: Some("exit 1".into()),
                log: None,
            },
            T + 46_000
        )
        .await
        .unwrap());
    let task = store.task(&project, &id).await.unwrap().unwrap();
    assert_eq!((task.retry_count, task.infra_failures), (2, 1));
    assert_eq!(
        store.task_log(&project, &id).await.unwrap(),
        Some(b"partial".to_vec())
    );
}

async fn requeue_with_cancel_requested_cancels(store: Store) {
    let (project, _) = project_with_code(&store, "c").await;
    let id = queue_one(&store, &project, new_task("c"), T).await;
    assert_eq!(claim_ids(&store, 1, T).await, vec![id.clone()]);
    assert!(store.mark_running(&id, 1, T).await.unwrap());
    assert!(matches!(
        store.cancel_task(&project, &id, T).await.unwrap(),
        Some(CancelOutcome::Requested { .. })
    ));
    assert!(store
        .end_attempt(
            &id,
            1,
            AttemptEnd::Requeue {
                eligible_at: T + 1000,
                infra: false,
                msg: Some("exit 1".into()),
                log: Some(b"out".to_vec()),
            },
            T + 7
        )
        .await
        .unwrap());
    let task = store.task(&project, &id).await.unwrap().unwrap();
    assert_eq!(task.status, TaskStatus::Cancelled);
    assert_eq!(task.end_time, Some(T + 7));
    assert_eq!(task.retry_count, 0);
    assert_eq!(
        store.task_log(&project, &id).await.unwrap(),
        Some(b"out".to_vec())
    );
    assert_eq!(claim_ids(&store, 1, T + 5000).await, Vec::<String>::new());
    // Ended: a second end report is ignored.
    assert!(!store
        .end_attempt(&id, 1, finished(TaskStatus::Complete, b"", T), T)
        .await
        .unwrap());
}

async fn retry_task(store: Store) {
    let (project, code) = project_with_code(&store, "c").await;
    let mut original = with_priority("c", 2);
    original.payload = "{\"n\":1}".into();
    original.timeout = 60;
    original.label = Some("lab".into());
    original.cluster = Some("clu".into());
    let id = queue_one(&store, &project, original, T).await;

    assert!(matches!(
        store.retry_task(&project, &id, 0, T).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.retry_task(&project, "nope", 0, T).await.unwrap(),
        None
    );
    assert_eq!(claim_ids(&store, 1, T).await, vec![id.clone()]);
    assert!(matches!(
        store.retry_task(&project, &id, 0, T).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(store
        .end_attempt(&id, 1, finished(TaskStatus::Error, b"", T), T)
        .await
        .unwrap());

    // A new revision since: the retry runs the latest.
    store
        .push_code(&project, &code_spec("c"), None)
        .await
        .unwrap();
    let copy_id = store
        .retry_task(&project, &id, 5, T + 100)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(copy_id, id);
    let copy = store.task(&project, &copy_id).await.unwrap().unwrap();
    assert_eq!(copy.original_task_id.as_deref(), Some(id.as_str()));
    assert_eq!(copy.status, TaskStatus::Queued);
    assert_eq!(copy.payload, "{\"n\":1}");
    assert_eq!(copy.priority, 2);
    assert_eq!(copy.timeout, 60);
    assert_eq!(copy.label.as_deref(), Some("lab"));
    assert_eq!(copy.cluster.as_deref(), Some("clu"));
    assert_eq!(copy.code_rev, 2);
    assert_eq!(copy.delay, 5);
    assert_eq!(copy.eligible_at, T + 5_100);
    assert_eq!(copy.attempt, 0);

    // Code deleted: UnknownCode.
    store.cancel_task(&project, &copy_id, T).await.unwrap();
    assert!(store.delete_code(&project, &code.id).await.unwrap());
    match store.retry_task(&project, &copy_id, 0, T).await {
        Err(StoreError::UnknownCode(name)) => assert_eq!(name, "c"),
        other => panic!("expected UnknownCode, got {other:?}"),
    }
}

async fn progress_and_log(store: Store) {
    let (project, _) = project_with_code(&store, "c").await;
    let id = queue_one(&store, &project, new_task("c"), T).await;
    assert_eq!(
        store.task_log(&project, &id).await.unwrap(),
        Some(Vec::new())
    );
    assert_eq!(store.task_log(&project, "nope").await.unwrap(), None);
    claim_ids(&store, 1, T).await;
    assert!(store.mark_running(&id, 1, T).await.unwrap());

    assert!(store
        .set_progress(&project, &id, Some(40), Some("reading"), T + 1)
        .await
        .unwrap());
    let task = store.task(&project, &id).await.unwrap().unwrap();
    assert_eq!(
        (task.percent, task.msg.as_deref()),
        (Some(40), Some("reading"))
    );
    assert_eq!(task.updated_at, T + 1);
    // None leaves a value as it was.
    assert!(store
        .set_progress(&project, &id, Some(80), None, T + 2)
        .await
        .unwrap());
    let task = store.task(&project, &id).await.unwrap().unwrap();
    assert_eq!(
        (task.percent, task.msg.as_deref()),
        (Some(80), Some("reading"))
    );
    assert!(!store
        .set_progress(&project, "nope", Some(1), None, T)
        .await
        .unwrap());

    let log: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    assert!(store
        .end_attempt(&id, 1, finished(TaskStatus::Complete, &log, T + 3), T + 3)
        .await
        .unwrap());
    assert_eq!(store.task_log(&project, &id).await.unwrap(), Some(log));
    assert!(!store
        .set_progress(&project, &id, Some(100), None, T + 4)
        .await
        .unwrap());
}

async fn active_tasks_and_next_eligible(store: Store) {
    let (project, code) = project_with_code(&store, "c").await;
    assert_eq!(store.active_tasks().await.unwrap(), vec![]);
    assert_eq!(store.next_eligible_at().await.unwrap(), None);
    let ids = store
        .queue_tasks(&project, &vec![new_task("c"); 3], T)
        .await
        .unwrap();
    let mut late = new_task("c");
    late.delay = 100;
    queue_one(&store, &project, late, T).await;
    assert_eq!(store.next_eligible_at().await.unwrap(), Some(T));

    claim_ids(&store, 2, T).await;
    assert!(store.mark_running(&ids[1], 1, T).await.unwrap());
    let mut active = store.active_tasks().await.unwrap();
    active.sort_by(|a, b| a.task.id.cmp(&b.task.id));
    assert_eq!(active.len(), 2);
    assert_eq!(active[0].task.id, ids[0]);
    assert_eq!(active[0].task.status, TaskStatus::Preparing);
    assert_eq!(active[1].task.status, TaskStatus::Running);
    assert_eq!(active[0].code, code.latest);
    assert_eq!(store.next_eligible_at().await.unwrap(), Some(T));

    store.cancel_task(&project, &ids[2], T).await.unwrap();
    assert_eq!(store.next_eligible_at().await.unwrap(), Some(T + 100_000));
}

// ----- schedules ---------------------------------------------------------------------

fn schedule_spec(code: &str, start_at: Millis, run_every: Option<i64>) -> NewSchedule {
    NewSchedule {
        code_name: code.to_string(),
        payload: "{\"scheduled\":true}".to_string(),
        start_at,
        run_every,
        run_times: None,
        end_at: None,
        priority: None,
        timeout: 120,
        cluster: None,
        label: Some("sched".into()),
    }
}

async fn schedules_create_and_cancel(store: Store) {
    let (project, _) = project_with_code(&store, "c").await;
    match store
        .create_schedule(&project, &schedule_spec("nope", T, None), T)
        .await
    {
        Err(StoreError::UnknownCode(name)) => assert_eq!(name, "nope"),
        other => panic!("expected UnknownCode, got {other:?}"),
    }
    assert_eq!(store.schedules(&project, ALL).await.unwrap(), vec![]);

    let first = store
        .create_schedule(&project, &schedule_spec("c", T + 1000, Some(60)), T)
        .await
        .unwrap();
    assert_eq!(first.status, ScheduleStatus::Scheduled);
    assert_eq!(first.next_start, Some(T + 1000));
    assert_eq!(first.run_count, 0);
    let second = store
        .create_schedule(&project, &schedule_spec("c", T + 500, None), T + 1)
        .await
        .unwrap();
    assert_eq!(
        store.schedule(&project, &first.id).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        store.schedules(&project, ALL).await.unwrap(),
        vec![second.clone(), first.clone()]
    );
    assert_eq!(
        store
            .schedules(
                &project,
                Page {
                    page: 1,
                    per_page: 1
                }
            )
            .await
            .unwrap(),
        vec![first.clone()]
    );
    assert_eq!(store.next_schedule_at().await.unwrap(), Some(T + 500));
    assert_eq!(store.due_schedules(T + 499, 10).await.unwrap(), vec![]);
    assert_eq!(
        store.due_schedules(T + 2000, 10).await.unwrap(),
        vec![second.clone(), first.clone()]
    );
    assert_eq!(
        store.due_schedules(T + 2000, 1).await.unwrap(),
        vec![second.clone()]
    );

    let cancelled = store
        .cancel_schedule(&project, &second.id, T + 5)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cancelled.status, ScheduleStatus::Cancelled);
    assert_eq!(cancelled.next_start, None);
    assert_eq!(cancelled.updated_at, T + 5);
    // Again: unchanged.
    assert_eq!(
        store
            .cancel_schedule(&project, &second.id, T + 9)
            .await
            .unwrap(),
        Some(cancelled)
    );
    assert_eq!(
        store.cancel_schedule(&project, "nope", T).await.unwrap(),
        None
    );
    assert_eq!(store.next_schedule_at().await.unwrap(), Some(T + 1000));
    assert_eq!(
        store
            .fire_schedule(&second.id, T + 500, T + 600)
            .await
            .unwrap(),
        None
    );
}

async fn schedules_fire(store: Store) {
    let (project, _) = project_with_code(&store, "c").await;
    let mut spec = schedule_spec("c", T, Some(10));
    spec.priority = Some(2);
    spec.run_times = Some(3);
    let schedule = store.create_schedule(&project, &spec, T - 5).await.unwrap();

    // A stale expectation fires nothing.
    assert_eq!(
        store.fire_schedule(&schedule.id, T - 1, T).await.unwrap(),
        None
    );
    assert_eq!(store.fire_schedule("nope", T, T).await.unwrap(), None);

    // First run on time.
    let task_id = store
        .fire_schedule(&schedule.id, T, T + 3)
        .await
        .unwrap()
        .unwrap();
    let task = store.task(&project, &task_id).await.unwrap().unwrap();
    assert_eq!(task.schedule_id.as_deref(), Some(schedule.id.as_str()));
    assert_eq!(task.payload, "{\"scheduled\":true}");
    assert_eq!(task.priority, 2);
    assert_eq!(task.timeout, 120);
    assert_eq!(task.label.as_deref(), Some("sched"));
    assert_eq!(task.eligible_at, T + 3);
    assert_eq!(task.delay, 0);
    let now = store
        .schedule(&project, &schedule.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now.run_count, 1);
    assert_eq!(now.last_run_time, Some(T + 3));
    assert_eq!(now.next_start, Some(T + 10_000));
    assert_eq!(now.status, ScheduleStatus::Scheduled);
    // The same run again: nothing (it has moved on).
    assert_eq!(
        store.fire_schedule(&schedule.id, T, T + 4).await.unwrap(),
        None
    );

    // Fired 35 s late: 10, 20, 30 and 40 s ... the missed ones are skipped.
    assert!(store
        .fire_schedule(&schedule.id, T + 10_000, T + 45_000)
        .await
        .unwrap()
        .is_some());
    let now = store
        .schedule(&project, &schedule.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now.run_count, 2);
    assert_eq!(now.next_start, Some(T + 50_000));

    // The third run reaches run_times.
    assert!(store
        .fire_schedule(&schedule.id, T + 50_000, T + 50_000)
        .await
        .unwrap()
        .is_some());
    let now = store
        .schedule(&project, &schedule.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now.run_count, 3);
    assert_eq!(now.status, ScheduleStatus::Complete);
    assert_eq!(now.next_start, None);
    assert_eq!(store.next_schedule_at().await.unwrap(), None);
    let from_schedule = store
        .tasks(&project, &TaskFilter::default(), ALL)
        .await
        .unwrap();
    assert_eq!(from_schedule.len(), 3);

    // end_at: the run whose successor would pass it completes the schedule.
    let mut spec = schedule_spec("c", T, Some(60));
    spec.end_at = Some(T + 90_000);
    let bounded = store.create_schedule(&project, &spec, T).await.unwrap();
    assert!(store
        .fire_schedule(&bounded.id, T, T)
        .await
        .unwrap()
        .is_some());
    let now = store
        .schedule(&project, &bounded.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now.next_start, Some(T + 60_000));
    assert!(store
        .fire_schedule(&bounded.id, T + 60_000, T + 60_000)
        .await
        .unwrap()
        .is_some());
    let now = store
        .schedule(&project, &bounded.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now.status, ScheduleStatus::Complete);
    assert_eq!(now.run_count, 2);

    // No run_every: one run.
    let once = store
        .create_schedule(&project, &schedule_spec("c", T, None), T)
        .await
        .unwrap();
    assert!(store
        .fire_schedule(&once.id, T, T + 1)
        .await
        .unwrap()
        .is_some());
    let now = store.schedule(&project, &once.id).await.unwrap().unwrap();
    assert_eq!((now.status, now.run_count), (ScheduleStatus::Complete, 1));
}

async fn schedule_of_deleted_code_completes(store: Store) {
    let (project, code) = project_with_code(&store, "c").await;
    let schedule = store
        .create_schedule(&project, &schedule_spec("c", T, Some(10)), T)
        .await
        .unwrap();
    assert!(store.delete_code(&project, &code.id).await.unwrap());
    assert_eq!(store.fire_schedule(&schedule.id, T, T).await.unwrap(), None);
    let now = store
        .schedule(&project, &schedule.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now.status, ScheduleStatus::Complete);
    assert_eq!(now.next_start, None);
    assert_eq!(now.run_count, 0);
    assert_eq!(
        store
            .tasks(&project, &TaskFilter::default(), ALL)
            .await
            .unwrap(),
        vec![]
    );
}

// ----- concurrency and durability ----------------------------------------------------

async fn concurrent_claimers_never_share_a_task(db: Db) -> Db {
    const TASKS: usize = 300;
    let one = db.open().await;
    let two = db.open().await;
    let (project, _) = project_with_code(&one, "c").await;
    let mut all = Vec::new();
    for _ in 0..TASKS / 100 {
        all.extend(
            one.queue_tasks(&project, &vec![new_task("c"); 100], T)
                .await
                .unwrap(),
        );
    }

    let claimer = |store: Store, agent: &'static str| {
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = store.claim_tasks(agent, 7, T).await.unwrap();
                if batch.is_empty() {
                    return mine;
                }
                for claimed in batch {
                    assert_eq!(claimed.task.attempt, 1);
                    assert_eq!(claimed.task.agent.as_deref(), Some(agent));
                    mine.push(claimed.task.id);
                }
                // Leave the other claimer a gap: SQLite's busy handler
                // polls, and without one the first claimer takes everything.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let (a, b) = tokio::join!(claimer(one.clone(), "one"), claimer(two.clone(), "two"));
    let (a, b) = (a.unwrap(), b.unwrap());
    eprintln!("claimer one took {}, claimer two took {}", a.len(), b.len());
    let mut seen = HashSet::new();
    for id in a.iter().chain(&b) {
        assert!(seen.insert(id.clone()), "task {id} claimed twice");
    }
    assert_eq!(seen, all.into_iter().collect::<HashSet<_>>());
    for task in one
        .tasks(&project, &TaskFilter::default(), ALL)
        .await
        .unwrap()
    {
        assert_eq!((task.status, task.attempt), (TaskStatus::Preparing, 1));
    }
    one.close().await;
    two.close().await;
    db
}

async fn concurrent_claimers_respect_max_concurrency(db: Db) -> Db {
    let one = db.open().await;
    let two = db.open().await;
    let project = one.create_project("p").await.unwrap().id;
    let mut limited = code_spec("limited");
    limited.max_concurrency = Some(3);
    one.push_code(&project, &limited, None).await.unwrap();
    one.queue_tasks(&project, &vec![new_task("limited"); 60], T)
        .await
        .unwrap();

    let claimer = |store: Store| {
        tokio::spawn(async move {
            let mut taken = 0;
            for _ in 0..20 {
                taken += store.claim_tasks("a", 2, T).await.unwrap().len();
                tokio::task::yield_now().await;
            }
            taken
        })
    };
    let (a, b) = tokio::join!(claimer(one.clone()), claimer(two.clone()));
    assert_eq!(a.unwrap() + b.unwrap(), 3);
    let active = one.active_tasks().await.unwrap();
    assert_eq!(active.len(), 3);
    one.close().await;
    two.close().await;
    db
}

async fn packages_are_stored_once(db: Db) -> Db {
    let store = db.open().await;
    let zip = b"the same zip".to_vec();
    for project in ["a", "b"] {
        let project = store.create_project(project).await.unwrap().id;
        for code in ["x", "y"] {
            for _ in 0..2 {
                store
                    .push_code(&project, &code_spec(code), Some(&zip))
                    .await
                    .unwrap();
            }
        }
    }
    store.close().await;
    let raw = db.raw().await;
    let packages: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM packages")
        .fetch_one(&raw)
        .await
        .unwrap();
    let revisions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM code_revisions")
        .fetch_one(&raw)
        .await
        .unwrap();
    assert_eq!((packages, revisions), (1, 8));
    raw.close().await;
    db
}

/// Deleting a code gives its package's bytes back: the rows go, and a
/// SQLite file shrinks (incremental auto-vacuum).
async fn deleted_packages_give_their_space_back(db: Db) -> Db {
    let store = db.open().await;
    let project = store.create_project("p").await.unwrap().id;
    // 4 MiB that does not compress.
    let mut zip = Vec::with_capacity(4 << 20);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while zip.len() < 4 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        zip.extend_from_slice(&x.to_le_bytes());
    }
    let code = store
        .push_code(&project, &code_spec("big"), Some(&zip))
        .await
        .unwrap();
    let raw = db.raw().await;
    let pages = |raw: sqlx::AnyPool| async move {
        let count: i64 = sqlx::query_scalar("PRAGMA page_count")
            .fetch_one(&raw)
            .await
            .unwrap();
        let size: i64 = sqlx::query_scalar("PRAGMA page_size")
            .fetch_one(&raw)
            .await
            .unwrap();
        count * size
    };
    let before = if db.is_sqlite() {
        pages(raw.clone()).await
    } else {
        0
    };
    assert!(store.delete_code(&project, &code.id).await.unwrap());
    let packages: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM packages")
        .fetch_one(&raw)
        .await
        .unwrap();
    assert_eq!(packages, 0);
    if db.is_sqlite() {
        let after = pages(raw.clone()).await;
        assert!(
            after < before - (3 << 20),
            "the database holds {after} bytes after the delete, {before} before"
        );
    }
    raw.close().await;
    store.close().await;
    db
}

/// Pushes that push revisions out, deletions and collections of codes
/// sharing packages, all at once: each locks several package rows, and
/// none may deadlock or leave a revision without its package.
async fn concurrent_pushes_deletes_and_collections_all_succeed(db: Db) -> Db {
    let store = db.open().await;
    let project = store.create_project("p").await.unwrap().id;
    let zips: Vec<Vec<u8>> = (0..3).map(|i| format!("shared {i}").into_bytes()).collect();
    let limits = CodeLimits {
        max_project_package_bytes: Some(1 << 30),
        revisions_kept: Some(1),
    };
    let mut workers = Vec::new();
    for worker in 0..4usize {
        let store = store.clone();
        let project = project.clone();
        let zips = zips.clone();
        workers.push(tokio::spawn(async move {
            for round in 0..15usize {
                let name = ["a", "b"][(worker + round) % 2];
                let zip = &zips[(worker * 7 + round) % zips.len()];
                store
                    .push_code_limited(&project, &code_spec(name), package(zip, 10), limits)
                    .await
                    .unwrap_or_else(|e| panic!("push by worker {worker}: {e}"));
                if round % 5 == 4 {
                    if let Some(code) = store.code_by_name(&project, name).await.unwrap() {
                        store
                            .delete_code(&project, &code.id)
                            .await
                            .unwrap_or_else(|e| panic!("delete by worker {worker}: {e}"));
                    }
                }
                store
                    .collect_garbage(Some(1))
                    .await
                    .unwrap_or_else(|e| panic!("collection by worker {worker}: {e}"));
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    // Every remaining revision's package is there.
    for code in store.codes(&project, ALL).await.unwrap() {
        let sha = code.latest.package_sha256.clone().unwrap();
        assert!(store.package_by_sha256(&sha).await.unwrap().is_some());
    }
    store.close().await;
    db
}

async fn durability_across_reopen(db: Db) -> Db {
    let store = db.open().await;
    let project = store.create_project("p").await.unwrap();
    let (token, secret) = store.create_token(&project.id, "t").await.unwrap();
    store
        .set_stack("sh", "busybox", &["sh".to_string(), "{file}".to_string()])
        .await
        .unwrap();
    let code = store
        .push_code(&project.id, &code_spec("c"), Some(b"zip bytes"))
        .await
        .unwrap();
    let ids = store
        .queue_tasks(&project.id, &vec![new_task("c"); 3], T)
        .await
        .unwrap();
    claim_ids(&store, 1, T).await;
    assert!(store
        .end_attempt(&ids[0], 1, finished(TaskStatus::Complete, b"the log", T), T)
        .await
        .unwrap());
    let schedule = store
        .create_schedule(&project.id, &schedule_spec("c", T, Some(60)), T)
        .await
        .unwrap();
    let tasks_before = store
        .tasks(&project.id, &TaskFilter::default(), ALL)
        .await
        .unwrap();
    store.close().await;

    let store = db.open().await;
    assert_eq!(
        store.project(&project.id).await.unwrap(),
        Some(project.clone())
    );
    assert_eq!(store.tokens(&project.id).await.unwrap(), vec![token]);
    assert_eq!(
        store.authenticate(&secret).await.unwrap(),
        Some(project.id.clone())
    );
    assert_eq!(store.stacks().await.unwrap().len(), 1);
    assert_eq!(
        store.code(&project.id, &code.id).await.unwrap(),
        Some(code.clone())
    );
    assert_eq!(
        store
            .package(&project.id, &code.id, None)
            .await
            .unwrap()
            .unwrap()
            .1,
        b"zip bytes".to_vec()
    );
    assert_eq!(
        store
            .tasks(&project.id, &TaskFilter::default(), ALL)
            .await
            .unwrap(),
        tasks_before
    );
    assert_eq!(
        store.task_log(&project.id, &ids[0]).await.unwrap(),
        Some(b"the log".to_vec())
    );
    assert_eq!(
        store.schedule(&project.id, &schedule.id).await.unwrap(),
        Some(schedule)
    );
    // And it carries on.
    assert_eq!(claim_ids(&store, 10, T).await, ids[1..].to_vec());
    store.close().await;
    db
}

/// A SQLite store whose disk fills up refuses the writes that do not fit,
/// and works again as soon as space is freed, without a restart: a write
/// that failed for want of space leaves no transaction open on the
/// writer connection (issue 16: after one disk-full error every queue
/// answered 500 until the server restarted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_writers_recover_after_disk_full() {
    let dir = tempfile::TempDir::new().unwrap();
    let tmpfs = berth_testkit::tmpfs::SmallTmpfs::mount(dir.path(), "16m");
    let url = format!("sqlite://{}/berth.db", tmpfs.path().display());
    let store = Store::open(&url).await.unwrap();
    let (project, _) = project_with_code(&store, "c").await;
    let before = queue_one(&store, &project, new_task("c"), T).await;

    tmpfs.fill();
    // Big enough that it cannot fit into pages the database already has.
    let mut big = new_task("c");
    big.payload = format!("\"{}\"", "x".repeat(16 * 1024));
    let batch = vec![big; 32];
    match store.queue_tasks(&project, &batch, T).await {
        Err(err) => eprintln!("queue on a full disk: {err}"),
        Ok(ids) => panic!("queued {} tasks on a full disk", ids.len()),
    }
    // The dispatcher's writer too (its small write may still fit).
    let claimed_while_full = match store.claim_tasks("agent-1", 10, T).await {
        Ok(claimed) => claimed.into_iter().map(|c| c.task.id).collect(),
        Err(err) => {
            eprintln!("claim on a full disk: {err}");
            Vec::new()
        }
    };

    tmpfs.free();
    let ids = store
        .queue_tasks(&project, &batch, T)
        .await
        .expect("queue once space is back");
    assert_eq!(ids.len(), 32);
    // The failed batch stored nothing; the dispatcher's writer works again
    // and finds every task exactly once.
    let listed = store
        .tasks(&project, &TaskFilter::default(), ALL)
        .await
        .unwrap();
    assert_eq!(listed.len(), 33, "the failed batch stored nothing");
    let mut claimed = claimed_while_full;
    claimed.extend(claim_ids(&store, 100, T).await);
    claimed.sort();
    let mut expected = ids.clone();
    expected.push(before);
    expected.sort();
    assert_eq!(claimed, expected);
    assert!(store.mark_running(&ids[0], 1, T).await.unwrap());
    store.close().await;
    drop(tmpfs);
}

/// Overlay networks: per project, VNIs and subnets never shared; a task's
/// address kept across a retry and taken back once it ended; a network
/// with a task on it is not removed.
async fn overlay_networks_and_their_addresses(store: Store) {
    let (project, _) = project_with_code(&store, "c").await;
    let (other, _) = project_with_code(&store, "c").await;
    let new = |name: &str, subnet: Option<&str>| NewOverlay {
        name: name.into(),
        subnet: subnet.map(|s| s.parse().unwrap()),
        internal: false,
    };
    let first = store
        .create_overlay(&project, &new("a", None), 8, T)
        .await
        .unwrap();
    assert_eq!(first.vni, FIRST_FLEET_VNI);
    assert_eq!(first.subnet.to_string(), "10.128.0.0/24");
    // Same name in another project: its own network.
    let theirs = store
        .create_overlay(&other, &new("a", None), 8, T)
        .await
        .unwrap();
    assert_eq!(theirs.vni, FIRST_FLEET_VNI + 1);
    assert_eq!(theirs.subnet.to_string(), "10.128.1.0/24");
    for (bad, why) in [
        (new("a", None), "already has a network"),
        (new("b", Some("10.128.0.128/25")), "overlaps another"),
    ] {
        let err = store
            .create_overlay(&project, &bad, 8, T)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::Conflict(m) if m.contains(why)),
            "{err}"
        );
    }
    assert_eq!(store.overlays(&project).await.unwrap(), vec![first.clone()]);
    assert_eq!(store.overlay(&other, "a").await.unwrap(), Some(theirs));
    assert_eq!(store.overlay(&project, "zz").await.unwrap(), None);

    // Addresses: the lowest after the gateway, one per task, kept.
    let t1 = queue_one(&store, &project, new_task("c"), T).await;
    let t2 = queue_one(&store, &project, new_task("c"), T).await;
    let claim = |task: String| {
        let store = store.clone();
        let project = project.clone();
        async move {
            store
                .claim_overlay_address(&project, "a", &task)
                .await
                .unwrap()
                .map(|(network, address)| {
                    assert_eq!(network.vni, FIRST_FLEET_VNI, "{network:?}");
                    address
                })
        }
    };
    assert_eq!(claim(t1.clone()).await, Some("10.128.0.2".parse().unwrap()));
    assert_eq!(claim(t2.clone()).await, Some("10.128.0.3".parse().unwrap()));
    assert_eq!(claim(t1.clone()).await, Some("10.128.0.2".parse().unwrap()));
    // Another project's token names no network of this one.
    assert_eq!(
        store
            .claim_overlay_address(&other, "zz", &t1)
            .await
            .unwrap(),
        None
    );

    // Members: tasks being prepared or running, with their host.
    assert!(store.overlay_members().await.unwrap().is_empty());
    let claimed = store.claim_tasks("host-x", 10, T).await.unwrap();
    assert_eq!(claimed.len(), 2);
    let members = store.overlay_members().await.unwrap();
    assert_eq!(members.len(), 2);
    assert!(members
        .iter()
        .all(|m| m.agent == "host-x" && m.vni == first.vni && m.attempt == 1));
    assert_eq!(members[0].address.to_string(), "10.128.0.2");

    // In use: not removed.
    let err = store.delete_overlay(&project, "a").await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m.contains("2 task(s)")),
        "{err}"
    );

    // A retry keeps the address; an ended task's is taken back.
    assert!(store
        .end_attempt(
            &t1,
            1,
            AttemptEnd::Requeue {
                eligible_at: T,
                infra: true,
                msg: None,
                log: None
            },
            T
        )
        .await
        .unwrap());
    assert!(store
        .end_attempt(&t2, 1, finished(TaskStatus::Complete, b"", T), T)
        .await
        .unwrap());
    // Addresses go round: t2's comes back only after the rest.
    let t3 = queue_one(&store, &project, new_task("c"), T).await;
    assert_eq!(claim(t3.clone()).await, Some("10.128.0.4".parse().unwrap()));
    assert_eq!(claim(t1.clone()).await, Some("10.128.0.2".parse().unwrap()));

    // A queued task whose code names the network holds it too.
    let mut spec = code_spec("c");
    spec.network = Some("a".parse().unwrap());
    store.push_code(&project, &spec, None).await.unwrap();
    let t4 = queue_one(&store, &project, new_task("c"), T).await;
    store.cancel_task(&project, &t1, T).await.unwrap();
    store.cancel_task(&project, &t3, T).await.unwrap();
    let err = store.delete_overlay(&project, "a").await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m.contains("1 task(s)")),
        "{err}"
    );
    store.cancel_task(&project, &t4, T).await.unwrap();

    // A project's networks are limited.
    let err = store
        .create_overlay(&project, &new("b", None), 1, T)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m.contains("limit")),
        "{err}"
    );

    // Removed once nothing runs on it.
    assert!(store.delete_overlay(&project, "a").await.unwrap());
    assert!(!store.delete_overlay(&project, "a").await.unwrap());
    assert_eq!(store.overlay(&project, "a").await.unwrap(), None);
}

/// Claims on one network at once (the dispatcher starts attempts in
/// parallel): every one succeeds, with an address of its own.
async fn concurrent_address_claims_all_succeed_and_never_share(db: Db) -> Db {
    let store = db.open().await;
    let (project, _) = project_with_code(&store, "c").await;
    let network = NewOverlay {
        name: "n".into(),
        subnet: None,
        internal: false,
    };
    store
        .create_overlay(&project, &network, 8, T)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..24 {
        tasks.push(queue_one(&store, &project, new_task("c"), T).await);
    }
    let claims: Vec<_> = tasks
        .iter()
        .map(|task| {
            let store = store.clone();
            let project = project.clone();
            let task = task.clone();
            tokio::spawn(async move { store.claim_overlay_address(&project, "n", &task).await })
        })
        .collect();
    let mut addresses = HashSet::new();
    for claim in claims {
        let (_, address) = claim.await.unwrap().unwrap().unwrap();
        assert!(addresses.insert(address), "{address} given twice");
    }
    assert_eq!(addresses.len(), 24);
    store.close().await;
    db
}
