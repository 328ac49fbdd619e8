//! OCI image layouts, as a directory or packed in a tar (which includes the
//! `docker save` output of Docker 25 and later).
//!
//! The manifest for the host platform is chosen from `index.json` (following
//! one level of nested index, as multi-platform images have), and every JSON
//! document read is checked against its descriptor's digest and size before
//! it is believed.

use crate::config::{host_arch, ConfigView};
use crate::digest;
use crate::error::ImageError;
use crate::import::archive::{read_json_file, ArchiveMembers};
use crate::import::plan::{check_platform, ImagePlan, PlannedConfig, PlannedLayer, SourceFile};
use crate::import::staging::digest_mismatch;
use crate::layout::{ref_name, MAX_JSON_BYTES};
use crate::model::SourceFormat;
use berth_core::ImageRef;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};
use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Where the files of a layout come from.
pub(crate) trait BlobSource {
    fn label(&self) -> &str;
    /// A top-level file such as `index.json`.
    fn file(&self, name: &str) -> Option<SourceFile>;
    /// `blobs/sha256/<hex>`.
    fn blob(&self, hex: &str) -> Option<SourceFile>;
}

impl BlobSource for ArchiveMembers {
    fn label(&self) -> &str {
        ArchiveMembers::label(self)
    }

    fn file(&self, name: &str) -> Option<SourceFile> {
        self.get(name).cloned()
    }

    fn blob(&self, hex: &str) -> Option<SourceFile> {
        self.get(&format!("blobs/sha256/{hex}")).cloned()
    }
}

/// An OCI layout directory. Blob names are built only from validated hex
/// digests, so nothing outside `<dir>/blobs/sha256/` is ever read.
pub(crate) struct OciDir {
    dir: PathBuf,
    label: String,
}

impl OciDir {
    pub(crate) fn new(dir: &Path) -> OciDir {
        OciDir {
            dir: dir.to_path_buf(),
            label: dir.display().to_string(),
        }
    }

    fn existing(path: PathBuf) -> Option<SourceFile> {
        let meta = fs::metadata(&path).ok().filter(|m| m.is_file())?;
        Some(SourceFile {
            path,
            sha256: None,
            size: meta.len(),
        })
    }
}

impl BlobSource for OciDir {
    fn label(&self) -> &str {
        &self.label
    }

    fn file(&self, name: &str) -> Option<SourceFile> {
        OciDir::existing(self.dir.join(name))
    }

    fn blob(&self, hex: &str) -> Option<SourceFile> {
        OciDir::existing(self.dir.join("blobs").join("sha256").join(hex))
    }
}

fn is_index(media_type: &MediaType) -> bool {
    match media_type {
        MediaType::ImageIndex => true,
        MediaType::Other(other) => other == DOCKER_MANIFEST_LIST,
        _ => false,
    }
}

fn is_manifest(media_type: &MediaType) -> bool {
    match media_type {
        MediaType::ImageManifest => true,
        MediaType::Other(other) => other == DOCKER_MANIFEST,
        _ => false,
    }
}

/// A manifest the layout offers, with the tag of the index entry it came from.
struct Candidate {
    desc: Descriptor,
    ref_name: Option<String>,
}

pub(crate) fn plan(
    source: &dyn BlobSource,
    reference: &ImageRef,
    format: SourceFormat,
) -> Result<ImagePlan, ImageError> {
    let label = source.label();
    let index_file = source.file("index.json").ok_or_else(|| {
        ImageError::invalid_archive(label, "not an OCI image layout: no index.json")
    })?;
    let index_bytes = read_json_file(&index_file.path, label, "index.json")?;
    let index: ImageIndex = serde_json::from_slice(&index_bytes).map_err(|e| {
        ImageError::invalid_entry(label, "index.json", format!("not an OCI image index: {e}"))
    })?;

    let mut candidates = Vec::new();
    for desc in index.manifests() {
        let tag = ref_name(desc).map(str::to_owned);
        if is_index(desc.media_type()) {
            let (_, nested) = read_json_blob(source, desc, "nested image index")?;
            let nested: ImageIndex = serde_json::from_slice(&nested).map_err(|e| {
                ImageError::invalid_archive(
                    label,
                    format!("nested index {} is not valid: {e}", desc.digest()),
                )
            })?;
            candidates.extend(
                nested
                    .manifests()
                    .iter()
                    .filter(|d| is_manifest(d.media_type()))
                    .map(|d| Candidate {
                        desc: d.clone(),
                        ref_name: tag.clone(),
                    }),
            );
        } else if is_manifest(desc.media_type()) {
            candidates.push(Candidate {
                desc: desc.clone(),
                ref_name: tag,
            });
        }
    }
    let chosen = choose(candidates, reference, label)?;

    let (manifest_hex, manifest_bytes) = read_json_blob(source, &chosen.desc, "manifest")?;
    let manifest: ImageManifest = serde_json::from_slice(&manifest_bytes).map_err(|e| {
        ImageError::invalid_archive(
            label,
            format!(
                "manifest {} is not valid: {e}",
                digest::short(&manifest_hex)
            ),
        )
    })?;
    let config_type = manifest.config().media_type();
    let is_image_config = match config_type {
        MediaType::ImageConfig => true,
        MediaType::Other(other) => other == DOCKER_CONFIG,
        _ => false,
    };
    if !is_image_config {
        return Err(ImageError::invalid_archive(
            label,
            format!(
                "manifest {} is not a container image (config media type {config_type})",
                digest::short(&manifest_hex)
            ),
        ));
    }
    let (config_hex, config_bytes) = read_json_blob(source, manifest.config(), "config")?;
    let view = ConfigView::parse(&config_bytes).map_err(|reason| {
        ImageError::invalid_archive(
            label,
            format!("config {}: {reason}", digest::short(&config_hex)),
        )
    })?;
    check_platform(&view, label)?;
    let diff_ids = view
        .diff_id_hexes()
        .map_err(|reason| ImageError::invalid_archive(label, reason))?;
    if diff_ids.len() != manifest.layers().len() {
        return Err(ImageError::invalid_archive(
            label,
            format!(
                "the manifest lists {} layers but the config has {} diff_ids",
                manifest.layers().len(),
                diff_ids.len()
            ),
        ));
    }
    let mut layers = Vec::with_capacity(diff_ids.len());
    for (i, (desc, diff_id)) in manifest.layers().iter().zip(diff_ids).enumerate() {
        let hex = sha256_of(desc, label)?;
        let file = source.blob(&hex).ok_or_else(|| {
            ImageError::invalid_archive(
                label,
                format!("layer {} blob {} is missing", i + 1, desc.digest()),
            )
        })?;
        layers.push(PlannedLayer {
            file,
            digest: Some(hex),
            size: Some(desc.size()),
            diff_id: Some(diff_id),
        });
    }
    let media_type = manifest
        .media_type()
        .clone()
        .unwrap_or_else(|| chosen.desc.media_type().clone());
    Ok(ImagePlan {
        format,
        config: PlannedConfig::Given {
            bytes: config_bytes,
            view: Box::new(view),
        },
        manifest: Some((manifest_bytes, media_type)),
        layers,
    })
}

