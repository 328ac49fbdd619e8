//! Raw HTTP/1.1 to an agent over its unix socket or TCP: the one HTTP
//! client berth uses for the agent's API (the typed [`AgentClient`]
//! builds on it; tests use it through [`crate::blocking`] to send what a
//! typed client never would).
//!
//! On a unix socket, one connection per request: a connect costs tens of
//! microseconds there. Over TCP a connect, its teardown and the agent's
//! accept cost more than the request itself (45% of a server's CPU in the
//! fleet-scale run went to them), so a transport may share a
//! [`ConnectionPool`] of kept-alive connections; see there how a dead or
//! restarted agent is kept from poisoning it.
//!
//! [`AgentClient`]: crate::AgentClient

use crate::{ClientError, Endpoint};
use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// An answer, whole.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl RawResponse {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// How long a connection may wait in a pool for its next request: well
/// under the 30 s after which berth's servers close a kept-alive
/// connection (berth-http's header timeout), so that a request rarely
/// meets a connection the agent is closing.
const POOL_IDLE_FOR: Duration = Duration::from_secs(10);

/// Idle connections kept for one address. All hollow hosts of a process
/// share one address, so this is the concurrency a pool sustains without
/// new connects; a real agent never needs as many.
const POOL_IDLE_PER_ADDRESS: usize = 64;

/// Idle connections kept in all: a bound on the file descriptors a pool
/// holds when nothing is asked of a fleet of thousands of hosts.
const POOL_IDLE_TOTAL: usize = 2048;

/// Kept-alive TCP connections, shared by the transports of one process
/// (the server's clients of every host); cheap to clone.
///
/// A connection goes back to the pool only once its answer was read whole
/// and the agent did not close it; it is dropped after [`POOL_IDLE_FOR`]
/// unused. A request that meets a pooled connection the agent has closed
/// meanwhile (it restarted, or closed it idle) is sent again on a new
/// connection, but only when hyper reports that none of it was sent, so
/// nothing is ever sent twice.
#[derive(Clone, Default)]
pub struct ConnectionPool {
    idle: Arc<Mutex<IdleConnections>>,
}

#[derive(Default)]
struct IdleConnections {
    by_address: HashMap<String, Vec<IdleConnection>>,
    total: usize,
}

struct IdleConnection {
    sender: SendRequest<Full<Bytes>>,
    since: Instant,
}

impl std::fmt::Debug for ConnectionPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionPool")
            .field("idle", &self.idle_count())
            .finish()
    }
}

impl ConnectionPool {
    pub fn new() -> ConnectionPool {
        ConnectionPool::default()
    }

    /// Idle connections held now (all addresses).
    pub fn idle_count(&self) -> usize {
        self.lock().total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IdleConnections> {
        // A panic while holding the lock leaves the lists consistent (each
        // change is one push or pop), so a poisoned lock is still usable.
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The most recently used connection to `address` still open, if any.
    fn take(&self, address: &str) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.lock();
        let IdleConnections { by_address, total } = &mut *idle;
        let list = by_address.get_mut(address)?;
        let mut found = None;
        while let Some(connection) = list.pop() {
            *total -= 1;
            if connection.since.elapsed() < POOL_IDLE_FOR && !connection.sender.is_closed() {
                found = Some(connection.sender);
                break;
            }
        }
        if list.is_empty() {
            by_address.remove(address);
        }
        found
    }

    /// Keeps `sender` for the next request to `address`, unless it is
    /// closed or the pool is full; drops the address's expired ones.
    fn give_back(&self, address: &str, sender: SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.lock();
        let IdleConnections { by_address, total } = &mut *idle;
        let list = by_address.entry(address.to_owned()).or_default();
        // Oldest first: expired ones are at the front.
        let expired = list
            .iter()
            .take_while(|c| c.since.elapsed() >= POOL_IDLE_FOR)
            .count();
        list.drain(..expired);
        *total -= expired;
        if list.len() < POOL_IDLE_PER_ADDRESS && *total < POOL_IDLE_TOTAL {
            list.push(IdleConnection {
                sender,
                since: Instant::now(),
            });
            *total += 1;
        }
        if list.is_empty() {
            by_address.remove(address);
        }
    }
}

/// Sends requests to one agent; cheap to clone.
#[derive(Debug, Clone)]
pub struct Transport {
    endpoint: Endpoint,
    /// Sent as `Authorization: Bearer …` (TCP listeners require it).
    token: Option<String>,
    /// Where TCP connections are kept alive between requests (none: one
    /// connection per request).
    pool: Option<ConnectionPool>,
}

impl Transport {
    /// A transport that opens a connection per request.
    pub fn new(endpoint: Endpoint, token: Option<String>) -> Transport {
        Transport {
            endpoint,
            token,
            pool: None,
        }
    }

