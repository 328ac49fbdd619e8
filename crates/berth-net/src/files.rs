//! The name files a container gets: `/etc/hosts` (itself and, on a user
//! network, every other container there) and `/etc/resolv.conf` (the
//! host's resolvers that a container can reach).
//!
//! A hosts file is rewritten in place when its network's members change:
//! the container sees it through a bind mount of the file, which a rename
//! would leave pointing at the old one.

use crate::error::{NetError, Result};
use crate::model::{Attachment, Member};
use berth_core::spec::BindMount;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::net::Ipv4Addr;
use std::path::Path;

/// Where a container's name files go inside it, by file name.
const MOUNTS: [(&str, &str); 2] = [("hosts", "/etc/hosts"), ("resolv.conf", "/etc/resolv.conf")];

/// What a container answers to on its network: its id and its host name
/// (once when they are the same).
pub fn names_of(id: &str, hostname: &str) -> Vec<String> {
    let mut names = vec![id.to_owned(), hostname.to_owned()];
    names.dedup();
    names
}

/// The binds of the name files in `dir`. Read-only: they live in berth's
/// data dir, where a container's writes would count against no limit.
pub fn mounts(dir: &Path) -> Vec<BindMount> {
    MOUNTS
        .iter()
        .map(|(file, inside)| BindMount {
            source: dir.join(file),
            destination: (*inside).to_owned(),
            read_only: true,
        })
        .collect()
}

/// `/etc/hosts` for `own` among `members` (its network's attachments,
/// itself included; empty on the default bridge, whose containers do not
/// resolve each other, as on Docker's).
pub fn hosts(own: &Attachment, members: &[Attachment], remote: &[Member]) -> String {
    let mut text =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    let line = |text: &mut String, address: Ipv4Addr, names: &[String]| {
        if !names.is_empty() {
            text.push_str(&format!("{address}\t{}\n", names.join(" ")));
        }
    };
    line(&mut text, own.address, &own.names);
    let mut others: Vec<&Attachment> = members
        .iter()
        .filter(|m| m.container != own.container)
        .collect();
    others.sort_by_key(|a| a.address);
    for other in others {
        line(&mut text, other.address, &other.names);
    }
    for member in remote {
        line(&mut text, member.address, &member.names);
    }
    text
}

/// `/etc/resolv.conf` from the host's: its search and options lines, and
/// the name servers a container can reach (not the host's loopback ones).
pub fn resolv_conf(host: &str) -> String {
    let mut text = String::new();
    for line in host.lines() {
        let trimmed = line.trim();
        let mut words = trimmed.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                let reachable = words
                    .next()
                    .and_then(|a| a.parse::<std::net::IpAddr>().ok())
                    .is_some_and(|a| !a.is_loopback());
                if reachable {
                    text.push_str(trimmed);
                    text.push('\n');
                }
            }
            Some("search" | "domain" | "options") => {
                text.push_str(trimmed);
                text.push('\n');
            }
            _ => {}
        }
    }
    text
}

/// The container's resolv.conf from the host's. A host whose
/// `/etc/resolv.conf` names only a loopback stub (systemd-resolved's
/// 127.0.0.53) has its real servers in systemd-resolved's own file.
pub fn from_host() -> String {
    for path in ["/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"] {
        let text = resolv_conf(&fs::read_to_string(path).unwrap_or_default());
        if text.lines().any(|l| l.starts_with("nameserver")) {
            return text;
        }
    }
    String::new()
}

/// Writes the container's name files into `dir`.
pub fn write_new(dir: &Path, hosts: &str, resolv_conf: &str) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| NetError::io(format!("creating {}", dir.display()), e))?;
    for (name, text) in [("hosts", hosts), ("resolv.conf", resolv_conf)] {
        let path = dir.join(name);
        fs::write(&path, text)
            .map_err(|e| NetError::io(format!("writing {}", path.display()), e))?;
    }
    Ok(())
}

/// Rewrites a hosts file in place (same inode: the container's bind mount
/// sees the new text).
pub fn rewrite_hosts(dir: &Path, hosts: &str) -> Result<()> {
    let path = dir.join("hosts");
    let write = || -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new().write(true).open(&path)?;
        file.write_all(hosts.as_bytes())?;
        let end = file.stream_position()?;
        file.set_len(end)?;
        file.seek(SeekFrom::Start(0))?;
        Ok(())
    };
    match write() {
        // A container that ended meanwhile: nothing to update.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other.map_err(|e| NetError::io(format!("rewriting {}", path.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(container: &str, last: u8) -> Attachment {
        Attachment {
            container: container.into(),
            network: "n".into(),
            host_link: "bv".into(),
            address: Ipv4Addr::new(10, 96, 0, last),
            names: vec![container.into()],
            ports: Vec::new(),
            egress_rate: None,
            ingress_rate: None,
            holder_pid: 0,
            cni: None,
        }
    }

    #[test]
    fn hosts_list_itself_first_then_the_others() {
        let (a, b) = (member("a", 2), member("b", 3));
        let text = hosts(&b, &[a.clone(), b.clone()], &[]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(&lines[2..], ["10.96.0.3\tb", "10.96.0.2\ta"]);
    }

    #[test]
    fn loopback_resolvers_are_left_out() {
        let host = "# comment\nnameserver 127.0.0.53\nnameserver 10.0.0.53\nsearch example.com\noptions edns0\n";
        assert_eq!(
            resolv_conf(host),
            "nameserver 10.0.0.53\nsearch example.com\noptions edns0\n"
        );
    }
}
