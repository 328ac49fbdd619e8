//! Container and node metrics read from cgroup files match what the
//! containers really did.

mod common;
use berth_core::{ByteSize, CpuQuota, ErrorCode, HasErrorCode};
use berth_runtime::{BindMount, CgroupMetrics, Container, Runtime, RuntimeConfig, StdioFds};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
/// Generous: the build VM is noisy and tests run in parallel.
const PATIENCE: Duration = Duration::from_secs(60);

/// Writes a `mib` MiB file and drops it from the page cache, so that the
/// first read afterwards (the container's) is what charges its pages.
fn cold_file(dir: &Path, mib: u64) -> PathBuf {
    use std::io::Write;
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("data.bin");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0xa5u8; MIB as usize];
    for _ in 0..mib {
        f.write_all(&chunk).unwrap();
    }
    // Dirty pages cannot be dropped: write them out first.
    f.sync_all().unwrap();
    // SAFETY: fadvise on an open fd; no memory is involved.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise");
    let cached = resident_bytes(&path);
    assert!(
        cached < MIB,
        "{cached} bytes of the file are still in the page cache"
    );
    path
}

/// How much of `path` is in the page cache (mincore on a mapping, which
/// faults nothing in).
fn resident_bytes(path: &Path) -> u64 {
    let f = std::fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len() as usize;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let mut vec = vec![0u8; len.div_ceil(page)];
    // SAFETY: a fresh read-only shared mapping of the whole file, queried
    // with a vector of one byte per page, then unmapped.
    unsafe {
        let addr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(addr, libc::MAP_FAILED, "mmap");
        let rc = libc::mincore(addr, len, vec.as_mut_ptr());
        libc::munmap(addr, len);
        assert_eq!(rc, 0, "mincore");
    }
    vec.iter().filter(|b| *b & 1 != 0).count() as u64 * page as u64
}

fn start(env: &common::Env, spec: &berth_runtime::ContainerSpec) -> Container {
    let mut c = env.runtime.create(spec, StdioFds::default()).unwrap();
    c.start().unwrap();
    c
}

