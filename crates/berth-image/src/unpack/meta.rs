//! Entry metadata: reading it from tar and PAX headers, applying it without
//! following the leaf.

use super::sparse::Sparse;
use super::state::{os, Unpacker, OPAQUE_XATTR};
use crate::error::{self, ImageError};
use rustix::fd::{AsRawFd, BorrowedFd, OwnedFd};
use rustix::fs::{self as rfs, AtFlags, Gid, Mode, Timespec, Timestamps, Uid, XattrFlags};
use rustix::io::Errno;
use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, Read};
use std::os::unix::ffi::OsStringExt;

/// Metadata of one entry, with PAX overrides applied.
pub(super) struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub times: Timestamps,
    pub xattrs: Vec<(String, Vec<u8>)>,
    pub sparse: Option<Sparse>,
}

impl Unpacker<'_> {
    pub(super) fn meta<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        name: &str,
    ) -> Result<Meta, ImageError> {
        let header = entry.header();
        let bad = |what: &str, e: io::Error| self.fail(name, format!("bad {what} in header: {e}"));
        let mode = header.mode().map_err(|e| bad("mode", e))? & 0o7777;
        let uid = header.uid().map_err(|e| bad("uid", e))?;
        let gid = header.gid().map_err(|e| bad("gid", e))?;
        let uid =
            u32::try_from(uid).map_err(|_| self.fail(name, format!("uid {uid} is too large")))?;
        let gid =
            u32::try_from(gid).map_err(|_| self.fail(name, format!("gid {gid} is too large")))?;
        let mtime = header.mtime().map_err(|e| bad("mtime", e))?;
        let mut mtime = Timespec {
            tv_sec: i64::try_from(mtime).unwrap_or(i64::MAX),
            tv_nsec: 0,
        };
        let mut atime = None;
        let mut xattrs = Vec::new();
        let mut gnu_sparse: HashMap<String, Vec<u8>> = HashMap::new();
        let extensions = entry
            .pax_extensions()
            .map_err(|e| error::read_error(self.label, Some(name), e))?;
        if let Some(extensions) = extensions {
            for ext in extensions {
                let ext = ext.map_err(|e| self.fail(name, format!("malformed PAX header: {e}")))?;
                let key = ext
                    .key()
                    .map_err(|_| self.fail(name, "PAX header key is not UTF-8"))?;
                let value = ext.value_bytes();
                if let Some(xattr) = key.strip_prefix("SCHILY.xattr.") {
                    xattrs.push((xattr.to_owned(), value.to_vec()));
                } else if let Some(field) = key.strip_prefix("GNU.sparse.") {
                    gnu_sparse.insert(field.to_owned(), value.to_vec());
                } else if key == "mtime" {
                    mtime = parse_pax_time(value)
                        .ok_or_else(|| self.fail(name, "malformed PAX mtime"))?;
                } else if key == "atime" {
                    atime = Some(
                        parse_pax_time(value)
                            .ok_or_else(|| self.fail(name, "malformed PAX atime"))?,
                    );
                }
            }
        }
        let sparse = match gnu_sparse.is_empty() {
            true => None,
            false => Some(self.sparse_info(name, gnu_sparse)?),
        };
        Ok(Meta {
            mode,
            uid,
            gid,
            times: Timestamps {
                last_access: atime.unwrap_or(mtime),
                last_modification: mtime,
            },
            xattrs,
            sparse,
        })
    }

    /// Owner, mode and xattrs through an fd (regular files, directories).
    pub(super) fn apply_fd_meta(
        &self,
        name: &str,
        fd: BorrowedFd<'_>,
        meta: &Meta,
    ) -> Result<(), ImageError> {
        rfs::fchown(
            fd,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
        )
        .map_err(|e| self.os(name, "setting the owner", e))?;
        // After chown, which clears set-uid and set-gid.
        rfs::fchmod(fd, Mode::from_raw_mode(meta.mode))
            .map_err(|e| self.os(name, "setting the mode", e))?;
        for (key, value) in &meta.xattrs {
            if self.skip_xattr(name, key) {
                continue;
            }
            let result = rfs::fsetxattr(fd, key.as_str(), value, XattrFlags::empty());
            self.xattr_result(name, key, result)?;
        }
        Ok(())
    }

    /// Owner, (mode), xattrs and times of a leaf that has no usable fd
    /// (symlinks, device nodes, fifos), by name relative to its directory
    /// and never following it.
    pub(super) fn apply_leaf_meta(
        &self,
        name: &str,
        dir: &OwnedFd,
        leaf: &[u8],
        meta: &Meta,
        set_mode: bool,
    ) -> Result<(), ImageError> {
        rfs::chownat(
            dir,
            os(leaf),
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.os(name, "setting the owner", e))?;
        if set_mode {
            // Only for nodes we just created ourselves in our private staging
            // directory (not symlinks), so following is not a concern; opening
            // a device node to fchmod it would be.
            rfs::chmodat(
                dir,
                os(leaf),
                Mode::from_raw_mode(meta.mode),
                AtFlags::empty(),
            )
            .map_err(|e| self.os(name, "setting the mode", e))?;
        }
        if !meta.xattrs.is_empty() {
            // lsetxattr on /proc/self/fd/<dir>/<leaf>: the directory is the one
            // we resolved safely; the leaf itself is not followed.
            let mut path = OsString::from(format!("/proc/self/fd/{}/", dir.as_raw_fd())).into_vec();
            path.extend_from_slice(leaf);
            let path = OsString::from_vec(path);
            for (key, value) in &meta.xattrs {
                if self.skip_xattr(name, key) {
                    continue;
                }
                let result = rfs::lsetxattr(&path, key.as_str(), value, XattrFlags::empty());
                self.xattr_result(name, key, result)?;
            }
        }
        rfs::utimensat(dir, os(leaf), &meta.times, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.os(name, "setting times", e))
    }

    /// Overlayfs interprets `trusted.overlay.*` (redirects, metacopy, origin)
    /// on its lower layers; only the opaque marker may come from an image.
    pub(super) fn skip_xattr(&self, name: &str, key: &str) -> bool {
        let overlay = key.starts_with("trusted.overlay.") || key.starts_with("user.overlay.");
        if overlay && key != OPAQUE_XATTR {
            tracing::warn!(
                layer = self.label,
                entry = name,
                xattr = key,
                "dropping overlayfs xattr from image"
            );
            return true;
        }
        false
    }

    /// Like Docker, an xattr the file system or kernel refuses (EPERM,
    /// EOPNOTSUPP) is skipped with a warning rather than failing the import.
    pub(super) fn xattr_result(
        &self,
        name: &str,
        key: &str,
        result: rustix::io::Result<()>,
    ) -> Result<(), ImageError> {
        match result {
            Ok(()) => Ok(()),
            Err(e @ (Errno::PERM | Errno::OPNOTSUPP)) => {
                tracing::warn!(layer = self.label, entry = name, xattr = key, error = %e, "xattr not set");
                Ok(())
            }
            Err(e) => Err(self.os(name, &format!("setting xattr {key}"), e)),
        }
    }
}

/// Parses a PAX time (`1700000000` or `1700000000.5`, possibly negative).
fn parse_pax_time(value: &[u8]) -> Option<Timespec> {
    let text = std::str::from_utf8(value).ok()?;
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    if secs.is_empty()
        || !secs.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: i64 = 0;
    for (i, digit) in frac.bytes().take(9).enumerate() {
        nanos += i64::from(digit - b'0') * 10i64.pow(8 - i as u32);
    }
    Some(if negative {
        if nanos == 0 {
            Timespec {
                tv_sec: -secs,
                tv_nsec: 0,
            }
        } else {
            Timespec {
                tv_sec: -secs - 1,
                tv_nsec: 1_000_000_000 - nanos,
            }
        }
    } else {
        Timespec {
            tv_sec: secs,
            tv_nsec: nanos,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pax_times() {
        let t = parse_pax_time(b"1700000000.25").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (1_700_000_000, 250_000_000));
        let t = parse_pax_time(b"-1.5").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (-2, 500_000_000));
        assert!(parse_pax_time(b"12x").is_none());
        assert!(parse_pax_time(b"").is_none());
    }
}
