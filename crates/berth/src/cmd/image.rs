//! `berth image …`: import, ls, inspect, rm, prune.

use crate::cli::{Global, ImageArgs, ImageCommand};
use crate::cmd::{invalid, open_runtime, open_store};
use crate::output::{short_id, table};
use berth_core::{ByteSize, ImageRef};
use berth_image::ImportProgress;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;

fn parse_ref(text: &str) -> Result<ImageRef, crate::CliError> {
    ImageRef::parse(text).map_err(|e| invalid(e.to_string()))
}

pub fn run(global: &Global, args: ImageArgs) -> anyhow::Result<u8> {
    let store = open_store(global)?;
    match args.command {
        ImageCommand::Import {
            reference,
            path,
            json,
        } => {
            let reference = parse_ref(&reference)?;
            let bar = progress_bar(json);
            let mut on_progress = |p: ImportProgress| update_bar(&bar, p);
            let summary = store.import(&reference, &path, &mut on_progress);
            bar.finish_and_clear();
            let summary = summary.map_err(crate::CliError::from)?;
            if json {
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                println!(
                    "imported {} ({}, {} layer{}, {})",
                    summary.reference,
                    short_id(&summary.id),
                    summary.layers,
                    if summary.layers == 1 { "" } else { "s" },
                    ByteSize(summary.size_bytes)
                );
            }
        }
        ImageCommand::Ls { json } => {
            let mut images = store.list().map_err(crate::CliError::from)?;
            images.sort_by(|a, b| a.reference.cmp(&b.reference));
            if json {
                println!("{}", serde_json::to_string(&images)?);
            } else {
                let rows: Vec<Vec<String>> = images
                    .iter()
                    .map(|i| {
                        vec![
                            i.reference.name().to_owned(),
                            i.reference.tag().to_owned(),
                            short_id(&i.id),
                            i.layers.to_string(),
                            ByteSize(i.size_bytes).to_string(),
                            i.created.clone().unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect();
                table(
                    &["NAME", "TAG", "IMAGE ID", "LAYERS", "SIZE", "CREATED"],
                    &rows,
                );
            }
        }
        ImageCommand::Inspect { reference } => {
            let details = store
                .inspect(&parse_ref(&reference)?)
                .map_err(crate::CliError::from)?;
            println!("{}", serde_json::to_string_pretty(&details)?);
        }
        ImageCommand::Rm {
            reference,
            force,
            json,
        } => {
            let reference = parse_ref(&reference)?;
            // Leases of containers that died with a crashed berth must not
            // block removal: drop them first.
            release_stale_leases(global, &store)?;
            store
                .remove(&reference, force)
                .map_err(crate::CliError::from)?;
            if json {
                println!("{}", serde_json::json!({ "removed": reference }));
            } else {
                println!("removed {reference}");
            }
        }
        ImageCommand::Prune { json } => {
            release_stale_leases(global, &store)?;
            let report = store.prune().map_err(crate::CliError::from)?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "removed {} layer{} and {} blob{}, freed {}",
                    report.layers_removed,
                    if report.layers_removed == 1 { "" } else { "s" },
                    report.blobs_removed,
                    if report.blobs_removed == 1 { "" } else { "s" },
                    ByteSize(report.bytes_freed)
                );
            }
        }
    }
    Ok(0)
}

/// Drops leases whose container no longer exists on this host.
pub fn release_stale_leases(
    global: &Global,
    store: &berth_image::ImageStore,
) -> Result<Vec<String>, crate::CliError> {
    let runtime = open_runtime(global)?;
    let containers = runtime.config().containers_dir.clone();
    // The agent's containers hold their lease from create until delete,
    // including while they start and after they exit.
    let agent_containers = global.data_dir.join("agent").join("containers");
    let mut released = Vec::new();
    for holder in store.lease_holders()? {
        let live = containers.join(&holder).exists() || agent_containers.join(&holder).exists();
        if !live {
            store.release(&holder)?;
            released.push(holder);
        }
    }
    Ok(released)
}

fn progress_bar(json: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg:24} [{bar:30}] {bytes}/{total_bytes}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

fn update_bar(bar: &ProgressBar, p: ImportProgress) {
    match p {
        ImportProgress::Reading { bytes, total } => {
            bar.set_message("reading archive");
            bar.set_length(total);
            bar.set_position(bytes);
        }
        ImportProgress::Started { layers, .. } => {
            bar.set_message(format!("{layers} layer(s)"));
        }
        ImportProgress::Layer {
            index,
            bytes,
            total,
        } => {
            bar.set_message(format!("layer {}", index + 1));
            bar.set_length(total);
            bar.set_position(bytes);
        }
        ImportProgress::LayerDone { index, reused } => {
            if reused {
                bar.println(format!("layer {}: already present", index + 1));
            }
        }
    }
}
