//! Container cgroups on cgroup v1, v2 and hybrid hosts.
//!
//! Each controller berth uses is placed where the host provides it: on its
//! own v1 hierarchy, or on the unified v2 hierarchy when the controller is
//! enabled there. A container gets one directory per hierarchy it needs,
//! under a `berth` parent. The layout is detected at run time from
//! `/proc/self/mountinfo`, never assumed.

mod files;
mod limits;
mod metrics;
mod stats;

pub use limits::apply_limits;
pub use metrics::CgroupMetrics;
pub use stats::CgroupStats;

use crate::error::{Result, RuntimeError};
use crate::kernel;
use crate::kernel_files;
use crate::spec::Limits;
use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The controllers berth configures for every container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Controller {
    Memory,
    Cpu,
    Cpuacct,
    Pids,
    Devices,
}

impl Controller {
    const ALL: [Controller; 5] = [
        Controller::Memory,
        Controller::Cpu,
        Controller::Cpuacct,
        Controller::Pids,
        Controller::Devices,
    ];

    fn v1_name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
            Controller::Cpuacct => "cpuacct",
            Controller::Pids => "pids",
            Controller::Devices => "devices",
        }
    }

    /// The v2 name, if v2 has such a controller (cpuacct and devices are
    /// folded into `cpu` and a BPF program there).
    fn v2_name(self) -> Option<&'static str> {
        match self {
            Controller::Memory => Some("memory"),
            Controller::Cpu => Some("cpu"),
            Controller::Pids => Some("pids"),
            Controller::Cpuacct | Controller::Devices => None,
        }
    }
}

/// How a container's first process gets into its cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupJoin {
    /// No v1 hierarchy: on v2 the process is cloned straight into its
    /// cgroup (`CLONE_INTO_CGROUP`), so nothing moves.
    NoMove,
    /// It moves itself into its v1 cgroups (writing "0" to `tasks`), which
    /// the kernel does without the global `cgroup_threadgroup_rwsem`
    /// (Linux 5.5+).
    SelfMove,
    /// It moves itself, taking that lock, but a cgroup mount has
    /// `favordynmods`, whose writers need no RCU grace period.
    SelfMoveFavorDynmods,
    /// It moves itself, taking that lock: after a moment of idle its writer
    /// waits for an RCU grace period (milliseconds on a quiet VM).
    SelfMoveLocked,
}

impl CgroupJoin {
    /// Whether joining costs no RCU grace period after idle.
    pub fn is_fast(self) -> bool {
        !matches!(self, CgroupJoin::SelfMoveLocked)
    }

    /// A short human description, for `berth info`.
    pub fn describe(self) -> &'static str {
        match self {
            CgroupJoin::NoMove => "fast: nothing moves (cloned into its cgroup on v2)",
            CgroupJoin::SelfMove => {
                "fast: the container's process moves itself into its v1 cgroups, \
                 which skips the global lock (Linux 5.5+)"
            }
            CgroupJoin::SelfMoveFavorDynmods => {
                "fast: a cgroup mount has favordynmods, so the move waits for no RCU grace period"
            }
            CgroupJoin::SelfMoveLocked => {
                "slow after idle: each move takes a global lock that waits for an RCU \
                 grace period (this kernel predates lockless self-moves, Linux 5.5)"
            }
        }
    }
}

/// One mounted v1 hierarchy and the controllers it carries.
#[derive(Debug, Clone)]
struct V1Hierarchy {
    mount: PathBuf,
    controllers: BTreeSet<Controller>,
}

/// Where this host's controllers live.
#[derive(Debug, Clone)]
pub struct CgroupHost {
    /// Some cgroup mount has `favordynmods`: moving a process between
    /// cgroups then needs no RCU grace period (the lock is global). `None`
    /// when the layout was found without the mount table (see
    /// [`CgroupHost::fast_moves`]).
    favor_dynmods: Option<bool>,
    /// The kernel moves a thread that moves itself without taking the
    /// global lock (Linux 5.5+); containers join their v1 cgroups so.
    lockless_self_moves: bool,
    v1: Vec<V1Hierarchy>,
    unified: Option<PathBuf>,
    v2_controllers: BTreeSet<Controller>,
    parent_name: String,
}

