//! Shared helpers for the runtime's integration tests: a busybox layer on
//! disk, a runtime rooted in a private temp dir, and spec builders.
#![allow(dead_code)]

use berth_core::ContainerId;
use berth_runtime::{ContainerSpec, Limits, ProcessSpec, RootfsSpec, Runtime, RuntimeConfig};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A test environment: a busybox layer and a runtime with its own
/// containers dir and cgroup parent, removed on drop.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub runtime: Runtime,
    pub layer: PathBuf,
    cgroup_parent: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn busybox() -> PathBuf {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("busybox-static is required for the runtime tests (scripts/ensure-deps.sh installs it)");
}

/// Builds a minimal busybox root file system as one layer directory.
pub fn make_busybox_layer(root: &Path) {
    use std::os::unix::fs::symlink;
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "root"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(busybox(), root.join("bin/busybox")).unwrap();
    let out = std::process::Command::new(root.join("bin/busybox"))
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        if applet != "busybox" {
            let _ = symlink("busybox", root.join("bin").join(applet));
        }
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("berth-rt-test")
            .tempdir_in("/var/tmp")
            .unwrap();
        let layer = dir.path().join("layers").join("busybox");
        make_busybox_layer(&layer);
        let cgroup_parent = unique("berth-test");
        let runtime = Runtime::new(RuntimeConfig {
            containers_dir: dir.path().join("containers"),
            cgroup_parent: cgroup_parent.clone(),
        })
        .unwrap();
        Env {
            dir,
            runtime,
            layer,
            cgroup_parent,
        }
    }

    pub fn spec(&self, args: &[&str]) -> ContainerSpec {
        ContainerSpec {
            id: ContainerId::new(unique("c")).unwrap(),
            rootfs: RootfsSpec {
                layers: vec![self.layer.clone()],
                read_only: false,
            },
            process: ProcessSpec {
                args: args.iter().map(|s| s.to_string()).collect(),
                env: vec!["PATH=/bin".into()],
                cwd: "/".into(),
                user: Default::default(),
                rlimits: vec![],
                terminal: false,
            },
            hostname: None,
            network: Default::default(),
            mounts: vec![],
            limits: Limits::default(),
        }
    }

    pub fn containers_dir(&self) -> PathBuf {
        self.dir.path().join("containers")
    }

    /// Cgroup directories left under this env's parent, in every hierarchy.
    pub fn leftover_cgroups(&self) -> Vec<PathBuf> {
        let mut left = vec![];
        for entry in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            let parent = entry.path().join(&self.cgroup_parent);
            if let Ok(children) = std::fs::read_dir(&parent) {
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
}

impl Drop for Env {
    fn drop(&mut self) {
        // Remove the per-test cgroup parents (empty once every container is gone).
        if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
            for entry in entries.flatten() {
                let _ = std::fs::remove_dir(entry.path().join(&self.cgroup_parent));
            }
        }
    }
}
