//! berth-net's state dir: the records that say what exists, so that it
//! can be found and removed again by whoever comes next (a restarted
//! agent, `berth gc`).
//!
//! ```text
//! <state>/lock                    flock: shared to attach, exclusive to change networks
//! <state>/networks/NAME.json      a network
//! <state>/attachments/ID.json     a container's attachment
//! <state>/ipam/NAME/A.B.C.D       an address in use, holding its container's id
//! <state>/ports/PROTO-PORT        a host port in use, holding its container's id
//! <state>/files/ID/{hosts,resolv.conf}   the container's name files
//! ```
//!
//! Addresses and ports are claimed by creating their file exclusively,
//! so two creates on one host never get the same one.

use crate::error::{NetError, Result};
use crate::model::{Attachment, Network};
use rustix::fs::{flock, FlockOperation, Mode, OFlags};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fs;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// berth-net's state dir.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

/// A held lock on the state dir; released when dropped.
pub struct Lock(OwnedFd);

impl Drop for Lock {
    fn drop(&mut self) {
        // Unlocked explicitly, not only by closing: a process cloned while
        // the lock was held (a container's runtime child, made while its
        // network was claimed) has a copy of the fd, and a flock lasts
        // until every copy is closed.
        let _ = flock(&self.0, FlockOperation::Unlock);
    }
}

impl StateDir {
    pub fn new(root: PathBuf) -> StateDir {
        StateDir { root }
    }

    /// Makes the dirs (once per process is enough; cheap when they exist).
    pub fn prepare(&self) -> Result<()> {
        for dir in ["networks", "attachments", "ipam", "ports", "files"] {
            let path = self.root.join(dir);
            fs::create_dir_all(&path)
                .map_err(|e| NetError::io(format!("creating {}", path.display()), e))?;
        }
        Ok(())
    }

    /// The nf_tables table of this state dir: the one recorded, else
    /// `proposed` (recorded now).
    pub fn table_name(&self, proposed: &str) -> Result<String> {
        let path = self.root.join("table");
        match fs::read_to_string(&path) {
            Ok(name) if !name.trim().is_empty() => Ok(name.trim().to_owned()),
            Ok(_) => Err(NetError::io(
                format!("reading {}", path.display()),
                io::Error::new(io::ErrorKind::InvalidData, "empty"),
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                write_atomically(&path, proposed.as_bytes())?;
                Ok(proposed.to_owned())
            }
            Err(e) => Err(NetError::io(format!("reading {}", path.display()), e)),
        }
    }

    /// Shared for an attach or detach, exclusive to create or remove a
    /// network or rewrite the rules and name files.
    pub fn lock(&self, exclusive: bool) -> Result<Lock> {
        let path = self.root.join("lock");
        let fd = rustix::fs::open(
            &path,
            OFlags::CREATE | OFlags::RDWR | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| NetError::io(format!("opening {}", path.display()), e.into()))?;
        let op = if exclusive {
            FlockOperation::LockExclusive
        } else {
            FlockOperation::LockShared
        };
        flock(&fd, op).map_err(|e| NetError::io("locking the network state", e.into()))?;
        Ok(Lock(fd))
    }

    fn network_path(&self, name: &str) -> PathBuf {
        self.root.join("networks").join(format!("{name}.json"))
    }

    pub fn network(&self, name: &str) -> Result<Option<Network>> {
        read_json(&self.network_path(name))
    }

    pub fn networks(&self) -> Result<Vec<Network>> {
        let mut out: Vec<Network> = read_all(&self.root.join("networks"))?;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub fn save_network(&self, network: &Network) -> Result<()> {
        write_json(&self.network_path(&network.name), network)
    }

    pub fn remove_network(&self, name: &str) -> Result<()> {
        remove_file(&self.network_path(name))?;
        remove_dir_all(&self.root.join("ipam").join(name))
    }

    fn attachment_path(&self, container: &str) -> PathBuf {
        self.root
            .join("attachments")
            .join(format!("{container}.json"))
    }

    pub fn attachment(&self, container: &str) -> Result<Option<Attachment>> {
        read_json(&self.attachment_path(container))
    }

    pub fn attachments(&self) -> Result<Vec<Attachment>> {
        read_all(&self.root.join("attachments"))
    }

    pub fn save_attachment(&self, attachment: &Attachment) -> Result<()> {
        write_json(&self.attachment_path(&attachment.container), attachment)
    }

    pub fn remove_attachment(&self, container: &str) -> Result<()> {
        remove_file(&self.attachment_path(container))?;
        remove_dir_all(&self.files_dir(container))
    }

    /// Where a container's `hosts` and `resolv.conf` live.
    pub fn files_dir(&self, container: &str) -> PathBuf {
        self.root.join("files").join(container)
    }

    fn address_path(&self, network: &str, address: Ipv4Addr) -> PathBuf {
        self.root
            .join("ipam")
            .join(network)
            .join(address.to_string())
    }

    /// Claims `address` on `network` for `container`; false if taken.
    pub fn claim_address(&self, network: &str, address: Ipv4Addr, container: &str) -> Result<bool> {
        let dir = self.root.join("ipam").join(network);
        if let Err(e) = fs::create_dir_all(&dir) {
            return Err(NetError::io(format!("creating {}", dir.display()), e));
        }
        claim(&self.address_path(network, address), container)
    }

    /// Frees `address` if `container` holds it (not a claim a newer
    /// container made since).
    pub fn release_address_of(
        &self,
        network: &str,
        address: Ipv4Addr,
        container: &str,
    ) -> Result<()> {
        release_if_held(&self.address_path(network, address), container)
    }

    /// The address after which the next search starts (the last given).
    pub fn address_hint(&self, network: &str) -> Option<Ipv4Addr> {
        let path = self.root.join("ipam").join(network).join("last");
        fs::read_to_string(path).ok()?.trim().parse().ok()
    }

    pub fn set_address_hint(&self, network: &str, address: Ipv4Addr) {
        let path = self.root.join("ipam").join(network).join("last");
        // Only a hint: a lost write makes the next search start earlier.
        let _ = fs::write(path, address.to_string());
    }

    /// Every claimed address of `network` and its container.
    pub fn claimed_addresses(&self, network: &str) -> Result<Vec<(Ipv4Addr, String)>> {
        let dir = self.root.join("ipam").join(network);
        let mut out = Vec::new();
        for (name, path) in entries(&dir)? {
            if let Ok(address) = name.parse::<Ipv4Addr>() {
                let owner = fs::read_to_string(&path).unwrap_or_default();
                out.push((address, owner.trim().to_owned()));
            }
        }
        Ok(out)
    }

    fn port_path(&self, key: &str) -> PathBuf {
        self.root.join("ports").join(key)
    }

    /// Claims a host port (`tcp-8080`) for `container`; false if taken.
    pub fn claim_port(&self, key: &str, container: &str) -> Result<bool> {
        claim(&self.port_path(key), container)
    }

    /// Frees the host port if `container` holds it.
    pub fn release_port_of(&self, key: &str, container: &str) -> Result<()> {
        release_if_held(&self.port_path(key), container)
    }

    /// Who holds the port, if anyone.
    pub fn port_holder(&self, key: &str) -> Option<String> {
        fs::read_to_string(self.port_path(key))
            .ok()
            .map(|s| s.trim().to_owned())
    }

    /// Every claimed port and its container.
    pub fn claimed_ports(&self) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for (name, path) in entries(&self.root.join("ports"))? {
            let owner = fs::read_to_string(&path).unwrap_or_default();
            out.push((name, owner.trim().to_owned()));
        }
        Ok(out)
    }
}

fn release_if_held(path: &Path, container: &str) -> Result<()> {
    match fs::read_to_string(path) {
        Ok(owner) if owner.trim() == container => remove_file(path),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetError::io(format!("reading {}", path.display()), e)),
    }
}

