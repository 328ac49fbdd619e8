//! Creating the container's first process.
//!
//! The parent ([`plan`]) turns a spec into a [`plan::Plan`]: every path,
//! string, argument vector and BPF program the child will need, allocated up
//! front. [`spawn`] clones with the namespace flags, and the child
//! ([`child`]) then runs a fixed sequence of system calls — mounts,
//! pivot_root, identity, capabilities, seccomp — without allocating, so it is
//! safe even though it runs in a copy of the parent's address space. Progress
//! and failures travel back through a pipe as fixed-size records.

pub mod affinity;
pub mod child;
pub mod fdpass;
pub mod network;
pub mod plan;
pub mod spawn;
