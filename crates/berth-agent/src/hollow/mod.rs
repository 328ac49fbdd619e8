//! Hollow hosts: a test and benchmark tool, in the way of Kubernetes'
//! kubemark and Nomad's node simulator. `berthd agent --hollow N` runs N
//! simulated hosts in one process: each joins the fleet and heartbeats
//! exactly as a real agent does (the same [`crate::join`] loop, its own
//! name, identity and credential), and answers the server's agent calls,
//! on one shared listener, by pretending: a container "runs" for the time
//! its create request asks ([`host::run_time`]) and ends with exit code 0,
//! nothing is forked, mounted or written but the hosts' identities.
//!
//! It lets a control plane be tested against ten thousand hosts on one
//! machine. No production path depends on it: the real agent never enters
//! this module.

mod api;
mod host;

pub use host::{run_time, EXIT_ENV, RUN_MS_ENV};

use crate::join::{keep_joined, Identity, IdentityError, JoinConfig, Servers};
use berth_api::fleet::Resources;
use host::HollowHost;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How a hollow fleet is made.
#[derive(Debug, Clone)]
pub struct HollowConfig {
    /// How many hosts.
    pub count: usize,
    /// Host `i` is named `<prefix>-h<i>` (i from 1).
    pub name_prefix: String,
    /// Where the hosts' identities are kept (`hollow-identities.json`).
    pub data_dir: PathBuf,
    /// The join settings every host shares (its name is set per host;
    /// `advertise` is the one listener all answer on).
    pub join: JoinConfig,
    /// What each host offers.
    pub allocatable: Resources,
    /// Labels of every host (each also gets `hollow=true`).
    pub labels: BTreeMap<String, String>,
    /// Images every host holds from the start.
    pub images: Vec<String>,
}

/// The hosts' identities, in one file (mode 0600) rewritten when one
/// changes: a restarted hollow agent keeps its hosts.
pub struct Identities {
    path: PathBuf,
    all: Mutex<Vec<Identity>>,
}

#[derive(Debug, thiserror::Error)]
pub enum HollowError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("{0}")]
    Io(String),
}

impl Identities {
    fn load_or_create(path: PathBuf, count: usize) -> Result<Identities, HollowError> {
        let mut all: Vec<Identity> = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| HollowError::Io(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(HollowError::Io(format!("{}: {e}", path.display()))),
        };
        while all.len() < count {
            all.push(Identity {
                node_id: None,
                credential: crate::join::random_credential()
                    .map_err(|e| HollowError::Io(format!("making a credential: {e}")))?,
            });
        }
        let identities = Identities {
            path,
            all: Mutex::new(all),
        };
        identities.save()?;
        Ok(identities)
    }

    fn get(&self, index: usize) -> Option<Identity> {
        self.all.lock().ok()?.get(index).cloned()
    }

    fn set(&self, index: usize, identity: Identity) -> Result<(), IdentityError> {
        if let Ok(mut all) = self.all.lock() {
            if let Some(slot) = all.get_mut(index) {
                *slot = identity;
            }
        }
        self.save().map_err(|e| IdentityError::Io {
            what: "writing",
            path: self.path.clone(),
            source: std::io::Error::other(e.to_string()),
        })
    }

    fn save(&self) -> Result<(), HollowError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let json = match self.all.lock() {
            Ok(all) => serde_json::to_vec(&*all),
            Err(poisoned) => serde_json::to_vec(&*poisoned.into_inner()),
        }
        .map_err(|e| HollowError::Io(e.to_string()))?;
        let temp = self.path.with_extension("json.tmp");
        let io = |e: std::io::Error| HollowError::Io(format!("{}: {e}", temp.display()));
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)
            .map_err(io)?;
        file.write_all(&json).map_err(io)?;
        std::fs::rename(&temp, &self.path).map_err(io)
    }
}

static SERIAL: AtomicU64 = AtomicU64::new(1);

/// A number for containers created without an id.
fn next_serial() -> u64 {
    SERIAL.fetch_add(1, Ordering::Relaxed)
}

/// The hollow fleet, ready to serve and join.
pub struct HollowFleet {
    config: HollowConfig,
    hosts: Vec<(Arc<HollowHost>, Identity)>,
    router: axum::Router,
}

impl HollowFleet {
    /// Makes (or reloads) the hosts' identities.
    pub fn new(config: HollowConfig) -> Result<HollowFleet, HollowError> {
        let identities = Arc::new(Identities::load_or_create(
            config.data_dir.join("hollow-identities.json"),
            config.count,
        )?);
        let mut labels = config.labels.clone();
        labels.insert("hollow".to_owned(), "true".to_owned());
        let mut hosts = Vec::with_capacity(config.count);
        for index in 0..config.count {
            let identity = identities
                .get(index)
                .ok_or_else(|| HollowError::Io("identities lost".to_owned()))?;
            let host = Arc::new(HollowHost::new(
                format!("{}-h{}", config.name_prefix, index + 1),
                labels.clone(),
                config.allocatable,
                &config.images,
                identities.clone(),
                index,
            ));
            hosts.push((host, identity));
        }
        let by_credential = api::Hosts::new(
            hosts
                .iter()
                .map(|(host, identity)| (identity.credential.clone(), host.clone())),
        );
        Ok(HollowFleet {
            router: api::router(Arc::new(by_credential)),
            config,
            hosts,
        })
    }

    /// The agent API of every host (serve it on the advertised listener).
    pub fn router(&self) -> axum::Router {
        self.router.clone()
    }

    /// Keeps every host joined until the process ends, their first joins
    /// spread over `ramp` so that a large fleet does not arrive at once
    /// (and their heartbeats stay spread after).
    pub async fn keep_joined(self, ramp: Duration) {
        let servers = Arc::new(Servers::new(&self.config.join.servers));
        let count = self.hosts.len().max(1) as u32;
        let mut tasks = tokio::task::JoinSet::new();
        for (index, (host, identity)) in self.hosts.into_iter().enumerate() {
            let servers = servers.clone();
            let join = JoinConfig {
                name: host.name.clone(),
                ..self.config.join.clone()
            };
            let delay = ramp * index as u32 / count;
            tasks.spawn(async move {
                tokio::time::sleep(delay).await;
                keep_joined(&*host, &join, identity, &servers).await;
            });
        }
        while tasks.join_next().await.is_some() {}
    }
}
