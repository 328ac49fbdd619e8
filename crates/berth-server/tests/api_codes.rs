//! `/codes`: uploads (image and classic form), listing, revisions,
//! download, stats, pause/resume, delete, and every refusal of bad input.

#[macro_use]
mod api_support;

use api_support::{assert_error, ids, warnings, zip_of, zip_with_symlink, Harness};
use berth_testkit::http::{multipart, Part};
use serde_json::json;

both!(
    image_form_uploads,
    classic_form_uploads_and_downloads,
    code_listing_pages,
    stats_pause_resume_and_delete,
    bad_uploads_store_nothing,
    bad_zips_store_nothing,
    oversized_uploads_are_413,
    client_fields_are_accepted_and_unknown_ones_reported,
);

fn image_form_uploads(h: &Harness) {
    // multipart, image form with every option.
    let r = h.upload(
        &json!({
            "name": "hello",
            "image": "busybox",
            "command": "sh -c 'echo \"$GREETING\"'",
            "config": {"db": "x", "n": 1},
            "env_vars": {"GREETING": "hi"},
            "max_concurrency": 3,
            "retries": 2,
            "retries_delay": 30,
            "default_priority": 1,
        }),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["msg"], "Upload successful.");
    assert_eq!(body["status_code"], 200);
    assert_eq!(body["rev"], 1);
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 24);

    let code = h.get(&format!("codes/{id}")).json();
    assert_eq!(code["id"], id.as_str());
    assert_eq!(code["project_id"], h.project.as_str());
    assert_eq!(code["name"], "hello");
    assert_eq!(code["image"], "busybox:latest");
    assert_eq!(code["runtime"], serde_json::Value::Null);
    assert_eq!(code["command"], "sh -c 'echo \"$GREETING\"'");
    // A JSON object as config is kept as its JSON text.
    let config: serde_json::Value = serde_json::from_str(code["config"].as_str().unwrap()).unwrap();
    assert_eq!(config, json!({"db": "x", "n": 1}));
    assert_eq!(code["env_vars"], json!({"GREETING": "hi"}));
    assert_eq!(code["max_concurrency"], 3);
    assert_eq!(code["retries"], 2);
    assert_eq!(code["retries_delay"], 30);
    assert_eq!(code["default_priority"], 1);
    assert_eq!(code["paused"], false);
    assert_eq!(code["rev"], 1);
    assert_eq!(code["latest_checksum"], "");
    assert_eq!(code["latest_history_id"].as_str().unwrap().len(), 24);
    let created = code["created_at"].as_str().unwrap();
    assert!(
        created.ends_with('Z') && created.len() == 24,
        "{created:?} is not RFC 3339 with milliseconds"
    );
    assert!(code["latest_change"].as_str().unwrap().ends_with('Z'));

    // A plain JSON body (image form), `stack` as a synonym of image, and
    // -1 as unlimited concurrency: revision 2 of the same code.
    let r = h.post_json(
        "codes",
        &json!({"name": "hello", "stack": "library/debian:12", "max_concurrency": -1}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], id.as_str());
    assert_eq!(r.json()["rev"], 2);
    let code = h.get(&format!("codes/{id}")).json();
    assert_eq!(code["image"], "library/debian:12");
    assert_eq!(code["max_concurrency"], -1);
    assert_eq!(code["rev"], 2);
    assert_eq!(code["command"], serde_json::Value::Null);
    assert_eq!(code["env_vars"], json!({}));

    let revs = h.get(&format!("codes/{id}/revisions")).json();
    let revs = revs["revisions"].as_array().unwrap();
    assert_eq!(revs.len(), 2);
    // Newest first.
    assert_eq!(revs[0]["rev"], 2);
    assert_eq!(revs[1]["rev"], 1);
    assert_eq!(revs[0]["code_id"], id.as_str());
    assert_eq!(revs[0]["id"], code["latest_history_id"]);
    assert_eq!(revs[1]["image"], "busybox:latest");
    assert_eq!(revs[1]["max_concurrency"], 3);
    assert_eq!(revs[0]["checksum"], "");

    // An image code has no package to download.
    assert_error(&h.get(&format!("codes/{id}/download")), 404, "no package");
}

