use super::*;
use crate::model::RuntimeDefaults;
use berth_core::{ErrorCode, HasErrorCode, ImageRef};
use std::path::{Path, PathBuf};

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                      nobody:x:65534:65534:nobody:/home/nobody:/bin/false\n\
                      app:x:1000:1000::/srv/app:/bin/sh\n\
                      broken line\n";
const GROUP: &str = "root:x:0:\n\
                     users:x:100:app,nobody\n\
                     wheel:x:10:app\n\
                     app:x:1000:\n\
                     nogroup:x:65534:\n";

fn image(layers: Vec<PathBuf>, config: RuntimeDefaults) -> ResolvedImage {
    ResolvedImage {
        reference: ImageRef::parse("test:latest").expect("a valid reference"),
        id: format!("sha256:{}", "0".repeat(64)),
        layers,
        config,
    }
}

/// A layer directory holding `files` (relative path, contents).
fn layer(parent: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = parent.join(name);
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn with_users(tmp: &Path) -> Vec<PathBuf> {
    vec![layer(
        tmp,
        "base",
        &[("etc/passwd", PASSWD), ("etc/group", GROUP)],
    )]
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn defaults(entrypoint: &[&str], cmd: &[&str]) -> RuntimeDefaults {
    RuntimeDefaults {
        env: strings(&["PATH=/bin", "A=1"]),
        entrypoint: strings(entrypoint),
        cmd: strings(cmd),
        working_dir: None,
        user: None,
    }
}

fn args(img: &ResolvedImage, o: LaunchOverrides) -> Vec<String> {
    img.launch(&o).unwrap().args
}

fn assert_invalid(result: Result<Launch, ImageError>, needle: &str) {
    let err = result.expect_err("launch should fail");
    assert_eq!(err.code(), ErrorCode::InvalidArgument, "{err}");
    assert!(err.to_string().contains(needle), "{err}");
}

#[test]
fn entrypoint_and_cmd_follow_dockers_rules() {
    let img = image(vec![], defaults(&["/entry", "-x"], &["default"]));
    assert_eq!(
        args(&img, LaunchOverrides::default()),
        ["/entry", "-x", "default"]
    );
    // A command replaces cmd only.
    let o = LaunchOverrides {
        command: strings(&["mine", "1"]),
        ..Default::default()
    };
    assert_eq!(args(&img, o), ["/entry", "-x", "mine", "1"]);
    // A new entrypoint drops the image's cmd...
    let o = LaunchOverrides {
        entrypoint: Some(strings(&["/other"])),
        ..Default::default()
    };
    assert_eq!(args(&img, o), ["/other"]);
    // ...and takes a given command after it.
    let o = LaunchOverrides {
        entrypoint: Some(strings(&["/other"])),
        command: strings(&["arg"]),
        ..Default::default()
    };
    assert_eq!(args(&img, o), ["/other", "arg"]);
    // No entrypoint, as an empty list or as Docker's [""].
    for none in [vec![], strings(&[""])] {
        let o = LaunchOverrides {
            entrypoint: Some(none),
            command: strings(&["sh"]),
            ..Default::default()
        };
        assert_eq!(args(&img, o), ["sh"]);
    }
}

#[test]
fn no_command_at_all_is_refused() {
    let img = image(vec![], defaults(&[], &[]));
    assert_invalid(
        img.launch(&LaunchOverrides::default()),
        "image test:latest has no default command",
    );
    // Removing the entrypoint also removes the cmd, leaving nothing.
    let img = image(vec![], defaults(&["/entry"], &["x"]));
    let o = LaunchOverrides {
        entrypoint: Some(vec![]),
        ..Default::default()
    };
    assert_invalid(img.launch(&o), "no command given");
}

#[test]
fn env_overrides_replace_image_values() {
    let image_env = strings(&["PATH=/bin", "A=1"]);
    let env = merge_env(&image_env, &strings(&["A=2", "B=3", "C="])).unwrap();
    assert_eq!(env, ["PATH=/bin", "A=2", "B=3", "C="]);
    // A value may itself contain '='.
    let env = merge_env(&image_env, &strings(&["PATH=a=b"])).unwrap();
    assert_eq!(env, ["A=1", "PATH=a=b"]);
}

#[test]
fn bad_env_entries_are_refused() {
    let img = image(vec![], defaults(&[], &["true"]));
    for (entry, why) in [
        ("=x", "empty variable name"),
        ("NOEQUALS", "expected KEY=VALUE"),
        ("", "expected KEY=VALUE"),
    ] {
        let o = LaunchOverrides {
            env: strings(&[entry]),
            ..Default::default()
        };
        assert_invalid(img.launch(&o), why);
    }
}

#[test]
fn home_is_the_users_unless_set() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(with_users(tmp.path()), defaults(&[], &["true"]));
    let launch = img.launch(&LaunchOverrides::default()).unwrap();
    assert_eq!(launch.env, ["PATH=/bin", "A=1", "HOME=/root"]);
    let o = LaunchOverrides {
        user: Some("app".into()),
        ..Default::default()
    };
    assert!(img
        .launch(&o)
        .unwrap()
        .env
        .contains(&"HOME=/srv/app".into()));
    // Set by the caller (or the image): kept, and not added twice.
    let o = LaunchOverrides {
        user: Some("app".into()),
        env: strings(&["HOME=/elsewhere"]),
        ..Default::default()
    };
    let env = img.launch(&o).unwrap().env;
    assert_eq!(env.iter().filter(|e| e.starts_with("HOME=")).count(), 1);
    assert!(env.contains(&"HOME=/elsewhere".into()));
}

#[test]
fn working_dir_defaults_to_the_images_then_root() {
    let mut config = defaults(&[], &["true"]);
    let img = image(vec![], config.clone());
    assert_eq!(img.launch(&LaunchOverrides::default()).unwrap().cwd, "/");
    config.working_dir = Some("/app".into());
    let img = image(vec![], config);
    assert_eq!(img.launch(&LaunchOverrides::default()).unwrap().cwd, "/app");
    let o = LaunchOverrides {
        working_dir: Some("/tmp".into()),
        ..Default::default()
    };
    assert_eq!(img.launch(&o).unwrap().cwd, "/tmp");
    // An empty override means "not set", as in Docker.
    let o = LaunchOverrides {
        working_dir: Some(String::new()),
        ..Default::default()
    };
    assert_eq!(img.launch(&o).unwrap().cwd, "/app");
}

/// (uid, gid, additional gids) for `user` (or the image's `image_user`).
fn ids(layers: &[PathBuf], image_user: Option<&str>, user: Option<&str>) -> (u32, u32, Vec<u32>) {
    let mut config = defaults(&[], &["true"]);
    config.user = image_user.map(String::from);
    let o = LaunchOverrides {
        user: user.map(String::from),
        ..Default::default()
    };
    let l = image(layers.to_vec(), config).launch(&o).unwrap();
    (l.uid, l.gid, l.additional_gids)
}

#[test]
fn users_resolve_by_name_uid_and_group() {
    let tmp = tempfile::tempdir().unwrap();
    let layers = with_users(tmp.path());
    assert_eq!(ids(&layers, None, None), (0, 0, vec![]));
    // By name: primary group from passwd, others from group membership.
    assert_eq!(ids(&layers, None, Some("app")), (1000, 1000, vec![100, 10]));
    // By uid: the same entry when there is one...
    assert_eq!(
        ids(&layers, None, Some("1000")),
        (1000, 1000, vec![100, 10])
    );
    // ...and gid = uid without one.
    assert_eq!(ids(&layers, None, Some("4242")), (4242, 4242, vec![]));
    // Groups by name or gid; the primary group is not repeated.
    assert_eq!(ids(&layers, None, Some("app:users")), (1000, 100, vec![10]));
    assert_eq!(ids(&layers, None, Some("nobody:7")), (65534, 7, vec![100]));
    assert_eq!(ids(&layers, None, Some("5:6")), (5, 6, vec![]));
    // The image's user, unless overridden; an empty override means root.
    assert_eq!(
        ids(&layers, Some("nobody"), None),
        (65534, 65534, vec![100])
    );
    assert_eq!(ids(&layers, Some("nobody"), Some("app:app")).0, 1000);
    assert_eq!(ids(&layers, Some("nobody"), Some("")), (0, 0, vec![]));
}

#[test]
fn numeric_user_without_passwd_entry_gets_home_slash() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(with_users(tmp.path()), defaults(&[], &["true"]));
    let o = LaunchOverrides {
        user: Some("4242".into()),
        ..Default::default()
    };
    assert!(img.launch(&o).unwrap().env.contains(&"HOME=/".into()));
}

