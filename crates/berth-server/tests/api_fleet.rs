//! The fleet API: hosts join and heartbeat, operators list and steer them.
//! Errors are berth's error body, `{"error": {"code", "message"}}`.

#[macro_use]
mod api_support;

use api_support::{Harness, JOIN_TOKEN};
use berth_testkit::http::Response;
use serde_json::{json, Value};

both!(
    joins_need_the_join_token_and_register_nothing_without_it,
    a_host_joins_heartbeats_and_keeps_its_identity,
    impossible_reports_are_refused_and_change_nothing,
    operators_list_drain_label_and_remove_hosts,
    project_tokens_do_not_open_the_fleet,
    operators_configure_pools,
);

fn report() -> Value {
    json!({
        "capacity": {
            "cpus": 2, "memory_bytes": 4u64 << 30, "memory_ceiling_bytes": 3u64 << 30,
            "memory_pressure": 0.9, "disk_bytes": 100u64 << 30, "disk_free_bytes": 50u64 << 30,
            "pids": 4_194_304
        },
        "allocatable": {"cpu_millis": 1500, "memory_bytes": 3u64 << 30, "disk_bytes": 40u64 << 30, "pids": 10_000},
        "allocated": {"cpu_millis": 0, "memory_bytes": 0, "disk_bytes": 0, "pids": 0},
        "used": {"containers_running": 0, "metrics": {"oom_events": 0, "oom_kills": 0}},
        "images": ["busybox:latest"],
        "labels": {"zone": "a"},
        "version": "0.1.0"
    })
}

fn join_body(name: &str) -> Value {
    json!({
        "name": name,
        "address": "http://10.0.0.1:8390",
        "credential": "credential-of-the-agent-0123456789",
        "report": report(),
    })
}

fn send(h: &Harness, method: &str, path: &str, token: &str, body: &Value) -> Response {
    let auth = format!("Bearer {token}");
    h.endpoint
        .request(
            method,
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body.to_string().as_bytes(),
        )
        .unwrap()
}

#[track_caller]
fn assert_fleet_error(r: &Response, status: u16, code: &str, needle: &str) {
    assert_eq!(r.status, status, "body: {}", r.text());
    let body = r.json();
    assert_eq!(body["error"]["code"], code, "{}", r.text());
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.to_lowercase().contains(&needle.to_lowercase()),
        "{message:?} does not mention {needle:?}"
    );
}

fn operator_token(h: &Harness) -> String {
    h.block_on(h.store.create_operator_token("ops")).unwrap().1
}

fn hosts(h: &Harness) -> usize {
    h.block_on(h.store.nodes()).unwrap().len()
}

