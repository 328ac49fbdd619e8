//! Unpacked layers: sharing between images, whiteouts in overlayfs form,
//! and faithful metadata (these tests run as root, as CI does).

mod common;

use berth_image::ImportProgress;
use common::*;
use std::ffi::CString;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

fn app_layer(name: &str) -> Vec<u8> {
    tar(&[E::dir("srv/"), E::file(format!("srv/{name}"), name)])
}

#[test]
fn images_on_one_base_share_its_layer_dir() {
    let env = Env::new();
    let base = tar(&base_rootfs());
    let a = docker_save(&[base.clone(), app_layer("a")], "a:1");
    let b = oci_layout(
        &[(base.clone(), Comp::Gzip), (app_layer("b"), Comp::Zstd)],
        "b",
    );
    env.import_bytes("a:1", &a.tar).unwrap();
    let dir = env.path("b-layout");
    b.write_dir(&dir);
    let (_, events) = env.import_logged("b:1", &dir);
    // The base layer was found unpacked (even though this blob is new: it
    // came gzip'd) and not unpacked again; the app layer is new.
    assert!(events.contains(&ImportProgress::LayerDone {
        index: 0,
        reused: true
    }));
    assert!(events.contains(&ImportProgress::LayerDone {
        index: 1,
        reused: false
    }));

    let ra = env.store.resolve(&r("a:1")).unwrap();
    let rb = env.store.resolve(&r("b:1")).unwrap();
    assert_eq!(ra.layers[0], rb.layers[0]);
    assert_ne!(ra.layers[1], rb.layers[1]);
    assert_eq!(env.layer_count(), 3);
}

#[test]
fn importing_again_does_not_unpack_again() {
    let env = Env::new();
    let archive = docker_save(&[tar(&base_rootfs()), app_layer("a")], "a:1");
    let source = env.write("a.tar", &archive.tar);
    env.import("a:1", &source).unwrap();
    let layers = env.store.resolve(&r("a:1")).unwrap().layers;
    let inodes: Vec<u64> = layers
        .iter()
        .map(|l| fs::metadata(l).unwrap().ino())
        .collect();
    let marker_times: Vec<i64> = layers
        .iter()
        .map(|l| fs::metadata(l).unwrap().ctime_nsec())
        .collect();

    let (_, events) = env.import_logged("a:2", &source);
    let done: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, ImportProgress::LayerDone { .. }))
        .collect();
    assert_eq!(
        done,
        vec![
            &ImportProgress::LayerDone {
                index: 0,
                reused: true
            },
            &ImportProgress::LayerDone {
                index: 1,
                reused: true
            }
        ]
    );
    let again = env.store.resolve(&r("a:2")).unwrap().layers;
    assert_eq!(again, layers);
    let inodes2: Vec<u64> = again
        .iter()
        .map(|l| fs::metadata(l).unwrap().ino())
        .collect();
    let times2: Vec<i64> = again
        .iter()
        .map(|l| fs::metadata(l).unwrap().ctime_nsec())
        .collect();
    assert_eq!(inodes, inodes2);
    assert_eq!(marker_times, times2);

    // Same for a rootfs tarball imported twice.
    let rootfs = env.write("root.tar.gz", &gzip(&tar(&base_rootfs())));
    let (_, events) = env.import_logged("root:1", &rootfs);
    assert!(events.contains(&ImportProgress::LayerDone {
        index: 0,
        reused: true
    }));
    assert_eq!(env.layer_count(), 2);
}

fn whiteout_image(env: &Env) -> berth_image::ResolvedImage {
    let lower = tar(&[
        E::dir("etc/"),
        E::file("etc/keep", "keep"),
        E::file("etc/gone", "gone"),
        E::dir("etc/gonedir/"),
        E::file("etc/gonedir/f", "f"),
        E::dir("opq/"),
        E::file("opq/old", "old"),
    ]);
    let upper = tar(&[
        E::dir("etc/"),
        E::file("etc/.wh.gone", ""),
        E::file("etc/.wh.gonedir", ""),
        E::dir("opq/"),
        E::file("opq/.wh..wh..opq", ""),
        E::file("opq/new", "new"),
        // A whiteout in a directory this layer does not otherwise list.
        E::file("var/lib/.wh.x", "").owner(0, 0),
        // AUFS bookkeeping is ignored.
        E::dir(".wh..wh.plnk/"),
    ]);
    env.import_bytes("wh:1", &docker_save(&[lower, upper], "wh:1").tar)
        .unwrap();
    env.store.resolve(&r("wh:1")).unwrap()
}

