//! `berth up`: the whole stack on this machine in one process — the task
//! API, a local agent on its unix socket, the store (SQLite by default) and
//! a default stack for the `sh` and `binary` runtimes.

mod stack;

use crate::cli::UpArgs;
use crate::cmd::agent::default_shim;
use crate::cmd::database_url;
use crate::cmd::server::{bind, connection_limits, open_database, redact, server_config};
use crate::cmd::stop_signal::StopSignal;
use berth::cli::Global;
use berth::client::{self, ClientConfig};
use berth::cmd::open_store;
use berth::CliError;
use berth_agent::join::{Allocatable, Identity, JoinConfig};
use berth_agent::AgentConfig;
use berth_core::{ErrorCode, ErrorReport};
use berth_server::AgentEndpoint;
use berth_store::Store;
use stack::{ensure_default_stack, DEFAULT_STACK};
use std::path::{Path, PathBuf};

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
    agent_config.bridge = global.bridge.clone();
    agent_config.cni = global.cni_paths();
    // Every task makes and removes a container: its state churns.
    agent_config.state_tmpfs = !args.state_on_disk;
    let socket = agent_config.socket.clone();
    let mut config = server_config(args.min_schedule_interval, &args.code_limits)?;
    // Three listeners: the task API, the agent's unix socket and its TCP
    // port.
    config.connections = connection_limits(&args.connections, 3)?;
    agent_config.connections = config.connections;
    // A one-host fleet on the fleet's own path: the local agent joins the
    // server like any other host, over loopback TCP, with a credential of
    // its own; the join token is this instance's.
    let join_token = local_join_token(&global.data_dir)?;
    config.fleet.join_token = Some(join_token.clone());
    // The only server of its store (it holds the data dir), under a name
    // that outlives it: restarted after a crash, it takes the dispatch
    // lease back at once instead of waiting out its predecessor's term.
    config.identity = berth_server::ServerIdentity {
        id: format!("up:{}", global.data_dir.display()),
        name: "berth up".to_owned(),
        url: format!("http://{}", args.listen),
    };
    let identity = Identity::load_or_create(&global.data_dir)
        .map_err(|e| CliError(ErrorReport::new(ErrorCode::HostIo, e.to_string())))?;
    agent_config.tcp_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    agent_config.token = Some(identity.credential.clone());

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
        let settings = client_settings(&store, &api_url, &global.data_dir).await?;
        let (project_id, token) = (&settings.project_id, &settings.token);
        let listener = bind(args.listen).await?;

        let agent = berth_agent::open(agent_config)
            .await
            .map_err(|e| CliError(e.report))?;
        // Bound before the task API answers: whoever sees berth up answer
        // finds the agent's socket too.
        let joining = agent.clone();
        let agent = berth_agent::listen(agent)
            .await
            .map_err(|e| CliError(e.report))?;
        let agent_addr = agent.tcp_addr().ok_or_else(|| {
            CliError(ErrorReport::new(ErrorCode::Internal, "the local agent serves no TCP port"))
        })?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let agent_stopped = {
            let mut stop = stop_rx.clone();
            tokio::spawn(agent.serve(async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            }))
        };
        let join = JoinConfig {
            servers: vec![AgentEndpoint::parse(&api_url).map_err(berth::cmd::invalid)?],
            join_token,
            name: local_host_name(),
            advertise: format!("http://{agent_addr}"),
            allocatable: Allocatable::default(),
        };
        let joined = tokio::spawn(berth_agent::join::run(joining, join, identity));

        println!("berth is up");
        println!("  task API   {api_url}/2/projects/{project_id}/");
        println!("  project    {project_id}");
        println!("  token      {token}");
        if settings.default_written {
            println!("  client     {} (berth code push, berth task queue … need no flags)", settings.default.display());
        } else {
            println!("  client     {} (your {} is another berth's and was left as it is; use this one with\n             export BERTH_CONFIG={})", settings.own.display(), settings.default.display(), settings.own.display());
        }
        println!("  database   {}", redact(&url));
        println!("  agent      unix://{} and http://{agent_addr} (joined as host {})", socket.display(), local_host_name());
        println!("  operator   {} (berth node ls)", settings.operator_token);
        println!("  stacks     sh, binary → {DEFAULT_STACK}");
        println!("Try:\n  berth code push hello --runtime sh --file hello.sh --dir ./hello\n  berth task queue hello --payload '{{\"name\":\"you\"}}' --wait\n  berth task ls");

        let mut stop = stop_rx.clone();
        let served = berth_server::serve(store.clone(), config, listener, async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        });
        let served = tokio::spawn(served);
        stop_signal.received().await;
        let _ = stop_tx.send(true);
        let _ = served.await;
        joined.abort();
        let _ = agent_stopped.await;
        store.close().await;
        eprintln!("berth up: stopped; running tasks continue under their shims and resume at the next start");
        Ok::<_, CliError>(())
    })?;
    Ok(0)
}

