//! Hostile and malformed archives: each is refused as invalid_archive with
//! the store left exactly as it was, and nothing is written outside the
//! layer. Some archives are only odd, not hostile (absolute names, symlinks
//! whose targets resolve inside the layer): those import, safely.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use tar::EntryType;

/// An env with an image already imported (so "store unchanged" is tested
/// against a non-empty store) and an empty sandbox dir on the host.
fn env_with_sandbox() -> (Env, std::path::PathBuf) {
    let env = Env::new();
    env.import_bytes("existing:1", &tar(&base_rootfs()))
        .unwrap();
    let sandbox = env.path("sandbox");
    fs::create_dir(&sandbox).unwrap();
    (env, sandbox)
}

fn assert_empty(dir: &Path) {
    assert_eq!(
        tree(dir),
        Vec::<String>::new(),
        "something was written to {}",
        dir.display()
    );
}

#[test]
fn dotdot_escape_is_refused() {
    let (env, _) = env_with_sandbox();
    for name in [
        "../evil",
        "a/../../evil",
        "./../../../../../../tmp/evil",
        "/../evil",
    ] {
        let mut entries = base_rootfs();
        entries.push(E::file(name, "pwned"));
        let msg = env.expect_refused(&tar(&entries));
        assert!(msg.contains(name) && msg.contains("escapes"), "{msg}");
    }
    assert!(!env.path("evil").exists());
}

#[test]
fn dotdot_escape_in_second_docker_layer_leaves_no_trace() {
    let (env, _) = env_with_sandbox();
    let good = tar(&[E::dir("opt/"), E::file("opt/fine", "ok")]);
    let bad = tar(&[E::file("../../escape", "x")]);
    let archive = docker_save(&[good, bad], "two:1");
    let msg = env.expect_refused(&archive.tar);
    assert!(msg.contains("layer 2 of 2"), "{msg}");
}

#[test]
fn absolute_paths_are_stripped_into_the_layer() {
    let (env, sandbox) = env_with_sandbox();
    let abs = format!("{}/abs-file", sandbox.display());
    let entries = vec![
        E::file("/etc/abs-config", "inside"),
        E::file(&abs, "inside too"),
    ];
    env.import_bytes("abs:1", &tar(&entries)).unwrap();
    let layer = env.single_layer("abs:1");
    assert_eq!(
        fs::read_to_string(layer.join("etc/abs-config")).unwrap(),
        "inside"
    );
    assert_eq!(
        fs::read_to_string(layer.join(abs.trim_start_matches('/'))).unwrap(),
        "inside too"
    );
    assert_empty(&sandbox);
}

#[test]
fn write_through_symlink_to_host_writes_nothing_outside() {
    let (env, sandbox) = env_with_sandbox();
    let target = sandbox.join("somewhere");
    fs::create_dir(&target).unwrap();
    // evil -> /<host path>/somewhere, then evil/pwned. The host directory
    // exists, but inside the layer the symlink resolves to nothing.
    let entries = vec![
        E::symlink("evil", target.to_str().unwrap()),
        E::file("evil/pwned", "x"),
    ];
    let msg = env.expect_refused(&tar(&entries));
    assert!(
        msg.contains("evil/pwned") && msg.contains("does not exist in the layer"),
        "{msg}"
    );
    assert!(!target.join("pwned").exists());
    assert_eq!(fs::read_dir(&target).unwrap().count(), 0);
}

#[test]
fn write_through_symlink_resolves_inside_the_layer() {
    let (env, sandbox) = env_with_sandbox();
    let host_dir = sandbox.join("host");
    fs::create_dir(&host_dir).unwrap();
    let unique = format!("berth-pwned-{}", std::process::id());
    let entries = vec![
        E::dir("tmp/"),
        // Absolute target: resolves to <layer>/tmp, never the host's /tmp.
        E::symlink("abs", "/tmp"),
        E::file(format!("abs/{unique}"), "via absolute"),
        // Relative target climbing far above the root: clamped at the root.
        E::symlink("up", "../../../../../../../../.."),
        E::file(format!("up{}/{unique}", host_dir.display()), "via dotdot"),
        E::symlink("root", "/"),
        E::file("root/etc-like", "via root"),
    ];
    env.import_bytes("links:1", &tar(&entries)).unwrap();
    let layer = env.single_layer("links:1");
    assert_eq!(
        fs::read_to_string(layer.join("tmp").join(&unique)).unwrap(),
        "via absolute"
    );
    assert!(!Path::new("/tmp").join(&unique).exists());
    let inside = layer
        .join(host_dir.strip_prefix("/").unwrap())
        .join(&unique);
    assert_eq!(fs::read_to_string(inside).unwrap(), "via dotdot");
    assert_eq!(
        fs::read_to_string(layer.join("etc-like")).unwrap(),
        "via root"
    );
    assert_empty(&host_dir);
    // The symlinks themselves are kept as written, for the container.
    assert_eq!(fs::read_link(layer.join("abs")).unwrap(), Path::new("/tmp"));
}

