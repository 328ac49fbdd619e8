//! `berth run` end to end: the real binary, real images, real containers.

mod common;
use common::Berth;
use std::time::Duration;

#[test]
fn runs_a_command_and_mirrors_its_exit_code() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let out = b.run(&["run", "busybox", "echo", "hello", "world"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "hello world\n");
    let out = b.run(&["run", "busybox", "sh", "-c", "echo oops >&2; exit 3"]);
    assert_eq!(out.code, 3);
    assert_eq!(out.stderr, "oops\n");
    b.assert_clean();
}

/// The container's setup runs on the CPUs other than berth's; its command
/// must get every CPU back.
#[test]
fn the_command_may_use_every_cpu_berth_may() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let allowed = status
        .lines()
        .find(|l| l.starts_with("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list in /proc/self/status");
    let out = b.run(&[
        "run",
        "busybox",
        "grep",
        "Cpus_allowed_list:",
        "/proc/self/status",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), allowed.trim());
    b.assert_clean();
}

#[test]
fn json_result_reports_times_and_memory() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let out = b.run(&[
        "run",
        "--json",
        "--memory",
        "64m",
        "--pids-limit",
        "64",
        "busybox",
        "true",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let r = out.json();
    assert_eq!(r["exit_code"], 0);
    assert_eq!(r["oom_killed"], false);
    assert_eq!(r["timed_out"], false);
    assert!(r["wall_time_ms"].as_f64().unwrap() > 0.0);
    assert!(r["teardown_ms"].as_f64().unwrap() > 0.0);
    assert!(r["peak_memory_bytes"].as_u64().unwrap() > 0);
    b.assert_clean();
}

#[test]
fn timeout_is_flagged_and_returns_137() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let out = b.run(&[
        "run",
        "--json",
        "--timeout",
        "200ms",
        "busybox",
        "sleep",
        "30",
    ]);
    assert_eq!(out.code, 137, "{}", out.stderr);
    let r = out.json();
    assert_eq!(r["timed_out"], true);
    assert_eq!(r["signal"], 9);
    b.assert_clean();
}

#[test]
fn memory_limit_is_flagged_as_oom() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let out = b.run(&[
        "run",
        "--json",
        "--memory",
        "16m",
        "busybox",
        "sh",
        "-c",
        "dd if=/dev/zero of=/dev/null bs=64M count=1",
    ]);
    let r = out.json();
    assert_eq!(r["oom_killed"], true, "{}", out.stdout);
    assert_ne!(out.code, 0);
    b.assert_clean();
}

#[test]
fn bad_requests_fail_clearly_and_create_nothing() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let cases: &[(&[&str], &str)] = &[
        (&["run", "--json", "nosuchimage", "true"], "image_not_found"),
        (
            &["run", "--json", "--memory", "1k", "busybox", "true"],
            "invalid_limit",
        ),
        (
            &["run", "--json", "--cpus", "500", "busybox", "true"],
            "invalid_limit",
        ),
        (
            &["run", "--json", "--memory", "lots", "busybox", "true"],
            "invalid_argument",
        ),
        (
            &["run", "--json", "--memory-swap", "32m", "busybox", "true"],
            "invalid_limit",
        ),
        (
            &["run", "--json", "-v", "relative:/x", "busybox", "true"],
            "invalid_argument",
        ),
        (
            &["run", "--json", "--name", "../evil", "busybox", "true"],
            "invalid_argument",
        ),
        (
            &["run", "--json", "--user", "ghost", "busybox", "true"],
            "invalid_argument",
        ),
        // -1 means "unchanged" to setresuid: the process would stay root.
        (
            &["run", "--json", "--user", "4294967295", "busybox", "id"],
            "invalid_argument",
        ),
        (
            &[
                "run",
                "--json",
                "--user",
                "1000:4294967295",
                "busybox",
                "id",
            ],
            "invalid_argument",
        ),
        (
            &["run", "--json", "busybox", "not-a-command"],
            "command_not_found",
        ),
        (&["run", "--json", "Bad:Ref", "true"], "invalid_argument"),
    ];
    for (args, code) in cases {
        let out = b.run(args);
        assert_ne!(out.code, 0, "{args:?} succeeded");
        let err = out.json();
        assert_eq!(err["error"]["code"], *code, "{args:?}: {}", out.stdout);
        assert!(!err["error"]["message"].as_str().unwrap().is_empty());
    }
    let out = b.run(&["run", "busybox", "not-a-command"]);
    assert_eq!(out.code, 127);
    assert!(out.stderr.contains("not-a-command"), "{}", out.stderr);
    b.assert_clean();
}

#[test]
fn log_file_captures_stdout_and_stderr() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let log = b.dir.path().join("task.log");
    let out = b.run(&[
        "run",
        "--log",
        log.to_str().unwrap(),
        "busybox",
        "sh",
        "-c",
        "echo to-out; echo to-err >&2",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "to-out\n");
    assert_eq!(out.stderr, "to-err\n");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("to-out\n") && logged.contains("to-err\n"),
        "{logged:?}"
    );
    b.assert_clean();
}