fn joins_need_the_join_token_and_register_nothing_without_it(h: &Harness) {
    let r = send(h, "POST", "/v1/fleet/join", "wrong", &join_body("h1"));
    assert_fleet_error(&r, 401, "unauthorized", "join token");
    let r = h
        .endpoint
        .request(
            "POST",
            "/v1/fleet/join",
            &[],
            join_body("h1").to_string().as_bytes(),
        )
        .unwrap();
    assert_fleet_error(&r, 401, "unauthorized", "token");
    assert_eq!(hosts(h), 0);
    let r = send(h, "POST", "/v1/fleet/join", JOIN_TOKEN, &join_body("h1"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(hosts(h), 1);
}

fn a_host_joins_heartbeats_and_keeps_its_identity(h: &Harness) {
    let joined = send(h, "POST", "/v1/fleet/join", JOIN_TOKEN, &join_body("h1")).json();
    let id = joined["node_id"].as_str().unwrap().to_owned();
    let token = joined["heartbeat_token"].as_str().unwrap().to_owned();
    assert!(joined["heartbeat_interval_ms"].as_u64().unwrap() > 0);
    assert!(joined["down_after_ms"].as_u64() > joined["heartbeat_interval_ms"].as_u64());

    let beat = json!({"node_id": id, "report": report()});
    let r = send(h, "POST", "/v1/fleet/heartbeat", &token, &beat);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "ready");
    // The join token is no heartbeat token, nor is another host's.
    let r = send(h, "POST", "/v1/fleet/heartbeat", JOIN_TOKEN, &beat);
    assert_fleet_error(&r, 401, "unauthorized", "join again");
    let other = send(h, "POST", "/v1/fleet/join", JOIN_TOKEN, &join_body("h2")).json();
    let r = send(
        h,
        "POST",
        "/v1/fleet/heartbeat",
        other["heartbeat_token"].as_str().unwrap(),
        &beat,
    );
    assert_eq!(r.status, 401);

    // A restart: the same identity, a new heartbeat token.
    let mut rejoin = join_body("h1");
    rejoin["node_id"] = json!(id);
    let again = send(h, "POST", "/v1/fleet/join", JOIN_TOKEN, &rejoin).json();
    assert_eq!(again["node_id"], json!(id));
    assert_eq!(
        send(h, "POST", "/v1/fleet/heartbeat", &token, &beat).status,
        401,
        "the old heartbeat token died with the rejoin"
    );
    // Another machine (another credential) cannot take a name in use.
    let mut impostor = join_body("h1");
    impostor["credential"] = json!("credential-of-another-machine-0123");
    let r = send(h, "POST", "/v1/fleet/join", JOIN_TOKEN, &impostor);
    assert_fleet_error(&r, 409, "invalid_state", "h1");
    assert_eq!(hosts(h), 2);
}

fn impossible_reports_are_refused_and_change_nothing(h: &Harness) {
    let joined = send(h, "POST", "/v1/fleet/join", JOIN_TOKEN, &join_body("h1")).json();
    let id = joined["node_id"].as_str().unwrap();
    let token = joined["heartbeat_token"].as_str().unwrap();
    let before = h.block_on(h.store.node(id)).unwrap().unwrap();

    let mut more_than_the_machine = report();
    more_than_the_machine["allocatable"]["memory_bytes"] = json!(5u64 << 30);
    let mut negative = report();
    negative["allocatable"]["cpu_millis"] = json!(-1);
    let mut no_cpu = report();
    no_cpu["capacity"]["cpus"] = json!(0);
    let mut unknown_field = report();
    unknown_field["allocatable"]["gpus"] = json!(1);
    for (bad, needle) in [
        (more_than_the_machine, "more than the machine has"),
        (negative, "cpu_millis"),
        (no_cpu, "at least one cpu"),
        (unknown_field, "gpus"),
    ] {
        let r = send(
            h,
            "POST",
            "/v1/fleet/heartbeat",
            token,
            &json!({"node_id": id, "report": bad}),
        );
        assert_fleet_error(&r, 400, "invalid_argument", needle);
        let mut join = join_body("h9");
        join["report"] = bad;
        let r = send(h, "POST", "/v1/fleet/join", JOIN_TOKEN, &join);
        assert_fleet_error(&r, 400, "invalid_argument", needle);
    }
    for (field, value, needle) in [
        ("name", json!("Not A Name"), "host name"),
        ("address", json!("unix:///tmp/agent.sock"), "tcp"),
        ("credential", json!("short"), "credential"),
    ] {
        let mut join = join_body("h9");
        join[field] = value;
        let r = send(h, "POST", "/v1/fleet/join", JOIN_TOKEN, &join);
        assert_fleet_error(&r, 400, "invalid_argument", needle);
    }
    assert_eq!(h.block_on(h.store.node(id)).unwrap().unwrap(), before);
    assert_eq!(hosts(h), 1);
}

fn operators_list_drain_label_and_remove_hosts(h: &Harness) {
    send(h, "POST", "/v1/fleet/join", JOIN_TOKEN, &join_body("h1"));
    send(h, "POST", "/v1/fleet/join", JOIN_TOKEN, &join_body("h2"));
    let ops = operator_token(h);
    let list = send(h, "GET", "/v1/nodes", &ops, &json!(null)).json();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["h1", "h2"]);
    assert_eq!(list[0]["state"], "ready");
    assert_eq!(list[0]["labels"], json!({"zone": "a"}));
    assert_eq!(list[0]["report"]["allocatable"]["cpu_millis"], 1500);
    assert!(
        list[0].get("credential").is_none(),
        "a host's credential is never shown"
    );

    let r = send(h, "POST", "/v1/nodes/h1/drain", &ops, &json!(null));
    assert_eq!(r.json()["state"], "draining");
    assert!(
        h.block_on(h.store.node_by_name("h1"))
            .unwrap()
            .unwrap()
            .drained
    );
    let r = send(h, "POST", "/v1/nodes/h1/undrain", &ops, &json!(null));
    assert_eq!(r.json()["state"], "ready");

    let r = send(
        h,
        "PUT",
        "/v1/nodes/h2/labels",
        &ops,
        &json!({"set": {"zone": "b", "gpu": "true"}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["labels"],
        json!({"zone": "b", "gpu": "true"}),
        "the operator's labels win"
    );
    let r = send(
        h,
        "PUT",
        "/v1/nodes/h2/labels",
        &ops,
        &json!({"remove": ["zone"]}),
    );
    assert_eq!(r.json()["labels"], json!({"zone": "a", "gpu": "true"}));
    let r = send(
        h,
        "PUT",
        "/v1/nodes/h2/labels",
        &ops,
        &json!({"set": {"bad key": "x"}}),
    );
    assert_fleet_error(&r, 400, "invalid_argument", "label key");

    for (method, path) in [
        ("POST", "/v1/nodes/nope/drain"),
        ("POST", "/v1/nodes/nope/undrain"),
        ("GET", "/v1/nodes/nope"),
        ("DELETE", "/v1/nodes/nope"),
    ] {
        let r = send(h, method, path, &ops, &json!(null));
        assert_fleet_error(&r, 404, "not_found", "nope");
    }
    let r = send(h, "DELETE", "/v1/nodes/h1", &ops, &json!(null));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(hosts(h), 1);
}

fn project_tokens_do_not_open_the_fleet(h: &Harness) {
    send(h, "POST", "/v1/fleet/join", JOIN_TOKEN, &join_body("h1"));
    for (method, path) in [
        ("GET", "/v1/nodes"),
        ("GET", "/v1/nodes/h1"),
        ("POST", "/v1/nodes/h1/drain"),
        ("DELETE", "/v1/nodes/h1"),
    ] {
        let r = send(h, method, path, &h.token, &json!(null));
        assert_fleet_error(&r, 401, "unauthorized", "operator token");
        let r = send(h, method, path, JOIN_TOKEN, &json!(null));
        assert_eq!(r.status, 401, "the join token is no operator's");
    }
    assert!(
        !h.block_on(h.store.node_by_name("h1"))
            .unwrap()
            .unwrap()
            .drained
    );
    assert_eq!(hosts(h), 1);
}

fn operators_configure_pools(h: &Harness) {
    let ops = operator_token(h);
    let r = send(
        h,
        "PUT",
        "/v1/pools/web",
        &ops,
        &json!({"weight": 2, "min": {"cpus": 2, "memory": "4g"}, "max": {"cpus": 8}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let pools = send(h, "GET", "/v1/pools", &ops, &json!(null)).json();
    assert_eq!(pools[0]["name"], "web");
    assert_eq!(pools[0]["weight"], 2);
    assert_eq!(pools[0]["min"]["cpus"], 2.0);
    assert_eq!(pools[0]["min"]["memory"], 4u64 << 30);
    assert_eq!(pools[0]["max"]["cpus"], 8.0);
    assert_eq!(
        pools[0]["max"]["memory"],
        json!(null),
        "no maximum on memory"
    );
    let stored = h.block_on(h.store.pools()).unwrap();
    assert_eq!(stored[0].max.unwrap().memory_bytes, u64::MAX);

    for (body, needle) in [
        (json!({"weight": 0}), "weight"),
        (
            json!({"min": {"cpus": 4}, "max": {"cpus": 2}}),
            "min is above max",
        ),
        (json!({"min": {"memory": "lots"}}), "memory"),
        (json!({"min": {"gpus": 1}}), "gpus"),
    ] {
        let r = send(h, "PUT", "/v1/pools/batch", &ops, &body);
        assert_fleet_error(&r, 400, "invalid_argument", needle);
    }
    let r = send(h, "PUT", "/v1/pools/bad%20name", &ops, &json!({}));
    assert_fleet_error(&r, 400, "invalid_argument", "pool");
    let r = send(h, "PUT", "/v1/pools/web", &h.token, &json!({}));
    assert_eq!(r.status, 401, "a project's token configures no pool");
    assert_eq!(
        h.block_on(h.store.pools()).unwrap().len(),
        1,
        "nothing changed"
    );

    assert_eq!(
        send(h, "DELETE", "/v1/pools/web", &ops, &json!(null)).status,
        200
    );
    let r = send(h, "DELETE", "/v1/pools/web", &ops, &json!(null));
    assert_fleet_error(&r, 404, "not_found", "web");
}
