//! berth's Linux container runtime.
//!
//! Owns everything between a [`ContainerSpec`] and a running, isolated
//! process: cgroups (v1, v2 and hybrid hosts), the overlay root file system
//! assembled from read-only image layers, namespaces, `pivot_root`, Docker's
//! security defaults (capabilities, masked paths, seccomp) and a teardown
//! that leaves nothing behind.
//!
//! It must not touch images (it receives layer directories, never reads an
//! image store), the network beyond loopback, or any API: the CLI, the shim
//! and the host agent build on it. It forks, so it must run in a
//! single-threaded process.

mod cgroup;
mod container;
mod error;
mod kernel;
mod kernel_files;
mod process;
pub mod security;
mod spec;

pub use cgroup::{CgroupHost, CgroupJoin, CgroupMetrics, CgroupStats};
pub use container::{Container, ContainerResult, ExitStatus, Runtime, RuntimeConfig};
pub use error::{Result, RuntimeError};
pub use process::plan::StdioFds;
pub use spec::{
    random_container_id, BindMount, ContainerSpec, Limits, NetworkMode, ProcessSpec, Rlimit,
    RlimitResource, RootfsSpec, Scratch, SwapLimit, User, MIN_MEMORY,
};
