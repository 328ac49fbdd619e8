//! The shim end to end: real shim processes running real containers, as
//! root. Each test has its own temp dir and cgroup parent and checks that
//! nothing is left behind.

mod common;

use berth_core::ErrorCode;
use berth_shim::{Client, ExitRecord, Request, Response, ShimSpec, Status};
use common::*;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command};
use std::time::Duration;

fn finished(record: &ExitRecord) -> (&berth_runtime::ContainerResult, u64, u64) {
    match record {
        ExitRecord::Finished {
            result,
            log_bytes,
            log_dropped_bytes,
            error: None,
            ..
        } => (result, *log_bytes, *log_dropped_bytes),
        other => panic!("expected a clean result, got {other:?}"),
    }
}

fn failed_with(record: &ExitRecord) -> ErrorCode {
    match record {
        ExitRecord::Failed { error } => error.code,
        other => panic!("expected an error record, got {other:?}"),
    }
}

#[test]
fn output_and_exit_code_are_recorded() {
    let env = Env::new();
    let spec = ShimSpec::new(
        env.sh("echo out1; echo err1 >&2; sleep 0.5; echo out2; echo err2 >&2; exit 3"),
    );
    let dir = env.state_dir(&spec);
    let child = env.spawn(&dir);
    let shim_pid = child.id();

    let state = wait_running(&dir);
    assert_eq!(state.status, Status::Running);
    assert_eq!(state.id, spec.container.id.as_str());
    assert_eq!(state.shim_pid, shim_pid);
    assert!(state.container_pid > 0);
    assert!(
        state.started_at > 1_600_000_000_000,
        "unix ms: {}",
        state.started_at
    );
    assert!(dir.socket().exists());

    let (code, stderr) = wait_shim(child);
    assert_eq!(code, 0, "shim stderr: {stderr}");
    let record = dir.read_exit().unwrap().expect("exit.json");
    let (result, log_bytes, dropped) = finished(&record);
    assert_eq!(result.exit_code, Some(3));
    assert_eq!(result.signal, None);
    assert!(!result.timed_out);

    let log = read_log(&dir);
    for line in ["out1", "err1", "out2", "err2"] {
        assert!(
            log.lines().any(|l| l == line),
            "{line} missing from {log:?}"
        );
    }
    // Arrival order: the first pair was written half a second before the second.
    assert!(
        log.find("err1").unwrap() < log.find("out2").unwrap(),
        "{log:?}"
    );
    assert_eq!(log_bytes, log.len() as u64);
    assert_eq!(dropped, 0);

    let state = dir.read_state().unwrap().expect("state.json");
    assert_eq!(state.status, Status::Exited);
    assert!(state.exited_at.is_some());
    assert!(!dir.socket().exists(), "socket left behind");
    assert_eq!(
        entries(&dir),
        ["exit.json", "output.log", "spec.json", "state.json"]
    );

    // A finished state dir is never reused: a second shim refuses it and
    // leaves the record alone.
    let before = std::fs::read(dir.exit_file()).unwrap();
    let (code, _) = wait_shim(env.spawn(&dir));
    assert_eq!(code, 2);
    assert_eq!(std::fs::read(dir.exit_file()).unwrap(), before);
    env.assert_clean();
}

