//! The control socket: newline-delimited JSON requests and replies.
//!
//! Every request is one line; every reply is one line, in request order.
//!
//! | request                      | reply                                               |
//! |------------------------------|-----------------------------------------------------|
//! | `{"op":"state"}`             | `{"status":"running"\|"exited","result":…\|null}`   |
//! | `{"op":"kill","signal":N}`   | `{"ok":true}` or `{"error":{…}}`                    |
//! | `{"op":"wait"}`              | once the container has exited and its exit record is durable: `{"status":"exited","result":{…}}` |
//!
//! When the shim lost track of the container (its exit record is an error),
//! `state` and `wait` answer that error.
//!
//! A malformed line or an unknown op gets `{"error":{"code":"invalid_argument",…}}`
//! and the connection stays usable. A client blocks nothing but itself:
//! sockets are non-blocking, a connection's requests wait behind its own
//! pending `wait`, a client that does not read its replies stops being
//! read, and one that sends more than [`MAX_REQUEST_BYTES`] without a
//! newline is told so and dropped.

use crate::state::{ExitRecord, Status};
use berth_core::{ErrorCode, ErrorReport};
use berth_runtime::supervise::{PollSet, BROKEN, READABLE, WRITABLE};
use berth_runtime::ContainerResult;
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The longest request line accepted.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Replies a client may leave unread before the shim stops reading it.
const MAX_UNREAD_REPLIES: usize = 64 * 1024;
/// Connections served at once; more are accepted and closed at once.
const MAX_CLIENTS: usize = 64;
/// Connections accepted per turn of the loop.
const ACCEPT_BATCH: usize = 16;

/// A request on the control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Is the container running; its result once it has exited.
    State,
    /// Sends signal `signal` (1 to SIGRTMAX) to the container's first process.
    Kill { signal: i32 },
    /// Answered when the container has exited, with its result.
    Wait,
}

/// A reply on the control socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Response {
    Error {
        error: ErrorReport,
    },
    Ok {
        ok: bool,
    },
    State {
        status: Status,
        result: Option<ContainerResult>,
    },
}

impl Response {
    fn state(record: Option<&ExitRecord>) -> Response {
        match record {
            None => Response::State {
                status: Status::Running,
                result: None,
            },
            Some(ExitRecord::Finished { result, .. }) => Response::State {
                status: Status::Exited,
                result: Some(result.clone()),
            },
            Some(ExitRecord::Failed { error }) => Response::Error {
                error: error.clone(),
            },
        }
    }

    fn invalid(message: String) -> Response {
        Response::Error {
            error: ErrorReport::new(ErrorCode::InvalidArgument, message),
        }
    }
}

/// What the server needs from the shim to answer requests.
pub(crate) trait Backend {
    /// How the container ended, once its exit record is durable.
    fn record(&self) -> Option<&ExitRecord>;
    fn kill(&self, signal: i32) -> Result<(), ErrorReport>;
}

fn kill(backend: &dyn Backend, signal: i32) -> Response {
    if !(1..=libc::SIGRTMAX()).contains(&signal) {
        return Response::invalid(format!("signal {signal} is not a signal number"));
    }
    match backend.kill(signal) {
        Ok(()) => Response::Ok { ok: true },
        Err(error) => Response::Error { error },
    }
}

struct Client {
    stream: UnixStream,
    input: Vec<u8>,
    output: Vec<u8>,
    /// A `wait` is pending: later requests wait behind it.
    waiting: bool,
    /// The client will send nothing more.
    eof: bool,
    /// The connection is unusable or the client misbehaved: drop it.
    broken: bool,
    slot: usize,
}

impl Client {
    fn new(stream: UnixStream) -> Client {
        Client {
            stream,
            input: Vec::new(),
            output: Vec::new(),
            waiting: false,
            eof: false,
            broken: false,
            slot: usize::MAX,
        }
    }

    fn events(&self) -> i16 {
        let mut events = 0;
        if !self.eof && !self.waiting && self.output.len() < MAX_UNREAD_REPLIES {
            events |= READABLE;
        }
        if !self.output.is_empty() {
            events |= WRITABLE;
        }
        events
    }

    fn done(&self) -> bool {
        self.broken || (self.eof && !self.waiting && self.output.is_empty())
    }

    fn read(&mut self) {
        let mut buf = [0u8; 8192];
        match (&self.stream).read(&mut buf) {
            Ok(0) => self.eof = true,
            Ok(n) => self.input.extend_from_slice(&buf[..n]),
            Err(e) if is_transient(&e) => {}
            Err(_) => self.broken = true,
        }
    }

