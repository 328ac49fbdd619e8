//! list / inspect / resolve / remove / prune / leases, concurrency and the
//! cost of resolve.

mod common;

use berth_core::{ErrorCode, HasErrorCode};
use berth_image::ImageStore;
use common::*;
use std::fs;
use std::time::Instant;

fn two_layer_env() -> (Env, DockerArchive) {
    let env = Env::new();
    let archive = docker_save(
        &[tar(&base_rootfs()), tar(&[E::file("app", "app")])],
        "app:1",
    );
    env.import_bytes("app:1", &archive.tar).unwrap();
    (env, archive)
}

fn blob_count(env: &Env) -> usize {
    fs::read_dir(env.store.root().join("blobs/sha256"))
        .unwrap()
        .count()
}

#[test]
fn unknown_reference_is_image_not_found() {
    let (env, _) = two_layer_env();
    for op in [
        env.store.resolve(&r("nope:1")).map(|_| ()),
        env.store.inspect(&r("nope:1")).map(|_| ()),
        env.store.remove(&r("nope:1"), false),
        env.store.remove(&r("app:2"), true),
    ] {
        let err = op.unwrap_err();
        assert_eq!(err.code(), ErrorCode::ImageNotFound);
        assert!(err.to_string().contains(":"), "{err}");
    }
}

#[test]
fn resolve_returns_layers_bottom_first() {
    let (env, archive) = two_layer_env();
    let resolved = env.store.resolve(&r("app:1")).unwrap();
    assert_eq!(resolved.id, format!("sha256:{}", archive.config_hex));
    let names: Vec<String> = resolved
        .layers
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, archive.diff_ids);
    assert!(resolved.layers[0].join("bin/sh").exists());
    assert!(resolved.layers[1].join("app").exists());
    assert!(resolved
        .layers
        .iter()
        .all(|p| p.starts_with(env.store.root().join("layers"))));
    // It serialises for --json and for the runtime's state files.
    let json = serde_json::to_string(&resolved).unwrap();
    let back: berth_image::ResolvedImage = serde_json::from_str(&json).unwrap();
    assert_eq!(back, resolved);
}

#[test]
fn list_and_inspect() {
    let (env, archive) = two_layer_env();
    env.import_bytes("base:latest", &tar(&base_rootfs()))
        .unwrap();
    let list = env.store.list().unwrap();
    let refs: Vec<String> = list.iter().map(|s| s.reference.to_string()).collect();
    assert_eq!(refs, vec!["app:1", "base:latest"]);
    assert_eq!(list[0].layers, 2);
    assert_eq!(list[0].id, format!("sha256:{}", archive.config_hex));
    assert!(list[0].size_bytes > 0);
    assert_eq!(list[1].layers, 1);

    let details = env.store.inspect(&r("app:1")).unwrap();
    assert_eq!(details.layers.len(), 2);
    assert_eq!(
        details.layers[0].diff_id,
        format!("sha256:{}", archive.diff_ids[0])
    );
    assert_eq!(details.size_bytes, list[0].size_bytes);
    assert_eq!(details.architecture, HOST_ARCH);
    let json = serde_json::to_value(&details).unwrap();
    assert_eq!(json["reference"], "app:1");
    assert_eq!(
        json["layers"][1]["diff_id"],
        format!("sha256:{}", archive.diff_ids[1])
    );

    // Other OCI tools' view: index.json carries the tag as ref.name.
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(env.store.root().join("index.json")).unwrap()).unwrap();
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&"app:1") && names.contains(&"base:latest"));
}

