//! berth's default seccomp filter: Docker's default profile as a classic BPF
//! program, built once per process and installed right before `execve`.
//!
//! The program is an allowlist: an arch check, then a binary search over
//! ranges of syscall numbers whose leaves allow, refuse with `EPERM`, or
//! check an argument. `clone3` answers `ENOSYS` so that libc falls back to
//! `clone`, whose flags a filter can inspect (as Docker does). Emitting it
//! by hand keeps per-syscall actions possible and costs a few microseconds.

use std::sync::OnceLock;

/// One classic BPF instruction (`struct sock_filter`).
pub type Instruction = libc::sock_filter;

const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;

// BPF opcodes.
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JEQ_K: u16 = 0x15;
const BPF_JMP_JGE_K: u16 = 0x35;
const BPF_JMP_JSET_K: u16 = 0x45;
const BPF_RET_K: u16 = 0x06;

// struct seccomp_data offsets.
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const fn offset_arg_low(i: u32) -> u32 {
    16 + 8 * i
}

/// Namespace-creating clone flags a container without CAP_SYS_ADMIN may not use.
const CLONE_NAMESPACE_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u32;

/// Personalities Docker allows (linux, linux32 compat flags, query).
const ALLOWED_PERSONALITIES: [u32; 5] = [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

const AF_VSOCK: u32 = 40;

fn stmt(code: u16, k: u32) -> Instruction {
    Instruction {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Instruction {
    Instruction { code, jt, jf, k }
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64

/// The default filter, built on first use.
pub fn default_filter() -> &'static [Instruction] {
    static FILTER: OnceLock<Vec<Instruction>> = OnceLock::new();
    FILTER.get_or_init(build_default_filter)
}

fn build_default_filter() -> Vec<Instruction> {
    let eperm = stmt(BPF_RET_K, SECCOMP_RET_ERRNO | libc::EPERM as u32);
    let mut p = vec![
        stmt(BPF_LD_W_ABS, OFFSET_ARCH),
        jump(BPF_JMP_JEQ_K, AUDIT_ARCH, 1, 0),
        stmt(BPF_RET_K, SECCOMP_RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, OFFSET_NR),
    ];
    #[cfg(target_arch = "x86_64")]
    {
        // x32 syscalls (bit 30) are not part of the profile.
        p.push(jump(BPF_JMP_JGE_K, 0x4000_0000, 0, 1));
        p.push(eperm);
    }
    p.extend(decision_tree(&segments()));
    p
}

/// What the filter does with one syscall number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Allow,
    Deny,
    /// Allowed unless its flags ask for new namespaces.
    Clone,
    /// Cannot be inspected: `ENOSYS` makes libc fall back to `clone`.
    Clone3,
    /// Only the harmless values.
    Personality,
    /// Every family but `AF_VSOCK` (the host communication channel).
    Socket,
}

/// The whole syscall number space below the x32 bit as consecutive
/// `(first number, verdict)` segments, each running up to the next one's
/// first number.
fn segments() -> Vec<(u32, Verdict)> {
    let special = [
        (libc::SYS_clone as u32, Verdict::Clone),
        (libc::SYS_clone3 as u32, Verdict::Clone3),
        (libc::SYS_personality as u32, Verdict::Personality),
        (libc::SYS_socket as u32, Verdict::Socket),
    ];
    let mut points: Vec<(u32, u32, Verdict)> = ranges(ALLOWED)
        .into_iter()
        .map(|(lo, hi)| (lo, hi, Verdict::Allow))
        .chain(special.iter().map(|&(nr, v)| (nr, nr, v)))
        .collect();
    points.sort_unstable_by_key(|&(lo, _, _)| lo);
    let mut segments = vec![(0, Verdict::Deny)];
    let mut push = |first: u32, verdict: Verdict| match segments.last_mut() {
        Some(last) if last.0 == first => last.1 = verdict,
        Some(last) if last.1 == verdict => {}
        _ => segments.push((first, verdict)),
    };
    for (lo, hi, verdict) in points {
        push(lo, verdict);
        push(hi + 1, Verdict::Deny);
    }
    segments
}

/// A balanced binary search over `segments` (the accumulator holds the
/// syscall number, which lies within them), then the code of each verdict
/// that checks an argument, then one shared return per plain verdict.
///
/// A flat list of comparisons costs every installation: the kernel finds
/// the syscalls a filter always allows by running it once per syscall
/// number, and the search cuts those runs from up to ~110 instructions to
/// ~10. Jumping straight to shared returns keeps the program short, which
/// the JIT's passes pay for too. The always-allowed syscalls then skip the
/// filter in the container.
fn decision_tree(segments: &[(u32, Verdict)]) -> Vec<Instruction> {
    let mut nodes = Vec::new();
    let root = search(segments, &mut nodes);
    if let Target::Leaf(verdict) = root {
        return verdict_code(verdict);
    }

    // After the search: the argument checks, then the shared returns.
    let mut blocks: Vec<(Verdict, usize)> = Vec::new();
    let mut next = nodes.len();
    for (_, verdict) in segments {
        if !matches!(verdict, Verdict::Allow | Verdict::Deny)
            && !blocks.iter().any(|(v, _)| v == verdict)
        {
            blocks.push((*verdict, next));
            next += verdict_code(*verdict).len();
        }
    }
    let (allow_at, deny_at) = (next, next + 1);
    let position = |target: Target| match target {
        Target::Node(index) => index,
        Target::Leaf(Verdict::Allow) => allow_at,
        Target::Leaf(Verdict::Deny) => deny_at,
        Target::Leaf(verdict) => blocks
            .iter()
            .find(|(v, _)| *v == verdict)
            .map_or(deny_at, |(_, at)| *at),
    };

    let mut p = Vec::with_capacity(deny_at + 1);
    for (index, node) in nodes.iter().enumerate() {
        let offset = |target: Target| {
            u8::try_from(position(target) - index - 1)
                .expect("the filter is under 256 instructions (tested)")
        };
        p.push(jump(
            BPF_JMP_JGE_K,
            node.first,
            offset(node.at_least),
            offset(node.below),
        ));
    }
    for (verdict, _) in &blocks {
        p.extend(verdict_code(*verdict));
    }
    p.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
    p.push(stmt(BPF_RET_K, SECCOMP_RET_ERRNO | libc::EPERM as u32));
    p
}

/// Where a comparison of the search leads.
#[derive(Clone, Copy)]
enum Target {
    Node(usize),
    Leaf(Verdict),
}

/// One comparison of the search, `nr >= first`.
struct Node {
    first: u32,
    at_least: Target,
    below: Target,
}

/// Appends the comparisons that pick one of `segments` to `nodes`, in
/// program order (each lower half directly after its comparison), and
/// returns where the search starts.
fn search(segments: &[(u32, Verdict)], nodes: &mut Vec<Node>) -> Target {
    if let [(_, verdict)] = segments {
        return Target::Leaf(*verdict);
    }
    let (below, at_least) = segments.split_at(segments.len() / 2);
    let index = nodes.len();
    nodes.push(Node {
        first: at_least[0].0,
        at_least: Target::Leaf(Verdict::Deny),
        below: Target::Leaf(Verdict::Deny),
    });
    nodes[index].below = search(below, nodes);
    nodes[index].at_least = search(at_least, nodes);
    Target::Node(index)
}

/// The instructions that decide one verdict; each path ends in a return.
fn verdict_code(verdict: Verdict) -> Vec<Instruction> {
    let allow = stmt(BPF_RET_K, SECCOMP_RET_ALLOW);
    let eperm = stmt(BPF_RET_K, SECCOMP_RET_ERRNO | libc::EPERM as u32);
    match verdict {
        Verdict::Allow => vec![allow],
        Verdict::Deny => vec![eperm],
        Verdict::Clone => vec![
            stmt(BPF_LD_W_ABS, clone_flags_offset()),
            jump(BPF_JMP_JSET_K, CLONE_NAMESPACE_FLAGS, 1, 0),
            allow,
            eperm,
        ],
        Verdict::Clone3 => vec![stmt(BPF_RET_K, SECCOMP_RET_ERRNO | libc::ENOSYS as u32)],
        Verdict::Personality => {
            let n = ALLOWED_PERSONALITIES.len() as u8;
            let mut p = vec![stmt(BPF_LD_W_ABS, offset_arg_low(0))];
            for (i, value) in ALLOWED_PERSONALITIES.iter().enumerate() {
                // On a match, jump to the allow after the last comparison.
                p.push(jump(BPF_JMP_JEQ_K, *value, n - i as u8, 0));
            }
            p.extend([eperm, allow]);
            p
        }
        Verdict::Socket => vec![
            stmt(BPF_LD_W_ABS, offset_arg_low(0)),
            jump(BPF_JMP_JEQ_K, AF_VSOCK, 1, 0),
            allow,
            eperm,
        ],
    }
}

/// Sorted, merged `[lo, hi]` ranges of syscall numbers.
fn ranges(numbers: &[libc::c_long]) -> Vec<(u32, u32)> {
    let mut sorted: Vec<u32> = numbers.iter().map(|n| *n as u32).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<(u32, u32)> = Vec::new();
    for n in sorted {
        match out.last_mut() {
            Some((_, hi)) if *hi + 1 == n => *hi = n,
            _ => out.push((n, n)),
        }
    }
    out
}

/// The low 32 bits of clone's flags argument (arg 0 on x86_64 and arm64).
fn clone_flags_offset() -> u32 {
    offset_arg_low(0)
}

/// Installs `filter` on the calling thread. Async-signal-safe: no allocation.
///
/// # Safety
/// Requires `no_new_privs` (or CAP_SYS_ADMIN); after this call only the
/// syscalls the filter allows will work.
pub unsafe fn install(filter: &[Instruction]) -> i32 {
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut Instruction,
    };
    // SAFETY: prog points at a valid filter that outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            1u32, /* SECCOMP_SET_MODE_FILTER */
            0u32,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc == 0 {
        0
    } else {
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL)
    }
}

