//! `berth code …`: push and manage codes over the task API.

mod package;

use crate::cli::{CodeArgs, CodeCommand, CodePushArgs};
use crate::client::{encode, Api, Multipart};
use crate::cmd::invalid;
use crate::cmd::not_found;
use crate::cmd::remote::{
    connect, details, is_not_found, list, print_json, text, unwrap, when, when_long,
};
use crate::output::table;
use crate::CliError;
use berth_core::ByteSize;
use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::PathBuf;

pub fn run(args: CodeArgs) -> anyhow::Result<u8> {
    let api = connect(&args.client)?;
    match args.command {
        CodeCommand::Push(push_args) => push(&api, *push_args)?,
        CodeCommand::Ls { json } => {
            let codes = all_codes(&api)?;
            if json {
                print_json(&json!({ "codes": codes }));
            } else {
                let rows: Vec<Vec<String>> = codes
                    .iter()
                    .map(|c| {
                        vec![
                            text(c, "name"),
                            text(c, "id"),
                            text(c, "rev"),
                            runs(c),
                            concurrency(c),
                            text(c, "paused"),
                            when(c, "latest_change"),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "NAME",
                        "ID",
                        "REV",
                        "RUNS",
                        "CONCURRENCY",
                        "PAUSED",
                        "UPDATED",
                    ],
                    &rows,
                );
            }
        }
        CodeCommand::Show { code, json } => {
            let code = resolve(&api, &code)?;
            if json {
                print_json(&code);
            } else {
                show(&code);
            }
        }
        CodeCommand::Rm { code, json } => {
            let code = resolve(&api, &code)?;
            let answer = api.delete(&path(&code, ""))?;
            if json {
                print_json(&answer);
            } else {
                println!("deleted code {}", text(&code, "name"));
            }
        }
        CodeCommand::Revisions { code, json } => {
            let code = resolve(&api, &code)?;
            let answer = api.get(&path(&code, "/revisions"), &[("per_page", "100".into())])?;
            if json {
                print_json(&answer);
            } else {
                let rows: Vec<Vec<String>> = list(&answer, "revisions")
                    .iter()
                    .map(|r| {
                        vec![
                            text(r, "rev"),
                            text(r, "id"),
                            runs(r),
                            size(r),
                            when(r, "created_at"),
                        ]
                    })
                    .collect();
                table(&["REV", "ID", "RUNS", "PACKAGE", "CREATED"], &rows);
            }
        }
        CodeCommand::Download {
            code,
            revision,
            output,
        } => {
            let code = resolve(&api, &code)?;
            let query: Vec<(&str, String)> = revision
                .map(|r| ("revision", r.to_string()))
                .into_iter()
                .collect();
            let bytes = api.get_bytes(&path(&code, "/download"), &query)?;
            let name = text(&code, "name");
            let output = output.unwrap_or_else(|| match revision {
                Some(r) => PathBuf::from(format!("{}-rev{r}.zip", file_safe(&name))),
                None => PathBuf::from(format!("{}.zip", file_safe(&name))),
            });
            if output.as_os_str() == "-" {
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(&bytes)?;
                stdout.flush()?;
            } else {
                std::fs::write(&output, &bytes)
                    .map_err(|e| invalid(format!("writing {}: {e}", output.display())))?;
                println!(
                    "downloaded {name} to {} ({})",
                    output.display(),
                    ByteSize(bytes.len() as u64)
                );
            }
        }
        CodeCommand::Pause { code, json } => pause(&api, &code, true, json)?,
        CodeCommand::Resume { code, json } => pause(&api, &code, false, json)?,
        CodeCommand::Stats { code, json } => {
            let code = resolve(&api, &code)?;
            let stats = api.get(&path(&code, "/stats"), &[])?;
            if json {
                print_json(&stats);
            } else {
                let rows: Vec<Vec<String>> = [
                    "queued",
                    "preparing",
                    "running",
                    "complete",
                    "error",
                    "cancelled",
                    "killed",
                    "timeout",
                ]
                .iter()
                .map(|status| {
                    let count = stats.get(*status).and_then(Value::as_i64).unwrap_or(0);
                    vec![status.to_string(), count.to_string()]
                })
                .collect();
                table(&["STATUS", "TASKS"], &rows);
            }
        }
    }
    Ok(0)
}

fn push(api: &Api, args: CodePushArgs) -> Result<(), CliError> {
    let mut data = Map::new();
    data.insert("name".into(), json!(args.name));
    let mut package = None;
    if let Some(image) = &args.image {
        data.insert("image".into(), json!(image));
        if let Some(command) = &args.command {
            data.insert("command".into(), json!(command));
        }
    } else if let (Some(runtime), Some(file)) = (&args.runtime, &args.file) {
        data.insert("runtime".into(), json!(runtime));
        data.insert("file_name".into(), json!(file));
        let (bytes, shown) = match (&args.zip, &args.dir) {
            (Some(zip), None) => {
                let bytes = std::fs::read(zip)
                    .map_err(|e| invalid(format!("reading {}: {e}", zip.display())))?;
                (bytes, zip.clone())
            }
            (None, Some(dir)) => (package::zip_dir(dir)?, dir.clone()),
            _ => {
                return Err(invalid(
                    "a classic code (--runtime) needs its package: --zip PATH or --dir DIR",
                ))
            }
        };
        package::check_zip(&bytes, file, &shown)?;
        package = Some(bytes);
    } else {
        return Err(invalid("pass --image, or --runtime with --file"));
    }
    let config = match (&args.config, &args.config_file) {
        (Some(text), _) => Some(text.clone()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| invalid(format!("reading {}: {e}", path.display())))?,
        ),
        (None, None) => None,
    };
    if let Some(config) = config {
        data.insert("config".into(), json!(config));
    }
    if !args.env.is_empty() {
        let mut env = Map::new();
        for pair in &args.env {
            match pair.split_once('=') {
                Some((key, value)) if !key.is_empty() => {
                    env.insert(key.to_owned(), json!(value));
                }
                _ => return Err(invalid(format!("--env {pair:?}: expected KEY=VALUE"))),
            }
        }
        data.insert("env_vars".into(), Value::Object(env));
    }
    if let Some(n) = args.max_concurrency {
        data.insert("max_concurrency".into(), json!(n));
    }
    if let Some(n) = args.retries {
        data.insert("retries".into(), json!(n));
    }
    if let Some(secs) = args.retries_delay {
        data.insert("retries_delay".into(), json!(secs));
    }
    if let Some(network) = &args.network {
        data.insert("network".into(), json!(network));
    }
    if let Some(p) = args.priority {
        data.insert("default_priority".into(), json!(p));
    }
    data.extend(args.placement.fields());

    let mut form = Multipart::new().text(
        "data",
        "application/json",
        Value::Object(data).to_string().into_bytes(),
    );
    let package_size = package.as_ref().map(Vec::len);
    if let Some(bytes) = package {
        form = form.file(
            "file",
            &format!("{}.zip", file_safe(&args.name)),
            "application/zip",
            bytes,
        );
    }
    let answer = api.post_multipart("/codes", form)?;
    if args.json {
        print_json(&answer);
    } else {
        let rev = match answer.get("rev") {
            Some(Value::Number(n)) => format!(" revision {n}"),
            _ => String::new(),
        };
        let id = answer.get("id").and_then(Value::as_str).unwrap_or("?");
        let size = package_size
            .map(|n| format!(", package {}", ByteSize(n as u64)))
            .unwrap_or_default();
        println!("pushed {}{rev} (id {id}{size})", args.name);
    }
    Ok(())
}

