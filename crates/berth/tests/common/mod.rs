//! End-to-end helpers: the real `berth` binary, a private data dir and
//! cgroup parent per test, and image archives built on the fly.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub use berth_testkit::unique;

pub mod daemons;

/// The berth binary under test, with `berthd` and `berth-shim` built next
/// to it.
///
/// `berth up|server|agent|project|token|stack` run berthd from berth's
/// directory, and berthd's agent starts berth-shim from its own; but
/// `cargo test -p berth` builds only this package's binary. So the first
/// call in a test process builds the other two with this build's cargo,
/// profile and target dir (a no-op when they are fresh; cargo's lock
/// serializes test processes that ask at once). Under nextest, which runs
/// each test in a process of its own, once per run.
pub fn berth_binary() -> &'static Path {
    static BUILT: OnceLock<()> = OnceLock::new();
    let berth = Path::new(env!("CARGO_BIN_EXE_berth"));
    BUILT.get_or_init(|| build_next_to(berth));
    berth
}

fn build_next_to(berth: &Path) {
    let profile_dir = berth.parent().expect("berth's directory");
    let stamp = profile_dir.join(".berth-test-daemons");
    let run = std::env::var("NEXTEST_RUN_ID").ok();
    let built = ["berthd", "berth-shim"].map(|b| profile_dir.join(b));
    if run.is_some()
        && std::fs::read_to_string(&stamp).ok() == run
        && built.iter().all(|b| b.is_file())
    {
        return;
    }
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(name) => name,
        None => panic!("no profile in {}", berth.display()),
    };
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--quiet", "-p", "berthd", "-p", "berth-shim"])
        .args(["--profile", profile]);
    // <target dir>/<profile>/berth, or <target dir>/<triple>/<profile>/berth;
    // cargo tells integration tests where <target dir>/tmp is.
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir");
    cargo.arg("--target-dir").arg(target_dir);
    let above = profile_dir.parent().expect("profile's parent");
    if above != target_dir {
        cargo
            .arg("--target")
            .arg(above.file_name().expect("target triple"));
    }
    let status = cargo.status().expect("running cargo");
    assert!(
        status.success(),
        "building berthd and berth-shim for the tests failed ({status})"
    );
    for binary in &built {
        assert!(binary.is_file(), "cargo built no {}", binary.display());
    }
    if let Some(run) = run {
        let _ = std::fs::write(&stamp, run);
    }
}

pub struct Berth {
    pub dir: tempfile::TempDir,
    pub cgroup_parent: String,
    /// This berth's default bridge (and nf_tables table): its own, so that
    /// tests on the same host do not share one.
    pub bridge: String,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The stable error code of a failed `--json` command.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error in {:?}", self.stdout))
            .to_owned()
    }

    /// The JSON object on the last line of stdout.
    pub fn json(&self) -> serde_json::Value {
        let line = self.stdout.lines().last().unwrap_or_default();
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.stdout))
    }
}

impl Berth {
    pub fn new() -> Berth {
        Berth::with_cgroup_parent(&unique("berth-e2e"))
    }