#[test]
fn remove_then_prune_frees_layers_and_blobs() {
    let (env, _) = two_layer_env();
    env.import_bytes("base:1", &tar(&base_rootfs())).unwrap();
    assert_eq!(env.layer_count(), 2);
    // Nothing unreferenced yet.
    let report = env.store.prune().unwrap();
    assert_eq!((report.blobs_removed, report.layers_removed), (0, 0));

    env.store.remove(&r("app:1"), false).unwrap();
    assert_eq!(
        env.store.resolve(&r("app:1")).unwrap_err().code(),
        ErrorCode::ImageNotFound
    );
    // The base layer is still used by base:1; the app layer is not.
    let blobs_before = blob_count(&env);
    let report = env.store.prune().unwrap();
    assert_eq!(report.layers_removed, 1);
    // app's manifest, config and app-layer blob; the base-layer blob stays
    // (base:1 uses the same uncompressed tar as its blob).
    assert_eq!(report.blobs_removed, 3);
    assert_eq!(blob_count(&env), blobs_before - 3);
    assert!(report.bytes_freed > 0);
    assert_eq!(env.layer_count(), 1);
    env.store.resolve(&r("base:1")).unwrap();

    env.store.remove(&r("base:1"), false).unwrap();
    let report = env.store.prune().unwrap();
    assert_eq!(report.layers_removed, 1);
    assert_eq!(env.layer_count(), 0);
    assert_eq!(blob_count(&env), 0);
    assert!(env.store.list().unwrap().is_empty());
}

#[test]
fn leases_keep_layers_and_block_remove() {
    let (env, _) = two_layer_env();
    let resolved = env.store.resolve(&r("app:1")).unwrap();
    env.store.lease("c1", &resolved).unwrap();
    env.store.lease("c2", &resolved).unwrap();
    assert_eq!(env.store.lease_holders().unwrap(), vec!["c1", "c2"]);

    let err = env.store.remove(&r("app:1"), false).unwrap_err();
    assert_eq!(err.code(), ErrorCode::ImageInUse);
    assert!(err.to_string().contains("c1, c2"), "{err}");
    env.store.resolve(&r("app:1")).unwrap();

    // Another tag of the same image can go: the image stays tagged.
    let source = env.write(
        "again.tar",
        &docker_save(&[tar(&base_rootfs()), tar(&[E::file("app", "app")])], "x").tar,
    );
    env.import("app:alias", &source).unwrap();
    env.store.remove(&r("app:alias"), false).unwrap();

    // Forced removal untags; prune keeps the leased layers.
    env.store.remove(&r("app:1"), true).unwrap();
    let report = env.store.prune().unwrap();
    assert_eq!(report.layers_removed, 0);
    for layer in &resolved.layers {
        assert!(
            layer.join(".").is_dir(),
            "{} pruned while leased",
            layer.display()
        );
    }

    env.store.release("c1").unwrap();
    env.store.release("c1").unwrap(); // unknown holder: fine
    assert_eq!(env.store.prune().unwrap().layers_removed, 0);
    env.store.release("c2").unwrap();
    assert!(env.store.lease_holders().unwrap().is_empty());
    assert_eq!(env.store.prune().unwrap().layers_removed, 2);
    assert_eq!(env.layer_count(), 0);
}

#[test]
fn lease_arguments_are_checked() {
    let (env, _) = two_layer_env();
    let resolved = env.store.resolve(&r("app:1")).unwrap();
    for bad in ["", "../x", "a/b", ".hidden"] {
        assert_eq!(
            env.store.lease(bad, &resolved).unwrap_err().code(),
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            env.store.release(bad).unwrap_err().code(),
            ErrorCode::InvalidArgument
        );
    }
    let mut foreign = resolved.clone();
    foreign.layers[0] = "/etc".into();
    assert_eq!(
        env.store.lease("c1", &foreign).unwrap_err().code(),
        ErrorCode::InvalidArgument
    );
    assert!(env.store.lease_holders().unwrap().is_empty());
}

#[test]
fn leasing_a_pruned_image_fails() {
    let (env, _) = two_layer_env();
    let resolved = env.store.resolve(&r("app:1")).unwrap();
    env.store.remove(&r("app:1"), false).unwrap();
    env.store.prune().unwrap();
    assert_eq!(
        env.store.lease("late", &resolved).unwrap_err().code(),
        ErrorCode::StoreCorrupt
    );
}