#[test]
fn user_names_resolve_from_the_image() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let out = b.run(&[
        "run",
        "--user",
        "nobody",
        "busybox",
        "sh",
        "-c",
        "id -u; id -G; echo $HOME",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "65534\n65534 50\n/home/nobody\n");
    let out = b.run(&[
        "run",
        "-u",
        "1000:50",
        "-w",
        "/tmp",
        "-e",
        "X=1",
        "busybox",
        "sh",
        "-c",
        "id -u; id -g; pwd; echo $X",
    ]);
    assert_eq!(out.stdout, "1000\n50\n/tmp\n1\n", "{}", out.stderr);
    b.assert_clean();
}

#[test]
fn stdin_is_attached_only_with_interactive() {
    use std::io::Write;
    use std::process::Stdio;
    let b = Berth::new();
    b.import_busybox("busybox");
    let mut child = b
        .command()
        .args([
            "run",
            "-i",
            "busybox",
            "sh",
            "-c",
            "read line; echo got:$line",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"ping\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got:ping\n");
    // Without -i the container reads end-of-file at once.
    let out = b.run(&["run", "busybox", "sh", "-c", "cat; echo eof"]);
    assert_eq!(out.stdout, "eof\n");
    b.assert_clean();
}

#[test]
fn signals_to_berth_are_forwarded_to_the_container() {
    use std::process::Stdio;
    let b = Berth::new();
    b.import_busybox("busybox");
    let mut child = b
        .command()
        .args([
            "run",
            "busybox",
            "sh",
            "-c",
            "trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.05; done",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Signal only once the trap is set: pid 1 ignores an unhandled SIGTERM.
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    assert_eq!(first, "ready\n");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(7));
    assert_eq!(rest, "got-term\n");
    b.assert_clean();
}

#[test]
fn a_crashed_berth_leaves_nothing_that_gc_cannot_remove() {
    // Memory scratch claims the container with a lock file, disk scratch
    // with a directory holding its writable layer.
    for scratch in ["memory", "disk"] {
        crash_then_gc(scratch);
    }
}

fn crash_then_gc(scratch: &str) {
    let b = Berth::new();
    b.import_busybox("busybox");
    let mut child = b
        .command()
        .args([
            "run",
            "--scratch",
            scratch,
            "--name",
            "crashme",
            "busybox",
            "sh",
            "-c",
            "sleep 100 & sleep 100",
        ])
        .spawn()
        .unwrap();
    let containers = b.data_dir().join("containers");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !containers.join("crashme").exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let procs = b.running_container_procs("crashme");
    child.kill().unwrap(); // SIGKILL: no teardown runs
    child.wait().unwrap();
    // The container dies with its supervisor (parent-death signal)...
    b.assert_container_processes_end(&procs);
    // ...and gc removes its cgroups, claim and image lease.
    let claim = containers.join("crashme");
    assert_eq!(claim.is_dir(), scratch == "disk", "{}", claim.display());
    assert!(claim.exists());
    let out = b.run(&["gc", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report = out.json();
    assert_eq!(report["containers_removed"][0], "crashme");
    assert_eq!(report["leases_released"][0], "crashme");
    b.assert_clean();
}

#[test]
fn a_volume_from_inside_the_containers_dir_is_refused_with_memory_scratch() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let inside = b.data_dir().join("containers/not-a-container");
    std::fs::create_dir_all(&inside).unwrap();
    let volume = format!("{}:/mnt", inside.display());
    let out = b.run(&["run", "--json", "-v", &volume, "busybox", "true"]);
    assert_eq!(out.code, 2, "{} {}", out.stdout, out.stderr);
    let error = &out.json()["error"];
    assert_eq!(error["code"], "invalid_argument", "{error}");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("lies inside the runtime's containers dir")),
        "{error}"
    );
    std::fs::remove_dir(&inside).unwrap();
    b.assert_clean();
}

/// A lease (or any temporary file) whose write a `kill -9` interrupted is
/// left in `images/tmp` under its writer's pid; `berth gc` removes it once
/// that process is gone, and keeps those of live processes (issue 16:
/// `lease-*` files stayed forever).
#[test]
fn gc_removes_temp_files_of_dead_processes_from_the_image_store() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let tmp = b.data_dir().join("images/tmp");
    // A pid that was alive a moment ago and is gone now, as after kill -9.
    let mut gone = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let dead_pid = gone.id();
    gone.kill().unwrap();
    gone.wait().unwrap();
    // Named the way the image store names its temporary files.
    let dead_lease = tmp.join(format!("lease-{dead_pid}-18c3f0a1b2c3d4e5-0"));
    std::fs::write(&dead_lease, br#"{"holder":"half-written"#).unwrap();
    let dead_staging = tmp.join(format!("import-{dead_pid}-18c3f0a1b2c3d4e6-1"));
    std::fs::create_dir_all(dead_staging.join("layer/etc")).unwrap();
    std::fs::write(dead_staging.join("layer/etc/passwd"), b"root").unwrap();
    // This test process is alive: its entry stays.
    let live = tmp.join(format!("lease-{}-18c3f0a1b2c3d4e7-2", std::process::id()));
    std::fs::write(&live, b"{}").unwrap();
    // Not a name the store makes: not gc's to judge.
    let foreign = tmp.join("notes.txt");
    std::fs::write(&foreign, b"keep").unwrap();

    let out = b.run(&["gc", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut removed: Vec<String> = out.json()["image_temp_removed"]
        .as_array()
        .expect("image_temp_removed")
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_owned())
        .collect();
    removed.sort();
    let mut expected = vec![
        dead_lease
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned(),
        dead_staging
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned(),
    ];
    expected.sort();
    assert_eq!(removed, expected);
    assert!(!dead_lease.exists() && !dead_staging.exists());
    assert!(live.exists() && foreign.exists());
    std::fs::remove_file(&live).unwrap();
    std::fs::remove_file(&foreign).unwrap();
    // Nothing more to do the second time.
    let again = b.run(&["gc", "--json"]);
    assert_eq!(again.json()["image_temp_removed"], serde_json::json!([]));
    b.assert_clean();
}

#[test]
fn gc_leaves_running_containers_alone() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let child = b.spawn_running(&[
        "run",
        "--name",
        "busy",
        "busybox",
        "sh",
        "-c",
        "sleep 1; echo finished",
    ]);
    let out = b.run(&["gc", "--json"]);
    assert_eq!(
        out.json()["containers_removed"].as_array().unwrap().len(),
        0
    );
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "finished\n");
    b.assert_clean();
}