impl CgroupHost {
    /// Detects the layout: the usual one from this process's own cgroups
    /// and a file-system type per hierarchy, anything else from the mount
    /// table. `parent_name` is the directory under each hierarchy that
    /// holds berth's containers.
    ///
    /// The mount table is the authority, but the kernel formats every mount
    /// to produce it: ~60 µs here, ~0.15 ms for a process's first read,
    /// on the path of every `berth run`, against ~30 µs for the usual
    /// layout's few `statfs` calls.
    pub fn detect(parent_name: &str) -> Result<Self> {
        let own = kernel_files::read(Path::new("/proc/self/cgroup")).unwrap_or_default();
        let mut host = match Self::from_standard_layout(&own, parent_name, fs_type) {
            Some(host) => host,
            None => Self::from_mountinfo(&read_mountinfo()?, parent_name),
        };
        // Upstream commit 9a3284fad42f ("cgroup: Optimize single thread
        // migration", merged for 5.5; backported to 5.4.213).
        host.lockless_self_moves = kernel::at_least(5, 5);
        if let Some(unified) = &host.unified {
            let available =
                kernel_files::read(&unified.join("cgroup.controllers")).unwrap_or_default();
            host.v2_controllers = Controller::ALL
                .into_iter()
                .filter(|c| !host.v1_has(*c))
                .filter(|c| {
                    c.v2_name()
                        .is_some_and(|n| available.split_whitespace().any(|a| a == n))
                })
                .collect();
            // v2 accounts CPU time in cpu.stat without the cpu controller.
            if !host.v1_has(Controller::Cpuacct) {
                host.v2_controllers.insert(Controller::Cpuacct);
            }
        }
        Ok(host)
    }

    /// The layout systemd and cgroupfs-mount set up, checked rather than
    /// assumed: each v1 hierarchy this process belongs to (`/proc/self/cgroup`
    /// lines `ID:CONTROLLERS:PATH`) must be a cgroup file system at
    /// `/sys/fs/cgroup/CONTROLLERS`, and the unified hierarchy (`0::PATH`)
    /// a cgroup2 one at `/sys/fs/cgroup/unified`, or `/sys/fs/cgroup` must
    /// itself be cgroup2. `None` for anything else (the caller then reads
    /// the mount table). `fs_type` gives a path's file-system magic.
    fn from_standard_layout(
        own_cgroups: &str,
        parent_name: &str,
        fs_type: impl Fn(&Path) -> Option<i64>,
    ) -> Option<Self> {
        const ROOT: &str = "/sys/fs/cgroup";
        let host = |v1, unified| CgroupHost {
            favor_dynmods: None,
            lockless_self_moves: false,
            v1,
            unified,
            v2_controllers: BTreeSet::new(),
            parent_name: parent_name.to_owned(),
        };
        match fs_type(Path::new(ROOT))? {
            CGROUP2_MAGIC => return Some(host(Vec::new(), Some(PathBuf::from(ROOT)))),
            TMPFS_MAGIC => {}
            _ => return None,
        }
        let mut v1 = Vec::new();
        let mut unified = None;
        for line in own_cgroups.lines() {
            let mut fields = line.splitn(3, ':');
            let (id, names) = (fields.next()?, fields.next()?);
            if id == "0" {
                let dir = Path::new(ROOT).join("unified");
                if fs_type(&dir)? != CGROUP2_MAGIC {
                    return None;
                }
                unified = Some(dir);
                continue;
            }
            let controllers: BTreeSet<Controller> = Controller::ALL
                .into_iter()
                .filter(|c| names.split(',').any(|n| n == c.v1_name()))
                .collect();
            if controllers.is_empty() {
                // Named hierarchies (name=systemd) and controllers berth
                // does not use.
                continue;
            }
            let mount = Path::new(ROOT).join(names);
            if fs_type(&mount)? != CGROUP_MAGIC {
                return None;
            }
            v1.push(V1Hierarchy { mount, controllers });
        }
        (!v1.is_empty() || unified.is_some()).then(|| host(v1, unified))
    }

