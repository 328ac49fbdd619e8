//! `/schedules`: creating (all or nothing), listing, one schedule, cancel.

#[macro_use]
mod api_support;

use api_support::{assert_error, ids, warnings, Harness};
use serde_json::{json, Value};

both!(
    schedules_round_trip,
    bad_schedules_store_nothing,
    client_fields_are_accepted_and_unknown_ones_reported,
    schedule_listing_pages
);

fn schedules_round_trip(h: &Harness) {
    h.image_code("cron");
    let before = berth_core::time::now_millis();
    let r = h.post_json(
        "schedules",
        &json!({"schedules": [
            {"code_name": "cron", "payload": "{\"x\":1}", "start_at": "2030-01-02T03:04:05Z",
             "run_every": 3600, "run_times": 5, "end_at": "2030-02-01T00:00:00+01:00",
             "priority": 2, "timeout": 120, "label": "hourly", "cluster": "c"},
            {"code_name": "cron"},
        ]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["msg"], "Scheduled");
    let s = ids(&r.json()["schedules"]);
    assert_eq!(s.len(), 2);

    let one = h.get(&format!("schedules/{}", s[0])).json();
    assert_eq!(one["id"], s[0].as_str());
    assert_eq!(one["project_id"], h.project.as_str());
    assert_eq!(one["code_name"], "cron");
    assert_eq!(one["status"], "scheduled");
    assert_eq!(one["payload"], "{\"x\":1}");
    assert_eq!(one["start_at"], "2030-01-02T03:04:05.000Z");
    assert_eq!(one["next_start"], "2030-01-02T03:04:05.000Z");
    assert_eq!(one["end_at"], "2030-01-31T23:00:00.000Z");
    assert_eq!(one["last_run_time"], Value::Null);
    assert_eq!(one["run_every"], 3600);
    assert_eq!(one["run_times"], 5);
    assert_eq!(one["run_count"], 0);
    assert_eq!(one["priority"], 2);
    assert_eq!(one["timeout"], 120);
    assert_eq!(one["label"], "hourly");
    assert_eq!(one["cluster"], "c");
    assert!(one["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(one["updated_at"].as_str().unwrap().ends_with('Z'));

    // Defaults: now, run once, the code's priority, the longest timeout.
    let two = h.get(&format!("schedules/{}", s[1])).json();
    assert_eq!(two["payload"], "");
    assert_eq!(two["run_every"], Value::Null);
    assert_eq!(two["run_times"], Value::Null);
    assert_eq!(two["end_at"], Value::Null);
    assert_eq!(two["priority"], Value::Null);
    assert_eq!(two["timeout"], h.config.max_timeout_secs);
    let start = h
        .block_on(h.store.schedule(&h.project, &s[1]))
        .unwrap()
        .unwrap()
        .spec
        .start_at;
    assert!(start >= before && start <= berth_core::time::now_millis());

    let r = h.post(&format!("schedules/{}/cancel", s[0]), "", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"msg": "Cancelled"}));
    let one = h.get(&format!("schedules/{}", s[0])).json();
    assert_eq!(one["status"], "cancelled");
    assert_eq!(one["next_start"], Value::Null);
    // Again: still a success.
    assert_eq!(
        h.post(&format!("schedules/{}/cancel", s[0]), "", b"")
            .status,
        200
    );
    // A completed schedule cannot be cancelled.
    let due = h
        .block_on(h.store.schedule(&h.project, &s[1]))
        .unwrap()
        .unwrap();
    let fired = h
        .block_on(h.store.fire_schedule(
            &s[1],
            due.next_start.unwrap(),
            berth_core::time::now_millis(),
        ))
        .unwrap();
    assert!(fired.is_some());
    let two = h.get(&format!("schedules/{}", s[1])).json();
    assert_eq!(two["status"], "complete");
    assert_eq!(two["run_count"], 1);
    assert!(two["last_run_time"].as_str().is_some());
    assert_error(
        &h.post(&format!("schedules/{}/cancel", s[1]), "", b""),
        409,
        "complete",
    );
    // The task it queued carries its id.
    let task = h.get(&format!("tasks/{}", fired.unwrap())).json();
    assert_eq!(task["schedule_id"], s[1].as_str());

    assert_error(
        &h.get("schedules/000000000000000000000000"),
        404,
        "schedule not found",
    );
    assert_error(
        &h.post("schedules/000000000000000000000000/cancel", "", b""),
        404,
        "schedule not found",
    );
}

fn bad_schedules_store_nothing(h: &Harness) {
    h.image_code("cron");
    let ok = json!({"code_name": "cron", "run_every": 60});
    let bad = |schedule: Value, status: u16, needle: &str| {
        let r = h.post_json("schedules", &json!({"schedules": [ok.clone(), schedule]}));
        assert_error(&r, status, needle);
    };
    bad(
        json!({"code_name": "cron", "run_every": 59}),
        400,
        "run_every",
    );
    bad(
        json!({"code_name": "cron", "run_every": "hourly"}),
        400,
        "run_every",
    );
    bad(
        json!({"code_name": "cron", "run_times": 0}),
        400,
        "run_times",
    );
    bad(
        json!({"code_name": "cron", "start_at": "tomorrow"}),
        400,
        "start_at",
    );
    bad(
        json!({"code_name": "cron", "start_at": 1700000000}),
        400,
        "start_at",
    );
    bad(
        json!({"code_name": "cron", "end_at": "2030-13-01T00:00:00Z"}),
        400,
        "end_at",
    );
    // The refusal says what is wrong with the time.
    bad(
        json!({"code_name": "cron", "start_at": "2030-02-29T00:00:00Z"}),
        400,
        "'day' for `2030-02`",
    );
    bad(
        json!({"code_name": "cron", "start_at": "2030-01-02T00:00:00"}),
        400,
        "no offset",
    );
    bad(
        json!({"code_name": "cron", "start_at": "2030-01-02T00:00:00Z", "end_at": "2030-01-01T00:00:00Z"}),
        400,
        "end_at",
    );
    bad(json!({"code_name": "cron", "priority": 7}), 400, "priority");
    bad(
        json!({"code_name": "cron", "timeout": 99999}),
        400,
        "timeout",
    );
    bad(
        json!({"code_name": "cron", "payload": {"a": 1}}),
        400,
        "encoded as a string",
    );
    let big = "x".repeat(h.config.max_payload_bytes + 1);
    bad(json!({"code_name": "cron", "payload": big}), 413, "payload");
    // Fields berth accepts without acting on them are still type-checked.
    bad(json!({"code_name": "cron", "delay": -5}), 400, "delay");
    bad(json!({"code_name": "cron", "delay": "5"}), 400, "delay");
    bad(json!({"code_name": "cron", "sync": 1}), 400, "sync");
    bad(json!({"payload": "x"}), 400, "code_name");
    // An unknown code in any schedule: none of the request is stored.
    bad(json!({"code_name": "nope"}), 404, "nope");
    let r = h.post_json("schedules", &json!({"schedules": []}));
    assert_error(&r, 400, "empty");
    let r = h.post_json("schedules", &json!({"schedule": [ok.clone()]}));
    assert_error(&r, 400, "schedule");
    assert_error(
        &h.post("schedules", "application/json", b"{"),
        400,
        "malformed JSON",
    );
    assert_error(
        &h.post("schedules", "text/plain", b"{}"),
        415,
        "application/json",
    );
    assert!(
        h.all_schedules().is_empty(),
        "a refused request stored a schedule"
    );
}

/// The Python client (iron-worker 1.3.8) sends `name`, `sync` and `delay`
/// with a schedule; berth stores the schedule and reports what it ignores.
fn client_fields_are_accepted_and_unknown_ones_reported(h: &Harness) {
    h.image_code("cron");
    // Exactly the Python client's body for a scheduled `worker.queue(…)`.
    let r = h.post_json(
        "schedules",
        &json!({"schedules": [{
            "name": "cron", "code_name": "cron", "payload": "{}", "priority": 0, "delay": 0,
            "label": null, "cluster": null, "sync": false, "run_every": 3600,
            "start_at": "2030-01-02T03:04:05.123456+00:00", "timeout": 60,
        }]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(warnings(&r), Vec::<String>::new());
    let id = ids(&r.json()["schedules"])[0].clone();
    let one = h.get(&format!("schedules/{id}")).json();
    assert_eq!(one["start_at"], "2030-01-02T03:04:05.123Z");
    assert_eq!(one["timeout"], 60);

    let r = h.post_json(
        "schedules",
        &json!({"schedules": [
            {"code_name": "cron", "name": "MyScheduledTask", "delay": 10, "colour": "red"},
        ]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let got = warnings(&r);
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(
        got.iter()
            .any(|w| w.starts_with("299 - \"schedules[0].name: ")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|w| w.starts_with("299 - \"schedules[0].delay: ")),
        "{got:?}"
    );
    assert!(
        got.contains(&r#"299 - "unknown field \"schedules[0].colour\"""#.to_owned()),
        "{got:?}"
    );
    assert_eq!(h.all_schedules().len(), 2);
}

fn schedule_listing_pages(h: &Harness) {
    h.image_code("cron");
    let list: Vec<Value> = (0..5)
        .map(|i| json!({"code_name": "cron", "payload": format!("{i}"), "run_every": 60}))
        .collect();
    let r = h.post_json("schedules", &json!({ "schedules": list }));
    assert_eq!(r.status, 200, "{}", r.text());
    let mut all = ids(&r.json()["schedules"]);
    all.sort();
    let mut seen = Vec::new();
    for page in 0..3 {
        let r = h.get(&format!("schedules?per_page=2&page={page}"));
        assert_eq!(r.status, 200);
        let got = ids(&r.json()["schedules"]);
        assert_eq!(got.len(), if page < 2 { 2 } else { 1 });
        seen.extend(got);
    }
    seen.sort();
    assert_eq!(seen, all);
    assert_eq!(
        h.get("schedules?per_page=2&page=3").json()["schedules"],
        json!([])
    );
    assert_error(&h.get("schedules?per_page=101"), 400, "per_page");
}