#[test]
fn file_replacing_a_symlink_does_not_write_through_it() {
    let (env, sandbox) = env_with_sandbox();
    let victim = sandbox.join("victim");
    fs::write(&victim, "original").unwrap();
    let entries = vec![
        E::symlink("f", victim.to_str().unwrap()),
        E::file("f", "replaced"),
        E::symlink("d", sandbox.to_str().unwrap()),
        E::dir("d/"),
        E::file("d/inner", "inside"),
    ];
    env.import_bytes("replace:1", &tar(&entries)).unwrap();
    let layer = env.single_layer("replace:1");
    assert_eq!(fs::read_to_string(layer.join("f")).unwrap(), "replaced");
    assert!(layer.join("d").symlink_metadata().unwrap().is_dir());
    assert_eq!(fs::read_to_string(layer.join("d/inner")).unwrap(), "inside");
    assert_eq!(fs::read_to_string(&victim).unwrap(), "original");
    assert_eq!(tree(&sandbox).len(), 1);
}

#[test]
fn hardlink_escapes_are_refused() {
    let (env, sandbox) = env_with_sandbox();
    let secret = sandbox.join("secret");
    fs::write(&secret, "host secret").unwrap();
    let secret_abs = secret.to_str().unwrap().to_owned();
    let cases: Vec<(Vec<E>, &str)> = vec![
        (
            vec![E::hardlink("link", "../../../../etc/passwd")],
            "outside the layer",
        ),
        (
            vec![E::hardlink("link", &secret_abs)],
            "does not exist in the layer",
        ),
        (
            vec![
                E::symlink("evil", sandbox.to_str().unwrap()),
                E::hardlink("link", "evil/secret"),
            ],
            "does not exist in the layer",
        ),
        (
            vec![E::hardlink("link", "missing")],
            "does not exist in the layer",
        ),
        (
            vec![E::dir("d/"), E::hardlink("link", "d")],
            "is a directory",
        ),
    ];
    for (entries, why) in cases {
        let msg = env.expect_refused(&tar(&entries));
        assert!(msg.contains("\"link\"") && msg.contains(why), "{msg}");
    }
    assert_eq!(fs::metadata(&secret).unwrap().nlink(), 1);
}

#[test]
fn hardlink_to_symlink_links_the_symlink_itself() {
    let (env, sandbox) = env_with_sandbox();
    let entries = vec![
        E::symlink("s", sandbox.join("x").to_str().unwrap()),
        E::hardlink("h", "s"),
        E::file("f", "data"),
        E::hardlink("g", "/f"),
    ];
    env.import_bytes("hl:1", &tar(&entries)).unwrap();
    let layer = env.single_layer("hl:1");
    assert!(layer
        .join("h")
        .symlink_metadata()
        .unwrap()
        .file_type()
        .is_symlink());
    let (f, g) = (
        fs::metadata(layer.join("f")).unwrap(),
        fs::metadata(layer.join("g")).unwrap(),
    );
    assert_eq!(f.ino(), g.ino());
    assert_eq!(f.nlink(), 2);
    assert_empty(&sandbox);
}

#[test]
fn symlink_loops_and_non_directory_parents_are_refused() {
    let (env, _) = env_with_sandbox();
    let msg = env.expect_refused(&tar(&[
        E::symlink("a", "b"),
        E::symlink("b", "a"),
        E::file("a/x", ""),
    ]));
    assert!(
        msg.contains("a/x") && msg.contains("symbolic links"),
        "{msg}"
    );
    let msg = env.expect_refused(&tar(&[E::file("f", ""), E::file("f/x", "")]));
    assert!(msg.contains("not a directory"), "{msg}");
}

