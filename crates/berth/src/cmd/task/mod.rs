//! `berth task …`: queue, list, show, follow, cancel and retry tasks.

mod log;
mod queue;
mod status;

use status::{ended, get};

use crate::cli::{TaskArgs, TaskCommand, TaskLsArgs};
use crate::client::{encode, Api};
use crate::cmd::remote::{
    clip, connect, created_id, details, list, print_json, text, when, when_long,
};
use crate::output::table;
use crate::CliError;
use serde_json::{json, Value};

pub fn run(args: TaskArgs) -> anyhow::Result<u8> {
    let api = connect(&args.client)?;
    match args.command {
        TaskCommand::Queue(queue_args) => return Ok(queue::run(&api, *queue_args)?),
        TaskCommand::Ls(ls_args) => ls(&api, ls_args)?,
        TaskCommand::Show { id, json } => {
            let task = get(&api, &id)?;
            if json {
                print_json(&task);
            } else {
                show(&task);
            }
        }
        TaskCommand::Log { id, follow } => log::run(&api, &id, follow)?,
        TaskCommand::Cancel { id, json } => {
            let answer = api.post(&format!("/tasks/{}/cancel", encode(&id)), &json!({}))?;
            if json {
                print_json(&answer);
            } else {
                match answer.get("msg").and_then(Value::as_str) {
                    Some(msg) if !msg.is_empty() => println!("task {id}: {msg}"),
                    _ => println!("cancelled task {id}"),
                }
            }
        }
        TaskCommand::Retry { id, delay, json } => {
            let answer = api.post(
                &format!("/tasks/{}/retry", encode(&id)),
                &json!({ "delay": delay.unwrap_or(0) }),
            )?;
            if json {
                print_json(&answer);
            } else {
                println!("{}", created_id(&answer, "tasks")?);
            }
        }
    }
    Ok(0)
}

fn ls(api: &Api, args: TaskLsArgs) -> Result<(), CliError> {
    let mut query: Vec<(&str, String)> = vec![
        ("page", args.page.to_string()),
        ("per_page", args.per_page.to_string()),
    ];
    if let Some(code) = &args.code {
        query.push(("code_name", code.clone()));
    }
    for status in &args.status {
        query.push((status_key(status), "1".into()));
    }
    if let Some(from) = args.from {
        query.push(("from_time", from.to_string()));
    }
    if let Some(to) = args.to {
        query.push(("to_time", to.to_string()));
    }
    let answer = api.get("/tasks", &query)?;
    if args.json {
        print_json(&answer);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list(&answer, "tasks")
        .iter()
        .map(|t| {
            vec![
                text(t, "id"),
                text(t, "code_name"),
                text(t, "status"),
                text(t, "node"),
                when(t, "created_at"),
                duration(t),
                clip(&text(t, "label"), 20),
                clip(&text(t, "msg"), 50),
            ]
        })
        .collect();
    table(
        &[
            "ID", "CODE", "STATUS", "NODE", "CREATED", "DURATION", "LABEL", "MSG",
        ],
        &rows,
    );
    Ok(())
}

/// The query key of a status filter (the value parser allows only these).
fn status_key(status: &str) -> &'static str {
    match status {
        "queued" => "queued",
        "preparing" => "preparing",
        "running" => "running",
        "complete" => "complete",
        "error" => "error",
        "cancelled" => "cancelled",
        "killed" => "killed",
        _ => "timeout",
    }
}

/// `duration` (ms) as `1.2s`, or "-".
fn duration(task: &Value) -> String {
    match task.get("duration").and_then(Value::as_i64) {
        Some(ms) if ms > 0 || ended(task) => crate::when::elapsed_ms(ms),
        _ => "-".to_owned(),
    }
}

/// A field in seconds as `90s`, or "-".
fn seconds(task: &Value, key: &str) -> String {
    task.get(key)
        .and_then(Value::as_i64)
        .map_or_else(|| "-".to_owned(), |s| format!("{s}s"))
}

/// What the task's attempt holds on its host, e.g. `512MiB limit, 64MiB
/// reserved, 0.5 cpus, 1024 pids`, or "-".
fn reserved(task: &Value) -> String {
    let Some(r) = task.get("reserved").filter(|r| r.is_object()) else {
        return "-".to_owned();
    };
    let bytes = |key: &str| {
        r.get(key)
            .and_then(Value::as_u64)
            .map_or_else(|| "-".to_owned(), |b| berth_core::ByteSize(b).to_string())
    };
    let mut parts = vec![
        format!("{} limit", bytes("memory_limit")),
        format!("{} reserved", bytes("memory_request")),
    ];
    if let Some(cpus) = r.get("cpus").and_then(Value::as_f64).filter(|c| *c > 0.0) {
        parts.push(format!("{cpus} cpus"));
    }
    if let Some(disk) = r.get("disk").and_then(Value::as_u64).filter(|d| *d > 0) {
        parts.push(format!("{} disk", berth_core::ByteSize(disk)));
    }
    parts.push(format!("{} pids", text(r, "pids")));
    parts.join(", ")
}

fn show(task: &Value) {
    let percent = match task.get("percent").and_then(Value::as_i64) {
        Some(p) => format!("{p}%"),
        None => "-".to_owned(),
    };
    details(&[
        ("id", text(task, "id")),
        ("code", text(task, "code_name")),
        ("revision", text(task, "code_rev")),
        ("status", text(task, "status")),
        ("msg", text(task, "msg")),
        ("node", text(task, "node")),
        ("reserved", reserved(task)),
        ("progress", percent),
        ("priority", text(task, "priority")),
        ("timeout", seconds(task, "timeout")),
        ("delay", seconds(task, "delay")),
        ("label", text(task, "label")),
        ("schedule", text(task, "schedule_id")),
        ("retry of", text(task, "original_task_id")),
        ("retries", text(task, "retry_count")),
        ("created", when_long(task, "created_at")),
        ("started", when_long(task, "start_time")),
        ("ended", when_long(task, "end_time")),
        ("duration", duration(task)),
        ("payload", clip(&text(task, "payload"), 200)),
    ]);
}
