//! Resource-use snapshots of a cgroup, read from its control files, for
//! v1, v2 and hybrid hosts alike.
//!
//! Every field maps to one kernel counter, named in its doc comment, so
//! that what the host agent serves can be checked against the kernel's own
//! documentation (`Documentation/admin-guide/cgroup-v1/memory.rst` and
//! `cgroup-v2.rst`). A counter the host does not expose (a controller that
//! is not mounted, a file an older kernel lacks, a cgroup that vanished
//! while it was read) is `None`, never an error and never a made-up zero.

use super::files::{keyed_value, read_keyed, read_u64};
use super::{CgroupPaths, Controller};
pub use berth_core::CgroupMetrics;
use std::path::{Path, PathBuf};

/// The directory holding one controller's files, and whether they are in
/// the v1 format (file names and units differ between versions).
#[derive(Debug, Clone, Copy)]
pub(super) struct ControllerDir<'a> {
    dir: &'a Path,
    v1: bool,
}

impl<'a> ControllerDir<'a> {
    pub(super) fn of(paths: &'a CgroupPaths, controller: Controller) -> Option<Self> {
        paths.dir_for(controller).map(|dir| ControllerDir {
            dir,
            v1: paths.is_v1(controller),
        })
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A whole keyed file (`memory.stat`, `cpu.stat`…), read once so that
    /// every key comes from the same snapshot.
    fn keyed(&self, name: &str) -> Option<String> {
        crate::kernel_files::read(&self.file(name)).ok()
    }
}

/// Reads every counter of the cgroup at `paths`.
pub(super) fn read(paths: &CgroupPaths) -> CgroupMetrics {
    let mut m = CgroupMetrics::default();
    if let Some(memory) = ControllerDir::of(paths, Controller::Memory) {
        read_memory(memory, &mut m);
    }
    if let Some(cpuacct) = ControllerDir::of(paths, Controller::Cpuacct) {
        read_cpu_time(cpuacct, &mut m);
    }
    if let Some(cpu) = ControllerDir::of(paths, Controller::Cpu) {
        read_throttling(cpu, &mut m);
    }
    if let Some(pids) = ControllerDir::of(paths, Controller::Pids) {
        m.pids_current = pids_current(pids);
        // read_u64 turns `max` into u64::MAX: no limit.
        m.pids_limit = read_u64(&pids.file("pids.max")).filter(|&v| v != u64::MAX);
    }
    m
}

pub(super) fn memory_usage(memory: ControllerDir<'_>) -> Option<u64> {
    read_u64(&memory.file(if memory.v1 {
        "memory.usage_in_bytes"
    } else {
        "memory.current"
    }))
}

pub(super) fn memory_peak(memory: ControllerDir<'_>) -> Option<u64> {
    read_u64(&memory.file(if memory.v1 {
        "memory.max_usage_in_bytes"
    } else {
        "memory.peak"
    }))
}

/// `(oom_events, oom_kills)`; see [`CgroupMetrics::oom_events`] for what
/// v1 can and cannot tell. Missing files (a kernel before 4.13 on v1) read
/// as no events: these counters have no "unknown" in the API.
pub(super) fn oom_counts(memory: ControllerDir<'_>) -> (u64, u64) {
    if memory.v1 {
        let text = memory.keyed("memory.oom_control").unwrap_or_default();
        let kills = keyed_value(&text, "oom_kill").unwrap_or(0);
        let under_oom = keyed_value(&text, "under_oom").unwrap_or(0);
        (kills.saturating_add(under_oom), kills)
    } else {
        let text = memory.keyed("memory.events").unwrap_or_default();
        (
            keyed_value(&text, "oom").unwrap_or(0),
            keyed_value(&text, "oom_kill").unwrap_or(0),
        )
    }
}

fn read_memory(memory: ControllerDir<'_>, m: &mut CgroupMetrics) {
    m.memory_usage_bytes = memory_usage(memory);
    m.memory_peak_bytes = memory_peak(memory);
    (m.oom_events, m.oom_kills) = oom_counts(memory);
    let stat = memory.keyed("memory.stat").unwrap_or_default();
    let stat = |key: &str| keyed_value(&stat, key);
    let inactive_file;
    if memory.v1 {
        // The plain keys (rss, cache…) are the cgroup's own pages only;
        // total_* include its descendants, like every v2 figure.
        m.memory_rss_bytes = stat("total_rss");
        m.memory_cache_bytes = stat("total_cache");
        m.memory_swap_bytes = stat("total_swap");
        inactive_file = stat("total_inactive_file");
        m.memory_limit_bytes =
            read_u64(&memory.file("memory.limit_in_bytes")).filter(|&v| !v1_unlimited(v));
    } else {
        m.memory_rss_bytes = stat("anon");
        m.memory_cache_bytes = stat("file");
        m.memory_swap_bytes = read_u64(&memory.file("memory.swap.current"));
        inactive_file = stat("inactive_file");
        m.memory_limit_bytes = read_u64(&memory.file("memory.max")).filter(|&v| v != u64::MAX);
    }
    m.memory_working_set_bytes = m
        .memory_usage_bytes
        .zip(inactive_file)
        .map(|(usage, inactive)| usage.saturating_sub(inactive));
}

/// v1 shows "no limit" as the largest page counter in bytes: LONG_MAX
/// rounded down to a whole page, 9223372036854771712 with 4 KiB pages.
fn v1_unlimited(limit: u64) -> bool {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    // Without a page size, assume the largest one Linux uses (256 KiB):
    // no real limit comes within that of 8 EiB.
    let page = u64::try_from(page)
        .ok()
        .filter(|&p| p > 0)
        .unwrap_or(1 << 18);
    limit > (i64::MAX as u64).saturating_sub(page)
}

pub(super) fn cpu_usage_ns(cpuacct: ControllerDir<'_>) -> Option<u64> {
    if cpuacct.v1 {
        read_u64(&cpuacct.file("cpuacct.usage"))
    } else {
        usec_to_ns(read_keyed(&cpuacct.file("cpu.stat"), "usage_usec"))
    }
}

fn read_cpu_time(cpuacct: ControllerDir<'_>, m: &mut CgroupMetrics) {
    if cpuacct.v1 {
        m.cpu_usage_ns = read_u64(&cpuacct.file("cpuacct.usage"));
        let stat = cpuacct.keyed("cpuacct.stat").unwrap_or_default();
        m.cpu_user_ns = keyed_value(&stat, "user").and_then(ticks_to_ns);
        m.cpu_system_ns = keyed_value(&stat, "system").and_then(ticks_to_ns);
    } else {
        // v2 keeps these in cpu.stat even without the cpu controller.
        let stat = cpuacct.keyed("cpu.stat").unwrap_or_default();
        m.cpu_usage_ns = usec_to_ns(keyed_value(&stat, "usage_usec"));
        m.cpu_user_ns = usec_to_ns(keyed_value(&stat, "user_usec"));
        m.cpu_system_ns = usec_to_ns(keyed_value(&stat, "system_usec"));
    }
}

fn read_throttling(cpu: ControllerDir<'_>, m: &mut CgroupMetrics) {
    // Both versions call it cpu.stat; on v2 the throttling keys appear only
    // where the cpu controller is enabled, so they may be missing.
    let stat = cpu.keyed("cpu.stat").unwrap_or_default();
    m.cpu_throttled_periods = keyed_value(&stat, "nr_throttled");
    m.cpu_throttled_ns = if cpu.v1 {
        keyed_value(&stat, "throttled_time")
    } else {
        usec_to_ns(keyed_value(&stat, "throttled_usec"))
    };
}

pub(super) fn pids_current(pids: ControllerDir<'_>) -> Option<u64> {
    read_u64(&pids.file("pids.current"))
}

fn usec_to_ns(usec: Option<u64>) -> Option<u64> {
    usec?.checked_mul(1000)
}

/// cpuacct.stat counts USER_HZ ticks (`sysconf(_SC_CLK_TCK)`, 100 on
/// every mainstream architecture but not guaranteed).
fn ticks_to_ns(ticks: u64) -> Option<u64> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&h| h > 0)?;
    u64::try_from(u128::from(ticks) * 1_000_000_000 / u128::from(hz)).ok()
}

