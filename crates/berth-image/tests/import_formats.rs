//! Every source format the store imports, sniffed by content.

mod common;

use berth_core::{ErrorCode, HasErrorCode};
use berth_image::{ImportProgress, SourceFormat};
use common::*;
use std::fs;

fn check_rootfs_image(env: &Env, reference: &str) {
    let resolved = env.store.resolve(&r(reference)).unwrap();
    assert_eq!(resolved.layers.len(), 1);
    let layer = &resolved.layers[0];
    assert_eq!(fs::read(layer.join("bin/sh")).unwrap(), b"#!shell");
    assert_eq!(
        fs::read_to_string(layer.join("etc/os-release")).unwrap(),
        "ID=berth-test\n"
    );
    assert_eq!(
        fs::read_link(layer.join("usr")).unwrap().to_str(),
        Some(".")
    );
    assert_eq!(
        resolved.config.env,
        vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    );
    assert!(resolved.config.cmd.is_empty());
    assert!(resolved.config.entrypoint.is_empty());
    let details = env.store.inspect(&r(reference)).unwrap();
    assert_eq!(details.os, "linux");
    assert_eq!(details.architecture, HOST_ARCH);
    assert!(details.created.is_some());
}

#[test]
fn plain_tar_rootfs() {
    let env = Env::new();
    let source = env.write("rootfs.tar", &tar(&base_rootfs()));
    let (summary, events) = env.import_logged("base:1", &source);
    assert_eq!(summary.layers, 1);
    assert!(summary.id.starts_with("sha256:"));
    assert!(events.contains(&ImportProgress::Started {
        format: SourceFormat::RootfsTarball,
        layers: 1
    }));
    assert_eq!(
        events.last(),
        Some(&ImportProgress::LayerDone {
            index: 0,
            reused: false
        })
    );
    check_rootfs_image(&env, "base:1");
    let details = env.store.inspect(&r("base:1")).unwrap();
    assert_eq!(details.layers[0].media_type, Comp::None.media_type());
}

#[test]
fn gzip_rootfs_sniffed_not_named() {
    let env = Env::new();
    // Misleading name: the content decides.
    let source = env.write("rootfs.tar", &gzip(&tar(&base_rootfs())));
    env.import("base:gz", &source).unwrap();
    check_rootfs_image(&env, "base:gz");
    let details = env.store.inspect(&r("base:gz")).unwrap();
    assert_eq!(details.layers[0].media_type, Comp::Gzip.media_type());
    // The diff_id is the digest of the uncompressed tar.
    assert_eq!(
        details.layers[0].diff_id,
        format!("sha256:{}", sha256(&tar(&base_rootfs())))
    );
}

#[test]
fn zstd_rootfs() {
    let env = Env::new();
    let source = env.write("rootfs.tar.zst", &zstd(&tar(&base_rootfs())));
    env.import("base:zst", &source).unwrap();
    check_rootfs_image(&env, "base:zst");
    let details = env.store.inspect(&r("base:zst")).unwrap();
    assert_eq!(details.layers[0].media_type, Comp::Zstd.media_type());
}

#[test]
fn same_rootfs_in_three_compressions_shares_one_layer() {
    let env = Env::new();
    let rootfs = tar(&base_rootfs());
    env.import_bytes("a:1", &rootfs).unwrap();
    env.import_bytes("a:2", &gzip(&rootfs)).unwrap();
    env.import_bytes("a:3", &zstd(&rootfs)).unwrap();
    assert_eq!(env.layer_count(), 1);
    let l1 = env.single_layer("a:1");
    assert_eq!(l1, env.single_layer("a:2"));
    assert_eq!(l1, env.single_layer("a:3"));
}

fn two_layers() -> (Vec<u8>, Vec<u8>) {
    let base = tar(&base_rootfs());
    let app = tar(&[
        E::dir("etc/"),
        E::file("etc/app.conf", "port=80\n"),
        E::file("etc/os-release", "ID=app\n"),
        E::dir("srv/"),
    ]);
    (base, app)
}

fn check_two_layer_image(env: &Env, reference: &str) {
    let resolved = env.store.resolve(&r(reference)).unwrap();
    assert_eq!(resolved.layers.len(), 2);
    // Bottom first.
    assert!(resolved.layers[0].join("bin/sh").exists());
    assert!(!resolved.layers[0].join("etc/app.conf").exists());
    assert_eq!(
        fs::read_to_string(resolved.layers[1].join("etc/app.conf")).unwrap(),
        "port=80\n"
    );
    assert_eq!(
        fs::read_to_string(resolved.layers[1].join("etc/os-release")).unwrap(),
        "ID=app\n"
    );
    let c = &resolved.config;
    assert_eq!(c.env, vec!["PATH=/bin", "GREETING=hello"]);
    assert_eq!(c.entrypoint, vec!["/bin/sh", "-c"]);
    assert_eq!(c.working_dir.as_deref(), Some("/srv"));
    assert_eq!(c.user.as_deref(), Some("1000:1000"));
    let details = env.store.inspect(&r(reference)).unwrap();
    assert_eq!(details.labels["org.example"], "yes");
    assert_eq!(details.created.as_deref(), Some("2024-01-02T03:04:05Z"));
    for (layer, path) in details.layers.iter().zip(&resolved.layers) {
        assert_eq!(&layer.path, path);
        assert!(layer.unpacked);
    }
}

