//! The staging area of one import: everything new is built here, and only
//! moved into the store once the whole image checked out.
//!
//! ```text
//! tmp/import-<pid>-<time>-<n>/
//!   members/<n>          files of a docker-save / OCI archive, as read
//!   blobs/<hex>          new blobs, digest verified
//!   layers/<hex>         new layers, fully unpacked, diff_id verified
//!   unpack-<n>/          a layer being unpacked (renamed to layers/ when done)
//!   trash/               subtrees that later archive entries replaced
//! ```
//!
//! Dropping a `Staging` deletes the directory, so a failed import leaves the
//! store as it was. A crashed import leaves it behind for prune, which can
//! tell it is dead because it holds the gc lock exclusively.

use crate::digest::{self, HashingReader, ProgressReader};
use crate::error::{self, ImageError};
use crate::import::plan::SourceFile;
use crate::import::sniff::{self, Compression};
use crate::layout::{self, Layout};
use crate::unpack::{self, UnpackStats};
use rustix::fs::{RenameFlags, CWD};
use rustix::io::Errno;
use sha2::{Digest as _, Sha256};
use std::fs::{self, DirBuilder, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

pub(crate) struct Staging<'a> {
    layout: &'a Layout,
    dir: PathBuf,
    members: PathBuf,
    blobs: PathBuf,
    layers: PathBuf,
    trash: PathBuf,
    seq: u64,
}

/// A blob ready for the new image: already in the store, or staged.
#[derive(Debug, Clone)]
pub(crate) struct BlobRef {
    pub path: PathBuf,
    pub hex: String,
    pub size: u64,
    /// Staged by this import (so not yet known to match anything).
    pub new: bool,
}

impl<'a> Staging<'a> {
    pub(crate) fn create(layout: &'a Layout) -> Result<Staging<'a>, ImageError> {
        let dir = layout.temp_path("import");
        DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| ImageError::io_at("creating staging directory", &dir, e))?;
        let staging = Staging {
            layout,
            members: dir.join("members"),
            blobs: dir.join("blobs"),
            layers: dir.join("layers"),
            trash: dir.join("trash"),
            dir,
            seq: 0,
        };
        for sub in [
            &staging.members,
            &staging.blobs,
            &staging.layers,
            &staging.trash,
        ] {
            fs::create_dir(sub).map_err(|e| ImageError::io_at("creating", sub, e))?;
        }
        Ok(staging)
    }

