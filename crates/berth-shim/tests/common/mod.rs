//! Shared helpers for the shim's tests: a busybox layer on disk, a private
//! containers dir and cgroup parent, state dirs, and leak checks (the layer
//! and cleanliness checks come from berth-testkit).
#![allow(dead_code)]

use berth_core::ContainerId;
use berth_runtime::ContainerSpec;
use berth_shim::{ExitRecord, ShimSpec, ShimState, StateDir};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SHIM: &str = env!("CARGO_BIN_EXE_berth-shim");
/// Ample for any container of these tests to start, run and be recorded.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub use berth_testkit::{make_busybox_layer, unique};

/// One test's world: a temp dir (layer, containers dir, state dirs) and a
/// cgroup parent of its own, removed on drop.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub layer: PathBuf,
    pub cgroup_parent: String,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("berth-shim-test")
            .tempdir_in("/var/tmp")
            .unwrap();
        let layer = dir.path().join("layers").join("busybox");
        make_busybox_layer(&layer);
        Env {
            dir,
            layer,
            cgroup_parent: unique("berth-shim-test"),
        }
    }

    pub fn containers_dir(&self) -> PathBuf {
        self.dir.path().join("containers")
    }

    pub fn spec(&self, args: &[&str]) -> ContainerSpec {
        let mut spec = ContainerSpec::new(
            ContainerId::new(unique("c")).unwrap(),
            vec![self.layer.clone()],
            args.iter().map(|s| s.to_string()).collect(),
        );
        spec.process.env = vec!["PATH=/bin".into()];
        spec
    }

    /// A `sh -c SCRIPT` spec.
    pub fn sh(&self, script: &str) -> ContainerSpec {
        self.spec(&["sh", "-c", script])
    }

    /// A fresh state dir holding `spec.json`, as the agent will make it.
    pub fn state_dir(&self, spec: &ShimSpec) -> StateDir {
        let path = self
            .dir
            .path()
            .join("state")
            .join(spec.container.id.as_str());
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(path.join("spec.json"), serde_json::to_vec(spec).unwrap()).unwrap();
        StateDir::new(path)
    }

    /// The arguments that point a shim at `dir` and this env.
    pub fn shim_args(&self, dir: &StateDir) -> Vec<String> {
        vec![
            "--dir".into(),
            dir.path().display().to_string(),
            "--containers-dir".into(),
            self.containers_dir().display().to_string(),
            "--cgroup-parent".into(),
            self.cgroup_parent.clone(),
        ]
    }

    /// Starts a shim on `dir` as our child (its stderr is captured).
    pub fn spawn(&self, dir: &StateDir) -> Child {
        Command::new(SHIM)
            .args(self.shim_args(dir))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Starts a shim on `dir` as the agent does: `--ready-fd 1` with a pipe
    /// on its stdout (its stderr is captured too).
    pub fn spawn_ready(&self, dir: &StateDir) -> Child {
        Command::new(SHIM)
            .args(self.shim_args(dir))
            .args(["--ready-fd", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Cgroup directories left under this env's parent, in every hierarchy.
    pub fn leftover_cgroups(&self) -> Vec<PathBuf> {
        berth_testkit::leftover_cgroups(&self.cgroup_parent)
    }

    /// Asserts that nothing of any container is left: no container dir, no
    /// cgroup, no mount mentioning the env's dir.
    pub fn assert_clean(&self) {
        let dirs: Vec<_> = std::fs::read_dir(self.containers_dir())
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(dirs.is_empty(), "container dirs left: {dirs:?}");
        let cgroups = self.leftover_cgroups();
        assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
        let mounts = berth_testkit::mounts_under(self.dir.path());
        assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Remove the per-test cgroup parents (empty once every container is gone).
        berth_testkit::remove_cgroup_parent(&self.cgroup_parent);
    }
}

/// Polls `check` until it returns something or `PATIENCE` runs out.
pub fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let give_up = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < give_up, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for the shim to record the container as running.
pub fn wait_running(dir: &StateDir) -> ShimState {
    eventually("state.json", || dir.read_state().unwrap())
}

/// Waits for the exit record.
pub fn wait_exit(dir: &StateDir) -> ExitRecord {
    eventually("exit.json", || dir.read_exit().unwrap())
}

/// Waits for our shim child to end; returns its exit code and stderr.
pub fn wait_shim(child: Child) -> (i32, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn read_log(dir: &StateDir) -> String {
    std::fs::read_to_string(dir.log_file()).unwrap()
}

/// The names in a state dir, sorted.
pub fn entries(dir: &StateDir) -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
