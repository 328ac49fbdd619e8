//! Leases: which container uses which layers, so prune and remove keep them.
//!
//! One small JSON file per holder under `leases/`, written to `tmp/` and
//! renamed into place (readers never see half a lease) without fsync: after
//! a crash the containers are gone too, and `berth gc` drops stale leases.

use crate::digest;
use crate::error::ImageError;
use crate::layout::{self, Layout};
use crate::lock::LockMode;
use crate::model::ResolvedImage;
use berth_core::ContainerId;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{self, Write};
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Lease {
    pub holder: String,
    /// `sha256:<hex>` of the image config (the image id).
    pub image: String,
    /// The tag the image was resolved through.
    pub reference: String,
    /// Hex diff_ids of the layer directories in use.
    pub layers: Vec<String>,
}

const SUFFIX: &str = ".json";

/// Holders are container ids, which are safe file names.
fn lease_path(layout: &Layout, holder: &str) -> Result<PathBuf, ImageError> {
    ContainerId::new(holder)
        .map_err(|e| ImageError::invalid_argument(format!("lease holder: {e}")))?;
    Ok(layout.leases.join(format!("{holder}{SUFFIX}")))
}

pub(crate) fn lease(
    layout: &Layout,
    holder: &str,
    image: &ResolvedImage,
) -> Result<(), ImageError> {
    let path = lease_path(layout, holder)?;
    let mut layers = Vec::with_capacity(image.layers.len());
    for dir in &image.layers {
        let hex = dir
            .strip_prefix(&layout.layers)
            .ok()
            .and_then(|rest| rest.to_str())
            .filter(|hex| digest::is_sha256_hex(hex))
            .ok_or_else(|| {
                ImageError::invalid_argument(format!(
                    "layer {} is not a layer of this image store",
                    dir.display()
                ))
            })?;
        layers.push(hex.to_owned());
    }
    if digest::sha256_hex_of(&image.id).is_none() {
        return Err(ImageError::invalid_argument(format!(
            "image id {:?} is not a sha256 digest",
            image.id
        )));
    }
    let record = Lease {
        holder: holder.to_owned(),
        image: image.id.clone(),
        reference: image.reference.to_string(),
        layers,
    };
    let bytes = serde_json::to_vec(&record)
        .map_err(|e| ImageError::internal(format!("serialising lease: {e}")))?;

    // Shared gc lock: a prune cannot run between our check and our write.
    let _gc = layout.lock_gc(LockMode::Shared)?;
    for hex in &record.layers {
        if !layout.has_layer(hex) {
            return Err(ImageError::corrupt(
                layout.layer_path(hex),
                format!(
                    "layer of {} is gone (removed since it was resolved?)",
                    image.reference
                ),
            ));
        }
    }
    let tmp = layout.temp_path("lease");
    let written = layout::create_new(&tmp, 0o600).and_then(|mut f| f.write_all(&bytes));
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, &path)) {
        let _ = fs::remove_file(&tmp);
        return Err(ImageError::io_at("writing lease", &path, e));
    }
    Ok(())
}

pub(crate) fn release(layout: &Layout, holder: &str) -> Result<(), ImageError> {
    let path = lease_path(layout, holder)?;
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ImageError::io_at("removing lease", &path, e)),
    }
}

pub(crate) fn holders(layout: &Layout) -> Result<Vec<String>, ImageError> {
    let entries = fs::read_dir(&layout.leases)
        .map_err(|e| ImageError::io_at("reading", &layout.leases, e))?;
    let mut holders = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ImageError::io_at("reading", &layout.leases, e))?;
        if let Some(holder) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_suffix(SUFFIX))
        {
            if ContainerId::new(holder).is_ok() {
                holders.push(holder.to_owned());
            }
        }
    }
    holders.sort();
    Ok(holders)
}

/// Every lease. A lease that cannot be read is an error, never ignored: a
/// prune that skipped it could delete layers a container is running on.
pub(crate) fn read_all(layout: &Layout) -> Result<Vec<Lease>, ImageError> {
    let mut leases = Vec::new();
    for holder in holders(layout)? {
        let path = lease_path(layout, &holder)?;
        let bytes = match layout::read_limited(&path, layout::MAX_JSON_BYTES) {
            Ok(bytes) => bytes,
            // Released while we were listing.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(ImageError::io_at("reading lease", &path, e)),
        };
        let lease: Lease = serde_json::from_slice(&bytes).map_err(|e| {
            ImageError::corrupt(
                &path,
                format!("unreadable lease ({e}); release it with `berth gc` or delete the file"),
            )
        })?;
        leases.push(lease);
    }
    Ok(leases)
}
