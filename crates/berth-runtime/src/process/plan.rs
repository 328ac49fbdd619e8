//! Everything the child needs, prepared by the parent before `clone`.

use crate::error::{Result, RuntimeError};
use crate::process::affinity::ChildCpus;
use crate::security::{capabilities, seccomp};
use crate::spec::{ContainerSpec, NetworkNamespace, Scratch};
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// How to create a missing mount target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    Dir,
    File,
}

/// One step of building the container's file system view. Targets are paths
/// relative to the new root, resolved with `openat2(RESOLVE_IN_ROOT)`.
#[derive(Debug)]
pub enum Step {
    /// `mount(2)` onto the target, creating it if missing.
    Mount {
        target: CString,
        create: Create,
        source: CString,
        fstype: Option<CString>,
        flags: libc::c_ulong,
        data: Option<CString>,
        /// Make the mount and everything below it read-only afterwards
        /// (`mount_setattr(AT_RECURSIVE)`, keeping nosuid/nodev/noexec).
        read_only: bool,
    },
    /// Device nodes and symlinks in the fresh `/dev` tmpfs.
    DevNodes,
    /// Join the network namespace the parent made (see
    /// [`super::network`]); comes before `/sys` is mounted.
    JoinNetwork,
    /// Make the container's tree the root and detach the host's. Steps
    /// after it resolve no host paths (volume sources come before it).
    PivotRoot,
    /// Hide a path (Docker's masked paths): `/dev/null` over files, an empty
    /// read-only tmpfs over directories. Missing paths are skipped.
    Mask { target: CString },
    /// Make an existing path read-only (Docker's read-only paths).
    ReadOnly { target: CString },
}

impl Step {
    pub fn describe(&self) -> String {
        match self {
            Step::Mount { target, .. } => format!("mounting /{}", target.to_string_lossy()),
            Step::DevNodes => "creating device nodes in /dev".into(),
            Step::JoinNetwork => "joining the network namespace".into(),
            Step::PivotRoot => "switching to the container's root".into(),
            Step::Mask { target } => format!("masking /{}", target.to_string_lossy()),
            Step::ReadOnly { target } => {
                format!("making /{} read-only", target.to_string_lossy())
            }
        }
    }
}

/// Docker's default masked paths.
const MASKED_PATHS: &[&str] = &[
    "proc/asound",
    "proc/acpi",
    "proc/interrupts",
    "proc/kcore",
    "proc/keys",
    "proc/latency_stats",
    "proc/timer_list",
    "proc/timer_stats",
    "proc/sched_debug",
    "proc/scsi",
    "sys/firmware",
    "sys/devices/virtual/powercap",
];

/// Docker's default read-only paths.
const READONLY_PATHS: &[&str] = &[
    "proc/bus",
    "proc/fs",
    "proc/irq",
    "proc/sys",
    "proc/sysrq-trigger",
];

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The fds the container's stdin, stdout and stderr come from; `None` keeps
/// the parent's.
#[derive(Debug, Default)]
pub struct StdioFds {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// Where the child's network namespace comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkSource {
    /// The parent makes a new one (see [`super::network`]).
    New,
    /// The parent opens this one, made and set up by the caller.
    Join(std::path::PathBuf),
}

