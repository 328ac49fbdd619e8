//! [`ImageStore`], the public face of the crate.

use crate::error::ImageError;
use crate::layout::{find_tag, ref_name, Layout, StoredImage};
use crate::model::{
    ImageDetails, ImageSummary, ImportProgress, LayerDetails, PruneReport, ResolvedImage,
};
use crate::{gc, import, lease};
use berth_core::ImageRef;
use oci_spec::image::Descriptor;
use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// berth's image store under `<data_dir>/images` (see the crate docs for the
/// layout). Cheap to open; safe to use from several processes at once.
#[derive(Debug, Clone)]
pub struct ImageStore {
    layout: Layout,
}

impl ImageStore {
    /// Opens (creating if missing) the store under `<data_dir>/images`.
    pub fn open(data_dir: &Path) -> Result<ImageStore, ImageError> {
        let layout = Layout::new(data_dir);
        layout.init()?;
        Ok(ImageStore { layout })
    }

    /// `<data_dir>/images`.
    pub fn root(&self) -> &Path {
        &self.layout.root
    }

    /// Imports an image from `source` and tags it `reference` (replacing any
    /// image that had that tag).
    ///
    /// `source` is recognised by content, not by name: a plain rootfs tarball
    /// (uncompressed, gzip or zstd) becomes a one-layer image with a generated
    /// config; a `docker save` archive (classic or Docker 25+ layout, possibly
    /// compressed) and an OCI image layout (directory or tar) keep their
    /// layers, config and manifest, after every digest and diff_id is checked.
    /// Layers already in the store are reused, not unpacked again. On any
    /// error the store is left exactly as it was.
    pub fn import(
        &self,
        reference: &ImageRef,
        source: &Path,
        progress: &mut dyn FnMut(ImportProgress),
    ) -> Result<ImageSummary, ImageError> {
        import::import(&self.layout, reference, source, progress)
    }

    /// Every tagged image, sorted by reference.
    pub fn list(&self) -> Result<Vec<ImageSummary>, ImageError> {
        let index = self.layout.read_index()?;
        let mut out = Vec::new();
        for desc in index.manifests() {
            let Some(reference) = ref_name(desc).and_then(|n| ImageRef::parse(n).ok()) else {
                continue;
            };
            let image = self.layout.load_image(desc)?;
            out.push(ImageSummary {
                reference,
                id: image.id(),
                layers: image.diff_ids.len(),
                size_bytes: image.blob_bytes(),
                created: image.config.created.clone(),
            });
        }
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(out)
    }

    /// Everything known about one image.
    pub fn inspect(&self, reference: &ImageRef) -> Result<ImageDetails, ImageError> {
        let (desc, image) = self.load_tagged(reference)?;
        let layers = image
            .manifest
            .layers()
            .iter()
            .zip(&image.diff_ids)
            .map(|(layer, diff_id)| {
                let path = self.layout.layer_path(diff_id);
                LayerDetails {
                    digest: layer.digest().to_string(),
                    diff_id: crate::digest::prefixed(diff_id),
                    media_type: layer.media_type().to_string(),
                    size: layer.size(),
                    unpacked: path.is_dir(),
                    path,
                }
            })
            .collect();
        Ok(ImageDetails {
            reference: reference.clone(),
            id: image.id(),
            manifest_digest: desc.digest().to_string(),
            size_bytes: image.blob_bytes(),
            created: image.config.created.clone(),
            architecture: image.config.architecture.clone(),
            os: image.config.os.clone(),
            variant: image.config.variant.clone(),
            config: image.config.runtime_defaults(),
            labels: image.config.labels(),
            layers,
        })
    }

