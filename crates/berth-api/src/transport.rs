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
use std::time::Duration;
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
