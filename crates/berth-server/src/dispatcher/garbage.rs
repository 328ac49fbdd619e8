//! Giving back what deleted codes and old revisions held.
//!
//! First the store: revisions no code keeps and no queued or running task
//! uses, and the packages only they referenced
//! ([`berth_store::Store::collect_garbage`]). Then every agent: the package
//! images (`berth-code/…`) of packages the store no longer has are removed,
//! and the agent prunes the layers and blobs nothing uses any more. An image
//! a container still runs is refused by the agent (`image_in_use`) and
//! removed at a later sweep, once that container is gone.

use super::request::{package_image, PACKAGE_IMAGE_PREFIX};
use super::shared::Shared;
use crate::dispatch::AgentHandle;
use berth_api::ErrorCode;
use std::collections::HashSet;
use std::time::Duration;

/// How long an agent may take to prune.
const PRUNE_TIMEOUT: Duration = Duration::from_secs(300);

/// One round: the store, then each agent. Failures are logged and left to
/// the next round.
pub(super) async fn collect(shared: &Shared) {
    let kept = shared.config.code_revisions_kept.map(i64::from);
    match shared.store.collect_garbage(kept).await {
        Ok(report) if report.revisions > 0 || report.packages > 0 => tracing::info!(
            revisions = report.revisions,
            packages = report.packages,
            "deleted code revisions no task needs"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("deleting code revisions no task needs: {e}"),
    }
    for agent in shared.dispatch.agents() {
        if let Err(e) = release_package_images(shared, &agent).await {
            tracing::warn!(agent = %agent.name, "removing package images: {e}");
        }
    }
}

/// Removes the agent's package images whose package the store no longer
/// has, then has the agent free their layers.
async fn release_package_images(shared: &Shared, agent: &AgentHandle) -> Result<(), String> {
    let images = agent.client().images().await.map_err(|e| e.to_string())?;
    let packaged: Vec<String> = images
        .iter()
        .map(|image| image.reference.to_string())
        .filter(|reference| reference.starts_with(PACKAGE_IMAGE_PREFIX))
        .collect();
    if packaged.is_empty() {
        return Ok(());
    }
    // Read after the listing: a package stored meanwhile is in this set, so
    // its image (imported for it) is kept.
    let wanted: HashSet<String> = shared
        .store
        .package_digests()
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .map(|sha| package_image(sha))
        .collect();
    let mut removed = 0usize;
    for reference in packaged.iter().filter(|r| !wanted.contains(*r)) {
        match agent.client().remove_image(reference, false).await {
            Ok(()) => {
                removed += 1;
                agent.image_forget(reference);
            }
            Err(e) if e.is_not_found() => agent.image_forget(reference),
            // A container still runs it: a later sweep, once it is gone.
            Err(e) if e.code() == Some(ErrorCode::ImageInUse) => {
                tracing::debug!(agent = %agent.name, reference, "package image still in use");
            }
            Err(e) => {
                tracing::warn!(agent = %agent.name, reference, "removing a package image: {e}")
            }
        }
    }
    if removed == 0 {
        return Ok(());
    }
    let report = agent
        .client()
        .prune_images(PRUNE_TIMEOUT)
        .await
        .map_err(|e| format!("pruning: {e}"))?;
    tracing::info!(
        agent = %agent.name,
        images = removed,
        bytes_freed = report.bytes_freed,
        "removed the images of deleted code packages"
    );
    Ok(())
}
