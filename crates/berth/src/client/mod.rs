//! The client side of the task platform: settings and the HTTP API client.

mod config;
mod http;
mod multipart;

pub use config::{default_path, load, same_url, save, ClientConfig, Resolved, ResolvedOperator};
pub use http::{encode, Api};
pub use multipart::Multipart;
