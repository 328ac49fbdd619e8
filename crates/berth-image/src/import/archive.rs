//! Reading a tar that may hold an image (`docker save` output or a packed
//! OCI layout) rather than a root file system.
//!
//! Such archives list their index (`manifest.json`, `index.json`) after the
//! blobs, so they cannot be processed as a stream: like `docker load`, the
//! members are first copied into the staging area (hashed on the way, so no
//! blob is read twice), then the image is put together from there.
//!
//! The decision "image or rootfs" is made on the fly: image archives contain
//! only a handful of well-known names (`manifest.json`, `blobs/sha256/<hex>`,
//! `<hex>/layer.tar`, ...). The first entry that is not one of them (for a
//! rootfs tarball, typically the very first: `./`, `bin/`, `etc/`) means the
//! file is a rootfs, and reading stops at once.

use crate::digest::{self, ProgressReader};
use crate::error::{self, ImageError};
use crate::import::plan::SourceFile;
use crate::import::sniff::{self, Compression};
use crate::import::staging::Staging;
use crate::layout::{self, MAX_JSON_BYTES};
use crate::unpack::normalize;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

/// The named files of an image archive, staged on disk.
pub(crate) struct ArchiveMembers {
    label: String,
    files: HashMap<String, SourceFile>,
    /// Symbolic and hard links between members (Docker links repeated layers).
    links: HashMap<String, String>,
}

pub(crate) enum Scanned {
    Image(ArchiveMembers),
    NotAnImage,
}

/// What a member's name says it is.
#[derive(Debug, PartialEq, Eq)]
enum Shape {
    Dir,
    File,
}

fn shape(name: &str) -> Option<Shape> {
    let is_hex = digest::is_sha256_hex;
    let is_encoded = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'))
    };
    let parts: Vec<&str> = name.split('/').collect();
    match parts.as_slice() {
        [""] | ["blobs"] => Some(Shape::Dir),
        ["blobs", alg] if alg.bytes().all(|b| b.is_ascii_alphanumeric()) => Some(Shape::Dir),
        ["blobs", alg, enc]
            if alg.bytes().all(|b| b.is_ascii_alphanumeric()) && is_encoded(enc) =>
        {
            Some(Shape::File)
        }
        ["manifest.json" | "repositories" | "index.json" | "oci-layout"] => Some(Shape::File),
        [id] if is_hex(id) => Some(Shape::Dir),
        [config] if config.strip_suffix(".json").is_some_and(is_hex) => Some(Shape::File),
        [id, "json" | "VERSION" | "layer.tar"] if is_hex(id) => Some(Shape::File),
        _ => None,
    }
}

