//! `berth server`: the control plane in the foreground.

use crate::cli::{CodeLimitArgs, ConnectionArgs, ServerArgs};
use crate::cmd::database_url;
use crate::cmd::stop_signal::StopSignal;
use berth::cli::Global;
use berth::cmd::invalid;
use berth::CliError;
use berth_core::{ByteSize, ErrorCode, ErrorReport};
use berth_server::{ServerConfig, ServerIdentity};
use berth_store::Store;

pub fn run(global: &Global, args: ServerArgs) -> anyhow::Result<u8> {
    let url = database_url(global, &args.database);
    let mut config = server_config(args.min_schedule_interval, &args.code_limits)?;
    config.connections = connection_limits(&args.connections, 1)?;
    if let Some(path) = &args.join_token_file {
        config.fleet.join_token = Some(read_join_token(path)?);
    }
    config.identity = server_identity(&args)?;
    config.lease.ttl = lease_ttl(&args.lease_ttl)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut stop = StopSignal::catch()?;
        let store = tokio::select! {
            store = open_database_patiently(&url) => store?,
            _ = stop.arrived() => {
                eprintln!("berth server: stopped before the database answered");
                return Ok(());
            }
        };
        let listener = bind(args.listen).await?;
        eprintln!(
            "berth server: serving http://{} (database {}; hosts {})",
            args.listen,
            redact(&url),
            if config.fleet.join_token.is_some() {
                "join with berth agent --join"
            } else {
                "cannot join: no --join-token-file"
            }
        );
        berth_server::serve(store.clone(), config, listener, stop.received())
            .await
            .map_err(|e| CliError(ErrorReport::new(ErrorCode::HostIo, format!("serving: {e}"))))?;
        store.close().await;
        eprintln!(
            "berth server: stopped; running tasks continue and are picked up at the next start"
        );
        Ok::<_, CliError>(())
    })?;
    Ok(0)
}

/// This server as `berth server ls` shows it.
fn server_identity(args: &ServerArgs) -> Result<ServerIdentity, CliError> {
    let url = match &args.advertise {
        Some(url) => match berth_api::Endpoint::parse(url) {
            Ok(berth_api::Endpoint::Tcp(authority)) => format!("http://{authority}"),
            _ => {
                return Err(invalid(format!(
                    "--advertise {url:?}: an http:// URL with a host and port, such as \
                     http://10.0.0.5:8380"
                )))
            }
        },
        None => format!("http://{}", args.listen),
    };
    let name = match &args.name {
        Some(name) if name.trim().is_empty() || name.len() > 128 => {
            return Err(invalid("--name: 1 to 128 characters"));
        }
        Some(name) => name.clone(),
        None => format!("{}:{}", host_name(), args.listen.port()),
    };
    Ok(ServerIdentity {
        name,
        url,
        ..ServerIdentity::default()
    })
}

/// The machine's host name (`server` if it has none that reads).
fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_str()
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or("server")
        .to_owned()
}

/// `--lease-ttl`: from one second (renewals every third of it must fit a
/// database round trip) to a minute.
fn lease_ttl(value: &str) -> Result<std::time::Duration, CliError> {
    let ttl = humantime::parse_duration(value)
        .map_err(|e| invalid(format!("--lease-ttl {value:?}: {e}")))?;
    if ttl < std::time::Duration::from_secs(1) || ttl > std::time::Duration::from_secs(60) {
        return Err(invalid(format!("--lease-ttl {value:?}: from 1s to 60s")));
    }
    Ok(ttl)
}

/// The fleet's join token from its file: at least 16 characters, as every
/// host of the fleet presents it.
pub fn read_join_token(path: &std::path::Path) -> Result<String, CliError> {
    let token = std::fs::read_to_string(path)
        .map_err(|e| invalid(format!("--join-token-file {}: {e}", path.display())))?
        .trim()
        .to_owned();
    if token.len() < 16 {
        return Err(invalid(format!(
            "--join-token-file {}: the join token must be at least 16 characters",
            path.display()
        )));
    }
    Ok(token)
}

/// The server's settings from flags.
pub fn server_config(
    min_schedule_interval: i64,
    code_limits: &CodeLimitArgs,
) -> Result<ServerConfig, CliError> {
    if min_schedule_interval < 1 {
        return Err(invalid("--min-schedule-interval must be at least 1 second"));
    }
    let quota: ByteSize = code_limits.max_project_package_bytes.parse().map_err(|e| {
        invalid(format!(
            "--max-project-package-bytes: {e} (a size such as 2GiB, or 0 for no limit)"
        ))
    })?;
    Ok(ServerConfig {
        min_schedule_interval_secs: min_schedule_interval,
        max_project_package_bytes: (quota.bytes() > 0).then_some(quota.bytes()),
        code_revisions_kept: (code_limits.code_revisions_kept > 0)
            .then_some(code_limits.code_revisions_kept),
        ..ServerConfig::default()
    })
}

