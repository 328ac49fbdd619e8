//! A blocking client of the IronWorker v2 API under
//! `{url}/2/projects/{project_id}/`.
//!
//! Server errors (`{"msg": "…"}`) become [`CliError`]s carrying that
//! message; an unreachable server becomes an error naming its URL.

use super::config::{Resolved, ResolvedOperator};
use super::multipart::Multipart;
use crate::CliError;
use berth_core::{ErrorCode, ErrorReport};
use serde_json::Value;
use std::io::Read;
use std::time::Duration;

/// Largest response body read into memory (logs, packages).
const MAX_BODY: u64 = 1 << 30;

pub struct Api {
    agent: ureq::Agent,
    /// The servers to try, in order (`BERTH_URL` may list several, comma
    /// separated: servers sharing one store all answer the same).
    servers: Vec<String>,
    /// The one that answered last, tried first.
    current: std::cell::Cell<usize>,
    /// What every path is under: `/2/projects/{id}`, or nothing.
    prefix: String,
    /// `Authorization` header value.
    authorization: String,
}

/// A request's body.
enum Body<'a> {
    None,
    Json(String),
    Bytes(&'a str, &'a [u8]),
}

impl Api {
    /// A project's client: paths under `/2/projects/{project_id}`.
    pub fn new(config: &Resolved) -> Api {
        Api::with(
            &config.url,
            format!("/2/projects/{}", encode(&config.project_id)),
            format!("OAuth {}", config.token),
        )
    }

    /// An operator's client: paths from the server's root (`/v1/nodes`).
    pub fn operator(config: &ResolvedOperator) -> Api {
        Api::with(
            &config.url,
            String::new(),
            format!("Bearer {}", config.token),
        )
    }

    fn with(urls: &str, prefix: String, authorization: String) -> Api {
        Api {
            agent: http_agent(),
            servers: urls.split(',').map(str::to_owned).collect(),
            current: std::cell::Cell::new(0),
            prefix,
            authorization,
        }
    }

    /// The server talked to last (for messages).
    fn server(&self) -> &str {
        self.servers
            .get(self.current.get())
            .map_or("", String::as_str)
    }

