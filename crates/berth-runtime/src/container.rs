//! The container lifecycle: create → start → wait → delete.

use crate::cgroup::{CgroupHost, CgroupMetrics, CgroupStats, ContainerCgroup};
use crate::error::{Result, RuntimeError};
use crate::process::affinity;
use crate::process::child::{go, monotonic_ns, Channels, Report, Stage, StageClock};
use crate::process::fdpass::{recv_fd, send_fd, send_fds};
use crate::process::network;
use crate::process::plan::{search_path, HostFeatures, NetworkSource, Plan, RootfsDirs, StdioFds};
use crate::process::spawn::{spawn, Spawned};
use crate::spec::{ContainerSpec, Scratch};
use berth_core::ContainerId;
use berth_core::ContainerResult;
use rustix::fd::{AsFd, BorrowedFd};
use rustix::fs::{flock, FlockOperation, Mode, OFlags};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Sets up a container's new network namespace from outside (its links,
/// addresses and routes), given a handle to it. The runtime calls it from
/// the parent once the namespace is made and handed to the child, while
/// the child builds its mounts on the other CPU, and lets the process run
/// only after it returned; an error aborts the create.
pub type NetworkSetup<'a> = &'a mut dyn FnMut(BorrowedFd<'_>) -> io::Result<()>;

/// How [`Runtime::create_with`] creates a container.
#[derive(Default)]
pub struct CreateOptions<'a> {
    /// Run the command as soon as the container is set up
    /// ([`Runtime::create_and_start`]).
    pub start: bool,
    /// Wires the container's network namespace, which must be its own new
    /// one (`NetworkNamespace::New`), in parallel with the rest of its
    /// setup: what a network made beforehand and joined would add to a
    /// start in series.
    pub network_setup: Option<NetworkSetup<'a>>,
}

/// Where the runtime keeps per-container files and cgroups.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// One directory per container (upper dir, work dir, mount point).
    pub containers_dir: PathBuf,
    /// Name of the parent cgroup in every hierarchy.
    pub cgroup_parent: String,
}

/// The runtime: host facts detected once, shared by every container.
pub struct Runtime {
    config: RuntimeConfig,
    /// Record per-stage setup times (BERTH_STAGE_TIMINGS=1); for profiling.
    stage_timings: bool,
    cgroups: CgroupHost,
    features: HostFeatures,
    online_cpus: u32,
}

/// How a container's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
}

impl ExitStatus {
    /// The shell convention: the exit code, or 128 + the signal number.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Exited(c) => c,
            ExitStatus::Signaled(s) => 128 + s,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Created,
    Running,
    Exited(ExitStatus),
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Created => "created",
            State::Running => "running",
            State::Exited(_) => "exited",
        }
    }
}

/// A container this process created and supervises.
pub struct Container {
    id: ContainerId,
    pid: libc::pid_t,
    pidfd: OwnedFd,
    cgroup: ContainerCgroup,
    /// `<containers_dir>/<id>`: the container's directory (disk scratch)
    /// or its lock file (memory scratch).
    claim: PathBuf,
    /// flock'd for the container's lifetime: `gc` leaves locked claims alone.
    _lock: OwnedFd,
    report: OwnedFd,
    start: Option<OwnedFd>,
    /// The byte that lets the child go on (see process::child::go).
    go: u8,
    pty_master: Option<OwnedFd>,
    state: State,
    started_at: Option<Instant>,
    timeout: Option<Duration>,
    timed_out: bool,
    final_stats: Option<CgroupStats>,
    program: String,
    search_path: String,
    deleted: bool,
    stage_clock: Option<(StageClock, u64)>,
}

/// CPUs online on the host: the ceiling for `--cpus`. (Not
/// `available_parallelism`, which reads cgroup quota files on every call.)
fn online_cpus() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 {
        n as u32
    } else {
        1
    }
}

impl Runtime {
    /// Detects the host (cgroup layout, kernel features) once.
    pub fn new(config: RuntimeConfig) -> Result<Runtime> {
        let cgroups = CgroupHost::detect(&config.cgroup_parent)?;
        let features = HostFeatures {
            overlay_volatile: crate::kernel::at_least(5, 10),
            device_cgroup: cgroups.restricts_devices(),
            last_cap: crate::security::capabilities::last_cap(),
        };
        fs::create_dir_all(&config.containers_dir).map_err(|e| {
            RuntimeError::host_io(format!("creating {}", config.containers_dir.display()), e)
        })?;
        Ok(Runtime {
            config,
            stage_timings: std::env::var_os("BERTH_STAGE_TIMINGS").is_some(),
            cgroups,
            features,
            online_cpus: online_cpus(),
        })
    }

