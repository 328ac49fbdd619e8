//! Garbage collection: removing what no tag and no lease needs.
//!
//! Runs with the gc lock and the index lock held exclusively, so no import
//! (which holds the gc lock shared from start to commit) and no lease is in
//! progress: everything in `tmp/` is then a leftover of a crashed process.
//! Reachability: every descriptor of `index.json` keeps its manifest (or
//! nested index), the config and layer blobs, and the layer directories named
//! by the config's diff_ids; every lease keeps its layer directories and
//! config blob.

use crate::digest;
use crate::error::ImageError;
use crate::layout::{descriptor_hex, Layout};
use crate::lease;
use crate::lock::LockMode;
use crate::model::PruneReport;
use oci_spec::image::{Descriptor, ImageIndex, MediaType};
use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[derive(Default)]
struct Reachable {
    blobs: HashSet<String>,
    layers: HashSet<String>,
}

pub(crate) fn prune(layout: &Layout) -> Result<PruneReport, ImageError> {
    let _gc = layout.lock_gc(LockMode::Exclusive)?;
    let _index = layout.lock_index()?;

    let mut keep = Reachable::default();
    for desc in layout.read_index()?.manifests() {
        mark(layout, desc, &mut keep, 0);
    }
    for lease in lease::read_all(layout)? {
        keep.layers.extend(lease.layers);
        if let Some(hex) = digest::sha256_hex_of(&lease.image) {
            keep.blobs.insert(hex.to_owned());
        }
    }

    let mut report = PruneReport::default();
    for (path, _) in list_dir(&layout.tmp)? {
        report.bytes_freed += tree_size(&path);
        remove_any(&path)?;
        report.staging_removed += 1;
    }
    for (path, name) in list_dir(&layout.layers)? {
        if !digest::is_sha256_hex(&name) || keep.layers.contains(&name) {
            continue;
        }
        // Take it out of layers/ in one step, so no half-deleted layer is
        // ever visible there; then delete it at leisure.
        let doomed = layout.temp_path(&format!("deleted-layer-{}", &name[..12]));
        fs::rename(&path, &doomed).map_err(|e| ImageError::io_at("removing layer", &path, e))?;
        report.bytes_freed += tree_size(&doomed);
        remove_any(&doomed)?;
        report.layers_removed += 1;
        tracing::debug!(layer = %name, "pruned layer");
    }
    for (path, name) in list_dir(&layout.blobs)? {
        if !digest::is_sha256_hex(&name) || keep.blobs.contains(&name) {
            continue;
        }
        let size = fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(0);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(ImageError::io_at("removing blob", &path, e)),
        }
        report.bytes_freed += size;
        report.blobs_removed += 1;
    }
    tracing::info!(?report, "pruned image store");
    Ok(report)
}

/// Removes what processes that are gone left in `tmp/`: a lease or a file
/// whose write a `kill -9` interrupted, the staging of a crashed import.
/// Every temporary name carries its creator's pid (see
/// [`Layout::temp_path`]); entries of a live process, and names without a
/// pid, are left alone. Needs no lock: nobody alive owns what it removes,
/// so unlike [`prune`] it never waits for an import. A recycled pid only
/// keeps an entry until its new owner is gone too. Returns the names
/// removed.
pub(crate) fn remove_orphaned_temp(layout: &Layout) -> Result<Vec<String>, ImageError> {
    let mut removed = Vec::new();
    for (path, name) in list_dir(&layout.tmp)? {
        let Some(pid) = temp_owner(&name) else {
            continue;
        };
        if process_exists(pid) {
            continue;
        }
        remove_any(&path)?;
        tracing::debug!(entry = %name, pid, "removed a temporary entry of a dead process");
        removed.push(name);
    }
    removed.sort();
    Ok(removed)
}

/// The pid in a name made by [`Layout::temp_path`]:
/// `<prefix>-<pid>-<hex nanoseconds>-<counter>`.
fn temp_owner(name: &str) -> Option<i32> {
    let mut parts = name.rsplitn(4, '-');
    let counter = parts.next()?;
    let nanos = parts.next()?;
    let pid = parts.next()?;
    let prefix = parts.next()?;
    let well_formed = !prefix.is_empty()
        && !counter.is_empty()
        && counter.bytes().all(|b| b.is_ascii_digit())
        && !nanos.is_empty()
        && nanos.bytes().all(|b| b.is_ascii_hexdigit());
    if !well_formed {
        return None;
    }
    pid.parse().ok().filter(|pid| *pid > 0)
}

