//! `berth image …` end to end, and images as containers see them.

mod common;
use common::{add_busybox_rootfs, dir_entry, file_entry, sha256_hex, tar_bytes, Berth};
use std::path::{Path, PathBuf};

/// Writes a legacy `docker save` archive with the given layer tars.
fn docker_save(dir: &Path, tag: &str, layers: &[Vec<u8>], cmd: &[&str]) -> PathBuf {
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| format!("sha256:{}", sha256_hex(l)))
        .collect();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2026-01-01T00:00:00Z",
        "config": { "Env": ["PATH=/bin", "FROM_IMAGE=yes"], "Cmd": cmd, "WorkingDir": "/tmp" },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_name = format!("{}.json", sha256_hex(&config_bytes));
    let layer_names: Vec<String> = layers
        .iter()
        .map(|l| format!("{}/layer.tar", sha256_hex(l)))
        .collect();
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": [tag],
        "Layers": layer_names,
    }]);
    let archive = tar_bytes(|b| {
        file_entry(
            b,
            "manifest.json",
            &serde_json::to_vec(&manifest).unwrap(),
            0o644,
        );
        file_entry(b, &config_name, &config_bytes, 0o644);
        for (name, layer) in layer_names.iter().zip(layers) {
            dir_entry(b, name.trim_end_matches("/layer.tar"), 0o755);
            file_entry(b, name, layer, 0o644);
        }
    });
    let path = dir.join(format!("{}.tar", common::unique("save")));
    std::fs::write(&path, archive).unwrap();
    path
}

fn base_layer() -> Vec<u8> {
    tar_bytes(|b| {
        add_busybox_rootfs(b);
        file_entry(b, "a.txt", b"base a\n", 0o644);
        dir_entry(b, "dir", 0o755);
        file_entry(b, "dir/x", b"x\n", 0o644);
        file_entry(b, "dir/y", b"y\n", 0o644);
        dir_entry(b, "keep", 0o755);
        file_entry(b, "keep/one", b"1\n", 0o644);
    })
}

#[test]
fn layered_images_apply_whiteouts_and_opaque_dirs() {
    let b = Berth::new();
    let top = tar_bytes(|b| {
        file_entry(b, ".wh.a.txt", b"", 0o644);
        dir_entry(b, "dir", 0o755);
        file_entry(b, "dir/.wh..wh..opq", b"", 0o644);
        file_entry(b, "dir/z", b"z\n", 0o644);
        dir_entry(b, "keep", 0o755);
        file_entry(b, "keep/two", b"2\n", 0o644);
    });
    let archive = docker_save(
        b.dir.path(),
        "app:1",
        &[base_layer(), top],
        &["sh", "-c", "echo default-cmd"],
    );
    let out = b.run(&["image", "import", "app:1", archive.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);

    let out = b.run(&[
        "run",
        "app:1",
        "sh",
        "-c",
        "ls /a.txt 2>&1; ls /dir; ls /keep; echo $FROM_IMAGE; pwd",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].contains("No such file"),
        "whiteout not applied: {}",
        out.stdout
    );
    assert_eq!(
        &lines[1..],
        ["z", "one", "two", "yes", "/tmp"],
        "{}",
        out.stdout
    );
    // No arguments: the image's default command runs.
    assert_eq!(b.run(&["run", "app:1"]).stdout, "default-cmd\n");

    let inspect = b.run(&["image", "inspect", "app:1"]);
    let details: serde_json::Value = serde_json::from_str(&inspect.stdout).unwrap();
    assert_eq!(details["layers"].as_array().unwrap().len(), 2);
    b.assert_clean();
}

#[test]
fn images_on_one_base_share_its_layer() {
    let b = Berth::new();
    let base = base_layer();
    let one = tar_bytes(|b| file_entry(b, "one.txt", b"1", 0o644));
    let two = tar_bytes(|b| file_entry(b, "two.txt", b"2", 0o644));
    for (tag, top) in [("app:one", one), ("app:two", two)] {
        let archive = docker_save(b.dir.path(), tag, &[base.clone(), top], &["true"]);
        let out = b.run(&["image", "import", tag, archive.to_str().unwrap()]);
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    let layers = std::fs::read_dir(b.data_dir().join("images/layers"))
        .unwrap()
        .count();
    assert_eq!(layers, 3, "base unpacked once plus two diffs");
    assert_eq!(b.run(&["run", "app:one", "cat", "/one.txt"]).stdout, "1");
    assert_eq!(b.run(&["run", "app:two", "cat", "/two.txt"]).stdout, "2");
    b.assert_clean();
}

#[test]
fn hostile_archives_are_refused_and_change_nothing() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let before = b.store_listing();
    let escape = tar_bytes(|b| {
        file_entry(b, "ok.txt", b"fine", 0o644);
        // The tar builder refuses "..", so write the name into the header by hand.
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..13].copy_from_slice(b"../escape.txt");
        h.set_size(4);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, &b"evil"[..]).unwrap();
    });
    let truncated = {
        let mut t = base_layer();
        t.truncate(t.len() / 2);
        t
    };
    for (name, bytes) in [
        ("escape.tar", escape),
        ("truncated.tar", truncated),
        ("garbage.tar", b"not an archive at all".to_vec()),
    ] {
        let path = b.dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let out = b.run(&["image", "import", "--json", "evil", path.to_str().unwrap()]);
        assert_eq!(out.code, 125, "{name} accepted: {}", out.stdout);
        assert_eq!(
            out.error_code(),
            "invalid_archive",
            "{name}: {}",
            out.stdout
        );
        assert_eq!(b.store_listing(), before, "{name} changed the store");
    }
    assert!(!b.dir.path().join("escape.txt").exists());
    let out = b.run(&["image", "ls", "--json"]);
    let images: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(images.as_array().unwrap().len(), 1);
}