    pub fn cgroups(&self) -> &CgroupHost {
        &self.cgroups
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// The network namespace of a running container of this runtime
    /// (`/proc/PID/ns/net` of one of its processes), for another container
    /// to join; `None` if no container of that id runs here.
    pub fn network_namespace_of(&self, id: &str) -> Option<PathBuf> {
        if !self.config.containers_dir.join(id).exists() {
            return None;
        }
        ContainerCgroup::existing(&self.cgroups, id)
            .pids()
            .into_iter()
            .map(|pid| PathBuf::from(format!("/proc/{pid}/ns/net")))
            .find(|path| path.exists())
    }

    /// Metrics of container `id`'s cgroups, whether or not this process
    /// created it (the host agent reads containers started by shims).
    /// Errors with `container_not_found` when the container has no cgroup
    /// at all (unknown, or already torn down). On v1 hosts a container has
    /// a pids and a cpu cgroup only when it has a pids or CPU limit, so
    /// without one its `pids_*` and `cpu_throttled_*` are `None`.
    pub fn container_metrics(&self, id: &ContainerId) -> Result<CgroupMetrics> {
        self.cgroups
            .container_metrics(id.as_str())
            .ok_or_else(|| RuntimeError::ContainerNotFound(id.to_string()))
    }

    /// The same for the cgroup parent: all containers of this runtime's
    /// cgroup parent together (memory and CPU time are hierarchical; see
    /// [`CgroupMetrics`] for the counters that are not). On v1 hosts a
    /// container joins the pids and cpu hierarchies only when it has a pids
    /// or CPU limit, so the parent's `pids_current` counts only the tasks
    /// of those containers.
    pub fn node_metrics(&self) -> Result<CgroupMetrics> {
        self.cgroups.node_metrics()
    }

    /// Checks a spec without touching the host.
    pub fn validate(&self, spec: &ContainerSpec) -> Result<()> {
        spec.validate(self.online_cpus)?;
        if spec.rootfs.scratch == Scratch::Memory {
            self.check_not_hidden_by_scratch(spec)?;
        }
        self.cgroups.check_enforceable(&spec.limits)
    }

    /// Creates the container: cgroups, root file system and a process that
    /// waits, fully set up, for [`Container::start`] to run the command.
    ///
    /// Must be called from a single-threaded process (the CLI before it
    /// starts threads, or the shim); see ARCHITECTURE.md.
    pub fn create(&self, spec: &ContainerSpec, stdio: StdioFds) -> Result<Container> {
        self.create_with(spec, stdio, CreateOptions::default())
    }

    /// [`Runtime::create`] and [`Container::start`] in one step: the child
    /// runs the command as soon as it is set up, saving a round trip. Setup
    /// and exec errors are reported exactly as by the two-step path.
    /// A terminal needs the two-step path (the caller must take the pty
    /// before the command runs), so terminal specs are refused here.
    pub fn create_and_start(&self, spec: &ContainerSpec, stdio: StdioFds) -> Result<Container> {
        let options = CreateOptions {
            start: true,
            ..CreateOptions::default()
        };
        self.create_with(spec, stdio, options)
    }

    /// [`Runtime::create`], or [`Runtime::create_and_start`] with
    /// `options.start`, and with a network setup if the options have one.
    pub fn create_with(
        &self,
        spec: &ContainerSpec,
        stdio: StdioFds,
        options: CreateOptions<'_>,
    ) -> Result<Container> {
        if options.start && spec.process.terminal {
            return Err(RuntimeError::InvalidSpec(
                "a container with a terminal must be created, then started".into(),
            ));
        }
        if options.network_setup.is_some() && spec.network != crate::spec::NetworkNamespace::New {
            return Err(RuntimeError::InvalidSpec(
                "a network setup needs the container's own new network namespace".into(),
            ));
        }
        self.create_inner(spec, stdio, options.start, options.network_setup)
    }

    fn create_inner(
        &self,
        spec: &ContainerSpec,
        stdio: StdioFds,
        autostart: bool,
        network_setup: Option<NetworkSetup<'_>>,
    ) -> Result<Container> {
        self.validate(spec)?;
        let id = spec.id.as_str();
        let (claim, lock) = self.claim(id, spec.rootfs.scratch)?;
        let created = self.create_in(spec, &claim, lock, stdio, autostart, network_setup);
        if created.is_err() {
            // Keep the claim while any cgroup of the container remains, so
            // that `gc` can find and finish the cleanup.
            let leftover = ContainerCgroup::existing(&self.cgroups, id);
            if !leftover.paths.all().any(Path::exists) {
                let _ = remove_claim(id, &claim);
            }
        }
        created
    }

    /// Creates `<containers_dir>/<id>` and locks it, retrying if `gc`
    /// removed it between the create and the lock. A disk-scratch
    /// container gets a directory (its writable layer goes inside); a
    /// memory-scratch one only a lock file, since its writable layer lives
    /// in a tmpfs inside its own mount namespace. A file is the cheaper
    /// claim: a directory owns a data block, and freeing it on a filesystem
    /// mounted with `discard` waits for the device (~0.1 ms per container).
    fn claim(&self, id: &str, scratch: Scratch) -> Result<(PathBuf, OwnedFd)> {
        let path = self.config.containers_dir.join(id);
        let make = |path: &Path| -> io::Result<OwnedFd> {
            match scratch {
                Scratch::Disk => {
                    fs::create_dir(path)?;
                    open_claim_fd(path)
                }
                Scratch::Memory => rustix::fs::open(
                    path,
                    OFlags::RDONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
                    Mode::RUSR | Mode::WUSR,
                )
                .map_err(io::Error::from),
            }
        };
        // Held from the create to the lock so that `gc` never sees this
        // claim unlocked and takes it for a crashed supervisor's.
        let _creating =
            lock_containers_dir(&self.config.containers_dir, FlockOperation::LockShared)?;
        for _ in 0..3 {
            let lock = match make(&path) {
                Ok(lock) => lock,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(RuntimeError::ContainerExists(id.to_owned()))
                }
                Err(e) => {
                    return Err(RuntimeError::host_io(
                        format!("creating {}", path.display()),
                        e,
                    ))
                }
            };
            flock(&lock, FlockOperation::LockExclusive)
                .map_err(|e| RuntimeError::host_io(format!("locking {}", path.display()), e))?;
            let stat = rustix::fs::fstat(&lock)
                .map_err(|e| RuntimeError::host_io(format!("stat {}", path.display()), e))?;
            if stat.st_nlink > 0 {
                return Ok((path, lock));
            }
        }
        Err(RuntimeError::host_io(
            format!("claiming {}", path.display()),
            io::Error::from_raw_os_error(libc::EAGAIN),
        ))
    }