/// The child's whole program, prepared by the parent.
pub struct Plan {
    /// Namespaces made by clone itself (the pid namespace must be).
    pub clone_flags: u64,
    /// Namespaces the child unshares itself, in parallel with the parent.
    pub unshare_flags: libc::c_int,
    /// On cgroup v2 the child is cloned straight into this directory.
    pub v2_cgroup_dir: Option<OwnedFd>,
    /// How many v1 cgroups the child joins: the parent sends that many
    /// `tasks` files in one message once it has made the cgroups, and the
    /// child moves itself into each (see `child::join_v1_cgroups`).
    pub v1_cgroups: usize,
    pub hostname: CString,
    /// The network namespace the parent sends to the child (none: the
    /// child stays in the host's).
    pub network: Option<NetworkSource>,
    /// Directory the overlay's relative lowerdirs are named from.
    pub layers_dir: CString,
    pub rootfs: CString,
    pub overlay_data: CString,
    /// With memory scratch: a tmpfs mounted over the container dir inside
    /// the new mount namespace, then the dirs to make in it.
    pub scratch_tmpfs: Option<ScratchTmpfs>,
    pub steps: Vec<Step>,
    pub read_only_root: bool,
    pub rlimits: Vec<(crate::spec::RawRlimitResource, libc::rlimit)>,
    /// Working directory components, created one by one if missing.
    pub cwd: CString,
    pub cwd_parts: Vec<CString>,
    pub stdio: [RawFd; 3],
    pub stdio_owned: StdioFds,
    pub terminal: bool,
    /// Exec right after setup instead of waiting for the start signal.
    pub autostart: bool,
    /// CPU sets for the child's setup and for its command (see
    /// `process::affinity`); `None` leaves the child where it is.
    pub cpus: Option<ChildCpus>,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    pub groups: Vec<rustix::process::Gid>,
    pub caps: u64,
    pub last_cap: u32,
    pub seccomp: &'static [seccomp::Instruction],
    /// Candidate paths for argv[0] (argv[0] joined to each PATH entry).
    pub exec_candidates: Vec<CString>,
    /// Owns the strings `argv_ptrs` and `envp_ptrs` point into.
    pub _argv_storage: Vec<CString>,
    pub _envp_storage: Vec<CString>,
    pub argv_ptrs: Vec<*const libc::c_char>,
    pub envp_ptrs: Vec<*const libc::c_char>,
}

fn cstring(what: &str, s: impl Into<Vec<u8>>) -> Result<CString> {
    CString::new(s).map_err(|_| RuntimeError::InvalidSpec(format!("{what} contains a NUL byte")))
}

fn path_cstring(what: &str, p: &Path) -> Result<CString> {
    cstring(what, p.as_os_str().as_bytes())
}

/// Paths inside the container, relative to its root ("/a/b" → "a/b").
fn relative(path: &str) -> String {
    path.trim_start_matches('/').to_owned()
}

/// The in-namespace tmpfs holding the overlay's upper and work dirs.
#[derive(Debug)]
pub struct ScratchTmpfs {
    pub mount_point: CString,
    pub options: CString,
    /// upper, work and the overlay mount point, created inside the tmpfs.
    pub dirs: [CString; 3],
}

/// Host facts the plan depends on, detected once by the runtime.
#[derive(Debug, Clone, Copy)]
pub struct HostFeatures {
    /// Overlayfs `volatile` (5.10+): skip syncs on a throw-away upper dir.
    pub overlay_volatile: bool,
    /// Device cgroup enforced; otherwise CAP_MKNOD is dropped as well.
    pub device_cgroup: bool,
    pub last_cap: u32,
}

/// Where a container's writable layer and mount point live. With memory
/// scratch `dir` is the tmpfs mount point and the others are inside it.
pub struct RootfsDirs<'a> {
    pub dir: &'a Path,
    pub rootfs: &'a Path,
    pub upper: &'a Path,
    pub work: &'a Path,
}

