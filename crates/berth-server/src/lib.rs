//! berth-server: the control plane.
//!
//! It owns the IronWorker v2 task API (`/2/projects/{project_id}/…`), the
//! dispatcher that hands queued tasks to agents and records how they end,
//! and the schedule runner. State lives in [`berth_store`]; containers are
//! the agents' (spoken to over their HTTP API through [`berth_api`]'s
//! typed client, never touched directly).
//!
//! It must not run containers, read cgroups or fork: everything that
//! happens on a host goes through an agent, so that the server can be
//! killed and restarted while tasks run, and tasks survive it. The crate
//! graph enforces it: the server depends on the agent's API contract and
//! the store, not on the agent, the shim or the runtime.

mod api;
mod config;
mod dispatch;
mod dispatcher;
mod fleet;
mod leadership;
mod overlays;
mod scheduler;

pub use api::router;
pub use berth_api::{AgentClient, ClientError as AgentError, Endpoint as AgentEndpoint};
pub use config::{
    ServerConfig, TaskDefaults, DEFAULT_CODE_REVISIONS_KEPT, DEFAULT_MAX_PROJECT_PACKAGE_BYTES,
};
pub use dispatch::{AgentHandle, Dispatch};
pub use dispatcher::{CONFIG_FILE, PAYLOAD_FILE, TASK_DIR};
pub use fleet::{FleetConfig, HeartbeatWriter};
pub use leadership::{LeaseConfig, ServerIdentity};

use berth_store::Store;
use std::sync::Arc;

/// What every request handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub dispatch: Arc<Dispatch>,
    pub config: Arc<ServerConfig>,
    /// Where heartbeats go to be written in batches.
    pub heartbeats: fleet::HeartbeatWriter,
}

/// Serves the task API on `listener` (under `config.connections`) until
/// `shutdown` completes, and dispatches and fires schedules while this
/// server holds the store's dispatch lease (any number of servers may share
/// one store; one leads at a time, see [`leadership`]). On shutdown the
/// lease is handed over; attempts under way are left to the agents' shims,
/// and the next leader adopts them.
pub async fn serve(
    store: Store,
    config: ServerConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let dispatch = Arc::new(Dispatch::default());
    let config = Arc::new(config);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let leadership = tokio::spawn(leadership::run(
        store.clone(),
        dispatch.clone(),
        config.clone(),
        async move {
            let mut stopped = stopped;
            let _ = stopped.wait_for(|stop| *stop).await;
        },
    ));
    let state = AppState {
        heartbeats: fleet::HeartbeatWriter::spawn(store.clone()),
        store,
        dispatch,
        config,
    };
    let limits = state.config.connections;
    berth_http::serve(listener, router(state), limits, shutdown).await;
    // Hand the lease over before the process goes.
    let _ = stop.send(true);
    let _ = leadership.await;
    Ok(())
}