fn pause(api: &Api, code: &str, paused: bool, json: bool) -> Result<(), CliError> {
    let code = resolve(api, code)?;
    let suffix = if paused {
        "/pause_task_queue"
    } else {
        "/resume_task_queue"
    };
    let answer = api.post(&path(&code, suffix), &json!({}))?;
    if json {
        print_json(&answer);
    } else {
        println!(
            "{} the task queue of {}",
            if paused { "paused" } else { "resumed" },
            text(&code, "name")
        );
    }
    Ok(())
}

/// `/codes/{id}{suffix}` of a code object.
fn path(code: &Value, suffix: &str) -> String {
    format!("/codes/{}{suffix}", encode(&text(code, "id")))
}

/// Every code of the project (all pages).
fn all_codes(api: &Api) -> Result<Vec<Value>, CliError> {
    const PER_PAGE: usize = 100;
    let mut codes = Vec::new();
    for page in 0.. {
        let answer = api.get(
            "/codes",
            &[
                ("page", page.to_string()),
                ("per_page", PER_PAGE.to_string()),
            ],
        )?;
        let batch = list(&answer, "codes");
        codes.extend(batch.iter().cloned());
        if batch.len() < PER_PAGE {
            break;
        }
    }
    Ok(codes)
}

/// A code by id (24 hex characters) or else by name.
fn resolve(api: &Api, name_or_id: &str) -> Result<Value, CliError> {
    let looks_like_id = name_or_id.len() == 24 && name_or_id.bytes().all(|b| b.is_ascii_hexdigit());
    if looks_like_id {
        match api.get(&format!("/codes/{}", encode(name_or_id)), &[]) {
            Ok(answer) => return Ok(unwrap(&answer, "code").clone()),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e),
        }
    }
    all_codes(api)?
        .into_iter()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(name_or_id))
        .ok_or_else(|| {
            not_found(format!(
                "no code named {name_or_id:?} (see `berth code ls`)"
            ))
        })
}