    fn create_in(
        &self,
        spec: &ContainerSpec,
        claim: &Path,
        lock: OwnedFd,
        stdio: StdioFds,
        autostart: bool,
        network_setup: Option<NetworkSetup<'_>>,
    ) -> Result<Container> {
        // Memory scratch: the child mounts its tmpfs over the containers
        // dir itself, in its own mount namespace (each container sees only
        // its own there), and makes these inside it.
        let dir = match spec.rootfs.scratch {
            Scratch::Disk => claim,
            Scratch::Memory => self.config.containers_dir.as_path(),
        };
        let rootfs = dir.join("rootfs");
        let upper = dir.join("upper");
        let work = dir.join("work");
        if spec.rootfs.scratch == Scratch::Disk {
            for d in [&rootfs, &upper, &work] {
                fs::create_dir(d)
                    .map_err(|e| RuntimeError::rootfs(format!("creating {}", d.display()), e))?;
            }
        }
        let dirs = RootfsDirs {
            dir,
            rootfs: &rootfs,
            upper: &upper,
            work: &work,
        };
        let mut plan = Plan::new(spec, &dirs, self.features, stdio)?;
        plan.autostart = autostart;
        plan.v1_cgroups = self.cgroups.v1_cgroup_count(&spec.limits);

        // On cgroup v2 the child is cloned straight into its cgroup, which
        // must exist first. On v1 the cgroups are made while the child builds
        // its namespaces and mounts on the other CPU; the parent then sends
        // their `tasks` files and the child moves itself in before it may
        // exec (see child::join_v1_cgroups for why not the parent, by pid).
        let early_cgroup = if self.cgroups.uses_v2() {
            let cgroup = self.cgroups.create(spec.id.as_str(), &spec.limits)?;
            match cgroup.v2_dir_handle() {
                Ok(handle) => plan.v2_cgroup_dir = handle,
                Err(e) => {
                    let _ = cgroup.remove(Duration::from_millis(100));
                    return Err(e);
                }
            }
            Some(cgroup)
        } else {
            None
        };

        let spawned = (|| {
            let (report_r, report_w) = cloexec_pipe()?;
            // A socket, not a pipe: it also carries the network namespace.
            let (start_w, start_r) = socket_pair()?;
            let pty_pair = if plan.terminal {
                Some(socket_pair()?)
            } else {
                None
            };
            let mut channels = Channels {
                report: report_w.as_raw_fd(),
                start: start_r.as_raw_fd(),
                pty: pty_pair.as_ref().map_or(-1, |(_, child)| child.as_raw_fd()),
                clock: self.stage_timings.then(StageClock::new).flatten(),
                parent_ends: [
                    report_r.as_raw_fd(),
                    start_w.as_raw_fd(),
                    pty_pair
                        .as_ref()
                        .map_or(-1, |(parent, _)| parent.as_raw_fd()),
                ],
            };
            // Read on this thread just before the clone; right after it, the
            // child is moved off this CPU (by us here, and by itself if it
            // runs first) and builds its mounts on another while this one
            // makes the network namespace and cgroups (see process::affinity).
            plan.cpus = affinity::for_child();
            let clone_at = monotonic_ns();
            let spawned = spawn(&plan, &channels)?;
            let go = match &plan.cpus {
                Some(cpus) if affinity::push_child(spawned.pid, cpus) => {
                    go::RUN | go::PARENT_NARROWED
                }
                _ => go::RUN,
            };
            let clock = channels.clock.take().map(|c| (c, clone_at));
            // The child's ends must close here so that EOF means "exec'd".
            drop((report_w, start_r));
            let pty_parent = pty_pair.map(|(parent, _child)| parent);
            Ok::<_, RuntimeError>((spawned, go, report_r, start_w, pty_parent, clock))
        })();
        // The plan's stdio fds belong to the child now.
        drop(std::mem::take(&mut plan.stdio_owned));
        let (Spawned { pid, pidfd }, go, report, start, pty_parent, stage_clock) = match spawned {
            Ok(s) => s,
            Err(e) => {
                if let Some(cgroup) = early_cgroup {
                    let _ = cgroup.remove(Duration::from_millis(100));
                }
                return Err(e);
            }
        };
        // A failure is reported once the container exists: if the child
        // already failed (the usual reason the send breaks), its own report
        // is the better error.
        let (namespace, network_error) = match plan.network.as_ref() {
            Some(source) => match send_network_namespace(&start, source) {
                Ok(namespace) => (Some(namespace), None),
                Err(e) => (None, Some(e)),
            },
            None => (None, None),
        };
        let cgroup = match early_cgroup {
            Some(cgroup) => cgroup,
            None => match self.cgroups.create(spec.id.as_str(), &spec.limits) {
                Ok(cgroup) => cgroup,
                Err(e) => {
                    abort_child(&pidfd);
                    return Err(e);
                }
            },
        };

        let mut container = Container {
            id: spec.id.clone(),
            pid,
            pidfd,
            cgroup,
            claim: claim.to_owned(),
            _lock: lock,
            report,
            start: Some(start),
            go,
            pty_master: None,
            state: State::Created,
            started_at: None,
            timeout: spec.limits.timeout,
            timed_out: false,
            final_stats: None,
            program: spec.process.args[0].clone(),
            search_path: search_path(&spec.process.env),
            deleted: false,
            stage_clock,
        };
        if let Some(e) = network_error {
            return Err(container.abort(e, &plan));
        }
        // Every v1 hierarchy (all of them on v1 hosts, the v1 part of mixed
        // hosts) is joined by the child itself, before it may go on to exec.
        if plan.v1_cgroups > 0 {
            if let Err(e) = container.send_v1_cgroup_files() {
                return Err(container.abort(e, &plan));
            }
        }
        // After the cgroups, so that the child is not kept waiting for them
        // while the network is wired; before `go`, so that the process
        // never runs without its network.
        if let (Some(setup), Some(namespace)) = (network_setup, &namespace) {
            if let Err(e) = setup(namespace.as_fd()) {
                let e = RuntimeError::spawn("setting up the container's network", e);
                return Err(container.abort(e, &plan));
            }
        }
        drop(namespace);
        if autostart {
            container.started_at = Some(Instant::now());
            container.state = State::Running;
            if let Some(start) = container.start.take() {
                if let Err(e) = rustix::io::write(&start, &[go]) {
                    // Most likely the child already failed: prefer its report.
                    let e = RuntimeError::spawn("signalling the container to start", e);
                    return Err(container.abort(e, &plan));
                }
            }
            if let Err(e) = container.await_exec(Some(&plan)) {
                let _ = container.teardown();
                return Err(e);
            }
            return Ok(container);
        }
        let setup = match read_report(&container.report) {
            Ok(Some(r)) if r.stage == Stage::Ready as u32 => Ok(()),
            Ok(Some(r)) => Err(container.child_error(r, Some(&plan))),
            Ok(None) => Err(RuntimeError::spawn(
                "container process exited during setup",
                io::Error::from_raw_os_error(libc::ECHILD),
            )),
            Err(e) => Err(RuntimeError::spawn("reading the setup report", e)),
        };
        if let Err(e) = setup {
            let _ = container.teardown();
            return Err(e);
        }
        if let Some(sock) = pty_parent {
            match receive_fd(&sock) {
                Ok(master) => container.pty_master = Some(master),
                Err(e) => {
                    let _ = container.teardown();
                    return Err(RuntimeError::spawn("receiving the terminal", e));
                }
            }
        }
        Ok(container)
    }