#[test]
fn whiteouts_are_stored_in_overlayfs_form() {
    let env = Env::new();
    let image = whiteout_image(&env);
    let upper = &image.layers[1];
    for name in ["etc/gone", "etc/gonedir", "var/lib/x"] {
        let meta = fs::symlink_metadata(upper.join(name)).unwrap();
        assert!(meta.file_type().is_char_device(), "{name}");
        assert_eq!(meta.rdev(), 0, "{name}");
    }
    assert!(!upper.join("etc/.wh.gone").exists());
    assert!(!upper.join("opq/.wh..wh..opq").exists());
    assert!(!upper.join(".wh..wh.plnk").exists());
    assert_eq!(
        get_xattr(&upper.join("opq"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        get_xattr(&upper.join("etc"), "trusted.overlay.opaque"),
        None
    );
}

/// Mounts the layers with overlayfs (as the runtime will) to check the
/// whiteouts mean what they should. Skipped where mounting is not allowed.
#[test]
fn whiteouts_work_in_a_real_overlay_mount() {
    let env = Env::new();
    let image = whiteout_image(&env);
    let mnt = env.path("mnt");
    fs::create_dir(&mnt).unwrap();
    // lowerdir lists the top layer first.
    let lower: Vec<String> = image
        .layers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let options = format!("lowerdir={}", lower.join(":"));
    let (src, target, fstype, data) = (
        CString::new("overlay").unwrap(),
        CString::new(mnt.to_str().unwrap()).unwrap(),
        CString::new("overlay").unwrap(),
        CString::new(options).unwrap(),
    );
    // SAFETY: valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            libc::MS_RDONLY,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        eprintln!(
            "skipping: cannot mount overlayfs here: {}",
            std::io::Error::last_os_error()
        );
        return;
    }
    let result = std::panic::catch_unwind(|| {
        assert!(mnt.join("etc/keep").exists());
        assert!(!mnt.join("etc/gone").exists());
        assert!(!mnt.join("etc/gonedir").exists());
        let opq: Vec<_> = fs::read_dir(mnt.join("opq"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(opq, vec!["new"]);
    });
    // SAFETY: unmounting what we mounted above.
    unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    result.unwrap();
}

#[test]
fn metadata_devices_and_setuid_are_preserved() {
    let env = Env::new();
    let entries = vec![
        E::dir("./").mode(0o755),
        E::dir("dev/").mode(0o755),
        E::chardev("dev/null", 1, 3).mode(0o666),
        E::blockdev("dev/loop0", 7, 0).mode(0o660).owner(0, 6),
        E::fifo("dev/initctl").mode(0o600),
        E::dir("bin/").mtime(1_000_000_000),
        E::file("bin/su", "su").mode(0o4755).owner(0, 0),
        E::file("bin/wall", "wall").mode(0o2755).owner(0, 5),
        E::dir("tmp/").mode(0o1777),
        E::file("home-file", "x")
            .mode(0o640)
            .owner(1000, 1001)
            .mtime(1_234_567_890),
        E::file("ping", "ping")
            .mode(0o755)
            .xattr("user.berth", "yes")
            .xattr(
                "security.capability",
                [
                    // VFS_CAP_REVISION_2, effective, CAP_NET_RAW permitted.
                    0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                    0,
                ],
            ),
        E::file("precise", "p").pax("mtime", "1500000000.123456789"),
        E::symlink("link", "bin/su")
            .owner(1000, 1000)
            .mtime(1_100_000_000),
        // Xattrs on nodes without a usable fd; user.* is refused by the
        // kernel on symlinks and skipped with a warning, like Docker does.
        E::symlink("xlink", "bin/su")
            .xattr("trusted.berth", "l")
            .xattr("user.no", "x"),
        E::chardev("dev/xnull", 1, 3).xattr("trusted.berth", "d"),
        E::file("huge-uid", "u")
            .owner(4_000_000, 4_000_001)
            .pax("uid", "4000000")
            .pax("gid", "4000001"),
        E::file("overlay-trick", "t").xattr("trusted.overlay.redirect", "/etc"),
    ];
    env.import_bytes("meta:1", &tar(&entries)).unwrap();
    let l = env.single_layer("meta:1");
    let meta = |p: &str| fs::symlink_metadata(l.join(p)).unwrap();

    let null = meta("dev/null");
    assert!(null.file_type().is_char_device());
    assert_eq!((libc::major(null.rdev()), libc::minor(null.rdev())), (1, 3));
    assert_eq!(null.mode() & 0o7777, 0o666);
    let lp = meta("dev/loop0");
    assert!(lp.file_type().is_block_device());
    assert_eq!((libc::major(lp.rdev()), libc::minor(lp.rdev())), (7, 0));
    assert_eq!(lp.gid(), 6);
    assert!(meta("dev/initctl").file_type().is_fifo());

    assert_eq!(meta("bin/su").mode() & 0o7777, 0o4755);
    assert_eq!(meta("bin/wall").mode() & 0o7777, 0o2755);
    assert_eq!(meta("bin/wall").gid(), 5);
    assert_eq!(meta("tmp").mode() & 0o7777, 0o1777);
    let home = meta("home-file");
    assert_eq!(
        (home.uid(), home.gid(), home.mode() & 0o7777),
        (1000, 1001, 0o640)
    );
    assert_eq!(home.mtime(), 1_234_567_890);
    assert_eq!(meta("precise").mtime(), 1_500_000_000);
    assert_eq!(meta("precise").mtime_nsec(), 123_456_789);
    // Directory mtimes are set after their contents were created.
    assert_eq!(meta("bin").mtime(), 1_000_000_000);
    let link = meta("link");
    assert_eq!(
        (link.uid(), link.gid(), link.mtime()),
        (1000, 1000, 1_100_000_000)
    );
    assert_eq!(
        (meta("huge-uid").uid(), meta("huge-uid").gid()),
        (4_000_000, 4_000_001)
    );

    assert_eq!(
        get_xattr(&l.join("ping"), "user.berth").as_deref(),
        Some(&b"yes"[..])
    );
    assert!(get_xattr(&l.join("ping"), "security.capability").is_some());
    assert_eq!(
        get_xattr(&l.join("overlay-trick"), "trusted.overlay.redirect"),
        None
    );
    assert_eq!(
        get_xattr(&l.join("xlink"), "trusted.berth").as_deref(),
        Some(&b"l"[..])
    );
    assert_eq!(get_xattr(&l.join("xlink"), "user.no"), None);
    assert_eq!(
        get_xattr(&l.join("dev/xnull"), "trusted.berth").as_deref(),
        Some(&b"d"[..])
    );
    assert_eq!(
        fs::metadata(&l).unwrap().permissions().mode() & 0o7777,
        0o755
    );
}

#[test]
fn later_entries_win() {
    let env = Env::new();
    let entries = vec![
        E::file("f", "first"),
        E::file("f", "second").mode(0o600),
        E::dir("d/").mode(0o700),
        E::file("d/inner", "x"),
        E::dir("d/").mode(0o750).owner(1, 2),
        E::dir("was-dir/"),
        E::file("was-dir/child", "c"),
        E::file("was-dir", "now a file"),
        E::file("was-file", ""),
        E::dir("was-file/"),
        E::file("was-file/child", "c"),
        E::symlink("was-link", "/nowhere"),
        E::dir("was-link/"),
    ];
    env.import_bytes("dup:1", &tar(&entries)).unwrap();
    let l = env.single_layer("dup:1");
    assert_eq!(fs::read_to_string(l.join("f")).unwrap(), "second");
    assert_eq!(fs::metadata(l.join("f")).unwrap().mode() & 0o7777, 0o600);
    // An existing directory is kept (with its contents), its metadata updated.
    let d = fs::metadata(l.join("d")).unwrap();
    assert_eq!((d.mode() & 0o7777, d.uid(), d.gid()), (0o750, 1, 2));
    assert!(l.join("d/inner").exists());
    assert_eq!(fs::read_to_string(l.join("was-dir")).unwrap(), "now a file");
    assert!(l.join("was-file/child").exists());
    assert!(fs::symlink_metadata(l.join("was-link")).unwrap().is_dir());
}

#[test]
fn missing_parents_are_created_like_docker() {
    let env = Env::new();
    env.import_bytes("p:1", &tar(&[E::file("a/b/c/file", "deep")]))
        .unwrap();
    let l = env.single_layer("p:1");
    assert_eq!(fs::read_to_string(l.join("a/b/c/file")).unwrap(), "deep");
    for dir in ["a", "a/b", "a/b/c"] {
        assert_eq!(
            fs::metadata(l.join(dir)).unwrap().mode() & 0o7777,
            0o755,
            "{dir}"
        );
    }
}

#[test]
fn layer_dirs_are_not_reachable_by_other_users() {
    let env = Env::new();
    let mode = fs::metadata(env.store.root()).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o700,
        "set-uid files of images must not be reachable by host users"
    );
    assert!(Path::new(&env.store.root().join("oci-layout")).is_file());
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(env.store.root().join("index.json")).unwrap()).unwrap();
    assert_eq!(index["schemaVersion"], 2);
}

