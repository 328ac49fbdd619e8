//! Joining a fleet: the host registers with a server and keeps itself
//! registered with heartbeats (the contract is [`berth_api::fleet`]).
//!
//! The host's identity lives in `<data dir>/agent/identity.json` (mode
//! 0600): its id in the fleet, its name, and the credential the server
//! presents to this agent's API. The agent makes that credential itself, at
//! random, the first time; the join token (which every host of the fleet
//! knows) never opens this agent. A restarted agent joins again with the
//! same identity and is the same host; a host the server forgot (removed)
//! joins as a new one.

use crate::node;
use crate::state::AgentState;
use axum::body::Bytes;
use berth_api::fleet::{
    Heartbeat, HeartbeatAccepted, HostReport, JoinAccepted, JoinRequest, OverlaySpec, Resources,
};
use berth_api::{ClientError, Endpoint, ErrorBody, Transport};
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How this agent joins a fleet.
#[derive(Debug, Clone)]
pub struct JoinConfig {
    /// The servers' base URLs (`http://HOST:PORT`): servers sharing one
    /// store, any of which takes joins and heartbeats. The agent talks to
    /// one and moves to the next when it stops answering.
    pub servers: Vec<Endpoint>,
    /// The fleet's join token.
    pub join_token: String,
    /// This host's name in the fleet.
    pub name: String,
    /// This agent's API as the server reaches it (`http://HOST:PORT`).
    pub advertise: String,
    /// What this host offers tasks.
    pub allocatable: Allocatable,
}

/// What a host offers tasks, as `--allocatable` says; what it leaves out
/// is the capacity minus a reserve for the system ([`default_allocatable`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allocatable {
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub disk_bytes: Option<u64>,
    pub pids: Option<u64>,
}

impl Allocatable {
    fn resolve(&self, view: &berth_api::NodeView) -> Resources {
        let default = default_allocatable(view);
        Resources {
            cpu_millis: self.cpu_millis.unwrap_or(default.cpu_millis),
            memory_bytes: self.memory_bytes.unwrap_or(default.memory_bytes),
            disk_bytes: self.disk_bytes.unwrap_or(default.disk_bytes),
            pids: self.pids.unwrap_or(default.pids),
        }
    }
}

/// Who this host is in its fleet, kept across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Given by the server at the first join.
    pub node_id: Option<String>,
    /// The bearer the server presents to this agent's API.
    pub credential: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{} is not a host identity: {source}; remove it to join as a new host", path.display())]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

impl Identity {
    /// The identity file of a data dir.
    pub fn path(data_dir: &Path) -> PathBuf {
        berth_agent_dir::AgentDir::of(data_dir)
            .path()
            .join("identity.json")
    }

    /// The identity kept in `data_dir`, or a new one (a fresh random
    /// credential, no id yet) written there.
    pub fn load_or_create(data_dir: &Path) -> Result<Identity, IdentityError> {
        let path = Identity::path(data_dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| IdentityError::Corrupt { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let identity = Identity {
                    node_id: None,
                    credential: random_credential().map_err(|source| IdentityError::Io {
                        what: "making a credential for",
                        path: path.clone(),
                        source,
                    })?,
                };
                identity.save(data_dir)?;
                Ok(identity)
            }
            Err(source) => Err(IdentityError::Io {
                what: "reading",
                path,
                source,
            }),
        }
    }

    /// Writes the identity (0600, replaced atomically).
    pub fn save(&self, data_dir: &Path) -> Result<(), IdentityError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = Identity::path(data_dir);
        let io_error = |what, source| IdentityError::Io {
            what,
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io_error("creating the directory of", e))?;
        }
        let temp = path.with_extension("json.tmp");
        let json = serde_json::to_vec(self).map_err(|e| io_error("encoding", e.into()))?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)
            .map_err(|e| io_error("writing", e))?;
        file.write_all(&json)
            .and_then(|()| file.sync_all())
            .map_err(|e| io_error("writing", e))?;
        std::fs::rename(&temp, &path).map_err(|e| io_error("replacing", e))
    }
}