/// Whether a process with this pid exists (in our pid namespace). A
/// process we may not signal exists too.
fn process_exists(pid: i32) -> bool {
    let Some(pid) = rustix::process::Pid::from_raw(pid) else {
        return false;
    };
    !matches!(
        rustix::process::test_kill_process(pid),
        Err(rustix::io::Errno::SRCH)
    )
}

/// Marks what `desc` needs. Unreadable parts are logged and skipped: what
/// they would have kept is already unusable.
fn mark(layout: &Layout, desc: &Descriptor, keep: &mut Reachable, depth: usize) {
    let Some(hex) = descriptor_hex(desc) else {
        tracing::warn!(digest = %desc.digest(), "index entry with a non-sha256 digest");
        return;
    };
    keep.blobs.insert(hex.clone());
    let is_index = match desc.media_type() {
        MediaType::ImageIndex => true,
        MediaType::Other(t) => t == "application/vnd.docker.distribution.manifest.list.v2+json",
        _ => false,
    };
    if is_index {
        let nested: Option<ImageIndex> = layout
            .read_json_blob(&hex)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        match nested {
            Some(nested) if depth < 4 => {
                for child in nested.manifests() {
                    mark(layout, child, keep, depth + 1);
                }
            }
            _ => {
                tracing::warn!(digest = %desc.digest(), "unreadable nested index in the image store")
            }
        }
        return;
    }
    // Keep every blob the manifest names even if its config is unreadable.
    if let Ok(manifest) = layout.read_json_blob(&hex).and_then(|b| {
        serde_json::from_slice::<oci_spec::image::ImageManifest>(&b)
            .map_err(|e| ImageError::internal(e.to_string()))
    }) {
        keep.blobs.extend(descriptor_hex(manifest.config()));
        keep.blobs
            .extend(manifest.layers().iter().filter_map(descriptor_hex));
    }
    match layout.load_image(desc) {
        Ok(image) => keep.layers.extend(image.diff_ids),
        Err(e) => {
            tracing::warn!(digest = %desc.digest(), error = %e, "image in the index is damaged; its layers are not kept")
        }
    }
}

/// (path, file name) of every entry of `dir`.
fn list_dir(dir: &Path) -> Result<Vec<(std::path::PathBuf, String)>, ImageError> {
    let entries = fs::read_dir(dir).map_err(|e| ImageError::io_at("reading", dir, e))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ImageError::io_at("reading", dir, e))?;
        out.push((
            entry.path(),
            entry.file_name().to_string_lossy().into_owned(),
        ));
    }
    Ok(out)
}

fn remove_any(path: &Path) -> Result<(), ImageError> {
    let result = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ImageError::io_at("removing", path, e)),
    }
}

/// Apparent size of the regular files under `path` (hard links once).
/// Walks without following symlinks; errors just make the count smaller.
fn tree_size(path: &Path) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(entries) = fs::read_dir(&p) {
                stack.extend(entries.filter_map(|e| e.ok()).map(|e| e.path()));
            }
        } else if meta.is_file() && (meta.nlink() == 1 || seen.insert((meta.dev(), meta.ino()))) {
            total += meta.len();
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::temp_owner;

    #[test]
    fn the_owner_is_read_from_names_of_temp_path_only() {
        assert_eq!(temp_owner("lease-4242-18c3f0a1b2-7"), Some(4242));
        assert_eq!(temp_owner("deleted-layer-0123456789ab-17-ff-0"), Some(17));
        for foreign in [
            "lease",
            "lease-4242",
            "lease-x-18c3f0a1b2-7",
            "lease-4242-nothex-7",
            "lease-4242-18c3f0a1b2-x",
            "-4242-18c3f0a1b2-7",
            "lease-0-18c3f0a1b2-7",
        ] {
            assert_eq!(temp_owner(foreign), None, "{foreign}");
        }
    }
}