impl Plan {
    pub fn new(
        spec: &ContainerSpec,
        dirs: &RootfsDirs<'_>,
        features: HostFeatures,
        stdio: StdioFds,
    ) -> Result<Plan> {
        let clone_flags = libc::CLONE_NEWPID as u64;
        // The network namespace comes from the parent (Step::JoinNetwork).
        let unshare_flags = libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;

        let (layers_dir, overlay_data) = overlay_options(spec, dirs, features)?;
        let scratch_tmpfs = match spec.rootfs.scratch {
            Scratch::Disk => None,
            Scratch::Memory => Some(ScratchTmpfs {
                mount_point: path_cstring("container dir", dirs.dir)?,
                options: cstring(
                    "scratch options",
                    match spec.rootfs.scratch_size {
                        Some(size) => format!("mode=0700,size={}", size.bytes()),
                        None => "mode=0700".to_owned(),
                    },
                )?,
                dirs: [
                    path_cstring("upper dir", dirs.upper)?,
                    path_cstring("work dir", dirs.work)?,
                    path_cstring("rootfs", dirs.rootfs)?,
                ],
            }),
        };

        // Order: the mounts that do not depend on the network namespace,
        // then Docker's guards over /proc (work the child does while the
        // parent still makes the namespace), then /sys, the volumes and the
        // guards over /sys. Guards win over volumes: with a volume inside
        // /proc, the /proc guards wait until after the volumes. The pivot
        // comes last, since volume sources are host paths; without volumes
        // it comes before the join, so that the old root's detach (a helper
        // waits out its RCU grace period, see child::OldRoot) overlaps the
        // join and the /sys steps as well as the parent's work.
        let volume_in_proc = spec
            .mounts
            .iter()
            .any(|m| Path::new(&m.destination).starts_with("/proc"));
        let proc_guards = guard_steps("proc/")?;
        let (early_proc_guards, late_proc_guards) = if volume_in_proc {
            (Vec::new(), proc_guards)
        } else {
            (proc_guards, Vec::new())
        };
        let early_pivot = spec.mounts.is_empty();
        let mut steps = first_mounts()?;
        steps.extend(early_proc_guards);
        if early_pivot {
            steps.push(Step::PivotRoot);
        }
        if spec.network != NetworkNamespace::Host {
            steps.push(Step::JoinNetwork);
        }
        steps.push(sys_mount()?);
        for m in &spec.mounts {
            let ro = m.read_only;
            let create = if m.source.is_dir() {
                Create::Dir
            } else {
                Create::File
            };
            steps.push(Step::Mount {
                target: cstring("volume destination", relative(&m.destination))?,
                create,
                source: path_cstring("volume source", &m.source)?,
                fstype: None,
                flags: libc::MS_BIND | libc::MS_REC,
                data: None,
                read_only: ro,
            });
        }
        steps.extend(late_proc_guards);
        steps.extend(guard_steps("sys/")?);
        if !early_pivot {
            steps.push(Step::PivotRoot);
        }

        let rlimits = spec
            .process
            .rlimits
            .iter()
            .map(|r| {
                (
                    crate::spec::raw_rlimit_resource(r.resource),
                    libc::rlimit {
                        rlim_cur: r.soft,
                        rlim_max: r.hard,
                    },
                )
            })
            .collect();

        let cwd_parts = spec
            .process
            .cwd
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .map(|c| cstring("working directory", c))
            .collect::<Result<Vec<_>>>()?;

        let argv: Vec<CString> = spec
            .process
            .args
            .iter()
            .map(|a| cstring("argument", a.as_str()))
            .collect::<Result<_>>()?;
        let envp: Vec<CString> = spec
            .process
            .env
            .iter()
            .map(|e| cstring("environment entry", e.as_str()))
            .collect::<Result<_>>()?;
        let exec_candidates = exec_candidates(&spec.process.args[0], &spec.process.env)?;
        let argv_ptrs = null_terminated(&argv);
        let envp_ptrs = null_terminated(&envp);

        let mut caps = capabilities::mask(capabilities::DEFAULT_CAPS);
        if !features.device_cgroup {
            // Without a device cgroup, a container able to mknod could reach
            // host block devices; take the capability away instead.
            caps &= !(1u64 << capabilities::cap::MKNOD);
        }
        let raw = |fd: &Option<OwnedFd>| fd.as_ref().map_or(-1, |f| f.as_raw_fd());
        Ok(Plan {
            clone_flags,
            unshare_flags,
            v2_cgroup_dir: None,
            v1_cgroups: 0,
            hostname: cstring("hostname", spec.effective_hostname())?,
            network: match &spec.network {
                NetworkNamespace::Host => None,
                NetworkNamespace::New => Some(NetworkSource::New),
                NetworkNamespace::Join(path) => Some(NetworkSource::Join(path.clone())),
            },
            layers_dir,
            rootfs: path_cstring("rootfs", dirs.rootfs)?,
            overlay_data,
            scratch_tmpfs,
            steps,
            read_only_root: spec.rootfs.read_only,
            rlimits,
            cwd: cstring("working directory", spec.process.cwd.as_str())?,
            cwd_parts,
            stdio: [raw(&stdio.stdin), raw(&stdio.stdout), raw(&stdio.stderr)],
            stdio_owned: stdio,
            terminal: spec.process.terminal,
            autostart: false,
            cpus: None,
            uid: spec.process.user.uid,
            gid: spec.process.user.gid,
            groups: spec
                .process
                .user
                .additional_gids
                .iter()
                .map(|g| rustix::process::Gid::from_raw_unchecked(*g))
                .collect(),
            caps,
            last_cap: features.last_cap,
            seccomp: seccomp::default_filter(),
            exec_candidates,
            _argv_storage: argv,
            _envp_storage: envp,
            argv_ptrs,
            envp_ptrs,
        })
    }

