//! `berth up`: the whole stack on this machine in one process — the task
//! API, a local agent on its unix socket, the store (SQLite by default) and
//! a default stack for the `sh` and `binary` runtimes.

mod stack;

use crate::cli::{Global, UpArgs};
use crate::client::{self, ClientConfig};
use crate::cmd::agent::default_shim;
use crate::cmd::server::{bind, connection_limits, open_database, redact, server_config};
use crate::cmd::stop_signal::StopSignal;
use crate::cmd::{database_url, open_store};
use crate::CliError;
use berth_agent::AgentConfig;
use berth_core::{ErrorCode, ErrorReport};
use berth_server::{AgentClient, AgentEndpoint};
use berth_store::Store;
use stack::{ensure_default_stack, DEFAULT_STACK};

/// Runtimes the default stack serves, with their command templates.
const DEFAULT_RUNTIMES: [(&str, &[&str]); 2] =
    [("sh", &["sh", "{file}"]), ("binary", &["./{file}"])];

pub fn run(global: &Global, args: UpArgs) -> anyhow::Result<u8> {
    let images = open_store(global)?;
    if ensure_default_stack(&images)? {
        eprintln!("berth up: made the default stack {DEFAULT_STACK} from the host's busybox");
    }
    drop(images);
    let url = database_url(global, &args.database);
    let shim = default_shim()?;
    let mut agent_config = AgentConfig::new(global.data_dir.clone(), shim);
    agent_config.cgroup_parent = global.cgroup_parent.clone();
    // Every task makes and removes a container: its state churns.
    agent_config.state_tmpfs = !args.state_on_disk;
    let socket = agent_config.socket.clone();
    let mut config = server_config(args.min_schedule_interval)?;
    // Two listeners: the task API and the agent's unix socket.
    config.connections = connection_limits(&args.connections, 2)?;
    agent_config.connections = config.connections;

    // The agent spawns shims (fork+exec in one step), never forks, so the
    // multi-threaded runtime is safe for it too.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let stop_signal = StopSignal::catch()?;
        let store = open_database(&url).await?;
        map_default_runtimes(&store).await?;
        let api_url = format!("http://{}", args.listen);
        let (project_id, token) = project_for_this_machine(&store, &api_url).await?;
        let listener = bind(args.listen).await?;

        let agent = berth_agent::open(agent_config)
            .await
            .map_err(|e| CliError(e.report))?;
        // Bound before the task API answers: whoever sees berth up answer
        // finds the agent's socket too.
        let agent = berth_agent::listen(agent)
            .await
            .map_err(|e| CliError(e.report))?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let agent_stopped = {
            let mut stop = stop_rx.clone();
            tokio::spawn(agent.serve(async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            }))
        };
        let agents = vec![AgentClient::new(AgentEndpoint::Unix(socket.clone()), None)];

        println!("berth is up");
        println!("  task API   {api_url}/2/projects/{project_id}/");
        println!("  project    {project_id}");
        println!("  token      {token}");
        println!("  client     {} (berth code push, berth task queue … need no flags)", client::default_path().display());
        println!("  database   {}", redact(&url));
        println!("  agent      unix://{}", socket.display());
        println!("  stacks     sh, binary → {DEFAULT_STACK}");
        println!("Try:\n  berth code push hello --runtime sh --file hello.sh --dir ./hello\n  berth task queue hello --payload '{{\"name\":\"you\"}}' --wait\n  berth task ls");

        let mut stop = stop_rx.clone();
        let served = berth_server::serve(store.clone(), agents, config, listener, async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        });
        let served = tokio::spawn(served);
        stop_signal.received().await;
        let _ = stop_tx.send(true);
        let _ = served.await;
        let _ = agent_stopped.await;
        store.close().await;
        eprintln!("berth up: stopped; running tasks continue under their shims and resume at the next start");
        Ok::<_, CliError>(())
    })?;
    Ok(0)
}

/// Maps `sh` and `binary` to the default stack unless the operator mapped
/// them elsewhere.
async fn map_default_runtimes(store: &Store) -> Result<(), CliError> {
    for (runtime, command) in DEFAULT_RUNTIMES {
        let existing = store.stack(runtime).await.map_err(store_error)?;
        if existing.is_none() {
            let command: Vec<String> = command.iter().map(|part| part.to_string()).collect();
            store
                .set_stack(runtime, DEFAULT_STACK, &command)
                .await
                .map_err(store_error)?;
        }
    }
    Ok(())
}

/// The project and token in this machine's client config, if they still
/// open this store; else a new project `default` whose token the config
/// then holds.
async fn project_for_this_machine(
    store: &Store,
    api_url: &str,
) -> Result<(String, String), CliError> {
    let path = client::default_path();
    if let Ok(Some(existing)) = client::load(&path) {
        if let (Some(project_id), Some(token)) = (&existing.project_id, &existing.token) {
            let opens = store.authenticate(token).await.map_err(store_error)?;
            if opens.as_deref() == Some(project_id.as_str()) {
                let config = ClientConfig {
                    url: Some(api_url.to_owned()),
                    ..existing.clone()
                };
                client::save(&path, &config).map_err(|e| config_error(&path, e))?;
                return Ok((project_id.clone(), token.clone()));
            }
        }
    }
    let project = store.create_project("default").await.map_err(store_error)?;
    let (_, token) = store
        .create_token(&project.id, "berth up")
        .await
        .map_err(store_error)?;
    let config = ClientConfig {
        url: Some(api_url.to_owned()),
        project_id: Some(project.id.clone()),
        token: Some(token.clone()),
    };
    client::save(&path, &config).map_err(|e| config_error(&path, e))?;
    Ok((project.id, token))
}

fn store_error(e: berth_store::StoreError) -> CliError {
    CliError(ErrorReport::new(ErrorCode::HostIo, format!("store: {e}")))
}

fn config_error(path: &std::path::Path, e: std::io::Error) -> CliError {
    CliError(ErrorReport::new(
        ErrorCode::HostIo,
        format!("writing the client config {}: {e}", path.display()),
    ))
}