    /// A transport that keeps TCP connections alive in `pool` (a unix
    /// socket still gets a connection per request).
    pub fn pooled(endpoint: Endpoint, token: Option<String>, pool: ConnectionPool) -> Transport {
        Transport {
            endpoint,
            token,
            pool: Some(pool),
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Sends one request and reads the whole answer within `timeout`.
    /// Only the failure to get an answer is an error here: a 4xx or 5xx is
    /// a [`RawResponse`] like any other.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        timeout: Duration,
    ) -> Result<RawResponse, ClientError> {
        match tokio::time::timeout(timeout, self.exchange(method, path, headers, body)).await {
            Ok(answer) => answer,
            Err(_) => Err(self.unreachable(format!("no answer within {timeout:?}"))),
        }
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<RawResponse, ClientError> {
        let host = match &self.endpoint {
            Endpoint::Unix(_) => "agent",
            Endpoint::Tcp(authority) => authority.as_str(),
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, host);
        let mut has_authorization = false;
        for (name, value) in headers {
            has_authorization |= name.eq_ignore_ascii_case("authorization");
            builder = builder.header(*name, *value);
        }
        if let (Some(token), false) = (&self.token, has_authorization) {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = builder
            .body(Full::new(body))
            .map_err(|e| self.protocol(format!("building the request: {e}")))?;
        let (response, reusable) = match &self.endpoint {
            Endpoint::Unix(path) => {
                let stream = UnixStream::connect(path)
                    .await
                    .map_err(|e| self.unreachable(e.to_string()))?;
                let mut sender = self.handshake(stream).await?;
                let response = sender
                    .send_request(request)
                    .await
                    .map_err(|e| self.unreachable(e.to_string()))?;
                (response, None)
            }
            Endpoint::Tcp(authority) => self.send_tcp(authority, request).await?,
        };
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.unreachable(format!("reading the answer: {e}")))?
            .to_bytes();
        // The answer was read whole: the connection is free for another.
        if let (Some(pool), Some(sender), Endpoint::Tcp(authority)) =
            (&self.pool, reusable, &self.endpoint)
        {
            pool.give_back(authority, sender);
        }
        Ok(RawResponse {
            status,
            headers,
            body,
        })
    }

    /// Sends `request` over TCP: on a pooled connection when there is one
    /// still open, else on a new one. Returns the connection with the
    /// answer when it may be pooled once the answer is read.
    async fn send_tcp(
        &self,
        authority: &str,
        mut request: Request<Full<Bytes>>,
    ) -> Result<
        (
            http::Response<hyper::body::Incoming>,
            Option<SendRequest<Full<Bytes>>>,
        ),
        ClientError,
    > {
        if let Some(pool) = &self.pool {
            while let Some(mut sender) = pool.take(authority) {
                if sender.ready().await.is_err() {
                    continue;
                }
                match sender.try_send_request(request).await {
                    Ok(response) => return Ok((response, Some(sender))),
                    // Not sent: the agent closed this connection first.
                    Err(mut e) => match e.take_message() {
                        Some(unsent) => request = unsent,
                        None => return Err(self.unreachable(e.into_error().to_string())),
                    },
                }
            }
        }
        let stream = TcpStream::connect(authority)
            .await
            .map_err(|e| self.unreachable(e.to_string()))?;
        // Small requests and answers: send them without delay.
        let _ = stream.set_nodelay(true);
        let mut sender = self.handshake(stream).await?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.unreachable(e.to_string()))?;
        Ok((response, self.pool.is_some().then_some(sender)))
    }

    /// Starts HTTP/1 on a new connection; its driver runs until the agent
    /// hangs up or every handle on it is dropped.
    async fn handshake<S>(&self, stream: S) -> Result<SendRequest<Full<Bytes>>, ClientError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let stream = EarlyAnswerTolerant {
            inner: stream,
            peer_stopped_reading: false,
        };
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.unreachable(e.to_string()))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    pub(crate) fn unreachable(&self, message: String) -> ClientError {
        ClientError::Unreachable {
            endpoint: self.endpoint.to_string(),
            message,
        }
    }