fn classic_form_uploads_and_downloads(h: &Harness) {
    h.stack("sh");
    let v1 = zip_of(&[("hello.sh", b"echo one\n"), ("lib/util.sh", b"true\n")]);
    let r = h.upload(
        &json!({"name": "classic", "runtime": "sh", "file_name": "hello.sh", "config": "k=v"}),
        Some(&v1),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    // A nested file_name, with a leading ./ as some clients send it.
    let v2 = zip_of(&[("bin/run.sh", b"echo two\n")]);
    let r = h.upload(
        &json!({"name": "classic", "runtime": "sh", "file_name": "./bin/run.sh"}),
        Some(&v2),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["rev"], 2);

    let code = h.get(&format!("codes/{id}")).json();
    assert_eq!(code["runtime"], "sh");
    assert_eq!(code["image"], serde_json::Value::Null);
    assert_eq!(code["file_name"], "./bin/run.sh");
    let sha_v2 = code["latest_checksum"].as_str().unwrap().to_owned();
    assert_eq!(sha_v2.len(), 64);
    assert_eq!(code["package_size"], v2.len() as u64);

    // The latest package, then the first revision's.
    let r = h.get(&format!("codes/{id}/download"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/zip"));
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename=\"classic_2.zip\"")
    );
    assert_eq!(r.body, v2);
    let r = h.get(&format!("codes/{id}/download?revision=1"));
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename=\"classic_1.zip\"")
    );
    assert_eq!(r.body, v1);
    assert_error(
        &h.get(&format!("codes/{id}/download?revision=3")),
        404,
        "revision 3",
    );
    assert_error(
        &h.get(&format!("codes/{id}/download?revision=0")),
        400,
        "revision",
    );
    assert_error(
        &h.get(&format!("codes/{id}/download?revision=x")),
        400,
        "revision",
    );

    let revs = h.get(&format!("codes/{id}/revisions")).json();
    let revs = revs["revisions"].as_array().unwrap().clone();
    assert_eq!(revs[0]["checksum"], sha_v2.as_str());
    assert_eq!(revs[1]["file_name"], "hello.sh");
    assert_eq!(revs[1]["config"], "k=v");
    assert_ne!(revs[1]["checksum"], sha_v2.as_str());
    // Revisions page too.
    let page = h
        .get(&format!("codes/{id}/revisions?per_page=1&page=1"))
        .json();
    assert_eq!(page["revisions"][0]["rev"], 1);
    let past = h
        .get(&format!("codes/{id}/revisions?per_page=1&page=5"))
        .json();
    assert_eq!(past["revisions"], json!([]));

    // A new image-form revision of the same name has no package: the
    // older ones stay downloadable.
    let r = h.post_json("codes", &json!({"name": "classic", "image": "busybox"}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_error(&h.get(&format!("codes/{id}/download")), 404, "no package");
    let r = h.get(&format!("codes/{id}/download?revision=2"));
    assert_eq!(r.body, v2);
}

fn code_listing_pages(h: &Harness) {
    let mut expected = Vec::new();
    for i in 0..5 {
        expected.push(h.image_code(&format!("code-{i}")));
    }
    let all = h.all_codes();
    assert_eq!(all.len(), 5);
    let mut got = ids(&json!(all));
    got.sort();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(got, want);
    // Default per_page is 30; pages of 2 cover all five once.
    let mut seen = Vec::new();
    for page in 0..3 {
        let r = h.get(&format!("codes?per_page=2&page={page}"));
        assert_eq!(r.status, 200);
        let list = r.json()["codes"].as_array().unwrap().clone();
        assert_eq!(list.len(), if page < 2 { 2 } else { 1 });
        seen.extend(ids(&json!(list)));
    }
    seen.sort();
    assert_eq!(seen, want);
    assert_eq!(h.get("codes?per_page=2&page=3").json()["codes"], json!([]));
    assert_eq!(h.get("codes?page=100").json()["codes"], json!([]));
    assert_error(&h.get("codes?per_page=101"), 400, "per_page");
    assert_error(&h.get("codes?per_page=0"), 400, "per_page");
    assert_error(&h.get("codes?page=-1"), 400, "page");
    assert_error(&h.get("codes?page=one"), 400, "page");
}

fn stats_pause_resume_and_delete(h: &Harness) {
    let id = h.image_code("counted");
    let other = h.image_code("other");
    let tasks = h.queue("counted", &["a", "b", "c"]);
    h.queue("other", &["x"]);
    let r = h.post(
        &format!("tasks/{}/cancel", tasks[0]),
        "application/json",
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());

    let stats = h.get(&format!("codes/{id}/stats"));
    assert_eq!(stats.status, 200);
    assert_eq!(
        stats.json(),
        json!({"queued": 2, "preparing": 0, "running": 0, "complete": 0, "error": 0,
               "cancelled": 1, "killed": 0, "timeout": 0})
    );

    let r = h.post(
        &format!("codes/{id}/pause_task_queue"),
        "application/json",
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"msg": "Paused"}));
    assert_eq!(h.get(&format!("codes/{id}")).json()["paused"], true);
    // A paused code's tasks are not handed out.
    let claimed = h.claim_all("agent-1");
    assert_eq!(claimed.len(), 1, "only the other code's task is claimable");
    let r = h.post(&format!("codes/{id}/resume_task_queue"), "", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"msg": "Resumed"}));
    assert_eq!(h.get(&format!("codes/{id}")).json()["paused"], false);

    let r = h.delete(&format!("codes/{id}"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"msg": "Deleted"}));
    assert_error(&h.get(&format!("codes/{id}")), 404, "code not found");
    assert_error(&h.delete(&format!("codes/{id}")), 404, "code not found");
    assert_error(&h.get(&format!("codes/{id}/stats")), 404, "code not found");
    assert_error(
        &h.get(&format!("codes/{id}/revisions")),
        404,
        "code not found",
    );
    assert_error(&h.get(&format!("codes/{id}/download")), 404, "not found");
    assert_error(
        &h.post(&format!("codes/{id}/pause_task_queue"), "", b""),
        404,
        "code not found",
    );
    assert_error(
        &h.post(&format!("codes/{id}/resume_task_queue"), "", b""),
        404,
        "code not found",
    );
    // Its queued tasks were cancelled; the other code is untouched.
    let task = h.get(&format!("tasks/{}", tasks[1])).json();
    assert_eq!(task["status"], "cancelled");
    assert_eq!(h.all_codes().len(), 1);
    assert_eq!(h.all_codes()[0]["id"], other.as_str());
    assert_error(
        &h.get("codes/000000000000000000000000"),
        404,
        "code not found",
    );
}