    /// A second berth with its own data dir but a shared cgroup parent.
    pub fn with_cgroup_parent(cgroup_parent: &str) -> Berth {
        let dir = tempfile::Builder::new()
            .prefix("berth-e2e")
            .tempdir_in("/var/tmp")
            .unwrap();
        let mut bytes = [0u8; 5];
        rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()).unwrap();
        Berth {
            dir,
            cgroup_parent: cgroup_parent.to_owned(),
            bridge: format!("bt{}", hex::encode(bytes)),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(berth_binary());
        c.arg("--data-dir")
            .arg(self.data_dir())
            .arg("--cgroup-parent")
            .arg(&self.cgroup_parent)
            .arg("--bridge")
            .arg(&self.bridge);
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command().args(args).output().unwrap())
    }

    /// Starts `berth ARGS` in the background with stdout captured, and
    /// returns once its container exists (its directory is in the data dir).
    pub fn spawn_running(&self, args: &[&str]) -> std::process::Child {
        let containers = self.data_dir().join("containers");
        let before = std::fs::read_dir(&containers).map_or(0, |d| d.count());
        let child = self
            .command()
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_dir(&containers).map_or(0, |d| d.count()) <= before {
            assert!(
                std::time::Instant::now() < deadline,
                "container never appeared"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        child
    }

    /// Imports the busybox test image as `name`.
    pub fn import_busybox(&self, name: &str) {
        let tar = busybox_tarball(self.dir.path());
        let out = self.run(&["image", "import", name, tar.to_str().unwrap()]);
        assert_eq!(out.code, 0, "import failed: {}", out.stderr);
    }

    /// Everything of every container is gone: dirs, cgroups, mounts.
    pub fn assert_clean(&self) {
        // The runtime's dirs: berth run's and an agent's disk-scratch
        // containers, and an agent's memory-scratch ones.
        for containers in [
            self.data_dir().join("containers"),
            self.data_dir().join("agent/run/runtime"),
        ] {
            let left: Vec<_> = std::fs::read_dir(&containers)
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            assert!(left.is_empty(), "container dirs left: {left:?}");
        }
        let cgroups = self.leftover_cgroups();
        assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
        let mounts = berth_testkit::mounts_under(self.dir.path());
        assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    }

    /// The `cgroup.procs` of a running container, once it lists a process:
    /// in the v1 memory hierarchy on v1 and hybrid hosts, in the unified one
    /// on v2. Panics if there is none within 10 s, so a check built on it
    /// cannot pass by reading a path that does not exist on this host.
    pub fn running_container_procs(&self, name: &str) -> PathBuf {
        let root = Path::new("/sys/fs/cgroup");
        let candidates = [
            root.join("memory").join(&self.cgroup_parent).join(name),
            root.join(&self.cgroup_parent).join(name),
        ];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let listed = candidates
                .iter()
                .map(|d| d.join("cgroup.procs"))
                .find(|procs| {
                    std::fs::read_to_string(procs).is_ok_and(|text| !text.trim().is_empty())
                });
            if let Some(procs) = listed {
                return procs;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "container {name} has no process in a cgroup at any of {candidates:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Waits until the container's cgroup holds no process (a removed
    /// cgroup holds none); panics after 5 s with what is left.
    pub fn assert_container_processes_end(&self, procs: &Path) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let left = match std::fs::read_to_string(procs) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(e) => panic!("reading {}: {e}", procs.display()),
            };
            if left.trim().is_empty() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the container outlived berth: {left}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The live shims of this berth's agent (their command line names its
    /// containers' dir).
    pub fn shims(&self) -> Vec<u32> {
        let marker = self.data_dir().join("agent/run/containers");
        let marker = marker.to_string_lossy().into_owned();
        let mut found = vec![];
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains("berth-shim") && cmdline.contains(&marker) {
                let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
                if !stat.contains(") Z ") {
                    found.push(pid);
                }
            }
        }
        found
    }

    /// After a failed test whose agent is gone: kills the shims it left
    /// (their containers die with them) and lets `berth gc` clean up.
    pub fn kill_leftover_shims(&self) {
        for pid in self.shims() {
            // SAFETY: kill(2) has no memory effects; a pid that ended
            // meanwhile gets ESRCH.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !self.shims().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.run(&["gc"]);
    }

    pub fn leftover_cgroups(&self) -> Vec<PathBuf> {
        berth_testkit::leftover_cgroups(&self.cgroup_parent)
    }

    /// A recursive listing of the image store (paths and sizes), to prove a
    /// failed import changed nothing.
    pub fn store_listing(&self) -> Vec<String> {
        fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                let p = e.path();
                let meta = std::fs::symlink_metadata(&p).unwrap();
                out.push(format!(
                    "{} {}",
                    p.strip_prefix(base).unwrap().display(),
                    meta.len()
                ));
                if meta.is_dir() {
                    walk(&p, base, out);
                }
            }
        }
        let mut out = vec![];
        let root = self.data_dir().join("images");
        walk(&root, &root, &mut out);
        out.sort();
        out
    }
}