fn claim(path: &Path, container: &str) -> Result<bool> {
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(mut file) => {
            file.write_all(container.as_bytes())
                .map_err(|e| NetError::io(format!("writing {}", path.display()), e))?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(NetError::io(format!("creating {}", path.display()), e)),
    }
}

fn entries(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let read = match fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(NetError::io(format!("reading {}", dir.display()), e)),
    };
    let mut out = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| NetError::io(format!("reading {}", dir.display()), e))?;
        if let Some(name) = entry.file_name().to_str() {
            out.push((name.to_owned(), entry.path()));
        }
    }
    Ok(out)
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            NetError::io(
                format!("reading {}", path.display()),
                io::Error::new(io::ErrorKind::InvalidData, e),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(NetError::io(format!("reading {}", path.display()), e)),
    }
}

fn read_all<T: DeserializeOwned>(dir: &Path) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for (name, path) in entries(dir)? {
        if name.ends_with(".json") {
            if let Some(item) = read_json(&path)? {
                out.push(item);
            }
        }
    }
    Ok(out)
}

/// Written whole or not at all (a temp file renamed over the old one).
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| NetError::io("encoding a record", io::Error::other(e)))?;
    write_atomically(path, &bytes)
}

pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes)
        .and_then(|()| fs::rename(&tmp, path))
        .map_err(|e| NetError::io(format!("writing {}", path.display()), e))
}

fn remove_file(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(NetError::io(format!("removing {}", path.display()), e))
        }
        _ => Ok(()),
    }
}

fn remove_dir_all(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(NetError::io(format!("removing {}", path.display()), e))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_claimed_once_and_freed() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().to_owned());
        state.prepare().unwrap();
        let ip = Ipv4Addr::new(10, 88, 0, 2);
        assert!(state.claim_address("bridge", ip, "a").unwrap());
        assert!(!state.claim_address("bridge", ip, "b").unwrap());
        assert_eq!(
            state.claimed_addresses("bridge").unwrap(),
            [(ip, "a".to_owned())]
        );
        // Only its holder frees it.
        state.release_address_of("bridge", ip, "b").unwrap();
        assert!(!state.claim_address("bridge", ip, "b").unwrap());
        state.release_address_of("bridge", ip, "a").unwrap();
        assert!(state.claim_address("bridge", ip, "b").unwrap());
        assert!(state.claim_port("tcp-80", "a").unwrap());
        assert!(!state.claim_port("tcp-80", "b").unwrap());
        assert_eq!(state.port_holder("tcp-80").as_deref(), Some("a"));
    }
}