// Numbers libc does not name yet (x86_64).
#[cfg(target_arch = "x86_64")]
const SYS_CACHESTAT: libc::c_long = 451;
#[cfg(target_arch = "x86_64")]
const SYS_IO_PGETEVENTS: libc::c_long = 333;

/// Syscalls allowed without conditions (in any order: the filter sorts
/// them into ranges).
#[cfg(target_arch = "x86_64")]
const ALLOWED: &[libc::c_long] = {
    use libc::*;
    &[
        SYS_read,
        SYS_write,
        SYS_futex,
        SYS_mmap,
        SYS_munmap,
        SYS_mprotect,
        SYS_brk,
        SYS_close,
        SYS_openat,
        SYS_newfstatat,
        SYS_fstat,
        SYS_statx,
        SYS_lseek,
        SYS_pread64,
        SYS_pwrite64,
        SYS_readv,
        SYS_writev,
        SYS_rt_sigaction,
        SYS_rt_sigprocmask,
        SYS_rt_sigreturn,
        SYS_epoll_wait,
        SYS_epoll_pwait,
        SYS_epoll_pwait2,
        SYS_epoll_ctl,
        SYS_poll,
        SYS_ppoll,
        SYS_select,
        SYS_pselect6,
        SYS_getpid,
        SYS_gettid,
        SYS_getuid,
        SYS_geteuid,
        SYS_getgid,
        SYS_getegid,
        SYS_getppid,
        SYS_clock_gettime,
        SYS_clock_nanosleep,
        SYS_nanosleep,
        SYS_gettimeofday,
        SYS_sched_yield,
        SYS_madvise,
        SYS_fcntl,
        SYS_ioctl,
        SYS_access,
        SYS_faccessat,
        SYS_faccessat2,
        SYS_execve,
        SYS_execveat,
        SYS_exit,
        SYS_exit_group,
        SYS_wait4,
        SYS_waitid,
        SYS_fork,
        SYS_vfork,
        SYS_accept,
        SYS_accept4,
        SYS_adjtimex,
        SYS_alarm,
        SYS_arch_prctl,
        SYS_bind,
        SYS_CACHESTAT,
        SYS_capget,
        SYS_capset,
        SYS_chdir,
        SYS_chmod,
        SYS_chown,
        SYS_chroot,
        SYS_clock_adjtime,
        SYS_clock_getres,
        SYS_close_range,
        SYS_connect,
        SYS_copy_file_range,
        SYS_creat,
        SYS_dup,
        SYS_dup2,
        SYS_dup3,
        SYS_epoll_create,
        SYS_epoll_create1,
        SYS_eventfd,
        SYS_eventfd2,
        SYS_fadvise64,
        SYS_fallocate,
        SYS_fanotify_mark,
        SYS_fchdir,
        SYS_fchmod,
        SYS_fchmodat,
        SYS_fchmodat2,
        SYS_fchown,
        SYS_fchownat,
        SYS_fdatasync,
        SYS_fgetxattr,
        SYS_flistxattr,
        SYS_flock,
        SYS_fremovexattr,
        SYS_fsetxattr,
        SYS_fstatfs,
        SYS_fsync,
        SYS_ftruncate,
        SYS_futex_waitv,
        SYS_futimesat,
        SYS_getcpu,
        SYS_getcwd,
        SYS_getdents,
        SYS_getdents64,
        SYS_getgroups,
        SYS_getitimer,
        SYS_getpeername,
        SYS_getpgid,
        SYS_getpgrp,
        SYS_getpriority,
        SYS_getrandom,
        SYS_getresgid,
        SYS_getresuid,
        SYS_getrlimit,
        SYS_get_robust_list,
        SYS_getrusage,
        SYS_getsid,
        SYS_getsockname,
        SYS_getsockopt,
        SYS_get_thread_area,
        SYS_getxattr,
        SYS_inotify_add_watch,
        SYS_inotify_init,
        SYS_inotify_init1,
        SYS_inotify_rm_watch,
        SYS_io_cancel,
        SYS_io_destroy,
        SYS_io_getevents,
        SYS_IO_PGETEVENTS,
        SYS_ioprio_get,
        SYS_ioprio_set,
        SYS_io_setup,
        SYS_io_submit,
        SYS_kill,
        SYS_landlock_add_rule,
        SYS_landlock_create_ruleset,
        SYS_landlock_restrict_self,
        SYS_lchown,
        SYS_lgetxattr,
        SYS_link,
        SYS_linkat,
        SYS_listen,
        SYS_listxattr,
        SYS_llistxattr,
        SYS_lremovexattr,
        SYS_lsetxattr,
        SYS_lstat,
        SYS_membarrier,
        SYS_memfd_create,
        SYS_memfd_secret,
        SYS_mincore,
        SYS_mkdir,
        SYS_mkdirat,
        SYS_mknod,
        SYS_mknodat,
        SYS_mlock,
        SYS_mlock2,
        SYS_mlockall,
        SYS_modify_ldt,
        SYS_mq_getsetattr,
        SYS_mq_notify,
        SYS_mq_open,
        SYS_mq_timedreceive,
        SYS_mq_timedsend,
        SYS_mq_unlink,
        SYS_mremap,
        SYS_msgctl,
        SYS_msgget,
        SYS_msgrcv,
        SYS_msgsnd,
        SYS_msync,
        SYS_munlock,
        SYS_munlockall,
        SYS_name_to_handle_at,
        SYS_open,
        SYS_openat2,
        SYS_pause,
        SYS_pidfd_open,
        SYS_pidfd_send_signal,
        SYS_pipe,
        SYS_pipe2,
        SYS_pkey_alloc,
        SYS_pkey_free,
        SYS_pkey_mprotect,
        SYS_prctl,
        SYS_preadv,
        SYS_preadv2,
        SYS_prlimit64,
        SYS_process_mrelease,
        SYS_process_vm_readv,
        SYS_process_vm_writev,
        SYS_ptrace,
        SYS_pwritev,
        SYS_pwritev2,
        SYS_readahead,
        SYS_readlink,
        SYS_readlinkat,
        SYS_recvfrom,
        SYS_recvmmsg,
        SYS_recvmsg,
        SYS_remap_file_pages,
        SYS_removexattr,
        SYS_rename,
        SYS_renameat,
        SYS_renameat2,
        SYS_restart_syscall,
        SYS_rmdir,
        SYS_rseq,
        SYS_rt_sigpending,
        SYS_rt_sigqueueinfo,
        SYS_rt_sigsuspend,
        SYS_rt_sigtimedwait,
        SYS_rt_tgsigqueueinfo,
        SYS_sched_getaffinity,
        SYS_sched_getattr,
        SYS_sched_getparam,
        SYS_sched_get_priority_max,
        SYS_sched_get_priority_min,
        SYS_sched_getscheduler,
        SYS_sched_rr_get_interval,
        SYS_sched_setaffinity,
        SYS_sched_setattr,
        SYS_sched_setparam,
        SYS_sched_setscheduler,
        SYS_seccomp,
        SYS_semctl,
        SYS_semget,
        SYS_semop,
        SYS_semtimedop,
        SYS_sendfile,
        SYS_sendmmsg,
        SYS_sendmsg,
        SYS_sendto,
        SYS_setfsgid,
        SYS_setfsuid,
        SYS_setgid,
        SYS_setgroups,
        SYS_setitimer,
        SYS_setpgid,
        SYS_setpriority,
        SYS_setregid,
        SYS_setresgid,
        SYS_setresuid,
        SYS_setreuid,
        SYS_setrlimit,
        SYS_set_robust_list,
        SYS_setsid,
        SYS_setsockopt,
        SYS_set_thread_area,
        SYS_set_tid_address,
        SYS_setuid,
        SYS_setxattr,
        SYS_shmat,
        SYS_shmctl,
        SYS_shmdt,
        SYS_shmget,
        SYS_shutdown,
        SYS_sigaltstack,
        SYS_signalfd,
        SYS_signalfd4,
        SYS_socketpair,
        SYS_splice,
        SYS_stat,
        SYS_statfs,
        SYS_symlink,
        SYS_symlinkat,
        SYS_sync,
        SYS_sync_file_range,
        SYS_syncfs,
        SYS_sysinfo,
        SYS_tee,
        SYS_tgkill,
        SYS_time,
        SYS_timer_create,
        SYS_timer_delete,
        SYS_timer_getoverrun,
        SYS_timer_gettime,
        SYS_timer_settime,
        SYS_timerfd_create,
        SYS_timerfd_gettime,
        SYS_timerfd_settime,
        SYS_times,
        SYS_tkill,
        SYS_truncate,
        SYS_umask,
        SYS_uname,
        SYS_unlink,
        SYS_unlinkat,
        SYS_utime,
        SYS_utimensat,
        SYS_utimes,
        SYS_vmsplice,
        SYS_epoll_ctl_old,
        SYS_epoll_wait_old,
    ]
};

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny classic-BPF interpreter, enough to check the emitted program.
    fn run(filter: &[Instruction], arch: u32, nr: u32, arg0: u64) -> u32 {
        run_counting(filter, arch, nr, arg0).0
    }

    /// The verdict and how many instructions ran to reach it.
    fn run_counting(filter: &[Instruction], arch: u32, nr: u32, arg0: u64) -> (u32, usize) {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_ne_bytes());
        data[4..8].copy_from_slice(&arch.to_ne_bytes());
        data[16..24].copy_from_slice(&arg0.to_ne_bytes());
        let mut acc: u32 = 0;
        let mut pc = 0usize;
        let mut steps = 0;
        loop {
            let i = filter[pc];
            steps += 1;
            match i.code {
                BPF_LD_W_ABS => {
                    let o = i.k as usize;
                    acc = u32::from_ne_bytes(data[o..o + 4].try_into().unwrap());
                    pc += 1;
                }
                BPF_JMP_JEQ_K | BPF_JMP_JGE_K | BPF_JMP_JSET_K => {
                    let taken = match i.code {
                        BPF_JMP_JEQ_K => acc == i.k,
                        BPF_JMP_JGE_K => acc >= i.k,
                        _ => acc & i.k != 0,
                    };
                    pc += 1 + if taken { i.jt } else { i.jf } as usize;
                }
                BPF_RET_K => return (i.k, steps),
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    fn check(nr: libc::c_long, arg0: u64) -> u32 {
        run(default_filter(), AUDIT_ARCH, nr as u32, arg0)
    }

    const EPERM: u32 = SECCOMP_RET_ERRNO | libc::EPERM as u32;

    #[test]
    fn common_syscalls_are_allowed() {
        for nr in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_execve,
            libc::SYS_exit_group,
        ] {
            assert_eq!(check(nr, 0), SECCOMP_RET_ALLOW, "syscall {nr}");
        }
    }

    #[test]
    fn privileged_syscalls_are_refused() {
        for nr in [
            libc::SYS_mount,
            libc::SYS_umount2,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_pivot_root,
            libc::SYS_bpf,
            libc::SYS_keyctl,
            libc::SYS_init_module,
            libc::SYS_kexec_load,
            libc::SYS_perf_event_open,
            libc::SYS_reboot,
            libc::SYS_open_by_handle_at,
            libc::SYS_io_uring_setup,
        ] {
            assert_eq!(check(nr, 0), EPERM, "syscall {nr}");
        }
    }

    #[test]
    fn clone_without_namespaces_is_allowed() {
        let flags = (libc::CLONE_VM | libc::CLONE_THREAD | libc::SIGCHLD) as u64;
        assert_eq!(check(libc::SYS_clone, flags), SECCOMP_RET_ALLOW);
        let ns = (libc::CLONE_NEWUSER | libc::SIGCHLD) as u64;
        assert_eq!(check(libc::SYS_clone, ns), EPERM);
        assert_eq!(check(libc::SYS_clone, libc::CLONE_NEWNET as u64), EPERM);
    }

    #[test]
    fn clone3_reports_enosys() {
        assert_eq!(
            check(libc::SYS_clone3, 0),
            SECCOMP_RET_ERRNO | libc::ENOSYS as u32
        );
    }

    #[test]
    fn personality_and_socket_are_filtered_by_argument() {
        assert_eq!(check(libc::SYS_personality, 0), SECCOMP_RET_ALLOW);
        assert_eq!(check(libc::SYS_personality, 0xffff_ffff), SECCOMP_RET_ALLOW);
        assert_eq!(check(libc::SYS_personality, 0x0040_0000), EPERM);
        assert_eq!(
            check(libc::SYS_socket, libc::AF_INET as u64),
            SECCOMP_RET_ALLOW
        );
        assert_eq!(check(libc::SYS_socket, AF_VSOCK as u64), EPERM);
    }

    #[test]
    fn every_syscall_number_gets_the_profile_verdict() {
        let conditional = [
            libc::SYS_clone,
            libc::SYS_clone3,
            libc::SYS_personality,
            libc::SYS_socket,
        ];
        for nr in 0..512 {
            if conditional.contains(&nr) {
                continue;
            }
            let expected = if ALLOWED.contains(&nr) {
                SECCOMP_RET_ALLOW
            } else {
                EPERM
            };
            assert_eq!(check(nr, 0), expected, "syscall {nr}");
        }
    }

    #[test]
    fn every_verdict_is_a_short_path() {
        // The kernel runs the filter once per syscall number at every
        // installation (to find the always-allowed ones): a search, not a
        // scan.
        let longest = (0..1024)
            .map(|nr| run_counting(default_filter(), AUDIT_ARCH, nr, 0).1)
            .max();
        assert!(longest.is_some_and(|n| n <= 20), "{longest:?} instructions");
    }

    #[test]
    fn argument_checked_syscalls_are_not_allowed_outright() {
        for nr in [
            libc::SYS_clone,
            libc::SYS_clone3,
            libc::SYS_personality,
            libc::SYS_socket,
        ] {
            assert!(!ALLOWED.contains(&nr), "syscall {nr}");
        }
    }

    #[test]
    fn the_filter_stays_small() {
        // Fewer instructions: less to JIT per container, less per syscall.
        let len = default_filter().len();
        assert!(len < 256, "{len} instructions");
        eprintln!("seccomp filter: {len} instructions");
    }

    #[test]
    fn foreign_architectures_are_killed() {
        assert_eq!(
            run(default_filter(), 0x4000_0003, libc::SYS_read as u32, 0),
            SECCOMP_RET_KILL_PROCESS
        );
    }
}