/// Reads the archive at `source` if it is an image archive, staging its
/// members; says `NotAnImage` (having staged nothing useful) otherwise.
pub(crate) fn scan(
    source: &Path,
    compression: Compression,
    staging: &mut Staging<'_>,
    label: &str,
    progress: &mut dyn FnMut(u64),
) -> Result<Scanned, ImageError> {
    let file = File::open(source).map_err(|e| ImageError::io_at("opening", source, e))?;
    let decoded = sniff::decoder(ProgressReader::new(file, progress), compression, label)?;
    let mut archive = tar::Archive::new(decoded);
    let mut members = ArchiveMembers {
        label: label.to_owned(),
        files: HashMap::new(),
        links: HashMap::new(),
    };
    let entries = archive
        .entries()
        .map_err(|e| error::read_error(label, None, e))?;
    let mut first = true;
    for entry in entries {
        let mut entry = entry.map_err(|e| match first {
            // Nothing parsed at all: say what the file is not.
            true if e.raw_os_error().is_none() => ImageError::invalid_archive(
                label,
                format!(
                    "not a tar archive (plain, gzip or zstd): {}",
                    error::short_detail(&e)
                ),
            ),
            _ => error::read_error(label, None, e),
        })?;
        first = false;
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            continue;
        }
        let raw = entry.path_bytes().into_owned();
        let Some(name) = normalize(&raw).ok().and_then(|n| String::from_utf8(n).ok()) else {
            return Ok(Scanned::NotAnImage);
        };
        match shape(&name) {
            Some(Shape::Dir) if kind.is_dir() => {}
            Some(Shape::File) if kind.is_file() || kind == tar::EntryType::Continuous => {
                let path = staging.member_path();
                let (sha256, size) = stage_member(&mut entry, &path, label, &name)?;
                members.files.insert(
                    name,
                    SourceFile {
                        path,
                        sha256: Some(sha256),
                        size,
                    },
                );
            }
            Some(Shape::File) if kind.is_symlink() || kind.is_hard_link() => {
                let Some(target) = entry.link_name_bytes() else {
                    return Ok(Scanned::NotAnImage);
                };
                // A symlink is relative to its directory, a hard link to the root.
                let mut full = Vec::new();
                if kind.is_symlink() && !target.starts_with(b"/") {
                    if let Some((dir, _)) = name.rsplit_once('/') {
                        full.extend_from_slice(dir.as_bytes());
                        full.push(b'/');
                    }
                }
                full.extend_from_slice(&target);
                let Some(target) = normalize(&full)
                    .ok()
                    .and_then(|t| String::from_utf8(t).ok())
                else {
                    return Ok(Scanned::NotAnImage);
                };
                members.links.insert(name, target);
            }
            _ => return Ok(Scanned::NotAnImage),
        }
    }
    if members.get("manifest.json").is_some() || members.get("index.json").is_some() {
        Ok(Scanned::Image(members))
    } else {
        Ok(Scanned::NotAnImage)
    }
}

fn stage_member<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    path: &Path,
    label: &str,
    name: &str,
) -> Result<(String, u64), ImageError> {
    let mut out =
        layout::create_new(path, 0o600).map_err(|e| ImageError::io_at("creating", path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 128 << 10];
    let mut size = 0u64;
    loop {
        let n = match entry.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(error::read_error(label, Some(name), e)),
        };
        out.write_all(&buf[..n])
            .map_err(|e| ImageError::io_at("writing", path, e))?;
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    if size != entry.size() {
        return Err(ImageError::invalid_entry(
            label,
            name,
            format!(
                "declares {} bytes but the archive ends after {size}",
                entry.size()
            ),
        ));
    }
    Ok((hex::encode(hasher.finalize()), size))
}

impl ArchiveMembers {
    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    /// The member called `name`, following links between members.
    pub(crate) fn get(&self, name: &str) -> Option<&SourceFile> {
        let mut name = name;
        for _ in 0..16 {
            if let Some(file) = self.files.get(name) {
                return Some(file);
            }
            name = self.links.get(name)?;
        }
        None
    }

    /// Reads a small JSON member, if present.
    pub(crate) fn read_json(&self, name: &str) -> Result<Option<Vec<u8>>, ImageError> {
        let Some(file) = self.get(name) else {
            return Ok(None);
        };
        read_json_file(&file.path, &self.label, name).map(Some)
    }
}

/// Reads a JSON document of an import source, refusing absurd sizes.
pub(crate) fn read_json_file(path: &Path, label: &str, name: &str) -> Result<Vec<u8>, ImageError> {
    layout::read_limited(path, MAX_JSON_BYTES).map_err(|e| match e.kind() {
        io::ErrorKind::InvalidData => ImageError::invalid_entry(label, name, e.to_string()),
        _ => ImageError::io_at("reading", path, e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_image_archive_names() {
        let hex = "ab".repeat(32);
        for name in [
            String::new(),
            "manifest.json".into(),
            "index.json".into(),
            "oci-layout".into(),
            "repositories".into(),
            format!("{hex}.json"),
            format!("{hex}/layer.tar"),
            format!("blobs/sha256/{hex}"),
        ] {
            assert!(shape(&name).is_some(), "{name}");
        }
        for name in [
            "bin",
            "etc/passwd",
            "layer.tar",
            "blobs/sha256/x/y",
            "abc/json",
        ] {
            assert!(shape(name).is_none(), "{name}");
        }
    }
}
