//! The shim's side of the runtime's supervisor loop
//! (`berth_runtime::supervise`, shared with `berth run`): the container's
//! output goes to the capped `output.log`, SIGTERM or SIGINT stops the
//! container gracefully, the control socket is served throughout, and once
//! the container has ended its exit record is made durable (retried while
//! the disk refuses it) before the loop ends.

use crate::control::{Backend, Server};
use crate::diag::diag;
use crate::error::ShimError;
use crate::log::OutputLog;
use crate::signals::STOP_GRACE;
use crate::start::Started;
use crate::state::{ExitRecord, ShimState, StateDir, Status};
use berth_core::{ErrorReport, HasErrorCode};
use berth_runtime::supervise::{Event, Exit, Handler, PollSet, SignalFd, Supervisor as Loop};
use berth_runtime::{Container, ContainerResult, ExitStatus};
use std::time::{Duration, Instant};

/// Between attempts to write an exit record that failed (disk full).
const RECORD_RETRY: Duration = Duration::from_secs(1);
/// How long clients get to take their last replies.
const FINAL_REPLIES: Duration = Duration::from_secs(1);
/// The read buffer for the container's output. Kept for the shim's whole
/// life and resident once output arrives, so it is sized for memory, not
/// for the fewest syscalls: a full pipe (64 KiB) takes four reads. The
/// loop allocates it on the first output, so a silent container never
/// costs it.
const READ_CHUNK: usize = 16 * 1024;

pub(crate) struct Supervisor {
    watch: Loop,
    shim: Shim,
}

/// Everything of the shim's that the loop calls back into.
struct Shim {
    dir: StateDir,
    server: Server,
    log: OutputLog,
    container: Option<Container>,
    state: ShimState,
    started: Instant,
    /// Set when the container has been reaped.
    exit: Option<Exit>,
    /// Stop asked for: the container was sent SIGTERM and gets SIGKILL then.
    stop: Option<Instant>,
    stopping: bool,
    /// Torn down: the exit record, and when to (re)try making it durable.
    recording: Option<(ExitRecord, Instant)>,
    /// The record once durable: the loop is done.
    durable: Option<ExitRecord>,
    /// The record clients see while the loop runs: set once its first
    /// write failed, so that the result is not lost meanwhile. (A durable
    /// one they see after the loop.)
    published: Option<ExitRecord>,
    log_failed: bool,
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
    pub fn new(dir: StateDir, signals: SignalFd, server: Server, started: Started) -> Supervisor {
        let streams = vec![started.stdout, started.stderr];
        Supervisor {
            watch: Loop::new(signals, streams).read_chunk(READ_CHUNK),
            shim: Shim {
                dir,
                server,
                log: started.log,
                container: Some(started.container),
                state: started.state,
                started: started.started,
                exit: None,
                stop: None,
                stopping: false,
                recording: None,
                durable: None,
                published: None,
                log_failed: false,
            },
        }
    }

    /// Supervises the container to its end and returns its exit record,
    /// durable by then; `Err` only if the record could not be written.
    pub fn run(self) -> Result<ExitRecord, ShimError> {
        let Supervisor {
            mut watch,
            mut shim,
        } = self;
        // The loop runs until the record is durable (see `finished`).
        let record = loop {
            if let Err(e) = watch.run(&mut shim) {
                if shim.recording.is_some() {
                    return Err(shim.give_up(e));
                }
                // Lost track of the container: end it, record why.
                diag(&format!("supervision failed: {e}"));
                watch.close_streams();
                let record = shim.tear_down(Some(e.report()));
                shim.recording = Some((record, Instant::now()));
            }
            if let Some(record) = shim.durable.take() {
                break record;
            }
        };
        shim.state.status = Status::Exited;
        shim.state.exited_at = Some(u64::try_from(berth_core::time::now_millis()).unwrap_or(0));
        if let Err(e) = shim.dir.write_atomic("state.json", &shim.state) {
            diag(&format!("writing state.json: {e}"));
        }
        let view = View {
            container: None,
            record: Some(&record),
        };
        shim.server.close(&view, Instant::now() + FINAL_REPLIES);
        Ok(record)
    }
}

impl Handler for Shim {
    type Process = Container;
    type Error = ShimError;

    fn process(&mut self) -> Option<&mut Container> {
        self.container.as_mut()
    }

    fn event(&mut self, event: Event<'_>) -> Result<(), ShimError> {
        match event {
            Event::Signal(_) => self.on_stop()?,
            Event::Output { data, .. } => {
                if let Err(e) = self.log.append(data) {
                    if !self.log_failed {
                        self.log_failed = true;
                        diag(&format!("writing output.log (output is dropped): {e}"));
                    }
                }
            }
            Event::OutputFailed { error, .. } => {
                diag(&format!("reading container output: {error}"));
            }
            Event::Exited(exit) => {
                self.exit = Some(exit);
                // Nothing left to escalate.
                self.stop = None;
            }
            Event::Ended(_) => {
                let record = self.tear_down(None);
                self.recording = Some((record, Instant::now()));
            }
        }
        Ok(())
    }

    fn finished(&self) -> bool {
        self.durable.is_some()
    }

    fn register(&mut self, set: &mut PollSet) {
        self.server.register(set);
    }

    /// The end of the stop grace period while the container runs; the next
    /// attempt at the exit record once it is torn down.
    fn next_timer(&self) -> Option<Instant> {
        self.stop.or(self.recording.as_ref().map(|(_, at)| *at))
    }

    fn service(&mut self, set: &PollSet) -> Result<(), ShimError> {
        let now = Instant::now();
        if self.stop.is_some_and(|at| now >= at) {
            self.stop = None;
            if let Some(container) = &self.container {
                container.kill(libc::SIGKILL)?;
            }
        }
        self.try_record(now);
        if self.durable.is_some() {
            // The loop ends here: clients get their replies after state.json
            // says "exited" too (in `Supervisor::run`), since a reply to
            // `wait` lets the agent remove the state dir at once.
            return Ok(());
        }
        let view = View {
            container: self.container.as_ref(),
            record: self.published.as_ref(),
        };
        self.server.service(set, &view);
        Ok(())
    }
}

impl Shim {
    /// SIGTERM or SIGINT to the shim: stop the container, gracefully first.
    fn on_stop(&mut self) -> Result<(), ShimError> {
        // Stuck on an exit record that cannot be written: give up.
        if self.recording.is_some() {
            return Err(ShimError::Stopped);
        }
        match &self.container {
            Some(container) if self.exit.is_none() && !self.stopping => {
                self.stopping = true;
                self.stop = Some(Instant::now() + STOP_GRACE);
                container.kill(libc::SIGTERM)?;
            }
            // Already stopping, or exited and about to be recorded.
            _ => {}
        }
        Ok(())
    }

    /// Makes the exit record durable when its time has come.
    fn try_record(&mut self, now: Instant) {
        let Some((record, retry_at)) = &mut self.recording else {
            return;
        };
        if now < *retry_at {
            return;
        }
        match self.dir.write_durable("exit.json", record) {
            Ok(()) => self.durable = self.recording.take().map(|(record, _)| record),
            Err(e) => {
                if self.published.is_none() {
                    diag(&format!("writing exit.json (retrying): {e}"));
                }
                // Meanwhile clients can learn the result here.
                self.published = Some(record.clone());
                *retry_at = now + RECORD_RETRY;
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
            .map(|exit| observed_result(&container, exit.status, exit.at - self.started));
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
