//! What a container asks of its host: limits, mounts, network mode,
//! rlimits, scratch space; and what a finished container reports.
//!
//! Plain, serialisable data shared by the runtime (which enforces it), the
//! agent's API (which carries it) and the CLI (which parses it from flags).
//! Validation here is pure: it checks values against each other and the
//! host's CPU count given by the caller, never against the host itself.

use crate::{ByteSize, CpuQuota, ErrorCode, HasErrorCode};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

pub use crate::network::NetworkMode;

/// A spec value that cannot be right on any host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A malformed value (a volume without a destination, …).
    #[error("{0}")]
    Invalid(String),
    /// A limit that is impossible (below the minimum, above the machine).
    #[error("{0}")]
    ImpossibleLimit(String),
}

impl HasErrorCode for SpecError {
    fn code(&self) -> ErrorCode {
        match self {
            SpecError::Invalid(_) => ErrorCode::InvalidArgument,
            SpecError::ImpossibleLimit(_) => ErrorCode::InvalidLimit,
        }
    }
}

/// Backing of the container's writable layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

/// A resource limit (`setrlimit`) applied inside the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Rlimit {
    pub resource: RlimitResource,
    pub soft: u64,
    pub hard: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
}

/// A host path bound into the container (`-v SRC:DST[:ro]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BindMount {
    /// Absolute host path; must exist.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub source: PathBuf,
    /// Absolute path inside the container; created if missing.
    pub destination: String,
    #[serde(default)]
    pub read_only: bool,
}

impl BindMount {
    /// Parses Docker's `SRC:DST[:ro|rw]` volume syntax.
    pub fn parse(text: &str) -> Result<Self, SpecError> {
        let bad = |why: &str| SpecError::Invalid(format!("volume {text:?}: {why}"));
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>))]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum SwapLimit {
    Limited(ByteSize),
    Unlimited,
}

/// Docker's minimum memory limit: below it nothing useful starts.
pub const MIN_MEMORY: u64 = 6 * 1024 * 1024;

impl Limits {
    /// Refuses impossible combinations before anything is created.
    pub fn validate(&self, online_cpus: u32) -> Result<(), SpecError> {
        let bad = |why: String| Err(SpecError::ImpossibleLimit(why));
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
            assert!(matches!(err, SpecError::ImpossibleLimit(_)), "{err}");
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
