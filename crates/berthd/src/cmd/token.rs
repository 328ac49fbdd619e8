//! `berth token create|ls|revoke` (operator).

use crate::cli::{TokenArgs, TokenCommand};
use crate::cmd::operator::{ago, with_store};
use berth::cli::Global;
use berth::cmd::not_found;
use berth::output::table;
use serde_json::json;

pub fn run(global: &Global, args: TokenArgs) -> anyhow::Result<u8> {
    match args.command {
        TokenCommand::Create {
            project_id: None,
            name,
            json,
            db,
            ..
        } => {
            let (info, secret) = with_store(global, &db, |store| async move {
                store.create_operator_token(&name).await
            })?;
            if json {
                println!(
                    "{}",
                    json!({ "id": info.id, "name": info.name, "operator": true, "token": secret })
                );
            } else {
                println!("created operator token {} ({})", info.id, info.name);
                println!("  token   {secret}   (shown only now)");
            }
        }
        TokenCommand::Create {
            project_id: Some(project_id),
            name,
            json,
            db,
            ..
        } => {
            let (info, secret) = with_store(global, &db, |store| async move {
                store.create_token(&project_id, &name).await
            })?;
            if json {
                println!(
                    "{}",
                    json!({
                        "id": info.id,
                        "project_id": info.project_id,
                        "name": info.name,
                        "token": secret,
                    })
                );
            } else {
                println!("created token {} ({})", info.id, info.name);
                println!("  token   {secret}   (shown only now)");
            }
        }
        TokenCommand::Ls {
            project_id: None,
            json,
            db,
            ..
        } => {
            let tokens = with_store(
                global,
                &db,
                |store| async move { store.operator_tokens().await },
            )?;
            print_tokens(json, &tokens, |t| {
                (&t.id, &t.name, t.created_at, t.revoked_at)
            });
        }
        TokenCommand::Ls {
            project_id: Some(project_id),
            json,
            db,
            ..
        } => {
            let tokens = with_store(global, &db, |store| async move {
                store.tokens(&project_id).await
            })?;
            print_tokens(json, &tokens, |t| {
                (&t.id, &t.name, t.created_at, t.revoked_at)
            });
        }
        TokenCommand::Revoke { token_id, json, db } => {
            let id = token_id.clone();
            // Ids are unique across both kinds: whichever holds it.
            let revoked = with_store(global, &db, |store| async move {
                Ok(store.revoke_token(&id).await? || store.revoke_operator_token(&id).await?)
            })?;
            if !revoked {
                return Err(not_found(format!("no live token with id {token_id}")).into());
            }
            if json {
                println!("{}", json!({ "revoked": token_id }));
            } else {
                println!("revoked token {token_id}");
            }
        }
    }
    Ok(0)
}

/// Lists tokens of either kind (operator or project) as JSON or a table.
fn print_tokens<T: serde::Serialize>(
    json: bool,
    tokens: &[T],
    fields: impl Fn(&T) -> (&String, &String, i64, Option<i64>),
) {
    if json {
        println!("{}", json!({ "tokens": tokens }));
        return;
    }
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            let (id, name, created_at, revoked_at) = fields(t);
            vec![
                id.clone(),
                name.clone(),
                ago(created_at),
                revoked_at.map_or_else(|| "-".to_owned(), ago),
            ]
        })
        .collect();
    table(&["ID", "NAME", "CREATED", "REVOKED"], &rows);
}