#[test]
fn shim_survives_its_parent() {
    let env = Env::new();
    let spec = ShimSpec::new(env.sh("sleep 1; echo done"));
    let dir = env.state_dir(&spec);
    // The parent starts the shim in the background and exits at once.
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg(r#""$0" "$@" </dev/null >/dev/null 2>&1 &"#)
        .arg(SHIM)
        .args(env.shim_args(&dir))
        .status()
        .unwrap();
    assert!(status.success());

    let state = wait_running(&dir);
    let pid = state.shim_pid as libc::pid_t;
    // Its own session (and so its own process group): the old parent's
    // signals and terminal do not reach it.
    // SAFETY: getsid/getpgid only read another process's ids.
    let (sid, pgid) = unsafe { (libc::getsid(pid), libc::getpgid(pid)) };
    assert_eq!(sid, pid);
    assert_eq!(pgid, pid);

    let record = wait_exit(&dir);
    let (result, _, _) = finished(&record);
    assert_eq!(result.exit_code, Some(0));
    assert_eq!(read_log(&dir), "done\n");
    eventually("the socket to go", || {
        (!dir.socket().exists()).then_some(())
    });
    env.assert_clean();
}

#[test]
fn socket_answers_state_kill_and_wait() {
    let env = Env::new();
    let spec = ShimSpec::new(env.spec(&["sleep", "100"]));
    let dir = env.state_dir(&spec);
    let child = env.spawn(&dir);
    wait_running(&dir);

    let mut client = Client::connect(&dir.socket()).unwrap();
    client.set_timeout(Some(Duration::from_secs(10))).unwrap();
    let invalid = |r: Response| match r {
        Response::Error { error } => assert_eq!(error.code, ErrorCode::InvalidArgument),
        other => panic!("expected invalid_argument, got {other:?}"),
    };
    // Garbage and unknown ops get an error; the connection stays usable.
    client.send_raw(b"this is not json\n").unwrap();
    invalid(client.read_response().unwrap());
    client.send_raw(b"{\"op\":\"explode\"}\n").unwrap();
    invalid(client.read_response().unwrap());
    invalid(client.request(&Request::Kill { signal: 0 }).unwrap());
    match client.request(&Request::State).unwrap() {
        Response::State { status, result } => {
            assert_eq!(status, Status::Running);
            assert!(result.is_none());
        }
        other => panic!("unexpected {other:?}"),
    }

    // A second live shim on the same dir refuses and touches nothing.
    let (code, _) = wait_shim(env.spawn(&dir));
    assert_eq!(code, 2);
    assert!(dir.socket().exists());

    // A waiter, pipelining a state request behind its wait.
    let mut waiter = Client::connect(&dir.socket()).unwrap();
    waiter.set_timeout(Some(Duration::from_secs(20))).unwrap();
    waiter
        .send_raw(b"{\"op\":\"wait\"}\n{\"op\":\"state\"}\n")
        .unwrap();

    // A client that never ends its line is told so and dropped; the shim
    // goes on serving the others.
    let mut flooder = Client::connect(&dir.socket()).unwrap();
    flooder.set_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = flooder.send_raw(&vec![b'x'; 100 * 1024]);
    invalid(flooder.read_response().unwrap());
    assert!(flooder.read_response().is_err(), "flooder not dropped");

    // A client that hangs up mid-request is no trouble either.
    let mut quitter = Client::connect(&dir.socket()).unwrap();
    quitter.send_raw(b"{\"op\":").unwrap();
    drop(quitter);

    match client.request(&Request::Kill { signal: 9 }).unwrap() {
        Response::Ok { ok: true } => {}
        other => panic!("unexpected {other:?}"),
    }
    for _ in 0..2 {
        match waiter.read_response().unwrap() {
            Response::State {
                status: Status::Exited,
                result: Some(result),
            } => assert_eq!(result.signal, Some(9)),
            other => panic!("unexpected {other:?}"),
        }
    }
    // Once `wait` is answered the caller may remove the state dir: the shim
    // must be done writing to it by then.
    let state = dir.read_state().unwrap().expect("state.json");
    assert_eq!(state.status, Status::Exited, "state.json after the reply");
    assert!(state.exited_at.is_some());

    let (code, stderr) = wait_shim(child);
    assert_eq!(code, 0, "shim stderr: {stderr}");
    let record = dir.read_exit().unwrap().expect("exit.json");
    let (result, _, _) = finished(&record);
    assert_eq!(result.signal, Some(9));
    assert_eq!(result.exit_code, None);
    assert!(!dir.socket().exists());
    env.assert_clean();
}

#[test]
fn timeout_kills_and_is_flagged() {
    let env = Env::new();
    let mut container = env.spec(&["sleep", "100"]);
    container.limits.timeout = Some(Duration::from_millis(500));
    let dir = env.state_dir(&ShimSpec::new(container));
    // A stale socket, as a crashed shim leaves it, is replaced.
    drop(std::os::unix::net::UnixListener::bind(dir.socket()).unwrap());
    assert!(dir.socket().exists());
    let (code, stderr) = wait_shim(env.spawn(&dir));
    assert_eq!(code, 0, "shim stderr: {stderr}");
    let record = dir.read_exit().unwrap().expect("exit.json");
    let (result, _, _) = finished(&record);
    assert!(result.timed_out);
    assert_eq!(result.signal, Some(9));
    assert!(result.wall_time_ms >= 500.0 && result.wall_time_ms < 10_000.0);
    env.assert_clean();
}

#[test]
fn log_is_capped_without_blocking_the_container() {
    let env = Env::new();
    let mut spec = ShimSpec::new(env.sh("yes 0123456789abcdef | head -c 1048576; echo tail >&2"));
    spec.log_max_bytes = 64 * 1024;
    let dir = env.state_dir(&spec);
    let (code, stderr) = wait_shim(env.spawn(&dir));
    assert_eq!(code, 0, "shim stderr: {stderr}");
    let record = dir.read_exit().unwrap().expect("exit.json");
    let (result, log_bytes, dropped) = finished(&record);
    assert_eq!(result.exit_code, Some(0));
    assert!(result.wall_time_ms < 10_000.0, "{}", result.wall_time_ms);

    let marker = "\n[berth: log truncated after 65536 bytes]\n";
    let log = std::fs::read(dir.log_file()).unwrap();
    assert_eq!(log.len(), 64 * 1024 + marker.len());
    assert!(log.ends_with(marker.as_bytes()));
    assert_eq!(log_bytes, 64 * 1024);
    assert_eq!(log_bytes + dropped, 1024 * 1024 + "tail\n".len() as u64);
    env.assert_clean();
}

#[test]
fn command_not_found_is_recorded_and_leaves_nothing() {
    let env = Env::new();
    let dir = env.state_dir(&ShimSpec::new(env.spec(&["no-such-command"])));
    let (code, stderr) = wait_shim(env.spawn(&dir));
    assert_eq!(code, 1);
    assert!(stderr.contains("command_not_found"), "{stderr}");
    let record = dir.read_exit().unwrap().expect("exit.json");
    assert_eq!(failed_with(&record), ErrorCode::CommandNotFound);
    assert_eq!(entries(&dir), ["exit.json", "spec.json"]);
    env.assert_clean();
}

#[test]
fn bad_specs_are_recorded_before_anything_is_created() {
    let env = Env::new();
    // Not JSON at all.
    let dir = env.state_dir(&ShimSpec::new(env.spec(&["true"])));
    std::fs::write(dir.spec_file(), "{not json").unwrap();
    let (code, _) = wait_shim(env.spawn(&dir));
    assert_eq!(code, 1);
    let record = dir.read_exit().unwrap().expect("exit.json");
    assert_eq!(failed_with(&record), ErrorCode::InvalidArgument);
    assert_eq!(entries(&dir), ["exit.json", "spec.json"]);

    // Well-formed, but a limit the runtime refuses.
    let mut container = env.spec(&["true"]);
    container.limits.timeout = Some(Duration::ZERO);
    let dir = env.state_dir(&ShimSpec::new(container));
    let (code, _) = wait_shim(env.spawn(&dir));
    assert_eq!(code, 1);
    let record = dir.read_exit().unwrap().expect("exit.json");
    assert_eq!(failed_with(&record), ErrorCode::InvalidLimit);
    assert_eq!(entries(&dir), ["exit.json", "spec.json"]);
    env.assert_clean();
}

/// Starts a shim whose container prints "ready" once its trap is set, then
/// sends `signal` to the shim and returns the recorded result.
fn stop_a_ready_container(
    env: &Env,
    script: &str,
    signal: i32,
) -> (berth_runtime::ContainerResult, berth_shim::StateDir) {
    let dir = env.state_dir(&ShimSpec::new(env.sh(script)));
    let child = env.spawn(&dir);
    wait_running(&dir);
    eventually("the trap to be set", || {
        read_log(&dir).contains("ready").then_some(())
    });
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
    let (code, stderr) = wait_shim(child);
    assert_eq!(code, 0, "shim stderr: {stderr}");
    let record = dir.read_exit().unwrap().expect("exit.json");
    let (result, _, _) = finished(&record);
    (result.clone(), dir)
}

#[test]
fn sigterm_to_the_shim_stops_the_container_gracefully() {
    let env = Env::new();
    let (result, dir) = stop_a_ready_container(
        &env,
        r#"trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 0.1; done"#,
        libc::SIGTERM,
    );
    assert_eq!(result.exit_code, Some(7));
    assert!(result.wall_time_ms < 5_000.0, "took the grace period");
    assert!(read_log(&dir).contains("got TERM"));
    env.assert_clean();
}

#[test]
fn a_container_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let env = Env::new();
    let (result, _) = stop_a_ready_container(
        &env,
        "trap '' TERM; echo ready; while :; do sleep 0.1; done",
        libc::SIGINT,
    );
    assert_eq!(result.signal, Some(9));
    assert!(!result.timed_out);
    let grace = berth_shim::STOP_GRACE.as_millis() as f64;
    assert!(result.wall_time_ms >= grace, "{}", result.wall_time_ms);
    env.assert_clean();
}

