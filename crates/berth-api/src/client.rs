//! The typed client of an agent's `/v1` API.

use crate::transport::{ConnectionPool, RawResponse, Transport};
use crate::{
    ClientError, ContainerView, CreateContainer, DeleteQuery, Endpoint, Event, EventsQuery,
    ImportImageQuery, ListQuery, LogsQuery, NodeView, Ping, PruneReport, RemoveImageQuery,
    SignalQuery, WaitQuery,
};
use berth_core::{CgroupMetrics, ImageSummary};
use bytes::Bytes;
use http::Method;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;

/// How long an ordinary request may take; long polls and uploads add
/// their own time on top.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Slack over a long poll's own limit before the client gives up on it.
const LONG_POLL_SLACK: Duration = Duration::from_secs(10);

/// A client of one agent; cheap to clone.
#[derive(Debug, Clone)]
pub struct AgentClient {
    transport: Transport,
}

impl AgentClient {
    /// `token` is sent as `Authorization: Bearer …` (TCP requires one).
    pub fn new(endpoint: Endpoint, token: Option<String>) -> AgentClient {
        AgentClient {
            transport: Transport::new(endpoint, token),
        }
    }

    /// A client that keeps its TCP connections alive in `pool`, shared
    /// with the clients of other agents.
    pub fn pooled(endpoint: Endpoint, token: Option<String>, pool: ConnectionPool) -> AgentClient {
        AgentClient {
            transport: Transport::pooled(endpoint, token, pool),
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        self.transport.endpoint()
    }

    /// `GET /v1/ping`.
    pub async fn ping(&self) -> Result<Ping, ClientError> {
        self.json(Method::GET, "/v1/ping".into(), None, REQUEST_TIMEOUT)
            .await
    }

    /// `POST /v1/containers`: creates and starts a container; answers once
    /// it runs (or failed to start: the view's `state` says which).
    pub async fn create(&self, request: &CreateContainer) -> Result<ContainerView, ClientError> {
        let body = serde_json::to_vec(request).map_err(|e| {
            self.transport
                .protocol(format!("encoding the request: {e}"))
        })?;
        self.json(
            Method::POST,
            "/v1/containers".into(),
            Some((Bytes::from(body), "application/json")),
            REQUEST_TIMEOUT,
        )
        .await
    }

    /// `GET /v1/containers`.
    pub async fn list(&self, query: &ListQuery) -> Result<Vec<ContainerView>, ClientError> {
        let path = self.with_query("/v1/containers", query)?;
        self.json(Method::GET, path, None, REQUEST_TIMEOUT).await
    }

    /// `GET /v1/containers/{id}`.
    pub async fn get(&self, id: &str) -> Result<ContainerView, ClientError> {
        let path = format!("/v1/containers/{}", segment(id));
        self.json(Method::GET, path, None, REQUEST_TIMEOUT).await
    }

    /// `GET /v1/containers/{id}/wait`: answers when the container has
    /// ended or `limit` passed; the view's `state` says which.
    pub async fn wait(&self, id: &str, limit: Duration) -> Result<ContainerView, ClientError> {
        let query = WaitQuery {
            timeout: Some(limit.as_secs_f64()),
        };
        let path = self.with_query(&format!("/v1/containers/{}/wait", segment(id)), &query)?;
        self.json(Method::GET, path, None, limit + LONG_POLL_SLACK)
            .await
    }

    /// `GET /v1/containers/{id}/logs`: the output written so far, from
    /// `offset`.
    pub async fn logs(&self, id: &str, offset: u64) -> Result<Bytes, ClientError> {
        let query = LogsQuery {
            offset,
            follow: false,
        };
        let path = self.with_query(&format!("/v1/containers/{}/logs", segment(id)), &query)?;
        let answer = self.call(Method::GET, path, None, REQUEST_TIMEOUT).await?;
        Ok(answer.body)
    }

    /// `POST /v1/containers/{id}/stop`: `signal` (default TERM), then
    /// SIGKILL after `grace`; answers once the container has ended.
    pub async fn stop(
        &self,
        id: &str,
        signal: Option<&str>,
        grace: Duration,
    ) -> Result<ContainerView, ClientError> {
        let query = SignalQuery {
            signal: signal.map(str::to_owned),
            grace: Some(grace.as_secs_f64()),
        };
        let path = self.with_query(&format!("/v1/containers/{}/stop", segment(id)), &query)?;
        // The agent waits up to 30 s after SIGKILL before it gives up.
        let limit = grace + Duration::from_secs(30) + LONG_POLL_SLACK;
        self.json(Method::POST, path, None, limit).await
    }

    /// `POST /v1/containers/{id}/kill`: sends `signal` (default KILL).
    pub async fn kill(&self, id: &str, signal: Option<&str>) -> Result<(), ClientError> {
        let query = SignalQuery {
            signal: signal.map(str::to_owned),
            grace: None,
        };
        let path = self.with_query(&format!("/v1/containers/{}/kill", segment(id)), &query)?;
        self.call(Method::POST, path, None, REQUEST_TIMEOUT)
            .await
            .map(drop)
    }

    /// `DELETE /v1/containers/{id}`; `force` kills it first if it runs.
    pub async fn remove(&self, id: &str, force: bool) -> Result<(), ClientError> {
        let path = self.with_query(
            &format!("/v1/containers/{}", segment(id)),
            &DeleteQuery { force },
        )?;
        self.call(Method::DELETE, path, None, REQUEST_TIMEOUT)
            .await
            .map(drop)
    }

    /// `GET /v1/containers/{id}/metrics` of a running container.
    pub async fn metrics(&self, id: &str) -> Result<CgroupMetrics, ClientError> {
        let path = format!("/v1/containers/{}/metrics", segment(id));
        self.json(Method::GET, path, None, REQUEST_TIMEOUT).await
    }

    /// `GET /v1/images`.
    pub async fn images(&self) -> Result<Vec<ImageSummary>, ClientError> {
        self.json(Method::GET, "/v1/images".into(), None, REQUEST_TIMEOUT)
            .await
    }

    /// `POST /v1/images`: imports an archive (rootfs tar, `docker save`,
    /// OCI layout; plain, gzip or zstd) as `reference`.
    pub async fn import_image(
        &self,
        reference: &str,
        archive: Bytes,
        limit: Duration,
    ) -> Result<ImageSummary, ClientError> {
        let query = ImportImageQuery {
            reference: reference.to_owned(),
        };
        let path = self.with_query("/v1/images", &query)?;
        self.json(
            Method::POST,
            path,
            Some((archive, "application/octet-stream")),
            limit,
        )
        .await
    }

    /// `DELETE /v1/images/{reference}`.
    pub async fn remove_image(&self, reference: &str, force: bool) -> Result<(), ClientError> {
        let path = self.with_query(
            &format!("/v1/images/{}", segment(reference)),
            &RemoveImageQuery { force },
        )?;
        self.call(Method::DELETE, path, None, REQUEST_TIMEOUT)
            .await
            .map(drop)
    }

    /// `POST /v1/images/prune`: deletes the layers and blobs no image and
    /// no container uses.
    pub async fn prune_images(&self, limit: Duration) -> Result<PruneReport, ClientError> {
        self.json(Method::POST, "/v1/images/prune".into(), None, limit)
            .await
    }

    /// `GET /v1/node`.
    pub async fn node(&self) -> Result<NodeView, ClientError> {
        self.json(Method::GET, "/v1/node".into(), None, REQUEST_TIMEOUT)
            .await
    }

    /// `GET /v1/events`: the events after `since` (all containers, or one).
    pub async fn events(
        &self,
        since: u64,
        container: Option<&str>,
    ) -> Result<Vec<Event>, ClientError> {
        let query = EventsQuery {
            since,
            follow: false,
            container: container.map(str::to_owned),
        };
        let path = self.with_query("/v1/events", &query)?;
        let answer = self.call(Method::GET, path, None, REQUEST_TIMEOUT).await?;
        answer
            .body
            .split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| {
                serde_json::from_slice(line)
                    .map_err(|e| self.transport.protocol(format!("invalid event: {e}")))
            })
            .collect()
    }