#[test]
fn damaged_store_is_store_corrupt() {
    let (env, archive) = two_layer_env();
    // A layer directory vanishes.
    let layer = env.store.root().join("layers").join(&archive.diff_ids[1]);
    fs::rename(&layer, env.path("stolen")).unwrap();
    let err = env.store.resolve(&r("app:1")).unwrap_err();
    assert_eq!(err.code(), ErrorCode::StoreCorrupt);
    assert!(err.to_string().contains(&archive.diff_ids[1]), "{err}");
    assert!(!env.store.inspect(&r("app:1")).unwrap().layers[1].unpacked);
    fs::rename(env.path("stolen"), &layer).unwrap();

    // The config blob is garbled.
    let config = env
        .store
        .root()
        .join("blobs/sha256")
        .join(&archive.config_hex);
    fs::write(&config, b"{not json").unwrap();
    assert_eq!(
        env.store.resolve(&r("app:1")).unwrap_err().code(),
        ErrorCode::StoreCorrupt
    );
    // A damaged image can still be removed.
    env.store.remove(&r("app:1"), false).unwrap();

    // index.json itself.
    fs::write(env.store.root().join("index.json"), b"[]").unwrap();
    assert_eq!(
        env.store.list().unwrap_err().code(),
        ErrorCode::StoreCorrupt
    );
}

#[test]
fn prune_removes_leftovers_of_crashed_imports() {
    let (env, _) = two_layer_env();
    let tmp = env.store.root().join("tmp");
    fs::create_dir_all(tmp.join("import-1-dead-0/layers/abc/etc")).unwrap();
    fs::write(tmp.join("import-1-dead-0/layers/abc/etc/f"), b"12345").unwrap();
    fs::write(tmp.join("write-1-dead-1"), b"half an index").unwrap();
    let report = env.store.prune().unwrap();
    assert_eq!(report.staging_removed, 2);
    assert!(report.bytes_freed >= 5 + 13);
    assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
    env.store.resolve(&r("app:1")).unwrap();
}

#[test]
fn reopening_finds_everything() {
    let (env, archive) = two_layer_env();
    let again = ImageStore::open(&env.path("data")).unwrap();
    assert_eq!(again.root(), env.store.root());
    assert_eq!(
        again.resolve(&r("app:1")).unwrap().id,
        format!("sha256:{}", archive.config_hex)
    );
}

#[test]
fn concurrent_imports_lose_no_tag() {
    let env = Env::new();
    let data = env.path("data");
    let sources: Vec<_> = (0..6)
        .map(|i| {
            let mut entries = base_rootfs();
            entries.push(E::file(format!("./id-{i}"), format!("{i}")));
            env.write(&format!("src-{i}.tar"), &tar(&entries))
        })
        .collect();
    std::thread::scope(|scope| {
        for (i, source) in sources.iter().enumerate() {
            let data = data.clone();
            scope.spawn(move || {
                // A separate store handle per thread, as separate processes have.
                let store = ImageStore::open(&data).unwrap();
                store
                    .import(&r(&format!("img:{i}")), source, &mut |_| {})
                    .unwrap();
            });
        }
        scope.spawn(|| {
            for _ in 0..5 {
                env.store.prune().unwrap();
            }
        });
    });
    let list = env.store.list().unwrap();
    assert_eq!(list.len(), 6);
    for i in 0..6 {
        let layer = env.single_layer(&format!("img:{i}"));
        assert_eq!(
            fs::read_to_string(layer.join(format!("id-{i}"))).unwrap(),
            i.to_string()
        );
    }
    assert_eq!(env.store.prune().unwrap().layers_removed, 0);
}

#[test]
fn resolve_is_cheap() {
    let (env, _) = two_layer_env();
    let reference = r("app:1");
    for _ in 0..100 {
        env.store.resolve(&reference).unwrap();
    }
    let rounds = 2000;
    let start = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(env.store.resolve(&reference).unwrap());
    }
    let per_call = start.elapsed() / rounds;
    eprintln!("resolve (warm, 2 layers): {per_call:?} per call");
    // Generous bound: debug builds on a loaded CI machine; release is ~10x faster.
    assert!(per_call.as_micros() < 5_000, "resolve took {per_call:?}");
}
