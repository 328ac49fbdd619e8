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
    server: String,
    base: String,
    /// `Authorization` header value.
    authorization: String,
}

impl Api {
    /// A project's client: paths under `/2/projects/{project_id}`.
    pub fn new(config: &Resolved) -> Api {
        Api {
            agent: http_agent(),
            server: config.url.clone(),
            base: format!("{}/2/projects/{}", config.url, encode(&config.project_id)),
            authorization: format!("OAuth {}", config.token),
        }
    }

    /// An operator's client: paths from the server's root (`/v1/nodes`).
    pub fn operator(config: &ResolvedOperator) -> Api {
        Api {
            agent: http_agent(),
            server: config.url.clone(),
            base: config.url.clone(),
            authorization: format!("Bearer {}", config.token),
        }
    }

    fn request(&self, method: &str, path: &str, query: &[(&str, String)]) -> ureq::Request {
        let mut req = self
            .agent
            .request(method, &format!("{}{path}", self.base))
            .set("Authorization", &self.authorization)
            .set("Accept", "application/json");
        for (key, value) in query {
            req = req.query(key, value);
        }
        req
    }

    pub fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, CliError> {
        let response = self.call(self.request("GET", path, query).call())?;
        self.json(response)
    }

    pub fn get_bytes(&self, path: &str, query: &[(&str, String)]) -> Result<Vec<u8>, CliError> {
        let response = self.call(self.request("GET", path, query).call())?;
        self.bytes(response)
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        let req = self
            .request("POST", path, &[])
            .set("Content-Type", "application/json");
        let response = self.call(req.send_string(&body.to_string()))?;
        self.json(response)
    }

    pub fn put(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        let req = self
            .request("PUT", path, &[])
            .set("Content-Type", "application/json");
        let response = self.call(req.send_string(&body.to_string()))?;
        self.json(response)
    }

    pub fn delete(&self, path: &str) -> Result<Value, CliError> {
        let response = self.call(self.request("DELETE", path, &[]).call())?;
        self.json(response)
    }

    pub fn post_multipart(&self, path: &str, form: Multipart) -> Result<Value, CliError> {
        let (content_type, body) = form.finish();
        let req = self
            .request("POST", path, &[])
            .set("Content-Type", &content_type);
        let response = self.call(req.send_bytes(&body))?;
        self.json(response)
    }

    fn call(
        &self,
        result: Result<ureq::Response, ureq::Error>,
    ) -> Result<ureq::Response, CliError> {
        match result {
            Ok(response) => Ok(response),
            Err(ureq::Error::Status(status, response)) => Err(self.status_error(status, response)),
            Err(ureq::Error::Transport(transport)) => Err(self.transport_error(&transport)),
        }
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
                self.server
            ),
            _ => format!(
                "talking to the berth server at {}: {transport}",
                self.server
            ),
        };
        CliError(ErrorReport::new(ErrorCode::HostIo, message))
    }

    fn project_hint(&self) -> &str {
        self.base.rsplit('/').next().unwrap_or_default()
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
                    format!("reading the answer of {}: {e}", self.server),
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
                    self.server
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