    /// Describes the step at `index` for error messages.
    pub fn describe_step(&self, index: u32) -> String {
        self.steps
            .get(index as usize)
            .map_or_else(|| format!("step {index}"), Step::describe)
    }
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Overlay options. Lower dirs are named relative to their common parent
/// (the child chdirs there first) so that many layers fit in one page.
fn overlay_options(
    spec: &ContainerSpec,
    dirs: &RootfsDirs<'_>,
    features: HostFeatures,
) -> Result<(CString, CString)> {
    let layers = &spec.rootfs.layers;
    let common_parent = layers[0].parent().filter(|parent| {
        layers
            .iter()
            .all(|l| l.parent() == Some(*parent) && l.file_name().is_some())
    });
    let name = |l: &Path| -> String {
        match common_parent {
            Some(_) => l
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            None => l.to_string_lossy().into_owned(),
        }
    };
    for l in layers {
        let text = l.to_string_lossy();
        if text.contains([':', ',', '\\']) || !l.is_absolute() {
            return Err(RuntimeError::InvalidSpec(format!(
                "layer path {text:?} must be absolute and free of ':', ',' and '\\'"
            )));
        }
    }
    // overlayfs lists the topmost lower dir first.
    let lower: Vec<String> = layers.iter().rev().map(|l| name(l)).collect();
    let mut data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        dirs.upper.display(),
        dirs.work.display()
    );
    if features.overlay_volatile && spec.rootfs.scratch == Scratch::Disk {
        data.push_str(",volatile");
    }
    // The kernel reads mount options from a single page.
    if data.len() >= 4095 {
        return Err(RuntimeError::LimitUnsupported(format!(
            "the image has {} layers, more than fit in one overlay mount here",
            layers.len()
        )));
    }
    let dir = common_parent.unwrap_or(Path::new("/"));
    Ok((
        path_cstring("layers dir", dir)?,
        cstring("overlay options", data)?,
    ))
}

fn mount_step(
    target: &str,
    source: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<Step> {
    Ok(Step::Mount {
        target: cstring("target", target)?,
        create: Create::Dir,
        source: cstring("source", source)?,
        fstype: Some(cstring("fstype", fstype)?),
        flags,
        data: data.map(|d| cstring("data", d)).transpose()?,
        read_only: false,
    })
}

const SECURE: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

/// /proc and /dev.
fn first_mounts() -> Result<Vec<Step>> {
    Ok(vec![
        mount_step("proc", "proc", "proc", SECURE, None)?,
        mount_step(
            "dev",
            "tmpfs",
            "tmpfs",
            libc::MS_NOSUID | libc::MS_STRICTATIME,
            Some("mode=755,size=65536k"),
        )?,
        Step::DevNodes,
        mount_step(
            "dev/pts",
            "devpts",
            "devpts",
            libc::MS_NOSUID | libc::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
        )?,
        mount_step(
            "dev/shm",
            "shm",
            "tmpfs",
            SECURE,
            Some("mode=1777,size=65536k"),
        )?,
        mount_step("dev/mqueue", "mqueue", "mqueue", SECURE, None)?,
    ])
}

/// /sys, read-only (with the host network it shows the host's devices).
fn sys_mount() -> Result<Step> {
    mount_step("sys", "sysfs", "sysfs", SECURE | libc::MS_RDONLY, None)
}

/// Docker's masked and read-only paths under `under` ("proc/" or "sys/").
fn guard_steps(under: &str) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    for target in MASKED_PATHS.iter().filter(|p| p.starts_with(under)) {
        steps.push(Step::Mask {
            target: cstring("path", *target)?,
        });
    }
    for target in READONLY_PATHS.iter().filter(|p| p.starts_with(under)) {
        steps.push(Step::ReadOnly {
            target: cstring("path", *target)?,
        });
    }
    Ok(steps)
}

