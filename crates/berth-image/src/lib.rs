//! berth's image store: it owns the OCI image layout under
//! `<data_dir>/images`, imports images (rootfs tarballs, `docker save`
//! archives, OCI layouts), unpacks their layers safely (hostile archives
//! cannot write outside the layer) and once per layer into directories
//! shared by every image that contains them, and keeps track of which
//! layers containers lease so that garbage collection never removes them.
//!
//! It must not touch processes, mounts, cgroups or the network: the runtime
//! mounts the layer directories this crate hands out; this crate only reads
//! and writes files under its own directory.

mod config;
mod defaults;
mod digest;
mod error;
mod gc;
mod import;
mod layout;
mod lease;
mod lock;
mod model;
mod store;
mod unpack;

pub use defaults::{Launch, LaunchOverrides};
pub use error::ImageError;
pub use model::{
    ImageDetails, ImageSummary, ImportProgress, LayerDetails, PruneReport, ResolvedImage,
    RuntimeDefaults, SourceFormat,
};
pub use store::ImageStore;