#[cfg(test)]
mod tests {
    use super::super::V1Dir;
    use super::*;
    use std::collections::BTreeSet;
    use std::fs;

    const MIB: u64 = 1 << 20;

    fn write(dir: &Path, files: &[(&str, &str)]) {
        fs::create_dir_all(dir).unwrap();
        for (name, text) in files {
            fs::write(dir.join(name), text).unwrap();
        }
    }

    fn clk_tck() -> u64 {
        // SAFETY: sysconf has no preconditions.
        (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as u64
    }

    /// A v1 layout with cpu and cpuacct on separate hierarchies, as on the
    /// build machine, and memory.stat as Linux 6.x prints it.
    #[test]
    fn v1_files_are_read_with_hierarchical_keys() {
        let root = tempfile::tempdir().unwrap();
        let (mem, cpu, acct, pids) = (
            root.path().join("memory"),
            root.path().join("cpu"),
            root.path().join("cpuacct"),
            root.path().join("pids"),
        );
        write(
            &mem,
            &[
                ("memory.usage_in_bytes", "104857600\n"),
                ("memory.max_usage_in_bytes", "209715200\n"),
                ("memory.limit_in_bytes", "268435456\n"),
                (
                    "memory.stat",
                    "cache 1\nrss 2\nrss_huge 3\nswap 0\ninactive_file 4\n\
                     total_cache 33554432\ntotal_rss 50331648\ntotal_rss_huge 2097152\n\
                     total_swap 4096\ntotal_inactive_file 41943040\n",
                ),
                (
                    "memory.oom_control",
                    "oom_kill_disable 0\nunder_oom 1\noom_kill 2\n",
                ),
            ],
        );
        write(
            &cpu,
            &[(
                "cpu.stat",
                "nr_periods 40\nnr_throttled 7\nthrottled_time 123456789\n",
            )],
        );
        write(
            &acct,
            &[
                ("cpuacct.usage", "5000000000\n"),
                ("cpuacct.stat", "user 300\nsystem 100\n"),
            ],
        );
        write(&pids, &[("pids.current", "3\n"), ("pids.max", "max\n")]);
        let dir = |path: PathBuf, c: &[Controller]| V1Dir {
            path,
            controllers: c.iter().copied().collect::<BTreeSet<_>>(),
        };
        let paths = CgroupPaths {
            v1: vec![
                dir(mem, &[Controller::Memory]),
                dir(cpu, &[Controller::Cpu]),
                dir(acct, &[Controller::Cpuacct]),
                dir(pids, &[Controller::Pids]),
            ],
            v2: None,
        };
        let m = read(&paths);
        let hz = clk_tck();
        assert_eq!(
            m,
            CgroupMetrics {
                memory_usage_bytes: Some(100 * MIB),
                memory_working_set_bytes: Some(60 * MIB),
                // total_rss already includes total_rss_huge.
                memory_rss_bytes: Some(48 * MIB),
                memory_cache_bytes: Some(32 * MIB),
                memory_swap_bytes: Some(4096),
                memory_peak_bytes: Some(200 * MIB),
                memory_limit_bytes: Some(256 * MIB),
                oom_events: 3,
                oom_kills: 2,
                cpu_usage_ns: Some(5_000_000_000),
                cpu_user_ns: Some(300 * 1_000_000_000 / hz),
                cpu_system_ns: Some(100 * 1_000_000_000 / hz),
                cpu_throttled_periods: Some(7),
                cpu_throttled_ns: Some(123_456_789),
                pids_current: Some(3),
                pids_limit: None,
            }
        );
    }

    #[test]
    fn v1_unlimited_memory_and_missing_files_read_as_none() {
        let root = tempfile::tempdir().unwrap();
        let mem = root.path().join("memory");
        write(
            &mem,
            &[
                ("memory.usage_in_bytes", "4096\n"),
                ("memory.limit_in_bytes", "9223372036854771712\n"),
            ],
        );
        let paths = CgroupPaths {
            v1: vec![V1Dir {
                path: mem,
                controllers: [Controller::Memory].into(),
            }],
            v2: None,
        };
        let m = read(&paths);
        assert_eq!(m.memory_usage_bytes, Some(4096));
        assert_eq!(m.memory_limit_bytes, None);
        // No memory.stat: nothing derived from it is guessed.
        assert_eq!(m.memory_rss_bytes, None);
        assert_eq!(m.memory_working_set_bytes, None);
        assert_eq!((m.oom_events, m.oom_kills), (0, 0));
        // No cpu/pids hierarchy at all on this host.
        assert_eq!(m.cpu_usage_ns, None);
        assert_eq!(m.pids_current, None);
    }

    /// Pure v2: one directory, files as Linux 6.x prints them.
    #[test]
    fn v2_files_are_read_in_their_units() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("c1");
        write(
            &dir,
            &[
                ("memory.current", "104857600\n"),
                ("memory.peak", "209715200\n"),
                ("memory.max", "max\n"),
                ("memory.swap.current", "0\n"),
                (
                    "memory.stat",
                    "anon 50331648\nfile 33554432\nkernel 1048576\nanon_thp 2097152\n\
                     file_mapped 1\ninactive_anon 2\nactive_anon 3\n\
                     inactive_file 41943040\nactive_file 5\n",
                ),
                (
                    "memory.events",
                    "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n",
                ),
                (
                    "cpu.stat",
                    "usage_usec 5000000\nuser_usec 3000000\nsystem_usec 2000000\n\
                     nr_periods 40\nnr_throttled 7\nthrottled_usec 123456\n",
                ),
                ("pids.current", "3\n"),
                ("pids.max", "64\n"),
            ],
        );
        let paths = CgroupPaths {
            v1: vec![],
            v2: Some(dir),
        };
        assert_eq!(
            read(&paths),
            CgroupMetrics {
                memory_usage_bytes: Some(100 * MIB),
                memory_working_set_bytes: Some(60 * MIB),
                memory_rss_bytes: Some(48 * MIB),
                memory_cache_bytes: Some(32 * MIB),
                memory_swap_bytes: Some(0),
                memory_peak_bytes: Some(200 * MIB),
                memory_limit_bytes: None,
                oom_events: 2,
                oom_kills: 1,
                cpu_usage_ns: Some(5_000_000_000),
                cpu_user_ns: Some(3_000_000_000),
                cpu_system_ns: Some(2_000_000_000),
                cpu_throttled_periods: Some(7),
                cpu_throttled_ns: Some(123_456_000),
                pids_current: Some(3),
                pids_limit: Some(64),
            }
        );
    }

    #[test]
    fn v2_without_the_cpu_controller_has_time_but_no_throttling() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("c1");
        write(
            &dir,
            &[
                ("memory.current", "8192\n"),
                ("memory.stat", "anon 4096\nfile 0\ninactive_file 16384\n"),
                ("cpu.stat", "usage_usec 10\nuser_usec 6\nsystem_usec 4\n"),
            ],
        );
        let paths = CgroupPaths {
            v1: vec![],
            v2: Some(dir),
        };
        let m = read(&paths);
        assert_eq!(m.cpu_usage_ns, Some(10_000));
        assert_eq!(m.cpu_throttled_periods, None);
        assert_eq!(m.cpu_throttled_ns, None);
        // More inactive file than usage (the two are not read atomically).
        assert_eq!(m.memory_working_set_bytes, Some(0));
        // No memory.peak before Linux 5.19; no memory.swap.current without
        // swap accounting.
        assert_eq!(m.memory_peak_bytes, None);
        assert_eq!(m.memory_swap_bytes, None);
    }
}
