//! `clone3` into new namespaces (and, on cgroup v2, straight into the
//! container's cgroup).

use super::child::{self, Channels};
use super::plan::Plan;
use crate::error::{Result, RuntimeError};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_PIDFD: u64 = 0x1000;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// The new process as the parent sees it.
pub struct Spawned {
    pub pid: libc::pid_t,
    pub pidfd: OwnedFd,
}

/// Clones the container's first process, which runs [`child::run`].
///
/// The caller must be single-threaded or accept that only the calling thread
/// is copied; the child touches nothing but the prepared `plan`.
pub fn spawn(plan: &Plan, channels: &Channels) -> Result<Spawned> {
    let mut pidfd: libc::c_int = -1;
    let mut args = CloneArgs {
        flags: plan.clone_flags | CLONE_PIDFD,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    if let Some(dir) = &plan.v2_cgroup_dir {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = dir.as_raw_fd() as u64;
    }
    // SAFETY: clone3 without CLONE_VM behaves like fork: the child gets a
    // copy of this address space and only runs child::run, which never
    // returns and does not allocate.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid == 0 {
        // SAFETY: we are the freshly cloned child.
        unsafe { child::run(plan, channels) }
    }
    if pid < 0 {
        return Err(RuntimeError::spawn(
            "clone3 into new namespaces",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: CLONE_PIDFD stored a new fd that we now own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok(Spawned {
        pid: pid as libc::pid_t,
        pidfd,
    })
}