    /// A memory-scratch container's tmpfs covers the containers dir in its
    /// mount namespace: a layer or volume from inside it would be hidden.
    fn check_not_hidden_by_scratch(&self, spec: &ContainerSpec) -> Result<()> {
        let covered = &self.config.containers_dir;
        let mut sources = spec
            .rootfs
            .layers
            .iter()
            .chain(spec.mounts.iter().map(|m| &m.source));
        match sources.find(|p| p.starts_with(covered)) {
            Some(p) => Err(RuntimeError::InvalidSpec(format!(
                "{} lies inside the runtime's containers dir {}, which a memory-scratch container's writable layer covers",
                p.display(),
                covered.display()
            ))),
            None => Ok(()),
        }
    }

    /// Removes what crashed supervisors left behind: container directories
    /// under this runtime's `containers_dir` that no live process holds a
    /// lock on, with their processes and cgroups. Returns the ids removed.
    ///
    /// Only containers whose directory is ours are touched: another berth
    /// with another data dir may share the cgroup parent, and its
    /// containers are none of our business.
    pub fn gc(&self) -> Result<Vec<String>> {
        self.gc_dir(&self.config.containers_dir)
    }

    /// [`Runtime::gc`] of another containers dir sharing this runtime's
    /// cgroup parent (the agent keeps memory-scratch containers apart, on
    /// a tmpfs).
    pub fn gc_dir(&self, containers_dir: &Path) -> Result<Vec<String>> {
        let mut cleaned = Vec::new();
        let mut first_error = None;
        let entries = match fs::read_dir(containers_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(cleaned),
            Err(e) => return Err(RuntimeError::host_io("reading the containers dir", e)),
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let claim = entry.path();
            let Ok(lock) = open_claim(&claim) else {
                continue;
            };
            // A claim being created is unlocked for a moment; its creator
            // holds the dir shared meanwhile, so wait for it.
            let creators_done = lock_containers_dir(containers_dir, FlockOperation::LockExclusive)?;
            let ours = flock(&lock, FlockOperation::NonBlockingLockExclusive).is_ok();
            drop(creators_done);
            if !ours {
                continue; // a live supervisor holds it
            }
            // One stuck container must not stop the sweep: clean what can
            // be cleaned and report the first failure at the end.
            let cgroup = ContainerCgroup::existing(&self.cgroups, &name);
            let result = cgroup
                .kill_all(Duration::from_secs(2))
                .and_then(|()| cgroup.remove(Duration::from_secs(2)))
                .and_then(|()| remove_claim(&name, &claim));
            match result {
                Ok(()) => cleaned.push(name),
                Err(e) => {
                    tracing::warn!(id = %name, error = %e, "gc could not clean up a container");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if cleaned.is_empty() => Err(e),
            _ => Ok(cleaned),
        }
    }
}

/// Locks the containers dir itself (a fresh open file description each
/// time, so that threads of one process do not share the lock): creators
/// hold it shared between creating a claim and locking it, `gc` exclusive
/// while it tests a claim's lock.
fn lock_containers_dir(dir: &Path, how: FlockOperation) -> Result<OwnedFd> {
    let fd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| RuntimeError::host_io(format!("opening {}", dir.display()), e))?;
    flock(&fd, how).map_err(|e| RuntimeError::host_io(format!("locking {}", dir.display()), e))?;
    Ok(fd)
}

/// Opens a container's claim (its directory or lock file) for locking.
fn open_claim(claim: &Path) -> Result<OwnedFd> {
    open_claim_fd(claim)
        .map_err(|e| RuntimeError::host_io(format!("opening {}", claim.display()), e))
}

fn open_claim_fd(claim: &Path) -> io::Result<OwnedFd> {
    rustix::fs::open(
        claim,
        // NONBLOCK: a fifo planted here must not hang the sweep.
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// Removes a container's claim: its directory with everything in it, or
/// its lock file.
fn remove_claim(id: &str, claim: &Path) -> Result<()> {
    let removed = match fs::symlink_metadata(claim) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(claim),
        Ok(_) => fs::remove_file(claim),
        Err(e) => Err(e),
    };
    match removed {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(RuntimeError::Teardown {
            id: id.to_owned(),
            what: format!("removing {}", claim.display()),
            source: e,
        }),
    }
}

/// Makes (or opens) the container's network namespace and sends it to the
/// child, which joins it and brings its loopback up before mounting `/sys`.
/// Returns it, for a [`NetworkSetup`].
fn send_network_namespace(start: &OwnedFd, source: &NetworkSource) -> Result<OwnedFd> {
    let ns = match source {
        NetworkSource::New => network::new_namespace()
            .map_err(|e| RuntimeError::spawn("creating the network namespace", e))?,
        NetworkSource::Join(path) => rustix::fs::open(
            path,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| {
            RuntimeError::spawn(
                format!("opening the network namespace {}", path.display()),
                io::Error::from(e),
            )
        })?,
    };
    if send_fd(start.as_raw_fd(), ns.as_raw_fd()) < 0 {
        return Err(RuntimeError::spawn(
            "sending the network namespace to the container process",
            io::Error::last_os_error(),
        ));
    }
    Ok(ns)
}

/// Kills and reaps a child that must not run (its setup failed in the parent).
fn abort_child(pidfd: &OwnedFd) {
    // SAFETY: signalling and reaping our own child through its pidfd.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        );
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(
            libc::P_PIDFD,
            pidfd.as_raw_fd() as libc::id_t,
            &mut info,
            libc::WEXITED,
        );
    }
}

fn cloexec_pipe() -> Result<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| RuntimeError::spawn("creating a pipe", e))
}

