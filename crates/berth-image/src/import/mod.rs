//! Importing an image from a file or directory.
//!
//! An import runs in three steps:
//! 1. **Plan**: recognise the source (sniffed, never by file name) and work
//!    out its config, manifest and layer blobs ([`ImagePlan`]); JSON documents
//!    are verified against their digests as they are read.
//! 2. **Stage**: bring every layer blob into the staging area (verifying its
//!    digest) and unpack every layer the store does not have yet (verifying its
//!    diff_id); layers already unpacked are reused, never unpacked again.
//! 3. **Commit**: move blobs and layers into the store, then point the tag at
//!    the new manifest in `index.json` under the index lock.
//!
//! Any failure before the commit drops the staging area, leaving the store
//! exactly as it was. The whole import holds the gc lock shared so prune
//! cannot remove a layer this import decided to reuse.

mod archive;
mod docker;
mod oci;
mod plan;
mod rootfs;
pub(crate) mod sniff;
pub(crate) mod staging;

use crate::config::{self, ConfigView};
use crate::digest;
use crate::error::ImageError;
use crate::layout::{ref_name, Layout, REF_NAME_ANNOTATION};
use crate::lock::LockMode;
use crate::model::{ImageSummary, ImportProgress, SourceFormat};
use archive::Scanned;
use berth_core::ImageRef;
use oci_spec::image::{Descriptor, Digest, ImageManifestBuilder, MediaType};
use plan::{PlannedConfig, PlannedLayer};
use sniff::Compression;
use staging::{BlobRef, Staging};
use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;
use std::str::FromStr;

/// A layer blob as it ends up in the store.
struct LayerOutcome {
    hex: String,
    size: u64,
    media_type: MediaType,
}

pub(crate) fn import(
    layout: &Layout,
    reference: &ImageRef,
    source: &Path,
    progress: &mut dyn FnMut(ImportProgress),
) -> Result<ImageSummary, ImageError> {
    let meta = match fs::metadata(source) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ImageError::invalid_argument(format!(
                "import source {} does not exist",
                source.display()
            )))
        }
        Err(e) => return Err(ImageError::io_at("reading", source, e)),
    };
    let label = source.display().to_string();
    let _gc = layout.lock_gc(LockMode::Shared)?;
    let mut staging = Staging::create(layout)?;

    let plan = if meta.is_dir() {
        oci::plan(
            &oci::OciDir::new(source),
            reference,
            SourceFormat::OciLayout,
        )?
    } else if meta.is_file() {
        let compression = sniff::sniff_path(source, &label)?;
        let total = meta.len();
        let mut report = |bytes| progress(ImportProgress::Reading { bytes, total });
        let scanned = archive::scan(source, compression, &mut staging, &label, &mut report)?;
        progress(ImportProgress::Reading {
            bytes: total,
            total,
        });
        match scanned {
            Scanned::Image(members) if members.get("index.json").is_some() => {
                oci::plan(&members, reference, SourceFormat::OciArchive)?
            }
            Scanned::Image(members) => docker::plan(&members, reference)?,
            Scanned::NotAnImage => rootfs::plan(source, meta.len()),
        }
    } else {
        return Err(ImageError::invalid_argument(format!(
            "import source {} is neither a file nor a directory",
            source.display()
        )));
    };
    tracing::debug!(source = %label, format = ?plan.format, layers = plan.layers.len(), "importing");
    progress(ImportProgress::Started {
        format: plan.format,
        layers: plan.layers.len(),
    });

    let count = plan.layers.len();
    let mut outcomes = Vec::with_capacity(count);
    let mut diff_ids = Vec::with_capacity(count);
    for (index, layer) in plan.layers.iter().enumerate() {
        let layer_label = format!("{label} (layer {} of {count})", index + 1);
        let total = layer.file.size;
        let mut report = |bytes| {
            progress(ImportProgress::Layer {
                index,
                bytes,
                total,
            })
        };
        let (outcome, diff_id, reused) =
            stage_layer(layout, &mut staging, layer, &layer_label, &mut report)?;
        progress(ImportProgress::LayerDone { index, reused });
        outcomes.push(outcome);
        diff_ids.push(diff_id);
    }

    let (config_bytes, view) = match plan.config {
        PlannedConfig::Given { bytes, view } => (bytes, *view),
        PlannedConfig::Generated { source_name } => {
            let diff_id = diff_ids
                .first()
                .ok_or_else(|| ImageError::internal("rootfs import without a layer"))?;
            let bytes = config::rootfs_config(diff_id, &source_name);
            let view = ConfigView::parse(&bytes).map_err(ImageError::internal)?;
            (bytes, view)
        }
    };
    let config_blob = staging.add_blob(&config_bytes)?;
    let (manifest_bytes, media_type) = match plan.manifest {
        Some(manifest) => manifest,
        None => (
            manifest_for(&config_blob, &outcomes)?,
            MediaType::ImageManifest,
        ),
    };
    let manifest_blob = staging.add_blob(&manifest_bytes)?;

    staging.publish()?;
    tag(layout, reference, media_type, &manifest_blob)?;
    tracing::info!(reference = %reference, id = %digest::short(&config_blob.hex), "imported image");
    Ok(ImageSummary {
        reference: reference.clone(),
        id: digest::prefixed(&config_blob.hex),
        layers: outcomes.len(),
        size_bytes: outcomes.iter().map(|o| o.size).sum(),
        created: view.created,
    })
}

