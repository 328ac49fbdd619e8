//! Spreading the container's setup over two CPUs.
//!
//! After `clone`, the parent (cgroups, the network namespace) and the child
//! (mounts, `pivot_root`) have independent work to do. Schedulers that pack
//! tasks onto few CPUs — as this project's VM kernel does — put the new
//! child on its parent's CPU, where it preempts the parent: the two halves
//! then run one after the other, and the parent cannot even ask for the
//! child to be moved until the child blocks. So the child moves itself: its
//! first system call narrows its CPU set to the CPUs other than the one the
//! parent cloned it from, and once its setup is done it widens the set back
//! to what the parent had, before the command may run. The container's
//! process is never left pinned.

use std::mem::MaybeUninit;

/// The CPUs the runtime's thread may run on: what children spread over.
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

    /// The CPU sets a child cloned from this thread now should use: all
    /// allowed CPUs but the current one while it sets up, then all of them.
    /// `None` with a single CPU (nothing to spread over) or when the current
    /// CPU cannot be told.
    pub fn for_child(&self) -> Option<ChildCpus> {
        if self.count < 2 {
            return None;
        }
        // SAFETY: sched_getcpu has no preconditions.
        let here = usize::try_from(unsafe { libc::sched_getcpu() }).ok()?;
        let mut setup = self.allowed;
        // SAFETY: CPU_CLR within the set's size (here < CPU_SETSIZE, or it
        // is ignored).
        if here < 8 * std::mem::size_of::<libc::cpu_set_t>() {
            unsafe { libc::CPU_CLR(here, &mut setup) };
        }
        Some(ChildCpus {
            setup,
            run: self.allowed,
        })
    }
}

/// The CPU sets the child switches between (see the module docs).
#[derive(Clone, Copy)]
pub struct ChildCpus {
    /// While it builds its mounts: every allowed CPU but the parent's.
    pub setup: libc::cpu_set_t,
    /// From the end of its setup on: the parent's whole set.
    pub run: libc::cpu_set_t,
}

/// Sets the calling thread's CPU set (async-signal-safe: the child calls it).
/// Returns the raw result: 0, or -1 with errno set.
pub fn set_own(cpus: &libc::cpu_set_t) -> libc::c_int {
    // SAFETY: sched_setaffinity reads a cpu_set_t of the size given.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), cpus) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setup_set_leaves_out_the_current_cpu_and_the_run_set_is_whole() {
        let spread = CpuSpread::current().expect("reading this thread's CPU set");
        let Some(child) = spread.for_child() else {
            assert!(spread.count < 2, "two or more CPUs must give a spread");
            return;
        };
        // SAFETY: CPU_COUNT / CPU_EQUAL read the sets.
        unsafe {
            assert_eq!(libc::CPU_COUNT(&child.setup) as usize, spread.count - 1);
            assert!(libc::CPU_EQUAL(&child.run, &spread.allowed));
        }
    }
}
