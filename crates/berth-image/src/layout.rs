//! The on-disk layout of the store, an OCI image layout plus berth's extras:
//!
//! ```text
//! <data_dir>/images/            (0700: layers hold set-uid files of untrusted images)
//!   oci-layout                  {"imageLayoutVersion":"1.0.0"}
//!   index.json                  tags: manifests annotated org.opencontainers.image.ref.name
//!   blobs/sha256/<hex>          manifests, configs, layer blobs (as imported)
//!   layers/<diff_id hex>/       each layer unpacked once, shared, used as overlay lowerdir
//!   leases/<holder>.json        which container uses which layers
//!   tmp/                        staging of imports and temporary files
//!   gc.lock, index.lock         see crate::lock
//! ```

use crate::config::ConfigView;
use crate::digest;
use crate::error::ImageError;
use crate::lock::{self, LockGuard, LockMode};
use berth_core::ImageRef;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The annotation that carries a tag (`name:tag`) in `index.json`.
pub(crate) const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// Largest JSON document (index, manifest, config) we read into memory; real
/// ones are kilobytes, so anything bigger is an attack or garbage.
pub(crate) const MAX_JSON_BYTES: u64 = 16 << 20;

const OCI_LAYOUT_JSON: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
const EMPTY_INDEX_JSON: &[u8] =
    br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;

/// Paths of the store, and the small file operations on them.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub root: PathBuf,
    pub blobs: PathBuf,
    pub layers: PathBuf,
    pub tmp: PathBuf,
    pub leases: PathBuf,
    pub index: PathBuf,
}

impl Layout {
    pub(crate) fn new(data_dir: &Path) -> Layout {
        let root = data_dir.join("images");
        Layout {
            blobs: root.join("blobs").join("sha256"),
            layers: root.join("layers"),
            tmp: root.join("tmp"),
            leases: root.join("leases"),
            index: root.join("index.json"),
            root,
        }
    }

    /// Creates whatever is missing. Cheap when the store exists: one `stat`.
    pub(crate) fn init(&self) -> Result<(), ImageError> {
        if self.index.is_file() && self.gc_lock_path().is_file() {
            return Ok(());
        }
        let private = |path: &Path| {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(|e| ImageError::io_at("creating", path, e))
        };
        private(&self.root)?;
        for dir in [&self.blobs, &self.layers, &self.tmp, &self.leases] {
            private(dir)?;
        }
        for path in [self.gc_lock_path(), self.index_lock_path()] {
            drop(lock::lock(&path, LockMode::Shared)?);
        }
        let _guard = self.lock_index()?;
        let oci_layout = self.root.join("oci-layout");
        if !oci_layout.exists() {
            self.write_atomic(&oci_layout, OCI_LAYOUT_JSON)?;
        }
        if !self.index.exists() {
            self.write_atomic(&self.index, EMPTY_INDEX_JSON)?;
        }
        Ok(())
    }

    pub(crate) fn blob_path(&self, hex: &str) -> PathBuf {
        self.blobs.join(hex)
    }

    pub(crate) fn layer_path(&self, hex: &str) -> PathBuf {
        self.layers.join(hex)
    }

    pub(crate) fn has_blob(&self, hex: &str) -> bool {
        self.blob_path(hex).is_file()
    }

    pub(crate) fn has_layer(&self, hex: &str) -> bool {
        fs::symlink_metadata(self.layer_path(hex)).is_ok_and(|m| m.is_dir())
    }

    fn gc_lock_path(&self) -> PathBuf {
        self.root.join("gc.lock")
    }

    fn index_lock_path(&self) -> PathBuf {
        self.root.join("index.lock")
    }

    pub(crate) fn lock_gc(&self, mode: LockMode) -> Result<LockGuard, ImageError> {
        lock::lock(&self.gc_lock_path(), mode)
    }

    pub(crate) fn lock_index(&self) -> Result<LockGuard, ImageError> {
        lock::lock(&self.index_lock_path(), LockMode::Exclusive)
    }

    /// A fresh, unused path in `tmp/` (pid, time and a counter make it unique
    /// across processes and threads).
    pub(crate) fn temp_path(&self, prefix: &str) -> PathBuf {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let millis = berth_core::time::now_millis();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        self.tmp
            .join(format!("{prefix}-{}-{millis:x}-{n}", std::process::id()))
    }

    /// Replaces `dest` with `bytes` atomically (temp file in `tmp/`, fsync,
    /// rename, fsync of the directory), so readers see the old or the new
    /// content, never a mix, even after a crash.
    pub(crate) fn write_atomic(&self, dest: &Path, bytes: &[u8]) -> Result<(), ImageError> {
        let tmp = self.temp_path("write");
        let result = (|| {
            let mut file = create_new(&tmp, 0o644)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            fs::rename(&tmp, dest)?;
            if let Some(dir) = dest.parent() {
                File::open(dir)?.sync_all()?;
            }
            Ok::<(), io::Error>(())
        })();
        result.map_err(|e| {
            let _ = fs::remove_file(&tmp);
            ImageError::io_at("writing", dest, e)
        })
    }

