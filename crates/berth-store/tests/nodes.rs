//! The fleet's hosts and operator tokens in the store, on SQLite and on
//! PostgreSQL (see `common`).

#[macro_use]
mod common;

use berth_store::*;
use std::collections::BTreeMap;

store_tests!(
    join_heartbeat_and_rejoin,
    names_are_unique_across_hosts,
    silent_hosts_are_marked_down_once,
    drain_labels_and_remove,
    operator_tokens_open_nothing_of_a_project,
    placement_of_codes_and_tasks_round_trips,
    claim_placed_places_or_leaves_queued_with_the_reason,
    pools_are_set_listed_and_removed,
    heartbeats_in_one_batch_each_get_their_own_outcome,
    every_pool_with_queued_work_offers_candidates,
);

fn join(name: &str, node_id: Option<&str>) -> NodeJoin {
    NodeJoin {
        name: name.to_owned(),
        node_id: node_id.map(str::to_owned),
        address: format!("http://{name}:8390"),
        credential: format!("credential-of-{name}"),
        report: r#"{"v":1}"#.to_owned(),
    }
}

async fn join_heartbeat_and_rejoin(store: Store) {
    // A join whose answer the host never got is asked again without an id:
    // the same credential makes it the same host; another is refused.
    let (lost, _) = store.join_node(&join("lost", None)).await.unwrap();
    let (again, _) = store.join_node(&join("lost", None)).await.unwrap();
    assert_eq!(again.id, lost.id);
    let impostor = NodeJoin {
        credential: "another-credential".into(),
        ..join("lost", None)
    };
    assert!(matches!(
        store.join_node(&impostor).await,
        Err(StoreError::Conflict(_))
    ));

    let (node, token) = store.join_node(&join("h1", None)).await.unwrap();
    assert_eq!(node.name, "h1");
    assert!(!node.down && !node.drained);
    assert!(token.starts_with("bt_"));

    let beat = store
        .heartbeat(&node.id, &token, r#"{"v":2}"#)
        .await
        .unwrap()
        .expect("the host's own token is accepted");
    assert_eq!(
        (beat.name.as_str(), beat.drained, beat.was_down),
        ("h1", false, false)
    );
    assert_eq!(
        store.node(&node.id).await.unwrap().unwrap().report,
        r#"{"v":2}"#
    );
    // Another token, or another id, is no heartbeat of this host.
    assert_eq!(
        store.heartbeat(&node.id, "bt_wrong", "{}").await.unwrap(),
        None
    );
    assert_eq!(store.heartbeat("nope", &token, "{}").await.unwrap(), None);

    // A restarted agent presents its identity: same id, a new token, the
    // old one dead.
    let (again, token2) = store.join_node(&join("h1", Some(&node.id))).await.unwrap();
    assert_eq!(again.id, node.id);
    assert_ne!(token2, token);
    assert_eq!(store.heartbeat(&node.id, &token, "{}").await.unwrap(), None);
    assert!(store
        .heartbeat(&node.id, &token2, "{}")
        .await
        .unwrap()
        .is_some());
    // An identity the store does not know (the host was removed) makes a
    // new host.
    store.remove_node("h1").await.unwrap();
    let (fresh, _) = store.join_node(&join("h1", Some(&node.id))).await.unwrap();
    assert_ne!(fresh.id, node.id);
}

async fn names_are_unique_across_hosts(store: Store) {
    let (first, _) = store.join_node(&join("h1", None)).await.unwrap();
    let other_host = NodeJoin {
        credential: "credential-of-another-host".into(),
        ..join("h1", None)
    };
    match store.join_node(&other_host).await {
        Err(StoreError::Conflict(msg)) => assert!(msg.contains("h1"), "{msg}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let (second, _) = store.join_node(&join("h2", None)).await.unwrap();
    // Nor can a known host take another's name.
    match store.join_node(&join("h1", Some(&second.id))).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    let names: Vec<String> = store
        .nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, ["h1", "h2"]);
    assert_eq!(store.node(&first.id).await.unwrap().unwrap().name, "h1");
}

async fn silent_hosts_are_marked_down_once(store: Store) {
    let (a, token_a) = store.join_node(&join("a", None)).await.unwrap();
    let (b, _) = store.join_node(&join("b", None)).await.unwrap();
    // Nothing is silent before its last heartbeat.
    let before = a.last_heartbeat.min(b.last_heartbeat);
    assert!(store
        .mark_silent_nodes_down(before)
        .await
        .unwrap()
        .is_empty());
    let cutoff = a.last_heartbeat.max(b.last_heartbeat) + 1;
    let (first, second) = tokio::join!(
        store.mark_silent_nodes_down(cutoff),
        store.mark_silent_nodes_down(cutoff)
    );
    let mut down: Vec<String> = first
        .unwrap()
        .into_iter()
        .chain(second.unwrap())
        .map(|n| n.name)
        .collect();
    down.sort();
    assert_eq!(down, ["a", "b"], "each host is reported down exactly once");
    assert!(store.node_by_name("a").await.unwrap().unwrap().down);
    // A heartbeat brings it back, and says it had been down.
    let beat = store
        .heartbeat(&a.id, &token_a, "{}")
        .await
        .unwrap()
        .unwrap();
    assert!(beat.was_down);
    assert!(!store.node_by_name("a").await.unwrap().unwrap().down);
}

/// A batch mixes hosts up and down, a drained one, a wrong token, an
/// unknown id, and one host twice (its old token after a rejoin, then the
/// new): each beat gets what it would have got alone, in order.
async fn heartbeats_in_one_batch_each_get_their_own_outcome(store: Store) {
    let (up, _) = store.join_node(&join("up", None)).await.unwrap();
    let (down, token_down) = store.join_node(&join("down", None)).await.unwrap();
    let (drained, token_drained) = store.join_node(&join("drained", None)).await.unwrap();
    store.set_node_drained("drained", true).await.unwrap();
    let cutoff = [&up, &down, &drained]
        .iter()
        .map(|n| n.last_heartbeat)
        .max()
        .unwrap()
        + 1;
    assert_eq!(store.mark_silent_nodes_down(cutoff).await.unwrap().len(), 3);
    let (_, old_token) = store.join_node(&join("up", Some(&up.id))).await.unwrap();
    store
        .heartbeat(&up.id, &old_token, "{}")
        .await
        .unwrap()
        .unwrap();
    store
        .heartbeat(&drained.id, &token_drained, "{}")
        .await
        .unwrap()
        .unwrap();
    let (_, new_token) = store.join_node(&join("up", Some(&up.id))).await.unwrap();
    fn beat<'a>(node_id: &'a str, token: &'a str, report: &'a str) -> HeartbeatWrite<'a> {
        HeartbeatWrite {
            node_id,
            token,
            report,
        }
    }
    let outcomes = store
        .heartbeats(&[
            beat(&up.id, &old_token, r#"{"old":1}"#),
            beat(&down.id, &token_down, r#"{"down":1}"#),
            beat("no-such-host", &new_token, "{}"),
            beat(&drained.id, "bt_wrong", "{}"),
            beat(&up.id, &new_token, r#"{"new":1}"#),
            beat(&drained.id, &token_drained, r#"{"drained":1}"#),
        ])
        .await
        .unwrap();
    let seen: Vec<Option<(String, bool, bool)>> = outcomes
        .into_iter()
        .map(|o| o.map(|o| (o.name, o.drained, o.was_down)))
        .collect();
    let host =
        |name: &str, drained: bool, was_down: bool| Some((name.to_owned(), drained, was_down));
    assert_eq!(
        seen,
        [
            None,
            host("down", false, true),
            None,
            None,
            host("up", false, false),
            host("drained", true, false),
        ]
    );
    for (name, report) in [
        ("up", r#"{"new":1}"#),
        ("down", r#"{"down":1}"#),
        ("drained", r#"{"drained":1}"#),
    ] {
        let node = store.node_by_name(name).await.unwrap().unwrap();
        assert_eq!((node.report.as_str(), node.down), (report, false), "{name}");
    }
}

/// A backlog at the head of the queue in one pool does not hide another
/// pool's newer tasks from placement: each pool offers candidates, in its
/// own queue order. A task's pool is its own, else its code's, else its
/// project's.
async fn every_pool_with_queued_work_offers_candidates(store: Store) {
    use berth_core::placement::PlacementSpec;
    let (project, _) = common::project_with_code(&store, "c").await;
    let pooled = NewCodeRevision {
        placement: PlacementSpec {
            pool: Some("from-code".into()),
            ..PlacementSpec::default()
        },
        ..common::code_spec("pooled")
    };
    store.push_code(&project, &pooled, None).await.unwrap();
    let now = 1_700_000_000_000;
    let in_pool = |pool: &str| NewTask {
        placement: PlacementSpec {
            pool: Some(pool.into()),
            ..PlacementSpec::default()
        },
        ..common::new_task("c")
    };
    let backlog: Vec<NewTask> = (0..300).map(|_| in_pool("big")).collect();
    store.queue_tasks(&project, &backlog, now).await.unwrap();
    let late = now + 1_000;
    let small = store
        .queue_tasks(&project, &[in_pool("small"), in_pool("small")], late)
        .await
        .unwrap();
    let of_code = store
        .queue_tasks(&project, &[common::new_task("pooled")], late)
        .await
        .unwrap();
    let of_project = store
        .queue_tasks(&project, &[common::new_task("c")], late)
        .await
        .unwrap();
    let mut offered = Vec::new();
    let mut plan = |candidates: &[(Task, CodeRevision)]| {
        offered.extend(candidates.iter().map(|(task, _)| task.id.clone()));
        vec![
            PlaceDecision::Waits {
                msg: "looking only".into()
            };
            candidates.len()
        ]
    };
    store.claim_placed(64, late, &mut plan).await.unwrap();
    for id in small.iter().chain(&of_code).chain(&of_project) {
        assert!(offered.contains(id), "task {id} was not offered");
    }
    let position = |id: &String| offered.iter().position(|o| o == id);
    assert!(
        position(&small[0]) < position(&small[1]),
        "a pool's own queue order"
    );
    let from_big = offered.len() - 4;
    assert!(
        (8..=64).contains(&from_big),
        "the backlog's pool offers its share, not the whole batch: {from_big}"
    );
}

async fn drain_labels_and_remove(store: Store) {
    store.join_node(&join("h1", None)).await.unwrap();
    let drained = store.set_node_drained("h1", true).await.unwrap().unwrap();
    assert!(drained.drained);
    assert!(
        !store
            .set_node_drained("h1", false)
            .await
            .unwrap()
            .unwrap()
            .drained
    );
    assert_eq!(store.set_node_drained("nope", true).await.unwrap(), None);

    let set = BTreeMap::from([
        ("zone".to_owned(), "a".to_owned()),
        ("gpu".to_owned(), "true".to_owned()),
    ]);
    let node = store
        .change_node_labels("h1", &set, &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(node.operator_labels, set);
    let node = store
        .change_node_labels("h1", &BTreeMap::new(), &["gpu".to_owned()])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        node.operator_labels,
        BTreeMap::from([("zone".to_owned(), "a".to_owned())])
    );
    assert_eq!(
        store.change_node_labels("nope", &set, &[]).await.unwrap(),
        None
    );

    assert!(store.remove_node("h1").await.unwrap());
    assert!(!store.remove_node("h1").await.unwrap());
    assert_eq!(store.node_by_name("h1").await.unwrap(), None);
}

async fn operator_tokens_open_nothing_of_a_project(store: Store) {
    let project = store.create_project("p").await.unwrap();
    let (_, project_secret) = store.create_token(&project.id, "t").await.unwrap();
    let (info, secret) = store.create_operator_token("ops").await.unwrap();
    assert!(store.authenticate_operator(&secret).await.unwrap());
    // Neither kind of token opens the other's door.
    assert_eq!(store.authenticate(&secret).await.unwrap(), None);
    assert!(!store.authenticate_operator(&project_secret).await.unwrap());
    assert_eq!(store.operator_tokens().await.unwrap(), vec![info.clone()]);
    assert!(store.revoke_operator_token(&info.id).await.unwrap());
    assert!(!store.authenticate_operator(&secret).await.unwrap());
    assert!(!store.revoke_operator_token(&info.id).await.unwrap());
}

async fn placement_of_codes_and_tasks_round_trips(store: Store) {
    use berth_core::placement::{GroupRule, PlacementSpec, Relation};
    let project = store.create_project("p").await.unwrap();
    let code_placement = PlacementSpec {
        memory: Some(256 << 20),
        cpu_millis: Some(500),
        constraints: vec!["zone==a".into()],
        groups: vec![GroupRule::parse("web:soft", Relation::AntiAffinity).unwrap()],
        pool: Some("batch".into()),
        ..PlacementSpec::default()
    };
    let spec = NewCodeRevision {
        placement: code_placement.clone(),
        ..common::code_spec("c")
    };
    let code = store.push_code(&project.id, &spec, None).await.unwrap();
    assert_eq!(code.latest.spec.placement, code_placement);
    let task_placement = PlacementSpec {
        pids: Some(64),
        ..PlacementSpec::default()
    };
    let task = NewTask {
        placement: task_placement.clone(),
        ..common::new_task("c")
    };
    let id = store
        .queue_tasks(&project.id, &[task], 1_700_000_000_000)
        .await
        .unwrap()
        .remove(0);
    let stored = store.task(&project.id, &id).await.unwrap().unwrap();
    assert_eq!(stored.placement, task_placement);
    assert_eq!(stored.reserved, None);
    assert_eq!(stored.node_name, None);
}

async fn claim_placed_places_or_leaves_queued_with_the_reason(store: Store) {
    use berth_core::placement::{Resources, TaskPlacement};
    let (project, _) = common::project_with_code(&store, "c").await;
    let now = 1_700_000_000_000;
    let ids = store
        .queue_tasks(
            &project,
            &[common::new_task("c"), common::new_task("c")],
            now,
        )
        .await
        .unwrap();
    let reserved = TaskPlacement {
        memory_limit: 64 << 20,
        request: Resources {
            memory_bytes: 64 << 20,
            ..Resources::default()
        },
        constraints: Vec::new(),
        groups: Vec::new(),
        pool: None,
    };
    // The first goes to h1; the second fits nowhere.
    let mut asked = Vec::new();
    let mut plan = |candidates: &[(Task, CodeRevision)]| {
        asked.extend(
            candidates
                .iter()
                .map(|(task, code)| (task.id.clone(), code.spec.name.clone())),
        );
        vec![
            PlaceDecision::On {
                agent: "node-1".into(),
                node_name: "h1".into(),
                reserved: reserved.clone(),
            },
            PlaceDecision::Waits {
                msg: "1 host has 0 B of the 64 MiB of memory requested free".into(),
            },
        ]
    };
    let claimed = store.claim_placed(10, now, &mut plan).await.unwrap();
    assert_eq!(
        asked,
        [(ids[0].clone(), "c".into()), (ids[1].clone(), "c".into())]
    );
    assert_eq!(claimed.len(), 1);
    let placed = &claimed[0].task;
    assert_eq!(placed.id, ids[0]);
    assert_eq!(placed.status, TaskStatus::Preparing);
    assert_eq!(placed.attempt, 1);
    assert_eq!(placed.agent.as_deref(), Some("node-1"));
    assert_eq!(placed.node_name.as_deref(), Some("h1"));
    assert_eq!(placed.reserved.as_ref(), Some(&reserved));
    let waiting = store.task(&project, &ids[1]).await.unwrap().unwrap();
    assert_eq!(waiting.status, TaskStatus::Queued);
    assert!(waiting.msg.unwrap().contains("64 MiB"));
    // The next round sees only the waiting one.
    let mut seen = Vec::new();
    let mut wait = |candidates: &[(Task, CodeRevision)]| {
        seen.extend(candidates.iter().map(|(task, _)| task.id.clone()));
        vec![
            PlaceDecision::Waits {
                msg: "still".into()
            };
            candidates.len()
        ]
    };
    assert!(store
        .claim_placed(10, now, &mut wait)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(seen, [ids[1].clone()]);
}

async fn pools_are_set_listed_and_removed(store: Store) {
    use berth_core::placement::Resources;
    assert!(store.pools().await.unwrap().is_empty());
    let batch = PoolConfig {
        name: "batch".into(),
        weight: 1,
        min: Resources::default(),
        max: Some(Resources {
            cpu_millis: 4000,
            ..Resources::default()
        }),
    };
    let web = PoolConfig {
        name: "web".into(),
        weight: 2,
        min: Resources {
            memory_bytes: 1 << 30,
            ..Resources::default()
        },
        max: None,
    };
    store.set_pool(&web).await.unwrap();
    store.set_pool(&batch).await.unwrap();
    assert_eq!(
        store.pools().await.unwrap(),
        vec![batch.clone(), web.clone()]
    );
    let heavier = PoolConfig { weight: 3, ..web };
    store.set_pool(&heavier).await.unwrap();
    assert_eq!(store.pools().await.unwrap()[1], heavier);
    assert!(store.remove_pool("batch").await.unwrap());
    assert!(!store.remove_pool("batch").await.unwrap());
    assert_eq!(store.pools().await.unwrap(), vec![heavier]);
}