#[test]
fn malformed_archives_are_refused() {
    let (env, _) = env_with_sandbox();
    let good = tar(&base_rootfs());

    // Truncated in the middle of a file's data.
    let mut big = base_rootfs();
    big.push(E::file("big", vec![7u8; 100_000]));
    let big = tar(&big);
    let msg = env.expect_refused(&big[..big.len() - 60_000]);
    assert!(
        msg.contains("big") || msg.contains("truncated") || msg.contains("EOF"),
        "{msg}"
    );

    // Truncated in the middle of a header.
    env.expect_refused(&good[..512 + 100]);

    // A header with a bad checksum (garbage that is not a tar at all).
    let msg = env.expect_refused(&vec![0x42u8; 4096]);
    assert!(msg.contains("not a tar archive"), "{msg}");

    // Gzip magic followed by garbage, and truncated gzip.
    let mut bad_gzip = vec![0x1f, 0x8b];
    bad_gzip.extend_from_slice(&[0xff; 64]);
    env.expect_refused(&bad_gzip);
    let gz = gzip(&big);
    env.expect_refused(&gz[..gz.len() / 2]);

    // Corrupted gzip payload (CRC or deflate error) and trailing garbage.
    let mut flipped = gzip(&good);
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0xff;
    env.expect_refused(&flipped);
    let mut trailing = gzip(&good);
    trailing.extend_from_slice(b"garbage after the stream");
    env.expect_refused(&trailing);

    // Zstd magic followed by garbage, and truncated zstd.
    let mut bad_zstd = vec![0x28, 0xb5, 0x2f, 0xfd];
    bad_zstd.extend_from_slice(&[0x00; 64]);
    env.expect_refused(&bad_zstd);
    let zs = zstd(&big);
    env.expect_refused(&zs[..zs.len() / 2]);

    // Unsupported compression and empty files.
    let msg = env.expect_refused(&[0xfd, b'7', b'z', b'X', b'Z', 0, 1, 2, 3]);
    assert!(msg.contains("xz"), "{msg}");
    let msg = env.expect_refused(b"");
    assert!(msg.contains("empty"), "{msg}");
}

#[test]
fn unknown_entry_types_are_refused() {
    let (env, _) = env_with_sandbox();
    let msg = env.expect_refused(&tar(&[E::file("weird", "").kind(EntryType::new(b'Z'))]));
    assert!(
        msg.contains("weird") && msg.contains("unsupported"),
        "{msg}"
    );
}

#[test]
fn bad_whiteouts_are_refused() {
    let (env, _) = env_with_sandbox();
    for name in ["etc/.wh.", "etc/.wh..", "etc/.wh..."] {
        let msg = env.expect_refused(&tar(&[E::dir("etc/"), E::file(name, "")]));
        assert!(msg.contains("whiteout") || msg.contains("escapes"), "{msg}");
    }
}

#[test]
fn nul_and_overlong_names_are_refused() {
    let (env, _) = env_with_sandbox();
    // A PAX path with an embedded NUL (the plain header cannot carry one).
    let msg = env.expect_refused(&tar(&[E::file("x", "").pax("path", b"a\0b")]));
    assert!(msg.contains("NUL"), "{msg}");
    let long = "n".repeat(300);
    env.expect_refused(&tar(&[E::file("x", "").pax("path", long.as_bytes())]));
}

#[test]
fn digest_and_diff_id_mismatches_are_refused() {
    let (env, _) = env_with_sandbox();
    let layer = tar(&[E::file("a", "a")]);
    let other = tar(&[E::file("b", "b")]);

    // Docker archive whose config promises another diff_id.
    let config = image_config(&[sha256(&other)], &["x"]);
    let archive = docker_save_with(std::slice::from_ref(&layer), &config, "m:1");
    let msg = env.expect_refused(&archive.tar);
    assert!(msg.contains("diff_id"), "{msg}");

    // Docker archive whose config file name is not its digest.
    let config = image_config(&[sha256(&layer)], &["x"]);
    let fake = sha256(b"not the config");
    let entries = vec![
        E::file(format!("{fake}.json"), &config),
        E::file(format!("{fake}/layer.tar"), &layer),
        E::file(
            "manifest.json",
            serde_json::json!([{"Config": format!("{fake}.json"), "Layers": [format!("{fake}/layer.tar")]}]).to_string(),
        ),
    ];
    let msg = env.expect_refused(&tar(&entries));
    assert!(msg.contains("digest"), "{msg}");

    // OCI layout whose layer blob was tampered with.
    let mut layout = oci_layout(&[(layer.clone(), Comp::Gzip)], "t");
    let name = format!("blobs/sha256/{}", layout.layer_hexes[0]);
    layout.files.insert(name, gzip(&other));
    let msg = env.expect_refused(&layout.to_tar());
    assert!(msg.contains("digest"), "{msg}");

    // OCI layout whose blob matches its digest but not the config's diff_id.
    let config = image_config(&[sha256(&other)], &["x"]);
    let layout = oci_layout_with(&[(layer.clone(), Comp::Zstd)], &config, "t");
    let dir = env.path("bad-diff-layout");
    layout.write_dir(&dir);
    let before = snapshot(env.store.root());
    let err = env.import("bad:1", &dir).unwrap_err();
    assert!(err.to_string().contains("diff_id"), "{err}");
    assert_eq!(snapshot(env.store.root()), before);

    // OCI manifest tampered with (index digest no longer matches).
    let mut layout = oci_layout(&[(layer, Comp::None)], "t");
    let name = format!("blobs/sha256/{}", layout.manifest_hex);
    let mut manifest = layout.files[&name].clone();
    manifest.push(b' ');
    layout.files.insert(name, manifest);
    let msg = env.expect_refused(&layout.to_tar());
    assert!(msg.contains("manifest") && msg.contains("digest"), "{msg}");
}