    fn from_mountinfo(mountinfo: &str, parent_name: &str) -> Self {
        let mut v1 = Vec::new();
        let mut unified = None;
        let mut favor_dynmods = false;
        for line in mountinfo.lines() {
            // mountinfo: id parent maj:min root mountpoint opts [optional...] - fstype source superopts
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mount_point = left.split(' ').nth(4).unwrap_or_default();
            let mut right = right.split(' ');
            let fstype = right.next().unwrap_or_default();
            let super_opts = right.nth(1).unwrap_or_default();
            if fstype.starts_with("cgroup") && super_opts.split(',').any(|o| o == "favordynmods") {
                favor_dynmods = true;
            }
            match fstype {
                "cgroup2" => unified = Some(PathBuf::from(unescape_mount_path(mount_point))),
                "cgroup" => {
                    let controllers: BTreeSet<Controller> = Controller::ALL
                        .into_iter()
                        .filter(|c| super_opts.split(',').any(|o| o == c.v1_name()))
                        .collect();
                    if !controllers.is_empty() {
                        v1.push(V1Hierarchy {
                            mount: PathBuf::from(unescape_mount_path(mount_point)),
                            controllers,
                        });
                    }
                }
                _ => {}
            }
        }
        CgroupHost {
            favor_dynmods: Some(favor_dynmods),
            lockless_self_moves: false,
            v1,
            unified,
            v2_controllers: BTreeSet::new(),
            parent_name: parent_name.to_owned(),
        }
    }

    fn v1_has(&self, c: Controller) -> bool {
        self.v1.iter().any(|h| h.controllers.contains(&c))
    }

    /// Whether `controller` is available on this host (v1 or v2).
    pub fn has(&self, controller: Controller) -> bool {
        self.v1_has(controller) || self.v2_controllers.contains(&controller)
    }

    /// Whether the unified hierarchy carries berth's controllers (pure v2).
    pub fn uses_v2(&self) -> bool {
        !self.v2_controllers.is_empty()
    }

    /// How a container's first process gets into its cgroups here.
    /// (Reads the mount table only on kernels without lockless self-moves
    /// and only if the layout was found without it.)
    pub fn join(&self) -> CgroupJoin {
        if self.v1.is_empty() {
            return CgroupJoin::NoMove;
        }
        if self.lockless_self_moves {
            return CgroupJoin::SelfMove;
        }
        let favor_dynmods = self.favor_dynmods.unwrap_or_else(|| {
            read_mountinfo().is_ok_and(|m| {
                Self::from_mountinfo(&m, &self.parent_name).favor_dynmods == Some(true)
            })
        });
        if favor_dynmods {
            CgroupJoin::SelfMoveFavorDynmods
        } else {
            CgroupJoin::SelfMoveLocked
        }
    }

    /// Whether joining the container's cgroups is fast here, after idle as
    /// well as back-to-back (see [`CgroupJoin`]).
    pub fn fast_moves(&self) -> bool {
        self.join().is_fast()
    }

    /// Whether device access can be restricted (v1 devices controller).
    pub fn restricts_devices(&self) -> bool {
        self.v1_has(Controller::Devices)
    }

    /// A human description such as `hybrid (v1: memory, cpu, ...)`.
    pub fn describe(&self) -> String {
        let v1: Vec<_> = self
            .v1
            .iter()
            .flat_map(|h| h.controllers.iter().map(|c| c.v1_name()))
            .collect();
        match (v1.is_empty(), self.uses_v2()) {
            (false, false) if self.unified.is_some() => format!(
                "hybrid (v1: {}; v2 mounted without these controllers)",
                v1.join(", ")
            ),
            (false, false) => format!("v1 ({})", v1.join(", ")),
            (true, true) => "v2".to_owned(),
            (false, true) => format!("hybrid (v1: {}; rest on v2)", v1.join(", ")),
            (true, false) => "none".to_owned(),
        }
    }