impl Berth {
    /// berth-net on this berth's data dir and bridge.
    pub fn networks(&self) -> berth_net::Networks {
        let config = berth_net::NetConfig::new(&self.data_dir(), &self.bridge, Default::default());
        berth_net::Networks::open(config).unwrap()
    }

    /// Takes down every network this berth made (their bridges and its
    /// nf_tables table), with whatever a failed test left attached.
    pub fn remove_networks(&self) {
        if !self.data_dir().join("network").exists() {
            return;
        }
        let networks = self.networks();
        let _ = networks.gc(&|_| false);
        for network in networks.list().unwrap_or_default() {
            let _ = networks.remove(&network.name);
        }
        let _ = berth_net::rules::remove(&self.bridge);
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        self.remove_networks();
        berth_testkit::remove_cgroup_parent(&self.cgroup_parent);
        berth_testkit::unmount_under(self.dir.path());
    }
}

/// A gzip'd busybox rootfs tarball, built here so every test knows exactly
/// what the image holds.
pub fn busybox_tarball(dir: &Path) -> PathBuf {
    let path = dir.join("busybox.tar.gz");
    if path.exists() {
        return path;
    }
    let file = std::fs::File::create(&path).unwrap();
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    add_busybox_rootfs(&mut b);
    b.into_inner().unwrap().finish().unwrap().flush().unwrap();
    path
}

/// Adds a minimal busybox root file system to an archive.
pub fn add_busybox_rootfs<W: Write>(b: &mut tar::Builder<W>) {
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "root"] {
        dir_entry(b, d, if d == "tmp" { 0o1777 } else { 0o755 });
    }
    b.append_path_with_name(berth_testkit::busybox_binary(), "bin/busybox")
        .unwrap();
    for applet in berth_testkit::busybox_applets() {
        symlink_entry(b, &format!("bin/{applet}"), "busybox");
    }
    file_entry(b, "etc/passwd", berth_testkit::PASSWD.as_bytes(), 0o644);
    file_entry(b, "etc/group", berth_testkit::GROUP.as_bytes(), 0o644);
}

/// A header with the fields every test entry shares (owner root, fixed
/// mtime), so archives are deterministic.
pub fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(1_700_000_000);
    h.set_uid(0);
    h.set_gid(0);
    h
}

pub fn dir_entry<W: Write>(b: &mut tar::Builder<W>, path: &str, mode: u32) {
    let mut h = header(tar::EntryType::Directory, mode, 0);
    b.append_data(&mut h, path, std::io::empty()).unwrap();
}

pub fn file_entry<W: Write>(b: &mut tar::Builder<W>, path: &str, data: &[u8], mode: u32) {
    let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
    b.append_data(&mut h, path, data).unwrap();
}

pub fn symlink_entry<W: Write>(b: &mut tar::Builder<W>, path: &str, target: &str) {
    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
    b.append_link(&mut h, path, target).unwrap();
}

/// An uncompressed tar made by `build`, returned as bytes.
pub fn tar_bytes(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    build(&mut b);
    b.into_inner().unwrap()
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// The host's own address: the first of the link its default route goes
/// out of (other tests add and remove addresses on links of their own
/// meanwhile, so "any address of the host" would not hold still).
pub fn host_address() -> String {
    let route = std::process::Command::new("ip")
        .args(["-4", "route", "show", "default"])
        .output()
        .unwrap();
    let route = String::from_utf8_lossy(&route.stdout).into_owned();
    let dev = route
        .split_whitespace()
        .skip_while(|w| *w != "dev")
        .nth(1)
        .expect("the host has a default route")
        .to_owned();
    let addr = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", &dev, "scope", "global"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&addr.stdout)
        .split_whitespace()
        .nth(3)
        .and_then(|a| a.split('/').next())
        .map(str::to_owned)
        .expect("the default route's link has an IPv4 address")
}