    /// Reads `index.json` (no lock needed: it is only ever replaced whole).
    pub(crate) fn read_index(&self) -> Result<ImageIndex, ImageError> {
        let bytes = read_limited(&self.index, MAX_JSON_BYTES).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::InvalidData => {
                ImageError::corrupt(&self.index, format!("cannot read the image index: {e}"))
            }
            _ => ImageError::io_at("reading", &self.index, e),
        })?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ImageError::corrupt(&self.index, format!("not a valid image index: {e}")))
    }

    /// Replaces `index.json`; the caller holds [`Layout::lock_index`].
    pub(crate) fn write_index(&self, index: &ImageIndex) -> Result<(), ImageError> {
        let bytes = serde_json::to_vec_pretty(index)
            .map_err(|e| ImageError::internal(format!("serialising the image index: {e}")))?;
        self.write_atomic(&self.index, &bytes)
    }

    /// Reads a (small) JSON blob from the store.
    pub(crate) fn read_json_blob(&self, hex: &str) -> Result<Vec<u8>, ImageError> {
        let path = self.blob_path(hex);
        read_limited(&path, MAX_JSON_BYTES).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ImageError::corrupt(&path, "blob is missing"),
            io::ErrorKind::InvalidData => ImageError::corrupt(&path, e.to_string()),
            _ => ImageError::io_at("reading", &path, e),
        })
    }

    /// Loads the manifest and config a tag's descriptor points at.
    pub(crate) fn load_image(&self, desc: &Descriptor) -> Result<StoredImage, ImageError> {
        let manifest_hex = descriptor_hex(desc).ok_or_else(|| {
            ImageError::corrupt(
                &self.index,
                format!("manifest digest {} is not a sha256 digest", desc.digest()),
            )
        })?;
        let manifest_path = self.blob_path(&manifest_hex);
        let manifest: ImageManifest = serde_json::from_slice(&self.read_json_blob(&manifest_hex)?)
            .map_err(|e| {
                ImageError::corrupt(&manifest_path, format!("not an image manifest: {e}"))
            })?;
        let config_hex = descriptor_hex(manifest.config()).ok_or_else(|| {
            ImageError::corrupt(&manifest_path, "config digest is not a sha256 digest")
        })?;
        let config_path = self.blob_path(&config_hex);
        let config = ConfigView::parse(&self.read_json_blob(&config_hex)?)
            .map_err(|reason| ImageError::corrupt(&config_path, reason))?;
        let diff_ids = config
            .diff_id_hexes()
            .map_err(|reason| ImageError::corrupt(&config_path, reason))?;
        if diff_ids.len() != manifest.layers().len() {
            return Err(ImageError::corrupt(
                &config_path,
                format!(
                    "config lists {} diff_ids but the manifest has {} layers",
                    diff_ids.len(),
                    manifest.layers().len()
                ),
            ));
        }
        Ok(StoredImage {
            manifest,
            config_hex,
            config,
            diff_ids,
        })
    }
}

/// A tagged image as stored: its manifest and (parsed) config.
pub(crate) struct StoredImage {
    pub manifest: ImageManifest,
    pub config_hex: String,
    pub config: ConfigView,
    /// Hex diff_ids, bottom first, as many as the manifest has layers.
    pub diff_ids: Vec<String>,
}

impl StoredImage {
    pub(crate) fn id(&self) -> String {
        digest::prefixed(&self.config_hex)
    }

    pub(crate) fn blob_bytes(&self) -> u64 {
        self.manifest.layers().iter().map(|l| l.size()).sum()
    }
}

/// The hex digest of a descriptor if it is a well-formed sha256 digest.
pub(crate) fn descriptor_hex(desc: &Descriptor) -> Option<String> {
    digest::sha256_hex_of(desc.digest().as_ref()).map(str::to_owned)
}

/// The tag a descriptor in `index.json` carries, if any.
pub(crate) fn ref_name(desc: &Descriptor) -> Option<&str> {
    desc.annotations()
        .as_ref()?
        .get(REF_NAME_ANNOTATION)
        .map(String::as_str)
}

/// The descriptor of `reference` in the index.
pub(crate) fn find_tag<'a>(index: &'a ImageIndex, reference: &ImageRef) -> Option<&'a Descriptor> {
    let wanted = reference.to_string();
    index
        .manifests()
        .iter()
        .rev()
        .find(|d| ref_name(d) == Some(wanted.as_str()))
}

/// Creates `path`, failing if anything (even a dangling symlink) is there.
pub(crate) fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Reads a whole file, refusing (with `InvalidData`) one larger than `limit`.
pub(crate) fn read_limited(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let file = File::open(path)?;
    // Room for a typical manifest or index up front: from an empty buffer,
    // `read_to_end` would start with a 32-byte read and double from there.
    let mut bytes = Vec::with_capacity(limit.saturating_add(1).min(16 * 1024) as usize);
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes"),
        ));
    }
    Ok(bytes)
}
