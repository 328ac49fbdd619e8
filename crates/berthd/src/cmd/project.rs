//! `berth project create|ls` (operator).

use crate::cli::{ProjectArgs, ProjectCommand};
use crate::cmd::operator::{ago, with_store};
use berth::cli::Global;
use berth::cmd::invalid;
use berth::output::table;
use serde_json::json;

pub fn run(global: &Global, args: ProjectArgs) -> anyhow::Result<u8> {
    match args.command {
        ProjectCommand::Create { name, json, db } => {
            let name = name.trim().to_owned();
            if name.is_empty() {
                return Err(invalid("a project needs a name").into());
            }
            let (project, token) = with_store(global, &db, |store| async move {
                let project = store.create_project(&name).await?;
                let (_, secret) = store.create_token(&project.id, "default").await?;
                Ok((project, secret))
            })?;
            if json {
                println!(
                    "{}",
                    json!({ "id": project.id, "name": project.name, "token": token })
                );
            } else {
                println!("created project {}", project.name);
                println!("  id      {}", project.id);
                println!("  token   {token}   (shown only now)");
                println!();
                println!("Use it with the client commands:");
                println!(
                    "  export BERTH_PROJECT_ID={} BERTH_TOKEN={token}",
                    project.id
                );
            }
        }
        ProjectCommand::Ls { json, db } => {
            let projects = with_store(global, &db, |store| async move { store.projects().await })?;
            if json {
                println!("{}", json!({ "projects": projects }));
            } else {
                let rows: Vec<Vec<String>> = projects
                    .iter()
                    .map(|p| vec![p.id.clone(), p.name.clone(), ago(p.created_at)])
                    .collect();
                table(&["ID", "NAME", "CREATED"], &rows);
            }
        }
    }
    Ok(0)
}
