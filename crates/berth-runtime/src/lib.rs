//! berth's Linux container runtime.
//!
//! Owns everything between a [`ContainerSpec`] and a running, isolated
//! process: cgroups (v1, v2 and hybrid hosts), the overlay root file system
//! assembled from read-only image layers, namespaces, `pivot_root`, Docker's
//! security defaults (capabilities, masked paths, seccomp) and a teardown
//! that leaves nothing behind.
//!
//! [`supervise`] is the loop that watches a running container (its pidfd,
//! signals, output and timeout) for `berth run` and the shim alike.
//!
//! It must not touch images (it receives layer directories, never reads an
//! image store), the network beyond loopback, or any API: the CLI, the shim
//! and the host agent build on it. A caller that wires networks gets the
//! container's namespace through a [`NetworkSetup`], while the container is
//! being set up. It forks, so it must run in a
//! single-threaded process.

mod cgroup;
mod container;
mod error;
mod kernel;
mod kernel_files;
mod process;
pub mod security;
mod spec;
pub mod supervise;

pub use berth_core::{CgroupMetrics, ContainerResult};
pub use cgroup::{CgroupHost, CgroupJoin, CgroupStats};
pub use container::{Container, CreateOptions, ExitStatus, NetworkSetup, Runtime, RuntimeConfig};
pub use error::{Result, RuntimeError};
pub use process::plan::StdioFds;
pub use spec::{
    random_container_id, BindMount, ContainerSpec, Limits, NetworkNamespace, ProcessSpec, Rlimit,
    RlimitResource, RootfsSpec, Scratch, SpecError, SwapLimit, User, MIN_MEMORY,
};