/// Brings one layer's blob into place and its directory too, unless the
/// store (or this very import) already has that layer unpacked.
fn stage_layer(
    layout: &Layout,
    staging: &mut Staging<'_>,
    layer: &PlannedLayer,
    label: &str,
    report: &mut dyn FnMut(u64),
) -> Result<(LayerOutcome, String, bool), ImageError> {
    let outcome = |blob: &BlobRef, compression: Compression| LayerOutcome {
        hex: blob.hex.clone(),
        size: blob.size,
        media_type: compression.layer_media_type(),
    };
    match &layer.diff_id {
        Some(diff_id) => {
            let blob = staging.materialize(
                &layer.file,
                layer.digest.as_deref(),
                label,
                "the layer blob",
            )?;
            if let Some(size) = layer.size {
                if size != blob.size {
                    return Err(ImageError::invalid_archive(
                        label,
                        format!(
                            "the layer blob is {} bytes but the manifest says {size}",
                            blob.size
                        ),
                    ));
                }
            }
            let compression = sniff::sniff_path(&blob.path, label)?;
            let reused = layout.has_layer(diff_id) || staging.has_layer(diff_id);
            if !reused {
                staging.unpack_layer(&blob, compression, Some(diff_id), label, report)?;
            } else if blob.new {
                // A blob we have not seen claims an unpacked layer: check the
                // claim instead of unpacking again.
                staging::diff_id_of(&blob.path, compression, diff_id, label, report)?;
            }
            Ok((outcome(&blob, compression), diff_id.clone(), reused))
        }
        None => {
            let compression = sniff::sniff_path(&layer.file.path, label)?;
            let (blob, diff_id) =
                staging.materialize_layer_file(&layer.file.path, compression, label, report)?;
            let reused = layout.has_layer(&diff_id) || staging.has_layer(&diff_id);
            if !reused {
                staging.unpack_layer(&blob, compression, Some(&diff_id), label, report)?;
            }
            Ok((outcome(&blob, compression), diff_id, reused))
        }
    }
}

/// An OCI manifest for imported blobs (docker-save and rootfs sources).
fn manifest_for(config: &BlobRef, layers: &[LayerOutcome]) -> Result<Vec<u8>, ImageError> {
    let digest = |hex: &str| {
        Digest::from_str(&digest::prefixed(hex))
            .map_err(|e| ImageError::internal(format!("digest {hex}: {e}")))
    };
    let config = Descriptor::new(MediaType::ImageConfig, config.size, digest(&config.hex)?);
    let layers = layers
        .iter()
        .map(|l| {
            Ok(Descriptor::new(
                l.media_type.clone(),
                l.size,
                digest(&l.hex)?,
            ))
        })
        .collect::<Result<Vec<_>, ImageError>>()?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(layers)
        .build()
        .map_err(|e| ImageError::internal(format!("building manifest: {e}")))?;
    serde_json::to_vec(&manifest)
        .map_err(|e| ImageError::internal(format!("serialising manifest: {e}")))
}

/// Points `reference` at the manifest, replacing what it pointed at before.
fn tag(
    layout: &Layout,
    reference: &ImageRef,
    media_type: MediaType,
    manifest: &BlobRef,
) -> Result<(), ImageError> {
    let name = reference.to_string();
    let digest = Digest::from_str(&digest::prefixed(&manifest.hex))
        .map_err(|e| ImageError::internal(format!("manifest digest: {e}")))?;
    let mut desc = Descriptor::new(media_type, manifest.size, digest);
    desc.set_annotations(Some(HashMap::from([(
        REF_NAME_ANNOTATION.to_owned(),
        name.clone(),
    )])));
    let _lock = layout.lock_index()?;
    let mut index = layout.read_index()?;
    let mut manifests = index.manifests().clone();
    manifests.retain(|d| ref_name(d) != Some(name.as_str()));
    manifests.push(desc);
    index.set_manifests(manifests);
    layout.write_index(&index)
}