#[test]
fn unknown_users_and_groups_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(with_users(tmp.path()), defaults(&[], &["true"]));
    let launch = |user: &str| {
        img.launch(&LaunchOverrides {
            user: Some(user.into()),
            ..Default::default()
        })
    };
    assert_invalid(
        launch("ghost"),
        "user \"ghost\" is not in the image's /etc/passwd",
    );
    assert_invalid(
        launch("app:ghosts"),
        "group \"ghosts\" is not in the image's /etc/group",
    );
    // Without the files, only numbers work.
    let bare = image(
        vec![layer(tmp.path(), "bare", &[])],
        defaults(&[], &["true"]),
    );
    let o = LaunchOverrides {
        user: Some("app".into()),
        ..Default::default()
    };
    assert_invalid(bare.launch(&o), "not in the image's /etc/passwd");
    let o = LaunchOverrides {
        user: Some("7:8".into()),
        ..Default::default()
    };
    assert_eq!(bare.launch(&o).unwrap().uid, 7);
}

#[test]
fn the_topmost_layer_with_the_file_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let mut layers = with_users(tmp.path());
    layers.push(layer(
        tmp.path(),
        "middle",
        &[("etc/passwd", "app:x:2000:2000::/new:/bin/sh\n")],
    ));
    layers.push(layer(tmp.path(), "top", &[("usr/bin/tool", "")]));
    // passwd from the middle layer, group still from the base.
    assert_eq!(ids(&layers, None, Some("app")), (2000, 2000, vec![100, 10]));
}