/// Picks the manifest for the host platform; among several images, the one
/// whose tag matches `reference`.
fn choose(
    candidates: Vec<Candidate>,
    reference: &ImageRef,
    label: &str,
) -> Result<Candidate, ImageError> {
    let host = host_arch();
    let offered: Vec<String> = candidates
        .iter()
        .map(|c| match c.desc.platform() {
            Some(p) => format!("{}/{}", p.os(), p.architecture()),
            None => "unspecified platform".to_owned(),
        })
        .collect();
    let fits = |c: &Candidate| match c.desc.platform() {
        None => true,
        Some(p) => p.os().to_string() == "linux" && p.architecture().to_string() == host,
    };
    let mut fitting: Vec<Candidate> = candidates.into_iter().filter(fits).collect();
    if fitting.is_empty() {
        return Err(ImageError::invalid_archive(
            label,
            format!(
                "no image for linux/{host} (the layout offers: {})",
                offered.join(", ")
            ),
        ));
    }
    let mut seen = HashSet::new();
    fitting.retain(|c| seen.insert(c.desc.digest().to_string()));
    if fitting.len() == 1 {
        return Ok(fitting.remove(0));
    }
    let full = reference.to_string();
    let matches = |c: &Candidate| {
        c.ref_name
            .as_deref()
            .is_some_and(|r| r == full || r == reference.tag() || r.ends_with(&format!("/{full}")))
    };
    let tags: Vec<String> = fitting.iter().filter_map(|c| c.ref_name.clone()).collect();
    match fitting.iter().position(matches) {
        Some(i) => Ok(fitting.remove(i)),
        None => Err(ImageError::invalid_argument(format!(
            "{label} holds several images for linux/{host} (tags: {}); none is tagged {full}",
            if tags.is_empty() {
                "none".to_owned()
            } else {
                tags.join(", ")
            }
        ))),
    }
}

fn sha256_of(desc: &Descriptor, label: &str) -> Result<String, ImageError> {
    digest::sha256_hex_of(desc.digest().as_ref())
        .map(str::to_owned)
        .ok_or_else(|| {
            ImageError::invalid_archive(
                label,
                format!("unsupported digest {} (only sha256 is)", desc.digest()),
            )
        })
}

/// Reads the JSON blob `desc` points at, verifying its digest and size.
fn read_json_blob(
    source: &dyn BlobSource,
    desc: &Descriptor,
    what: &str,
) -> Result<(String, Vec<u8>), ImageError> {
    let label = source.label();
    let hex = sha256_of(desc, label)?;
    if desc.size() > MAX_JSON_BYTES {
        return Err(ImageError::invalid_archive(
            label,
            format!(
                "{what} {} is too large ({} bytes)",
                desc.digest(),
                desc.size()
            ),
        ));
    }
    let file = source.blob(&hex).ok_or_else(|| {
        ImageError::invalid_archive(label, format!("{what} blob {} is missing", desc.digest()))
    })?;
    let bytes = read_json_file(&file.path, label, &format!("blobs/sha256/{hex}"))?;
    let actual = digest::sha256_hex(&bytes);
    if actual != hex {
        return Err(digest_mismatch(label, what, &hex, &actual));
    }
    if bytes.len() as u64 != desc.size() {
        return Err(ImageError::invalid_archive(
            label,
            format!(
                "{what} {} is {} bytes, its descriptor says {}",
                desc.digest(),
                bytes.len(),
                desc.size()
            ),
        ));
    }
    Ok((hex, bytes))
}