    /// What the runtime needs to start a container from `reference`.
    ///
    /// The hot path of every container start: reads `index.json`, the
    /// manifest and the config (three small files) and `stat`s each layer
    /// directory. No locks, no hashing, no directory walks.
    pub fn resolve(&self, reference: &ImageRef) -> Result<ResolvedImage, ImageError> {
        let (_, image) = self.load_tagged(reference)?;
        // Topmost occurrence of a repeated layer only: overlayfs refuses the
        // same lowerdir twice.
        let mut seen = HashSet::new();
        let mut layers: Vec<PathBuf> = image
            .diff_ids
            .iter()
            .rev()
            .filter(|hex| seen.insert(hex.as_str()))
            .map(|hex| self.layout.layer_path(hex))
            .collect();
        layers.reverse();
        for path in &layers {
            match fs::symlink_metadata(path) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => return Err(ImageError::corrupt(path, "layer is not a directory")),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(ImageError::corrupt(
                        path,
                        format!("layer directory of {reference} is missing"),
                    ))
                }
                Err(e) => return Err(ImageError::io_at("inspecting", path, e)),
            }
        }
        Ok(ResolvedImage {
            reference: reference.clone(),
            id: image.id(),
            layers,
            config: image.config.runtime_defaults(),
        })
    }

    /// Removes the tag `reference`. The image's blobs and layers stay until
    /// [`ImageStore::prune`].
    ///
    /// Refuses with `image_in_use` when a lease holds this image and no other
    /// tag points at it, unless `force` (the leased layers then survive prune
    /// until the lease is released).
    pub fn remove(&self, reference: &ImageRef, force: bool) -> Result<(), ImageError> {
        let name = reference.to_string();
        let _lock = self.layout.lock_index()?;
        let mut index = self.layout.read_index()?;
        let desc = find_tag(&index, reference)
            .cloned()
            .ok_or_else(|| ImageError::NotFound {
                reference: reference.clone(),
            })?;
        if !force {
            let still_tagged = index
                .manifests()
                .iter()
                .any(|d| d.digest() == desc.digest() && ref_name(d).is_some_and(|n| n != name));
            if !still_tagged {
                // A damaged image can still be removed; match its leases by tag.
                let id = self.layout.load_image(&desc).ok().map(|image| image.id());
                let mut holders: Vec<String> = lease::read_all(&self.layout)?
                    .into_iter()
                    .filter(|l| match &id {
                        Some(id) => l.image == *id,
                        None => l.reference == name,
                    })
                    .map(|l| l.holder)
                    .collect();
                if !holders.is_empty() {
                    holders.sort();
                    return Err(ImageError::InUse {
                        reference: reference.clone(),
                        holders,
                    });
                }
            }
        }
        let mut manifests = index.manifests().clone();
        manifests.retain(|d| ref_name(d) != Some(name.as_str()));
        index.set_manifests(manifests);
        self.layout.write_index(&index)?;
        tracing::info!(reference = %reference, "removed tag");
        Ok(())
    }

    /// Drops blobs and unpacked layers that no tag and no lease references,
    /// and leftovers of crashed imports. Waits for running imports to finish.
    pub fn prune(&self) -> Result<PruneReport, ImageError> {
        gc::prune(&self.layout)
    }

    /// Removes what processes that are gone left in the store's temporary
    /// dir (a lease or import interrupted by `kill -9`); entries of live
    /// processes stay. Never waits for an import. Returns the names removed.
    pub fn remove_orphaned_temp(&self) -> Result<Vec<String>, ImageError> {
        gc::remove_orphaned_temp(&self.layout)
    }

    /// Records that `holder` (a container id) uses `image`'s layers, so prune
    /// and remove keep them. One small file written, no fsync. Leasing again
    /// with the same holder replaces its lease.
    pub fn lease(&self, holder: &str, image: &ResolvedImage) -> Result<(), ImageError> {
        lease::lease(&self.layout, holder, image)
    }

    /// Drops `holder`'s lease; releasing an unknown holder is Ok.
    pub fn release(&self, holder: &str) -> Result<(), ImageError> {
        lease::release(&self.layout, holder)
    }

    /// Holders of current leases, sorted.
    pub fn lease_holders(&self) -> Result<Vec<String>, ImageError> {
        lease::holders(&self.layout)
    }

    /// The tag's descriptor and image. If the image cannot be read, the index
    /// is read again: the tag may have moved or gone in the meantime (which is
    /// a race, not a damaged store).
    fn load_tagged(&self, reference: &ImageRef) -> Result<(Descriptor, StoredImage), ImageError> {
        let not_found = || ImageError::NotFound {
            reference: reference.clone(),
        };
        let index = self.layout.read_index()?;
        let desc = find_tag(&index, reference).ok_or_else(not_found)?;
        match self.layout.load_image(desc) {
            Ok(image) => Ok((desc.clone(), image)),
            Err(err @ ImageError::StoreCorrupt { .. }) => {
                let again = self.layout.read_index()?;
                match find_tag(&again, reference) {
                    None => Err(not_found()),
                    Some(moved) if moved.digest() != desc.digest() => {
                        let image = self.layout.load_image(moved)?;
                        Ok((moved.clone(), image))
                    }
                    Some(_) => Err(err),
                }
            }
            Err(err) => Err(err),
        }
    }
}
