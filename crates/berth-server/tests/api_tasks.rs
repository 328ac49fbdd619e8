//! `/tasks`: queueing, webhooks, listing with filters and pages, a task,
//! its log, cancel, retry, progress, and refusals of bad input.

#[macro_use]
mod api_support;

use api_support::{assert_error, ids, warnings, Harness};
use berth_store::TaskStatus;
use serde_json::{json, Value};

both!(
    queued_tasks_have_defaults_and_options,
    bad_tasks_store_nothing,
    client_fields_are_accepted_and_unknown_ones_reported,
    webhooks_queue_the_raw_body,
    task_listing_filters_and_pages,
    task_logs,
    cancel,
    cancel_all_of_a_code,
    retry,
    progress,
);

fn queued_tasks_have_defaults_and_options(h: &Harness) {
    let r = h.post_json(
        "codes",
        &json!({"name": "worker", "image": "busybox", "default_priority": 2}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let code_id = r.json()["id"].as_str().unwrap().to_owned();
    let r = h.post_json(
        "tasks",
        &json!({"tasks": [
            {"code_name": "worker", "payload": "{\"a\":1}"},
            {"code_name": "worker", "payload": "second", "priority": 0, "timeout": 60,
             "delay": 3600, "label": "nightly", "cluster": "default"},
        ]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["msg"], "Queued up");
    let tasks = ids(&body["tasks"]);
    assert_eq!(tasks.len(), 2);

    let t = h.get(&format!("tasks/{}", tasks[0])).json();
    assert_eq!(t["id"], tasks[0].as_str());
    assert_eq!(t["project_id"], h.project.as_str());
    assert_eq!(t["code_id"], code_id.as_str());
    assert_eq!(t["code_name"], "worker");
    assert_eq!(t["code_rev"], 1);
    assert_eq!(t["status"], "queued");
    assert_eq!(t["payload"], "{\"a\":1}");
    // Defaults: the code's priority, the longest timeout, no delay.
    assert_eq!(t["priority"], 2);
    assert_eq!(t["timeout"], h.config.max_timeout_secs);
    assert_eq!(t["delay"], 0);
    assert_eq!(t["retry_count"], 0);
    for absent in [
        "msg",
        "start_time",
        "end_time",
        "duration",
        "label",
        "cluster",
        "schedule_id",
        "original_task_id",
        "percent",
        "exit_code",
    ] {
        assert_eq!(t[absent], Value::Null, "{absent} of a queued task");
        assert!(
            t.as_object().unwrap().contains_key(absent),
            "{absent} omitted"
        );
    }
    assert!(t["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(t["updated_at"].as_str().unwrap().ends_with('Z'));

    let t = h.get(&format!("tasks/{}", tasks[1])).json();
    assert_eq!(t["priority"], 0);
    assert_eq!(t["timeout"], 60);
    assert_eq!(t["delay"], 3600);
    assert_eq!(t["label"], "nightly");
    assert_eq!(t["cluster"], "default");

    // A payload of exactly the limit is fine; absent is the empty string.
    let exact = "p".repeat(h.config.max_payload_bytes);
    let r = h.post_json(
        "tasks",
        &json!({"tasks": [{"code_name": "worker", "payload": exact}, {"code_name": "worker"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let last = ids(&r.json()["tasks"]);
    assert_eq!(h.get(&format!("tasks/{}", last[1])).json()["payload"], "");
    assert_error(
        &h.get("tasks/000000000000000000000000"),
        404,
        "task not found",
    );
}

fn bad_tasks_store_nothing(h: &Harness) {
    h.image_code("worker");
    let bad = |body: Value, status: u16, needle: &str| {
        let r = h.post_json("tasks", &body);
        assert_error(&r, status, needle);
    };
    let one = |task: Value| json!({"tasks": [{"code_name": "worker", "payload": "ok"}, task]});
    assert_error(
        &h.post("tasks", "application/json", b"{\"tasks\": [{"),
        400,
        "malformed JSON",
    );
    assert_error(
        &h.post("tasks", "text/plain", b"{\"tasks\": []}"),
        415,
        "application/json",
    );
    let r = h.raw("POST", &h.path("tasks"), &[], b"{\"tasks\": []}");
    assert_error(&r, 415, "application/json");
    bad(json!({"tasks": []}), 400, "empty");
    bad(json!({}), 400, "tasks");
    bad(json!({"tasks": {}}), 400, "array");
    bad(json!([]), 400, "object");
    bad(one(json!("worker")), 400, "tasks[1] must be a JSON object");
    bad(one(json!({"payload": "x"})), 400, "tasks[1].code_name");
    bad(
        one(json!({"code_name": "worker", "payload": {"a": 1}})),
        400,
        "encoded as a string",
    );
    bad(
        one(json!({"code_name": "worker", "payload": 5})),
        400,
        "payload must be a string",
    );
    let big = "x".repeat(h.config.max_payload_bytes + 1);
    bad(
        one(json!({"code_name": "worker", "payload": big})),
        413,
        "tasks[1].payload",
    );
    bad(
        one(json!({"code_name": "worker", "priority": 7})),
        400,
        "priority",
    );
    bad(
        one(json!({"code_name": "worker", "priority": -1})),
        400,
        "priority",
    );
    bad(
        one(json!({"code_name": "worker", "priority": "1"})),
        400,
        "priority",
    );
    bad(
        one(json!({"code_name": "worker", "timeout": 99999})),
        400,
        "timeout",
    );
    bad(
        one(json!({"code_name": "worker", "timeout": 0})),
        400,
        "timeout",
    );
    let too_long = h.config.max_delay_secs + 1;
    bad(
        one(json!({"code_name": "worker", "delay": too_long})),
        400,
        "delay",
    );
    bad(
        one(json!({"code_name": "worker", "delay": -1})),
        400,
        "delay",
    );
    bad(
        one(json!({"code_name": "worker", "label": "l".repeat(256)})),
        400,
        "label",
    );
    // Known fields that berth does not act on are still type-checked.
    bad(
        one(json!({"code_name": "worker", "sync": "yes"})),
        400,
        "tasks[1].sync must be a boolean",
    );
    bad(
        one(json!({"code_name": "worker", "name": 3})),
        400,
        "tasks[1].name must be a string",
    );
    bad(one(json!({"code_name": "nope"})), 404, "nope");
    let many: Vec<Value> = (0..=h.config.max_tasks_per_request)
        .map(|_| json!({"code_name": "worker"}))
        .collect();
    bad(json!({ "tasks": many }), 400, "at most");
    // A body over max_json_bytes.
    let huge: Vec<Value> = (0..10)
        .map(|_| json!({"code_name": "worker", "payload": "y".repeat(h.config.max_json_bytes / 8)}))
        .collect();
    bad(json!({ "tasks": huge }), 413, "larger than");
    assert!(h.all_tasks().is_empty(), "a refused request queued a task");
}

/// What IronWorker's clients send is queued: the Python client (iron-worker
/// 1.3.8) adds `name` (the code's name again) and `sync`; fields berth does
/// not know are accepted and named in `Warning` headers, never refused.
fn client_fields_are_accepted_and_unknown_ones_reported(h: &Harness) {
    h.image_code("worker");
    // Exactly the Python client's body for `worker.queue(code_name=…)`.
    let r = h.post_json(
        "tasks",
        &json!({"tasks": [{
            "name": "worker", "code_name": "worker", "payload": "{}", "priority": 1,
            "delay": 0, "label": null, "cluster": null, "sync": false, "timeout": 60,
        }]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(warnings(&r), Vec::<String>::new(), "nothing to warn about");
    let id = ids(&r.json()["tasks"])[0].clone();
    let task = h.get(&format!("tasks/{id}")).json();
    assert_eq!(task["priority"], 1);
    assert_eq!(task["timeout"], 60);

    // Values berth does not act on, and unknown fields, at both levels.
    let r = h.post_json(
        "tasks",
        &json!({"tasks": [
            {"code_name": "worker", "name": "nightly", "sync": true, "colour": "red"},
            {"code_name": "worker", "priorty": 2},
        ], "extra": 1}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(ids(&r.json()["tasks"]).len(), 2);
    let got = warnings(&r);
    assert_eq!(got.len(), 5, "{got:?}");
    for expected in [
        r#"299 - "unknown field \"extra\"""#,
        r#"299 - "unknown field \"tasks[0].colour\"""#,
        r#"299 - "unknown field \"tasks[1].priorty\"""#,
    ] {
        assert!(
            got.iter().any(|w| w == expected),
            "{expected} not in {got:?}"
        );
    }
    assert!(
        got.iter()
            .any(|w| w.starts_with("299 - \"tasks[0].name: ") && w.contains("ignored")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|w| w.starts_with("299 - \"tasks[0].sync: ") && w.contains("/outlog")),
        "{got:?}"
    );

    // Retry and progress bodies report the same way.
    let finished = h.queue("worker", &["p"]).remove(0);
    let claimed = h.claim_all("agent-1");
    let attempt = claimed
        .iter()
        .find(|(t, _)| *t == finished)
        .expect("claimed")
        .1;
    h.finish(&finished, attempt, TaskStatus::Complete, b"hello\n");
    let r = h.post_json(
        &format!("tasks/{finished}/retry"),
        &json!({"delay": 0, "why": "x"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(warnings(&r), vec![r#"299 - "unknown field \"why\"""#]);

    // The log of a task is also at /outlog, where the clients' stdout()
    // reads it.
    let log = h.get(&format!("tasks/{finished}/log"));
    let outlog = h.get(&format!("tasks/{finished}/outlog"));
    assert_eq!(outlog.status, 200, "{}", outlog.text());
    assert_eq!(outlog.text(), "hello\n");
    assert_eq!(outlog.body, log.body);
    assert_eq!(outlog.header("content-type"), log.header("content-type"));
}

fn webhooks_queue_the_raw_body(h: &Harness) {
    h.image_code("hook");
    let r = h.post(
        "tasks/webhook?code_name=hook&priority=1&timeout=30&delay=5&label=gh&cluster=c1",
        "application/x-www-form-urlencoded",
        b"a=1&b=2",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["msg"], "Queued up");
    assert_eq!(body["status_code"], 200);
    let id = body["id"].as_str().unwrap().to_owned();
    let t = h.get(&format!("tasks/{id}")).json();
    assert_eq!(t["payload"], "a=1&b=2");
    assert_eq!(t["priority"], 1);
    assert_eq!(t["timeout"], 30);
    assert_eq!(t["delay"], 5);
    assert_eq!(t["label"], "gh");
    assert_eq!(t["cluster"], "c1");
    // The token in the query, as webhook senders do; any content type.
    let path = format!(
        "{}?code_name=hook&oauth={}",
        h.path("tasks/webhook"),
        h.token
    );
    let r = h
        .endpoint
        .request(
            "POST",
            &path,
            &[("Content-Type", "application/json")],
            b"{\"x\":1}",
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let t = h
        .get(&format!("tasks/{}", r.json()["id"].as_str().unwrap()))
        .json();
    assert_eq!(t["payload"], "{\"x\":1}");
    assert_eq!(t["timeout"], h.config.max_timeout_secs);

    let count = h.all_tasks().len();
    let big = vec![b'z'; h.config.max_payload_bytes + 1];
    assert_error(
        &h.post("tasks/webhook?code_name=hook", "text/plain", &big),
        413,
        "larger than",
    );
    assert_error(
        &h.post("tasks/webhook", "text/plain", b"x"),
        400,
        "code_name",
    );
    assert_error(
        &h.post("tasks/webhook?code_name=nope", "text/plain", b"x"),
        404,
        "nope",
    );
    assert_error(
        &h.post(
            "tasks/webhook?code_name=hook&priority=7",
            "text/plain",
            b"x",
        ),
        400,
        "priority",
    );
    assert_error(
        &h.post(
            "tasks/webhook?code_name=hook&timeout=99999",
            "text/plain",
            b"x",
        ),
        400,
        "timeout",
    );
    assert_error(
        &h.post("tasks/webhook?code_name=hook&delay=x", "text/plain", b"x"),
        400,
        "delay",
    );
    assert_error(
        &h.post(
            "tasks/webhook?code_name=hook",
            "application/octet-stream",
            &[0xff, 0xfe],
        ),
        400,
        "UTF-8",
    );
    assert_eq!(
        h.all_tasks().len(),
        count,
        "a refused webhook queued a task"
    );
}

fn listed(h: &Harness, query: &str) -> Vec<String> {
    let r = h.get(&format!("tasks?{query}"));
    assert_eq!(r.status, 200, "{query}: {}", r.text());
    ids(&r.json()["tasks"])
}

fn task_listing_filters_and_pages(h: &Harness) {
    h.image_code("a");
    h.image_code("b");
    let a = h.queue("a", &["1", "2", "3", "4", "5"]);
    let b = h.queue("b", &["6", "7"]);
    // Make some statuses: a[0] cancelled, a[1] complete, b[0] running.
    assert_eq!(
        h.post(&format!("tasks/{}/cancel", a[0]), "", b"").status,
        200
    );
    let claimed = h.claim_all("agent-1");
    let attempt = |id: &str| claimed.iter().find(|(t, _)| t == id).unwrap().1;
    h.finish(&a[1], attempt(&a[1]), TaskStatus::Complete, b"done\n");
    let now = berth_core::time::now_millis();
    assert!(h
        .block_on(h.store.mark_running(&b[0], attempt(&b[0]), now))
        .unwrap());

    let mut all: Vec<String> = a.iter().chain(&b).cloned().collect();
    all.sort();
    let mut got = listed(h, "");
    got.sort();
    assert_eq!(got, all);

    let mut got = listed(h, "code_name=b");
    got.sort();
    let mut want = b.clone();
    want.sort();
    assert_eq!(got, want);
    assert!(listed(h, "code_name=nope").is_empty());

    assert_eq!(listed(h, "cancelled=1"), vec![a[0].clone()]);
    assert_eq!(listed(h, "complete=true"), vec![a[1].clone()]);
    assert_eq!(listed(h, "running=1"), vec![b[0].clone()]);
    let mut got = listed(h, "cancelled=1&complete=1&queued=0");
    got.sort();
    let mut want = vec![a[0].clone(), a[1].clone()];
    want.sort();
    assert_eq!(got, want);
    // The rest were claimed (preparing) by claim_all.
    assert_eq!(listed(h, "preparing=1").len(), 4);
    assert!(listed(h, "queued=1").is_empty());
    assert!(listed(h, "error=1&killed=1&timeout=1").is_empty());
    assert_eq!(listed(h, "running=1&code_name=a"), Vec::<String>::new());
    assert_error(&h.get("tasks?queued=maybe"), 400, "queued");

    let secs = now / 1000;
    assert_eq!(listed(h, &format!("from_time={}", secs - 100)).len(), 7);
    assert!(listed(h, &format!("from_time={}", secs + 100)).is_empty());
    assert!(listed(h, &format!("to_time={}", secs - 100)).is_empty());
    assert_eq!(
        listed(
            h,
            &format!("from_time={}&to_time={}", secs - 100, secs + 100)
        )
        .len(),
        7
    );
    assert_error(&h.get("tasks?from_time=yesterday"), 400, "from_time");

    // Pages: newest first, each task once, pages past the end empty.
    let mut seen = Vec::new();
    for page in 0..3 {
        let got = listed(h, &format!("per_page=3&page={page}"));
        assert_eq!(got.len(), if page < 2 { 3 } else { 1 }, "page {page}");
        seen.extend(got);
    }
    seen.sort();
    assert_eq!(seen, all);
    assert!(listed(h, "per_page=3&page=3").is_empty());
    assert!(listed(h, "page=1000").is_empty());
    assert_eq!(listed(h, "per_page=100").len(), 7);
    assert_error(&h.get("tasks?per_page=101"), 400, "per_page");
    assert_error(&h.get("tasks?per_page=0"), 400, "per_page");
    assert_error(&h.get("tasks?page=-2"), 400, "page");
}

fn task_logs(h: &Harness) {
    h.image_code("logger");
    let t = h.queue("logger", &["1", "2"]);
    // Queued: no log yet.
    let r = h.get(&format!("tasks/{}/log", t[0]));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    assert!(r.body.is_empty());
    let claimed = h.claim_all("agent-1");
    let attempt = |id: &str| claimed.iter().find(|(t, _)| t == id).unwrap().1;
    h.finish(
        &t[0],
        attempt(&t[0]),
        TaskStatus::Error,
        b"line 1\nline 2\n",
    );
    let r = h.get(&format!("tasks/{}/log", t[0]));
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"line 1\nline 2\n");
    let task = h.get(&format!("tasks/{}", t[0])).json();
    assert_eq!(task["status"], "error");
    assert_eq!(task["duration"], 1500);
    assert!(task["start_time"].as_str().is_some());
    assert!(task["end_time"].as_str().is_some());
    assert_eq!(task["exit_code"], 0);
    // Running on an agent this server cannot reach: the stored log (none
    // yet) is answered rather than an error.
    let now = berth_core::time::now_millis();
    assert!(h
        .block_on(h.store.mark_running(&t[1], attempt(&t[1]), now))
        .unwrap());
    let r = h.get(&format!("tasks/{}/log", t[1]));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body.is_empty());
    assert_error(
        &h.get("tasks/000000000000000000000000/log"),
        404,
        "task not found",
    );
}

fn cancel(h: &Harness) {
    h.image_code("c");
    let t = h.queue("c", &["1", "2", "3"]);
    let r = h.post(&format!("tasks/{}/cancel", t[0]), "application/json", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"msg": "Cancelled"}));
    assert_eq!(
        h.get(&format!("tasks/{}", t[0])).json()["status"],
        "cancelled"
    );
    // Again: still a success.
    let r = h.post(&format!("tasks/{}/cancel", t[0]), "", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    // A running task: the cancel is recorded; the container stop is the
    // dispatcher's (its agent is unknown here, which is only logged).
    let claimed = h.claim_all("agent-1");
    let attempt = |id: &str| claimed.iter().find(|(t, _)| t == id).unwrap().1;
    let now = berth_core::time::now_millis();
    assert!(h
        .block_on(h.store.mark_running(&t[1], attempt(&t[1]), now))
        .unwrap());
    let r = h.post(&format!("tasks/{}/cancel", t[1]), "", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"msg": "Cancelled"}));
    let stored = h
        .block_on(h.store.task(&h.project, &t[1]))
        .unwrap()
        .unwrap();
    assert!(stored.cancel_requested);
    // An ended task: 409 naming its status.
    h.finish(&t[2], attempt(&t[2]), TaskStatus::Complete, b"");
    assert_error(
        &h.post(&format!("tasks/{}/cancel", t[2]), "", b""),
        409,
        "complete",
    );
    assert_eq!(
        h.get(&format!("tasks/{}", t[2])).json()["status"],
        "complete"
    );
    assert_error(
        &h.post("tasks/000000000000000000000000/cancel", "", b""),
        404,
        "task not found",
    );
}

/// `POST /codes/{id}/cancel_all`, which the Node client calls.
fn cancel_all_of_a_code(h: &Harness) {
    let code = h.image_code("worker");
    h.image_code("other");
    let mine = h.queue("worker", &["1", "2", "3"]);
    let theirs = h.queue("other", &["4"]);
    // One of them is claimed (preparing) by an agent this server does not
    // know: its stop is only logged, the request is recorded.
    assert_eq!(h.claim_all("agent-1").len(), 4);
    let r = h.post_json(&format!("codes/{code}/cancel_all"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"msg": "Cancelled", "cancelled": 3}));
    for id in &mine {
        let status = h.get(&format!("tasks/{id}")).json()["status"].clone();
        assert_eq!(
            status, "preparing",
            "{id}: claimed tasks wait for their stop"
        );
    }
    assert_eq!(
        h.get(&format!("tasks/{}", theirs[0])).json()["status"],
        "preparing"
    );

    // Queued tasks are cancelled at once; the claimed ones are asked again.
    let queued = h.queue("worker", &["5", "6"]);
    let r = h.post(&format!("codes/{code}/cancel_all"), "", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["cancelled"], 5);
    for id in &queued {
        assert_eq!(h.get(&format!("tasks/{id}")).json()["status"], "cancelled");
    }
    assert_error(
        &h.post("codes/000000000000000000000000/cancel_all", "", b""),
        404,
        "code not found",
    );
    let stranger = h.new_project("stranger");
    assert_error(
        &stranger.post(&format!("codes/{code}/cancel_all"), "", b""),
        404,
        "code not found",
    );
}

fn retry(h: &Harness) {
    h.post_json("codes", &json!({"name": "r", "image": "busybox"}));
    let r = h.post_json(
        "tasks",
        &json!({"tasks": [{"code_name": "r", "payload": "p", "priority": 1, "timeout": 42, "label": "l"}]}),
    );
    let t = ids(&r.json()["tasks"]);
    // Not ended yet.
    assert_error(
        &h.post(&format!("tasks/{}/retry", t[0]), "", b""),
        409,
        "has not ended",
    );
    assert_eq!(h.all_tasks().len(), 1);
    h.post(&format!("tasks/{}/cancel", t[0]), "", b"");
    // Bad bodies change nothing.
    for (body, ct, status) in [
        (&b"{\"delay\": -1}"[..], "application/json", 400),
        (b"{\"delay\": 999999999}", "application/json", 400),
        (b"{\"delay\": \"soon\"}", "application/json", 400),
        (b"{\"delay\": 1.5}", "application/json", 400),
        (b"{\"delay\":", "application/json", 400),
        (b"delay=5", "application/x-www-form-urlencoded", 415),
    ] {
        let r = h.post(&format!("tasks/{}/retry", t[0]), ct, body);
        assert_eq!(
            r.status,
            status,
            "{}: {}",
            String::from_utf8_lossy(body),
            r.text()
        );
        assert!(r.json()["msg"].is_string());
    }
    assert_eq!(h.all_tasks().len(), 1);

    let r = h.post_json(&format!("tasks/{}/retry", t[0]), &json!({"delay": 60}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["msg"], "Queued up");
    let new = ids(&r.json()["tasks"]);
    assert_eq!(new.len(), 1);
    assert_ne!(new[0], t[0]);
    let copy = h.get(&format!("tasks/{}", new[0])).json();
    assert_eq!(copy["original_task_id"], t[0].as_str());
    assert_eq!(copy["status"], "queued");
    assert_eq!(copy["payload"], "p");
    assert_eq!(copy["priority"], 1);
    assert_eq!(copy["timeout"], 42);
    assert_eq!(copy["label"], "l");
    assert_eq!(copy["delay"], 60);
    // Without a body (delay 0).
    let r = h.post(&format!("tasks/{}/retry", t[0]), "", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(h.all_tasks().len(), 3);
    assert_error(
        &h.post("tasks/000000000000000000000000/retry", "", b""),
        404,
        "task not found",
    );
}

fn progress(h: &Harness) {
    h.image_code("p");
    let t = h.queue("p", &["1"]);
    let path = format!("tasks/{}/progress", t[0]);
    let r = h.post_json(&path, &json!({"percent": 40, "msg": "reticulating"}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"msg": "Progress set"}));
    let task = h.get(&format!("tasks/{}", t[0])).json();
    assert_eq!(task["percent"], 40);
    assert_eq!(task["msg"], "reticulating");
    let r = h.post_json(&path, &json!({"percent": 41}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(h.get(&format!("tasks/{}", t[0])).json()["percent"], 41);

    assert_error(
        &h.post_json(&path, &json!({"percent": 101})),
        400,
        "percent",
    );
    assert_error(&h.post_json(&path, &json!({"percent": -1})), 400, "percent");
    assert_error(
        &h.post_json(&path, &json!({"percent": "50"})),
        400,
        "percent",
    );
    assert_error(&h.post_json(&path, &json!({"msg": 5})), 400, "msg");
    // An unknown field alone sets nothing, so the request is refused.
    let r = h.post_json(&path, &json!({"eta": 3}));
    assert_error(&r, 400, "percent");
    assert_eq!(warnings(&r), vec![r#"299 - "unknown field \"eta\"""#]);
    assert_error(&h.post_json(&path, &json!({})), 400, "percent");
    assert_error(
        &h.post(&path, "application/json", b"{"),
        400,
        "malformed JSON",
    );
    assert_error(&h.post(&path, "text/plain", b"{}"), 415, "application/json");
    assert_eq!(h.get(&format!("tasks/{}", t[0])).json()["percent"], 41);

    h.post(&format!("tasks/{}/cancel", t[0]), "", b"");
    assert_error(
        &h.post_json(&path, &json!({"percent": 50})),
        409,
        "cancelled",
    );
    assert_error(
        &h.post_json(
            "tasks/000000000000000000000000/progress",
            &json!({"percent": 1}),
        ),
        404,
        "task not found",
    );
}
