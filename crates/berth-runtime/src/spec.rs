//! What a container should be: the input of [`crate::Runtime::create`].
//!
//! A spec is plain data (serialisable, so the host agent can store it) and is
//! validated as a whole before anything is touched on the host.

use crate::error::{Result, RuntimeError};
use berth_core::{ByteSize, ContainerId, CpuQuota};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

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
    pub network: NetworkMode,
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
            network: NetworkMode::default(),
            mounts: Vec::new(),
            limits: Limits::default(),
        }
    }
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

/// Backing of the container's writable layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scratch {
    /// A tmpfs that exists only inside the container's mount namespace: no
    /// disk I/O, gone the instant the container ends, and charged to the
    /// container's memory (so a memory limit bounds it).
    #[default]
    Memory,
    /// A directory under the data dir: for containers that write more than
    /// memory allows. Removed at teardown.
    Disk,
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

/// A resource limit (`setrlimit`) applied inside the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rlimit {
    pub resource: RlimitResource,
    pub soft: u64,
    pub hard: u64,
}

/// The C type `setrlimit` takes its resource as: glibc declares an enum,
/// musl a plain int.
#[cfg(target_env = "gnu")]
pub(crate) type RawRlimitResource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
pub(crate) type RawRlimitResource = libc::c_int;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RlimitResource {
    Nofile,
    Nproc,
    Core,
    Fsize,
    Stack,
    Memlock,
    Cpu,
    As,
}

impl RlimitResource {
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "nofile" => RlimitResource::Nofile,
            "nproc" => RlimitResource::Nproc,
            "core" => RlimitResource::Core,
            "fsize" => RlimitResource::Fsize,
            "stack" => RlimitResource::Stack,
            "memlock" => RlimitResource::Memlock,
            "cpu" => RlimitResource::Cpu,
            "as" => RlimitResource::As,
            _ => return None,
        })
    }

    pub(crate) fn as_raw(self) -> RawRlimitResource {
        match self {
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
}

/// Which network the container sees.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// A private network namespace with only a working loopback.
    #[default]
    None,
    /// The host's network namespace (opt-in; no isolation).
    Host,
}

/// A host path bound into the container (`-v SRC:DST[:ro]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindMount {
    /// Absolute host path; must exist.
    pub source: PathBuf,
    /// Absolute path inside the container; created if missing.
    pub destination: String,
    #[serde(default)]
    pub read_only: bool,
}

impl BindMount {
    /// Parses Docker's `SRC:DST[:ro|rw]` volume syntax.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |why: &str| RuntimeError::InvalidSpec(format!("volume {text:?}: {why}"));
        let parts: Vec<&str> = text.split(':').collect();
        let (source, destination, read_only) = match parts.as_slice() {
            [s, d] => (*s, *d, false),
            [s, d, "ro"] => (*s, *d, true),
            [s, d, "rw"] => (*s, *d, false),
            [_, _, mode] => return Err(bad(&format!("unknown mode {mode:?} (use ro or rw)"))),
            _ => return Err(bad("expected SRC:DST or SRC:DST:ro")),
        };
        if !source.starts_with('/') {
            return Err(bad("source must be an absolute host path"));
        }
        if !destination.starts_with('/') {
            return Err(bad("destination must be an absolute path in the container"));
        }
        Ok(BindMount {
            source: PathBuf::from(source),
            destination: destination.to_owned(),
            read_only,
        })
    }
}

/// Resource limits. `None` means unlimited, except swap (see `memory_swap`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Hard memory limit; exceeding it gets the container OOM-killed.
    pub memory: Option<ByteSize>,
    /// Memory plus swap. With a memory limit and no value here the container
    /// gets no swap at all (as `--memory-swap` equal to `--memory`);
    /// [`SwapLimit::Unlimited`] allows unlimited swap.
    pub memory_swap: Option<SwapLimit>,
    /// CPU bandwidth (CFS quota), in thousandths of a CPU.
    pub cpus: Option<CpuQuota>,
    /// Relative CPU weight under contention (Docker's `--cpu-shares`, 2–262144).
    pub cpu_shares: Option<u64>,
    /// Maximum number of tasks (processes and threads).
    pub pids: Option<u64>,
    /// Kill the container after this long; its result is flagged `timed_out`.
    #[serde(default, with = "opt_duration_ms")]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SwapLimit {
    Limited(ByteSize),
    Unlimited,
}

