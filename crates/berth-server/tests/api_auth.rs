//! Tokens, tenant isolation, unknown routes and methods, and a store that
//! has gone away: every answer is JSON `{"msg": …}`.

#[macro_use]
mod api_support;

use api_support::{assert_error, ids, zip_of, Client, Harness};
use serde_json::json;

both!(
    tokens_are_required,
    projects_are_isolated,
    unknown_routes_and_methods_are_json,
    an_unavailable_store_is_503,
);

fn tokens_are_required(h: &Harness) {
    let path = h.path("codes");
    let ep = &h.endpoint;
    let r = ep.request("GET", &path, &[], b"").unwrap();
    assert_error(&r, 401, "token");
    let r = ep
        .request("GET", &path, &[("Authorization", "OAuth bt_wrong")], b"")
        .unwrap();
    assert_error(&r, 401, "invalid");
    let r = ep
        .request("GET", &path, &[("Authorization", "Basic abc")], b"")
        .unwrap();
    assert_error(&r, 401, "OAuth");
    let r = ep
        .request("GET", &path, &[("Authorization", "OAuth")], b"")
        .unwrap();
    assert_error(&r, 401, "token");
    // OAuth, Bearer and ?oauth= all work.
    let oauth = format!("OAuth {}", h.token);
    let bearer = format!("Bearer {}", h.token);
    assert_eq!(
        ep.request("GET", &path, &[("Authorization", &oauth)], b"")
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        ep.request("GET", &path, &[("Authorization", &bearer)], b"")
            .unwrap()
            .status,
        200
    );
    let query = format!("{path}?oauth={}", h.token);
    assert_eq!(ep.request("GET", &query, &[], b"").unwrap().status, 200);
    // A request without a token stores nothing, even with a valid body.
    h.image_code("w");
    let body = json!({"tasks": [{"code_name": "w"}]}).to_string();
    let r = ep
        .request(
            "POST",
            &h.path("tasks"),
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
        .unwrap();
    assert_error(&r, 401, "token");
    assert!(h.all_tasks().is_empty());
    // A revoked token opens nothing.
    let (info, secret) = h
        .block_on(h.store.create_token(&h.project, "short-lived"))
        .unwrap();
    let auth = format!("OAuth {secret}");
    assert_eq!(
        ep.request("GET", &path, &[("Authorization", &auth)], b"")
            .unwrap()
            .status,
        200
    );
    assert!(h.block_on(h.store.revoke_token(&info.id)).unwrap());
    let r = ep
        .request("GET", &path, &[("Authorization", &auth)], b"")
        .unwrap();
    assert_error(&r, 401, "invalid");
    // A valid token for another project, existing or not: the same 403.
    let other = h.new_project("other");
    for project in [other.project.as_str(), "000000000000000000000000"] {
        let r = h.raw("GET", &format!("/2/projects/{project}/codes"), &[], b"");
        assert_error(&r, 403, "token does not grant access to this project");
    }
}

/// Project B's code (classic, with a package), tasks and schedule.
struct Owned {
    code: String,
    tasks: Vec<String>,
    schedule: String,
}

fn populate(h: &Harness, b: &Client) -> Owned {
    h.stack("sh");
    let zip = zip_of(&[("run.sh", b"echo b\n")]);
    let r = b.upload(
        &json!({"name": "secret", "runtime": "sh", "file_name": "run.sh"}),
        Some(&zip),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let code = r.json()["id"].as_str().unwrap().to_owned();
    let tasks = b.queue("secret", &["b-payload", "b-payload-2"]);
    // One ended task, so retry would be possible for its owner.
    assert_eq!(
        b.post(&format!("tasks/{}/cancel", tasks[1]), "", b"")
            .status,
        200
    );
    let r = b.post_json(
        "schedules",
        &json!({"schedules": [{"code_name": "secret", "run_every": 3600}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let schedule = ids(&r.json()["schedules"]).remove(0);
    Owned {
        code,
        tasks,
        schedule,
    }
}

fn projects_are_isolated(h: &Harness) {
    let a: &Client = h;
    let b = h.new_project("b");
    let owned = populate(h, &b);
    let (code, task, ended, schedule) = (
        &owned.code,
        &owned.tasks[0],
        &owned.tasks[1],
        &owned.schedule,
    );
    let requests: Vec<(&str, String, Option<serde_json::Value>)> = vec![
        ("GET", format!("codes/{code}"), None),
        ("DELETE", format!("codes/{code}"), None),
        ("GET", format!("codes/{code}/revisions"), None),
        ("GET", format!("codes/{code}/download"), None),
        ("GET", format!("codes/{code}/download?revision=1"), None),
        ("GET", format!("codes/{code}/stats"), None),
        ("POST", format!("codes/{code}/pause_task_queue"), None),
        ("POST", format!("codes/{code}/resume_task_queue"), None),
        ("GET", format!("tasks/{task}"), None),
        ("GET", format!("tasks/{task}/log"), None),
        ("POST", format!("tasks/{task}/cancel"), None),
        ("POST", format!("tasks/{ended}/retry"), None),
        (
            "POST",
            format!("tasks/{task}/progress"),
            Some(json!({"percent": 5})),
        ),
        ("GET", format!("schedules/{schedule}"), None),
        ("POST", format!("schedules/{schedule}/cancel"), None),
    ];
    for (method, rest, body) in &requests {
        let body = body.as_ref().map(|b| b.to_string()).unwrap_or_default();
        let headers = [("Content-Type", "application/json")];
        // A's token on B's project path: 403.
        let r = a.raw(method, &b.path(rest), &headers, body.as_bytes());
        assert_error(&r, 403, "token does not grant access to this project");
        // A's token on A's path with B's ids: not found.
        let r = a.raw(method, &a.path(rest), &headers, body.as_bytes());
        assert_error(&r, 404, "not found");
    }
    // Creating through B's path with A's token is refused too.
    let r = a.raw(
        "POST",
        &b.path("tasks"),
        &[("Content-Type", "application/json")],
        json!({"tasks": [{"code_name": "secret"}]})
            .to_string()
            .as_bytes(),
    );
    assert_error(&r, 403, "token does not grant access");
    // A cannot queue or schedule B's code by name.
    assert_error(
        &a.post_json("tasks", &json!({"tasks": [{"code_name": "secret"}]})),
        404,
        "secret",
    );
    assert_error(
        &a.post("tasks/webhook?code_name=secret", "text/plain", b"x"),
        404,
        "secret",
    );
    assert_error(
        &a.post_json(
            "schedules",
            &json!({"schedules": [{"code_name": "secret"}]}),
        ),
        404,
        "secret",
    );
    // Nothing of B's in A's listings.
    assert!(a.all_codes().is_empty());
    assert!(a.all_tasks().is_empty());
    assert!(a.get("tasks?code_name=secret").json()["tasks"] == json!([]));
    assert!(a.all_schedules().is_empty());
    // And B's things are untouched.
    let b_code = b.get(&format!("codes/{code}")).json();
    assert_eq!(b_code["paused"], false);
    assert_eq!(b.get(&format!("tasks/{task}")).json()["status"], "queued");
    assert_eq!(
        b.get(&format!("tasks/{task}")).json()["percent"],
        serde_json::Value::Null
    );
    assert_eq!(b.all_tasks().len(), 2);
    assert_eq!(
        b.get(&format!("schedules/{schedule}")).json()["status"],
        "scheduled"
    );
    // A code of the same name in A is A's own.
    let mine = a.image_code("secret");
    assert_ne!(&mine, code);
    assert_eq!(b.all_codes().len(), 1);
}

fn unknown_routes_and_methods_are_json(h: &Harness) {
    assert_error(&h.get("nothing/here"), 404, "no such API route");
    let r = h.raw("GET", "/2/ping", &[], b"");
    assert_error(&r, 404, "no such API route");
    let r = h.raw("GET", "/", &[], b"");
    assert_error(&r, 404, "no such API route");
    assert_error(&h.delete("tasks"), 405, "not allowed");
    assert_error(&h.get("tasks/webhook"), 405, "not allowed");
    assert_error(&h.post("codes/abc/stats", "", b""), 405, "not allowed");
}

fn an_unavailable_store_is_503(h: &Harness) {
    h.image_code("w");
    h.block_on(h.store.close());
    let r = h.get("codes");
    assert_error(&r, 503, "unavailable");
}