fn socket_pair() -> Result<(OwnedFd, OwnedFd)> {
    use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
    socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| RuntimeError::spawn("creating a socket pair", e))
}

/// Reads one report; `None` on EOF (the child exec'd or died).
fn read_report(fd: &OwnedFd) -> io::Result<Option<Report>> {
    let mut buf = [0u8; Report::SIZE];
    let mut got = 0;
    while got < buf.len() {
        match rustix::io::read(fd, &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    match got {
        0 => Ok(None),
        n if n == Report::SIZE => Ok(Some(Report::from_bytes(&buf))),
        _ => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "truncated report from the container process",
        )),
    }
}

fn receive_fd(sock: &OwnedFd) -> io::Result<OwnedFd> {
    match recv_fd(sock.as_raw_fd()) {
        -1 => Err(io::Error::last_os_error()),
        // SAFETY: recv_fd returned a new fd that we now own.
        fd => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
    }
}

impl Container {
    pub fn id(&self) -> &ContainerId {
        &self.id
    }

    /// The host pid of the container's first process.
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// A pidfd that becomes readable when the process exits (for poll loops).
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// How long each setup stage in the child took, in nanoseconds since the
    /// previous stage (the first since `clone`); empty unless the runtime
    /// was created with `BERTH_STAGE_TIMINGS` set.
    pub fn setup_timings(&self) -> Vec<(String, u64)> {
        self.stage_clock
            .as_ref()
            .map(|(clock, since)| clock.durations(*since))
            .unwrap_or_default()
    }

