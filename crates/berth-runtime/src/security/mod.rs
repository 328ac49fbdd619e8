//! Security defaults: Docker's default capability set and seccomp profile.

pub mod capabilities;
pub mod seccomp;
