//! The supervisor: one single-threaded poll loop over the container's
//! pidfd, its two output pipes, the control socket and its clients, the
//! shim's signalfd, and the timers (the container's deadline, the stop
//! grace period, the drain limit, the exit-record retry).
//!
//! It goes through three phases: the container runs; it has exited and its
//! pipes are read to the end; it is torn down and its exit record is being
//! made durable. Clients are served throughout.

use crate::control::{Backend, Server};
use crate::error::ShimError;
use crate::log::OutputLog;
use crate::poll::{PollSet, BROKEN, READABLE};
use crate::shim::{diag, Started, STOP_GRACE};
use crate::signals::Signals;
use crate::state::{unix_ms, ExitRecord, ShimState, StateDir, Status};
use berth_core::{ErrorReport, HasErrorCode};
use berth_runtime::{Container, ContainerResult, ExitStatus};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant, SystemTime};

/// After the container exits, how long its pipes may take to reach EOF
/// (they do at once unless something outside the container holds them).
const DRAIN_LIMIT: Duration = Duration::from_secs(2);
/// Between attempts to write an exit record that failed (disk full).
const RECORD_RETRY: Duration = Duration::from_secs(1);
/// How long clients get to take their last replies.
const FINAL_REPLIES: Duration = Duration::from_secs(1);
/// The read buffer for the container's output. Kept for the shim's whole
/// life and resident once output arrives, so it is sized for memory, not
/// for the fewest syscalls: a full pipe (64 KiB) takes four reads. It is
/// allocated on the first output, so a silent container never costs it.
const READ_CHUNK: usize = 16 * 1024;

enum Phase {
    Running,
    /// Exited: reading its output to the end.
    Draining {
        until: Instant,
    },
    /// Torn down: making the exit record durable.
    Recording {
        record: ExitRecord,
        retry_at: Instant,
    },
}

struct Pipe {
    fd: Option<OwnedFd>,
    slot: usize,
}

pub(crate) struct Supervisor {
    dir: StateDir,
    signals: Signals,
    server: Server,
    log: OutputLog,
    pipes: [Pipe; 2],
    container: Option<Container>,
    state: ShimState,
    started: Instant,
    phase: Phase,
    exit: Option<(ExitStatus, Instant)>,
    /// Stop asked for: the container was sent SIGTERM and gets SIGKILL then.
    stop: Option<Instant>,
    stopping: bool,
    /// The record clients see: set once it is durable (or its first write
    /// failed, so that the result is not lost meanwhile).
    published: Option<ExitRecord>,
    log_failed: bool,
    /// Empty until the container first has output (see READ_CHUNK).
    buf: Vec<u8>,
}

/// What clients of the control socket see of the shim.
struct View<'a> {
    container: Option<&'a Container>,
    record: Option<&'a ExitRecord>,
}

impl Backend for View<'_> {
    fn record(&self) -> Option<&ExitRecord> {
        self.record
    }

    fn kill(&self, signal: i32) -> Result<(), ErrorReport> {
        match self.container {
            Some(c) => c.kill(signal).map_err(|e| e.report()),
            None => Ok(()), // gone: as for any exited container, a no-op
        }
    }
}

impl Supervisor {
    pub fn new(dir: StateDir, signals: Signals, server: Server, started: Started) -> Supervisor {
        let pipe = |fd| Pipe {
            fd: Some(fd),
            slot: usize::MAX,
        };
        Supervisor {
            dir,
            signals,
            server,
            log: started.log,
            pipes: [pipe(started.stdout), pipe(started.stderr)],
            container: Some(started.container),
            state: started.state,
            started: started.started,
            phase: Phase::Running,
            exit: None,
            stop: None,
            stopping: false,
            published: None,
            log_failed: false,
            buf: Vec::new(),
        }
    }