    /// The directories a container `id` may have, one per hierarchy.
    pub fn container_paths(&self, id: &str) -> CgroupPaths {
        self.paths_for(id, &Controller::ALL.into_iter().collect())
    }

    /// The controllers a container with `limits` needs: accounting (memory,
    /// CPU time), device restrictions, and whatever its limits use.
    fn needed(limits: &Limits) -> BTreeSet<Controller> {
        let mut needed: BTreeSet<Controller> =
            [Controller::Memory, Controller::Cpuacct, Controller::Devices].into();
        if limits.cpus.is_some() || limits.cpu_shares.is_some() {
            needed.insert(Controller::Cpu);
        }
        if limits.pids.is_some() {
            needed.insert(Controller::Pids);
        }
        needed
    }

    /// How many v1 cgroups a container with `limits` joins: one per v1
    /// hierarchy carrying a controller it needs (as [`CgroupHost::create`]
    /// makes them).
    pub fn v1_cgroup_count(&self, limits: &Limits) -> usize {
        let needed = Self::needed(limits);
        self.v1
            .iter()
            .filter(|h| !h.controllers.is_disjoint(&needed))
            .count()
    }

    /// Only the hierarchies carrying a needed controller get a directory:
    /// each one costs a mkdir, a join and an rmdir per container.
    fn paths_for(&self, id: &str, needed: &BTreeSet<Controller>) -> CgroupPaths {
        let mut v1 = Vec::new();
        for h in self
            .v1
            .iter()
            .filter(|h| !h.controllers.is_disjoint(needed))
        {
            v1.push(V1Dir {
                path: h.mount.join(&self.parent_name).join(id),
                controllers: h.controllers.clone(),
            });
        }
        let v2 = self
            .unified
            .as_ref()
            .filter(|_| self.uses_v2())
            .map(|u| u.join(&self.parent_name).join(id));
        CgroupPaths { v1, v2 }
    }

    /// The cgroup parent's directories, one per hierarchy: every container
    /// of this parent is below them.
    fn parent_paths(&self) -> CgroupPaths {
        let v1 = self
            .v1
            .iter()
            .map(|h| V1Dir {
                path: h.mount.join(&self.parent_name),
                controllers: h.controllers.clone(),
            })
            .collect();
        let v2 = self
            .unified
            .as_ref()
            .filter(|_| self.uses_v2())
            .map(|u| u.join(&self.parent_name));
        CgroupPaths { v1, v2 }
    }

    /// Metrics of container `id`'s cgroups, found by name so that any
    /// process can read them (not only the container's supervisor);
    /// `None` when the container has no cgroup in any hierarchy.
    pub fn container_metrics(&self, id: &str) -> Option<CgroupMetrics> {
        let paths = self.container_paths(id);
        // is_dir, not exists: an id such as `memory.stat` names a control
        // file of the parent, not a container.
        let exists = paths.all().any(Path::is_dir);
        exists.then(|| metrics::read(&paths))
    }

    /// Metrics of the cgroup parent: all of its containers together. The
    /// parent is created if no container has made it yet (as the first
    /// container would), so that an idle host reports zeros, not `None`.
    pub fn node_metrics(&self) -> Result<CgroupMetrics> {
        self.ensure_parents()?;
        Ok(metrics::read(&self.parent_paths()))
    }

    /// Refuses limits the host cannot enforce, before anything is created.
    pub fn check_enforceable(&self, limits: &Limits) -> Result<()> {
        limits::check_enforceable(self, limits)
    }

