//! Shared helpers for the runtime's integration tests: a busybox layer on
//! disk, a runtime rooted in a private temp dir, and spec builders.
#![allow(dead_code)]

use berth_core::ContainerId;
use berth_runtime::{ContainerSpec, Runtime, RuntimeConfig};
use std::path::PathBuf;

/// A test environment: a busybox layer and a runtime with its own
/// containers dir and cgroup parent, removed on drop.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub runtime: Runtime,
    pub layer: PathBuf,
    cgroup_parent: String,
}

pub use berth_testkit::{make_busybox_layer, unique};

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
        let mut spec = ContainerSpec::new(
            ContainerId::new(unique("c")).unwrap(),
            vec![self.layer.clone()],
            args.iter().map(|s| s.to_string()).collect(),
        );
        spec.process.env = vec!["PATH=/bin".into()];
        spec
    }

    pub fn containers_dir(&self) -> PathBuf {
        self.dir.path().join("containers")
    }

    /// This env's cgroup parent (one name in every hierarchy).
    pub fn cgroup_parent(&self) -> &str {
        &self.cgroup_parent
    }

    /// Cgroup directories left under this env's parent, in every hierarchy.
    pub fn leftover_cgroups(&self) -> Vec<PathBuf> {
        berth_testkit::leftover_cgroups(&self.cgroup_parent)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Remove the per-test cgroup parents (empty once every container is gone).
        berth_testkit::remove_cgroup_parent(&self.cgroup_parent);
    }
}

/// What a container printed and how it ended.
pub struct Outcome {
    pub result: berth_runtime::ContainerResult,
    pub stdout: String,
    pub stderr: String,
}

impl Env {
    /// Creates, starts and waits for a container, capturing its output.
    pub fn run(&self, spec: &ContainerSpec) -> Outcome {
        self.try_run(spec).expect("container runs")
    }

    pub fn try_run(&self, spec: &ContainerSpec) -> berth_runtime::Result<Outcome> {
        self.try_run_with_network(spec, None)
    }

    /// [`Env::try_run`], with a network setup if one is given.
    pub fn try_run_with_network(
        &self,
        spec: &ContainerSpec,
        setup: Option<berth_runtime::NetworkSetup<'_>>,
    ) -> berth_runtime::Result<Outcome> {
        use std::io::Read;
        let (out_r, out_w) = std::io::pipe().unwrap();
        let (err_r, err_w) = std::io::pipe().unwrap();
        let stdio = berth_runtime::StdioFds {
            stdin: None,
            stdout: Some(out_w.into()),
            stderr: Some(err_w.into()),
        };
        let options = berth_runtime::CreateOptions {
            start: false,
            network_setup: setup,
        };
        let mut container = self.runtime.create_with(spec, stdio, options)?;
        // Read output on threads so a chatty container never blocks on a full pipe.
        let read = |mut r: std::io::PipeReader| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = r.read_to_string(&mut s);
                s
            })
        };
        let (out, err) = (read(out_r), read(err_r));
        let started = container.start();
        if let Err(e) = started {
            let _ = container.delete();
            return Err(e);
        }
        container.wait(None)?;
        let result = container.delete()?;
        Ok(Outcome {
            result,
            stdout: out.join().unwrap(),
            stderr: err.join().unwrap(),
        })
    }

    /// A `sh -c SCRIPT` spec.
    pub fn sh(&self, script: &str) -> ContainerSpec {
        self.spec(&["sh", "-c", script])
    }

    /// Asserts that nothing of any container is left: no container dir, no
    /// cgroup, no mount mentioning the env's dir.
    pub fn assert_clean(&self) {
        let dirs: Vec<_> = std::fs::read_dir(self.containers_dir())
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(dirs.is_empty(), "container dirs left: {dirs:?}");
        assert!(
            self.leftover_cgroups().is_empty(),
            "cgroups left: {:?}",
            self.leftover_cgroups()
        );
        let mounts = berth_testkit::mounts_under(self.dir.path());
        assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    }
}
