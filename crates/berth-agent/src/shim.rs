//! Launching shims and talking to them.
//!
//! A shim is spawned (never forked from this multi-threaded process) with a
//! pipe on its stdout and `--ready-fd 1`: it writes one line once the
//! container runs (or has failed, its exit record written) and then lets go
//! of the pipe. It leads its own session, so it outlives the agent.

use crate::error::ApiError;
use berth_core::ErrorCode;
use berth_shim::{Request, Response, StateDir};
use serde::Deserialize;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::process::Command;

/// The ready line.
#[derive(Debug, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Ready {
    Running { pid: i32 },
    Failed,
}

/// What the agent passes to every shim.
pub struct Launcher<'a> {
    pub binary: &'a Path,
    pub containers_dir: &'a Path,
    pub cgroup_parent: &'a str,
}

/// Where a shim finds the network namespace it was handed (fd 3).
pub const NAMESPACE_FD_PATH: &str = "/proc/self/fd/3";
const NAMESPACE_FD: i32 = 3;

/// How long a shim may take to report: container setup takes milliseconds;
/// this only bounds a shim stuck in the kernel.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What became of a launch: the shim's pid (0 if it never started) and
/// its report.
pub struct Launched {
    pub shim_pid: u32,
    pub ready: Result<Ready, ApiError>,
}

impl Launcher<'_> {
    /// Starts a shim on `dir` (whose spec.json is written) and returns once
    /// it reports. The shim's stderr goes to `shim.log` and its pid to
    /// `shim.pid` in the state dir (so a restarted agent can tell whether a
    /// shim that has not reported yet is alive).
    pub async fn launch(&self, dir: &StateDir, namespace: Option<OwnedFd>) -> Launched {
        let failed = |error| Launched {
            shim_pid: 0,
            ready: Err(error),
        };
        let stderr = match std::fs::File::create(dir.path().join("shim.log")) {
            Ok(f) => f,
            Err(e) => return failed(ApiError::io("creating shim.log", e)),
        };
        let mut command = Command::new(self.binary);
        if let Some(namespace) = &namespace {
            let fd = namespace.as_raw_fd();
            // SAFETY: between fork and exec only fcntl and dup2 run, both
            // async-signal-safe; they give the shim (and only it) the
            // namespace as fd 3, without close-on-exec.
            unsafe {
                command.pre_exec(move || {
                    if fd == NAMESPACE_FD {
                        let flags = libc::fcntl(fd, libc::F_GETFD);
                        if flags < 0
                            || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0
                        {
                            return Err(std::io::Error::last_os_error());
                        }
                    } else if libc::dup2(fd, NAMESPACE_FD) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let spawned = command
            .arg("--dir")
            .arg(dir.path())
            .arg("--containers-dir")
            .arg(self.containers_dir)
            .arg("--cgroup-parent")
            .arg(self.cgroup_parent)
            .arg("--ready-fd")
            .arg("1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(false)
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                return failed(ApiError::new(
                    ErrorCode::SpawnFailed,
                    format!("starting {}: {e}", self.binary.display()),
                ))
            }
        };
        let shim_pid = child.id().unwrap_or(0);
        let stdout = child.stdout.take();
        // The shim is our child until we exit: reap it whenever it ends.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        if let Err(e) = std::fs::write(dir.path().join("shim.pid"), format!("{shim_pid}\n")) {
            tracing::warn!("writing shim.pid: {e}");
        }
        let Some(stdout) = stdout else {
            return Launched {
                shim_pid,
                ready: Err(ApiError::internal("the shim's stdout pipe is missing")),
            };
        };
        let mut line = String::new();
        let read =
            tokio::time::timeout(READY_TIMEOUT, BufReader::new(stdout).read_line(&mut line)).await;
        let ready = match read {
            Err(_) => Err(ApiError::new(
                ErrorCode::SpawnFailed,
                format!("the shim did not report within {READY_TIMEOUT:?}"),
            )),
            Ok(Ok(n)) if n > 0 => serde_json::from_str::<Ready>(&line)
                .map_err(|e| ApiError::internal(format!("the shim said {line:?}: {e}"))),
            // EOF: the shim ended without writing any exit record.
            Ok(Ok(_)) => Err(ApiError::new(
                ErrorCode::HostIo,
                format!(
                    "the shim exited without an exit record: {}",
                    std::fs::read_to_string(dir.path().join("shim.log"))
                        .unwrap_or_default()
                        .trim()
                ),
            )),
            Ok(Err(e)) => Err(ApiError::io("reading the shim's ready line", e)),
        };
        Launched { shim_pid, ready }
    }
}

/// One request to the shim of `dir` and its reply. `timeout` bounds the
/// whole exchange (`None` for `wait`).
pub async fn request(
    dir: &StateDir,
    request: &Request,
    timeout: Option<Duration>,
) -> std::io::Result<Response> {
    let exchange = async {
        let socket = berth_shim::SocketPath::of(&dir.socket())?;
        let mut stream = UnixStream::connect(socket.path()).await?;
        let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
        line.push(b'\n');
        stream.write_all(&line).await?;
        let mut reply = String::new();
        if BufReader::new(&mut stream).read_line(&mut reply).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        serde_json::from_str(&reply)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    };
    match timeout {
        Some(limit) => tokio::time::timeout(limit, exchange)
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?,
        None => exchange.await,
    }
}

/// Sends `signal` to the container through its shim.
pub async fn kill(dir: &StateDir, signal: i32) -> Result<(), ApiError> {
    match request(dir, &Request::Kill { signal }, Some(Duration::from_secs(5))).await {
        Ok(Response::Ok { .. }) => Ok(()),
        Ok(Response::Error { error }) => Err(error.into()),
        Ok(other) => Err(ApiError::internal(format!(
            "unexpected reply to kill: {other:?}"
        ))),
        Err(e) if is_gone(&e) => Err(ApiError::new(
            ErrorCode::InvalidState,
            "the container is not running",
        )),
        Err(e) => Err(ApiError::io("asking the shim to kill", e)),
    }
}

/// Whether an error means nobody serves the socket any more.
pub fn is_gone(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        NotFound | ConnectionRefused | ConnectionReset | UnexpectedEof | BrokenPipe
    )
}