/// The limits of each listener from flags, once the open-files limit is
/// known to hold `listeners` listeners full of clients and the daemon's
/// own files besides. A cap given explicitly must fit; the default one
/// shrinks to what fits (with a warning).
pub fn connection_limits(
    args: &ConnectionArgs,
    listeners: u64,
) -> Result<berth_http::Limits, CliError> {
    let timeout = |flag: &str, value: &str| {
        let parsed = humantime::parse_duration(value)
            .map_err(|e| invalid(format!("--{flag} {value:?}: {e}")))?;
        if parsed.is_zero() {
            return Err(invalid(format!("--{flag} must be above zero")));
        }
        Ok(parsed)
    };
    let header_timeout = timeout("header-timeout", &args.header_timeout)?;
    let idle_timeout = timeout("idle-timeout", &args.idle_timeout)?;
    let max_connections = match args.max_connections {
        Some(0) => return Err(invalid("--max-connections must be at least 1")),
        Some(cap) => {
            berth_http::ensure_file_headroom(cap.saturating_mul(listeners))
                .map_err(|e| invalid(e.to_string()))?;
            cap
        }
        None => default_connection_cap(listeners)?,
    };
    Ok(berth_http::Limits {
        max_connections: usize::try_from(max_connections)
            .map_err(|_| invalid("--max-connections is too large"))?,
        header_timeout,
        idle_timeout,
    })
}

/// The smallest cap the default shrinks to before giving up.
const MIN_DEFAULT_CONNECTIONS: u64 = 16;

fn default_connection_cap(listeners: u64) -> Result<u64, CliError> {
    let wanted = berth_http::Limits::DEFAULT.max_connections as u64;
    match berth_http::ensure_file_headroom(wanted * listeners) {
        Ok(_) => Ok(wanted),
        Err(e) => {
            let fits = e.allowed.saturating_sub(e.reserve) / listeners.max(1);
            if fits < MIN_DEFAULT_CONNECTIONS {
                return Err(invalid(e.to_string()));
            }
            tracing::warn!(
                "the open-files limit ({}) holds {fits} client connections per listener, \
                 not {wanted}: serving with --max-connections {fits}",
                e.allowed
            );
            Ok(fits)
        }
    }
}

/// Opens the store; a PostgreSQL database that cannot be reached (down,
/// restarting, not there yet) is waited for, saying so, rather than given
/// up on: the server serves nothing until it has its store, so it never
/// answers from stale state, and it comes up by itself once the database
/// does. Other failures (a bad URL, a schema newer than this berth, a
/// SQLite file that cannot be opened) end it at once.
pub async fn open_database_patiently(url: &str) -> Result<Store, CliError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return open_database(url).await;
    }
    let mut wait = std::time::Duration::from_secs(1);
    // The pool's own connect keeps trying for 30 s before it says anything.
    const ATTEMPT: std::time::Duration = std::time::Duration::from_secs(3);
    loop {
        let problem = match tokio::time::timeout(ATTEMPT, Store::open(url)).await {
            Ok(Ok(store)) => return Ok(store),
            Ok(Err(e @ berth_store::StoreError::Database(_))) => e.to_string(),
            Ok(Err(e)) => return Err(database_error(url, e)),
            Err(_) => format!("no answer within {}s", ATTEMPT.as_secs()),
        };
        eprintln!(
            "berth server: the database {} cannot be used ({problem}); trying again in {}s",
            redact(url),
            wait.as_secs()
        );
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(std::time::Duration::from_secs(10));
    }
}

/// Opens the store, with an error that says which database failed.
pub async fn open_database(url: &str) -> Result<Store, CliError> {
    Store::open(url).await.map_err(|e| database_error(url, e))
}

fn database_error(url: &str, e: berth_store::StoreError) -> CliError {
    CliError(ErrorReport::new(
        ErrorCode::HostIo,
        format!("opening the database {}: {e}", redact(url)),
    ))
}

pub async fn bind(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, CliError> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        CliError(ErrorReport::new(
            ErrorCode::HostIo,
            format!("listening on {addr}: {e}"),
        ))
    })
}

/// The URL without its password, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