#[test]
fn known_layer_claimed_by_a_wrong_blob_is_refused() {
    // The store has layer L; an archive claims L's diff_id for different
    // content. Reuse must not take the claim on trust.
    let (env, _) = env_with_sandbox();
    let real = tar(&base_rootfs());
    env.import_bytes("real:1", &real).unwrap();
    let fake = tar(&[E::file("bin/sh", "malicious")]);
    let config = image_config(&[sha256(&real)], &["x"]);
    let layout = oci_layout_with(&[(fake, Comp::Gzip)], &config, "t");
    let msg = env.expect_refused(&layout.to_tar());
    assert!(msg.contains("diff_id"), "{msg}");
}

#[test]
fn malformed_sparse_files_are_refused() {
    let (env, _) = env_with_sandbox();
    let sparse = |size: &str, map: &str, data: &[u8]| {
        E::file("GNUSparseFile.0/s", data)
            .pax("GNU.sparse.major", "0")
            .pax("GNU.sparse.minor", "1")
            .pax("GNU.sparse.name", "s")
            .pax("GNU.sparse.size", size)
            .pax("GNU.sparse.map", map)
    };
    for (entry, why) in [
        (sparse("10", "0,5,20,5", b"aaaaabbbbb"), "exceeds"),
        (sparse("100", "50,5,0,5", b"aaaaabbbbb"), "out of order"),
        (sparse("100", "0,5,10,5", b"aaaaa"), "ends early"),
        (sparse("100", "0,5", b"aaaaabbbbb"), "more data"),
        (sparse("100", "0,x", b""), "malformed"),
        (
            E::file("s", "")
                .pax("GNU.sparse.offset", "0")
                .pax("GNU.sparse.numbytes", "1"),
            "0.0",
        ),
        (
            sparse("100", "0,5", b"aaaaa").pax("GNU.sparse.name", "../../escape"),
            "escapes",
        ),
    ] {
        let msg = env.expect_refused(&tar(&[entry]));
        assert!(msg.contains(why), "{why}: {msg}");
    }
}

/// Deterministic mutation fuzzing: corrupted archives must import or fail
/// as invalid_archive, never panic, never fail as a host error, never leave
/// staging behind, never write outside the store.
#[test]
fn mutated_archives_fail_cleanly() {
    use berth_core::{ErrorCode, HasErrorCode};
    let (env, sandbox) = env_with_sandbox();
    let mut rootfs = base_rootfs();
    rootfs.push(E::symlink("out", sandbox.to_str().unwrap()));
    rootfs.push(E::hardlink("bin/sh2", "bin/sh"));
    rootfs.push(E::chardev("null", 1, 3));
    rootfs.push(E::file("etc/.wh.os-release", ""));
    let plain = tar(&rootfs);
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("tar", plain.clone()),
        ("gzip", gzip(&plain)),
        ("zstd", zstd(&plain)),
        (
            "docker",
            docker_save(&[plain.clone(), tar(&[E::file("x", "x")])], "f:1").tar,
        ),
        (
            "oci",
            oci_layout(&[(plain.clone(), Comp::Gzip)], "f").to_tar(),
        ),
    ];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut outcomes = [0usize; 2];
    for (kind, seed) in &seeds {
        for round in 0..40 {
            let mut bytes = seed.clone();
            for _ in 0..(1 + next() % 4) {
                let i = (next() % bytes.len() as u64) as usize;
                bytes[i] ^= 1 << (next() % 8);
            }
            if round % 10 == 9 {
                bytes.truncate((next() % bytes.len() as u64) as usize);
            }
            match env.import_bytes("fuzz:1", &bytes) {
                Ok(_) => outcomes[0] += 1,
                Err(e) => {
                    assert_eq!(
                        e.code(),
                        ErrorCode::InvalidArchive,
                        "{kind} round {round}: {e}"
                    );
                    outcomes[1] += 1;
                }
            }
        }
    }
    assert_empty(&sandbox);
    let tmp = env.store.root().join("tmp");
    assert_eq!(fs::read_dir(tmp).unwrap().count(), 0, "staging left behind");
    eprintln!(
        "mutations: {} imported, {} refused",
        outcomes[0], outcomes[1]
    );
    assert!(outcomes[1] > 0);
}
