//! What a container should be: the input of [`crate::Runtime::create`].
//!
//! A spec is plain data (serialisable, so the host agent can store it) and is
//! validated as a whole before anything is touched on the host.

use crate::error::{Result, RuntimeError};
pub use berth_core::spec::{
    BindMount, Limits, Rlimit, RlimitResource, Scratch, SpecError, SwapLimit, MIN_MEMORY,
};
use berth_core::{ByteSize, ContainerId};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Everything needed to create one container.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    pub id: ContainerId,
    pub rootfs: RootfsSpec,
    pub process: ProcessSpec,
    /// Defaults to the first 12 characters of the id.
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub network: NetworkNamespace,
    #[serde(default)]
    pub mounts: Vec<BindMount>,
    #[serde(default)]
    pub limits: Limits,
}

impl ContainerSpec {
    /// A container running `args` on `layers` (bottom first) with every
    /// other setting at its default: no limits, network `none`, root user,
    /// cwd `/`, an empty environment.
    pub fn new(id: ContainerId, layers: Vec<PathBuf>, args: Vec<String>) -> ContainerSpec {
        ContainerSpec {
            id,
            rootfs: RootfsSpec {
                layers,
                read_only: false,
                scratch: Scratch::default(),
                scratch_size: None,
            },
            process: ProcessSpec {
                args,
                env: Vec::new(),
                cwd: default_cwd(),
                user: User::default(),
                rlimits: Vec::new(),
                terminal: false,
            },
            hostname: None,
            network: NetworkNamespace::default(),
            mounts: Vec::new(),
            limits: Limits::default(),
        }
    }
}

/// The network namespace the container runs in. The runtime itself gives a
/// container at most a loopback; networks beyond it are made by the caller
/// (berth-net) in a namespace the container then joins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkNamespace {
    /// A new namespace with only a working loopback.
    #[default]
    #[serde(rename = "none")]
    New,
    /// The host's namespace (opt-in; no isolation).
    Host,
    /// The namespace at this path (`/proc/PID/ns/net`, `/proc/self/fd/N`,
    /// a bind mount), opened when the container is created. Its loopback
    /// is brought up as in a new one.
    Join(PathBuf),
}

/// The image layers the root file system is made of.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootfsSpec {
    /// Read-only layer directories, bottom layer first.
    pub layers: Vec<PathBuf>,
    /// Mount the root file system read-only (writes go nowhere but volumes).
    #[serde(default)]
    pub read_only: bool,
    /// Where the container's writes (the overlay upper layer) live.
    #[serde(default)]
    pub scratch: Scratch,
    /// Cap on the writable layer with [`Scratch::Memory`] (default: the
    /// kernel's tmpfs default, half of RAM; a memory limit caps it too).
    #[serde(default)]
    pub scratch_size: Option<ByteSize>,
}

/// The process run inside the container.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSpec {
    /// argv; `args[0]` is looked up in the container's `PATH` unless it has a `/`.
    pub args: Vec<String>,
    /// `KEY=VALUE` pairs.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory inside the container (created if missing).
    #[serde(default = "default_cwd")]
    pub cwd: String,
    #[serde(default)]
    pub user: User,
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
    /// Allocate a pseudo-terminal for stdin/stdout/stderr.
    #[serde(default)]
    pub terminal: bool,
}

fn default_cwd() -> String {
    "/".to_owned()
}

/// Numeric identity the process runs as.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    #[serde(default)]
    pub additional_gids: Vec<u32>,
}