/// What a code runs: `busybox: echo hi` or `sh report.sh`.
fn runs(code: &Value) -> String {
    let field = |key| {
        code.get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    match (field("image"), field("runtime")) {
        (Some(image), _) => match field("command") {
            Some(command) => format!("{image}: {}", crate::cmd::remote::clip(command, 40)),
            None => image.to_owned(),
        },
        (None, Some(runtime)) => format!("{runtime} {}", field("file_name").unwrap_or("?")),
        (None, None) => "-".to_owned(),
    }
}

/// `max_concurrency`, where -1 (or none) means unlimited.
fn concurrency(code: &Value) -> String {
    match code.get("max_concurrency").and_then(Value::as_i64) {
        Some(n) if n > 0 => n.to_string(),
        _ => "unlimited".to_owned(),
    }
}

fn size(revision: &Value) -> String {
    match revision.get("package_size").and_then(Value::as_u64) {
        Some(0) | None => "-".to_owned(),
        Some(n) => ByteSize(n).to_string(),
    }
}

fn show(code: &Value) {
    let env = code
        .get("env_vars")
        .and_then(Value::as_object)
        .filter(|m| !m.is_empty())
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    format!(
                        "{k}={}",
                        v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                    )
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| "-".to_owned());
    details(&[
        ("name", text(code, "name")),
        ("id", text(code, "id")),
        ("revision", text(code, "rev")),
        ("image", text(code, "image")),
        ("command", text(code, "command")),
        ("runtime", text(code, "runtime")),
        ("file", text(code, "file_name")),
        ("env", env),
        ("config", text(code, "config")),
        ("max concurrency", concurrency(code)),
        ("retries", text(code, "retries")),
        (
            "retries delay",
            code.get("retries_delay")
                .and_then(Value::as_i64)
                .map_or_else(|| "-".to_owned(), |s| format!("{s}s")),
        ),
        ("default priority", text(code, "default_priority")),
        ("paused", text(code, "paused")),
        ("package", size(code)),
        ("created", when_long(code, "created_at")),
        ("updated", when_long(code, "latest_change")),
    ]);
}

/// A name usable as a file name.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}