    /// Creates the container's cgroups and applies its limits. On failure
    /// everything created is removed again.
    pub fn create(&self, id: &str, limits: &Limits) -> Result<ContainerCgroup> {
        let paths = self.paths_for(id, &Self::needed(limits));
        // The parents outlive every container: on v1 they are made only when
        // a container's directory cannot be made without them, rather than
        // checked (a stat per hierarchy) on every start. On v2 the
        // controllers must also be enabled on the way down.
        if self.uses_v2() {
            self.ensure_parents()?;
        }
        let cgroup = ContainerCgroup {
            paths,
            v2_device_filter_missing: !self.restricts_devices(),
        };
        let created = (|| {
            for dir in cgroup.paths.all() {
                match fs::create_dir(dir) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        self.ensure_parents()?;
                        fs::create_dir(dir)
                    }
                    made => made,
                }
                .map_err(|e| RuntimeError::Cgroup {
                    path: dir.to_owned(),
                    action: "creating",
                    source: e,
                })?;
            }
            apply_limits(self, &cgroup.paths, limits)
        })();
        match created {
            Ok(()) => Ok(cgroup),
            Err(e) => {
                let _ = cgroup.remove(Duration::from_millis(100));
                Err(e)
            }
        }
    }

    fn ensure_parents(&self) -> Result<()> {
        for h in &self.v1 {
            let parent = h.mount.join(&self.parent_name);
            if !parent.is_dir() {
                create_dir_if_missing(&parent)?;
            }
            if h.controllers.contains(&Controller::Devices) {
                limits::give_parent_device_rules(&parent);
            }
        }
        if let (Some(unified), true) = (&self.unified, self.uses_v2()) {
            let parent = unified.join(&self.parent_name);
            if !parent.is_dir() {
                create_dir_if_missing(&parent)?;
            }
            // Controllers must be enabled on every level down to our parent.
            let wanted: Vec<&str> = self
                .v2_controllers
                .iter()
                .filter_map(|c| c.v2_name())
                .collect();
            for dir in [unified.as_path(), parent.as_path()] {
                let control = dir.join("cgroup.subtree_control");
                let enabled = kernel_files::read(&control).unwrap_or_default();
                for name in &wanted {
                    if !enabled.split_whitespace().any(|e| e == *name) {
                        files::write(&control, &format!("+{name}"))?;
                    }
                }
            }
        }
        Ok(())
    }
}

// File-system magic numbers (statfs f_type).
const CGROUP_MAGIC: i64 = 0x0027_e0eb;
const CGROUP2_MAGIC: i64 = 0x6367_7270;
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// The file-system magic of `path`, if it can be read.
// statfs's f_type is an i64 here, a u32 or an i32 on other architectures.
#[allow(clippy::useless_conversion)]
fn fs_type(path: &Path) -> Option<i64> {
    rustix::fs::statfs(path).ok().map(|s| i64::from(s.f_type))
}

fn read_mountinfo() -> Result<String> {
    kernel_files::read(Path::new("/proc/self/mountinfo"))
        .map_err(|e| RuntimeError::host_io("reading /proc/self/mountinfo", e))
}

fn create_dir_if_missing(path: &Path) -> Result<()> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(RuntimeError::Cgroup {
            path: path.to_owned(),
            action: "creating",
            source: e,
        }),
    }
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mount_path(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            if let Ok(v) = u8::from_str_radix(&raw[i + 1..i + 4], 8) {
                out.push(v as char);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i] as char);
        i += 1;
    }
    out
}

/// A v1 directory and the controllers of its hierarchy.
#[derive(Debug, Clone)]
pub struct V1Dir {
    pub path: PathBuf,
    controllers: BTreeSet<Controller>,
}

/// The directories of one container's cgroups.
#[derive(Debug, Clone)]
pub struct CgroupPaths {
    pub v1: Vec<V1Dir>,
    pub v2: Option<PathBuf>,
}

impl CgroupPaths {
    pub fn all(&self) -> impl Iterator<Item = &Path> {
        self.v1
            .iter()
            .map(|d| d.path.as_path())
            .chain(self.v2.as_deref())
    }

