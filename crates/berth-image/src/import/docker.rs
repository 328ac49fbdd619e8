//! `docker save` archives, read through their `manifest.json`.
//!
//! Both layouts are handled: the classic one (Docker 1.10–24: `<config
//! hex>.json`, `<id>/layer.tar`, uncompressed layers) and Docker 25+'s, whose
//! `manifest.json` points into an OCI `blobs/` directory. (When an archive
//! also carries `index.json`, the OCI reader is preferred since it keeps the
//! original manifest; this reader is for archives without one.)

use crate::config::ConfigView;
use crate::digest;
use crate::error::ImageError;
use crate::import::archive::{read_json_file, ArchiveMembers};
use crate::import::plan::{check_platform, ImagePlan, PlannedConfig, PlannedLayer};
use crate::model::SourceFormat;
use crate::unpack::normalize;
use berth_core::ImageRef;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

pub(crate) fn plan(
    members: &ArchiveMembers,
    reference: &ImageRef,
) -> Result<ImagePlan, ImageError> {
    let label = members.label();
    let bytes = members
        .read_json("manifest.json")?
        .ok_or_else(|| ImageError::invalid_archive(label, "no manifest.json"))?;
    let entries: Vec<ManifestEntry> = serde_json::from_slice(&bytes).map_err(|e| {
        ImageError::invalid_entry(
            label,
            "manifest.json",
            format!("not a docker-save manifest: {e}"),
        )
    })?;
    let entry = choose(entries, reference, label)?;

    let config_name = member_name(&entry.config, label)?;
    let config_file = members.get(&config_name).ok_or_else(|| {
        ImageError::invalid_entry(
            label,
            "manifest.json",
            format!("config {config_name:?} is not in the archive"),
        )
    })?;
    let config_bytes = read_json_file(&config_file.path, label, &config_name)?;
    let config_hex = digest::sha256_hex(&config_bytes);
    if let Some(named) = content_address(&config_name) {
        if named != config_hex {
            return Err(crate::import::staging::digest_mismatch(
                label,
                &format!("config {config_name:?}"),
                named,
                &config_hex,
            ));
        }
    }
    let view = ConfigView::parse(&config_bytes)
        .map_err(|reason| ImageError::invalid_entry(label, &config_name, reason))?;
    check_platform(&view, label)?;
    let diff_ids = view
        .diff_id_hexes()
        .map_err(|reason| ImageError::invalid_entry(label, &config_name, reason))?;
    if diff_ids.len() != entry.layers.len() {
        return Err(ImageError::invalid_archive(
            label,
            format!(
                "manifest.json lists {} layers but the config has {} diff_ids",
                entry.layers.len(),
                diff_ids.len()
            ),
        ));
    }
    let mut layers = Vec::with_capacity(diff_ids.len());
    for (layer, diff_id) in entry.layers.iter().zip(diff_ids) {
        let name = member_name(layer, label)?;
        let file = members.get(&name).ok_or_else(|| {
            ImageError::invalid_entry(
                label,
                "manifest.json",
                format!("layer {name:?} is not in the archive"),
            )
        })?;
        layers.push(PlannedLayer {
            file: file.clone(),
            digest: content_address(&name).map(str::to_owned),
            size: None,
            diff_id: Some(diff_id),
        });
    }
    Ok(ImagePlan {
        format: SourceFormat::DockerArchive,
        config: PlannedConfig::Given {
            bytes: config_bytes,
            view: Box::new(view),
        },
        manifest: None,
        layers,
    })
}

/// Picks the image to import: the only one, or the one tagged `reference`.
fn choose(
    entries: Vec<ManifestEntry>,
    reference: &ImageRef,
    label: &str,
) -> Result<ManifestEntry, ImageError> {
    if entries.len() <= 1 {
        return entries
            .into_iter()
            .next()
            .ok_or_else(|| ImageError::invalid_entry(label, "manifest.json", "lists no image"));
    }
    let wanted = reference.to_string();
    let matches = |tag: &String| {
        *tag == wanted
            || tag.strip_prefix("docker.io/").is_some_and(|t| t == wanted)
            || tag
                .strip_prefix("docker.io/library/")
                .is_some_and(|t| t == wanted)
    };
    let tags: Vec<String> = entries
        .iter()
        .flat_map(|e| e.repo_tags.clone().unwrap_or_default())
        .collect();
    entries
        .into_iter()
        .find(|e| {
            e.repo_tags
                .as_ref()
                .is_some_and(|tags| tags.iter().any(matches))
        })
        .ok_or_else(|| {
            ImageError::invalid_argument(format!(
                "{label} holds several images ({}); import one of them under its own name",
                tags.join(", ")
            ))
        })
}

fn member_name(path: &str, label: &str) -> Result<String, ImageError> {
    normalize(path.as_bytes())
        .ok()
        .and_then(|n| String::from_utf8(n).ok())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ImageError::invalid_entry(label, "manifest.json", format!("bad path {path:?}"))
        })
}

/// The digest a member's name promises (`blobs/sha256/<hex>`, `<hex>.json`).
fn content_address(name: &str) -> Option<&str> {
    name.strip_prefix("blobs/sha256/")
        .or_else(|| name.strip_suffix(".json"))
        .filter(|hex| digest::is_sha256_hex(hex))
}
