//! Running one container in the foreground, on the runtime's supervisor
//! loop (`berth_runtime::supervise`, shared with the shim). What is `berth
//! run`'s own is here: signals forwarded to the container, its output
//! copied to our stdout/stderr and the `--log` file, and the terminal.

use crate::cli::RunArgs;
use crate::CliError;
use berth_core::{ErrorCode, ErrorReport};
use berth_runtime::supervise::{Event, Handler, OnDrop, PollSet, SignalFd, Supervisor, READABLE};
use berth_runtime::{
    Container, ContainerResult, ContainerSpec, CreateOptions, NetworkSetup, Runtime, StdioFds,
};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Read from a signalfd while the container runs: SIGWINCH resizes its
/// terminal; the others are passed on to it (the second one as SIGKILL).
const HANDLED_SIGNALS: [i32; 5] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGWINCH,
];
/// Output is copied to a terminal or a pipe: a full pipe in one read.
const READ_CHUNK: usize = 64 * 1024;
/// Keyboard input goes to the pty in chunks of at most this.
const STDIN_CHUNK: usize = 4096;

fn io_error(what: &str, e: impl Into<std::io::Error>) -> CliError {
    CliError(ErrorReport::new(
        ErrorCode::HostIo,
        format!("{what}: {}", e.into()),
    ))
}

pub fn run(
    runtime: &Runtime,
    spec: &ContainerSpec,
    args: &RunArgs,
    network_setup: Option<NetworkSetup<'_>>,
) -> Result<ContainerResult, CliError> {
    // Blocked from the start, so that a Ctrl-C during setup is not lost,
    // and until the container is deleted, so that one during teardown does
    // not leave it half torn down.
    let signals = SignalFd::block(&HANDLED_SIGNALS, OnDrop::Restore)
        .map_err(|e| io_error("blocking signals", e))?;
    let mut log = match &args.log {
        Some(path) => Some(
            File::options()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| io_error(&format!("opening log file {}", path.display()), e))?,
        ),
        None => None,
    };

    let mut stdio = StdioFds::default();
    if !args.interactive && !args.tty {
        let null = File::open("/dev/null").map_err(|e| io_error("opening /dev/null", e))?;
        stdio.stdin = Some(null.into());
    }
    // Streams 0 and 1 are the container's stdout and stderr (or stream 0
    // its terminal). Without `--log` or `-t` the container writes to ours
    // directly and there are none.
    let mut streams = Vec::new();
    if log.is_some() && !args.tty {
        let (stdout, stdout_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| io_error("creating an output pipe", e))?;
        let (stderr, stderr_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| io_error("creating an output pipe", e))?;
        stdio.stdout = Some(stdout_w);
        stdio.stderr = Some(stderr_w);
        streams = vec![stdout, stderr];
    }

    // Without a terminal, create and start in one step (one round trip
    // less); with one, the pty must be wired up before the command runs.
    let options = CreateOptions {
        start: !args.tty,
        network_setup,
    };
    let mut container = runtime.create_with(spec, stdio, options)?;
    let pty = container.take_pty_master();
    let _raw = match &pty {
        Some(master) => {
            let guard = RawTerminal::enter();
            copy_window_size(master.as_fd());
            streams.push(rustix::io::dup(master).map_err(|e| io_error("dup pty", e))?);
            guard
        }
        None => None,
    };

    if args.tty {
        if let Err(e) = container.start() {
            let _ = container.delete();
            return Err(e.into());
        }
    }
    let mut supervisor = Supervisor::new(signals, streams).read_chunk(READ_CHUNK);
    let mut foreground = Foreground {
        container: &mut container,
        pty: pty.as_ref(),
        log: log.as_mut(),
        stdin_open: pty.is_some(),
        stdin_slot: usize::MAX,
        forwarded: 0,
        ended: false,
    };
    let outcome = supervisor.run(&mut foreground);
    let result = container.delete()?;
    drop(supervisor);
    outcome?;
    Ok(result)
}

/// `berth run`'s side of the supervisor loop.
struct Foreground<'a> {
    container: &'a mut Container,
    pty: Option<&'a OwnedFd>,
    log: Option<&'a mut File>,
    /// Our stdin is copied to the container's terminal until it ends.
    stdin_open: bool,
    stdin_slot: usize,
    /// Signals forwarded so far.
    forwarded: u32,
    ended: bool,
}

impl Handler for Foreground<'_> {
    type Process = Container;
    type Error = CliError;

    fn process(&mut self) -> Option<&mut Container> {
        Some(self.container)
    }

    fn event(&mut self, event: Event<'_>) -> Result<(), CliError> {
        match event {
            Event::Signal(libc::SIGWINCH) => {
                if let Some(master) = self.pty {
                    copy_window_size(master.as_fd());
                }
            }
            Event::Signal(signal) => {
                self.forwarded += 1;
                // First signal: pass it on. Second: the user means it.
                let to_send = if self.forwarded == 1 {
                    signal
                } else {
                    libc::SIGKILL
                };
                self.container.kill(to_send)?;
            }
            Event::Output { stream, data } => {
                let out: &mut dyn Write = if stream == 1 {
                    &mut std::io::stderr()
                } else {
                    &mut std::io::stdout()
                };
                // Our stdout going away (a closed pager) must not stop the
                // container or its log.
                let _ = out.write_all(data).and_then(|_| out.flush());
                if let Some(log) = self.log.as_deref_mut() {
                    log.write_all(data)
                        .map_err(|e| io_error("writing the log file", e))?;
                }
            }
            Event::OutputFailed { error, .. } => {
                return Err(io_error("reading container output", error));
            }
            Event::Exited(_) => {}
            Event::Ended(_) => self.ended = true,
        }
        Ok(())
    }

    fn finished(&self) -> bool {
        self.ended
    }

    fn register(&mut self, set: &mut PollSet) {
        if self.stdin_open {
            self.stdin_slot = set.add(rustix::stdio::stdin(), READABLE);
        }
    }

    fn service(&mut self, set: &PollSet) -> Result<(), CliError> {
        if !self.stdin_open || set.revents(self.stdin_slot) == 0 {
            return Ok(());
        }
        let mut buf = [0u8; STDIN_CHUNK];
        match rustix::io::read(rustix::stdio::stdin(), &mut buf) {
            Ok(0) | Err(_) => self.stdin_open = false,
            Ok(n) => {
                if let Some(master) = self.pty {
                    let _ = write_all(master.as_fd(), &buf[..n]);
                }
            }
        }
        Ok(())
    }
}

fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> rustix::io::Result<()> {
    while !data.is_empty() {
        match rustix::io::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Puts our terminal in raw mode for `-t`, restoring it on drop.
struct RawTerminal {
    saved: rustix::termios::Termios,
}

impl RawTerminal {
    fn enter() -> Option<RawTerminal> {
        let stdin = rustix::stdio::stdin();
        if !rustix::termios::isatty(stdin) {
            return None;
        }
        let saved = rustix::termios::tcgetattr(stdin).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(stdin, rustix::termios::OptionalActions::Now, &raw).ok()?;
        Some(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let stdin = rustix::stdio::stdin();
        let _ =
            rustix::termios::tcsetattr(stdin, rustix::termios::OptionalActions::Now, &self.saved);
    }
}

fn copy_window_size(master: BorrowedFd<'_>) {
    let stdin = rustix::stdio::stdin();
    if let Ok(size) = rustix::termios::tcgetwinsize(stdin) {
        let _ = rustix::termios::tcsetwinsize(master, size);
    }
}