#[test]
fn docker_save_legacy_two_layers() {
    let env = Env::new();
    let (base, app) = two_layers();
    let archive = docker_save(&[base.clone(), app.clone()], "app:v1");
    let source = env.write("app.tar", &archive.tar);
    let (summary, events) = env.import_logged("app:v1", &source);
    assert!(events.contains(&ImportProgress::Started {
        format: SourceFormat::DockerArchive,
        layers: 2
    }));
    // The config is kept byte for byte: the id is Docker's image id.
    assert_eq!(summary.id, format!("sha256:{}", archive.config_hex));
    assert_eq!(summary.layers, 2);
    assert_eq!(summary.size_bytes, (base.len() + app.len()) as u64);
    check_two_layer_image(&env, "app:v1");
    assert_eq!(
        env.store.resolve(&r("app:v1")).unwrap().config.cmd,
        vec!["echo hi"]
    );
    let resolved = env.store.resolve(&r("app:v1")).unwrap();
    assert!(resolved.layers[0].ends_with(&archive.diff_ids[0]));
    assert!(resolved.layers[1].ends_with(&archive.diff_ids[1]));
}

#[test]
fn gzipped_docker_save() {
    let env = Env::new();
    let (base, app) = two_layers();
    let archive = docker_save(&[base, app], "app:v1");
    env.import_bytes("app:gz", &gzip(&archive.tar)).unwrap();
    check_two_layer_image(&env, "app:gz");
}

#[test]
fn docker_save_with_repeated_layer_linked() {
    // Docker links a repeated layer.tar to the first copy.
    let env = Env::new();
    let empty = tar(&[]);
    let (base, _) = two_layers();
    let diff_ids = vec![sha256(&base), sha256(&empty), sha256(&empty)];
    let config = image_config(&diff_ids, &["x"]);
    let config_hex = sha256(&config);
    let (a, b, c) = (sha256(b"a"), sha256(b"b"), sha256(b"c"));
    let entries = vec![
        E::file(format!("{config_hex}.json"), &config),
        E::dir(format!("{a}/")),
        E::file(format!("{a}/layer.tar"), &base),
        E::dir(format!("{b}/")),
        E::file(format!("{b}/layer.tar"), &empty),
        E::dir(format!("{c}/")),
        E::symlink(format!("{c}/layer.tar"), format!("../{b}/layer.tar")),
        E::file(
            "manifest.json",
            serde_json::json!([{"Config": format!("{config_hex}.json"), "RepoTags": ["x:1"],
                "Layers": [format!("{a}/layer.tar"), format!("{b}/layer.tar"), format!("{c}/layer.tar")]}])
            .to_string(),
        ),
    ];
    env.import_bytes("x:1", &tar(&entries)).unwrap();
    let resolved = env.store.resolve(&r("x:1")).unwrap();
    // The repeated (empty) layer is listed once, at its topmost position.
    assert_eq!(resolved.layers.len(), 2);
    assert_eq!(env.store.inspect(&r("x:1")).unwrap().layers.len(), 3);
    assert_eq!(env.layer_count(), 2);
}

#[test]
fn oci_layout_directory_two_layers() {
    let env = Env::new();
    let (base, app) = two_layers();
    let layout = oci_layout(&[(base, Comp::Gzip), (app, Comp::Zstd)], "v1");
    let dir = env.path("layout");
    layout.write_dir(&dir);
    let (summary, events) = env.import_logged("app:oci", &dir);
    assert!(events.contains(&ImportProgress::Started {
        format: SourceFormat::OciLayout,
        layers: 2
    }));
    assert_eq!(summary.id, format!("sha256:{}", layout.config_hex));
    check_two_layer_image(&env, "app:oci");
    // The manifest is kept byte for byte.
    let details = env.store.inspect(&r("app:oci")).unwrap();
    assert_eq!(
        details.manifest_digest,
        format!("sha256:{}", layout.manifest_hex)
    );
    assert_eq!(details.layers[0].media_type, Comp::Gzip.media_type());
    assert_eq!(details.layers[1].media_type, Comp::Zstd.media_type());
    assert!(env
        .store
        .root()
        .join("blobs/sha256")
        .join(&layout.manifest_hex)
        .is_file());
}

#[test]
fn oci_layout_tar_two_layers() {
    let env = Env::new();
    let (base, app) = two_layers();
    let layout = oci_layout(&[(base, Comp::None), (app, Comp::Gzip)], "v1");
    let source = env.write("layout.tar", &layout.to_tar());
    let (summary, events) = env.import_logged("app:ocitar", &source);
    assert!(events.contains(&ImportProgress::Started {
        format: SourceFormat::OciArchive,
        layers: 2
    }));
    assert!(events
        .iter()
        .any(|e| matches!(e, ImportProgress::Reading { .. })));
    assert_eq!(summary.id, format!("sha256:{}", layout.config_hex));
    check_two_layer_image(&env, "app:ocitar");
}

