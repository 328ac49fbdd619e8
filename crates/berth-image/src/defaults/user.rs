//! Resolving a user (numeric, or names from the image's /etc/passwd and
//! /etc/group) to ids, reading the image files safely inside their layer.

use crate::error::ImageError;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// Who the process runs as, and the home directory that goes into `HOME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub home: String,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// `user` is `name|uid[:group|gid]`; `None` (or empty) means root.
pub(crate) fn resolve(user: Option<&str>, layers: &[PathBuf]) -> Result<ResolvedUser, ImageError> {
    let Some(user) = user.filter(|u| !u.is_empty()) else {
        return Ok(ResolvedUser {
            uid: 0,
            gid: 0,
            additional_gids: vec![],
            home: "/root".into(),
        });
    };
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = read_image_file(layers, "etc/passwd").map(|t| parse_passwd(&t));
    let groups = read_image_file(layers, "etc/group").map(|t| parse_group(&t));

    let entry = passwd.as_ref().and_then(|p| {
        p.iter()
            .find(|e| e.name == user_part || e.uid.to_string() == user_part)
    });
    let (uid, default_gid, home, name) = match (user_part.parse::<u32>(), entry) {
        (Ok(uid), e) => (
            uid,
            e.map_or(uid, |e| e.gid),
            e.map_or("/".to_owned(), |e| e.home.clone()),
            e.map(|e| e.name.clone()),
        ),
        (Err(_), Some(e)) => (e.uid, e.gid, e.home.clone(), Some(e.name.clone())),
        (Err(_), None) => {
            return Err(ImageError::invalid_argument(format!(
                "user {user_part:?} is not in the image's /etc/passwd"
            )))
        }
    };
    let gid = match group_part {
        None => default_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => groups
                .as_ref()
                .and_then(|gs| gs.iter().find(|e| e.name == g))
                .map(|e| e.gid)
                .ok_or_else(|| {
                    ImageError::invalid_argument(format!(
                        "group {g:?} is not in the image's /etc/group"
                    ))
                })?,
        },
    };
    let additional_gids = match (&name, &groups) {
        (Some(n), Some(gs)) => gs
            .iter()
            .filter(|g| g.members.iter().any(|m| m == n) && g.gid != gid)
            .map(|g| g.gid)
            .collect(),
        _ => vec![],
    };
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home,
    })
}

/// The file as the container would see it: from the topmost layer that has
/// it, opened with RESOLVE_IN_ROOT so a symlink cannot lead to the host.
fn read_image_file(layers: &[PathBuf], path: &str) -> Option<String> {
    layers
        .iter()
        .rev()
        .find_map(|layer| read_in_root(layer, path))
}

/// Reads `path` inside the layer `root` as the container would resolve it,
/// but only if it is a regular file: berth runs as root on the host, and
/// opening a FIFO or a device node from an image could hang or act on a
/// host device. The file is first opened as a mere path, checked, then read.
fn read_in_root(root: &Path, path: &str) -> Option<String> {
    use rustix::fs::{fstat, openat2, FileType, Mode, OFlags, ResolveFlags};
    let dir: OwnedFd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let handle = openat2(
        &dir,
        path,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .ok()?;
    if FileType::from_raw_mode(fstat(&handle).ok()?.st_mode) != FileType::RegularFile {
        return None;
    }
    let file = rustix::fs::open(
        format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&handle)),
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    )
    .ok()?;
    let mut text = String::new();
    std::fs::File::from(file)
        .take(1 << 20)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
                home: f.get(5).map_or("/".into(), |h| h.to_string()),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}