#[test]
fn gc_never_touches_containers_of_another_data_dir() {
    let ours = Berth::new();
    let theirs = Berth::with_cgroup_parent(&ours.cgroup_parent);
    ours.import_busybox("busybox");
    theirs.import_busybox("busybox");
    let child = theirs.spawn_running(&[
        "run",
        "--name",
        "theirs",
        "busybox",
        "sh",
        "-c",
        "sleep 1; echo alive",
    ]);
    let out = ours.run(&["gc", "--json"]);
    assert_eq!(
        out.json()["containers_removed"].as_array().unwrap().len(),
        0
    );
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "alive\n");
    theirs.assert_clean();
    ours.assert_clean();
}

#[test]
fn tty_gives_the_container_a_terminal() {
    use std::io::Read;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::process::Stdio;
    let b = Berth::new();
    b.import_busybox("busybox");
    // A pty pair stands in for the user's terminal.
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty fills two fds we then own.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0);
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let ws = libc::winsize {
        ws_row: 33,
        ws_col: 77,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    let stdio = |fd: &OwnedFd| Stdio::from(fd.try_clone().unwrap());
    let mut child = b
        .command()
        .args([
            "run",
            "-t",
            "busybox",
            "sh",
            "-c",
            "tty; stty size; echo $TERM",
        ])
        .stdin(stdio(&slave))
        .stdout(stdio(&slave))
        .stderr(stdio(&slave))
        .spawn()
        .unwrap();
    drop(slave);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    // The only slave fds were berth's and ours: once berth exits the master
    // reads what is left, then EIO.
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let mut file = std::fs::File::from(master);
    while let Ok(n) = file.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&out).replace('\r', "");
    assert!(text.contains("/dev/pts/0"), "{text:?}");
    assert!(
        text.contains("33 77"),
        "window size not passed on: {text:?}"
    );
    assert!(text.contains("xterm"), "{text:?}");
    b.assert_clean();
}

#[test]
fn a_non_root_container_still_dies_with_a_killed_berth() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let mut child = b.spawn_running(&[
        "run",
        "--name",
        "nobody-crash",
        "-u",
        "nobody",
        "busybox",
        "sleep",
        "100",
    ]);
    let procs = b.running_container_procs("nobody-crash");
    child.kill().unwrap();
    child.wait().unwrap();
    b.assert_container_processes_end(&procs);
    assert_eq!(b.run(&["gc"]).code, 0);
    b.assert_clean();
}

#[test]
fn a_name_in_use_is_refused_and_the_running_container_keeps_its_lease() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let first = b.spawn_running(&[
        "run",
        "--name",
        "dup",
        "busybox",
        "sh",
        "-c",
        "sleep 1; echo first",
    ]);
    let out = b.run(&["run", "--json", "--name", "dup", "busybox", "true"]);
    assert_eq!(out.error_code(), "container_exists", "{}", out.stdout);
    // The running container still holds its image.
    let out = b.run(&["image", "rm", "--json", "busybox"]);
    assert_eq!(out.error_code(), "image_in_use", "{}", out.stdout);
    let out = first.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "first\n");
    b.assert_clean();
}
