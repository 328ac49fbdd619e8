//! Helpers shared by berth's integration tests: unique names, a busybox root
//! file system, and the checks that a test left nothing behind.
//!
//! Used only as a dev-dependency. It must not depend on any berth crate, so
//! that every crate's tests can use it without a cycle.

pub mod flood;
pub mod http;
pub mod postgres;
pub mod tmpfs;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique across parallel tests and test processes.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The static busybox (Debian's busybox-static) that test images are made of.
pub fn busybox_binary() -> PathBuf {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("busybox-static is required for berth's tests (scripts/ensure-deps.sh installs it)");
}

/// busybox's applet names (without `busybox` itself).
pub fn busybox_applets() -> Vec<String> {
    // The host's busybox lists them: exec'ing a fresh copy can race with
    // concurrently cloned children that still hold its write fd.
    let out = std::process::Command::new(busybox_binary())
        .arg("--list")
        .output()
        .expect("busybox --list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|a| *a != "busybox")
        .map(String::from)
        .collect()
}

/// The passwd and group files of every test image.
pub const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home/nobody:/bin/false\n";
pub const GROUP: &str = "root:x:0:\nstaff:x:50:nobody\nnogroup:x:65534:\n";

/// Builds a minimal busybox root file system as one layer directory.
pub fn make_busybox_layer(root: &Path) {
    use std::os::unix::fs::symlink;
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "root"] {
        std::fs::create_dir_all(root.join(d)).expect("create layer dir");
    }
    std::fs::copy(busybox_binary(), root.join("bin/busybox")).expect("copy busybox");
    for applet in busybox_applets() {
        let _ = symlink("busybox", root.join("bin").join(applet));
    }
    std::fs::write(root.join("etc/passwd"), PASSWD).expect("write passwd");
    std::fs::write(root.join("etc/group"), GROUP).expect("write group");
}

/// Cgroup directories left below `parent` in any hierarchy.
pub fn leftover_cgroups(parent: &str) -> Vec<PathBuf> {
    let mut left = vec![];
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return left;
    };
    for h in hierarchies.flatten() {
        if let Ok(children) = std::fs::read_dir(h.path().join(parent)) {
            left.extend(
                children
                    .flatten()
                    .filter(|c| c.path().is_dir())
                    .map(|c| c.path()),
            );
        }
    }
    left
}

/// Removes the (empty) cgroup parent `parent` from every hierarchy.
pub fn remove_cgroup_parent(parent: &str) {
    if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
        for h in hierarchies.flatten() {
            let _ = std::fs::remove_dir(h.path().join(parent));
        }
    }
}

/// Mount points at or below `dir` in this process's mount table.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let root = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|mp| *mp == root || mp.starts_with(&format!("{root}/")))
        .map(String::from)
        .collect()
}

/// Detaches every mount at or below `dir`, deepest first: a test's last
/// word, after a failure or a `kill -9` left a mount the code under test
/// would have removed (e.g. the agent's state tmpfs), so that the temp dir
/// can go.
pub fn unmount_under(dir: &Path) {
    let mut mounts = mounts_under(dir);
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for mount in mounts {
        let _ = std::process::Command::new("umount")
            .args(["--lazy", &mount])
            .status();
    }
}