#[test]
fn ls_rm_and_prune_manage_the_store() {
    let b = Berth::new();
    b.import_busybox("busybox:1");
    b.import_busybox("busybox:2");
    let out = b.run(&["image", "ls"]);
    assert!(out.stdout.starts_with("NAME"), "{}", out.stdout);
    assert_eq!(out.stdout.lines().count(), 3, "{}", out.stdout);

    let out = b.run(&["image", "rm", "busybox:1"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // Still used by busybox:2: prune keeps the layer.
    let out = b.run(&["image", "prune", "--json"]);
    assert_eq!(out.json()["layers_removed"], 0);
    assert_eq!(b.run(&["run", "busybox:2", "true"]).code, 0);

    let out = b.run(&["image", "rm", "--json", "busybox:2"]);
    assert_eq!(out.code, 0);
    let out = b.run(&["image", "prune", "--json"]);
    assert_eq!(out.json()["layers_removed"], 1, "{}", out.stdout);
    let out = b.run(&["run", "--json", "busybox:2", "true"]);
    assert_eq!(out.error_code(), "image_not_found");
    let out = b.run(&["image", "rm", "--json", "nothing:here"]);
    assert_eq!(out.error_code(), "image_not_found");
}

#[test]
fn a_running_container_keeps_its_image() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let child = b.spawn_running(&[
        "run",
        "busybox",
        "sh",
        "-c",
        "sleep 1; cat /etc/passwd | head -1",
    ]);
    let out = b.run(&["image", "rm", "--json", "busybox"]);
    assert_eq!(out.error_code(), "image_in_use", "{}", out.stdout);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "root:x:0:0:root:/root:/bin/sh\n"
    );
    assert_eq!(b.run(&["image", "rm", "busybox"]).code, 0);
    b.assert_clean();
}

#[test]
fn a_fifo_as_etc_passwd_does_not_hang_user_lookup() {
    let b = Berth::new();
    let layer = tar_bytes(|t| {
        add_busybox_rootfs(t);
        // Replace /etc/passwd by a FIFO (the later entry wins).
        let mut h = common::header(tar::EntryType::Fifo, 0o644, 0);
        t.append_data(&mut h, "etc/passwd", std::io::empty())
            .unwrap();
    });
    let archive = docker_save(b.dir.path(), "fifo:1", &[layer], &["true"]);
    assert_eq!(
        b.run(&["image", "import", "fifo:1", archive.to_str().unwrap()])
            .code,
        0
    );
    let started = std::time::Instant::now();
    let out = b.run(&["run", "--json", "--user", "nobody", "fifo:1", "true"]);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(out.error_code(), "invalid_argument", "{}", out.stdout);
    // Numeric ids need no lookup.
    assert_eq!(
        b.run(&["run", "--user", "1000:1000", "fifo:1", "true"])
            .code,
        0
    );
    b.assert_clean();
}