    /// Supervises the container to its end and returns its exit record,
    /// durable by then; `Err` only if the record could not be written.
    pub fn run(mut self) -> Result<ExitRecord, ShimError> {
        let mut set = PollSet::default();
        let record = loop {
            if let Some(record) = self.advance() {
                break record;
            }
            if let Err(e) = self.turn(&mut set) {
                if matches!(self.phase, Phase::Recording { .. }) {
                    return Err(self.give_up(e));
                }
                // Lost track of the container: end it, record why.
                diag(&format!("supervision failed: {e}"));
                let record = self.tear_down(Some(e.report()));
                self.phase = Phase::Recording {
                    record,
                    retry_at: Instant::now(),
                };
            }
        };
        self.state.status = Status::Exited;
        self.state.exited_at = Some(unix_ms(SystemTime::now()));
        if let Err(e) = self.dir.write_atomic("state.json", &self.state) {
            diag(&format!("writing state.json: {e}"));
        }
        let view = View {
            container: None,
            record: Some(&record),
        };
        self.server.close(&view, Instant::now() + FINAL_REPLIES);
        Ok(record)
    }

    /// Moves to the next phase when the current one is over; returns the
    /// record once it is durable.
    fn advance(&mut self) -> Option<ExitRecord> {
        let now = Instant::now();
        match &self.phase {
            Phase::Running => {}
            Phase::Draining { until } => {
                if self.pipes.iter().all(|p| p.fd.is_none()) || now >= *until {
                    for pipe in &mut self.pipes {
                        pipe.fd = None;
                    }
                    let record = self.tear_down(None);
                    self.phase = Phase::Recording {
                        record,
                        retry_at: now,
                    };
                }
            }
            Phase::Recording { record, retry_at } => {
                if now >= *retry_at {
                    match self.dir.write_durable("exit.json", record) {
                        Ok(()) => return Some(record.clone()),
                        Err(e) => {
                            if self.published.is_none() {
                                diag(&format!("writing exit.json (retrying): {e}"));
                            }
                            // Meanwhile clients can learn the result here.
                            self.published = Some(record.clone());
                            self.phase = Phase::Recording {
                                record: record.clone(),
                                retry_at: now + RECORD_RETRY,
                            };
                        }
                    }
                }
            }
        }
        None
    }

    /// One turn of the loop: wait for something, then handle it.
    fn turn(&mut self, set: &mut PollSet) -> Result<(), ShimError> {
        set.clear();
        let signals_slot = set.add(self.signals.fd(), READABLE);
        let pidfd_slot = match (&self.phase, &self.container) {
            // Once reaped, the pidfd stays readable: stop polling it.
            (Phase::Running, Some(c)) => Some(set.add(c.pidfd(), READABLE)),
            _ => None,
        };
        for pipe in &mut self.pipes {
            if let Some(fd) = &pipe.fd {
                pipe.slot = set.add(fd.as_fd(), READABLE);
            }
        }
        self.server.register(set);
        set.wait(self.next_timer())
            .map_err(|e| ShimError::io("polling", e))?;

        if let Some(slot) = pidfd_slot {
            if set.revents(slot) != 0 {
                self.reap()?;
            }
        }
        self.check_timers()?;
        if set.revents(signals_slot) != 0 && self.signals.take() {
            self.on_stop()?;
        }
        for i in 0..self.pipes.len() {
            if set.revents(self.pipes[i].slot) & (READABLE | BROKEN) != 0 {
                self.read_output(i);
            }
        }
        let view = View {
            container: self.container.as_ref(),
            record: self.published.as_ref(),
        };
        self.server.service(set, &view);
        Ok(())
    }