/// Reads the container's metrics every 100 ms until `done` holds, failing
/// with every sample seen if it never does.
fn poll_until(
    runtime: &Runtime,
    c: &Container,
    what: &str,
    mut done: impl FnMut(&[CgroupMetrics]) -> bool,
) -> Vec<CgroupMetrics> {
    let deadline = Instant::now() + PATIENCE;
    let mut samples = vec![];
    loop {
        samples.push(runtime.container_metrics(c.id()).unwrap());
        if done(&samples) {
            return samples;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never happened; samples: {samples:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn within(value: u64, expected: u64, tolerance: f64) -> bool {
    (value as f64 - expected as f64).abs() <= expected as f64 * tolerance
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

/// The acceptance test: anonymous memory shows as rss, a file read shows as
/// cache, each within 10% of what the container did.
#[test]
fn rss_and_cache_match_what_the_container_allocated_and_read() {
    const ANON_MIB: u64 = 48;
    const FILE_MIB: u64 = 32;
    let env = common::Env::new();
    let data = env.dir.path().join("data");
    cold_file(&data, FILE_MIB);
    // cat reads the file (charging its pages to the container), then dd
    // fills a 48 MiB buffer from /dev/zero and blocks writing it into a
    // pipe nobody reads: the buffer stays touched and resident.
    let mut spec = env.sh(&format!(
        "cat /data/data.bin > /dev/null && dd if=/dev/zero bs={ANON_MIB}M count=1 | sleep 1000"
    ));
    spec.mounts = vec![BindMount {
        source: data.clone(),
        destination: "/data".into(),
        read_only: true,
    }];
    // The pids limit gives the container a pids cgroup on v1 hosts, which
    // tells when cat has finished.
    spec.limits.pids = Some(16);
    let c = start(&env, &spec);

    // Settled: cat gone (sh, dd and sleep left) and three samples in a row
    // (200 ms) within 256 KiB of each other.
    let stable = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => a.abs_diff(b) <= 256 << 10,
        _ => false,
    };
    let samples = poll_until(&env.runtime, &c, "settling", |s| {
        s.len() >= 3
            && s[s.len() - 3..].iter().all(|m| m.pids_current == Some(3))
            && s[s.len() - 3..].windows(2).all(|w| {
                stable(w[0].memory_rss_bytes, w[1].memory_rss_bytes)
                    && stable(w[0].memory_cache_bytes, w[1].memory_cache_bytes)
                    && w[1].memory_rss_bytes.unwrap_or(0) > 0
            })
    });
    let m = samples[samples.len() - 1];
    let rss = m.memory_rss_bytes.unwrap();
    let cache = m.memory_cache_bytes.unwrap();
    eprintln!(
        "settled after {} samples: rss {:.2} MiB (expected {ANON_MIB}), cache {:.2} MiB \
         (expected {FILE_MIB}), usage {:.2} MiB, working set {:.2} MiB, peak {:.2} MiB",
        samples.len(),
        mib(rss),
        mib(cache),
        mib(m.memory_usage_bytes.unwrap()),
        mib(m.memory_working_set_bytes.unwrap()),
        mib(m.memory_peak_bytes.unwrap()),
    );
    assert!(
        within(rss, ANON_MIB * MIB, 0.10),
        "rss {:.2} MiB, expected {ANON_MIB} MiB ± 10%: {m:#?}",
        mib(rss)
    );
    assert!(
        within(cache, FILE_MIB * MIB, 0.10),
        "cache {:.2} MiB, expected {FILE_MIB} MiB ± 10%: {m:#?}",
        mib(cache)
    );
    // The derived and total figures are consistent with the parts.
    let usage = m.memory_usage_bytes.unwrap();
    assert!(usage >= rss + cache - MIB, "{m:#?}");
    assert!(m.memory_working_set_bytes.unwrap() <= usage, "{m:#?}");
    assert!(m.memory_peak_bytes.unwrap() >= usage, "{m:#?}");
    assert_eq!(m.memory_limit_bytes, None, "no --memory was given");
    assert_eq!((m.oom_events, m.oom_kills), (0, 0));

    c.delete().unwrap();
    env.assert_clean();
}

#[test]
fn cpu_time_grows_while_a_container_is_busy_and_throttling_is_counted() {
    let env = common::Env::new();
    let mut spec = env.sh("while :; do :; done");
    // A quota it is sure to exceed, so that throttling shows too.
    spec.limits.cpus = Some(CpuQuota(300));
    let c = start(&env, &spec);
    let first = env.runtime.container_metrics(c.id()).unwrap();
    let first_usage = first.cpu_usage_ns.unwrap();
    // The kernel counts a throttled period when the period timer finds the
    // group throttled, but adds to the throttled time only when it lets the
    // group run again, so a sample can show periods and no time yet (CI saw
    // 2 periods and 0 ns once): wait for both.
    let samples = poll_until(&env.runtime, &c, "200 ms of CPU time, throttled", |s| {
        let m = s[s.len() - 1];
        m.cpu_usage_ns.unwrap() >= first_usage + 200_000_000
            && m.cpu_throttled_periods.unwrap_or(0) > 0
            && m.cpu_throttled_ns.unwrap_or(0) > 0
    });
    let m = samples[samples.len() - 1];
    eprintln!(
        "cpu: usage {:?} ns, user {:?} ns, system {:?} ns, throttled {:?} periods / {:?} ns",
        m.cpu_usage_ns, m.cpu_user_ns, m.cpu_system_ns, m.cpu_throttled_periods, m.cpu_throttled_ns
    );
    // A shell loop runs in user mode; cpuacct.stat has 10 ms ticks.
    let user = m.cpu_user_ns.unwrap();
    assert!(user >= 100_000_000, "{m:#?}");
    assert!(m.cpu_system_ns.is_some(), "{m:#?}");
    assert!(m.cpu_throttled_ns.unwrap() > 0, "{m:#?}");
    // Counters only grow.
    assert!(samples
        .windows(2)
        .all(|w| w[1].cpu_usage_ns >= w[0].cpu_usage_ns));
    c.delete().unwrap();
    env.assert_clean();
}

#[test]
fn pids_and_limits_are_reported_and_readable_by_another_runtime() {
    let env = common::Env::new();
    let mut spec = env.sh("sleep 1000 & sleep 1000 & sleep 1000 & wait");
    spec.limits.memory = Some(ByteSize::mib(64));
    spec.limits.pids = Some(32);
    let c = start(&env, &spec);
    // What a host agent does: its own runtime on the same configuration
    // reads a container it did not create.
    let agent = Runtime::new(RuntimeConfig {
        containers_dir: env.containers_dir(),
        cgroup_parent: env.runtime.config().cgroup_parent.clone(),
    })
    .unwrap();
    let samples = poll_until(&agent, &c, "sh and three sleeps", |s| {
        s[s.len() - 1].pids_current == Some(4)
    });
    let m = samples[samples.len() - 1];
    assert_eq!(m.memory_limit_bytes, Some(64 * MIB), "{m:#?}");
    assert_eq!(m.pids_limit, Some(32), "{m:#?}");
    // Tasks in the cgroup, counted independently.
    let procs = std::fs::read_to_string(pids_dir(&env, &c).join("cgroup.procs")).unwrap();
    assert_eq!(procs.lines().count(), 4, "{procs}");

    c.delete().unwrap();
    let gone = agent.container_metrics(&spec.id).unwrap_err();
    assert_eq!(gone.code(), ErrorCode::ContainerNotFound, "{gone}");
    env.assert_clean();
}

/// The container's pids cgroup directory, wherever the host keeps it.
fn pids_dir(env: &common::Env, c: &Container) -> PathBuf {
    let parent = &env.runtime.config().cgroup_parent;
    [
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup",
    ]
    .iter()
    .map(|h| Path::new(h).join(parent).join(c.id().as_str()))
    .find(|d| d.join("pids.current").exists())
    .expect("a pids cgroup for the container")
}

#[test]
fn an_oom_kill_is_counted() {
    let env = common::Env::new();
    // The hog is killed, the shell goes on and waits, keeping the cgroup
    // (and keeps its "Killed" notice out of the test output).
    let mut spec =
        env.sh("exec 2>/dev/null; dd if=/dev/zero of=/dev/null bs=64M count=1; sleep 1000");
    spec.limits.memory = Some(ByteSize::mib(16));
    let c = start(&env, &spec);
    let samples = poll_until(&env.runtime, &c, "an OOM kill", |s| {
        s[s.len() - 1].oom_kills > 0
    });
    let m = samples[samples.len() - 1];
    assert!(m.oom_events >= 1, "{m:#?}");
    assert_eq!(m.memory_limit_bytes, Some(16 * MIB));
    assert!(m.memory_peak_bytes.unwrap() <= 16 * MIB, "{m:#?}");
    let result = c.delete().unwrap();
    assert!(result.oom_killed);
    env.assert_clean();
}

#[test]
fn node_metrics_cover_every_container() {
    let env = common::Env::new();
    let mut containers = vec![];
    for _ in 0..2 {
        let mut spec = env.sh("dd if=/dev/zero bs=8M count=1 | sleep 1000");
        spec.limits.pids = Some(16);
        containers.push(start(&env, &spec));
    }
    for c in &containers {
        poll_until(&env.runtime, c, "dd's buffer", |s| {
            s[s.len() - 1].memory_rss_bytes.unwrap_or(0) >= 8 * MIB
        });
    }
    // Containers first, node last: CPU time only grows, and these
    // containers hold their memory still.
    let each: Vec<CgroupMetrics> = containers
        .iter()
        .map(|c| env.runtime.container_metrics(c.id()).unwrap())
        .collect();
    let node = env.runtime.node_metrics().unwrap();
    let sum = |f: fn(&CgroupMetrics) -> Option<u64>| each.iter().map(|m| f(m).unwrap()).sum();
    let total_rss: u64 = sum(|m| m.memory_rss_bytes);
    let total_cpu: u64 = sum(|m| m.cpu_usage_ns);
    let total_pids: u64 = sum(|m| m.pids_current);
    let total_usage: u64 = sum(|m| m.memory_usage_bytes);
    eprintln!("node {node:#?}; containers' rss {total_rss}, usage {total_usage}");
    assert!(node.memory_rss_bytes.unwrap() >= total_rss, "{node:#?}");
    assert!(node.memory_usage_bytes.unwrap() >= total_usage, "{node:#?}");
    assert!(node.cpu_usage_ns.unwrap() >= total_cpu, "{node:#?}");
    assert_eq!(node.pids_current, Some(total_pids), "{node:#?}");
    for c in containers {
        c.delete().unwrap();
    }
    env.assert_clean();
}

#[test]
fn an_unknown_container_is_not_found() {
    let env = common::Env::new();
    // With no container yet, the node reports real (zero) figures; this
    // also creates the parent, whose control files must not pass for
    // containers below.
    let node = env.runtime.node_metrics().unwrap();
    assert_eq!(node.cpu_usage_ns, Some(0), "{node:#?}");
    assert!(node.memory_usage_bytes.is_some(), "{node:#?}");
    for id in ["no-such-container", "memory.stat", "cgroup.procs"] {
        let id = berth_core::ContainerId::new(id).unwrap();
        let err = env.runtime.container_metrics(&id).unwrap_err();
        assert_eq!(err.code(), ErrorCode::ContainerNotFound, "{err}");
        assert_eq!(err.code().as_str(), "container_not_found");
    }
    env.assert_clean();
}