    /// The directory holding `controller`'s files, if the host has it.
    pub fn dir_for(&self, controller: Controller) -> Option<&Path> {
        self.v1
            .iter()
            .find(|d| d.controllers.contains(&controller))
            .map(|d| d.path.as_path())
            .or(self.v2.as_deref())
    }

    fn is_v1(&self, controller: Controller) -> bool {
        self.v1.iter().any(|d| d.controllers.contains(&controller))
    }
}

/// A container's live cgroups.
#[derive(Debug)]
pub struct ContainerCgroup {
    pub paths: CgroupPaths,
    /// On v2 berth installs no device BPF program (see README limitations).
    pub v2_device_filter_missing: bool,
}

impl ContainerCgroup {
    /// Reattaches to the cgroups of an existing container (for teardown).
    pub fn existing(host: &CgroupHost, id: &str) -> Self {
        ContainerCgroup {
            paths: host.container_paths(id),
            v2_device_filter_missing: !host.restricts_devices(),
        }
    }

    /// The v2 directory opened for `clone3(CLONE_INTO_CGROUP)`, if the
    /// container has one.
    pub fn v2_dir_handle(&self) -> Result<Option<OwnedFd>> {
        use rustix::fs::{open, Mode, OFlags};
        let Some(dir) = &self.paths.v2 else {
            return Ok(None);
        };
        open(
            dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map(Some)
        .map_err(|e| RuntimeError::Cgroup {
            path: dir.clone(),
            action: "opening",
            source: e.into(),
        })
    }

    /// The `tasks` file of each v1 directory, in order, opened for the
    /// container's first process to move itself in (it writes "0" to each,
    /// see `process::child::join_v1_cgroups`): a move by pid would take a
    /// global lock whose writer waits for an RCU grace period.
    pub fn open_v1_tasks(&self) -> Result<Vec<OwnedFd>> {
        use rustix::fs::{open, Mode, OFlags};
        self.paths
            .v1
            .iter()
            .map(|dir| {
                let tasks = dir.path.join("tasks");
                open(&tasks, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty()).map_err(|e| {
                    RuntimeError::Cgroup {
                        path: tasks,
                        action: "opening",
                        source: e.into(),
                    }
                })
            })
            .collect()
    }

    /// The `tasks` file of the v1 directory at `index` (in the order of
    /// [`ContainerCgroup::open_v1_tasks`]), for error messages.
    pub fn v1_tasks_path(&self, index: usize) -> Option<PathBuf> {
        self.paths.v1.get(index).map(|dir| dir.path.join("tasks"))
    }

    /// Reads usage counters (for the result and for metrics).
    pub fn stats(&self) -> CgroupStats {
        stats::read(&self.paths)
    }

    /// Pids of every process in the container's cgroups. The container's
    /// processes join every hierarchy together, so one is enough; the others
    /// are only read if the first is gone.
    pub fn pids(&self) -> Vec<i32> {
        for dir in self.paths.all() {
            if let Ok(text) = kernel_files::read(&dir.join("cgroup.procs")) {
                return text
                    .lines()
                    .filter_map(|l| l.trim().parse::<i32>().ok())
                    .collect();
            }
        }
        Vec::new()
    }

    /// SIGKILLs every process in the cgroups until none is left (or `deadline`).
    pub fn kill_all(&self, patience: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Some(v2) = &self.paths.v2 {
                // cgroup.kill (5.14+) kills atomically, racing no fork.
                let _ = files::write(&v2.join("cgroup.kill"), "1");
            }
            let pids = self.pids();
            if pids.is_empty() {
                return Ok(());
            }
            for pid in pids {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            if start.elapsed() > patience {
                return Err(RuntimeError::Teardown {
                    id: self.id_hint(),
                    what: "processes survive SIGKILL".into(),
                    source: io::Error::from_raw_os_error(libc::EBUSY),
                });
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Removes every directory, retrying while the kernel still holds one;
    /// tries every hierarchy even after a failure.
    pub fn remove(&self, patience: Duration) -> Result<()> {
        let start = Instant::now();
        let mut first_error = None;
        for dir in self.paths.all() {
            loop {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY) && start.elapsed() < patience =>
                    {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    Err(e) => {
                        // Go on with the other hierarchies; report the first.
                        first_error.get_or_insert(RuntimeError::Teardown {
                            id: self.id_hint(),
                            what: format!("removing cgroup {}", dir.display()),
                            source: e,
                        });
                        break;
                    }
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn id_hint(&self) -> String {
        self.paths
            .all()
            .next()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate
33 30 0:29 / /sys/fs/cgroup/memory rw shared:14 - cgroup cgroup rw,memory
34 30 0:30 / /sys/fs/cgroup/cpu,cpuacct rw shared:15 - cgroup cgroup rw,cpu,cpuacct
35 30 0:31 / /sys/fs/cgroup/pids rw shared:16 - cgroup cgroup rw,pids
36 30 0:32 / /sys/fs/cgroup/systemd rw shared:17 - cgroup cgroup rw,xattr,name=systemd
";

    #[test]
    fn hybrid_layout_is_read_from_mountinfo() {
        let host = CgroupHost::from_mountinfo(HYBRID, "berth");
        assert!(host.v1_has(Controller::Memory));
        assert!(host.v1_has(Controller::Cpuacct));
        assert!(!host.v1_has(Controller::Devices));
        assert_eq!(
            host.unified.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified"))
        );
        let paths = host.container_paths("c1");
        // cpu and cpuacct share one hierarchy, so one directory.
        assert_eq!(paths.v1.len(), 3);
        assert_eq!(
            paths.dir_for(Controller::Cpuacct),
            Some(Path::new("/sys/fs/cgroup/cpu,cpuacct/berth/c1"))
        );
    }

    #[test]
    fn favordynmods_on_any_cgroup_mount_makes_locked_moves_fast() {
        let host = CgroupHost::from_mountinfo(HYBRID, "berth");
        assert_eq!(host.join(), CgroupJoin::SelfMoveLocked);
        assert!(!host.fast_moves());
        let tuned = HYBRID.replace("rw,nsdelegate", "rw,nsdelegate,favordynmods");
        let host = CgroupHost::from_mountinfo(&tuned, "berth");
        assert_eq!(host.join(), CgroupJoin::SelfMoveFavorDynmods);
        assert!(host.fast_moves());
    }

    #[test]
    fn self_moves_are_fast_on_a_kernel_that_skips_the_lock() {
        let mut host = CgroupHost::from_mountinfo(HYBRID, "berth");
        host.lockless_self_moves = true;
        assert_eq!(host.join(), CgroupJoin::SelfMove);
        assert!(host.fast_moves());
    }

    #[test]
    fn without_v1_hierarchies_nothing_moves() {
        let v2 = |path: &Path| (path == Path::new("/sys/fs/cgroup")).then_some(CGROUP2_MAGIC);
        let host =
            CgroupHost::from_standard_layout("0::/user.slice\n", "berth", v2).expect("pure v2");
        assert_eq!(host.join(), CgroupJoin::NoMove);
    }

    #[test]
    fn a_container_joins_one_v1_cgroup_per_hierarchy_it_needs() {
        let host = CgroupHost::from_mountinfo(HYBRID, "berth");
        // memory and cpu,cpuacct (cpuacct for CPU time); no devices here.
        assert_eq!(host.v1_cgroup_count(&Limits::default()), 2);
        let limits = Limits {
            pids: Some(10),
            ..Limits::default()
        };
        assert_eq!(host.v1_cgroup_count(&limits), 3);
        assert_eq!(
            host.v1_cgroup_count(&limits),
            host.paths_for("c1", &CgroupHost::needed(&limits)).v1.len()
        );
    }

    /// `/proc/self/cgroup` of a process on the hybrid host of [`HYBRID`].
    const HYBRID_OWN: &str = "\
5:pids:/user.slice
4:cpu,cpuacct:/user.slice
3:memory:/user.slice
1:name=systemd:/user.slice/session-1.scope
0::/user.slice/session-1.scope
";

    /// File-system types as on the host of [`HYBRID`].
    fn hybrid_fs(path: &Path) -> Option<i64> {
        match path.to_str()? {
            "/sys/fs/cgroup" => Some(TMPFS_MAGIC),
            "/sys/fs/cgroup/unified" => Some(CGROUP2_MAGIC),
            "/sys/fs/cgroup/memory"
            | "/sys/fs/cgroup/cpu,cpuacct"
            | "/sys/fs/cgroup/pids"
            | "/sys/fs/cgroup/systemd" => Some(CGROUP_MAGIC),
            _ => None,
        }
    }

    /// Controller → mount point, for comparing layouts.
    fn mounts(host: &CgroupHost) -> BTreeSet<(Controller, PathBuf)> {
        host.v1
            .iter()
            .flat_map(|h| h.controllers.iter().map(|c| (*c, h.mount.clone())))
            .collect()
    }

    #[test]
    fn the_standard_layout_matches_the_mount_table() {
        let fast = CgroupHost::from_standard_layout(HYBRID_OWN, "berth", hybrid_fs)
            .expect("a standard hybrid layout");
        let table = CgroupHost::from_mountinfo(HYBRID, "berth");
        assert_eq!(mounts(&fast), mounts(&table));
        assert_eq!(fast.unified, table.unified);
        assert_eq!(fast.favor_dynmods, None);
    }

    #[test]
    fn an_unusual_layout_falls_back_to_the_mount_table() {
        // A hierarchy mounted somewhere else than its standard directory.
        let moved = |path: &Path| match path.to_str() {
            Some("/sys/fs/cgroup/memory") => None,
            _ => hybrid_fs(path),
        };
        assert!(CgroupHost::from_standard_layout(HYBRID_OWN, "berth", moved).is_none());
        // /sys/fs/cgroup itself neither tmpfs nor cgroup2.
        let odd = |path: &Path| match path.to_str() {
            Some("/sys/fs/cgroup") => Some(CGROUP_MAGIC),
            _ => hybrid_fs(path),
        };
        assert!(CgroupHost::from_standard_layout(HYBRID_OWN, "berth", odd).is_none());
        // Nothing readable about our own cgroups.
        assert!(CgroupHost::from_standard_layout("", "berth", hybrid_fs).is_none());
    }

    #[test]
    fn a_unified_root_is_pure_v2() {
        let v2 = |path: &Path| (path == Path::new("/sys/fs/cgroup")).then_some(CGROUP2_MAGIC);
        let host =
            CgroupHost::from_standard_layout("0::/user.slice\n", "berth", v2).expect("pure v2");
        assert!(host.v1.is_empty());
        assert_eq!(host.unified.as_deref(), Some(Path::new("/sys/fs/cgroup")));
    }

    #[test]
    fn on_this_host_both_ways_agree() {
        // Whatever this machine's layout: when the quick way finds one, it
        // is the mount table's.
        let own = kernel_files::read(Path::new("/proc/self/cgroup")).expect("own cgroups");
        let table = CgroupHost::from_mountinfo(&read_mountinfo().expect("mountinfo"), "berth");
        if let Some(fast) = CgroupHost::from_standard_layout(&own, "berth", fs_type) {
            let table_mounts = mounts(&table);
            for entry in mounts(&fast) {
                assert!(
                    table_mounts.contains(&entry),
                    "{entry:?} not in the mount table"
                );
            }
            let fast_controllers: BTreeSet<_> = mounts(&fast).into_iter().map(|(c, _)| c).collect();
            let table_controllers: BTreeSet<_> = table_mounts.into_iter().map(|(c, _)| c).collect();
            assert_eq!(fast_controllers, table_controllers);
            assert_eq!(fast.unified, table.unified);
        }
    }

    #[test]
    fn escaped_mount_points_are_decoded() {
        assert_eq!(unescape_mount_path("/a\\040b"), "/a b");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
    }
}