/// Whether `pid` is a live shim serving `dir`: its command line names the
/// state dir (so a recycled pid or another shim never passes).
pub fn shim_alive(pid: u32, dir: &StateDir) -> bool {
    if pid == 0 {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let want = dir.path().as_os_str().as_encoded_bytes();
    let mut args = cmdline.split(|b| *b == 0);
    let serves_dir = args.any(|a| a == b"--dir") && args.next() == Some(want);
    serves_dir
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| !stat.contains(") Z "))
            .unwrap_or(false)
}

/// Scans /proc for the shim serving `dir` (for when no pid was recorded:
/// an agent killed between spawning a shim and writing `shim.pid`).
pub fn find_shim(dir: &StateDir) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| shim_alive(*pid, dir))
}

/// The shim's pid as recorded at launch (`shim.pid`) or by the shim itself
/// (`state.json`); 0 if neither says.
pub fn recorded_pid(dir: &StateDir) -> u32 {
    std::fs::read_to_string(dir.path().join("shim.pid"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .or_else(|| dir.read_state().ok().flatten().map(|s| s.shim_pid))
        .unwrap_or(0)
}

/// Parses a signal given as a number or a name (`TERM`, `SIGTERM`, `9`).
pub fn parse_signal(text: &str) -> Result<i32, ApiError> {
    if let Ok(n) = text.parse::<i32>() {
        if (1..=libc::SIGRTMAX()).contains(&n) {
            return Ok(n);
        }
        return Err(ApiError::invalid(format!("{n} is not a signal number")));
    }
    let name = text.trim_start_matches("SIG").to_ascii_uppercase();
    let signal = match name.as_str() {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "WINCH" => libc::SIGWINCH,
        "ALRM" => libc::SIGALRM,
        _ => return Err(ApiError::invalid(format!("unknown signal {text:?}"))),
    };
    Ok(signal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_name_and_number() {
        assert_eq!(parse_signal("TERM").ok(), Some(libc::SIGTERM));
        assert_eq!(parse_signal("SIGKILL").ok(), Some(libc::SIGKILL));
        assert_eq!(parse_signal("usr1").ok(), Some(libc::SIGUSR1));
        assert_eq!(parse_signal("15").ok(), Some(15));
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("SIGNOPE").is_err());
        assert!(parse_signal("999").is_err());
    }
}
