//! The same transport for callers without an async runtime (tests, simple
//! tools): each call runs on a private single-threaded tokio runtime.

use crate::{ClientError, Endpoint, RawResponse};
use bytes::Bytes;
use http::Method;
use std::time::Duration;

/// A blocking [`crate::Transport`].
#[derive(Debug)]
pub struct Transport {
    inner: crate::Transport,
    runtime: tokio::runtime::Runtime,
}

impl Transport {
    pub fn new(endpoint: Endpoint, token: Option<String>) -> std::io::Result<Transport> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        Ok(Transport {
            inner: crate::Transport::new(endpoint, token),
            runtime,
        })
    }

    pub fn endpoint(&self) -> &Endpoint {
        self.inner.endpoint()
    }

    /// Sends one request and reads the whole answer within `timeout`;
    /// `method` is a name such as `GET`.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<RawResponse, ClientError> {
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|e| self.inner.protocol(format!("method {method:?}: {e}")))?;
        self.runtime
            .block_on(self.inner.send(method, path, headers, body.into(), timeout))
    }
}
