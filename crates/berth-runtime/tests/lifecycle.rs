//! Exit codes, signals, start failures and teardown: whatever happens,
//! nothing of a finished container remains.

mod common;
use berth_core::{ErrorCode, HasErrorCode};
use berth_runtime::StdioFds;
use std::time::Duration;

#[test]
fn exit_codes_pass_through() {
    let env = common::Env::new();
    for code in [0, 1, 42, 255] {
        let out = env.run(&env.sh(&format!("exit {code}")));
        assert_eq!(out.result.exit_code, Some(code));
        assert_eq!(out.result.signal, None);
        assert_eq!(out.result.shell_code(), code);
    }
    env.assert_clean();
}

#[test]
fn a_killed_container_reports_the_signal_and_leaves_nothing() {
    let env = common::Env::new();
    let spec = env.sh("sleep 30 & sleep 30 & sleep 60");
    let mut c = env.runtime.create(&spec, StdioFds::default()).unwrap();
    c.start().unwrap();
    assert_eq!(
        c.wait(Some(Duration::from_millis(100))).unwrap(),
        None,
        "still running"
    );
    c.kill(libc::SIGKILL).unwrap();
    let status = c.wait(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(
        status,
        Some(berth_runtime::ExitStatus::Signaled(libc::SIGKILL))
    );
    let r = c.delete().unwrap();
    assert_eq!(r.signal, Some(libc::SIGKILL));
    assert_eq!(r.shell_code(), 137);
    env.assert_clean();
}

#[test]
fn deleting_a_running_container_kills_it() {
    let env = common::Env::new();
    let spec = env.sh("sleep 60");
    let mut c = env.runtime.create(&spec, StdioFds::default()).unwrap();
    c.start().unwrap();
    let pid = c.pid();
    let r = c.delete().unwrap();
    assert_eq!(r.signal, Some(libc::SIGKILL));
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    env.assert_clean();
}

#[test]
fn a_created_but_never_started_container_is_torn_down() {
    let env = common::Env::new();
    let spec = env.sh("echo should-not-run");
    let c = env.runtime.create(&spec, StdioFds::default()).unwrap();
    drop(c);
    env.assert_clean();
}

#[test]
fn daemonised_children_die_with_the_container() {
    let env = common::Env::new();
    // The child double-forks away from pid 1, then pid 1 exits at once.
    let out = env.run(&env.sh("(setsid sh -c 'sleep 100' &) ; echo bye"));
    assert_eq!(out.stdout.trim(), "bye");
    let sleepers = std::process::Command::new("pgrep")
        .args(["-f", "sleep 100"])
        .output()
        .unwrap();
    let pids = String::from_utf8_lossy(&sleepers.stdout).to_string();
    // Other tests may run `sleep 100` too; none may belong to a dead container.
    for pid in pids.lines() {
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        assert!(
            !cgroup.contains(out.result.id.as_str()),
            "orphan {pid} survived"
        );
    }
    env.assert_clean();
}

#[test]
fn a_missing_command_is_a_clear_error() {
    let env = common::Env::new();
    let err = env
        .try_run(&env.spec(&["no-such-binary"]))
        .err()
        .expect("fails");
    assert_eq!(err.code(), ErrorCode::CommandNotFound);
    assert!(err.to_string().contains("no-such-binary"), "{err}");
    assert!(!err.code().retryable());
    let err = env
        .try_run(&env.spec(&["/etc/passwd"]))
        .err()
        .expect("fails");
    assert_eq!(err.code(), ErrorCode::CommandNotExecutable, "{err}");
    env.assert_clean();
}

#[test]
fn an_existing_id_is_refused() {
    let env = common::Env::new();
    let spec = env.sh("sleep 5");
    let mut first = env.runtime.create(&spec, StdioFds::default()).unwrap();
    first.start().unwrap();
    let err = env
        .runtime
        .create(&spec, StdioFds::default())
        .err()
        .unwrap();
    assert_eq!(err.code(), ErrorCode::ContainerExists);
    first.delete().unwrap();
    env.assert_clean();
}

#[test]
fn many_containers_in_a_row_leave_nothing() {
    let env = common::Env::new();
    for i in 0..50 {
        let script = match i % 3 {
            0 => "true",
            1 => "exit 3",
            _ => "sleep 1 & exit 0",
        };
        env.run(&env.sh(script));
    }
    env.assert_clean();
}

#[test]
fn create_and_start_runs_at_once_and_reports_exec_errors() {
    let env = common::Env::new();
    let spec = env.sh("exit 5");
    let mut c = env
        .runtime
        .create_and_start(&spec, StdioFds::default())
        .unwrap();
    c.wait(None).unwrap();
    assert_eq!(c.delete().unwrap().exit_code, Some(5));
    let err = env
        .runtime
        .create_and_start(&env.spec(&["missing-cmd"]), StdioFds::default())
        .err()
        .expect("exec error reported");
    assert_eq!(err.code(), ErrorCode::CommandNotFound);
    env.assert_clean();
}

/// The command is searched in `PATH` as execvp does: a candidate that
/// exists but cannot be executed is passed over for a later one, and is
/// reported only when nothing later runs.
#[test]
fn path_search_passes_over_files_that_cannot_be_executed() {
    use std::os::unix::fs::PermissionsExt;
    let env = common::Env::new();
    let tools = env.dir.path().join("tools");
    for (dir, mode) in [("first", 0o644), ("second", 0o755)] {
        let file = tools.join(dir).join("greet");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, format!("#!/bin/sh\necho {dir}\n")).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let volume = berth_runtime::BindMount {
        source: tools.clone(),
        destination: "/tools".into(),
        read_only: true,
    };
    let mut spec = env.spec(&["greet"]);
    spec.process.env = vec!["PATH=/missing:/tools/first:/tools/second:/bin".into()];
    spec.mounts = vec![volume.clone()];
    let out = env.run(&spec);
    assert_eq!(out.stdout, "second\n", "{}", out.stderr);

    let mut spec = env.spec(&["greet"]);
    spec.process.env = vec!["PATH=/missing:/tools/first:/bin".into()];
    spec.mounts = vec![volume];
    let e = env
        .try_run(&spec)
        .err()
        .expect("a file without x bits must not run");
    assert_eq!(e.code(), ErrorCode::CommandNotExecutable, "{e}");
    env.assert_clean();
}
