//! Raw HTTP/1.1 to an agent over its unix socket or TCP: the one HTTP
//! client berth uses for the agent's API (the typed [`AgentClient`]
//! builds on it; tests use it through [`crate::blocking`] to send what a
//! typed client never would).
//!
//! One connection per request: on a unix socket a connect costs tens of
//! microseconds, and it keeps a dead or restarted agent from poisoning a
//! pooled connection.
//!
//! [`AgentClient`]: crate::AgentClient

use crate::{ClientError, Endpoint};
use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
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

/// Sends requests to one agent; cheap to clone.
#[derive(Debug, Clone)]
pub struct Transport {
    endpoint: Endpoint,
    /// Sent as `Authorization: Bearer …` (TCP listeners require it).
    token: Option<String>,
}

impl Transport {
    pub fn new(endpoint: Endpoint, token: Option<String>) -> Transport {
        Transport { endpoint, token }
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
        let response = match &self.endpoint {
            Endpoint::Unix(path) => {
                let stream = UnixStream::connect(path)
                    .await
                    .map_err(|e| self.unreachable(e.to_string()))?;
                self.round_trip(stream, request).await?
            }
            Endpoint::Tcp(authority) => {
                let stream = TcpStream::connect(authority.as_str())
                    .await
                    .map_err(|e| self.unreachable(e.to_string()))?;
                // Small requests and answers: send them without delay.
                let _ = stream.set_nodelay(true);
                self.round_trip(stream, request).await?
            }
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
        Ok(RawResponse {
            status,
            headers,
            body,
        })
    }

    async fn round_trip<S>(
        &self,
        stream: S,
        request: Request<Full<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, ClientError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let stream = EarlyAnswerTolerant {
            inner: stream,
            peer_stopped_reading: false,
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.unreachable(e.to_string()))?;
        tokio::spawn(async move {
            // Ends when the answer has been read or the agent hangs up.
            let _ = connection.await;
        });
        sender
            .send_request(request)
            .await
            .map_err(|e| self.unreachable(e.to_string()))
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
}
