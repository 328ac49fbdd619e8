//! A small HTTP/1 client for one agent's `/v1` API, over its unix socket or
//! TCP (with the bearer token).
//!
//! One connection per request: on a unix socket a connect costs tens of
//! microseconds, and it keeps a dead or restarted agent from poisoning a
//! pooled connection.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::{TcpStream, UnixStream};

/// Where an agent listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEndpoint {
    Unix(PathBuf),
    Tcp(String),
}

impl AgentEndpoint {
    /// `unix:///path/agent.sock`, `unix:/path`, or `http://host:port`.
    pub fn parse(url: &str) -> Result<AgentEndpoint, String> {
        if let Some(path) = url
            .strip_prefix("unix://")
            .or_else(|| url.strip_prefix("unix:"))
        {
            if !path.starts_with('/') {
                return Err(format!(
                    "agent URL {url:?}: the socket path must be absolute"
                ));
            }
            return Ok(AgentEndpoint::Unix(PathBuf::from(path)));
        }
        if let Some(rest) = url.strip_prefix("http://") {
            let authority = rest.trim_end_matches('/');
            if authority.is_empty() || authority.contains('/') {
                return Err(format!("agent URL {url:?}: expected http://HOST:PORT"));
            }
            return Ok(AgentEndpoint::Tcp(authority.to_owned()));
        }
        Err(format!(
            "agent URL {url:?}: expected unix:///PATH/agent.sock or http://HOST:PORT"
        ))
    }
}

impl std::fmt::Display for AgentEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AgentEndpoint::Unix(path) => write!(f, "unix://{}", path.display()),
            AgentEndpoint::Tcp(authority) => write!(f, "http://{authority}"),
        }
    }
}

/// What went wrong talking to an agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// No answer (connection refused, reset, timed out): the agent may be
    /// restarting or gone.
    #[error("agent {endpoint} unreachable: {message}")]
    Unreachable { endpoint: String, message: String },
    /// The agent answered with an error.
    #[error("agent {endpoint}: {status}: [{code}] {message}")]
    Api {
        endpoint: String,
        status: StatusCode,
        code: String,
        message: String,
        retryable: bool,
    },
    /// The agent answered something this server cannot read.
    #[error("agent {endpoint}: unexpected answer: {message}")]
    Protocol { endpoint: String, message: String },
}

impl AgentError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, AgentError::Api { status, .. } if *status == StatusCode::NOT_FOUND)
    }

    /// The agent's stable error code, when it answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            AgentError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether trying again (later, or elsewhere) may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            AgentError::Unreachable { .. } => true,
            AgentError::Api { retryable, .. } => *retryable,
            AgentError::Protocol { .. } => true,
        }
    }
}

/// A client of one agent.
#[derive(Debug, Clone)]
pub struct AgentClient {
    endpoint: AgentEndpoint,
    token: Option<String>,
    /// Bound on one request (long polls pass their own).
    timeout: Duration,
}

/// A body to send.
pub enum Body {
    Empty,
    Json(serde_json::Value),
    Bytes {
        data: Bytes,
        content_type: &'static str,
    },
}

impl AgentClient {
    pub fn new(endpoint: AgentEndpoint, token: Option<String>) -> AgentClient {
        AgentClient {
            endpoint,
            token,
            timeout: Duration::from_secs(60),
        }
    }

    pub fn endpoint(&self) -> &AgentEndpoint {
        &self.endpoint
    }