    pub(crate) fn protocol(&self, message: String) -> ClientError {
        ClientError::Protocol {
            endpoint: self.endpoint.to_string(),
            message,
        }
    }
}

/// A connection that keeps reading after the peer stopped reading.
///
/// HTTP lets a server answer before it has read the whole request (413 for
/// a body over its limit, 401 before an upload) and then close. Writing the
/// rest of the body then fails (EPIPE, ECONNRESET), and hyper's client
/// reports that write error instead of the answer already waiting to be
/// read. Here the rest of the request is discarded instead, so the answer
/// is read as curl would; if no answer comes, reading ends the exchange
/// with an error as before.
struct EarlyAnswerTolerant<S> {
    inner: S,
    peer_stopped_reading: bool,
}

impl<S> EarlyAnswerTolerant<S> {
    /// Turns "the peer stopped reading" into "written"; other results pass.
    fn absorb(&mut self, result: Poll<io::Result<usize>>, len: usize) -> Poll<io::Result<usize>> {
        match result {
            Poll::Ready(Err(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                ) =>
            {
                self.peer_stopped_reading = true;
                Poll::Ready(Ok(len))
            }
            other => other,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for EarlyAnswerTolerant<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for EarlyAnswerTolerant<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.peer_stopped_reading {
            return Poll::Ready(Ok(buf.len()));
        }
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.absorb(result, buf.len())
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len = bufs.iter().map(|b| b.len()).sum();
        if self.peer_stopped_reading {
            return Poll::Ready(Ok(len));
        }
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.absorb(result, len)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.peer_stopped_reading {
            return Poll::Ready(Ok(()));
        }
        let result = Pin::new(&mut self.inner).poll_flush(cx).map_ok(|()| 0);
        self.absorb(result, 0).map_ok(drop)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.peer_stopped_reading {
            return Poll::Ready(Ok(()));
        }
        let result = Pin::new(&mut self.inner).poll_shutdown(cx).map_ok(|()| 0);
        self.absorb(result, 0).map_ok(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers 413 after reading only the head, then closes:
    /// the client gets the 413, not a write error, however large the body.
    #[tokio::test]
    async fn an_answer_before_the_whole_body_is_read_is_returned() {
        let dir = std::env::temp_dir().join(format!(
            "berth-api-early-{}-{}",
            std::process::id(),
            line!()
        ));
        let _ = std::fs::remove_file(&dir);
        let listener = tokio::net::UnixListener::bind(&dir).expect("bind");
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.expect("accept");
            let mut head = [0u8; 1024];
            let _ = conn.read(&mut head).await;
            let answer = "HTTP/1.1 413 Payload Too Large\r\ncontent-type: application/json\r\n\
                          content-length: 13\r\nconnection: close\r\n\r\n{\"too\":\"big\"}";
            conn.write_all(answer.as_bytes()).await.expect("answer");
            // Closing with most of the body unread.
        });
        let transport = Transport::new(Endpoint::Unix(dir.clone()), None);
        let body = Bytes::from(vec![b'x'; 8 << 20]);
        let answer = transport
            .send(
                Method::POST,
                "/v1/containers",
                &[],
                body,
                Duration::from_secs(20),
            )
            .await
            .expect("the early answer");
        assert_eq!(answer.status, 413);
        assert_eq!(&answer.body[..], br#"{"too":"big"}"#);
        server.await.expect("server");
        let _ = std::fs::remove_file(&dir);
    }

    /// A TCP server that answers `200 ok` to every GET head it reads;
    /// after `answers_per_connection` answers it closes the connection.
    /// Returns its address and its count of accepted connections.
    async fn counting_server(
        answers_per_connection: usize,
    ) -> (
        std::net::SocketAddr,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let accepted = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut answered = 0;
                    let mut buf = [0u8; 4096];
                    while answered < answers_per_connection {
                        let Ok(n) = conn.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            let answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if conn.write_all(answer.as_bytes()).await.is_err() {
                                return;
                            }
                            answered += 1;
                        }
                    }
                    // Closing, as a server does with an idle connection.
                });
            }
        });
        (address, accepted)
    }

    async fn get(transport: &Transport) -> RawResponse {
        transport
            .send(
                Method::GET,
                "/v1/ping",
                &[],
                Bytes::new(),
                Duration::from_secs(10),
            )
            .await
            .expect("an answer")
    }

    /// Pooled requests to one address share one connection, whichever
    /// transport (agent) they go through.
    #[tokio::test]
    async fn a_pool_reuses_its_connections() {
        let (address, accepted) = counting_server(usize::MAX).await;
        let pool = ConnectionPool::new();
        let first = Transport::pooled(
            Endpoint::Tcp(address.to_string()),
            Some("a".into()),
            pool.clone(),
        );
        let second = Transport::pooled(
            Endpoint::Tcp(address.to_string()),
            Some("b".into()),
            pool.clone(),
        );
        for transport in [&first, &second, &first] {
            assert_eq!(&get(transport).await.body[..], b"ok");
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
        // Without a pool, a connection per request.
        let plain = Transport::new(Endpoint::Tcp(address.to_string()), None);
        get(&plain).await;
        get(&plain).await;
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    /// A connection the server closed while it sat in the pool is not
    /// used: the request goes out on a new one and is answered.
    #[tokio::test]
    async fn a_connection_closed_by_the_server_is_replaced() {
        let (address, accepted) = counting_server(1).await;
        let transport = Transport::pooled(
            Endpoint::Tcp(address.to_string()),
            None,
            ConnectionPool::new(),
        );
        for round in 1..=3 {
            assert_eq!(&get(&transport).await.body[..], b"ok", "round {round}");
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
    }
}
