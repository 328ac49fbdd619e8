//! The supervisor loop: one single-threaded `poll(2)` loop over a
//! container's pidfd, a signalfd, the container's output streams and its
//! timeout. `berth run` and the shim both run it; what is theirs alone (a
//! terminal and the user's stdout, or a capped log, a control socket and an
//! exit record) they plug in through [`Handler`].
//!
//! A supervision goes through three states:
//!
//! 1. running: the pidfd, the timeout, signals and output are watched;
//! 2. exited (reaped, [`Event::Exited`]): the output streams are read to
//!    the end, for at most [`DRAIN_LIMIT`] (they end at once unless
//!    something outside the container holds them open);
//! 3. ended ([`Event::Ended`]): the streams are closed; signals, the
//!    handler's own fds and timers are still served until the handler says
//!    it has [finished](Handler::finished).
//!
//! Every turn the loop reaps first, then enforces the timeout (so a
//! container that exited right at its deadline did not time out), then
//! hands over signals, then output (one read per ready stream, so that no
//! stream starves the others), then lets the handler serve its own fds.
//! Whether the drain is over is checked at the start of a turn, before any
//! wait.

mod poll;
mod signals;

pub(crate) use poll::timeout_ms;
pub use poll::{PollSet, BROKEN, READABLE, WRITABLE};
pub use signals::{OnDrop, SignalFd};

use crate::container::{Container, ExitStatus};
use crate::error::{Result, RuntimeError};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

/// After the process exits, how long its output streams may take to end.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(2);
/// The read buffer's size unless [`Supervisor::read_chunk`] says otherwise:
/// a full pipe (64 KiB) takes four reads, and a long-lived supervisor keeps
/// the buffer resident once output arrives.
pub const DEFAULT_READ_CHUNK: usize = 16 * 1024;

/// The process the loop watches: a [`Container`], or in tests any child.
pub trait Supervised {
    /// Becomes readable when the process exits.
    fn pidfd(&self) -> BorrowedFd<'_>;
    /// Reaps the process if it has exited, without blocking.
    fn try_wait(&mut self) -> Result<Option<ExitStatus>>;
    /// When the process must be killed for running too long: `None`
    /// without a timeout, and once it has been killed for it.
    fn deadline(&self) -> Option<Instant>;
    /// Kills the process because its deadline passed.
    fn kill_for_timeout(&mut self) -> Result<()>;
}

impl Supervised for Container {
    fn pidfd(&self) -> BorrowedFd<'_> {
        Container::pidfd(self)
    }

    fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        Container::try_wait(self)
    }

    fn deadline(&self) -> Option<Instant> {
        Container::deadline(self).filter(|_| !self.timed_out())
    }

    fn kill_for_timeout(&mut self) -> Result<()> {
        Container::kill_for_timeout(self)
    }
}

/// How and when the process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub status: ExitStatus,
    /// When the loop reaped it.
    pub at: Instant,
}

/// What the loop tells its handler.
#[derive(Debug)]
pub enum Event<'a> {
    /// A signal arrived on the signalfd.
    Signal(libc::c_int),
    /// A chunk of output from stream `stream` (its index in the streams
    /// given to [`Supervisor::new`]).
    Output { stream: usize, data: &'a [u8] },
    /// Reading stream `stream` failed: it is closed, its further output
    /// lost. (End of file, and EIO from a pty master whose terminal has
    /// been closed, are a normal end and are not reported.)
    OutputFailed { stream: usize, error: io::Error },
    /// The process has exited and been reaped; its output is drained next.
    Exited(Exit),
    /// The output has been read to the end (or [`DRAIN_LIMIT`] passed) and
    /// the streams are closed: only the handler's own business remains.
    Ended(Exit),
}

/// The side of the loop that belongs to its caller.
pub trait Handler {
    type Process: Supervised;
    /// Any error ends [`Supervisor::run`] at once with that error.
    type Error: From<RuntimeError>;

    /// The process to watch, asked for on every turn; `None` once the
    /// handler has torn it down (the loop then watches signals, the
    /// handler's fds and its timers only).
    fn process(&mut self) -> Option<&mut Self::Process>;

    fn event(&mut self, event: Event<'_>) -> std::result::Result<(), Self::Error>;

    /// Checked before every turn: true ends [`Supervisor::run`].
    fn finished(&self) -> bool;

    /// Adds the handler's own fds to this turn's poll set.
    fn register(&mut self, _set: &mut PollSet) {}

    /// The handler's next timer, if any: the loop wakes up for it.
    fn next_timer(&self) -> Option<Instant> {
        None
    }

    /// Called at the end of every turn, after the events: the handler
    /// serves its fds (their readiness is in `set`) and its timers.
    fn service(&mut self, _set: &PollSet) -> std::result::Result<(), Self::Error> {
        Ok(())
    }
}

enum State {
    Running,
    Draining { exit: Exit, until: Instant },
    Ended,
}

struct Stream {
    fd: Option<OwnedFd>,
    slot: usize,
}

/// The loop's own state: kept across [`Supervisor::run`] calls, so that a
/// handler may resume after an error.
pub struct Supervisor {
    signals: SignalFd,
    streams: Vec<Stream>,
    set: PollSet,
    /// Empty until the first output: a silent process never costs it.
    buf: Vec<u8>,
    read_chunk: usize,
    drain_limit: Duration,
    state: State,
}

impl Supervisor {
    /// A loop over `signals` and the output `streams` (read ends; blocking
    /// or not, as the loop reads each only when poll reports it ready).
    pub fn new(signals: SignalFd, streams: Vec<OwnedFd>) -> Supervisor {
        let streams: Vec<Stream> = streams
            .into_iter()
            .map(|fd| Stream {
                fd: Some(fd),
                slot: usize::MAX,
            })
            .collect();
        Supervisor {
            signals,
            // The signalfd, the pidfd, the streams and a handler fd or two:
            // one allocation for the whole supervision in the common case.
            set: PollSet::with_capacity(streams.len() + 4),
            streams,
            buf: Vec::new(),
            read_chunk: DEFAULT_READ_CHUNK,
            drain_limit: DRAIN_LIMIT,
            state: State::Running,
        }
    }