#[test]
fn docker25_save_with_oci_layout_and_manifest_json() {
    let env = Env::new();
    let (base, app) = two_layers();
    let mut layout = oci_layout(&[(base, Comp::None), (app, Comp::None)], "latest");
    let manifest_json = serde_json::json!([{
        "Config": format!("blobs/sha256/{}", layout.config_hex),
        "RepoTags": ["app:latest"],
        "Layers": layout.layer_hexes.iter().map(|h| format!("blobs/sha256/{h}")).collect::<Vec<_>>(),
    }]);
    layout.files.insert(
        "manifest.json".into(),
        manifest_json.to_string().into_bytes(),
    );
    layout.files.insert("repositories".into(), b"{}".to_vec());
    // Docker writes names without "./".
    let entries: Vec<E> = layout.files.iter().map(|(n, b)| E::file(n, b)).collect();
    env.import_bytes("app:d25", &tar(&entries)).unwrap();
    check_two_layer_image(&env, "app:d25");
    let details = env.store.inspect(&r("app:d25")).unwrap();
    assert_eq!(
        details.manifest_digest,
        format!("sha256:{}", layout.manifest_hex)
    );
}

#[test]
fn docker_manifest_json_pointing_into_blobs_without_index() {
    let env = Env::new();
    let (base, app) = two_layers();
    let layout = oci_layout(&[(base, Comp::Gzip), (app, Comp::None)], "latest");
    let manifest_json = serde_json::json!([{
        "Config": format!("blobs/sha256/{}", layout.config_hex),
        "RepoTags": ["app:latest"],
        "Layers": layout.layer_hexes.iter().map(|h| format!("blobs/sha256/{h}")).collect::<Vec<_>>(),
    }]);
    let mut entries: Vec<E> = layout
        .files
        .iter()
        .filter(|(n, _)| n.starts_with("blobs/"))
        .map(|(n, b)| E::file(n, b))
        .collect();
    entries.push(E::file("manifest.json", manifest_json.to_string()));
    env.import_bytes("app:mj", &tar(&entries)).unwrap();
    check_two_layer_image(&env, "app:mj");
}

#[test]
fn oci_index_picks_host_platform_through_nested_index() {
    let env = Env::new();
    let (base, app) = two_layers();
    let mut layout = oci_layout(&[(base.clone(), Comp::Gzip), (app, Comp::Gzip)], "unused");
    // A second image for another platform, whose blobs are absent (as in
    // a containerd `docker save` of one platform of a multi-arch image).
    let other_arch = if HOST_ARCH == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    let host_manifest = serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": format!("sha256:{}", layout.manifest_hex),
        "size": layout.files[&format!("blobs/sha256/{}", layout.manifest_hex)].len(),
        "platform": {"architecture": HOST_ARCH, "os": "linux"},
    });
    let nested = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": format!("sha256:{}", "0".repeat(64)), "size": 123,
             "platform": {"architecture": other_arch, "os": "linux"}},
            host_manifest,
            {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": format!("sha256:{}", "1".repeat(64)), "size": 77,
             "platform": {"architecture": "unknown", "os": "unknown"}},
        ],
    }))
    .unwrap();
    let nested_hex = layout.add_blob(&nested);
    layout.files.insert(
        "index.json".into(),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": format!("sha256:{nested_hex}"), "size": nested.len(),
                "annotations": {"org.opencontainers.image.ref.name": "multi:1"}}],
        }))
        .unwrap(),
    );
    let source = env.write("multi.tar", &gzip(&layout.to_tar()));
    env.import("multi:1", &source).unwrap();
    check_two_layer_image(&env, "multi:1");
}

#[test]
fn reimport_replaces_the_tag() {
    let env = Env::new();
    let first = env.import_bytes("app:v1", &tar(&base_rootfs())).unwrap();
    let mut other = base_rootfs();
    other.push(E::file("./new", "x"));
    let second = env.import_bytes("app:v1", &tar(&other)).unwrap();
    assert_ne!(first.id, second.id);
    let list = env.store.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, second.id);
    assert!(env.single_layer("app:v1").join("new").exists());
}

#[test]
fn missing_source_is_invalid_argument() {
    let env = Env::new();
    let err = env.import("a:1", &env.path("nope.tar")).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert!(err.to_string().contains("nope.tar"), "{err}");
}

#[test]
fn directory_that_is_not_a_layout_is_refused() {
    let env = Env::new();
    let dir = env.path("empty-dir");
    fs::create_dir(&dir).unwrap();
    let err = env.import("a:1", &dir).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArchive);
    assert!(err.to_string().contains("index.json"), "{err}");
}

#[test]
fn foreign_os_image_is_refused() {
    let env = Env::new();
    let layer = tar(&base_rootfs());
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "windows",
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha256(&layer))]},
    }))
    .unwrap();
    let archive = docker_save_with(&[layer], &config, "w:1");
    let msg = env.expect_refused(&archive.tar);
    assert!(msg.contains("windows"), "{msg}");
}
