//! What codes and tasks ask of the fleet: memory, CPUs, disk, pids,
//! constraints, group rules and pool, through the task API. (Placement on
//! real hosts is in crates/berth/tests/fleet.rs.)

#[macro_use]
mod api_support;

use api_support::{assert_error, Harness};
use serde_json::json;

both!(
    codes_state_what_their_tasks_ask,
    tasks_override_their_code,
    bad_placement_fields_are_refused_with_where,
);

fn codes_state_what_their_tasks_ask(h: &Harness) {
    let r = h.upload(
        &json!({
            "name": "web", "image": "busybox", "command": "httpd",
            "memory": "256m", "cpus": 0.5, "disk": 1_073_741_824u64, "pids": 64,
            "constraints": ["zone==a", "gpu!=true"],
            "anti_affinity": ["web"], "affinity": ["cache:soft"], "pool": "frontend"
        }),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        api_support::warnings(&r).is_empty(),
        "{:?}",
        api_support::warnings(&r)
    );
    let code = h
        .get(&format!("codes/{}", r.json()["id"].as_str().unwrap()))
        .json();
    let placement = &code["placement"];
    assert_eq!(placement["memory"], 256u64 << 20);
    assert_eq!(placement["cpus"], 0.5);
    assert_eq!(placement["disk"], 1u64 << 30);
    assert_eq!(placement["pids"], 64);
    assert_eq!(placement["constraints"], json!(["zone==a", "gpu!=true"]));
    assert_eq!(placement["anti_affinity"], json!(["web"]));
    assert_eq!(placement["affinity"], json!(["cache:soft"]));
    assert_eq!(placement["pool"], "frontend");
}

fn tasks_override_their_code(h: &Harness) {
    h.upload(
        &json!({"name": "job", "image": "busybox", "command": "true", "memory": "128m"}),
        None,
    );
    let r = h.post_json(
        "tasks",
        &json!({"tasks": [{"code_name": "job", "memory": "64m", "memory_request": "16m",
                           "constraints": ["node==host-2"], "anti_affinity": ["batch:soft"]}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["tasks"][0]["id"].as_str().unwrap().to_owned();
    let task = h.get(&format!("tasks/{id}")).json();
    assert_eq!(task["placement"]["memory"], 64u64 << 20);
    assert_eq!(task["placement"]["memory_request"], 16u64 << 20);
    assert_eq!(task["placement"]["constraints"], json!(["node==host-2"]));
    assert_eq!(task["placement"]["anti_affinity"], json!(["batch:soft"]));
    assert_eq!(task["node"], json!(null), "not placed yet");
    assert_eq!(task["reserved"], json!(null));
}

fn bad_placement_fields_are_refused_with_where(h: &Harness) {
    let bad = [
        (json!({"constraints": ["zone=a"]}), "column 5"),
        (json!({"constraints": "zone==a"}), "array"),
        (json!({"memory": "lots"}), "memory"),
        (json!({"memory": 0}), "memory must be above zero"),
        (
            json!({"memory": "64m", "memory_request": "128m"}),
            "above the memory limit",
        ),
        (json!({"cpus": -1}), "cpus"),
        (json!({"cpus": "many"}), "cpus"),
        (json!({"pids": 0}), "pids"),
        (json!({"anti_affinity": ["we b"]}), "group"),
        (json!({"affinity": ["db:sometimes"]}), "group"),
        (json!({"pool": "a b"}), "pool"),
    ];
    for (fields, needle) in bad {
        let mut code = json!({"name": "c", "image": "busybox", "command": "true"});
        code.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        let r = h.upload(&code, None);
        assert_error(&r, 400, needle);
        let mut task = json!({"code_name": "c"});
        task.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        let r = h.post_json("tasks", &json!({ "tasks": [task] }));
        assert_error(&r, 400, needle);
    }
    assert!(h.all_codes().is_empty(), "nothing was stored");
}
