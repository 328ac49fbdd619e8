//! The HTTP API: routes, bearer-token checking for TCP, and serving on the
//! unix socket and TCP (request extraction is `extract`'s).

mod containers;
mod extract;
mod system;

use crate::error::ApiError;
use crate::Agent;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use berth_core::ErrorCode;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;

/// The API's routes, without authentication (the unix socket's view).
pub fn router(agent: Agent) -> Router {
    let json_limit = agent.config.max_json_bytes;
    Router::new()
        .route("/v1/ping", get(system::ping))
        .route("/v1/openapi.json", get(system::openapi))
        .route(
            "/v1/containers",
            get(containers::list).post(containers::create),
        )
        .route(
            "/v1/containers/{id}",
            get(containers::inspect).delete(containers::delete),
        )
        .route("/v1/containers/{id}/wait", get(containers::wait))
        .route("/v1/containers/{id}/logs", get(containers::logs))
        .route("/v1/containers/{id}/stop", post(containers::stop))
        .route("/v1/containers/{id}/kill", post(containers::kill))
        .route("/v1/containers/{id}/metrics", get(containers::metrics))
        .route("/v1/images", get(system::list_images))
        .route(
            "/v1/images",
            post(system::import_image).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route(
            "/v1/images/{reference}",
            axum::routing::delete(system::remove_image),
        )
        .route("/v1/images/prune", post(system::prune_images))
        .route("/v1/node", get(system::node))
        .route("/v1/events", get(system::events))
        .route("/metrics", get(system::prometheus))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(json_limit))
        .with_state(agent)
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such API route")
}

async fn method_not_allowed() -> Response {
    let mut response = axum::response::IntoResponse::into_response(ApiError::new(
        ErrorCode::InvalidArgument,
        "method not allowed on this route",
    ));
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
}

/// Rejects TCP requests without `Authorization: Bearer <token>`.
async fn require_token(
    axum::extract::State(token): axum::extract::State<std::sync::Arc<String>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(p) if constant_time_eq(p.as_bytes(), token.as_bytes()) => Ok(next.run(request).await),
        Some(_) => Err(ApiError::new(
            ErrorCode::Unauthorized,
            "invalid bearer token",
        )),
        None => Err(ApiError::new(
            ErrorCode::Unauthorized,
            "this endpoint requires Authorization: Bearer <token>",
        )),
    }
}

/// Compares without an early exit, so timing does not reveal the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// How long a shutdown waits for requests in flight.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// The agent's sockets, bound: clients can connect (and queue) from here on,
/// before [`Listening::serve`] answers them.
pub struct Listening {
    agent: Agent,
    unix: tokio::net::UnixListener,
    tcp: Option<(tokio::net::TcpListener, std::sync::Arc<String>)>,
}

/// Binds the unix socket (and TCP when configured). Separate from serving
/// so that a caller can report "up" only once the socket exists, and fail
/// before it starts anything else when another agent holds the socket.
pub async fn listen(agent: Agent) -> Result<Listening, ApiError> {
    let config = &agent.config;
    let unix = bind_unix(&config.socket)?;
    let tcp = match config.tcp_listen {
        Some(addr) => {
            let token = config
                .token
                .clone()
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    ApiError::invalid("a TCP listener requires a bearer token (--token-file)")
                })?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| ApiError::io(format!("binding {addr}"), e))?;
            Some((listener, std::sync::Arc::new(token)))
        }
        None => None,
    };
    Ok(Listening { agent, unix, tcp })
}

/// Binds and serves: [`listen`], then [`Listening::serve`].
pub async fn serve(
    agent: Agent,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ApiError> {
    listen(agent).await?.serve(shutdown).await
}

impl Listening {
    /// The TCP address the API is bound to, if it serves TCP (with its
    /// port when `--listen` asked for port 0).
    pub fn tcp_addr(&self) -> Option<std::net::SocketAddr> {
        self.tcp.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// Serves the API until `shutdown` completes, then removes the socket.
    /// Containers are not touched by shutting down.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ApiError> {
        let Listening { agent, unix, tcp } = self;
        let socket = agent.config.socket.clone();
        let state = agent.clone();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut stop_deadline = stop_rx.clone();
        tokio::spawn(async move {
            shutdown.await;
            stop_tx.send_replace(true);
        });
        // Open follow streams would hold a graceful shutdown forever: give
        // requests in flight a moment, then go (containers are not affected).
        let bounded = async move {
            let _ = stop_deadline.wait_for(|s| *s).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let limits = agent.config.connections;
        let local = berth_http::serve(
            unix,
            router(agent.clone()),
            limits,
            stopped(stop_rx.clone()),
        );
        let serving = async move {
            match tcp {
                Some((listener, token)) => {
                    let remote = router(agent.clone())
                        .layer(middleware::from_fn_with_state(token, require_token));
                    let remote = berth_http::serve(listener, remote, limits, stopped(stop_rx));
                    tokio::join!(local, remote);
                }
                None => local.await,
            }
        };
        tokio::select! {
            () = serving => {}
            () = bounded => {}
        };
        // Clients of a stopped agent find no socket rather than a refusal.
        let _ = std::fs::remove_file(&socket);
        if state.config.state_tmpfs {
            state.release_state_tmpfs().await;
        }
        Ok(())
    }
}

/// Binds the socket (mode 0600), replacing a stale one but never one that
/// another agent still serves.
fn bind_unix(path: &std::path::Path) -> Result<tokio::net::UnixListener, ApiError> {
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            format!("another agent is serving {}", path.display()),
        ));
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ApiError::io(format!("removing {}", path.display()), e)),
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| ApiError::io(format!("creating {}", parent.display()), e))?;
    }
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(|e| ApiError::io(format!("binding {}", path.display()), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| ApiError::io(format!("chmod {}", path.display()), e))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison_needs_an_exact_match() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