    fn next_timer(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Running => {
                let deadline = self
                    .container
                    .as_ref()
                    .filter(|c| !c.timed_out())
                    .and_then(Container::deadline);
                [deadline, self.stop].into_iter().flatten().min()
            }
            Phase::Draining { until } => Some(*until),
            Phase::Recording { retry_at, .. } => Some(*retry_at),
        }
    }

    fn reap(&mut self) -> Result<(), ShimError> {
        let Some(container) = &mut self.container else {
            return Ok(());
        };
        if let Some(status) = container.try_wait()? {
            let now = Instant::now();
            self.exit = Some((status, now));
            self.phase = Phase::Draining {
                until: now + DRAIN_LIMIT,
            };
        }
        Ok(())
    }

    /// The timeout and the end of the stop grace period, while it runs.
    /// (Reaped first: a container that exited right at its deadline did not
    /// time out.)
    fn check_timers(&mut self) -> Result<(), ShimError> {
        let (Phase::Running, Some(container)) = (&self.phase, &mut self.container) else {
            return Ok(());
        };
        let now = Instant::now();
        if !container.timed_out() && container.deadline().is_some_and(|d| now >= d) {
            container.kill_for_timeout()?;
        }
        if self.stop.is_some_and(|at| now >= at) {
            self.stop = None;
            container.kill(libc::SIGKILL)?;
        }
        Ok(())
    }

    /// SIGTERM or SIGINT to the shim: stop the container, gracefully first.
    fn on_stop(&mut self) -> Result<(), ShimError> {
        match (&self.phase, &self.container) {
            (Phase::Running, Some(container)) if !self.stopping => {
                self.stopping = true;
                self.stop = Some(Instant::now() + STOP_GRACE);
                container.kill(libc::SIGTERM)?;
            }
            // Stuck on an exit record that cannot be written: give up.
            (Phase::Recording { .. }, _) => return Err(ShimError::Stopped),
            // Already stopping, or exited and about to be recorded.
            _ => {}
        }
        Ok(())
    }

    fn read_output(&mut self, i: usize) {
        let Some(fd) = &self.pipes[i].fd else {
            return;
        };
        if self.buf.is_empty() {
            self.buf.resize(READ_CHUNK, 0);
        }
        match rustix::io::read(fd, &mut self.buf) {
            Ok(0) => self.pipes[i].fd = None,
            Ok(n) => {
                if let Err(e) = self.log.append(&self.buf[..n]) {
                    if !self.log_failed {
                        self.log_failed = true;
                        diag(&format!("writing output.log (output is dropped): {e}"));
                    }
                }
            }
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {}
            Err(e) => {
                diag(&format!("reading container output: {e}"));
                self.pipes[i].fd = None;
            }
        }
    }

    /// Deletes the container and builds its exit record. `error` is why the
    /// shim ends it early, if it does.
    fn tear_down(&mut self, error: Option<ErrorReport>) -> ExitRecord {
        if let Err(e) = self.log.sync() {
            diag(&format!("syncing output.log: {e}"));
        }
        let Some(container) = self.container.take() else {
            let error = error.unwrap_or_else(|| {
                ErrorReport::new(berth_core::ErrorCode::Internal, "container already gone")
            });
            return ExitRecord::Failed { error };
        };
        let observed = self
            .exit
            .map(|(status, at)| observed_result(&container, status, at - self.started));
        let (log_bytes, log_dropped_bytes) = (self.log.written(), self.log.dropped());
        let log_write_error = self.log.write_error().map(str::to_owned);
        match (container.delete(), observed) {
            (Ok(result), _) => ExitRecord::Finished {
                result,
                log_bytes,
                log_dropped_bytes,
                log_write_error,
                error,
            },
            (Err(e), Some(result)) => ExitRecord::Finished {
                result,
                log_bytes,
                log_dropped_bytes,
                log_write_error,
                error: error.or_else(|| Some(e.report())),
            },
            (Err(e), None) => ExitRecord::Failed {
                error: error.unwrap_or_else(|| e.report()),
            },
        }
    }

    /// Without a record there is nothing left to do: say why and go.
    fn give_up(mut self, error: ShimError) -> ShimError {
        diag(&format!("giving up without an exit record: {error}"));
        if let Some(container) = self.container.take() {
            let _ = container.delete();
        }
        self.server.remove();
        error
    }
}

/// The result as the shim saw it, for when teardown fails and the runtime
/// returns none: the process did end, and how matters to the caller.
fn observed_result(container: &Container, status: ExitStatus, wall: Duration) -> ContainerResult {
    let stats = container.stats();
    let (exit_code, signal) = match status {
        ExitStatus::Exited(c) => (Some(c), None),
        ExitStatus::Signaled(s) => (None, Some(s)),
    };
    ContainerResult {
        id: container.id().to_string(),
        exit_code,
        signal,
        oom_killed: stats.oom_kills > 0,
        timed_out: container.timed_out(),
        wall_time_ms: wall.as_secs_f64() * 1000.0,
        cpu_time_ms: stats.cpu_usage_ns.map(|ns| ns as f64 / 1e6),
        peak_memory_bytes: stats.memory_peak,
        teardown_ms: 0.0,
    }
}
