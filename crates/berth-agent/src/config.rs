//! What an agent is started with.

use berth_agent_dir::AgentDir;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The agent's settings; `berth agent` fills them from flags and env.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// berth's data dir (images, runtime containers, the agent's state).
    pub data_dir: PathBuf,
    /// The runtime's cgroup parent, shared with the shims.
    pub cgroup_parent: String,
    /// The `berth-shim` binary to launch per container.
    pub shim_binary: PathBuf,
    /// The local API socket (mode 0600).
    pub socket: PathBuf,
    /// Optional remote API address; requires `token`.
    pub tcp_listen: Option<SocketAddr>,
    /// The bearer token remote callers must present.
    pub token: Option<String>,
    /// Free-form labels reported by `/v1/node` (zone, rack, …).
    pub labels: BTreeMap<String, String>,
    /// Memory all containers together may use (bytes).
    pub memory_ceiling: u64,
    /// Fraction of the ceiling at which the agent starts killing the
    /// container that exceeds its request the most.
    pub memory_pressure: f64,
    /// How often the memory policy samples usage.
    pub memory_interval: Duration,
    /// Cap on each container's output log, unless its request names one.
    pub log_max_bytes: u64,
    /// Largest JSON request body accepted.
    pub max_json_bytes: usize,
    /// Largest image upload accepted.
    pub max_image_bytes: u64,
    /// Keep the per-container state (specs, records, sockets, inline
    /// files, logs, and the runtime dirs of memory-scratch containers) on a
    /// private tmpfs mounted on `<data>/agent/run` (see `state_fs`): no disk
    /// I/O per container, but logs take RAM (up to each container's log
    /// cap) until the container is deleted.
    pub state_tmpfs: bool,
    /// The connection cap and timeouts of each listener (the unix socket
    /// and the TCP port count separately).
    pub connections: berth_http::Limits,
    /// The default network's bridge device; the nf_tables table is named
    /// after it too.
    pub bridge: String,
    /// Where `cni:NAME` networks find configurations and plugins.
    pub cni: berth_net::cni::CniPaths,
}

impl AgentConfig {
    /// Defaults for `data_dir`: socket `<data>/agent.sock`, ceiling = 90% of
    /// the host's RAM, pressure at 90% of it, sampled every 250 ms.
    pub fn new(data_dir: PathBuf, shim_binary: PathBuf) -> AgentConfig {
        let ram = crate::host::total_memory().unwrap_or(1 << 30);
        AgentConfig {
            socket: data_dir.join("agent.sock"),
            data_dir,
            cgroup_parent: "berth".into(),
            shim_binary,
            tcp_listen: None,
            token: None,
            labels: BTreeMap::new(),
            memory_ceiling: ram / 10 * 9,
            memory_pressure: 0.9,
            memory_interval: Duration::from_millis(250),
            log_max_bytes: berth_shim::DEFAULT_LOG_MAX_BYTES,
            max_json_bytes: 1024 * 1024,
            max_image_bytes: 16 << 30,
            state_tmpfs: false,
            connections: berth_http::Limits::DEFAULT,
            bridge: "berth0".into(),
            cni: berth_net::cni::CniPaths::default(),
        }
    }

    /// `<data>/agent` and its layout (see berth_agent_dir).
    pub(crate) fn agent_dir(&self) -> AgentDir {
        AgentDir::of(&self.data_dir)
    }

    /// What lives only while the host is up: the state tmpfs when
    /// [`AgentConfig::state_tmpfs`] is set.
    pub(crate) fn run_dir(&self) -> PathBuf {
        self.agent_dir().run_dir()
    }

    /// One state dir per container.
    pub(crate) fn state_root(&self) -> PathBuf {
        self.agent_dir().state_root()
    }

    /// The runtime's dirs of memory-scratch containers (a lock and a mount
    /// point each), beside their state.
    pub(crate) fn volatile_runtime_dir(&self) -> PathBuf {
        self.agent_dir().volatile_runtime_dir()
    }

    /// The runtime's dirs of disk-scratch containers (their writable
    /// layer), shared with `berth run`.
    pub(crate) fn runtime_containers_dir(&self) -> PathBuf {
        self.data_dir.join("containers")
    }
}