/// This instance's join token, made once (`<data dir>/server/join.token`,
/// mode 0600).
fn local_join_token(data_dir: &Path) -> Result<String, CliError> {
    let path = data_dir.join("server").join("join.token");
    let io_error = |what: &str, e: std::io::Error| {
        CliError(ErrorReport::new(
            ErrorCode::HostIo,
            format!("{what} {}: {e}", path.display()),
        ))
    };
    match std::fs::read_to_string(&path) {
        Ok(token) if token.trim().len() >= 16 => return Ok(token.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error("reading", e)),
    }
    let token = berth_agent::join::random_credential().map_err(|e| io_error("making", e))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io_error("creating the directory of", e))?;
    }
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(token.as_bytes()))
        .map_err(|e| io_error("writing", e))?;
    Ok(token)
}

/// The local host's name in its one-host fleet: the machine's hostname when
/// it is a valid host name, else `local`.
fn local_host_name() -> String {
    let name = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if valid {
        name
    } else {
        "local".to_owned()
    }
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

/// Where `berth up` left the client settings of this instance.
struct ClientSettings {
    project_id: String,
    token: String,
    /// An operator token of this store (`berth node …`).
    operator_token: String,
    /// This instance's own client config, always written:
    /// `<data dir>/client.json`.
    own: PathBuf,
    /// The user's default client config ([`client::default_path`]), and
    /// whether it now points here.
    default: PathBuf,
    default_written: bool,
}

/// The project and token of this machine's client: those of this
/// instance's own client config or of the user's default one, if they
/// still open this store; else a new project `default` and its token.
///
/// The settings always go to `<data dir>/client.json`. The user's default
/// config gets them only when that redirects nothing: when it is absent,
/// when it already names this instance's address (whatever served there
/// before is gone: this instance holds the port now), or when its token
/// opens this store (the same instance, moved to another address).
/// Otherwise it belongs to another berth and is left alone.
async fn client_settings(
    store: &Store,
    api_url: &str,
    data_dir: &Path,
) -> Result<ClientSettings, CliError> {
    let own_path = data_dir.join("client.json");
    let default_path = client::default_path();
    let own = client::load(&own_path).ok().flatten();
    // An unreadable default config is the user's to fix, not ours to
    // replace.
    let default = client::load(&default_path);
    let default_readable = default.as_ref().ok().cloned().flatten();

    let mut found = None;
    for candidate in [&own, &default_readable].into_iter().flatten() {
        if let Some(pair) = opens_this_store(store, candidate).await? {
            found = Some(pair);
            break;
        }
    }
    let (project_id, token) = match found {
        Some(pair) => pair,
        None => {
            let project = store.create_project("default").await.map_err(store_error)?;
            let (_, token) = store
                .create_token(&project.id, "berth up")
                .await
                .map_err(store_error)?;
            (project.id, token)
        }
    };
    // The operator token of a config this store made, else a new one.
    let mut operator_token = None;
    for candidate in [&own, &default_readable].into_iter().flatten() {
        if let Some(secret) = &candidate.operator_token {
            if store
                .authenticate_operator(secret)
                .await
                .map_err(store_error)?
            {
                operator_token = Some(secret.clone());
                break;
            }
        }
    }
    let operator_token = match operator_token {
        Some(secret) => secret,
        None => {
            store
                .create_operator_token("berth up")
                .await
                .map_err(store_error)?
                .1
        }
    };
    let config = ClientConfig {
        url: Some(api_url.to_owned()),
        project_id: Some(project_id.clone()),
        token: Some(token.clone()),
        operator_token: Some(operator_token.clone()),
    };
    client::save(&own_path, &config).map_err(|e| config_error(&own_path, e))?;

    let default_is_ours = match &default {
        Ok(None) => true,
        Ok(Some(existing)) => {
            existing
                .url
                .as_deref()
                .is_some_and(|url| client::same_url(url, api_url))
                || opens_this_store(store, existing).await?.is_some()
        }
        Err(_) => false,
    };
    if default_is_ours && default.as_ref().ok().cloned().flatten() != Some(config.clone()) {
        client::save(&default_path, &config).map_err(|e| config_error(&default_path, e))?;
    }
    Ok(ClientSettings {
        project_id,
        token,
        operator_token,
        own: own_path,
        default: default_path,
        default_written: default_is_ours,
    })
}

/// The config's project and token if the token opens that project in this
/// store.
async fn opens_this_store(
    store: &Store,
    config: &ClientConfig,
) -> Result<Option<(String, String)>, CliError> {
    let (Some(project_id), Some(token)) = (&config.project_id, &config.token) else {
        return Ok(None);
    };
    let opens = store.authenticate(token).await.map_err(store_error)?;
    Ok(
        (opens.as_deref() == Some(project_id.as_str()))
            .then(|| (project_id.clone(), token.clone())),
    )
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
