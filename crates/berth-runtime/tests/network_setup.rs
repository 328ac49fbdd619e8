//! A network setup: the runtime hands the caller the container's own new
//! network namespace while the container is being set up, and lets its
//! process run only once the setup has returned; a failed setup leaves
//! nothing behind.

mod common;
use berth_runtime::{
    BindMount, ContainerSpec, CreateOptions, NetworkNamespace, NetworkSetup, RuntimeError, StdioFds,
};
use std::io;
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::time::Duration;

/// Create and start at once, with `setup`: what `berth run` does.
fn starting(setup: NetworkSetup<'_>) -> CreateOptions<'_> {
    CreateOptions {
        start: true,
        network_setup: Some(setup),
    }
}

/// The namespace's inode, as `readlink /proc/PID/ns/net` shows it.
fn namespace_inode(namespace: BorrowedFd<'_>) -> u64 {
    rustix::fs::fstat(namespace).unwrap().st_ino
}

/// A container that prints the marker in `shared` and its namespace.
fn reads_the_marker(env: &common::Env, shared: &Path) -> ContainerSpec {
    let mut spec = env.sh("cat /shared/marker && readlink /proc/self/ns/net");
    spec.mounts = vec![BindMount {
        source: shared.to_owned(),
        destination: "/shared".into(),
        read_only: true,
    }];
    spec
}

/// A slow setup: a process let run before it returned finds no marker.
/// Returns the namespace's inode.
fn leave_the_marker(shared: &Path, namespace: BorrowedFd<'_>) -> io::Result<u64> {
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(shared.join("marker"), "wired\n")?;
    Ok(namespace_inode(namespace))
}

#[test]
fn the_setup_gets_the_containers_namespace_before_its_process_runs() {
    let env = common::Env::new();
    let shared = tempfile::tempdir_in("/var/tmp").unwrap();
    let spec = reads_the_marker(&env, shared.path());
    let mut seen = None;
    let mut setup = |namespace: BorrowedFd<'_>| -> io::Result<()> {
        seen = Some(leave_the_marker(shared.path(), namespace)?);
        Ok(())
    };
    let out = env.try_run_with_network(&spec, Some(&mut setup)).unwrap();
    assert_eq!(out.result.exit_code, Some(0), "{}", out.stderr);
    let inode = seen.expect("the setup ran");
    assert_eq!(out.stdout, format!("wired\nnet:[{inode}]\n"));
    env.assert_clean();
}

#[test]
fn created_and_started_at_once_the_process_still_waits_for_the_setup() {
    use std::io::Read;
    let env = common::Env::new();
    let shared = tempfile::tempdir_in("/var/tmp").unwrap();
    let spec = reads_the_marker(&env, shared.path());
    let (mut out_r, out_w) = std::io::pipe().unwrap();
    let stdio = StdioFds {
        stdout: Some(out_w.into()),
        ..Default::default()
    };
    let mut seen = None;
    let mut setup = |namespace: BorrowedFd<'_>| -> io::Result<()> {
        seen = Some(leave_the_marker(shared.path(), namespace)?);
        Ok(())
    };
    let mut container = env
        .runtime
        .create_with(&spec, stdio, starting(&mut setup))
        .unwrap();
    container.wait(None).unwrap();
    let result = container.delete().unwrap();
    let mut stdout = String::new();
    out_r.read_to_string(&mut stdout).unwrap();
    assert_eq!(result.exit_code, Some(0), "{stdout}");
    let inode = seen.expect("the setup ran");
    assert_eq!(stdout, format!("wired\nnet:[{inode}]\n"));
    env.assert_clean();
}

#[test]
fn a_failed_setup_aborts_the_create_and_leaves_nothing() {
    let env = common::Env::new();
    let spec = env.sh("true");
    let mut calls = 0;
    let mut setup = |_: BorrowedFd<'_>| -> io::Result<()> {
        calls += 1;
        Err(io::Error::other("no link for you"))
    };
    let created = env
        .runtime
        .create_with(&spec, StdioFds::default(), starting(&mut setup));
    match created {
        Err(RuntimeError::Spawn { what, source }) => {
            assert_eq!(what, "setting up the container's network");
            assert_eq!(source.to_string(), "no link for you");
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("created despite a failed network setup"),
    }
    assert_eq!(calls, 1);
    env.assert_clean();
}

#[test]
fn a_setup_needs_a_namespace_of_the_containers_own() {
    let env = common::Env::new();
    let mut spec = env.sh("true");
    spec.network = NetworkNamespace::Host;
    let mut setup = |_: BorrowedFd<'_>| -> io::Result<()> { panic!("never called") };
    let created = env
        .runtime
        .create_with(&spec, StdioFds::default(), starting(&mut setup));
    assert!(
        matches!(created, Err(RuntimeError::InvalidSpec(_))),
        "{:?}",
        created.err()
    );
    env.assert_clean();
}
