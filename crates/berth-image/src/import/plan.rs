//! What an import's first step finds out about its source: the plan
//! (config, manifest, layer files) each source format's planner returns,
//! and the platform check they share.

use crate::config::{host_arch, ConfigView};
use crate::error::ImageError;
use crate::model::SourceFormat;
use oci_spec::image::MediaType;
use std::path::PathBuf;

/// A file of the import source.
#[derive(Debug, Clone)]
pub(crate) struct SourceFile {
    pub path: PathBuf,
    /// Its sha256 when already known (archive members are hashed as they are
    /// staged); `None` for files read in place (an OCI directory, a rootfs).
    pub sha256: Option<String>,
    pub size: u64,
}

/// One layer to import.
#[derive(Debug)]
pub(crate) struct PlannedLayer {
    pub file: SourceFile,
    /// The blob digest the manifest promises, if there is one.
    pub digest: Option<String>,
    /// The blob size the manifest promises, if there is one.
    pub size: Option<u64>,
    /// The diff_id the config promises (`None` for a rootfs: computed).
    pub diff_id: Option<String>,
}

#[derive(Debug)]
pub(crate) enum PlannedConfig {
    /// The source's config, byte for byte (its digest is the image id).
    Given {
        bytes: Vec<u8>,
        view: Box<ConfigView>,
    },
    /// Made up once the diff_id is known (plain rootfs tarballs).
    Generated { source_name: String },
}

#[derive(Debug)]
pub(crate) struct ImagePlan {
    pub format: SourceFormat,
    pub config: PlannedConfig,
    /// The source's manifest, byte for byte, with its media type; `None` to
    /// write an OCI manifest for the imported blobs.
    pub manifest: Option<(Vec<u8>, MediaType)>,
    pub layers: Vec<PlannedLayer>,
}

/// berth runs Linux images; another architecture is allowed (binfmt may run
/// it) but worth a warning.
pub(crate) fn check_platform(view: &ConfigView, label: &str) -> Result<(), ImageError> {
    if !view.os.is_empty() && view.os != "linux" {
        return Err(ImageError::invalid_archive(
            label,
            format!(
                "the image is for {}/{}; berth runs linux images",
                view.os, view.architecture
            ),
        ));
    }
    if !view.architecture.is_empty() && view.architecture != host_arch() {
        tracing::warn!(
            source = label,
            image_arch = %view.architecture,
            host_arch = host_arch(),
            "importing an image built for another architecture"
        );
    }
    Ok(())
}