/// Uploads that must be refused with `status`, a msg mentioning `needle`,
/// and nothing stored.
fn refused(h: &Harness, data: serde_json::Value, zip: Option<&[u8]>, status: u16, needle: &str) {
    let r = h.upload(&data, zip);
    assert_error(&r, status, needle);
}

fn bad_uploads_store_nothing(h: &Harness) {
    h.stack("sh");
    h.stack("python");
    let zip = zip_of(&[("hello.sh", b"echo hi\n")]);
    // Malformed JSON, in either form.
    let r = h.post("codes", "application/json", b"{\"name\": ");
    assert_error(&r, 400, "malformed JSON");
    let (ct, body) = multipart(&[Part::field("data", "{not json")]);
    assert_error(&h.post("codes", &ct, &body), 400, "malformed JSON");
    // Malformed multipart: no boundary, garbage, missing data part,
    // unknown or repeated parts.
    assert_error(
        &h.post("codes", "multipart/form-data", b"garbage"),
        400,
        "multipart",
    );
    assert_error(
        &h.post("codes", "multipart/form-data; boundary=xyz", b"garbage"),
        400,
        "multipart",
    );
    let (ct, body) = multipart(&[Part::file("file", "c.zip", "application/zip", zip.clone())]);
    assert_error(&h.post("codes", &ct, &body), 400, "no \"data\" part");
    let (ct, body) = multipart(&[
        Part::field("data", json!({"name": "x", "image": "busybox"}).to_string()),
        Part::field("extra", "1"),
    ]);
    assert_error(&h.post("codes", &ct, &body), 400, "extra");
    let (ct, body) = multipart(&[
        Part::field("data", json!({"name": "x", "image": "busybox"}).to_string()),
        Part::field("data", json!({"name": "y", "image": "busybox"}).to_string()),
    ]);
    assert_error(&h.post("codes", &ct, &body), 400, "twice");
    // Wrong or missing content type.
    assert_error(&h.post("codes", "text/plain", b"{}"), 415, "multipart");
    let r = h.raw("POST", &h.path("codes"), &[], b"{}");
    assert_error(&r, 415, "multipart");
    // Bad data.
    refused(h, json!([1]), None, 400, "object");
    refused(h, json!({"image": "busybox"}), None, 400, "name");
    refused(
        h,
        json!({"name": "", "image": "busybox"}),
        None,
        400,
        "name",
    );
    refused(
        h,
        json!({"name": "a\"b", "image": "busybox"}),
        None,
        400,
        "name",
    );
    refused(
        h,
        json!({"name": "x".repeat(256), "image": "busybox"}),
        None,
        400,
        "name",
    );
    refused(
        h,
        json!({"name": 5, "image": "busybox"}),
        None,
        400,
        "data.name must be a string",
    );
    refused(
        h,
        json!({"name": "x", "image": "busybox", "colour": 5, "retries": "2"}),
        None,
        400,
        "retries",
    );
    refused(
        h,
        json!({"name": "x", "image": "Not An Image"}),
        None,
        400,
        "image",
    );
    refused(
        h,
        json!({"name": "x", "image": "busybox", "stack": "busybox"}),
        None,
        400,
        "synonyms",
    );
    refused(h, json!({"name": "x"}), None, 400, "image");
    refused(
        h,
        json!({"name": "x", "image": "busybox", "retries": 11}),
        None,
        400,
        "retries",
    );
    refused(
        h,
        json!({"name": "x", "image": "busybox", "retries": "2"}),
        None,
        400,
        "retries",
    );
    refused(
        h,
        json!({"name": "x", "image": "busybox", "retries_delay": 86401}),
        None,
        400,
        "retries_delay",
    );
    refused(
        h,
        json!({"name": "x", "image": "busybox", "default_priority": 3}),
        None,
        400,
        "default_priority",
    );
    refused(
        h,
        json!({"name": "x", "image": "busybox", "max_concurrency": -2}),
        None,
        400,
        "max_concurrency",
    );
    refused(
        h,
        json!({"name": "x", "image": "busybox", "max_concurrency": 1.5}),
        None,
        400,
        "max_concurrency",
    );
    refused(
        h,
        json!({"name": "x", "image": "busybox", "command": "echo 'open"}),
        None,
        400,
        "command",
    );
    refused(
        h,
        json!({"name": "x", "image": "busybox", "command": "   "}),
        None,
        400,
        "command",
    );
    refused(
        h,
        json!({"name": "x", "image": "busybox", "config": 5}),
        None,
        400,
        "config",
    );
    refused(
        h,
        json!({"name": "x", "image": "busybox", "env_vars": {"A": 1}}),
        None,
        400,
        "env_vars.A",
    );
    refused(
        h,
        json!({"name": "x", "image": "busybox", "env_vars": {"A=B": "1"}}),
        None,
        400,
        "env_vars",
    );
    refused(
        h,
        json!({"name": "x", "image": "busybox", "env_vars": ["A"]}),
        None,
        400,
        "env_vars",
    );
    // Classic form.
    refused(
        h,
        json!({"name": "x", "runtime": "cobol", "file_name": "hello.sh"}),
        Some(&zip),
        400,
        "known runtimes: python, sh",
    );
    refused(
        h,
        json!({"name": "x", "runtime": "sh"}),
        Some(&zip),
        400,
        "file_name",
    );
    refused(
        h,
        json!({"name": "x", "runtime": "sh", "file_name": "hello.sh"}),
        None,
        400,
        "zip",
    );
    refused(
        h,
        json!({"name": "x", "runtime": "sh", "file_name": "missing.sh"}),
        Some(&zip),
        400,
        "missing.sh",
    );
    refused(
        h,
        json!({"name": "x", "runtime": "sh", "file_name": "hello.sh", "image": "busybox"}),
        Some(&zip),
        400,
        "not both",
    );
    refused(
        h,
        json!({"name": "x", "runtime": "sh", "file_name": "hello.sh", "command": "x"}),
        Some(&zip),
        400,
        "command",
    );

    assert!(h.all_codes().is_empty(), "a refused upload stored a code");
}

