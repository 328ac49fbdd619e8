//! Spreading the container's setup over two CPUs.
//!
//! After `clone`, the parent (cgroups, the network namespace) and the child
//! (mounts, `pivot_root`) have independent work to do. Schedulers that pack
//! tasks onto few CPUs — as this project's VM kernel does — queue the new
//! child behind its parent on the same CPU, so the two halves run one after
//! the other. The parent therefore moves the child to another CPU it may
//! run on right after `clone`, and gives the child back its full CPU set
//! before the command may run: the container's process is never left
//! pinned.

use std::mem::MaybeUninit;

/// The CPUs this process may run on, to restore on the child.
pub struct CpuSpread {
    allowed: libc::cpu_set_t,
    count: usize,
}

impl CpuSpread {
    /// The calling thread's CPU set; `None` if it cannot be read.
    pub fn current() -> Option<CpuSpread> {
        let mut allowed = MaybeUninit::<libc::cpu_set_t>::zeroed();
        // SAFETY: sched_getaffinity fills a cpu_set_t of the size given.
        let rc = unsafe {
            libc::sched_getaffinity(
                0,
                std::mem::size_of::<libc::cpu_set_t>(),
                allowed.as_mut_ptr(),
            )
        };
        if rc != 0 {
            return None;
        }
        // SAFETY: initialised (zeroed, then filled by the kernel).
        let allowed = unsafe { allowed.assume_init() };
        // SAFETY: CPU_COUNT reads the set.
        let count = unsafe { libc::CPU_COUNT(&allowed) } as usize;
        Some(CpuSpread { allowed, count })
    }

    /// Moves `pid` to an allowed CPU other than the caller's. Best effort:
    /// with one CPU, or if the move fails, the child simply runs where the
    /// scheduler put it.
    pub fn move_away(&self, pid: libc::pid_t) {
        if self.count < 2 {
            return;
        }
        // SAFETY: sched_getcpu has no preconditions.
        let here = unsafe { libc::sched_getcpu() };
        let cpus = 8 * std::mem::size_of::<libc::cpu_set_t>();
        let start = usize::try_from(here).map_or(0, |h| h + 1);
        let Some(target) = (0..cpus)
            .map(|i| (start + i) % cpus)
            // SAFETY: CPU_ISSET reads the set within its size.
            .find(|&c| c as i32 != here && unsafe { libc::CPU_ISSET(c, &self.allowed) })
        else {
            return;
        };
        // SAFETY: building a local cpu_set_t.
        let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: target < CPU_SETSIZE.
        unsafe { libc::CPU_SET(target, &mut one) };
        if let Err(e) = set(pid, &one) {
            tracing::debug!(pid, error = %e, "could not move the container process");
        }
    }

    /// Gives `pid` back the full CPU set.
    pub fn restore(&self, pid: libc::pid_t) -> std::io::Result<()> {
        if self.count < 2 {
            return Ok(());
        }
        set(pid, &self.allowed)
    }
}

fn set(pid: libc::pid_t, cpus: &libc::cpu_set_t) -> std::io::Result<()> {
    // SAFETY: sched_setaffinity reads a cpu_set_t of the size given.
    let rc = unsafe { libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), cpus) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