#[test]
fn symlinks_resolve_inside_the_layer() {
    let tmp = tempfile::tempdir().unwrap();
    // A file on the "host", outside the layer, that a link points at.
    let host = tmp.path().join("host-passwd");
    std::fs::write(&host, "evil:x:6666:6666::/:/bin/sh\n").unwrap();
    // Absolute, and relative with enough `..` to leave the layer: both stay
    // inside it (where there is no such file).
    let relative = PathBuf::from("../..").join("host-passwd");
    for (name, target) in [
        ("absolute", host.as_path()),
        ("relative", relative.as_path()),
    ] {
        let escaping = layer(tmp.path(), name, &[]);
        std::fs::create_dir_all(escaping.join("etc")).unwrap();
        std::os::unix::fs::symlink(target, escaping.join("etc/passwd")).unwrap();
        assert!(std::fs::read_to_string(escaping.join("etc/passwd")).is_ok());
        let img = image(vec![escaping], defaults(&[], &["true"]));
        let o = LaunchOverrides {
            user: Some("evil".into()),
            ..Default::default()
        };
        assert_invalid(img.launch(&o), "not in the image's /etc/passwd");
    }

    // An absolute link is followed as the container would: inside the layer.
    let linked = layer(
        tmp.path(),
        "linked",
        &[("srv/passwd", "svc:x:77:78::/srv:/bin/sh\n")],
    );
    std::fs::create_dir_all(linked.join("etc")).unwrap();
    std::os::unix::fs::symlink("/srv/passwd", linked.join("etc/passwd")).unwrap();
    assert_eq!(ids(&[linked], None, Some("svc")), (77, 78, vec![]));
}

#[test]
fn only_regular_files_are_read() {
    let tmp = tempfile::tempdir().unwrap();
    let base = with_users(tmp.path()).remove(0);
    // A FIFO in a layer above: opening it for reading would block forever;
    // it is skipped, and the file below is used (nothing is read from it).
    let top = layer(tmp.path(), "top", &[]);
    std::fs::create_dir_all(top.join("etc")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        top.join("etc/passwd"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    assert_eq!(ids(&[base, top], None, Some("app")).0, 1000);
}
