//! A plain root file system tarball: one layer, and a config made up for it.

use crate::import::plan::{ImagePlan, PlannedConfig, PlannedLayer, SourceFile};
use crate::model::SourceFormat;
use std::path::Path;

pub(crate) fn plan(source: &Path, size: u64) -> ImagePlan {
    let source_name = source
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| source.display().to_string());
    ImagePlan {
        format: SourceFormat::RootfsTarball,
        config: PlannedConfig::Generated { source_name },
        manifest: None,
        layers: vec![PlannedLayer {
            file: SourceFile {
                path: source.to_path_buf(),
                sha256: None,
                size,
            },
            digest: None,
            size: None,
            diff_id: None,
        }],
    }
}
