//! Where an agent listens.

use std::fmt;
use std::path::PathBuf;

/// An agent's address: its unix socket, or `host:port` over TCP (where it
/// requires a bearer token).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp(String),
}

impl Endpoint {
    /// `unix:///path/agent.sock`, `unix:/path`, or `http://host:port`.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        if let Some(path) = url
            .strip_prefix("unix://")
            .or_else(|| url.strip_prefix("unix:"))
        {
            if !path.starts_with('/') {
                return Err(format!(
                    "agent URL {url:?}: the socket path must be absolute"
                ));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        if let Some(rest) = url.strip_prefix("http://") {
            let authority = rest.trim_end_matches('/');
            if authority.is_empty() || authority.contains('/') {
                return Err(format!("agent URL {url:?}: expected http://HOST:PORT"));
            }
            return Ok(Endpoint::Tcp(authority.to_owned()));
        }
        Err(format!(
            "agent URL {url:?}: expected unix:///PATH/agent.sock or http://HOST:PORT"
        ))
    }

    /// The unix socket at `path`.
    pub fn unix(path: impl Into<PathBuf>) -> Endpoint {
        Endpoint::Unix(path.into())
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix://{}", path.display()),
            Endpoint::Tcp(authority) => write!(f, "http://{authority}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_agent_urls() {
        assert_eq!(
            Endpoint::parse("unix:///var/lib/berth/agent.sock"),
            Ok(Endpoint::Unix("/var/lib/berth/agent.sock".into()))
        );
        assert_eq!(
            Endpoint::parse("http://10.0.0.2:7420/"),
            Ok(Endpoint::Tcp("10.0.0.2:7420".into()))
        );
        for bad in [
            "unix://relative",
            "https://x:1",
            "10.0.0.2:7420",
            "http://h/x",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn display_round_trips() {
        for url in ["unix:///run/a.sock", "http://127.0.0.1:7420"] {
            assert_eq!(
                Endpoint::parse(url).map(|e| e.to_string()),
                Ok(url.to_owned())
            );
        }
    }
}