    /// Sends the request to the current server, moving on to the next when
    /// one cannot be reached: always when the connection failed (nothing was
    /// sent), and for a GET on any transport error (asking again changes
    /// nothing). Other failures are the answer.
    fn send(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, String)],
        body: Body<'_>,
    ) -> Result<ureq::Response, CliError> {
        let first = self.current.get();
        let mut tried = 0;
        loop {
            let index = (first + tried) % self.servers.len().max(1);
            self.current.set(index);
            let mut req = self
                .agent
                .request(method, &format!("{}{}{path}", self.server(), self.prefix))
                .set("Authorization", &self.authorization)
                .set("Accept", "application/json");
            for (key, value) in query {
                req = req.query(key, value);
            }
            let result = match &body {
                Body::None => req.call(),
                Body::Json(json) => req
                    .set("Content-Type", "application/json")
                    .send_string(json),
                Body::Bytes(content_type, bytes) => {
                    req.set("Content-Type", content_type).send_bytes(bytes)
                }
            };
            match result {
                Ok(response) => return Ok(response),
                Err(ureq::Error::Status(status, response)) => {
                    return Err(self.status_error(status, response))
                }
                Err(ureq::Error::Transport(transport)) => {
                    use ureq::ErrorKind;
                    let undelivered = matches!(
                        transport.kind(),
                        ErrorKind::ConnectionFailed | ErrorKind::Dns
                    );
                    tried += 1;
                    if tried >= self.servers.len() || !(undelivered || method == "GET") {
                        return Err(self.transport_error(&transport));
                    }
                }
            }
        }
    }

    pub fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, CliError> {
        let response = self.send("GET", path, query, Body::None)?;
        self.json(response)
    }

    pub fn get_bytes(&self, path: &str, query: &[(&str, String)]) -> Result<Vec<u8>, CliError> {
        let response = self.send("GET", path, query, Body::None)?;
        self.bytes(response)
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        let response = self.send("POST", path, &[], Body::Json(body.to_string()))?;
        self.json(response)
    }

    pub fn put(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        let response = self.send("PUT", path, &[], Body::Json(body.to_string()))?;
        self.json(response)
    }

    pub fn delete(&self, path: &str) -> Result<Value, CliError> {
        let response = self.send("DELETE", path, &[], Body::None)?;
        self.json(response)
    }

    pub fn post_multipart(&self, path: &str, form: Multipart) -> Result<Value, CliError> {
        let (content_type, body) = form.finish();
        let response = self.send("POST", path, &[], Body::Bytes(&content_type, &body))?;
        self.json(response)
    }

    fn status_error(&self, status: u16, response: ureq::Response) -> CliError {
        let body = self.bytes(response).unwrap_or_default();
        // The task API answers {"msg"}, the fleet API {"error": {"message"}}.
        let msg = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| {
                v.get("msg")
                    .or_else(|| v.pointer("/error/message"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_owned());
        let code = match status {
            400 | 422 => ErrorCode::InvalidArgument,
            401 | 403 => ErrorCode::Unauthorized,
            404 => ErrorCode::NotFound,
            409 => ErrorCode::InvalidState,
            413 => ErrorCode::PayloadTooLarge,
            502..=504 => ErrorCode::HostIo,
            _ => ErrorCode::Internal,
        };
        let msg = match (status, msg.is_empty()) {
            (401 | 403, _) if self.authorization.starts_with("Bearer") => format!(
                "the server refused the operator token (HTTP {status}{}): check --operator-token / BERTH_OPERATOR_TOKEN",
                if msg.is_empty() { String::new() } else { format!(": {msg}") }
            ),
            (401 | 403, _) => format!(
                "the server refused the token for project {} (HTTP {status}{}): check --token / BERTH_TOKEN",
                self.project_hint(),
                if msg.is_empty() { String::new() } else { format!(": {msg}") }
            ),
            (_, true) => format!("the server answered HTTP {status}"),
            (_, false) => format!("{msg} (HTTP {status})"),
        };
        CliError(ErrorReport::new(code, msg))
    }

    fn transport_error(&self, transport: &ureq::Transport) -> CliError {
        use ureq::ErrorKind;
        let detail = std::error::Error::source(transport)
            .map(ToString::to_string)
            .or_else(|| transport.message().map(str::to_owned))
            .unwrap_or_else(|| transport.kind().to_string());
        let message = match transport.kind() {
            ErrorKind::ConnectionFailed | ErrorKind::Dns => format!(
                "cannot reach the berth server at {} ({detail}): is it running? \
                 Start one with `berth up`, or point --url / BERTH_URL at yours",
                self.servers.join(" nor ")
            ),
            _ => format!(
                "talking to the berth server at {}: {transport}",
                self.server()
            ),
        };
        CliError(ErrorReport::new(ErrorCode::HostIo, message))
    }

    fn project_hint(&self) -> &str {
        self.prefix.rsplit('/').next().unwrap_or_default()
    }

    fn bytes(&self, response: ureq::Response) -> Result<Vec<u8>, CliError> {
        let mut body = Vec::new();
        response
            .into_reader()
            .take(MAX_BODY)
            .read_to_end(&mut body)
            .map_err(|e| {
                CliError(ErrorReport::new(
                    ErrorCode::HostIo,
                    format!("reading the answer of {}: {e}", self.server()),
                ))
            })?;
        Ok(body)
    }

    fn json(&self, response: ureq::Response) -> Result<Value, CliError> {
        let body = self.bytes(response)?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&body).map_err(|e| {
            CliError(ErrorReport::new(
                ErrorCode::Internal,
                format!(
                    "the server at {} answered with invalid JSON: {e}",
                    self.server()
                ),
            ))
        })
    }
}

fn http_agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(10))
        .timeout_read(Duration::from_secs(120))
        .timeout_write(Duration::from_secs(300))
        .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// What a path segment keeps unencoded: RFC 3986's unreserved characters.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes a path segment (ids are hex, names may be anything).
pub fn encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, PATH_SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn encodes_path_segments() {
        assert_eq!(super::encode("a b/c"), "a%20b%2Fc");
        assert_eq!(super::encode("5f0c-_.~"), "5f0c-_.~");
    }
}
