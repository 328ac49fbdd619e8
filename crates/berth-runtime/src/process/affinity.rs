//! Spreading the container's setup over two CPUs.
//!
//! After `clone`, the parent (cgroups, the network namespace) and the child
//! (mounts, `pivot_root`) have independent work to do. Schedulers that pack
//! tasks onto few CPUs — as this project's VM kernel does — put the new
//! child on its parent's CPU. There it either waits until the parent
//! blocks (most runs here: ~0.4 ms lost), or preempts the parent, and then
//! the two halves run one after the other. So both sides move the child:
//! the parent narrows the child's CPU set to every allowed CPU but its own
//! as soon as `clone` returns, and the child's first system call does the
//! same for itself (for when it runs before the parent can). Once the
//! child has received the go, which the parent sends after its own
//! narrowing, it widens its set back to what the parent had, before the
//! command may run: nothing can narrow it after that, and the container's
//! process is never left pinned.

use std::mem::MaybeUninit;

/// The CPU sets the child switches between (see the module docs).
#[derive(Clone, Copy)]
pub struct ChildCpus {
    /// While it builds its mounts: every allowed CPU but the parent's.
    pub setup: libc::cpu_set_t,
    /// From the end of its setup on: the parent's whole set.
    pub run: libc::cpu_set_t,
}

/// The CPU sets for a child the calling thread is about to clone, read
/// afresh (the caller's set may have changed since it started). `None` when
/// there is nothing to spread over (one allowed CPU) or the set or the
/// current CPU cannot be read: the child then stays where the kernel puts it.
pub fn for_child() -> Option<ChildCpus> {
    let allowed = own_cpu_set()?;
    // SAFETY: sched_getcpu has no preconditions.
    let here = usize::try_from(unsafe { libc::sched_getcpu() }).ok()?;
    spread_from(&allowed, here)
}

/// The calling thread's CPU set; `None` if it cannot be read.
fn own_cpu_set() -> Option<libc::cpu_set_t> {
    let mut allowed = MaybeUninit::<libc::cpu_set_t>::zeroed();
    // SAFETY: sched_getaffinity fills a cpu_set_t of the size given.
    let rc = unsafe {
        libc::sched_getaffinity(
            0,
            std::mem::size_of::<libc::cpu_set_t>(),
            allowed.as_mut_ptr(),
        )
    };
    // SAFETY: initialised (zeroed, then filled by the kernel) when rc is 0.
    (rc == 0).then(|| unsafe { allowed.assume_init() })
}

/// [`ChildCpus`] for a child cloned on CPU `here` by a thread allowed on
/// `allowed`; `None` unless at least one other allowed CPU remains.
fn spread_from(allowed: &libc::cpu_set_t, here: usize) -> Option<ChildCpus> {
    let mut setup = *allowed;
    if here < 8 * std::mem::size_of::<libc::cpu_set_t>() {
        // SAFETY: CPU_CLR on a local set, within its size.
        unsafe { libc::CPU_CLR(here, &mut setup) };
    }
    // SAFETY: CPU_COUNT reads the set.
    if unsafe { libc::CPU_COUNT(&setup) } == 0 {
        return None;
    }
    Some(ChildCpus {
        setup,
        run: *allowed,
    })
}

/// Sets the calling thread's CPU set (async-signal-safe: the child calls it).
/// Returns the raw result: 0, or -1 with errno set.
pub fn set_own(cpus: &libc::cpu_set_t) -> libc::c_int {
    set_for(0, cpus)
}

/// Moves a just-cloned child that has not run yet off its parent's CPU;
/// `true` if it was narrowed to `cpus.setup`.
pub fn push_child(pid: libc::pid_t, cpus: &ChildCpus) -> bool {
    set_for(pid, &cpus.setup) == 0
}

fn set_for(pid: libc::pid_t, cpus: &libc::cpu_set_t) -> libc::c_int {
    // SAFETY: sched_setaffinity reads a cpu_set_t of the size given.
    unsafe { libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), cpus) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_of(cpus: &[usize]) -> libc::cpu_set_t {
        // SAFETY: building a local set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for &c in cpus {
            // SAFETY: c is within the set's size in these tests.
            unsafe { libc::CPU_SET(c, &mut set) };
        }
        set
    }

    fn members(set: &libc::cpu_set_t) -> Vec<usize> {
        (0..8 * std::mem::size_of::<libc::cpu_set_t>())
            // SAFETY: CPU_ISSET within the set's size.
            .filter(|&c| unsafe { libc::CPU_ISSET(c, set) })
            .collect()
    }

    #[test]
    fn setup_leaves_out_the_parents_cpu_and_run_is_the_whole_set() {
        let cpus = spread_from(&set_of(&[0, 1, 3]), 1).expect("two CPUs remain");
        assert_eq!(members(&cpus.setup), vec![0, 3]);
        assert_eq!(members(&cpus.run), vec![0, 1, 3]);
    }

    #[test]
    fn a_single_allowed_cpu_gives_no_spread() {
        assert!(spread_from(&set_of(&[2]), 2).is_none());
    }

    #[test]
    fn a_parent_cpu_outside_the_set_changes_nothing() {
        let cpus = spread_from(&set_of(&[0, 1]), 5).expect("spread");
        assert_eq!(members(&cpus.setup), vec![0, 1]);
        let cpus = spread_from(&set_of(&[0, 1]), usize::MAX).expect("spread");
        assert_eq!(members(&cpus.setup), vec![0, 1]);
    }

    #[test]
    fn this_thread_gets_a_spread_exactly_when_it_may_use_two_cpus() {
        let allowed = own_cpu_set().expect("reading this thread's CPU set");
        // SAFETY: CPU_COUNT reads the set.
        let count = unsafe { libc::CPU_COUNT(&allowed) };
        assert_eq!(for_child().is_some(), count >= 2, "{count} allowed CPUs");
    }
}