fn sparse_1_0(name: &str, real_size: u64, chunks: &[(u64, &[u8])]) -> E {
    let mut map = format!("{}\n", chunks.len());
    for (offset, data) in chunks {
        map.push_str(&format!("{offset}\n{}\n", data.len()));
    }
    let mut data = map.into_bytes();
    data.resize(data.len().div_ceil(512) * 512, 0);
    for (_, chunk) in chunks {
        data.extend_from_slice(chunk);
    }
    E::file(format!("GNUSparseFile.0/{name}"), data)
        .pax("GNU.sparse.major", "1")
        .pax("GNU.sparse.minor", "0")
        .pax("GNU.sparse.name", name)
        .pax("GNU.sparse.realsize", real_size.to_string())
}

#[test]
fn gnu_pax_sparse_files_are_expanded_with_holes() {
    let env = Env::new();
    let v01_data = b"hello1234".to_vec();
    let entries = vec![
        sparse_1_0("v10.img", 4 << 20, &[(0, b"hello"), (3 << 20, b"end")]),
        E::file("GNUSparseFile.0/v01.img", &v01_data)
            .pax("GNU.sparse.major", "0")
            .pax("GNU.sparse.minor", "1")
            .pax("GNU.sparse.name", "v01.img")
            .pax("GNU.sparse.size", "2000000")
            .pax("GNU.sparse.map", "0,5,1999996,4"),
    ];
    env.import_bytes("sparse:1", &tar(&entries)).unwrap();
    let l = env.single_layer("sparse:1");
    assert!(!l.join("GNUSparseFile.0").exists());
    let v10 = fs::read(l.join("v10.img")).unwrap();
    assert_eq!(v10.len(), 4 << 20);
    assert_eq!(&v10[..5], b"hello");
    assert_eq!(&v10[3 << 20..(3 << 20) + 3], b"end");
    assert!(v10[5..3 << 20].iter().all(|b| *b == 0));
    // Holes stay holes.
    assert!(fs::metadata(l.join("v10.img")).unwrap().blocks() < 64);
    let v01 = fs::read(l.join("v01.img")).unwrap();
    assert_eq!(v01.len(), 2_000_000);
    assert_eq!(&v01[..5], b"hello");
    assert_eq!(&v01[1_999_996..], b"1234");
}

