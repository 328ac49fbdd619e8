//! The container's first process, from `clone` to `execve`.
//!
//! Everything here runs in a fresh copy of the parent's address space and
//! must not allocate, take locks or panic: only system calls on data the
//! parent prepared in a [`Plan`]. Any failure is written to the report pipe
//! as a [`Report`] and the child exits.
//!
//! [`run`] is the sequence, one named function per step; rustix makes the
//! system calls it has safe, non-allocating wrappers for (paths are passed
//! as `&CStr`, which rustix passes through without copying), libc the rest.
#![deny(clippy::undocumented_unsafe_blocks)]

use super::affinity;
use super::fdpass::{recv_fd, recv_fds, send_fd, MAX_FDS};
use super::plan::{proc_fd_path, Create, Plan, Step};
use rustix::fs::{Access, Mode, OFlags};
use rustix::io::Errno;
use rustix::process::{Gid, Signal, Uid};
use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

/// Declares [`Stage`] and the table that maps raw numbers back to it, from
/// one list, so the two can never disagree.
macro_rules! stages {
    ($($(#[$doc:meta])* $name:ident,)+) => {
        /// Where in the sequence something happened, in the order the child
        /// goes through them.
        #[repr(u32)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Stage {
            $($(#[$doc])* $name,)+
        }

        impl Stage {
            const ALL: &'static [Stage] = &[$(Stage::$name,)+];

            pub fn from_raw(raw: u32) -> Option<Stage> {
                Self::ALL.get(raw as usize).copied()
            }
        }
    };
}

stages! {
    /// First instruction of the child (stage timings only).
    Cloned,
    Signals,
    Namespaces,
    MakePrivate,
    Scratch,
    MountOverlay,
    OpenRootfs,
    ResolveTarget,
    CreateTarget,
    Mount,
    Remount,
    DevNodes,
    Hostname,
    JoinNetwork,
    /// Bringing the loopback interface up in the joined namespace.
    Loopback,
    PivotRoot,
    /// The old root is gone (stage timings only).
    OldRootDetached,
    ReadOnlyRoot,
    Rlimit,
    WorkingDir,
    Stdio,
    Terminal,
    Session,
    /// Moving into the v1 cgroups; the index is the hierarchy's position
    /// in the container's v1 directories, or their count when the files
    /// did not arrive.
    JoinCgroups,
    Ready,
    WaitStart,
    /// Widening the CPU set back to the parent's before the command runs.
    CpuSet,
    CgroupNamespace,
    Capabilities,
    Identity,
    NoNewPrivs,
    Seccomp,
    Exec,
}

/// A fixed-size message from the child: a stage, the index of the step (for
/// mount steps) and an errno (0 for `Ready`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Report {
    pub stage: u32,
    pub index: u32,
    pub errno: i32,
}

impl Report {
    pub const SIZE: usize = std::mem::size_of::<Report>();

    pub fn to_bytes(self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..4].copy_from_slice(&self.stage.to_ne_bytes());
        b[4..8].copy_from_slice(&self.index.to_ne_bytes());
        b[8..12].copy_from_slice(&self.errno.to_ne_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Report {
        let word = |i: usize| [b[i], b[i + 1], b[i + 2], b[i + 3]];
        Report {
            stage: u32::from_ne_bytes(word(0)),
            index: u32::from_ne_bytes(word(4)),
            errno: i32::from_ne_bytes(word(8)),
        }
    }
}

/// The byte the parent writes on `start` to let the child go on to exec.
pub mod go {
    /// Go on.
    pub const RUN: u8 = 1;
    /// Set together with `RUN` when the parent moved the child off its CPU
    /// after `clone` (see process::affinity): the child widens its CPU set
    /// back even if its own narrowing failed.
    pub const PARENT_NARROWED: u8 = 2;
}

/// Number of stage slots in a [`StageClock`] page.
pub const STAGE_SLOTS: usize = 48;

/// Optional per-stage timestamps (CLOCK_MONOTONIC, ns) written by the child
/// into a page shared with the parent: how long each setup stage took.
pub struct StageClock {
    page: *mut u64,
}

impl StageClock {
    /// Maps a shared page; `None` if the kernel refuses (timing is optional).
    pub fn new() -> Option<StageClock> {
        // SAFETY: an anonymous shared mapping, unmapped in Drop.
        let page = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                STAGE_SLOTS * 8,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        (page != libc::MAP_FAILED).then_some(StageClock { page: page.cast() })
    }

    fn mark(&self, stage: Stage) {
        let slot = stage as usize;
        if slot < STAGE_SLOTS {
            // SAFETY: slot is inside the page; clock_gettime is async-signal-safe.
            unsafe { *self.page.add(slot) = monotonic_ns() };
        }
    }

    /// `(stage, nanoseconds since the previous recorded stage)`, in order.
    pub fn durations(&self, since_ns: u64) -> Vec<(String, u64)> {
        let mut stamps: Vec<(u64, Stage)> = (0..STAGE_SLOTS)
            .filter_map(|slot| {
                // SAFETY: reading inside the page.
                let t = unsafe { *self.page.add(slot) };
                Some((t, Stage::from_raw(slot as u32)?)).filter(|(t, _)| *t != 0)
            })
            .collect();
        stamps.sort_by_key(|(t, _)| *t);
        let mut prev = since_ns;
        stamps
            .into_iter()
            .map(|(t, stage)| {
                let d = t.saturating_sub(prev);
                prev = t;
                (format!("{stage:?}"), d)
            })
            .collect()
    }
}

impl Drop for StageClock {
    fn drop(&mut self) {
        // SAFETY: unmapping the page mapped in new().
        unsafe { libc::munmap(self.page.cast(), STAGE_SLOTS * 8) };
    }
}

/// Monotonic now, in ns (to compare with [`StageClock`] stamps).
pub fn monotonic_ns() -> u64 {
    let mut ts: libc::timespec = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime into a local timespec (vDSO, no allocation).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The fds the child talks to its parent through.
pub struct Channels {
    pub report: RawFd,
    pub start: RawFd,
    /// Unix socket for sending the pty master back (terminal mode).
    pub pty: RawFd,
    /// Stage timestamps, when the caller asked for them.
    pub clock: Option<StageClock>,
    /// The parent's ends of the pipes: closed first thing in the child, so
    /// that the parent's death reads as end-of-file on `start`.
    pub parent_ends: [RawFd; 3],
}

impl Channels {
    fn mark(&self, stage: Stage) {
        if let Some(clock) = &self.clock {
            clock.mark(stage);
        }
    }
}

fn errno() -> i32 {
    // SAFETY: errno is thread-local and always readable.
    unsafe { *libc::__errno_location() }
}

fn send(fd: RawFd, report: Report) {
    let bytes = report.to_bytes();
    // SAFETY: writing a local buffer to a pipe.
    unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
}

fn fail(ch: &Channels, stage: Stage, index: u32, err: i32) -> ! {
    send(
        ch.report,
        Report {
            stage: stage as u32,
            index,
            errno: err,
        },
    );
    // SAFETY: leaving the child without running any Rust destructors.
    unsafe { libc::_exit(127) }
}

/// Fails with the current errno when `rc` is negative.
macro_rules! check {
    ($ch:expr, $stage:expr, $index:expr, $rc:expr) => {{
        let rc = $rc;
        if rc < 0 {
            fail($ch, $stage, $index as u32, errno());
        }
        rc
    }};
}

/// The value of a rustix call, or fails with its error.
macro_rules! ok {
    ($ch:expr, $stage:expr, $index:expr, $result:expr) => {
        match $result {
            Ok(value) => value,
            Err(e) => fail($ch, $stage, $index as u32, e.raw_os_error()),
        }
    };
}

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;

/// Opens `path` inside `root`: symlinks resolve as if `root` were `/`, so
/// nothing the image contains can lead outside it.
fn open_in_root(root: RawFd, path: &CStr, flags: i32) -> i32 {
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: openat2 with a valid path and open_how of the declared size.
    unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root,
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        ) as i32
    }
}

/// Creates `path` (and missing parents) inside `root`, never following a
/// symlink out of it: each parent is opened with RESOLVE_IN_ROOT and the
/// leaf is made relative to that fd.
fn create_in_root(root: RawFd, path: &CStr, create: Create) -> i32 {
    let bytes = path.to_bytes();
    let mut buf = [0u8; 4096];
    if bytes.len() >= buf.len() {
        return -libc::ENAMETOOLONG;
    }
    buf[..bytes.len()].copy_from_slice(bytes);
    let mut start = 0;
    let mut i = 0;
    while i <= bytes.len() {
        let end_of_component = i == bytes.len() || bytes[i] == b'/';
        if end_of_component && i > start {
            let is_leaf = i == bytes.len();
            // The parent: everything before `start` (or the root itself).
            let parent = if start == 0 {
                // SAFETY: duplicating a valid fd.
                unsafe { libc::fcntl(root, libc::F_DUPFD_CLOEXEC, 0) }
            } else {
                buf[start - 1] = 0;
                // SAFETY: buf[..start] is NUL-terminated at start-1.
                let p = unsafe { CStr::from_bytes_with_nul_unchecked(&buf[..start]) };
                let fd = open_in_root(root, p, libc::O_PATH | libc::O_DIRECTORY);
                buf[start - 1] = b'/';
                fd
            };
            if parent < 0 {
                return -errno();
            }
            let saved = buf[i];
            buf[i] = 0;
            // SAFETY: buf[start..=i] is NUL-terminated at i.
            let name = unsafe { CStr::from_bytes_with_nul_unchecked(&buf[start..=i]) };
            let rc = if is_leaf && create == Create::File {
                // SAFETY: creating a file relative to an open directory.
                let fd = unsafe {
                    libc::openat(
                        parent,
                        name.as_ptr(),
                        libc::O_CREAT | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                        0o644,
                    )
                };
                if fd >= 0 {
                    // SAFETY: closing the fd we just opened.
                    unsafe { libc::close(fd) };
                }
                fd
            } else {
                // SAFETY: mkdirat relative to an open directory.
                unsafe { libc::mkdirat(parent, name.as_ptr(), 0o755) }
            };
            let err = errno();
            buf[i] = saved;
            // SAFETY: closing our duplicate.
            unsafe { libc::close(parent) };
            if rc < 0 && err != libc::EEXIST {
                return -err;
            }
            start = i + 1;
        } else if end_of_component {
            start = i + 1;
        }
        i += 1;
    }
    0
}

/// Opens a mount target, creating it when missing.
fn target_fd(ch: &Channels, root: RawFd, index: usize, target: &CStr, create: Create) -> RawFd {
    let fd = open_in_root(root, target, libc::O_PATH);
    if fd >= 0 {
        return fd;
    }
    if errno() != libc::ENOENT {
        fail(ch, Stage::ResolveTarget, index as u32, errno());
    }
    let rc = create_in_root(root, target, create);
    if rc < 0 {
        fail(ch, Stage::CreateTarget, index as u32, -rc);
    }
    check!(
        ch,
        Stage::ResolveTarget,
        index,
        open_in_root(root, target, libc::O_PATH)
    )
}

/// `mount(2)` onto an fd, through its /proc/self/fd magic link.
fn mount_on_fd(
    source: *const libc::c_char,
    fd: RawFd,
    fstype: *const libc::c_char,
    flags: libc::c_ulong,
    data: *const libc::c_void,
) -> i32 {
    let mut buf = [0u8; 32];
    let path = proc_fd_path(fd, &mut buf);
    // SAFETY: all pointers are NUL-terminated strings or null.
    unsafe { libc::mount(source, path.as_ptr(), fstype, flags, data) }
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH | AT_RECURSIVE, {RDONLY})`: the whole
/// mount tree at `fd` becomes read-only, other flags untouched (Linux 5.12+).
fn make_read_only_recursively(fd: RawFd) -> i32 {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    const AT_RECURSIVE: libc::c_int = 0x8000;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: a valid fd, an empty path and an attr struct of the stated size.
    unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        ) as i32
    }
}

fn opt_ptr(s: &Option<std::ffi::CString>) -> *const libc::c_char {
    s.as_ref().map_or(std::ptr::null(), |c| c.as_ptr())
}

fn close(fd: RawFd) {
    // SAFETY: closing an fd this process owns.
    unsafe { libc::close(fd) };
}

/// Makes `root` the root: pivot_root(".", ".") stacks the old root (the
/// host's mount tree, copied into this namespace) on the new one, and
/// detaching it leaves only the container's tree. `root` stays valid for
/// the steps that follow.
fn pivot_into(ch: &Channels, root: BorrowedFd<'_>, old_root: &mut OldRoot) {
    ok!(ch, Stage::PivotRoot, 0, rustix::process::fchdir(root));
    ok!(
        ch,
        Stage::PivotRoot,
        1,
        rustix::process::pivot_root(c".", c".")
    );
    old_root.start_detach(ch);
    ch.mark(Stage::PivotRoot);
}

/// Stack of the helper that detaches the old root: it makes one system
/// call, so a few pages are plenty.
#[repr(C, align(16))]
struct HelperStack([u8; 16 * 1024]);

/// The old root between `pivot_root` and the container's first use of an
/// absolute path.
///
/// Detaching it returns only after an RCU grace period (the kernel waits
/// for every CPU before it frees the mounts), 0.15-0.3 ms at the median in
/// `berth run` and over 1 ms when the host is busy, for nothing this
/// process needs to wait for until it resolves a path from "/". So a
/// helper sharing this process's memory detaches it while the remaining
/// steps run: they open their targets relative to the rootfs fd and mount
/// through `/proc/self/fd`, which resolves alike through the old root's
/// /proc and the container's. [`OldRoot::finish`] waits for the helper
/// before anything else may see "/": the read-only remount, the working
/// directory, the exec search, the command itself.
struct OldRoot {
    state: Detach,
    /// Never initialised: only the helper writes to it, from the top.
    stack: std::mem::MaybeUninit<HelperStack>,
}

enum Detach {
    NotPivoted,
    Detaching(libc::pid_t),
    Detached,
}

impl OldRoot {
    fn new() -> OldRoot {
        OldRoot {
            state: Detach::NotPivoted,
            stack: std::mem::MaybeUninit::uninit(),
        }
    }

    /// Starts the detach on a helper, or detaches here if no helper can be
    /// made (a pids limit of 1 on cgroup v2, where this process already
    /// counts in the container's cgroup).
    fn start_detach(&mut self, ch: &Channels) {
        let top = self.stack.as_mut_ptr().cast::<u8>();
        // SAFETY: the helper shares our memory (CLONE_VM) and runs on its
        // own stack, which lives in this frame of a function that never
        // returns; it touches nothing else (see `detach_old_root`). No exit
        // signal: `finish` waits for it with __WALL.
        let pid = unsafe {
            libc::clone(
                detach_old_root,
                top.add(std::mem::size_of::<HelperStack>()).cast(),
                libc::CLONE_VM | libc::CLONE_FILES,
                std::ptr::null_mut(),
            )
        };
        self.state = if pid > 0 {
            // The helper shares this CPU (setup runs narrowed to one) and
            // would wait for it until we block: let it start the detach now,
            // so that its wait for the grace period overlaps our steps.
            rustix::thread::sched_yield();
            Detach::Detaching(pid)
        } else {
            ok!(
                ch,
                Stage::PivotRoot,
                2,
                rustix::mount::unmount(c".", rustix::mount::UnmountFlags::DETACH)
            );
            Detach::Detached
        };
    }

    /// Waits until the old root is detached, then enters the new "/".
    fn finish(&mut self, ch: &Channels) {
        if let Detach::Detaching(pid) = self.state {
            // SAFETY: siginfo_t is plain data; zero is a valid value.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: waitid on our own helper into a local siginfo.
            check!(ch, Stage::PivotRoot, 2, unsafe {
                libc::waitid(
                    libc::P_PID,
                    pid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::__WALL,
                )
            });
            // SAFETY: waitid filled in a child's exit status.
            let (code, status) = (info.si_code, unsafe { info.si_status() });
            if code != libc::CLD_EXITED || status != 0 {
                let err = if code == libc::CLD_EXITED {
                    status
                } else {
                    libc::EINTR
                };
                fail(ch, Stage::PivotRoot, 2, err);
            }
            self.state = Detach::Detached;
        }
        if let Detach::Detached = self.state {
            ok!(ch, Stage::PivotRoot, 3, rustix::process::chdir(c"/"));
            ch.mark(Stage::OldRootDetached);
        }
    }
}

/// The helper's whole life: detach the tree stacked on its working
/// directory (the new root) and exit with 0 or the errno. rustix makes the
/// raw system call: libc's wrapper would write errno, which lives in the
/// thread-local storage this helper shares with the child.
extern "C" fn detach_old_root(_: *mut libc::c_void) -> libc::c_int {
    match rustix::mount::unmount(c".", rustix::mount::UnmountFlags::DETACH) {
        Ok(()) => 0,
        Err(e) => e.raw_os_error(),
    }
}

/// Sets `lo` up in the network namespace just joined: the parent made the
/// namespace, this side has the time to spare for the interface.
fn bring_loopback_up(ch: &Channels) {
    // SAFETY: socket and ioctl calls on a local ifreq; the socket is closed
    // before returning.
    unsafe {
        let sock = check!(
            ch,
            Stage::Loopback,
            0,
            libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)
        );
        let mut ifr: libc::ifreq = std::mem::zeroed();
        ifr.ifr_name[0] = b'l' as libc::c_char;
        ifr.ifr_name[1] = b'o' as libc::c_char;
        check!(
            ch,
            Stage::Loopback,
            1,
            libc::ioctl(sock, libc::SIOCGIFFLAGS as _, &mut ifr)
        );
        ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        check!(
            ch,
            Stage::Loopback,
            2,
            libc::ioctl(sock, libc::SIOCSIFFLAGS as _, &ifr)
        );
        close(sock);
    }
    ch.mark(Stage::Loopback);
}

/// What steps carry over to later steps.
struct StepContext<'a> {
    old_root: &'a mut OldRoot,
    empty_dir: EmptyDir,
}

/// The empty read-only tmpfs over the first masked directory. Every other
/// masked directory gets a bind mount of it: a tmpfs each would cost a
/// superblock each to make, and each to tear down when the container
/// exits, which is on the way to its exit status. The bind mounts keep the
/// tmpfs mount's flags (read-only, nosuid, nodev, noexec), and its
/// superblock is read-only too.
struct EmptyDir {
    /// O_PATH fd on the tmpfs's root; -1 until it is mounted.
    fd: RawFd,
}

impl EmptyDir {
    /// Hides the directory `fd` (which is `target` inside `root`).
    fn mount_on(&mut self, root: RawFd, target: &CStr, fd: RawFd) -> i32 {
        if self.fd >= 0 {
            let mut buf = [0u8; 32];
            let source = proc_fd_path(self.fd, &mut buf);
            return mount_on_fd(
                source.as_ptr(),
                fd,
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            );
        }
        let rc = mount_on_fd(
            c"tmpfs".as_ptr(),
            fd,
            c"tmpfs".as_ptr(),
            libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            c"size=0".as_ptr().cast(),
        );
        if rc == 0 {
            // `fd` still names the directory under the new mount: open the
            // path again to get the mount's root. If that fails, the next
            // masked directory simply gets a tmpfs of its own.
            self.fd = open_in_root(root, target, libc::O_PATH | libc::O_DIRECTORY);
        }
        rc
    }
}

impl Drop for EmptyDir {
    fn drop(&mut self) {
        if self.fd >= 0 {
            close(self.fd);
        }
    }
}

fn run_step(
    ch: &Channels,
    root_fd: BorrowedFd<'_>,
    index: usize,
    step: &Step,
    ctx: &mut StepContext<'_>,
) {
    let root = root_fd.as_raw_fd();
    match step {
        Step::Mount {
            target,
            create,
            source,
            fstype,
            flags,
            data,
            read_only,
        } => {
            let fd = target_fd(ch, root, index, target, *create);
            check!(
                ch,
                Stage::Mount,
                index,
                mount_on_fd(
                    source.as_ptr(),
                    fd,
                    opt_ptr(fstype),
                    *flags,
                    opt_ptr(data).cast()
                )
            );
            close(fd);
            if *read_only {
                // Reopen: the old fd still points below the new mount.
                let fd = check!(
                    ch,
                    Stage::ResolveTarget,
                    index,
                    open_in_root(root, target, libc::O_PATH)
                );
                check!(ch, Stage::Remount, index, make_read_only_recursively(fd));
                close(fd);
            }
        }
        Step::DevNodes => make_dev_nodes(ch, root, index),
        Step::JoinNetwork => {
            // The parent sends the namespace once made; EOF means it gave up.
            let ns = check!(ch, Stage::JoinNetwork, index, recv_fd(ch.start));
            // SAFETY: setns to the fd just received.
            check!(ch, Stage::JoinNetwork, index, unsafe {
                libc::setns(ns, libc::CLONE_NEWNET)
            });
            close(ns);
            ch.mark(Stage::JoinNetwork);
            bring_loopback_up(ch);
        }
        Step::PivotRoot => pivot_into(ch, root_fd, ctx.old_root),
        Step::Mask { target } => {
            let fd = open_in_root(root, target, libc::O_PATH);
            if fd < 0 {
                if errno() == libc::ENOENT {
                    return;
                }
                fail(ch, Stage::ResolveTarget, index as u32, errno());
            }
            // SAFETY: stat is plain data; zero is a valid value.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: fstat into a local struct.
            check!(ch, Stage::ResolveTarget, index, unsafe {
                libc::fstat(fd, &mut st)
            });
            let rc = if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                ctx.empty_dir.mount_on(root, target, fd)
            } else {
                mount_on_fd(
                    c"/dev/null".as_ptr(),
                    fd,
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                )
            };
            check!(ch, Stage::Mount, index, rc);
            close(fd);
        }
        Step::ReadOnly { target } => {
            let fd = open_in_root(root, target, libc::O_PATH);
            if fd < 0 {
                if errno() == libc::ENOENT {
                    return;
                }
                fail(ch, Stage::ResolveTarget, index as u32, errno());
            }
            // Bind the path onto itself so it can be remounted read-only.
            let mut buf = [0u8; 32];
            let path = proc_fd_path(fd, &mut buf);
            check!(
                ch,
                Stage::Mount,
                index,
                mount_on_fd(
                    path.as_ptr(),
                    fd,
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null()
                )
            );
            close(fd);
            let fd = check!(
                ch,
                Stage::ResolveTarget,
                index,
                open_in_root(root, target, libc::O_PATH)
            );
            check!(
                ch,
                Stage::Remount,
                index,
                mount_on_fd(
                    std::ptr::null(),
                    fd,
                    std::ptr::null(),
                    libc::MS_BIND
                        | libc::MS_REMOUNT
                        | libc::MS_RDONLY
                        | libc::MS_NOSUID
                        | libc::MS_NODEV
                        | libc::MS_NOEXEC,
                    std::ptr::null()
                )
            );
            close(fd);
        }
    }
}

fn make_dev_nodes(ch: &Channels, root: RawFd, index: usize) {
    let dev = check!(
        ch,
        Stage::DevNodes,
        index,
        open_in_root(root, c"dev", libc::O_PATH | libc::O_DIRECTORY)
    );
    let nodes: [(&CStr, u32, u32); 6] = [
        (c"null", 1, 3),
        (c"zero", 1, 5),
        (c"full", 1, 7),
        (c"random", 1, 8),
        (c"urandom", 1, 9),
        (c"tty", 5, 0),
    ];
    for (name, major, minor) in nodes {
        // SAFETY: mknodat relative to the fresh /dev tmpfs.
        check!(ch, Stage::DevNodes, index, unsafe {
            libc::mknodat(
                dev,
                name.as_ptr(),
                libc::S_IFCHR | 0o666,
                libc::makedev(major, minor),
            )
        });
    }
    let links: [(&CStr, &CStr); 6] = [
        (c"/proc/self/fd", c"fd"),
        (c"/proc/self/fd/0", c"stdin"),
        (c"/proc/self/fd/1", c"stdout"),
        (c"/proc/self/fd/2", c"stderr"),
        (c"pts/ptmx", c"ptmx"),
        (c"/proc/kcore", c"core"),
    ];
    for (target, name) in links {
        // SAFETY: symlinkat relative to the fresh /dev tmpfs.
        check!(ch, Stage::DevNodes, index, unsafe {
            libc::symlinkat(target.as_ptr(), dev, name.as_ptr())
        });
    }
    close(dev);
}

/// Moves this process into the container's v1 cgroups, once the parent
/// has made them and sent their `tasks` files (`count` of them, in the
/// order of the container's v1 directories).
///
/// The process moves itself, by writing "0" to `tasks`: the kernel then
/// migrates only the calling thread and, since the thread is `current`,
/// skips the global `cgroup_threadgroup_rwsem` that a move by pid (or any
/// write to `cgroup.procs`) takes for writing. That lock's writer waits for
/// an RCU grace period unless one just passed, which after a moment of
/// idle costs milliseconds per start (Linux 5.5+, commit 9a3284fad42f
/// "cgroup: Optimize single thread migration"; older kernels take the lock
/// and the move is merely as slow as a move by pid). Moving the one thread
/// moves the whole process because it is the only one: the helper that
/// detaches the old root shares this memory but is a process of its own,
/// gone by now, and nothing here starts threads. This comes before the
/// cgroup namespace is made (rooted at the cgroups joined here), before
/// the identity changes and before exec.
fn join_v1_cgroups(ch: &Channels, count: usize) {
    let mut fds = [-1; MAX_FDS];
    let received = recv_fds(ch.start, &mut fds);
    if received < 0 {
        fail(ch, Stage::JoinCgroups, count as u32, errno());
    }
    if received as usize != count {
        fail(ch, Stage::JoinCgroups, count as u32, libc::EBADMSG);
    }
    for (index, fd) in fds[..count].iter().enumerate() {
        // SAFETY: a write of a static byte to an fd the parent sent.
        let written = unsafe { libc::write(*fd, c"0".as_ptr().cast(), 1) };
        if written != 1 {
            let err = if written < 0 { errno() } else { libc::EIO };
            fail(ch, Stage::JoinCgroups, index as u32, err);
        }
        close(*fd);
    }
    ch.mark(Stage::JoinCgroups);
}

fn setup_terminal(ch: &Channels) {
    // SAFETY: pty calls on fds this process owns.
    unsafe {
        let master = check!(
            ch,
            Stage::Terminal,
            0,
            libc::open(
                c"/dev/ptmx".as_ptr(),
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC
            )
        );
        let unlock: libc::c_int = 0;
        check!(
            ch,
            Stage::Terminal,
            1,
            libc::ioctl(master, libc::TIOCSPTLCK, &unlock)
        );
        let slave = check!(
            ch,
            Stage::Terminal,
            2,
            libc::ioctl(master, libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY)
        );
        check!(ch, Stage::Session, 0, libc::setsid());
        check!(
            ch,
            Stage::Terminal,
            3,
            libc::ioctl(slave, libc::TIOCSCTTY, 0)
        );
        for target in 0..3 {
            check!(ch, Stage::Stdio, target, libc::dup2(slave, target));
        }
        if slave > 2 {
            libc::close(slave);
        }
        check!(ch, Stage::Terminal, 4, send_fd(ch.pty, master) as i32);
        libc::close(master);
        libc::close(ch.pty);
    }
}

/// Runs the child's sequence and executes the container's command: each
/// step below is one named function, in the order they run.
///
/// # Safety
/// Must only be called in the child right after `clone`, with a `plan` and
/// channels prepared by the parent. Never returns. Everything it calls
/// relies on that: it runs in a copy of the parent's address space, so it
/// makes system calls on the plan's prepared data only, and never
/// allocates, takes a lock or unwinds.
pub unsafe fn run(plan: &Plan, ch: &Channels) -> ! {
    ch.mark(Stage::Cloned);
    let narrowed = leave_the_parents_cpu(plan);
    cut_ties_with_the_parent(ch);
    reset_signals(ch);
    make_namespaces(ch, plan);
    let root = mount_the_root(ch, plan);
    set_hostname(ch, plan);
    // The helper that detaches the old root runs on a stack inside this
    // value: it lives in this frame, which never returns, and never moves.
    let mut old_root = OldRoot::new();
    build_the_file_system(ch, plan, root.as_fd(), &mut old_root);
    drop(root);
    shrink_the_bounding_set(ch, plan);
    set_rlimits(ch, plan);
    // From here on paths resolve from "/": the old root must be gone.
    old_root.finish(ch);
    make_the_root_read_only(ch, plan);
    enter_the_working_dir(ch, plan);
    connect_stdio(ch, plan);
    let first_existing = find_the_command(plan);
    if plan.v1_cgroups > 0 {
        join_v1_cgroups(ch, plan.v1_cgroups);
    }
    let go = report_ready_and_wait_for_the_go(ch, plan);
    widen_the_cpu_set(ch, plan, narrowed, go);
    enter_a_cgroup_namespace(ch);
    switch_identity(ch, plan);
    close_inherited_fds_on_exec(ch);
    install_seccomp(ch, plan);
    exec(ch, plan, first_existing)
}

/// Off the parent's CPU first, in case this runs before the parent has
/// moved us (see process::affinity). Best effort: where this fails, setup
/// runs where the kernel or the parent put it, and the widening after the
/// go follows whichever narrowing succeeded. Returns whether it narrowed.
fn leave_the_parents_cpu(plan: &Plan) -> bool {
    plan.cpus
        .as_ref()
        .is_some_and(|cpus| affinity::set_own(&cpus.setup) == 0)
}

/// Closes the parent's ends of the channels (so that the parent's death
/// reads as end-of-file on `start`), and dies with the supervisor: a
/// container never outlives its monitor. (If the parent died before this,
/// `start` reads end-of-file.)
fn cut_ties_with_the_parent(ch: &Channels) {
    for fd in ch.parent_ends {
        if fd >= 0 {
            close(fd);
        }
    }
    // Best effort, as the end-of-file on `start` covers a parent gone first.
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
}

/// Signal dispositions and the mask are inherited: start clean.
fn reset_signals(ch: &Channels) {
    for sig in 1..=libc::SIGRTMAX() {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: resetting a disposition to the default installs no
            // handler; an invalid number only makes the call fail.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
    // SAFETY: sigset_t is plain data; sigemptyset fills it in.
    let mut empty: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: a valid local set, and no old mask asked for.
    check!(ch, Stage::Signals, 0, unsafe {
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut())
    });
    ch.mark(Stage::Signals);
}

/// The namespaces clone did not create: making them here overlaps with the
/// parent's work on another CPU.
fn make_namespaces(ch: &Channels, plan: &Plan) {
    // SAFETY: unshare of namespaces only (no CLONE_FILES or CLONE_FS),
    // in a single-threaded process.
    check!(ch, Stage::Namespaces, 0, unsafe {
        libc::unshare(plan.unshare_flags)
    });
    rustix::process::umask(Mode::empty());
    ch.mark(Stage::Namespaces);
}

/// Makes the copied mount tree private, mounts the memory scratch (if
/// any) and the overlay, and opens the container's root.
fn mount_the_root(ch: &Channels, plan: &Plan) -> OwnedFd {
    use rustix::mount::{mount, mount_change, MountFlags, MountPropagationFlags};
    ok!(
        ch,
        Stage::MakePrivate,
        0,
        mount_change(
            c"/",
            MountPropagationFlags::REC | MountPropagationFlags::PRIVATE
        )
    );
    ch.mark(Stage::MakePrivate);
    if let Some(scratch) = &plan.scratch_tmpfs {
        ok!(
            ch,
            Stage::Scratch,
            0,
            mount(
                c"tmpfs",
                scratch.mount_point.as_c_str(),
                c"tmpfs",
                MountFlags::empty(),
                scratch.options.as_c_str()
            )
        );
        for (i, dir) in scratch.dirs.iter().enumerate() {
            ok!(
                ch,
                Stage::Scratch,
                i + 1,
                rustix::fs::mkdir(dir.as_c_str(), Mode::from_raw_mode(0o755))
            );
        }
        ch.mark(Stage::Scratch);
    }
    // The overlay's lower dirs are named relative to their common parent.
    ok!(
        ch,
        Stage::MountOverlay,
        0,
        rustix::process::chdir(plan.layers_dir.as_c_str())
    );
    ok!(
        ch,
        Stage::MountOverlay,
        1,
        mount(
            c"overlay",
            plan.rootfs.as_c_str(),
            c"overlay",
            // Device nodes shipped in an image stay inert; /dev is a
            // separate tmpfs with the standard nodes only.
            MountFlags::NODEV,
            plan.overlay_data.as_c_str()
        )
    );
    ch.mark(Stage::MountOverlay);
    ok!(
        ch,
        Stage::OpenRootfs,
        0,
        rustix::fs::open(
            plan.rootfs.as_c_str(),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty()
        )
    )
}

fn set_hostname(ch: &Channels, plan: &Plan) {
    ok!(
        ch,
        Stage::Hostname,
        0,
        rustix::system::sethostname(plan.hostname.as_bytes())
    );
    ch.mark(Stage::Hostname);
}

/// The plan's steps: mounts, device nodes, the network namespace, the
/// pivot and Docker's guards, in the order the plan gives.
fn build_the_file_system(ch: &Channels, plan: &Plan, root: BorrowedFd<'_>, old_root: &mut OldRoot) {
    let mut ctx = StepContext {
        old_root,
        empty_dir: EmptyDir { fd: -1 },
    };
    for (i, step) in plan.steps.iter().enumerate() {
        run_step(ch, root, i, step, &mut ctx);
    }
    ch.mark(Stage::Mount);
}

/// Capabilities, first part: shrink the bounding set while still
/// privileged (and here, while the parent still works and the old root
/// detaches, not after the go). The effective set keeps what the steps
/// below need; [`switch_identity`] pins it.
fn shrink_the_bounding_set(ch: &Channels, plan: &Plan) {
    use rustix::thread::{remove_capability_from_bounding_set, CapabilitySet};
    for cap in 0..=plan.last_cap.min(63) {
        if plan.caps & (1u64 << cap) == 0 {
            ok!(
                ch,
                Stage::Capabilities,
                cap,
                remove_capability_from_bounding_set(CapabilitySet::from_bits_retain(1 << cap))
            );
        }
    }
    // Nothing is in the ambient set of a process started by root; clearing
    // it is belt and braces, so its result does not matter.
    let _ = rustix::thread::clear_ambient_capability_set();
    ch.mark(Stage::Capabilities);
}

fn set_rlimits(ch: &Channels, plan: &Plan) {
    for (i, (resource, limit)) in plan.rlimits.iter().enumerate() {
        // SAFETY: setrlimit with a resource number and a limit the parent
        // prepared.
        check!(ch, Stage::Rlimit, i, unsafe {
            libc::setrlimit(*resource, limit)
        });
    }
}

/// Every mount target exists by now: the root may turn read-only.
fn make_the_root_read_only(ch: &Channels, plan: &Plan) {
    use rustix::mount::{mount_remount, MountFlags};
    if plan.read_only_root {
        ok!(
            ch,
            Stage::ReadOnlyRoot,
            0,
            mount_remount(c"/", MountFlags::BIND | MountFlags::RDONLY, c"")
        );
    }
}

/// Enters the working directory, creating it as Docker does when missing.
fn enter_the_working_dir(ch: &Channels, plan: &Plan) {
    if rustix::process::chdir(plan.cwd.as_c_str()).is_ok() {
        return;
    }
    for (i, part) in plan.cwd_parts.iter().enumerate() {
        match rustix::fs::mkdir(part.as_c_str(), Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => fail(ch, Stage::WorkingDir, i as u32, e.raw_os_error()),
        }
        ok!(
            ch,
            Stage::WorkingDir,
            i,
            rustix::process::chdir(part.as_c_str())
        );
    }
}

/// The container's stdin, stdout and stderr: a new terminal, or the fds
/// the parent passed; either way in a session of its own.
fn connect_stdio(ch: &Channels, plan: &Plan) {
    if plan.terminal {
        setup_terminal(ch);
        return;
    }
    for (target, source) in plan.stdio.iter().enumerate() {
        if *source < 0 {
            continue;
        }
        if *source == target as i32 {
            // dup2 onto itself would keep close-on-exec.
            // SAFETY: F_SETFD on an fd the parent passed.
            check!(ch, Stage::Stdio, target, unsafe {
                libc::fcntl(*source, libc::F_SETFD, 0)
            });
        } else {
            // SAFETY: dup2 of an fd the parent passed onto 0, 1 or 2,
            // which nothing in this process holds as an OwnedFd.
            check!(ch, Stage::Stdio, target, unsafe {
                libc::dup2(*source, target as i32)
            });
        }
    }
    ok!(ch, Stage::Session, 0, rustix::process::setsid());
}

/// execvp's search, done here while the parent still works rather than by
/// failing execve calls after the go (each costs tens of microseconds).
/// Candidates before the first that exists for root do not exist for the
/// command's user either, so skipping them keeps execvp's outcome.
/// Returns the index of the first candidate to try.
fn find_the_command(plan: &Plan) -> usize {
    plan.exec_candidates
        .iter()
        .position(|c| rustix::fs::access(c.as_c_str(), Access::EXISTS).is_ok())
        .unwrap_or(0)
}

/// Tells the parent we are set up (unless asked to run at once), then
/// waits for the go. Returns the go byte (see [`go`]); exits quietly when
/// the parent went away or aborted the start.
fn report_ready_and_wait_for_the_go(ch: &Channels, plan: &Plan) -> u8 {
    if !plan.autostart {
        send(
            ch.report,
            Report {
                stage: Stage::Ready as u32,
                index: 0,
                errno: 0,
            },
        );
        ch.mark(Stage::Ready);
    }
    let mut byte = [0u8; 1];
    // SAFETY: a one-byte read into a local buffer.
    let n = unsafe { libc::read(ch.start, byte.as_mut_ptr().cast(), 1) };
    if n != 1 {
        // SAFETY: leaving the child without running any Rust destructors.
        unsafe { libc::_exit(1) };
    }
    ch.mark(Stage::WaitStart);
    byte[0]
}

/// Setup is done: the command may run on any CPU the parent may. Only
/// after the go, which the parent sends after narrowing this process
/// itself: no narrowing can come after this widening.
fn widen_the_cpu_set(ch: &Channels, plan: &Plan, narrowed: bool, go: u8) {
    if let Some(cpus) = plan.cpus.as_ref() {
        if narrowed || go & go::PARENT_NARROWED != 0 {
            check!(ch, Stage::CpuSet, 0, affinity::set_own(&cpus.run));
            ch.mark(Stage::CpuSet);
        }
    }
}

/// A cgroup namespace rooted at the container's own cgroups (joined by now,
/// on v1 by [`join_v1_cgroups`], on v2 by the clone).
fn enter_a_cgroup_namespace(ch: &Channels) {
    // SAFETY: unshare of a namespace only, in a single-threaded process.
    check!(ch, Stage::CgroupNamespace, 0, unsafe {
        libc::unshare(libc::CLONE_NEWCGROUP)
    });
}

/// The command's identity: groups, gid, uid, then (for root) the effective
/// and permitted capabilities; the bounding set shrank before the go.
/// rustix makes the raw, per-thread system calls: glibc's wrappers would
/// try to broadcast them to threads that exist only in the parent.
fn switch_identity(ch: &Channels, plan: &Plan) {
    use rustix::thread::{set_thread_groups, set_thread_res_gid, set_thread_res_uid};
    // from_raw_unchecked: the ids pass through as the spec gives them.
    let gid = Gid::from_raw_unchecked(plan.gid);
    let uid = Uid::from_raw_unchecked(plan.uid);
    ok!(ch, Stage::Identity, 0, set_thread_groups(&plan.groups));
    ok!(ch, Stage::Identity, 1, set_thread_res_gid(gid, gid, gid));
    ok!(ch, Stage::Identity, 2, set_thread_res_uid(uid, uid, uid));
    if plan.uid == 0 {
        set_capabilities(ch, plan.caps);
    }
    // Changing uid/gid clears the parent-death signal: set it again.
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
    ok!(
        ch,
        Stage::NoNewPrivs,
        0,
        rustix::thread::set_no_new_privs(true)
    );
    rustix::process::umask(Mode::from_raw_mode(0o022));
    ch.mark(Stage::NoNewPrivs);
}

/// Root's effective and permitted sets become the container's capabilities.
fn set_capabilities(ch: &Channels, caps: u64) {
    use rustix::thread::{CapabilitySet, CapabilitySets};
    let caps = CapabilitySet::from_bits_retain(caps);
    let sets = CapabilitySets {
        effective: caps,
        permitted: caps,
        inheritable: CapabilitySet::empty(),
    };
    ok!(
        ch,
        Stage::Capabilities,
        64,
        rustix::thread::set_capabilities(None, sets)
    );
}

/// Every inherited fd but stdio closes on exec (Linux 5.11+).
fn close_inherited_fds_on_exec(ch: &Channels) {
    // SAFETY: close_range only marks fds close-on-exec; nothing is closed.
    check!(ch, Stage::Stdio, 3, unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        ) as i32
    });
}

/// Docker's default seccomp filter, last before exec.
fn install_seccomp(ch: &Channels, plan: &Plan) {
    // SAFETY: no_new_privs is set (switch_identity); from here on only
    // execve and the calls the filter allows are made.
    let rc = unsafe { crate::security::seccomp::install(plan.seccomp) };
    if rc != 0 {
        fail(ch, Stage::Seccomp, 0, rc);
    }
    ch.mark(Stage::Seccomp);
}

/// execvp: tries each candidate from `first`; remembers EACCES but keeps
/// looking, as execvp does. Returns only by failing.
fn exec(ch: &Channels, plan: &Plan, first: usize) -> ! {
    let mut error = libc::ENOENT;
    for candidate in &plan.exec_candidates[first..] {
        // SAFETY: a NUL-terminated path and the NULL-terminated argument
        // and environment vectors the plan owns.
        unsafe {
            libc::execve(
                candidate.as_ptr(),
                plan.argv_ptrs.as_ptr(),
                plan.envp_ptrs.as_ptr(),
            )
        };
        let e = errno();
        match e {
            libc::ENOENT | libc::ENOTDIR => {}
            libc::EACCES => error = e,
            _ => {
                error = e;
                break;
            }
        }
    }
    fail(ch, Stage::Exec, 0, error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stage_round_trips_and_fits_the_clock() {
        for (i, stage) in Stage::ALL.iter().enumerate() {
            assert_eq!(*stage as usize, i);
            assert_eq!(Stage::from_raw(i as u32), Some(*stage));
        }
        assert!(Stage::ALL.len() <= STAGE_SLOTS);
        assert_eq!(Stage::from_raw(Stage::ALL.len() as u32), None);
    }

    #[test]
    fn reports_survive_the_pipe_encoding() {
        let r = Report {
            stage: Stage::Mount as u32,
            index: 7,
            errno: libc::ENOENT,
        };
        let back = Report::from_bytes(&r.to_bytes());
        assert_eq!(
            (back.stage, back.index, back.errno),
            (r.stage, 7, libc::ENOENT)
        );
    }
}