    fn next(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// A fresh path for an archive member.
    pub(crate) fn member_path(&mut self) -> PathBuf {
        let n = self.next();
        self.members.join(n.to_string())
    }

    fn blob_path(&self, hex: &str) -> PathBuf {
        self.blobs.join(hex)
    }

    pub(crate) fn has_layer(&self, hex: &str) -> bool {
        self.layers.join(hex).is_dir()
    }

    /// Puts a small blob (config, manifest) in place unless the store has it.
    pub(crate) fn add_blob(&mut self, bytes: &[u8]) -> Result<BlobRef, ImageError> {
        let hex = digest::sha256_hex(bytes);
        let size = bytes.len() as u64;
        if self.layout.has_blob(&hex) {
            return Ok(BlobRef {
                path: self.layout.blob_path(&hex),
                hex,
                size,
                new: false,
            });
        }
        let path = self.blob_path(&hex);
        if !path.exists() {
            let mut file = layout::create_new(&path, 0o644)
                .map_err(|e| ImageError::io_at("creating", &path, e))?;
            file.write_all(bytes)
                .map_err(|e| ImageError::io_at("writing", &path, e))?;
        }
        Ok(BlobRef {
            path,
            hex,
            size,
            new: true,
        })
    }

    /// Makes the blob in `src` available with a verified digest: reuses the
    /// store's copy if it has one, otherwise stages it (copying and hashing
    /// external files; moving archive members, which were hashed on arrival).
    pub(crate) fn materialize(
        &mut self,
        src: &SourceFile,
        expected: Option<&str>,
        label: &str,
        what: &str,
    ) -> Result<BlobRef, ImageError> {
        if let (Some(expected), Some(actual)) = (expected, src.sha256.as_deref()) {
            if expected != actual {
                return Err(digest_mismatch(label, what, expected, actual));
            }
        }
        if let Some(hex) = expected.or(src.sha256.as_deref()) {
            if let Some(blob) = self.known_blob(hex)? {
                return Ok(blob);
            }
        }
        let (hex, size) = match &src.sha256 {
            Some(hex) => {
                let dest = self.blob_path(hex);
                fs::rename(&src.path, &dest)
                    .map_err(|e| ImageError::io_at("staging", &src.path, e))?;
                (hex.clone(), src.size)
            }
            None => {
                let n = self.next();
                let tmp = self.blobs.join(format!("incoming-{n}"));
                let (hex, size, _) = copy_hashing(&src.path, &tmp, None, label, &mut |_| {})?;
                if let Some(expected) = expected {
                    if expected != hex {
                        let _ = fs::remove_file(&tmp);
                        return Err(digest_mismatch(label, what, expected, &hex));
                    }
                }
                if let Some(blob) = self.known_blob(&hex)? {
                    let _ = fs::remove_file(&tmp);
                    return Ok(blob);
                }
                let dest = self.blob_path(&hex);
                fs::rename(&tmp, &dest).map_err(|e| ImageError::io_at("staging", &tmp, e))?;
                (hex, size)
            }
        };
        Ok(BlobRef {
            path: self.blob_path(&hex),
            hex,
            size,
            new: true,
        })
    }

    /// Stages an external file (a rootfs tarball) as a blob and, in the same
    /// pass, computes the digest of its uncompressed content (the diff_id).
    pub(crate) fn materialize_layer_file(
        &mut self,
        src: &Path,
        compression: Compression,
        label: &str,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(BlobRef, String), ImageError> {
        let n = self.next();
        let tmp = self.blobs.join(format!("incoming-{n}"));
        let (hex, size, diff) = copy_hashing(src, &tmp, Some(compression), label, progress)?;
        let diff = diff.ok_or_else(|| ImageError::internal("diff_id not computed"))?;
        if let Some(blob) = self.known_blob(&hex)? {
            let _ = fs::remove_file(&tmp);
            return Ok((blob, diff));
        }
        let dest = self.blob_path(&hex);
        fs::rename(&tmp, &dest).map_err(|e| ImageError::io_at("staging", &tmp, e))?;
        Ok((
            BlobRef {
                path: dest,
                hex,
                size,
                new: true,
            },
            diff,
        ))
    }

    fn known_blob(&self, hex: &str) -> Result<Option<BlobRef>, ImageError> {
        for (path, new) in [
            (self.layout.blob_path(hex), false),
            (self.blob_path(hex), true),
        ] {
            match fs::metadata(&path) {
                Ok(meta) if meta.is_file() => {
                    return Ok(Some(BlobRef {
                        path,
                        hex: hex.to_owned(),
                        size: meta.len(),
                        new,
                    }))
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(ImageError::io_at("inspecting", &path, e)),
            }
        }
        Ok(None)
    }

    /// Unpacks a layer blob into a new directory of the staging area, and
    /// moves it to `layers/<diff_id>` once its diff_id checks out (against
    /// `expected_diff` if given). Returns the diff_id.
    pub(crate) fn unpack_layer(
        &mut self,
        blob: &BlobRef,
        compression: Compression,
        expected_diff: Option<&str>,
        label: &str,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(String, UnpackStats), ImageError> {
        let n = self.next();
        let dest = self.dir.join(format!("unpack-{n}"));
        DirBuilder::new()
            .mode(0o755)
            .create(&dest)
            .map_err(|e| ImageError::io_at("creating", &dest, e))?;
        // The layer root must be 0755 whatever the umask (it may be the root
        // of a container); an entry for "./" may change it.
        fs::set_permissions(&dest, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(|e| ImageError::io_at("setting mode of", &dest, e))?;
        let file =
            File::open(&blob.path).map_err(|e| ImageError::io_at("opening", &blob.path, e))?;
        let counted = ProgressReader::new(file, progress);
        let decoded = sniff::decoder(counted, compression, label)?;
        let (hashing, stats) =
            unpack::unpack(HashingReader::new(decoded), &dest, &self.trash, label)?;
        let (diff, _) = hashing
            .finish()
            .map_err(|e| error::read_error(label, None, e))?;
        if let Some(expected) = expected_diff {
            if expected != diff {
                return Err(diff_id_mismatch(label, expected, &diff));
            }
        }
        let final_path = self.layers.join(&diff);
        if final_path.exists() {
            // The same layer twice in one image: keep the first.
            let n = self.next();
            fs::rename(&dest, self.trash.join(format!("dup-{n}")))
                .map_err(|e| ImageError::io_at("discarding", &dest, e))?;
        } else {
            fs::rename(&dest, &final_path).map_err(|e| ImageError::io_at("staging", &dest, e))?;
        }
        Ok((diff, stats))
    }

    /// Moves everything staged into the store: data synced first, then blobs
    /// and layers renamed into place (never replacing what is there: a
    /// concurrent import may have put the same content in place already).
    /// The caller then points the tag at the image.
    pub(crate) fn publish(&self) -> Result<(), ImageError> {
        let dir = File::open(&self.dir).map_err(|e| ImageError::io_at("opening", &self.dir, e))?;
        rustix::fs::syncfs(&dir).map_err(|e| ImageError::io_at("syncing", &self.dir, e))?;
        for (from, to) in [
            (&self.blobs, &self.layout.blobs),
            (&self.layers, &self.layout.layers),
        ] {
            let entries = fs::read_dir(from).map_err(|e| ImageError::io_at("reading", from, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| ImageError::io_at("reading", from, e))?;
                let name = entry.file_name();
                let Some(name) = name.to_str().filter(|n| digest::is_sha256_hex(n)) else {
                    continue;
                };
                let (src, dst) = (from.join(name), to.join(name));
                match rustix::fs::renameat_with(CWD, &src, CWD, &dst, RenameFlags::NOREPLACE) {
                    Ok(()) | Err(Errno::EXIST | Errno::NOTEMPTY) => {}
                    Err(e) => return Err(ImageError::io_at("moving into the store", &src, e)),
                }
            }
        }
        Ok(())
    }
}

impl Drop for Staging<'_> {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.dir.display(), error = %e, "could not remove staging directory; prune will");
            }
        }
    }
}

/// Copies `src` to a new file `dest`, returning the sha256 and size of the
/// bytes and, if `compression` is given, the sha256 of their decompressed
/// content too (all in one pass).
fn copy_hashing(
    src: &Path,
    dest: &Path,
    compression: Option<Compression>,
    label: &str,
    progress: &mut dyn FnMut(u64),
) -> Result<(String, u64, Option<String>), ImageError> {
    let input = File::open(src).map_err(|e| ImageError::io_at("opening", src, e))?;
    let output =
        layout::create_new(dest, 0o644).map_err(|e| ImageError::io_at("creating", dest, e))?;
    let mut tee = Tee {
        input: ProgressReader::new(input, progress),
        output,
        hasher: Sha256::new(),
        bytes: 0,
        dest,
        write_error: None,
    };
    let diff = match compression {
        Some(compression) => {
            let decoded = sniff::decoder(&mut tee, compression, label)?;
            let result = HashingReader::new(decoded).finish();
            if let Some(e) = tee.write_error.take() {
                return Err(e);
            }
            let (diff, _) = result.map_err(|e| error::read_error(label, None, e))?;
            Some(diff)
        }
        None => None,
    };
    // Whatever the decompressor did not need still belongs to the blob.
    let drained = io::copy(&mut tee, &mut io::sink());
    if let Some(e) = tee.write_error.take() {
        return Err(e);
    }
    drained.map_err(|e| ImageError::io_at("reading", src, e))?;
    Ok((hex::encode(tee.hasher.finalize()), tee.bytes, diff))
}

/// A reader that copies what it reads into a file and hashes it.
struct Tee<'p, 'd> {
    input: ProgressReader<'p, File>,
    output: File,
    hasher: Sha256,
    bytes: u64,
    dest: &'d Path,
    /// A failed write, reported as a host error instead of a read error.
    write_error: Option<ImageError>,
}

impl Read for Tee<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.input.read(buf)?;
        if let Err(e) = self.output.write_all(&buf[..n]) {
            let kind = e.kind();
            self.write_error = Some(ImageError::io_at("writing", self.dest, e));
            return Err(io::Error::new(kind, "write failed"));
        }
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

pub(crate) fn digest_mismatch(label: &str, what: &str, expected: &str, actual: &str) -> ImageError {
    ImageError::invalid_archive(
        label,
        format!(
            "{what} should have digest {} but its content has digest {}",
            digest::prefixed(expected),
            digest::prefixed(actual)
        ),
    )
}

fn diff_id_mismatch(label: &str, expected: &str, actual: &str) -> ImageError {
    ImageError::invalid_archive(
        label,
        format!(
            "the uncompressed layer has digest {} but the image config lists diff_id {}",
            digest::prefixed(actual),
            digest::prefixed(expected)
        ),
    )
}

/// Decompresses and hashes a blob without unpacking it: the diff_id of a
/// layer whose directory already exists, to check a new blob claiming it.
pub(crate) fn diff_id_of(
    blob: &Path,
    compression: Compression,
    expected: &str,
    label: &str,
    progress: &mut dyn FnMut(u64),
) -> Result<(), ImageError> {
    let file = File::open(blob).map_err(|e| ImageError::io_at("opening", blob, e))?;
    let decoded = sniff::decoder(ProgressReader::new(file, progress), compression, label)?;
    let (diff, _) = HashingReader::new(decoded)
        .finish()
        .map_err(|e| error::read_error(label, None, e))?;
    if diff != expected {
        return Err(diff_id_mismatch(label, expected, &diff));
    }
    Ok(())
}
