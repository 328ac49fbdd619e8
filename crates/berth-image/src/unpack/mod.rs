//! Safe unpacking of one layer tar into a directory, the way Docker does it,
//! but without ever following a path out of that directory.
//!
//! Layer archives are untrusted: they may try to write outside the layer
//! (`../x`, `/etc/x`, or `evil -> /etc` followed by `evil/x`), to hard-link a
//! host file in, or to trick the unpacker into following a symlink it just
//! created. Every path is therefore handled as follows:
//!
//! * Entry names are normalised lexically: leading `/` and `.` components are
//!   dropped (as Docker does), `..` pops a component, and a `..` that would
//!   climb above the layer root rejects the whole archive.
//! * The *parent* directory of an entry is opened with `openat2` and
//!   `RESOLVE_IN_ROOT`, so symlinks met on the way (created by earlier entries)
//!   resolve as they would inside the container: an absolute or `..`-laden
//!   target is clamped to the layer root and can never reach the host.
//!   Missing parents are created (mode 0755, as Docker does); a parent that is
//!   a symlink to nothing is refused.
//! * The *leaf* is created with an `*at` call relative to that parent fd that
//!   never follows it (`O_CREAT|O_EXCL|O_NOFOLLOW`, `mkdirat`, `symlinkat`,
//!   `mknodat`, `linkat` without `AT_SYMLINK_FOLLOW`, `AT_SYMLINK_NOFOLLOW`
//!   for ownership and times). An existing leaf is removed first (a later
//!   entry wins) unless both are directories, in which case only the
//!   metadata is updated.
//!
//! Whiteouts are converted to overlayfs form so the directory can be used as
//! a lowerdir directly: `.wh.NAME` becomes a 0/0 character device `NAME`, and
//! `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its directory.
//!
//! Metadata is preserved: owner, mode including set-uid/set-gid/sticky
//! (applied after `chown`, which clears them), PAX `SCHILY.xattr.*` extended
//! attributes (after `chown`, which clears `security.capability`), and mtimes
//! (directories last, once their contents stopped changing). GNU tar's PAX
//! sparse files are expanded with their holes, as Go's archive/tar does.

mod meta;
mod paths;
mod sparse;
mod state;

use crate::error::{self, ImageError};
use meta::Meta;
pub(crate) use paths::normalize;
use paths::split;
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{self as rfs, AtFlags, FileType, Gid, Mode, OFlags, Uid, XattrFlags};
use rustix::io::Errno;
pub(crate) use state::UnpackStats;
use state::{os, Unpacker, OPAQUE_XATTR};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use tar::EntryType;

const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const COPY_BUFFER: usize = 128 << 10;

/// Unpacks the tar stream `reader` into the (existing, empty) directory
/// `root`. Subtrees that entries replace are moved into `trash` (same file
/// system) rather than deleted one file at a time.
///
/// Returns the reader, positioned after the tar's end-of-archive marker, so
/// the caller can consume (and hash) whatever follows.
pub(crate) fn unpack<R: Read>(
    reader: R,
    root: &Path,
    trash: &Path,
    label: &str,
) -> Result<(R, UnpackStats), ImageError> {
    let open = |path: &Path| {
        rfs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ImageError::io_at("opening", path, e))
    };
    let mut unpacker = Unpacker {
        root: open(root)?,
        trash: open(trash)?,
        trash_seq: 0,
        label,
        dir_times: HashMap::new(),
        buf: vec![0; COPY_BUFFER],
        stats: UnpackStats::default(),
    };
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| error::read_error(label, None, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| error::read_error(label, None, e))?;
        unpacker.entry(&mut entry)?;
    }
    unpacker.finish()?;
    Ok((archive.into_inner(), unpacker.stats))
}