    /// GET and decode JSON.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, AgentError> {
        let bytes = self.request(Method::GET, path, Body::Empty, None).await?;
        self.decode(&bytes)
    }

    /// Sends a request and decodes the JSON answer.
    pub async fn send_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Body,
        timeout: Option<Duration>,
    ) -> Result<T, AgentError> {
        let bytes = self.request(method, path, body, timeout).await?;
        self.decode(&bytes)
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, AgentError> {
        serde_json::from_slice(bytes).map_err(|e| AgentError::Protocol {
            endpoint: self.endpoint.to_string(),
            message: format!("invalid JSON: {e}"),
        })
    }

    /// Sends a request; a 2xx answer's body, else the agent's error.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Body,
        timeout: Option<Duration>,
    ) -> Result<Bytes, AgentError> {
        let limit = timeout.unwrap_or(self.timeout);
        match tokio::time::timeout(limit, self.exchange(method, path, body)).await {
            Ok(result) => result,
            Err(_) => Err(self.unreachable(format!("no answer within {limit:?}"))),
        }
    }

    async fn exchange(&self, method: Method, path: &str, body: Body) -> Result<Bytes, AgentError> {
        let (content_type, payload) = match body {
            Body::Empty => (None, Bytes::new()),
            Body::Json(value) => (
                Some("application/json"),
                Bytes::from(
                    serde_json::to_vec(&value).map_err(|e| AgentError::Protocol {
                        endpoint: self.endpoint.to_string(),
                        message: format!("encoding the request: {e}"),
                    })?,
                ),
            ),
            Body::Bytes { data, content_type } => (Some(content_type), data),
        };
        let host = match &self.endpoint {
            AgentEndpoint::Unix(_) => "agent",
            AgentEndpoint::Tcp(authority) => authority.as_str(),
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, host);
        if let Some(content_type) = content_type {
            builder = builder.header(hyper::header::CONTENT_TYPE, content_type);
        }
        if let Some(token) = &self.token {
            builder = builder.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = builder
            .body(Full::new(payload))
            .map_err(|e| AgentError::Protocol {
                endpoint: self.endpoint.to_string(),
                message: format!("building the request: {e}"),
            })?;
        let response = match &self.endpoint {
            AgentEndpoint::Unix(path) => {
                let stream = UnixStream::connect(path)
                    .await
                    .map_err(|e| self.unreachable(e.to_string()))?;
                self.send(stream, request).await?
            }
            AgentEndpoint::Tcp(authority) => {
                let stream = TcpStream::connect(authority.as_str())
                    .await
                    .map_err(|e| self.unreachable(e.to_string()))?;
                let _ = stream.set_nodelay(true);
                self.send(stream, request).await?
            }
        };
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.unreachable(format!("reading the answer: {e}")))?
            .to_bytes();
        if status.is_success() {
            return Ok(bytes);
        }
        Err(self.api_error(status, &bytes))
    }

    async fn send<S>(
        &self,
        stream: S,
        request: Request<Full<Bytes>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, AgentError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.unreachable(e.to_string()))?;
        tokio::spawn(async move {
            // Ends when the response has been read or the agent hangs up.
            let _ = connection.await;
        });
        sender
            .send_request(request)
            .await
            .map_err(|e| self.unreachable(e.to_string()))
    }

    fn unreachable(&self, message: String) -> AgentError {
        AgentError::Unreachable {
            endpoint: self.endpoint.to_string(),
            message,
        }
    }

    fn api_error(&self, status: StatusCode, body: &[u8]) -> AgentError {
        #[derive(serde::Deserialize)]
        struct Envelope {
            error: Report,
        }
        #[derive(serde::Deserialize)]
        struct Report {
            code: String,
            message: String,
            #[serde(default)]
            retryable: bool,
        }
        match serde_json::from_slice::<Envelope>(body) {
            Ok(Envelope { error }) => AgentError::Api {
                endpoint: self.endpoint.to_string(),
                status,
                code: error.code,
                message: error.message,
                retryable: error.retryable,
            },
            Err(_) => AgentError::Api {
                endpoint: self.endpoint.to_string(),
                status,
                code: "internal".to_owned(),
                message: String::from_utf8_lossy(body).into_owned(),
                retryable: status.is_server_error(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_agent_urls() {
        assert_eq!(
            AgentEndpoint::parse("unix:///var/lib/berth/agent.sock").unwrap(),
            AgentEndpoint::Unix("/var/lib/berth/agent.sock".into())
        );
        assert_eq!(
            AgentEndpoint::parse("http://10.0.0.2:7420/").unwrap(),
            AgentEndpoint::Tcp("10.0.0.2:7420".into())
        );
        for bad in [
            "unix://relative",
            "https://x:1",
            "10.0.0.2:7420",
            "http://h/x",
        ] {
            assert!(AgentEndpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