/// Docker's minimum memory limit: below it nothing useful starts.
pub const MIN_MEMORY: u64 = 6 * 1024 * 1024;

impl Limits {
    /// Refuses impossible combinations before anything is created.
    pub fn validate(&self, online_cpus: u32) -> Result<()> {
        let bad = |why: String| Err(RuntimeError::InvalidLimit(why));
        if let Some(memory) = self.memory {
            if memory.bytes() < MIN_MEMORY {
                return bad(format!(
                    "memory {memory} is below the minimum of {}",
                    ByteSize(MIN_MEMORY)
                ));
            }
        }
        match (self.memory_swap, self.memory) {
            (Some(_), None) => {
                return bad("memory-swap needs a memory limit as well".to_owned());
            }
            (Some(SwapLimit::Limited(swap)), Some(memory)) if swap < memory => {
                return bad(format!(
                    "memory-swap {swap} is smaller than memory {memory}; it counts memory plus swap"
                ));
            }
            _ => {}
        }
        if let Some(cpus) = self.cpus {
            let max = online_cpus * 1000;
            if cpus.millicpus() < 10 || cpus.millicpus() > max {
                return bad(format!(
                    "cpus {cpus} is outside the range 0.01 to {online_cpus} (the CPUs of this host)"
                ));
            }
        }
        if let Some(shares) = self.cpu_shares {
            if !(2..=262_144).contains(&shares) {
                return bad(format!("cpu-shares {shares} is outside 2..=262144"));
            }
        }
        if let Some(pids) = self.pids {
            if pids == 0 {
                return bad("pids-limit must be at least 1".to_owned());
            }
        }
        if let Some(timeout) = self.timeout {
            if timeout.is_zero() {
                return bad("timeout must be longer than zero".to_owned());
            }
        }
        Ok(())
    }
}

mod opt_duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
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
        self.limits.validate(online_cpus)
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
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        bytes = (t ^ u64::from(std::process::id())).to_le_bytes();
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    ContainerId::new(hex).unwrap_or_else(|_| unreachable!("16 hex digits are a valid id"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mib(n: u64) -> Option<ByteSize> {
        Some(ByteSize::mib(n))
    }

    #[test]
    fn impossible_limits_are_refused() {
        let cases = [
            Limits {
                memory: Some(ByteSize(1024)),
                ..Limits::default()
            },
            Limits {
                memory: mib(64),
                memory_swap: Some(SwapLimit::Limited(ByteSize::mib(32))),
                ..Limits::default()
            },
            Limits {
                memory_swap: Some(SwapLimit::Unlimited),
                ..Limits::default()
            },
            Limits {
                cpus: Some(CpuQuota(64_000)),
                ..Limits::default()
            },
            Limits {
                cpus: Some(CpuQuota(0)),
                ..Limits::default()
            },
            Limits {
                cpu_shares: Some(1),
                ..Limits::default()
            },
            Limits {
                pids: Some(0),
                ..Limits::default()
            },
            Limits {
                timeout: Some(Duration::ZERO),
                ..Limits::default()
            },
        ];
        for limits in cases {
            let err = limits
                .validate(2)
                .expect_err(&format!("{limits:?} accepted"));
            assert!(matches!(err, RuntimeError::InvalidLimit(_)), "{err}");
        }
    }

    #[test]
    fn sensible_limits_pass() {
        let limits = Limits {
            memory: mib(64),
            memory_swap: Some(SwapLimit::Limited(ByteSize::mib(128))),
            cpus: Some(CpuQuota(500)),
            cpu_shares: Some(512),
            pids: Some(32),
            timeout: Some(Duration::from_secs(3)),
        };
        limits.validate(2).unwrap();
    }

    #[test]
    fn volumes_parse_like_docker() {
        let m = BindMount::parse("/data:/mnt/data:ro").unwrap();
        assert_eq!(m.source, PathBuf::from("/data"));
        assert_eq!(m.destination, "/mnt/data");
        assert!(m.read_only);
        assert!(!BindMount::parse("/a:/b").unwrap().read_only);
        for bad in ["data:/x", "/a:b", "/a", "/a:/b:rx", "/a:/b:ro:x"] {
            assert!(BindMount::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
