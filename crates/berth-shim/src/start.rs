//! Starting the container: its output pipes, create-and-start through the
//! runtime, its output log and `state.json`; [`Started`] is what the
//! supervisor takes over.

use crate::diag::diag;
use crate::error::ShimError;
use crate::log::OutputLog;
use crate::spec::ShimSpec;
use crate::state::{ShimState, StateDir, Status};
use berth_runtime::{Container, Runtime, StdioFds};
use std::fs::File;
use std::os::fd::OwnedFd;
use std::time::Instant;

/// A running container and what the supervisor needs to watch it.
pub(crate) struct Started {
    pub container: Container,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub log: OutputLog,
    pub state: ShimState,
    pub started: Instant,
}

/// Creates and starts the container with its output on pipes, then opens
/// its log and writes `state.json`; the container is torn down if either
/// fails, so it never runs unwatched.
pub(crate) fn start(
    dir: &StateDir,
    spec: &ShimSpec,
    runtime: &Runtime,
) -> Result<Started, ShimError> {
    let stdin = File::open("/dev/null").map_err(|e| ShimError::io("opening /dev/null", e))?;
    let (stdout, stdout_w) = output_pipe()?;
    let (stderr, stderr_w) = output_pipe()?;
    let stdio = StdioFds {
        stdin: Some(stdin.into()),
        stdout: Some(stdout_w),
        stderr: Some(stderr_w),
    };
    let container = runtime.create_and_start(&spec.container, stdio)?;
    let started = Instant::now();
    let state = ShimState {
        id: spec.container.id.to_string(),
        shim_pid: std::process::id(),
        container_pid: container.pid(),
        status: Status::Running,
        started_at: u64::try_from(berth_core::time::now_millis()).unwrap_or(0),
        exited_at: None,
    };
    // Output waits in the pipes meanwhile. Without a log or a state record
    // the shim cannot do its job: the container must not run unwatched.
    let log = OutputLog::create(&dir.log_file(), spec.log_max_bytes)
        .map_err(|e| ShimError::io(format!("creating {}", dir.log_file().display()), e));
    let log = log.and_then(|log| {
        dir.write_atomic("state.json", &state)
            .map_err(|e| ShimError::io("writing state.json", e))?;
        Ok(log)
    });
    match log {
        Ok(log) => Ok(Started {
            container,
            stdout,
            stderr,
            log,
            state,
            started,
        }),
        Err(e) => {
            if let Err(teardown) = container.delete() {
                diag(&format!("tearing down after a failed start: {teardown}"));
            }
            Err(e)
        }
    }
}

/// A pipe for the container's output: the shim's end non-blocking (the
/// poll loop must never wait on it), the container's end blocking (as any
/// program expects its stdout to be).
fn output_pipe() -> Result<(OwnedFd, OwnedFd), ShimError> {
    use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
    let fail = |e: rustix::io::Errno| ShimError::io("creating an output pipe", e);
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(fail)?;
    let flags = fcntl_getfl(&read).map_err(fail)?;
    fcntl_setfl(&read, flags | OFlags::NONBLOCK).map_err(fail)?;
    Ok((read, write))
}