/// Reads the ready line from the shim's stdout, then what follows it.
fn read_ready(child: &mut Child) -> (serde_json::Value, String) {
    let mut out = BufReader::new(child.stdout.take().expect("stdout piped"));
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.ends_with('\n'), "no whole line: {line:?}");
    let value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    // The shim let go of the pipe right after the line: end of file now,
    // not when the shim exits.
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    (value, rest)
}

#[test]
fn ready_fd_reports_running_once_state_json_is_written() {
    let env = Env::new();
    let dir = env.state_dir(&ShimSpec::new(env.spec(&["sleep", "100"])));
    let mut child = env.spawn_ready(&dir);
    let (ready, rest) = read_ready(&mut child);
    // Read right after the line, without waiting: it must be there.
    let state = dir
        .read_state()
        .unwrap()
        .expect("state.json before the line");
    assert_eq!(
        ready,
        serde_json::json!({"status": "running", "pid": state.container_pid})
    );
    assert_eq!(rest, "", "more than one line");
    assert_eq!(state.status, Status::Running);
    // fd 1 was replaced by /dev/null, not closed; the container still runs.
    let fd1 = std::fs::read_link(format!("/proc/{}/fd/1", child.id())).unwrap();
    assert_eq!(fd1, std::path::Path::new("/dev/null"));
    let mut client = Client::connect(&dir.socket()).unwrap();
    client.set_timeout(Some(Duration::from_secs(10))).unwrap();
    match client.request(&Request::State).unwrap() {
        Response::State { status, .. } => assert_eq!(status, Status::Running),
        other => panic!("unexpected {other:?}"),
    }
    match client.request(&Request::Kill { signal: 9 }).unwrap() {
        Response::Ok { ok: true } => {}
        other => panic!("unexpected {other:?}"),
    }
    let (code, stderr) = wait_shim(child);
    assert_eq!(code, 0, "shim stderr: {stderr}");
    let record = dir.read_exit().unwrap().expect("exit.json");
    assert_eq!(finished(&record).0.signal, Some(9));
    env.assert_clean();
}