fn bad_zips_store_nothing(h: &Harness) {
    h.stack("sh");
    let data = json!({"name": "x", "runtime": "sh", "file_name": "hello.sh"});
    refused(
        h,
        data.clone(),
        Some(b"this is not a zip"),
        400,
        "not a valid zip",
    );
    let traversal = zip_of(&[("hello.sh", b"x"), ("../evil", b"x")]);
    refused(h, data.clone(), Some(&traversal), 400, "'..'");
    let nested = zip_of(&[("hello.sh", b"x"), ("a/../../evil", b"x")]);
    refused(h, data.clone(), Some(&nested), 400, "'..'");
    let absolute = zip_of(&[("hello.sh", b"x"), ("/etc/evil", b"x")]);
    refused(h, data.clone(), Some(&absolute), 400, "absolute");
    refused(
        h,
        data.clone(),
        Some(&zip_with_symlink()),
        400,
        "symbolic link",
    );
    let backslash = zip_of(&[("hello.sh", b"x"), ("..\\evil", b"x")]);
    refused(h, data.clone(), Some(&backslash), 400, "backslash");
    let duplicate = zip_of(&[("hello.sh", b"x"), ("./hello.sh", b"y")]);
    refused(h, data.clone(), Some(&duplicate), 400, "twice");
    // file_name naming a directory is not a file.
    let dir = zip_of(&[("hello.sh/", b""), ("hello.sh/x", b"x")]);
    refused(h, data.clone(), Some(&dir), 400, "hello.sh");
    // Truncated archive.
    let good = zip_of(&[("hello.sh", b"echo hi\n")]);
    refused(h, data.clone(), Some(&good[..good.len() / 2]), 400, "zip");
    // Corrupted content (CRC mismatch) is found by decompressing.
    let mut corrupt = zip_of(&[("hello.sh", &[b'a'; 4096])]);
    // The first local header: its data follows the name and extra field.
    let u16_at = |z: &[u8], at: usize| u16::from_le_bytes([z[at], z[at + 1]]) as usize;
    let data_start = 30 + u16_at(&corrupt, 26) + u16_at(&corrupt, 28);
    corrupt[data_start + 2] ^= 0xff;
    let r = h.upload(&data, Some(&corrupt));
    assert_eq!(r.status, 400, "{}", r.text());
    // Too many entries.
    let names: Vec<String> = (0..10_001).map(|i| format!("f{i}")).collect();
    let mut files: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b""[..])).collect();
    files.push(("hello.sh", b"x"));
    let many = zip_of(&files);
    assert!(many.len() <= h.config.max_package_bytes);
    refused(h, data.clone(), Some(&many), 400, "entries");
    assert!(h.all_codes().is_empty(), "a refused zip stored a code");
}