    /// The pty master, when the spec asked for a terminal.
    pub fn take_pty_master(&mut self) -> Option<OwnedFd> {
        self.pty_master.take()
    }

    /// `<containers_dir>/<id>`: the directory holding the container's
    /// writable layer (disk scratch), or its lock file (memory scratch).
    pub fn claim(&self) -> &Path {
        &self.claim
    }

    /// When the timeout (if any) expires; `None` before start or without one.
    pub fn deadline(&self) -> Option<Instant> {
        Some(self.started_at? + self.timeout?)
    }

    /// Runs the command. Errors such as "command not found" are reported
    /// here; the container then has exited and only [`Container::delete`]
    /// remains.
    pub fn start(&mut self) -> Result<()> {
        if self.state != State::Created {
            return Err(self.invalid_state("start"));
        }
        let Some(start) = self.start.take() else {
            return Err(self.invalid_state("start"));
        };
        self.started_at = Some(Instant::now());
        rustix::io::write(&start, &[self.go])
            .map_err(|e| RuntimeError::spawn("signalling the container to start", e))?;
        drop(start);
        self.state = State::Running;
        self.await_exec(None)
    }

    /// Sends the child the `tasks` files of its v1 cgroups, to move itself
    /// in (see process::child::join_v1_cgroups).
    fn send_v1_cgroup_files(&self) -> Result<()> {
        let files = self.cgroup.open_v1_tasks()?;
        let raw: Vec<_> = files.iter().map(|f| f.as_raw_fd()).collect();
        let Some(start) = &self.start else {
            return Err(self.invalid_state("join its cgroups"));
        };
        if send_fds(start.as_raw_fd(), &raw) < 0 {
            return Err(RuntimeError::spawn(
                "sending the cgroup files to the container process",
                io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// Kills the child after a parent-side failure during creation, and
    /// returns the most telling error: the child's own failure report if it
    /// had already failed (a bad request), otherwise `parent_error`.
    fn abort(&mut self, parent_error: RuntimeError, plan: &Plan) -> RuntimeError {
        let _ = self.kill(libc::SIGKILL);
        let _ = self.wait(Some(Duration::from_secs(5)));
        let err = match read_report(&self.report) {
            Ok(Some(r)) if r.stage != Stage::Ready as u32 => self.child_error(r, Some(plan)),
            _ => parent_error,
        };
        let _ = self.teardown();
        err
    }

    /// Waits for the report pipe to close (the command was exec'd) or for a
    /// failure record (the container then exits and is reaped here).
    fn await_exec(&mut self, plan: Option<&Plan>) -> Result<()> {
        match read_report(&self.report) {
            Ok(None) => Ok(()),
            Ok(Some(r)) => {
                let err = self.child_error(r, plan);
                let _ = self.wait(None);
                Err(err)
            }
            Err(e) => Err(RuntimeError::spawn("reading the exec report", e)),
        }
    }

    fn invalid_state(&self, action: &'static str) -> RuntimeError {
        RuntimeError::InvalidState {
            id: self.id.to_string(),
            state: self.state.name(),
            action,
        }
    }

    fn child_error(&self, r: Report, plan: Option<&Plan>) -> RuntimeError {
        let source = io::Error::from_raw_os_error(r.errno);
        let step =
            || plan.map_or_else(|| format!("step {}", r.index), |p| p.describe_step(r.index));
        match Stage::from_raw(r.stage) {
            Some(Stage::Exec) if r.errno == libc::ENOENT => RuntimeError::CommandNotFound {
                command: self.program.clone(),
                searched: if self.program.contains('/') {
                    self.program.clone()
                } else {
                    format!("PATH={}", self.search_path)
                },
            },
            Some(Stage::Exec) => RuntimeError::CommandNotExecutable {
                command: self.program.clone(),
                source,
            },
            Some(Stage::CpuSet) => RuntimeError::spawn("restoring the container's CPU set", source),
            Some(Stage::JoinCgroups) => match self.cgroup.v1_tasks_path(r.index as usize) {
                Some(tasks) => RuntimeError::Cgroup {
                    path: tasks,
                    action: "moving the container's process in",
                    source,
                },
                None => RuntimeError::Cgroup {
                    path: self
                        .cgroup
                        .paths
                        .all()
                        .next()
                        .map(Path::to_owned)
                        .unwrap_or_default(),
                    action: "receiving the cgroup files from the parent",
                    source,
                },
            },
            Some(Stage::WorkingDir) => {
                RuntimeError::InvalidSpec(format!("working directory: {source}"))
            }
            Some(
                stage @ (Stage::ResolveTarget
                | Stage::CreateTarget
                | Stage::Mount
                | Stage::Remount
                | Stage::DevNodes),
            ) => RuntimeError::rootfs(format!("{} ({stage:?})", step()), source),
            Some(
                stage @ (Stage::MakePrivate
                | Stage::Scratch
                | Stage::MountOverlay
                | Stage::OpenRootfs
                | Stage::PivotRoot
                | Stage::ReadOnlyRoot),
            ) => RuntimeError::rootfs(format!("{stage:?}"), source),
            Some(stage) => RuntimeError::spawn(format!("{stage:?} (step {})", r.index), source),
            None => RuntimeError::spawn(format!("unknown stage {}", r.stage), source),
        }
    }

    /// Reaps the process if it has exited, without blocking.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if let State::Exited(s) = self.state {
            return Ok(Some(s));
        }
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on our own pidfd into a local siginfo.
        let rc = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                self.pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG,
            )
        };
        if rc < 0 {
            return Err(RuntimeError::host_io(
                "waiting for the container",
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: si_pid/si_status are valid after a successful waitid.
        let (pid, status, code) = unsafe { (info.si_pid(), info.si_status(), info.si_code) };
        if pid == 0 {
            return Ok(None);
        }
        let exit = if code == libc::CLD_EXITED {
            ExitStatus::Exited(status)
        } else {
            ExitStatus::Signaled(status)
        };
        // Counters must be read before the cgroups go away.
        self.final_stats = Some(self.cgroup.stats());
        self.state = State::Exited(exit);
        Ok(Some(exit))
    }

    /// Waits for the process to exit, at most `limit` (forever with `None`).
    /// Enforces the spec's timeout: when it expires the container is killed
    /// and its result flagged `timed_out`.
    pub fn wait(&mut self, limit: Option<Duration>) -> Result<Option<ExitStatus>> {
        let give_up = limit.map(|l| Instant::now() + l);
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            let now = Instant::now();
            if let Some(deadline) = self.deadline() {
                if now >= deadline && !self.timed_out {
                    self.kill_for_timeout()?;
                    continue;
                }
            }
            let next = [give_up, self.deadline().filter(|_| !self.timed_out)]
                .into_iter()
                .flatten()
                .min();
            if let Some(g) = give_up {
                if now >= g {
                    return Ok(None);
                }
            }
            let timeout_ms = crate::supervise::timeout_ms(next, now);
            let mut pfd = libc::pollfd {
                fd: self.pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: polling one valid fd.
            unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        }
    }

    /// Whether the container was killed for running past its timeout.
    pub fn timed_out(&self) -> bool {
        self.timed_out
    }

    /// Kills the container because its timeout expired.
    pub fn kill_for_timeout(&mut self) -> Result<()> {
        self.timed_out = true;
        self.kill(libc::SIGKILL)
    }

    /// Sends `signal` to the container's first process. SIGKILL ends the
    /// whole container: the kernel kills every process of its pid namespace.
    pub fn kill(&self, signal: i32) -> Result<()> {
        if matches!(self.state, State::Exited(_)) {
            return Ok(());
        }
        // SAFETY: pidfd_send_signal on our own pidfd.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(RuntimeError::host_io("signalling the container", e));
            }
        }
        Ok(())
    }

    /// Current usage counters.
    pub fn stats(&self) -> CgroupStats {
        self.final_stats.unwrap_or_else(|| self.cgroup.stats())
    }

    /// Kills the container if it still runs, waits for it, removes every
    /// trace (processes, cgroups, directories) and returns its result.
    pub fn delete(mut self) -> Result<ContainerResult> {
        if !matches!(self.state, State::Exited(_)) {
            self.kill(libc::SIGKILL)?;
            self.wait(None)?;
        }
        let wall = self.started_at.map_or(Duration::ZERO, |s| s.elapsed());
        let status = match self.state {
            State::Exited(s) => s,
            _ => ExitStatus::Signaled(libc::SIGKILL),
        };
        let stats = self.stats();
        let teardown_start = Instant::now();
        self.teardown()?;
        let teardown = teardown_start.elapsed();
        let (exit_code, signal) = match status {
            ExitStatus::Exited(c) => (Some(c), None),
            ExitStatus::Signaled(s) => (None, Some(s)),
        };
        Ok(ContainerResult {
            id: self.id.to_string(),
            exit_code,
            signal,
            oom_killed: stats.oom_kills > 0,
            timed_out: self.timed_out,
            wall_time_ms: wall.as_secs_f64() * 1000.0,
            cpu_time_ms: stats.cpu_usage_ns.map(|ns| ns as f64 / 1e6),
            peak_memory_bytes: stats.memory_peak,
            teardown_ms: teardown.as_secs_f64() * 1000.0,
        })
    }

    /// Teardown proper: every process, then cgroups, then files.
    fn teardown(&mut self) -> Result<()> {
        if self.deleted {
            return Ok(());
        }
        if !matches!(self.state, State::Exited(_)) {
            let _ = self.kill(libc::SIGKILL);
            let _ = self.wait(Some(Duration::from_secs(5)));
        }
        self.cgroup.kill_all(Duration::from_secs(5))?;
        self.cgroup.remove(Duration::from_secs(5))?;
        remove_claim(self.id.as_str(), &self.claim)?;
        self.deleted = true;
        Ok(())
    }
}

impl Drop for Container {
    /// A container dropped without `delete` (an error path) is still torn
    /// down: nothing may outlive its handle.
    fn drop(&mut self) {
        if !self.deleted {
            if let Err(e) = self.teardown() {
                tracing::warn!(id = %self.id, error = %e, "teardown on drop failed; `berth gc` will retry");
            }
        }
    }
}