/// execvp semantics, decided in the parent: a name with `/` is used as is,
/// otherwise it is tried in each directory of the container's `PATH`.
fn exec_candidates(program: &str, env: &[String]) -> Result<Vec<CString>> {
    if program.contains('/') {
        return Ok(vec![cstring("command", program)?]);
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    path.split(':')
        .map(|dir| {
            let dir = if dir.is_empty() { "." } else { dir };
            cstring(
                "command",
                format!("{}/{program}", dir.trim_end_matches('/')),
            )
        })
        .collect()
}

/// `PATH` as the container will search it, for error messages.
pub fn search_path(env: &[String]) -> String {
    env.iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_owned()
}

/// Formats "/proc/self/fd/N" into `buf` without allocating.
pub fn proc_fd_path(fd: RawFd, buf: &mut [u8; 32]) -> &CStr {
    let prefix = b"/proc/self/fd/";
    buf[..prefix.len()].copy_from_slice(prefix);
    let mut digits = [0u8; 12];
    let mut n = fd.max(0) as u32;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        buf[prefix.len() + i] = digits[len - 1 - i];
    }
    buf[prefix.len() + len] = 0;
    // SAFETY: we wrote a NUL right after the digits and no NUL before it.
    unsafe { CStr::from_bytes_with_nul_unchecked(&buf[..prefix.len() + len + 1]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_guard_is_under_proc_or_sys() {
        let placed = guard_steps("proc/").unwrap().len() + guard_steps("sys/").unwrap().len();
        assert_eq!(placed, MASKED_PATHS.len() + READONLY_PATHS.len());
    }

    fn plan_with_volumes(mounts: Vec<crate::spec::BindMount>) -> Plan {
        let mut spec = ContainerSpec::new(
            berth_core::ContainerId::new("plan-test").unwrap(),
            vec!["/layers/a".into()],
            vec!["true".into()],
        );
        spec.network = NetworkNamespace::New;
        spec.mounts = mounts;
        let dir = Path::new("/containers");
        let dirs = RootfsDirs {
            dir,
            rootfs: &dir.join("rootfs"),
            upper: &dir.join("upper"),
            work: &dir.join("work"),
        };
        let features = HostFeatures {
            overlay_volatile: true,
            device_cgroup: true,
            last_cap: 40,
        };
        Plan::new(&spec, &dirs, features, StdioFds::default()).unwrap()
    }

    fn position(plan: &Plan, wanted: fn(&Step) -> bool) -> usize {
        plan.steps.iter().position(wanted).unwrap()
    }

    #[test]
    fn without_volumes_the_pivot_overlaps_the_wait_for_the_network() {
        let plan = plan_with_volumes(vec![]);
        let pivot = position(&plan, |s| matches!(s, Step::PivotRoot));
        let join = position(&plan, |s| matches!(s, Step::JoinNetwork));
        assert_eq!(pivot + 1, join);
    }

    #[test]
    fn volume_sources_are_mounted_before_the_host_root_is_detached() {
        let plan = plan_with_volumes(vec![crate::spec::BindMount {
            source: "/srv/data".into(),
            destination: "/data".into(),
            read_only: false,
        }]);
        let pivot = position(&plan, |s| matches!(s, Step::PivotRoot));
        let volume = position(
            &plan,
            |s| matches!(s, Step::Mount { source, .. } if source.as_bytes() == b"/srv/data"),
        );
        assert!(volume < pivot);
        assert_eq!(pivot, plan.steps.len() - 1);
    }

    #[test]
    fn proc_fd_paths_format_without_allocation() {
        let mut buf = [0u8; 32];
        assert_eq!(
            proc_fd_path(7, &mut buf).to_str().unwrap(),
            "/proc/self/fd/7"
        );
        assert_eq!(
            proc_fd_path(1234, &mut buf).to_str().unwrap(),
            "/proc/self/fd/1234"
        );
        assert_eq!(
            proc_fd_path(0, &mut buf).to_str().unwrap(),
            "/proc/self/fd/0"
        );
    }

    #[test]
    fn commands_are_searched_in_the_container_path() {
        let env = vec!["PATH=/bin:/usr/bin".to_owned()];
        let c = exec_candidates("sh", &env).unwrap();
        assert_eq!(c, vec![c"/bin/sh".to_owned(), c"/usr/bin/sh".to_owned()]);
        let c = exec_candidates("./run", &env).unwrap();
        assert_eq!(c, vec![c"./run".to_owned()]);
        assert_eq!(exec_candidates("x", &[]).unwrap().len(), 6);
    }
}
