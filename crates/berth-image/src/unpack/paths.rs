//! Resolving entry paths inside the layer: lexical normalisation, parent
//! directories opened with `RESOLVE_IN_ROOT`, and clearing a leaf for its
//! replacement.

use super::state::{os, Unpacker};
use crate::error::ImageError;
use rustix::fd::OwnedFd;
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use std::ffi::OsStr;

/// Normalises an entry name to `a/b/c` relative to the layer root ("" for the
/// root itself): drops leading `/`, empty and `.` components, resolves `..`
/// lexically, and refuses a `..` that would leave the root.
pub(crate) fn normalize(raw: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for component in raw.split(|b| *b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => {
                if parts.pop().is_none() {
                    return Err("path escapes the layer root through \"..\"");
                }
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join(&b'/'))
}

/// Splits a normalised, non-empty path into (parent, leaf).
pub(super) fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

impl Unpacker<'_> {
    /// Opens directory `rel` (normalised, "" = root) of the layer, resolving
    /// symlinks on the way as if the layer were `/`.
    pub(super) fn open_dir(&self, rel: &[u8]) -> Result<OwnedFd, Errno> {
        let path = if rel.is_empty() {
            OsStr::new(".")
        } else {
            os(rel)
        };
        let mut attempts = 0;
        loop {
            match rfs::openat2(
                &self.root,
                path,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
            ) {
                // The kernel asks for a retry if a rename raced the lookup.
                Err(Errno::AGAIN) if attempts < 16 => attempts += 1,
                result => return result,
            }
        }
    }

    /// Opens directory `rel`, creating missing components (mode 0755).
    pub(super) fn ensure_dir(&self, name: &str, rel: &[u8]) -> Result<OwnedFd, ImageError> {
        match self.open_dir(rel) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) => {}
            Err(e) => return Err(self.parent_error(name, rel, e)),
        }
        let mut current = self
            .open_dir(b"")
            .map_err(|e| self.os(name, "opening the layer root", e))?;
        let mut end = 0;
        for component in rel.split(|b| *b == b'/') {
            end += component.len();
            let prefix = &rel[..end];
            end += 1;
            current = match self.open_dir(prefix) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    match rfs::mkdirat(&current, os(component), Mode::from_raw_mode(0o755)) {
                        Ok(()) => {}
                        Err(Errno::EXIST) => {
                            return Err(self.fail(
                                name,
                                format!(
                                    "parent {:?} is a symbolic link to a path that does not exist in the layer",
                                    String::from_utf8_lossy(prefix)
                                ),
                            ))
                        }
                        Err(e) => return Err(self.os(name, "creating a parent directory", e)),
                    }
                    let fd = self
                        .open_dir(prefix)
                        .map_err(|e| self.parent_error(name, prefix, e))?;
                    // mkdirat is subject to the umask; Docker's parents are 0755.
                    rfs::fchmod(&fd, Mode::from_raw_mode(0o755))
                        .map_err(|e| self.os(name, "setting a parent directory's mode", e))?;
                    fd
                }
                Err(e) => return Err(self.parent_error(name, prefix, e)),
            };
        }
        Ok(current)
    }

    pub(super) fn parent_error(&self, name: &str, rel: &[u8], e: Errno) -> ImageError {
        let rel = String::from_utf8_lossy(rel);
        match e {
            Errno::NOTDIR => self.fail(name, format!("parent {rel:?} is not a directory")),
            Errno::LOOP => self.fail(
                name,
                format!("too many levels of symbolic links resolving parent {rel:?}"),
            ),
            Errno::NOENT => self.fail(
                name,
                format!(
                    "parent {rel:?} is a symbolic link to a path that does not exist in the layer"
                ),
            ),
            e => self.os(name, &format!("opening parent {rel:?}"), e),
        }
    }

    /// The type of `leaf` in `dir` without following it, if it exists.
    pub(super) fn existing(
        &self,
        name: &str,
        dir: &OwnedFd,
        leaf: &[u8],
    ) -> Result<Option<FileType>, ImageError> {
        match rfs::statat(dir, os(leaf), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(self.os(name, "inspecting the existing file", e)),
        }
    }

    /// Removes whatever is at `leaf` so a new entry can take its place.
    pub(super) fn clear(
        &mut self,
        name: &str,
        dir: &OwnedFd,
        leaf: &[u8],
        path: &[u8],
    ) -> Result<(), ImageError> {
        match self.existing(name, dir, leaf)? {
            Some(kind) => self.remove(name, dir, leaf, path, kind),
            None => Ok(()),
        }
    }

    pub(super) fn remove(
        &mut self,
        name: &str,
        dir: &OwnedFd,
        leaf: &[u8],
        path: &[u8],
        kind: FileType,
    ) -> Result<(), ImageError> {
        if kind == FileType::Directory {
            // Moving the subtree away is O(1) and cannot be tricked into
            // following anything; the staging area is deleted as a whole.
            self.trash_seq += 1;
            rfs::renameat(dir, os(leaf), &self.trash, self.trash_seq.to_string())
                .map_err(|e| self.os(name, "replacing the existing directory", e))?;
        } else {
            rfs::unlinkat(dir, os(leaf), AtFlags::empty())
                .map_err(|e| self.os(name, "replacing the existing file", e))?;
        }
        let mut prefix = path.to_vec();
        prefix.push(b'/');
        self.dir_times
            .retain(|p, _| p.as_slice() != path && !p.starts_with(&prefix));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_docker() {
        let ok = |raw: &str, want: &str| {
            assert_eq!(normalize(raw.as_bytes()).unwrap(), want.as_bytes(), "{raw}")
        };
        ok("./", "");
        ok("/", "");
        ok("/etc/passwd", "etc/passwd");
        ok("./usr//bin/./sh", "usr/bin/sh");
        ok("a/../b", "b");
        ok("a/b/../../c/", "c");
        for bad in ["..", "../x", "a/../../x", "/../etc", "./a/./../.."] {
            assert!(normalize(bad.as_bytes()).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn splits_paths() {
        assert_eq!(split(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split(b"c"), (&b""[..], &b"c"[..]));
    }
}
