//! The container's first process is in every cgroup of the container before
//! its command runs, whichever way it got there (cloned into its v2 cgroup,
//! or moving itself into its v1 cgroups), and a failed join is a clear
//! cgroup error that leaves nothing behind.

mod common;
use berth_core::{ByteSize, ErrorCode, HasErrorCode};
use berth_runtime::{Container, ContainerSpec, RuntimeError, StdioFds};
use std::path::PathBuf;

/// A spec whose limits give the container a cgroup in every hierarchy
/// berth uses (memory, cpu, cpuacct, pids, devices on v1).
fn limited(env: &common::Env, script: &str) -> ContainerSpec {
    let mut spec = env.sh(script);
    spec.limits.memory = Some(ByteSize::mib(64));
    spec.limits.cpus = Some("0.5".parse().unwrap());
    spec.limits.pids = Some(32);
    spec
}

/// The container's cgroup directories that exist (one per hierarchy it
/// has), and whether each is a v1 one.
fn cgroup_dirs(env: &common::Env, c: &Container) -> Vec<(PathBuf, bool)> {
    let paths = env.runtime.cgroups().container_paths(c.id().as_str());
    let v1 = paths.v1.iter().map(|d| (d.path.clone(), true));
    let v2 = paths.v2.iter().map(|p| (p.clone(), false));
    v1.chain(v2).filter(|(dir, _)| dir.is_dir()).collect()
}

fn listed(file: PathBuf, pid: i32) -> bool {
    std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .lines()
        .any(|l| l.trim() == pid.to_string())
}

/// Checks that `c`'s process is in each of its cgroups: listed in each
/// directory's `cgroup.procs` (and `tasks` on v1), and each line of its
/// `/proc/PID/cgroup` for a hierarchy the container has names the
/// container's own directory there.
fn assert_in_its_cgroups(env: &common::Env, c: &Container) {
    let pid = c.pid();
    let dirs = cgroup_dirs(env, c);
    assert!(!dirs.is_empty(), "the container has no cgroup at all");
    for (dir, is_v1) in &dirs {
        assert!(
            listed(dir.join("cgroup.procs"), pid),
            "{pid} not in {}",
            dir.display()
        );
        if *is_v1 {
            assert!(
                listed(dir.join("tasks"), pid),
                "{pid} not in {}/tasks",
                dir.display()
            );
        }
    }
    // /proc/PID/cgroup as the host sees it: the process's cgroup path in
    // each hierarchy ends with the container's directory.
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let suffix = format!("/{}/{}", env.cgroup_parent(), c.id());
    let with_container = own.lines().filter(|l| l.ends_with(&suffix)).count();
    assert_eq!(
        with_container,
        dirs.len(),
        "/proc/{pid}/cgroup:\n{own}\ncontainer dirs: {dirs:?}"
    );
}

#[test]
fn a_created_container_is_in_its_cgroups_before_it_starts() {
    let env = common::Env::new();
    let spec = limited(&env, "sleep 30");
    let mut c = env.runtime.create(&spec, StdioFds::default()).unwrap();
    assert_in_its_cgroups(&env, &c);
    c.start().unwrap();
    assert_in_its_cgroups(&env, &c);
    c.delete().unwrap();
    env.assert_clean();
}

#[test]
fn a_container_started_at_once_runs_in_its_cgroups() {
    let env = common::Env::new();
    let spec = limited(&env, "sleep 30");
    let c = env
        .runtime
        .create_and_start(&spec, StdioFds::default())
        .unwrap();
    assert_in_its_cgroups(&env, &c);
    c.delete().unwrap();
    env.assert_clean();
}

/// Sets the calling thread's scheduling policy; `Err` with the errno.
fn set_own_policy(policy: libc::c_int, priority: libc::c_int) -> Result<(), i32> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: sched_setscheduler on the calling thread (pid 0) with a
    // valid parameter block.
    if unsafe { libc::sched_setscheduler(0, policy, &param) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

/// A real-time process may not join a v1 cpu cgroup that has no real-time
/// budget (`cpu.rt_runtime_us` is 0 in a new cgroup): the kernel refuses
/// the move with EINVAL. A supervisor running with a real-time policy
/// hands it to the container's process, so its join fails, and that must
/// come back as a cgroup error naming the hierarchy, with nothing left.
#[test]
fn a_refused_join_is_a_cgroup_error_and_leaves_nothing() {
    let env = common::Env::new();
    let cpu_mount = PathBuf::from("/sys/fs/cgroup/cpu");
    if !cpu_mount.join("cpu.rt_runtime_us").exists() {
        eprintln!("skipping: no v1 cpu hierarchy with real-time group scheduling here");
        return;
    }
    if let Err(errno) = set_own_policy(libc::SCHED_FIFO, 1) {
        eprintln!("skipping: cannot take a real-time policy here (errno {errno})");
        return;
    }
    let spec = limited(&env, "echo should-not-run");
    let created = env.runtime.create_and_start(&spec, StdioFds::default());
    let two_step = env.runtime.create(&spec, StdioFds::default());
    set_own_policy(libc::SCHED_OTHER, 0).expect("back to the normal policy");

    for result in [created.map(|_| ()), two_step.map(|_| ())] {
        let err = result.expect_err("a real-time process cannot join");
        assert_eq!(err.code(), ErrorCode::CgroupFailed, "{err}");
        match &err {
            RuntimeError::Cgroup { path, source, .. } => {
                assert_eq!(source.raw_os_error(), Some(libc::EINVAL), "{err}");
                assert!(path.ends_with("tasks"), "{err}");
                // /sys/fs/cgroup/HIERARCHY/PARENT/ID/tasks, HIERARCHY
                // being cpu or cpu,cpuacct.
                let hierarchy = path
                    .strip_prefix("/sys/fs/cgroup")
                    .ok()
                    .and_then(|p| p.iter().next())
                    .map(|h| h.to_string_lossy().into_owned())
                    .unwrap_or_default();
                assert!(hierarchy.split(',').any(|c| c == "cpu"), "{err}");
                assert!(path.to_string_lossy().contains(spec.id.as_str()), "{err}");
            }
            other => panic!("not a cgroup error: {other}"),
        }
    }
    env.assert_clean();
}