impl ContainerSpec {
    /// Checks the spec as a whole; nothing on the host is touched.
    pub fn validate(&self, online_cpus: u32) -> Result<()> {
        let bad = |why: String| Err(RuntimeError::InvalidSpec(why));
        if self.process.args.is_empty() || self.process.args[0].is_empty() {
            return bad("no command to run (the image has no default command either)".into());
        }
        if let (Scratch::Disk, Some(_)) = (self.rootfs.scratch, self.rootfs.scratch_size) {
            return bad("scratch-size applies to memory scratch only".into());
        }
        if self.rootfs.layers.is_empty() {
            return bad("the root file system has no layers".into());
        }
        for arg in self.process.args.iter().chain(&self.process.env) {
            if arg.contains('\0') {
                return bad(format!("{arg:?} contains a NUL byte"));
            }
        }
        for var in &self.process.env {
            if !var.contains('=') || var.starts_with('=') {
                return bad(format!("environment entry {var:?} is not KEY=VALUE"));
            }
        }
        // -1 (4294967295) tells setresuid/setresgid/setgroups' callers to
        // leave an id unchanged: the process would stay root.
        let user = &self.process.user;
        let ids = [user.uid, user.gid]
            .into_iter()
            .chain(user.additional_gids.iter().copied());
        if let Some(id) = ids.into_iter().find(|id| *id == u32::MAX) {
            return bad(format!(
                "user or group id {id} is not a valid id (it means \"unchanged\" to the kernel)"
            ));
        }
        if !self.process.cwd.starts_with('/') {
            return bad(format!(
                "working directory {:?} must be absolute",
                self.process.cwd
            ));
        }
        if let Some(h) = &self.hostname {
            let ok = !h.is_empty()
                && h.len() <= 64
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
            if !ok {
                return bad(format!("hostname {h:?} is not a valid host name"));
            }
        }
        for m in &self.mounts {
            if !m.source.is_absolute() || !m.destination.starts_with('/') {
                return bad(format!(
                    "volume {}:{} must use absolute paths",
                    m.source.display(),
                    m.destination
                ));
            }
            if m.destination.split('/').any(|c| c == "..") {
                return bad(format!("volume destination {:?} has '..'", m.destination));
            }
        }
        for r in &self.process.rlimits {
            if r.soft > r.hard {
                return bad(format!(
                    "ulimit {:?}: soft limit {} is above hard limit {}",
                    r.resource, r.soft, r.hard
                ));
            }
        }
        Ok(self.limits.validate(online_cpus)?)
    }

    /// The hostname the container will see.
    pub fn effective_hostname(&self) -> String {
        self.hostname
            .clone()
            .unwrap_or_else(|| self.id.as_str().chars().take(12).collect())
    }
}

/// A fresh random container id (16 hex digits), for callers that were not
/// given one.
pub fn random_container_id() -> ContainerId {
    let mut bytes = [0u8; 8];
    // getrandom never fails for 8 bytes on Linux ≥ 3.17 once the pool is
    // initialised; fall back to time and pid if it somehow does.
    if rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()).is_err() {
        let t = berth_core::time::now_millis().unsigned_abs();
        bytes = (t ^ u64::from(std::process::id())).to_le_bytes();
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    ContainerId::new(hex).unwrap_or_else(|_| unreachable!("16 hex digits are a valid id"))
}

/// The C type `setrlimit` takes its resource as: glibc declares an enum,
/// musl a plain int.
#[cfg(target_env = "gnu")]
pub(crate) type RawRlimitResource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
pub(crate) type RawRlimitResource = libc::c_int;

/// The kernel's number for an rlimit resource.
pub(crate) fn raw_rlimit_resource(resource: RlimitResource) -> RawRlimitResource {
    match resource {
        RlimitResource::Nofile => libc::RLIMIT_NOFILE,
        RlimitResource::Nproc => libc::RLIMIT_NPROC,
        RlimitResource::Core => libc::RLIMIT_CORE,
        RlimitResource::Fsize => libc::RLIMIT_FSIZE,
        RlimitResource::Stack => libc::RLIMIT_STACK,
        RlimitResource::Memlock => libc::RLIMIT_MEMLOCK,
        RlimitResource::Cpu => libc::RLIMIT_CPU,
        RlimitResource::As => libc::RLIMIT_AS,
    }
}

impl From<SpecError> for RuntimeError {
    fn from(error: SpecError) -> RuntimeError {
        match error {
            SpecError::Invalid(why) => RuntimeError::InvalidSpec(why),
            SpecError::ImpossibleLimit(why) => RuntimeError::InvalidLimit(why),
        }
    }
}