impl Unpacker<'_> {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), ImageError> {
        let mut raw = entry.path_bytes().into_owned();
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            tracing::debug!(layer = self.label, "ignoring PAX global header");
            return Ok(());
        }
        self.stats.entries += 1;
        let meta = self.meta(entry, &String::from_utf8_lossy(&raw))?;
        // A PAX sparse file is stored under a made-up name.
        if let Some(real) = meta.sparse.as_ref().and_then(|s| s.name.clone()) {
            raw = real;
        }
        let name = String::from_utf8_lossy(&raw).into_owned();
        if raw.contains(&0) {
            return Err(self.fail(&name, "path contains a NUL byte"));
        }
        let path = normalize(&raw).map_err(|reason| self.fail(&name, reason))?;
        // Old tars mark directories as regular files with a trailing slash.
        let is_dir = kind.is_dir() || (kind.is_file() && raw.ends_with(b"/"));

        if path.is_empty() {
            if !is_dir {
                return Err(self.fail(&name, "names the layer root but is not a directory"));
            }
            self.apply_fd_meta(&name, self.root.as_fd(), &meta)?;
            self.dir_times.insert(Vec::new(), meta.times);
            return Ok(());
        }

        let (parent, leaf) = split(&path);
        if leaf.starts_with(WHITEOUT_PREFIX) {
            return self.whiteout(&name, parent, leaf, &meta);
        }
        let dir = self.ensure_dir(&name, parent)?;
        if is_dir {
            return self.directory(&name, &dir, leaf, &path, meta);
        }
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.regular(&name, entry, &dir, leaf, &path, &meta)
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| self.fail(&name, "symbolic link without a target"))?;
                self.symlink(&name, &dir, leaf, &path, &target, &meta)
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .ok_or_else(|| self.fail(&name, "hard link without a target"))?;
                drop(dir);
                self.hardlink(&name, &path, &target)
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                self.special(&name, entry.header(), &dir, leaf, &path, &meta)
            }
            other => Err(self.fail(
                &name,
                format!(
                    "unsupported tar entry type {:?}",
                    char::from(other.as_byte())
                ),
            )),
        }
    }

    fn directory(
        &mut self,
        name: &str,
        dir: &OwnedFd,
        leaf: &[u8],
        path: &[u8],
        meta: Meta,
    ) -> Result<(), ImageError> {
        match self.existing(name, dir, leaf)? {
            Some(FileType::Directory) => {}
            Some(kind) => {
                self.remove(name, dir, leaf, path, kind)?;
                self.mkdir(name, dir, leaf)?;
            }
            None => self.mkdir(name, dir, leaf)?,
        }
        let fd = rfs::openat(
            dir,
            os(leaf),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.os(name, "opening the directory", e))?;
        self.apply_fd_meta(name, fd.as_fd(), &meta)?;
        self.dir_times.insert(path.to_vec(), meta.times);
        Ok(())
    }

    fn mkdir(&self, name: &str, dir: &OwnedFd, leaf: &[u8]) -> Result<(), ImageError> {
        rfs::mkdirat(dir, os(leaf), Mode::from_raw_mode(0o700))
            .map_err(|e| self.os(name, "creating the directory", e))
    }

    fn regular<R: Read>(
        &mut self,
        name: &str,
        entry: &mut tar::Entry<'_, R>,
        dir: &OwnedFd,
        leaf: &[u8],
        path: &[u8],
        meta: &Meta,
    ) -> Result<(), ImageError> {
        self.clear(name, dir, leaf, path)?;
        let fd = rfs::openat(
            dir,
            os(leaf),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| self.os(name, "creating the file", e))?;
        let mut file = File::from(fd);
        if let Some(sparse) = &meta.sparse {
            let written = self.write_sparse(name, entry, &file, sparse)?;
            self.stats.file_bytes += written;
            self.apply_fd_meta(name, file.as_fd(), meta)?;
            return rfs::futimens(&file, &meta.times)
                .map_err(|e| self.os(name, "setting times", e));
        }
        let expected = entry.size();
        let mut written = 0u64;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(error::read_error(self.label, Some(name), e)),
            };
            if let Err(e) = file.write_all(&self.buf[..n]) {
                return Err(self.os(name, "writing the file", e));
            }
            written += n as u64;
        }
        if written != expected {
            return Err(self.fail(
                name,
                format!("declares {expected} bytes of data but the archive ends after {written}"),
            ));
        }
        self.stats.file_bytes += written;
        self.apply_fd_meta(name, file.as_fd(), meta)?;
        rfs::futimens(&file, &meta.times).map_err(|e| self.os(name, "setting times", e))
    }

    fn symlink(
        &mut self,
        name: &str,
        dir: &OwnedFd,
        leaf: &[u8],
        path: &[u8],
        target: &[u8],
        meta: &Meta,
    ) -> Result<(), ImageError> {
        if target.contains(&0) {
            return Err(self.fail(name, "symbolic link target contains a NUL byte"));
        }
        self.clear(name, dir, leaf, path)?;
        // The target is stored verbatim: it is interpreted inside the
        // container (or, here, with RESOLVE_IN_ROOT), never on the host.
        rfs::symlinkat(os(target), dir, os(leaf))
            .map_err(|e| self.os(name, "creating the symbolic link", e))?;
        self.apply_leaf_meta(name, dir, leaf, meta, false)
    }

    fn hardlink(&mut self, name: &str, path: &[u8], target_raw: &[u8]) -> Result<(), ImageError> {
        let shown = String::from_utf8_lossy(target_raw);
        if target_raw.contains(&0) {
            return Err(self.fail(name, "hard link target contains a NUL byte"));
        }
        let target = normalize(target_raw).map_err(|_| {
            self.fail(
                name,
                format!("hard link target {shown:?} is outside the layer"),
            )
        })?;
        if target.is_empty() {
            return Err(self.fail(name, "hard link to the layer root"));
        }
        let missing = format!("hard link target {shown:?} does not exist in the layer");
        let (parent, leaf) = split(path);
        let dir = self.ensure_dir(name, parent)?;
        if target == path {
            // A link to itself: fine if it is already there.
            return match self.existing(name, &dir, leaf)? {
                Some(_) => Ok(()),
                None => Err(self.fail(name, missing)),
            };
        }
        self.clear(name, &dir, leaf, path)?;
        let (target_parent, target_leaf) = split(&target);
        let target_dir = match self.open_dir(target_parent) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => return Err(self.fail(name, missing)),
            Err(e) => return Err(self.os(name, "opening the hard link target's directory", e)),
        };
        match self.existing(name, &target_dir, target_leaf)? {
            None => return Err(self.fail(name, missing)),
            Some(FileType::Directory) => {
                return Err(self.fail(name, format!("hard link target {shown:?} is a directory")))
            }
            Some(_) => {}
        }
        // No AT_SYMLINK_FOLLOW: a symlink target is linked as the symlink.
        rfs::linkat(
            &target_dir,
            os(target_leaf),
            &dir,
            os(leaf),
            AtFlags::empty(),
        )
        .map_err(|e| self.os(name, "creating the hard link", e))
    }

    fn special(
        &mut self,
        name: &str,
        header: &tar::Header,
        dir: &OwnedFd,
        leaf: &[u8],
        path: &[u8],
        meta: &Meta,
    ) -> Result<(), ImageError> {
        let device = |header: &tar::Header| -> Result<rfs::Dev, ImageError> {
            let major = header.device_major().ok().flatten();
            let minor = header.device_minor().ok().flatten();
            match (major, minor) {
                (Some(major), Some(minor)) => Ok(rfs::makedev(major, minor)),
                _ => Err(self.fail(name, "device entry without valid device numbers")),
            }
        };
        let (file_type, dev) = match header.entry_type() {
            EntryType::Char => (FileType::CharacterDevice, device(header)?),
            EntryType::Block => (FileType::BlockDevice, device(header)?),
            _ => (FileType::Fifo, 0),
        };
        self.clear(name, dir, leaf, path)?;
        rfs::mknodat(dir, os(leaf), file_type, Mode::from_raw_mode(0o600), dev)
            .map_err(|e| self.os(name, "creating the device node", e))?;
        self.apply_leaf_meta(name, dir, leaf, meta, true)
    }

    fn whiteout(
        &mut self,
        name: &str,
        parent: &[u8],
        leaf: &[u8],
        meta: &Meta,
    ) -> Result<(), ImageError> {
        let dir = self.ensure_dir(name, parent)?;
        if leaf == OPAQUE_MARKER {
            return rfs::fsetxattr(&dir, OPAQUE_XATTR, b"y", XattrFlags::empty()).map_err(|e| {
                ImageError::io(
                    format!(
                        "unpacking {}: marking the directory of {name:?} opaque \
                         ({OPAQUE_XATTR}; needs root and a file system with trusted.* xattrs)",
                        self.label
                    ),
                    e,
                )
            });
        }
        if leaf.starts_with(WHITEOUT_META_PREFIX) {
            // AUFS bookkeeping (.wh..wh.plnk, .wh..wh.aufs): meaningless here.
            tracing::debug!(
                layer = self.label,
                entry = name,
                "ignoring AUFS metadata entry"
            );
            return Ok(());
        }
        let hidden = &leaf[WHITEOUT_PREFIX.len()..];
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(self.fail(name, "whiteout does not name a file"));
        }
        let mut hidden_path = parent.to_vec();
        if !hidden_path.is_empty() {
            hidden_path.push(b'/');
        }
        hidden_path.extend_from_slice(hidden);
        self.clear(name, &dir, hidden, &hidden_path)?;
        rfs::mknodat(
            &dir,
            os(hidden),
            FileType::CharacterDevice,
            Mode::empty(),
            rfs::makedev(0, 0),
        )
        .map_err(|e| self.os(name, "creating the whiteout device", e))?;
        rfs::chownat(
            &dir,
            os(hidden),
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.os(name, "setting the whiteout's owner", e))
    }

    fn finish(&mut self) -> Result<(), ImageError> {
        for (path, times) in std::mem::take(&mut self.dir_times) {
            let name = String::from_utf8_lossy(&path).into_owned();
            if path.is_empty() {
                rfs::futimens(&self.root, &times)
                    .map_err(|e| self.os(&name, "setting times", e))?;
                continue;
            }
            let (parent, leaf) = split(&path);
            let dir = match self.open_dir(parent) {
                Ok(dir) => dir,
                Err(Errno::NOENT | Errno::NOTDIR) => continue,
                Err(e) => return Err(self.os(&name, "opening the directory", e)),
            };
            match rfs::utimensat(&dir, os(leaf), &times, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(self.os(&name, "setting times", e)),
            }
        }
        Ok(())
    }
}
