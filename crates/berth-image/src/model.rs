//! The data the store hands out: what the runtime needs to start a container
//! and what the CLI prints (every type here serialises for `--json`).

use berth_core::ImageRef;
pub use berth_core::ImageSummary;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Everything the runtime needs to build a container's root file system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedImage {
    pub reference: ImageRef,
    /// `sha256:<hex>` of the image's config blob (Docker's "image id").
    pub id: String,
    /// Unpacked layer directories, **bottom layer first**, ready to be used as
    /// overlayfs lower directories (whiteouts are already in overlayfs form).
    ///
    /// A layer the image lists more than once (usually the empty layer) appears
    /// once, at its topmost position: overlayfs refuses the same directory
    /// twice, and re-applying a layer on top of itself changes nothing.
    pub layers: Vec<PathBuf>,
    pub config: RuntimeDefaults,
}

/// The defaults an image gives the process of a container started from it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeDefaults {
    /// `KEY=value` strings.
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: Option<String>,
    /// `user`, `uid`, `user:group` or `uid:gid`, as written in the image.
    pub user: Option<String>,
}

/// Everything known about one tagged image (`berth image inspect`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageDetails {
    pub reference: ImageRef,
    /// `sha256:<hex>` of the config blob.
    pub id: String,
    /// `sha256:<hex>` of the manifest blob the tag points at.
    pub manifest_digest: String,
    /// Same meaning as [`ImageSummary::size_bytes`].
    pub size_bytes: u64,
    pub created: Option<String>,
    /// GOARCH-style architecture from the config (`amd64`, `arm64`, ...).
    pub architecture: String,
    /// GOOS-style operating system from the config (always `linux` here).
    pub os: String,
    pub variant: Option<String>,
    pub config: RuntimeDefaults,
    pub labels: BTreeMap<String, String>,
    /// The layers, bottom first, exactly as the manifest lists them.
    pub layers: Vec<LayerDetails>,
}

/// One layer of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerDetails {
    /// `sha256:<hex>` of the layer blob (possibly compressed).
    pub digest: String,
    /// `sha256:<hex>` of the uncompressed layer tar; names the unpacked directory.
    pub diff_id: String,
    pub media_type: String,
    /// Size of the blob in bytes.
    pub size: u64,
    /// The unpacked directory shared by every image with this layer.
    pub path: PathBuf,
    /// Whether that directory exists (false means the store is damaged).
    pub unpacked: bool,
}

/// What [`crate::ImageStore::prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    pub blobs_removed: usize,
    pub layers_removed: usize,
    /// Staging directories and temporary files left behind by crashed imports.
    pub staging_removed: usize,
    /// Apparent size of everything removed (hard-linked files counted once).
    pub bytes_freed: u64,
}

/// What kind of source an import read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceFormat {
    /// A tarball of a root file system (plain, gzip or zstd).
    RootfsTarball,
    /// A `docker save` archive (`manifest.json` at the top).
    DockerArchive,
    /// An OCI image layout packed in a tar (also Docker 25+ `docker save`).
    OciArchive,
    /// An OCI image layout directory.
    OciLayout,
}

/// Progress of an import, for a progress bar.
///
/// Events arrive in this order: any number of `Reading` while an archive is
/// scanned, one `Started`, then per layer (in order, bottom first) any number
/// of `Layer` followed by one `LayerDone`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ImportProgress {
    /// `bytes` of the `total`-byte source file read while sorting out an
    /// archive's contents (before its layers are known).
    Reading { bytes: u64, total: u64 },
    /// The source was recognised; `layers` layers will follow.
    Started { format: SourceFormat, layers: usize },
    /// `bytes` of the `total`-byte blob of layer `index` (0 = bottom) processed.
    Layer {
        index: usize,
        bytes: u64,
        total: u64,
    },
    /// Layer `index` is in place; `reused` when it was already unpacked in the
    /// store (or earlier in this image) and was not unpacked again.
    LayerDone { index: usize, reused: bool },
}