#[test]
fn ready_fd_reports_failure_once_exit_json_is_written() {
    let env = Env::new();
    let dir = env.state_dir(&ShimSpec::new(env.spec(&["no-such-command"])));
    let mut child = env.spawn_ready(&dir);
    let (ready, rest) = read_ready(&mut child);
    assert_eq!(ready, serde_json::json!({"status": "failed"}));
    assert_eq!(rest, "", "more than one line");
    // The error is already in exit.json when the line arrives.
    let record = dir.read_exit().unwrap().expect("exit.json before the line");
    assert_eq!(failed_with(&record), ErrorCode::CommandNotFound);
    let (code, stderr) = wait_shim(child);
    assert_eq!(code, 1);
    assert!(stderr.contains("command_not_found"), "{stderr}");
    assert_eq!(entries(&dir), ["exit.json", "spec.json"]);
    env.assert_clean();
}

#[test]
fn a_reader_that_goes_away_does_not_hurt_the_shim() {
    let env = Env::new();
    let dir = env.state_dir(&ShimSpec::new(env.sh("sleep 0.3; echo done")));
    let mut child = env.spawn_ready(&dir);
    // Gone before the shim can have started the container: its line meets
    // a pipe without a reader (EPIPE, and SIGPIPE were it not ignored).
    drop(child.stdout.take());
    let (code, stderr) = wait_shim(child);
    assert_eq!(code, 0, "shim stderr: {stderr}");
    let record = dir.read_exit().unwrap().expect("exit.json");
    assert_eq!(finished(&record).0.exit_code, Some(0));
    assert_eq!(read_log(&dir), "done\n");
    env.assert_clean();
}

#[test]
fn an_unusable_ready_fd_is_a_usage_error_that_touches_nothing() {
    let env = Env::new();
    let dir = env.state_dir(&ShimSpec::new(env.spec(&["true"])));
    // Not open at all; stdin is /dev/null opened read-only; 2 is stderr.
    for fd in ["200", "0", "2", "-1", "x"] {
        let out = Command::new(SHIM)
            .args(env.shim_args(&dir))
            .args(["--ready-fd", fd])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--ready-fd {fd}: {stderr}");
        assert!(stderr.contains("--ready-fd"), "--ready-fd {fd}: {stderr}");
        assert!(out.stdout.is_empty(), "--ready-fd {fd}");
        assert_eq!(entries(&dir), ["spec.json"], "--ready-fd {fd}");
    }
    env.assert_clean();
}