#[test]
fn gnu_tar_archives_unpack_like_gnu_tar() {
    // Cross-check against GNU tar itself where it is installed: sparse
    // files, long names, xattrs, hard links, as `tar --xattrs -S` writes them.
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("deep").join("d".repeat(120)).join("e".repeat(120))).unwrap();
    fs::write(
        src.join("deep")
            .join("d".repeat(120))
            .join("e".repeat(120))
            .join("f".repeat(200)),
        "long",
    )
    .unwrap();
    let sparse = fs::File::create(src.join("sparse.img")).unwrap();
    sparse.set_len(8 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"middle", 4 << 20).unwrap();
    fs::write(src.join("file"), "f").unwrap();
    fs::hard_link(src.join("file"), src.join("hard")).unwrap();
    rustix::fs::setxattr(
        src.join("file").as_path(),
        "user.k",
        b"v",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let archive = env.path("gnu.tar");
    let status = std::process::Command::new("tar")
        .args(["--xattrs", "--sparse", "-C"])
        .arg(&src)
        .arg("-cf")
        .arg(&archive)
        .arg(".")
        .status();
    match status {
        Ok(s) if s.success() => {}
        _ => {
            eprintln!("skipping: GNU tar not available");
            return;
        }
    }
    env.import("gnu:1", &archive).unwrap();
    let l = env.single_layer("gnu:1");
    let long = l
        .join("deep")
        .join("d".repeat(120))
        .join("e".repeat(120))
        .join("f".repeat(200));
    assert_eq!(fs::read_to_string(long).unwrap(), "long");
    let img = fs::read(l.join("sparse.img")).unwrap();
    assert_eq!(img.len(), 8 << 20);
    assert_eq!(&img[4 << 20..(4 << 20) + 6], b"middle");
    assert_eq!(
        fs::metadata(l.join("file")).unwrap().ino(),
        fs::metadata(l.join("hard")).unwrap().ino()
    );
    assert_eq!(
        get_xattr(&l.join("file"), "user.k").as_deref(),
        Some(&b"v"[..])
    );
}
