//! The host settings a bridge network needs, and the choice of free
//! subnets.

use crate::error::{NetError, Result};
use crate::links;
use crate::netlink::Netlink;
use ipnet::Ipv4Net;
use rustix::fs::{flock, FlockOperation, Mode, OFlags};
use std::fs;
use std::os::fd::OwnedFd;

/// Serialises subnet choices between every berth on the host (each data
/// dir has its own state, but they share the host's address space).
const HOST_LOCK: &str = "/run/berth-net.lock";

/// Held while a subnet is chosen and its bridge given its address.
pub struct HostLock(#[allow(dead_code)] OwnedFd);

pub fn lock_host() -> Result<HostLock> {
    let fd = rustix::fs::open(
        HOST_LOCK,
        OFlags::CREATE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| NetError::io(format!("opening {HOST_LOCK}"), e.into()))?;
    flock(&fd, FlockOperation::LockExclusive)
        .map_err(|e| NetError::io(format!("locking {HOST_LOCK}"), e.into()))?;
    Ok(HostLock(fd))
}

/// Where default subnets come from: the default bridge takes a /16 of
/// 10.88.0.0/13, user networks a /24 of 10.96.0.0/11.
pub const DEFAULT_BRIDGE_POOL: (&str, u8) = ("10.88.0.0/13", 16);
pub const USER_NETWORK_POOL: (&str, u8) = ("10.96.0.0/11", 24);

/// The first subnet of `pool` that overlaps nothing in `taken`.
pub fn first_free(pool: (&str, u8), taken: &[Ipv4Net]) -> Result<Ipv4Net> {
    let (pool, prefix) = pool;
    let pool: Ipv4Net = pool
        .parse()
        .map_err(|_| NetError::Invalid(format!("bad address pool {pool}")))?;
    let subnets = pool
        .subnets(prefix)
        .map_err(|_| NetError::Invalid(format!("bad pool prefix {prefix}")))?;
    for candidate in subnets {
        if !taken.iter().any(|t| overlaps(t, &candidate)) {
            return Ok(candidate);
        }
    }
    Err(NetError::Conflict(format!(
        "every /{prefix} of {pool} overlaps a network of this host; give one with --subnet"
    )))
}

pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The networks this host already reaches directly.
pub fn routed_networks() -> Result<Vec<Ipv4Net>> {
    let route = Netlink::route().map_err(|e| NetError::io("opening a routing socket", e))?;
    links::host_networks(&route).map_err(|e| NetError::io("reading the host's routes", e))
}

/// Turns on IPv4 forwarding (a bridge with NAT is useless without it);
/// `berth info` reports it.
pub fn enable_forwarding() -> Result<()> {
    write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")
}

/// Lets published ports answer on 127.0.0.1 through berth's own bridge.
pub fn allow_localhost_through(bridge: &str) -> Result<()> {
    write_sysctl(
        &format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet"),
        "1",
    )
}

/// Whether IPv4 forwarding is on.
pub fn forwarding_enabled() -> bool {
    fs::read_to_string("/proc/sys/net/ipv4/ip_forward").is_ok_and(|v| v.trim() == "1")
}

fn write_sysctl(path: &str, value: &str) -> Result<()> {
    if fs::read_to_string(path).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
    fs::write(path, value).map_err(|e| NetError::io(format!("setting {path}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_free_subnet_skips_overlaps() {
        let taken: Vec<Ipv4Net> = vec![
            "10.88.0.0/16".parse().unwrap(),
            "10.89.4.0/24".parse().unwrap(),
        ];
        assert_eq!(
            first_free(DEFAULT_BRIDGE_POOL, &taken).unwrap().to_string(),
            "10.90.0.0/16"
        );
        let everything: Vec<Ipv4Net> = vec!["10.0.0.0/8".parse().unwrap()];
        assert!(first_free(USER_NETWORK_POOL, &everything).is_err());
    }
}
