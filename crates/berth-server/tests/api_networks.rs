//! `/networks`: a project's overlay networks, and codes that name them.

#[macro_use]
mod api_support;

use api_support::{assert_error, Harness};
use serde_json::{json, Value};

both!(
    networks_round_trip,
    bad_networks_store_nothing,
    codes_name_their_own_projects_networks_only
);

fn networks_round_trip(h: &Harness) {
    let r = h.post_json("networks", &json!({"name": "backend"}));
    assert_eq!(r.status, 200, "{}", r.text());
    let made = r.json();
    assert_eq!(made["name"], "backend");
    assert_eq!(made["driver"], "overlay");
    assert_eq!(made["subnet"], "10.128.0.0/24");
    assert_eq!(made["gateway"], "10.128.0.1");
    assert_eq!(made["internal"], false);
    assert!(made["vni"].as_u64().unwrap() >= 1 << 20);
    let r = h.post_json(
        "networks",
        &json!({"name": "db", "subnet": "10.140.0.0/28", "internal": true}),
    );
    assert_eq!(r.status, 200, "{}", r.text());

    let list = h.get("networks").json();
    let names: Vec<&str> = list["networks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["backend", "db"]);
    let db = h.get("networks/db").json();
    assert_eq!(db["internal"], true);
    assert_eq!(db["subnet"], "10.140.0.0/28");
    assert_eq!(db["tasks"], Value::Array(Vec::new()));

    // Another project sees none of them, and may use the same name.
    let other = h.new_project("other");
    assert_eq!(other.get("networks").json()["networks"], json!([]));
    assert_error(&other.get("networks/db"), 404, "network not found");
    assert_error(&other.delete("networks/db"), 404, "network not found");
    let r = other.post_json("networks", &json!({"name": "db"}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_ne!(r.json()["vni"], db["vni"]);

    assert_eq!(h.delete("networks/db").status, 200);
    assert_error(&h.get("networks/db"), 404, "network not found");
    assert_eq!(other.get("networks/db").status, 200);
}

fn bad_networks_store_nothing(h: &Harness) {
    h.post_json(
        "networks",
        &json!({"name": "taken", "subnet": "10.140.0.0/24"}),
    );
    for (body, status, needle) in [
        (json!({}), 400, "name is required"),
        (json!({"name": "bridge"}), 400, "reserved"),
        (json!({"name": "a/b"}), 400, "letters, digits"),
        (
            json!({"name": "x", "subnet": "8.8.8.0/24"}),
            400,
            "overlay pool",
        ),
        (
            json!({"name": "x", "subnet": "10.0.2.0/24"}),
            400,
            "overlay pool",
        ),
        (
            json!({"name": "x", "subnet": "10.140.1.7/24"}),
            400,
            "host bits",
        ),
        (
            json!({"name": "x", "subnet": "10.128.0.0/12"}),
            400,
            "/16 to a /29",
        ),
        (json!({"name": "x", "internal": "yes"}), 400, "internal"),
        (json!({"name": "taken"}), 409, "already has a network"),
        (
            json!({"name": "x", "subnet": "10.140.0.128/25"}),
            409,
            "overlaps another",
        ),
    ] {
        assert_error(&h.post_json("networks", &body), status, needle);
    }
    let list = h.get("networks").json();
    assert_eq!(list["networks"].as_array().unwrap().len(), 1, "{list}");
}

fn codes_name_their_own_projects_networks_only(h: &Harness) {
    h.post_json("networks", &json!({"name": "mine"}));
    let other = h.new_project("other");
    other.post_json("networks", &json!({"name": "theirs"}));
    let code = |client: &api_support::Client, network: &str| {
        client.upload(
            &json!({"name": "web", "image": "busybox", "network": network}),
            None,
        )
    };
    let r = code(&h.client, "mine");
    assert_eq!(r.status, 200, "{}", r.text());
    let shown = h.get("codes").json();
    assert_eq!(shown["codes"][0]["network"], "mine", "{shown}");
    assert_error(&code(&h.client, "theirs"), 400, "no network of that name");
    assert_error(&code(&h.client, "host"), 400, "not allowed for tasks");
    assert_error(&code(&h.client, "cni:x"), 400, "not allowed for tasks");
    assert_eq!(code(&other, "theirs").status, 200);
    for network in ["none", "bridge"] {
        assert_eq!(code(&h.client, network).status, 200, "{network}");
    }
}