    /// The most read from a stream at once (and the buffer's size).
    pub fn read_chunk(mut self, bytes: usize) -> Supervisor {
        self.read_chunk = bytes.max(1);
        self
    }

    /// How long output may take to end after the process exits.
    pub fn drain_limit(mut self, limit: Duration) -> Supervisor {
        self.drain_limit = limit;
        self
    }

    /// Closes the output streams, for a handler that gives up early: what
    /// is still in them is not read.
    pub fn close_streams(&mut self) {
        for stream in &mut self.streams {
            stream.fd = None;
        }
    }

    /// Runs turns until the handler has finished, or until an error (the
    /// loop's own or the handler's).
    pub fn run<H: Handler>(&mut self, handler: &mut H) -> std::result::Result<(), H::Error> {
        while !handler.finished() {
            self.turn(handler)?;
        }
        Ok(())
    }

    fn turn<H: Handler>(&mut self, handler: &mut H) -> std::result::Result<(), H::Error> {
        // Checked before waiting, not after reading: a run resumed after an
        // error must not wait for streams that have already ended.
        if let State::Draining { exit, until } = self.state {
            if self.streams.iter().all(|s| s.fd.is_none()) || Instant::now() >= until {
                self.close_streams();
                self.state = State::Ended;
                return handler.event(Event::Ended(exit));
            }
        }
        let set = &mut self.set;
        set.clear();
        let signals_slot = set.add(self.signals.fd(), READABLE);
        let mut deadline = None;
        let pidfd_slot = match (&self.state, handler.process()) {
            // Once reaped, the pidfd stays readable: it is polled only
            // while the process runs.
            (State::Running, Some(process)) => {
                deadline = process.deadline();
                Some(set.add(process.pidfd(), READABLE))
            }
            _ => None,
        };
        for stream in &mut self.streams {
            if let Some(fd) = &stream.fd {
                stream.slot = set.add(fd.as_fd(), READABLE);
            }
        }
        handler.register(set);
        let drain_until = match self.state {
            State::Draining { until, .. } => Some(until),
            _ => None,
        };
        let wake = [deadline, drain_until, handler.next_timer()]
            .into_iter()
            .flatten()
            .min();
        set.wait(wake)
            .map_err(|e| RuntimeError::host_io("waiting for the container", e))?;

        if pidfd_slot.is_some_and(|slot| self.set.revents(slot) != 0) {
            self.reap(handler)?;
        }
        if let (State::Running, Some(process)) = (&self.state, handler.process()) {
            if process.deadline().is_some_and(|d| Instant::now() >= d) {
                process.kill_for_timeout()?;
            }
        }
        if self.set.revents(signals_slot) != 0 {
            while let Some(signal) = self.signals.next() {
                handler.event(Event::Signal(signal))?;
            }
        }
        for i in 0..self.streams.len() {
            if self.set.revents(self.streams[i].slot) & (READABLE | BROKEN) != 0 {
                self.read_stream(i, handler)?;
            }
        }
        handler.service(&self.set)
    }

    fn reap<H: Handler>(&mut self, handler: &mut H) -> std::result::Result<(), H::Error> {
        let Some(process) = handler.process() else {
            return Ok(());
        };
        if let Some(status) = process.try_wait()? {
            let at = Instant::now();
            let exit = Exit { status, at };
            self.state = State::Draining {
                exit,
                until: at + self.drain_limit,
            };
            handler.event(Event::Exited(exit))?;
        }
        Ok(())
    }

    /// One read from stream `i` (poll said it is ready).
    fn read_stream<H: Handler>(
        &mut self,
        i: usize,
        handler: &mut H,
    ) -> std::result::Result<(), H::Error> {
        let Some(fd) = &self.streams[i].fd else {
            return Ok(());
        };
        if self.buf.is_empty() {
            self.buf.resize(self.read_chunk, 0);
        }
        match rustix::io::read(fd, &mut self.buf) {
            Ok(n) if n > 0 => handler.event(Event::Output {
                stream: i,
                data: &self.buf[..n],
            }),
            // End of file; or EIO, a pty master's end once every holder of
            // the terminal has closed it.
            Ok(_) | Err(rustix::io::Errno::IO) => {
                self.streams[i].fd = None;
                Ok(())
            }
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => Ok(()),
            Err(e) => {
                self.streams[i].fd = None;
                handler.event(Event::OutputFailed {
                    stream: i,
                    error: e.into(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests;