    fn with_query(&self, path: &str, query: &impl Serialize) -> Result<String, ClientError> {
        let query = serde_urlencoded::to_string(query)
            .map_err(|e| self.transport.protocol(format!("encoding the query: {e}")))?;
        Ok(if query.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{query}")
        })
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: String,
        body: Option<(Bytes, &'static str)>,
        limit: Duration,
    ) -> Result<T, ClientError> {
        let answer = self.call(method, path, body, limit).await?;
        serde_json::from_slice(&answer.body)
            .map_err(|e| self.transport.protocol(format!("invalid JSON: {e}")))
    }

    /// Sends a request; a 2xx answer, else the agent's error.
    async fn call(
        &self,
        method: Method,
        path: String,
        body: Option<(Bytes, &'static str)>,
        limit: Duration,
    ) -> Result<RawResponse, ClientError> {
        let mut headers = Vec::new();
        let body = match body {
            Some((bytes, content_type)) => {
                headers.push(("content-type", content_type));
                bytes
            }
            None => Bytes::new(),
        };
        let answer = self
            .transport
            .send(method, &path, &headers, body, limit)
            .await?;
        if answer.is_success() {
            Ok(answer)
        } else {
            Err(ClientError::from_answer(
                self.endpoint().to_string(),
                answer.status,
                &answer.body,
            ))
        }
    }
}

/// What a path segment keeps unencoded: RFC 3986's unreserved characters.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes one path segment (an image reference has `/` and `:`).
fn segment(value: &str) -> String {
    utf8_percent_encode(value, PATH_SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(segment("task-1_a.b"), "task-1_a.b");
        assert_eq!(segment("berth/code:1"), "berth%2Fcode%3A1");
    }
}