fn oversized_uploads_are_413(h: &Harness) {
    h.stack("sh");
    let data = json!({"name": "big", "runtime": "sh", "file_name": "hello.sh"});
    // A package over max_package_bytes (incompressible content, stored).
    let mut noise = Vec::with_capacity(h.config.max_package_bytes + 1024);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while noise.len() < h.config.max_package_bytes + 1024 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        noise.extend_from_slice(&x.to_le_bytes());
    }
    let big = zip_of(&[("hello.sh", b"x"), ("noise", &noise)]);
    assert!(big.len() > h.config.max_package_bytes);
    let r = h.upload(&data, Some(&big));
    assert_error(&r, 413, "larger than");
    // A zip bomb: small, but expands past 4 × max_package_bytes.
    let zeros = vec![0u8; 4 * h.config.max_package_bytes + 1];
    let bomb = zip_of(&[("hello.sh", b"x"), ("zeros", &zeros)]);
    assert!(bomb.len() < h.config.max_package_bytes);
    let r = h.upload(&data, Some(&bomb));
    assert_error(&r, 413, "expands");
    // A JSON body over max_json_bytes.
    let huge =
        json!({"name": "big", "image": "busybox", "config": "x".repeat(h.config.max_json_bytes)});
    let r = h.post_json("codes", &huge);
    assert_error(&r, 413, "larger than");
    assert!(h.all_codes().is_empty());
}

/// The Node client (iron_worker 0.1.8) uploads with a `content_type` that
/// IronWorker never documented: the upload is stored and the field named
/// in a `Warning` header.
fn client_fields_are_accepted_and_unknown_ones_reported(h: &Harness) {
    h.stack("sh");
    let zip = zip_of(&[("__runner__.sh", b"echo hi\n")]);
    let r = h.upload(
        &json!({"name": "node-worker", "file_name": "__runner__.sh", "runtime": "sh",
                "content_type": "text/plain"}),
        Some(&zip),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        warnings(&r),
        vec![r#"299 - "unknown field \"data.content_type\"""#]
    );
    assert_eq!(h.all_codes().len(), 1);
}
