//! Running one container in the foreground: a single-threaded poll loop over
//! the container's pidfd, berth's own signals, the timeout, and (when asked)
//! the container's output and terminal.

use crate::cli::RunArgs;
use crate::CliError;
use berth_core::{ErrorCode, ErrorReport};
use berth_runtime::{Container, ContainerResult, ContainerSpec, Runtime, StdioFds};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Instant;

const FORWARDED_SIGNALS: [i32; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

fn io_error(what: &str, e: impl Into<std::io::Error>) -> CliError {
    CliError(ErrorReport::new(
        ErrorCode::HostIo,
        format!("{what}: {}", e.into()),
    ))
}

/// A readable fd whose data goes to our stdout/stderr and the log.
struct Stream {
    fd: OwnedFd,
    to_stderr: bool,
    open: bool,
}

pub fn run(
    runtime: &Runtime,
    spec: &ContainerSpec,
    args: &RunArgs,
) -> Result<ContainerResult, CliError> {
    let signals = SignalGuard::block()?;
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
    let mut streams = Vec::new();
    if log.is_some() && !args.tty {
        for to_stderr in [false, true] {
            let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
                .map_err(|e| io_error("creating an output pipe", e))?;
            if to_stderr {
                stdio.stderr = Some(w);
            } else {
                stdio.stdout = Some(w);
            }
            streams.push(Stream {
                fd: r,
                to_stderr,
                open: true,
            });
        }
    }

    // Without a terminal, create and start in one step (one round trip
    // less); with one, the pty must be wired up before the command runs.
    let mut container = if args.tty {
        runtime.create(spec, stdio)?
    } else {
        runtime.create_and_start(spec, stdio)?
    };
    let pty = container.take_pty_master();
    let _raw = match &pty {
        Some(master) => {
            let guard = RawTerminal::enter();
            copy_window_size(master.as_fd());
            streams.push(Stream {
                fd: rustix::io::dup(master).map_err(|e| io_error("dup pty", e))?,
                to_stderr: false,
                open: true,
            });
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
    let outcome = supervise(
        &mut container,
        &signals,
        &mut streams,
        pty.as_ref(),
        log.as_mut(),
    );
    let result = container.delete()?;
    outcome?;
    Ok(result)
}

fn supervise(
    container: &mut Container,
    signals: &SignalGuard,
    streams: &mut [Stream],
    pty: Option<&OwnedFd>,
    mut log: Option<&mut File>,
) -> Result<(), CliError> {
    let mut forwarded = 0u32;
    let mut exited = false;
    let mut stdin_open = pty.is_some();
    // Only output streams and a terminal's stdin are read through it: a
    // container without them (the common `berth run IMAGE CMD`) should not
    // fault in 64 KiB it never uses.
    let mut buf = if streams.is_empty() && !stdin_open {
        Vec::new()
    } else {
        vec![0u8; 64 * 1024]
    };
    loop {
        if exited && streams.iter().all(|s| !s.open) {
            return Ok(());
        }
        let mut fds = Vec::with_capacity(4 + streams.len());
        // Once reaped, the pidfd stays readable: stop polling it.
        fds.push(pollfd(if exited {
            -1
        } else {
            container.pidfd().as_raw_fd()
        }));
        fds.push(pollfd(signals.fd.as_raw_fd()));
        let first_stream = fds.len();
        for s in streams.iter() {
            fds.push(pollfd(if s.open { s.fd.as_raw_fd() } else { -1 }));
        }
        let stdin_index = fds.len();
        fds.push(pollfd(if stdin_open { 0 } else { -1 }));

        let timeout_ms = match container.deadline() {
            Some(d) if !exited && !container.timed_out() => {
                d.saturating_duration_since(Instant::now())
                    .as_millis()
                    .min(i32::MAX as u128) as i32
                    + 1
            }
            _ => -1,
        };
        // SAFETY: polling a vector of valid (or -1, ignored) fds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(io_error("waiting for the container", e));
        }

        // Reap first: a container that exited right at its deadline did
        // not time out.
        if fds[0].revents != 0 && !exited {
            exited = container.try_wait()?.is_some();
        }
        if !exited && !container.timed_out() {
            if let Some(d) = container.deadline() {
                if Instant::now() >= d {
                    container.kill_for_timeout()?;
                }
            }
        }
        if fds[1].revents != 0 {
            for sig in signals.drain() {
                if sig == libc::SIGWINCH {
                    if let Some(master) = pty {
                        copy_window_size(master.as_fd());
                    }
                    continue;
                }
                forwarded += 1;
                // First signal: pass it on. Second: the user means it.
                let to_send = if forwarded == 1 { sig } else { libc::SIGKILL };
                container.kill(to_send)?;
            }
        }
        for (i, stream) in streams.iter_mut().enumerate() {
            let revents = fds[first_stream + i].revents;
            if revents == 0 || !stream.open {
                continue;
            }
            match rustix::io::read(&stream.fd, &mut buf) {
                Ok(0) | Err(rustix::io::Errno::IO) => stream.open = false,
                Ok(n) => {
                    let chunk = &buf[..n];
                    let out: &mut dyn Write = if stream.to_stderr {
                        &mut std::io::stderr()
                    } else {
                        &mut std::io::stdout()
                    };
                    let _ = out.write_all(chunk).and_then(|_| out.flush());
                    if let Some(log) = log.as_deref_mut() {
                        log.write_all(chunk)
                            .map_err(|e| io_error("writing the log file", e))?;
                    }
                }
                Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => {}
                Err(e) => return Err(io_error("reading container output", e)),
            }
        }
        if stdin_open && fds[stdin_index].revents != 0 {
            let stdin = unsafe { BorrowedFd::borrow_raw(0) };
            match rustix::io::read(stdin, &mut buf) {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => {
                    if let Some(master) = pty {
                        let _ = write_all(master.as_fd(), &buf[..n]);
                    }
                }
            }
        }
    }
}

fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
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

/// Blocks the signals berth handles itself and reads them from a signalfd,
/// so the poll loop sees them; restores the mask on drop.
struct SignalGuard {
    fd: OwnedFd,
    old: libc::sigset_t,
}

impl SignalGuard {
    fn block() -> Result<SignalGuard, CliError> {
        // SAFETY: sigset manipulation on local values; signalfd returns a
        // new fd we take ownership of.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in FORWARDED_SIGNALS.iter().chain(&[libc::SIGWINCH]) {
                libc::sigaddset(&mut set, *sig);
            }
            let mut old: libc::sigset_t = std::mem::zeroed();
            if libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old) != 0 {
                return Err(io_error(
                    "blocking signals",
                    std::io::Error::last_os_error(),
                ));
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
            if fd < 0 {
                return Err(io_error("signalfd", std::io::Error::last_os_error()));
            }
            Ok(SignalGuard {
                fd: std::os::fd::FromRawFd::from_raw_fd(fd),
                old,
            })
        }
    }

    fn drain(&self) -> Vec<i32> {
        let mut signals = Vec::new();
        let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
        while let Ok(n) = rustix::io::read(&self.fd, &mut info) {
            if n != info.len() {
                break;
            }
            // ssi_signo is the first u32 of signalfd_siginfo.
            signals.push(u32::from_ne_bytes([info[0], info[1], info[2], info[3]]) as i32);
        }
        signals
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        // SAFETY: restoring the mask saved in `block`.
        unsafe { libc::sigprocmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}

/// Puts our terminal in raw mode for `-t`, restoring it on drop.
struct RawTerminal {
    saved: rustix::termios::Termios,
}

impl RawTerminal {
    fn enter() -> Option<RawTerminal> {
        let stdin = unsafe { BorrowedFd::borrow_raw(0) };
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
        let stdin = unsafe { BorrowedFd::borrow_raw(0) };
        let _ =
            rustix::termios::tcsetattr(stdin, rustix::termios::OptionalActions::Now, &self.saved);
    }
}

fn copy_window_size(master: BorrowedFd<'_>) {
    let stdin = unsafe { BorrowedFd::borrow_raw(0) };
    if let Ok(size) = rustix::termios::tcgetwinsize(stdin) {
        let _ = rustix::termios::tcsetwinsize(master, size);
    }
}