    /// Answers every complete request it can, in order.
    fn pump(&mut self, backend: &dyn Backend) {
        loop {
            if self.waiting {
                let Some(record) = backend.record() else {
                    return;
                };
                self.waiting = false;
                self.push(&Response::state(Some(record)));
            }
            if self.output.len() >= MAX_UNREAD_REPLIES {
                return;
            }
            let Some(end) = self.input.iter().position(|&b| b == b'\n') else {
                break;
            };
            let line: Vec<u8> = self.input.drain(..=end).collect();
            let line = line.trim_ascii();
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<Request>(line) {
                Ok(Request::State) => self.push(&Response::state(backend.record())),
                Ok(Request::Kill { signal }) => self.push(&kill(backend, signal)),
                Ok(Request::Wait) => self.waiting = true,
                Err(e) => self.push(&Response::invalid(format!("malformed request: {e}"))),
            }
        }
        if self.input.len() > MAX_REQUEST_BYTES {
            // Tell it why, if its socket takes the reply right away, and go.
            self.push(&Response::invalid(format!(
                "request longer than {MAX_REQUEST_BYTES} bytes"
            )));
            self.flush();
            self.broken = true;
        } else if self.eof {
            // A partial line at end of input can never complete.
            self.input.clear();
        }
    }

    fn push(&mut self, response: &Response) {
        match serde_json::to_vec(response) {
            Ok(bytes) => self.output.extend_from_slice(&bytes),
            Err(_) => self.output.extend_from_slice(
                br#"{"error":{"code":"internal","message":"cannot encode the reply","retryable":false}}"#,
            ),
        }
        self.output.push(b'\n');
    }

    fn flush(&mut self) {
        while !self.output.is_empty() && !self.broken {
            match (&self.stream).write(&self.output) {
                Ok(0) => self.broken = true,
                Ok(n) => {
                    self.output.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => self.broken = true,
            }
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// The listening socket and its connections.
pub(crate) struct Server {
    listener: UnixListener,
    path: PathBuf,
    slot: usize,
    clients: Vec<Client>,
}

impl Server {
    /// Binds `path`, replacing a stale socket left by a dead shim. (The
    /// caller has made sure no live shim serves it.)
    pub fn bind(path: &Path) -> io::Result<Server> {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(crate::SocketPath::of(path)?.path())?;
        listener.set_nonblocking(true)?;
        Ok(Server {
            listener,
            path: path.to_owned(),
            slot: usize::MAX,
            clients: Vec::new(),
        })
    }

    /// Adds the listener and every connection to this turn's poll set.
    pub fn register(&mut self, set: &mut PollSet) {
        self.slot = set.add(self.listener.as_fd(), READABLE);
        for client in &mut self.clients {
            client.slot = set.add(client.stream.as_fd(), client.events());
        }
    }

    /// Reads, answers and writes whatever the last poll found ready, then
    /// accepts new connections.
    pub fn service(&mut self, set: &PollSet, backend: &dyn Backend) {
        for client in &mut self.clients {
            let revents = set.revents(client.slot);
            if revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
                client.broken = true;
            } else if revents & READABLE != 0 {
                client.read();
            } else if revents & BROKEN != 0 {
                client.broken = true;
            }
            if !client.broken {
                client.pump(backend);
                client.flush();
            }
        }
        self.clients.retain(|c| !c.done());
        if set.revents(self.slot) & READABLE != 0 {
            self.accept();
        }
    }

    fn accept(&mut self) {
        for _ in 0..ACCEPT_BATCH {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.clients.len() < MAX_CLIENTS && stream.set_nonblocking(true).is_ok() {
                        self.clients.push(Client::new(stream));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // WouldBlock: none left. Anything else (a connection reset
                // before it was accepted, no fds left): try next turn.
                Err(_) => return,
            }
        }
    }

    /// Final replies: answers what can be answered now (pending waits
    /// included, once `backend` has a record), removes the socket, gives
    /// clients until `until` to take their replies, then closes every
    /// connection.
    pub fn close(mut self, backend: &dyn Backend, until: Instant) {
        for client in &mut self.clients {
            client.pump(backend);
            client.flush();
        }
        // No new connections: whoever looks now finds the exit record.
        let _ = std::fs::remove_file(&self.path);
        let mut set = PollSet::default();
        loop {
            self.clients.retain(|c| !c.broken && !c.output.is_empty());
            if self.clients.is_empty() || Instant::now() >= until {
                break;
            }
            set.clear();
            for client in &mut self.clients {
                client.slot = set.add(client.stream.as_fd(), WRITABLE);
            }
            if set.wait(Some(until)).is_err() {
                break;
            }
            for client in &mut self.clients {
                let revents = set.revents(client.slot);
                if revents & WRITABLE != 0 {
                    client.flush();
                } else if revents & BROKEN != 0 {
                    client.broken = true;
                }
            }
        }
    }

    /// Removes the socket without answering anyone (nothing ran).
    pub fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_have_the_documented_shape() {
        let req: Request = serde_json::from_str(r#"{"op":"kill","signal":9}"#).expect("parse");
        assert_eq!(req, Request::Kill { signal: 9 });
        assert!(serde_json::from_str::<Request>(r#"{"op":"explode"}"#).is_err());
        let running = serde_json::to_string(&Response::state(None)).expect("encode");
        assert_eq!(running, r#"{"status":"running","result":null}"#);
        let ok = serde_json::to_string(&Response::Ok { ok: true }).expect("encode");
        assert_eq!(ok, r#"{"ok":true}"#);
        let err = serde_json::to_string(&Response::invalid("x".into())).expect("encode");
        assert_eq!(
            err,
            r#"{"error":{"code":"invalid_argument","message":"x","retryable":false}}"#
        );
    }
}
