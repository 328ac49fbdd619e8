//! Blocking HTTP for tests of the agent's and the server's APIs, over a
//! unix socket or TCP: a thin layer over berth-api's transport (the one
//! HTTP client berth has) that panics with context where a test wants it,
//! plus a `multipart/form-data` encoder.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the API listens.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

/// A response, whole.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON; panics with the body if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The stable code of an error response.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {}", self.text()))
            .to_owned()
    }
}

impl Endpoint {
    pub fn unix(path: &Path) -> Endpoint {
        Endpoint::Unix(path.to_owned())
    }

    /// Sends one request and reads the whole response, through berth-api's
    /// transport (the client the server uses): only the failure to get an
    /// answer is an error.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        let endpoint = match self {
            Endpoint::Unix(path) => berth_api::Endpoint::Unix(path.clone()),
            Endpoint::Tcp(addr) => berth_api::Endpoint::Tcp(addr.to_string()),
        };
        let transport = berth_api::blocking::Transport::new(endpoint, None)?;
        let answer = transport
            .send(method, path, headers, body.to_vec(), REQUEST_TIMEOUT)
            .map_err(io::Error::other)?;
        Ok(Response {
            status: answer.status,
            headers: answer.headers,
            body: answer.body.to_vec(),
        })
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], b"")
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub fn delete(&self, path: &str) -> Response {
        self.request("DELETE", path, &[], b"")
            .unwrap_or_else(|e| panic!("DELETE {path}: {e}"))
    }

    pub fn post(&self, path: &str, body: &[u8]) -> Response {
        self.request("POST", path, &[("Content-Type", "application/json")], body)
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> Response {
        self.post(path, body.to_string().as_bytes())
    }
}

/// Long enough for the slowest answer a test waits for (a follow stream
/// or a long poll).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// One part of a `multipart/form-data` body.
#[derive(Debug, Clone)]
pub struct Part {
    pub name: String,
    /// The part's `filename` (file uploads have one).
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub data: Vec<u8>,
}

impl Part {
    /// A form field.
    pub fn field(name: &str, data: impl Into<Vec<u8>>) -> Part {
        Part {
            name: name.to_owned(),
            filename: None,
            content_type: None,
            data: data.into(),
        }
    }

    /// A file.
    pub fn file(name: &str, filename: &str, content_type: &str, data: impl Into<Vec<u8>>) -> Part {
        Part {
            name: name.to_owned(),
            filename: Some(filename.to_owned()),
            content_type: Some(content_type.to_owned()),
            data: data.into(),
        }
    }
}

/// Encodes `parts` as a `multipart/form-data` body; returns the
/// `Content-Type` header value (with its boundary) and the body.
pub fn multipart(parts: &[Part]) -> (String, Vec<u8>) {
    let boundary = "berth-test-boundary-7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let mut disposition = format!("Content-Disposition: form-data; name=\"{}\"", part.name);
        if let Some(filename) = &part.filename {
            disposition.push_str(&format!("; filename=\"{filename}\""));
        }
        body.extend_from_slice(disposition.as_bytes());
        body.extend_from_slice(b"\r\n");
        if let Some(content_type) = &part.content_type {
            body.extend_from_slice(format!("Content-Type: {content_type}\r\n").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(&part.data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}
