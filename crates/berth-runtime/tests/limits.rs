//! Every limit is enforced by the kernel, and the result says so.

mod common;
use berth_core::{ByteSize, CpuQuota, ErrorCode, HasErrorCode};
use std::time::Duration;

#[test]
fn memory_limit_ends_in_an_oom_kill_flagged_in_the_result() {
    let env = common::Env::new();
    let mut spec = env.sh("dd if=/dev/zero of=/dev/null bs=64M count=1 && echo completed");
    spec.limits.memory = Some(ByteSize::mib(16));
    let out = env.run(&spec);
    assert!(out.result.oom_killed, "{:?} {}", out.result, out.stderr);
    // The kernel kills the hog (dd), not necessarily the shell.
    assert!(!out.stdout.contains("completed"));
    let peak = out.result.peak_memory_bytes.unwrap();
    assert!(peak <= 16 << 20, "peak {peak} above the limit");
    env.assert_clean();
}

#[test]
fn within_its_memory_limit_a_container_is_not_flagged() {
    let env = common::Env::new();
    let mut spec = env.sh("dd if=/dev/zero of=/dev/null bs=4M count=1 2>/dev/null; echo fine");
    spec.limits.memory = Some(ByteSize::mib(64));
    let out = env.run(&spec);
    assert!(!out.result.oom_killed);
    assert_eq!(out.stdout.trim(), "fine");
    assert_eq!(out.result.exit_code, Some(0));
    env.assert_clean();
}

#[test]
fn pids_limit_makes_fork_fail() {
    let env = common::Env::new();
    let mut spec = env.sh("for i in 1 2 3 4 5 6 7 8 9 10; do sleep 5 & done; echo looped");
    spec.limits.pids = Some(5);
    let out = env.run(&spec);
    // sh and at most four sleeps fit; the other forks fail.
    assert!(
        out.stderr.contains("fork"),
        "stdout {:?} stderr {:?}",
        out.stdout,
        out.stderr
    );
    env.assert_clean();
}

#[test]
fn cpu_quota_bounds_cpu_time() {
    let env = common::Env::new();
    let mut spec = env.sh("while :; do :; done");
    spec.limits.cpus = Some(CpuQuota(200));
    spec.limits.timeout = Some(Duration::from_millis(1500));
    let out = env.run(&spec);
    assert!(out.result.timed_out);
    let cpu = out.result.cpu_time_ms.unwrap();
    let wall = out.result.wall_time_ms;
    // 0.2 CPUs over ~1.5 s: about 300 ms; unbounded it would be ~1500 ms.
    assert!(cpu < 0.35 * wall, "cpu {cpu:.0} ms over wall {wall:.0} ms");
    assert!(cpu > 0.02 * wall, "the loop hardly ran: cpu {cpu:.0} ms");
    env.assert_clean();
}

#[test]
fn timeout_kills_and_flags_the_container() {
    let env = common::Env::new();
    let mut spec = env.sh("sleep 30 & sleep 30; echo never");
    spec.limits.timeout = Some(Duration::from_millis(300));
    let out = env.run(&spec);
    assert!(out.result.timed_out);
    assert_eq!(out.result.signal, Some(libc::SIGKILL));
    assert_eq!(out.result.shell_code(), 137);
    assert!(
        out.result.wall_time_ms < 5_000.0,
        "{}",
        out.result.wall_time_ms
    );
    assert!(!out.stdout.contains("never"));
    env.assert_clean();
}

#[test]
fn impossible_limits_are_refused_before_anything_is_created() {
    let env = common::Env::new();
    type Change = Box<dyn Fn(&mut berth_runtime::ContainerSpec)>;
    let cases: Vec<Change> = vec![
        Box::new(|s| s.limits.memory = Some(ByteSize(4096))),
        Box::new(|s| s.limits.cpus = Some(CpuQuota(1_000_000))),
        Box::new(|s| s.limits.pids = Some(0)),
        Box::new(|s| s.limits.cpu_shares = Some(1)),
        Box::new(|s| s.limits.timeout = Some(Duration::ZERO)),
        Box::new(|s| {
            s.limits.memory = Some(ByteSize::mib(64));
            s.limits.memory_swap = Some(berth_runtime::SwapLimit::Limited(ByteSize::mib(8)));
        }),
    ];
    for change in cases {
        let mut spec = env.sh("true");
        change(&mut spec);
        let err = env.try_run(&spec).err().expect("refused");
        assert_eq!(err.code(), ErrorCode::InvalidLimit, "{err}");
    }
    env.assert_clean();
}