/// 32 random bytes from the kernel, as hex: a credential, or a join token.
pub fn random_credential() -> io::Result<String> {
    let mut bytes = [0u8; 32];
    let mut filled = 0;
    while filled < bytes.len() {
        match rustix::rand::getrandom(&mut bytes[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(errno) => return Err(errno.into()),
        }
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// What a host offers when `--allocatable` does not say: all but one
/// tenth of its CPUs (at least 100 millicores held back), the memory
/// ceiling of its containers, nine tenths of the data dir's file system and
/// of the kernel's pids.
pub fn default_allocatable(view: &berth_api::NodeView) -> Resources {
    let cpu_millis = u64::from(view.capacity.cpus) * 1000;
    Resources {
        cpu_millis: cpu_millis.saturating_sub((cpu_millis / 10).max(100)),
        memory_bytes: view.capacity.memory_ceiling_bytes,
        disk_bytes: view.capacity.disk_bytes / 10 * 9,
        pids: view.capacity.pids / 10 * 9,
    }
}

/// The host as a join or a heartbeat reports it.
pub fn report(agent: &AgentState, allocatable: &Allocatable) -> HostReport {
    let view = node::view(agent);
    let allocatable = allocatable.resolve(&view);
    HostReport {
        allocatable,
        allocated: Resources {
            cpu_millis: view.allocated.cpus_millis,
            memory_bytes: view.allocated.memory_request_bytes,
            disk_bytes: 0,
            pids: 0,
        },
        capacity: view.capacity,
        used: view.used,
        images: view.images,
        labels: view.labels,
        version: view.version,
    }
}

/// How long a join may take.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a heartbeat may take before the next server is tried: well
/// under the time after which a silent host is marked down, so that a
/// server that hangs (paused, cut off) costs a host no more than one late
/// beat.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait between attempts to join.
const MAX_JOIN_BACKOFF: Duration = Duration::from_secs(10);

/// The servers of the fleet, the one that answered last first. Shared by
/// every host one process keeps joined (the hollow hosts of a test fleet).
pub struct Servers {
    transports: Vec<(Endpoint, Transport)>,
    current: AtomicUsize,
}

impl Servers {
    pub fn new(endpoints: &[Endpoint]) -> Servers {
        Servers {
            transports: endpoints
                .iter()
                .map(|e| (e.clone(), Transport::new(e.clone(), None)))
                .collect(),
            current: AtomicUsize::new(0),
        }
    }

    /// The current server (for logs).
    fn current(&self) -> String {
        self.transports
            .get(self.current.load(Ordering::Relaxed))
            .map_or_else(String::new, |(endpoint, _)| endpoint.to_string())
    }

    /// Sends to the current server, then to each other in turn while they
    /// cannot be reached; an answer (a refusal included) ends the round.
    async fn call<B: Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        token: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<T, CallError> {
        let count = self.transports.len().max(1);
        let first = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for step in 0..count {
            let index = (first + step) % count;
            let Some((endpoint, transport)) = self.transports.get(index) else {
                break;
            };
            match call(transport, path, token, body, timeout).await {
                Err(CallError::Unreachable(e)) => {
                    tracing::warn!(server = %endpoint, error = %e, "server unreachable; trying the next");
                    last = Some(CallError::Unreachable(e));
                }
                answer => {
                    self.current.store(index, Ordering::Relaxed);
                    return answer;
                }
            }
        }
        Err(last.unwrap_or(CallError::NoServer))
    }
}

/// A host as the membership loop sees it: how it reports itself, and
/// where its identity is kept.
pub trait Member: Send + Sync {
    /// What the next join or heartbeat says of the host.
    fn report(&self) -> HostReport;
    /// Keeps the identity the server gave (so a restart is the same host).
    fn keep_identity(&self, identity: &Identity) -> Result<(), IdentityError>;
    /// Takes the fleet's overlay networks this host has members of, from
    /// a heartbeat's answer (a host without networks has nothing to do).
    fn follow_overlays(&self, _overlays: Vec<OverlaySpec>) {}
}

/// A real agent: its report is the machine's.
struct ThisHost {
    agent: crate::Agent,
    allocatable: Allocatable,
    /// The newest heartbeat answer's overlays, for the one task that
    /// applies them (in order, never two at once).
    overlays: tokio::sync::watch::Sender<Option<Vec<OverlaySpec>>>,
}

impl Member for ThisHost {
    fn report(&self) -> HostReport {
        report(&self.agent, &self.allocatable)
    }

    fn keep_identity(&self, identity: &Identity) -> Result<(), IdentityError> {
        identity.save(&self.agent.config.data_dir)
    }

    fn follow_overlays(&self, overlays: Vec<OverlaySpec>) {
        // The newest wins: a follower still busy with an older answer
        // takes this one next, and skips any in between.
        self.overlays.send_replace(Some(overlays));
    }
}

/// Applies heartbeat answers' overlays one after another, the newest
/// first, off the async threads (netlink, the network state's lock).
fn spawn_overlay_follower(
    agent: crate::Agent,
) -> tokio::sync::watch::Sender<Option<Vec<OverlaySpec>>> {
    let (answers, mut newest) = tokio::sync::watch::channel::<Option<Vec<OverlaySpec>>>(None);
    tokio::spawn(async move {
        while newest.changed().await.is_ok() {
            let Some(overlays) = newest.borrow_and_update().clone() else {
                continue;
            };
            let agent = agent.clone();
            if let Err(e) =
                tokio::task::spawn_blocking(move || agent.follow_overlays(&overlays)).await
            {
                tracing::error!("keeping the fleet's overlays in step: {e}");
            }
        }
    });
    answers
}

/// Joins the fleet, then heartbeats until the process ends; joins again
/// whenever the server no longer knows this host. Never returns.
pub async fn run(agent: crate::Agent, join: JoinConfig, identity: Identity) {
    let servers = Servers::new(&join.servers);
    let host = ThisHost {
        allocatable: join.allocatable,
        overlays: spawn_overlay_follower(agent.clone()),
        agent,
    };
    keep_joined(&host, &join, identity, &servers).await
}

/// The membership loop of one host: joins, heartbeats at the interval the
/// server asks, joins again when the server no longer knows it. Never
/// returns.
pub async fn keep_joined(
    host: &dyn Member,
    join: &JoinConfig,
    mut identity: Identity,
    servers: &Servers,
) {
    loop {
        let accepted = join_until_accepted(host, join, servers, &mut identity).await;
        let mut interval = Duration::from_millis(accepted.heartbeat_interval_ms.max(100));
        loop {
            tokio::time::sleep(interval).await;
            let beat = Heartbeat {
                node_id: accepted.node_id.clone(),
                report: host.report(),
            };
            match servers
                .call::<_, HeartbeatAccepted>(
                    "/v1/fleet/heartbeat",
                    &accepted.heartbeat_token,
                    &beat,
                    HEARTBEAT_TIMEOUT,
                )
                .await
            {
                Ok(answer) => {
                    interval = Duration::from_millis(answer.heartbeat_interval_ms.max(100));
                    if let Some(overlays) = answer.overlays {
                        host.follow_overlays(overlays);
                    }
                }
                Err(CallError::Refused(401, message)) => {
                    tracing::warn!(node = %join.name, %message, "the server no longer knows this host: joining again");
                    break;
                }
                Err(e) => {
                    tracing::warn!(node = %join.name, error = %e, "heartbeat failed; trying again")
                }
            }
        }
    }
}

async fn join_until_accepted(
    host: &dyn Member,
    join: &JoinConfig,
    servers: &Servers,
    identity: &mut Identity,
) -> JoinAccepted {
    let mut backoff = Duration::from_millis(200);
    loop {
        let request = JoinRequest {
            name: join.name.clone(),
            node_id: identity.node_id.clone(),
            address: join.advertise.clone(),
            credential: identity.credential.clone(),
            report: host.report(),
        };
        match servers
            .call::<_, JoinAccepted>("/v1/fleet/join", &join.join_token, &request, JOIN_TIMEOUT)
            .await
        {
            Ok(accepted) => {
                if identity.node_id.as_deref() != Some(accepted.node_id.as_str()) {
                    identity.node_id = Some(accepted.node_id.clone());
                    if let Err(e) = host.keep_identity(identity) {
                        tracing::error!(error = %e, "could not keep this host's identity: a restart joins as a new host");
                    }
                }
                tracing::info!(node = %join.name, id = %accepted.node_id, server = %servers.current(), "joined the fleet");
                return accepted;
            }
            Err(e) => {
                tracing::warn!(node = %join.name, error = %e, server = %servers.current(), "joining the fleet failed; trying again in {backoff:?}");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_JOIN_BACKOFF);
    }
}

#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error(transparent)]
    Unreachable(#[from] ClientError),
    #[error("the server refused ({0}): {1}")]
    Refused(u16, String),
    #[error("the server's answer does not parse: {0}")]
    BadAnswer(serde_json::Error),
    #[error("no server to join (--join lists none)")]
    NoServer,
}

async fn call<B: Serialize, T: serde::de::DeserializeOwned>(
    server: &Transport,
    path: &str,
    token: &str,
    body: &B,
    timeout: Duration,
) -> Result<T, CallError> {
    let body = serde_json::to_vec(body).map_err(CallError::BadAnswer)?;
    let auth = format!("Bearer {token}");
    let answer = server
        .send(
            axum::http::Method::POST,
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            Bytes::from(body),
            timeout,
        )
        .await?;
    if !answer.is_success() {
        let message = serde_json::from_slice::<ErrorBody>(&answer.body)
            .map(|b| b.error.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&answer.body).into_owned());
        return Err(CallError::Refused(answer.status, message));
    }
    serde_json::from_slice(&answer.body).map_err(CallError::BadAnswer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = Identity::load_or_create(dir.path()).unwrap();
        assert_eq!(first.node_id, None);
        assert_eq!(first.credential.len(), 64);
        let mut kept = Identity::load_or_create(dir.path()).unwrap();
        assert_eq!(kept, first);
        kept.node_id = Some("n1".into());
        kept.save(dir.path()).unwrap();
        assert_eq!(Identity::load_or_create(dir.path()).unwrap(), kept);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(Identity::path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Two hosts never make the same credential.
        let other = tempfile::tempdir().unwrap();
        assert_ne!(
            Identity::load_or_create(other.path()).unwrap().credential,
            first.credential
        );
    }

    #[test]
    fn a_corrupt_identity_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = Identity::path(dir.path());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "{").unwrap();
        let err = Identity::load_or_create(dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("remove it"), "{err}");
    }
}
