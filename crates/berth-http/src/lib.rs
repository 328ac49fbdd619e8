//! berth-http: how every berth daemon serves HTTP/1 (the task API of
//! berth-server, the agent's API on its unix socket and TCP port).
//!
//! It owns the limits a server facing untrusted clients must keep, so that
//! idle or slow clients cannot take the process's file descriptors or
//! memory away from its real work (the dispatcher's store and agent
//! connections, the agent's shims):
//! - a cap on open connections: at the cap the server stops accepting, so
//!   further clients wait in the kernel's listen backlog and hold no file
//!   descriptor of ours until a connection closes;
//! - a deadline for each request head, counted from the moment the server
//!   waits for it: a new connection, or a kept-alive one between requests,
//!   that does not send a complete head in time is closed;
//! - an idle timeout while the server waits on the client: between frames
//!   of a request body, and for the client to take the response's bytes;
//! - a graceful shutdown (no new connections, requests in flight finish).
//!
//! It knows nothing of routes, handlers or authentication.

mod limits;
mod stall;

pub use limits::{ensure_file_headroom, FileLimitError, FD_RESERVE};

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tower_http::timeout::RequestBodyTimeout;

/// The limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once on this listener.
    pub max_connections: usize,
    /// How long a client may take to send a request head, from the moment
    /// the server waits for one (a new connection, or a kept-alive one
    /// after its last response).
    pub header_timeout: Duration,
    /// How long the server waits on a client that has stopped sending a
    /// request body or stopped reading a response.
    pub idle_timeout: Duration,
}

impl Limits {
    /// 1024 connections, 30 s for a request head, 60 s idle. The header
    /// timeout also closes kept-alive connections idle that long: long
    /// enough that clients which pool connections rarely race its close.
    pub const DEFAULT: Limits = Limits {
        max_connections: 1024,
        header_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(60),
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// A listening socket [`serve`] accepts connections from.
pub trait Listener: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&self) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

impl Listener for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&self) -> io::Result<Self::Io> {
        let (stream, _) = tokio::net::TcpListener::accept(self).await?;
        // Responses are written whole; waiting for an ACK before sending
        // the last segment only adds latency.
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

impl Listener for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&self) -> io::Result<Self::Io> {
        let (stream, _) = tokio::net::UnixListener::accept(self).await?;
        Ok(stream)
    }
}

/// How long to pause accepting after the process ran out of file
/// descriptors or memory: the connections already open keep working, and
/// closing ones make room.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How often "connection limit reached" is logged while it lasts.
const CAP_WARNING_EVERY: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` under `limits` until `shutdown`
/// completes; then accepts nothing more and waits for the requests in
/// flight (callers that must not wait long bound the returned future).
pub async fn serve<L: Listener>(
    listener: L,
    router: axum::Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let service = TowerToHyperService::new(RequestBodyTimeout::new(router, limits.idle_timeout));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let graceful = GracefulShutdown::new();
    let mut last_cap_warning: Option<tokio::time::Instant> = None;
    tokio::pin!(shutdown);
    loop {
        if slots.available_permits() == 0
            && last_cap_warning.is_none_or(|at| at.elapsed() >= CAP_WARNING_EVERY)
        {
            last_cap_warning = Some(tokio::time::Instant::now());
            tracing::warn!(
                max_connections = limits.max_connections,
                "connection limit reached: new clients wait until a connection closes"
            );
        }
        let slot = tokio::select! {
            biased;
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                // The semaphore is never closed.
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok(stream) => stream,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                tracing::warn!("accepting a connection: {e}; pausing {ACCEPT_BACKOFF:?}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let io = TokioIo::new(stall::WriteStallTimeout::new(stream, limits.idle_timeout));
        let connection = graceful.watch(http.serve_connection(io, service.clone()));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                // Timeouts and clients that went away: theirs to notice.
                tracing::debug!("connection ended: {e}");
            }
            drop(slot);
        });
    }
    // No new connections from here on.
    drop(listener);
    graceful.shutdown().await;
}

/// Errors of one incoming connection (it was reset before we took it), as
/// opposed to errors of the listener or the process.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
