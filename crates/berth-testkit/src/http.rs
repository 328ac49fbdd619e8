//! A tiny blocking HTTP/1.1 client for tests of the agent's API, over a
//! unix socket or TCP. One request per connection (`Connection: close`);
//! chunked bodies are decoded.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
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

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

impl Endpoint {
    pub fn unix(path: &Path) -> Endpoint {
        Endpoint::Unix(path.to_owned())
    }

    fn connect(&self) -> io::Result<Box<dyn Stream>> {
        let timeout = Some(Duration::from_secs(120));
        Ok(match self {
            Endpoint::Unix(p) => {
                let s = UnixStream::connect(p)?;
                s.set_read_timeout(timeout)?;
                Box::new(s)
            }
            Endpoint::Tcp(a) => {
                let s = TcpStream::connect(a)?;
                s.set_read_timeout(timeout)?;
                Box::new(s)
            }
        })
    }

    /// Sends one request and reads the whole response.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        let mut stream = self.connect()?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        // The server may answer (413, 401) before reading everything.
        let _ = stream.write_all(body);
        read_response(stream)
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

fn read_response(stream: Box<dyn Stream>) -> io::Result<Response> {
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, status_line.clone()))?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim(), 16)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if size == 0 {
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..])?;
            let mut crlf = [0u8; 2];
            reader.read_exact(&mut crlf)?;
        }
    } else if let Some(length) = content_length(&headers)? {
        // Exactly the announced body, not "until EOF": a server that
        // answered early (413, 401) and closed with part of our body unread
        // resets the connection, and reading on past the answer would turn
        // a complete response into ECONNRESET.
        body.resize(length, 0);
        reader.read_exact(&mut body)?;
    } else {
        reader.read_to_end(&mut body)?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn content_length(headers: &[(String, String)]) -> io::Result<Option<usize>> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| {
            v.parse().map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("content-length {v:?}: {e}"),
                )
            })
        })
        .transpose()
}

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
