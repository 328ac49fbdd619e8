//! The shim's life from start to finish: detach, check the state dir, read
//! the spec, start the container, hand it to the supervisor, and make sure
//! every way of ending leaves an exit record behind.

use crate::control::Server;
use crate::diag::diag;
use crate::error::ShimError;
use crate::memory;
use crate::ready::ReadyFd;
use crate::signals;
use crate::spec::ShimSpec;
use crate::start::start;
use crate::state::{ExitRecord, StateDir};
use crate::supervise::Supervisor;
use berth_core::HasErrorCode;
use berth_runtime::{Runtime, RuntimeConfig};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

/// Where the shim works; the container's own input is the state dir's
/// `spec.json`.
#[derive(Debug, Clone)]
pub struct Options {
    /// The container's state dir, created by the caller.
    pub dir: PathBuf,
    /// The runtime's containers dir (the same as the agent's, so that
    /// `berth gc` finds what a crash leaves).
    pub containers_dir: PathBuf,
    /// The runtime's cgroup parent.
    pub cgroup_parent: String,
    /// Where to report, in one line, that the container runs or failed to
    /// (see the crate docs); must be open for writing, and not fd 2.
    pub ready_fd: Option<RawFd>,
}

/// Runs the shim to the end and returns what it wrote to `exit.json`.
///
/// `Err` means the shim could not write any exit record: the ready fd is
/// unusable or the state dir is unusable, already finished, or served by
/// another live shim (nothing is touched then), or `exit.json` itself could
/// not be written. No ready line is written in those cases.
pub fn run(opts: &Options) -> Result<ExitRecord, ShimError> {
    let mut ready = ReadyFd::new(opts.ready_fd).map_err(ShimError::Usage)?;
    // Before anything is written to a pipe or socket whose reader may be
    // gone (the ready fd above all): EPIPE must be an error, never a death.
    let sigpipe = signals::ignore_sigpipe();
    // Then our own session, so that the caller's process group and
    // terminal signals never reach us.
    let detached = detach();
    let dir = StateDir::new(&opts.dir);
    check_dir(&dir)?;
    let signals = match sigpipe.and_then(|()| signals::install()) {
        Ok(s) => s,
        Err(e) => {
            let error = ShimError::io("installing signal handling", e);
            return fail(&dir, None, &mut ready, error);
        }
    };
    if let Err(e) = detached {
        return fail(&dir, None, &mut ready, ShimError::io("setsid", e));
    }
    let (spec, runtime) = match prepare(opts, &dir) {
        Ok(prepared) => prepared,
        Err(e) => return fail(&dir, None, &mut ready, e),
    };
    let server = match Server::bind(&dir.socket()) {
        Ok(s) => s,
        Err(e) => {
            let what = format!("binding {}", dir.socket().display());
            return fail(&dir, None, &mut ready, ShimError::io(what, e));
        }
    };
    let started = match start(&dir, &spec, &runtime) {
        Ok(s) => s,
        Err(e) => return fail(&dir, Some(server), &mut ready, e),
    };
    // state.json is written: the caller may look at the container now.
    ready.running(started.state.container_pid);
    // From here on the shim only supervises, possibly for days: give back
    // what only starting needed (see memory.rs). The spec and the runtime's
    // host facts go first, so that their heap pages can be released.
    drop((spec, runtime));
    let supervisor = Supervisor::new(dir, signals, server, started);
    memory::release_startup_memory();
    supervisor.run()
}

/// Leaves the caller's session. Already leading one is as good.
fn detach() -> io::Result<()> {
    match rustix::process::setsid() {
        Ok(_) => Ok(()),
        Err(e) => {
            let me = rustix::process::getpid();
            if rustix::process::getsid(None).is_ok_and(|sid| sid == me) {
                Ok(())
            } else {
                Err(e.into())
            }
        }
    }
}

/// Refuses a state dir that is missing, already finished, or in use; in
/// all three cases nothing may be written to it.
fn check_dir(dir: &StateDir) -> Result<(), ShimError> {
    let refuse = |why: &str| ShimError::StateDir {
        path: dir.path().to_owned(),
        why: why.to_owned(),
    };
    match std::fs::metadata(dir.path()) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(refuse("not a directory")),
        Err(e) => return Err(refuse(&e.to_string())),
    }
    if dir.exit_file().exists() {
        return Err(refuse("already has an exit record"));
    }
    let socket = crate::SocketPath::of(&dir.socket()).map_err(|e| refuse(&e.to_string()))?;
    if UnixStream::connect(socket.path()).is_ok() {
        return Err(refuse("another shim is serving it"));
    }
    Ok(())
}

/// Reads the spec and checks it against the host before anything exists.
fn prepare(opts: &Options, dir: &StateDir) -> Result<(ShimSpec, Runtime), ShimError> {
    let spec = ShimSpec::load(&dir.spec_file())?;
    let runtime = Runtime::new(RuntimeConfig {
        containers_dir: opts.containers_dir.clone(),
        cgroup_parent: opts.cgroup_parent.clone(),
    })?;
    runtime.validate(&spec.container)?;
    Ok((spec, runtime))
}

/// Records that nothing ran (or that the shim could not start), removes the
/// socket (after the record is durable), reports the failure on the ready
/// fd (once the record can be read) and returns the record.
fn fail(
    dir: &StateDir,
    server: Option<Server>,
    ready: &mut ReadyFd,
    error: ShimError,
) -> Result<ExitRecord, ShimError> {
    let record = ExitRecord::Failed {
        error: error.report(),
    };
    let written = dir.write_durable("exit.json", &record);
    if let Some(server) = server {
        server.remove();
    }
    match written {
        Ok(()) => {
            ready.failed();
            Ok(record)
        }
        Err(e) => {
            diag(&format!("{error}"));
            Err(ShimError::io("writing exit.json", e))
        }
    }
}
