//! `berth task queue`: queue N tasks in batches, optionally wait for them.

use super::status::{ended, get};
use crate::cli::TaskQueueArgs;
use crate::client::Api;
use crate::cmd::remote::{list, print_json, read_payload, text, unexpected};
use crate::CliError;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

/// Tasks per `POST /tasks`.
const BATCH: u32 = 100;

/// Queues the tasks; with `--wait`, returns 1 unless all completed.
pub fn run(api: &Api, args: TaskQueueArgs) -> Result<u8, CliError> {
    let payload = read_payload(&args.payload)?;
    let mut task = Map::new();
    task.insert("code_name".into(), json!(args.code_name));
    task.insert("payload".into(), json!(payload));
    if let Some(p) = args.priority {
        task.insert("priority".into(), json!(p));
    }
    if let Some(t) = args.timeout {
        task.insert("timeout".into(), json!(t));
    }
    if let Some(d) = args.delay {
        task.insert("delay".into(), json!(d));
    }
    if let Some(label) = &args.label {
        task.insert("label".into(), json!(label));
    }
    if let Some(cluster) = &args.cluster {
        task.insert("cluster".into(), json!(cluster));
    }
    task.extend(args.placement.fields());
    let task = Value::Object(task);

    let bar = bar(args.count > 1 && !args.json, args.count, "queued");
    let mut ids: Vec<String> = Vec::with_capacity(args.count as usize);
    let mut last_answer = Value::Null;
    let mut remaining = args.count;
    while remaining > 0 {
        let n = remaining.min(BATCH);
        let body = json!({ "tasks": vec![task.clone(); n as usize] });
        let answer = match api.post("/tasks", &body) {
            Ok(answer) => answer,
            Err(mut e) => {
                bar.finish_and_clear();
                if !ids.is_empty() {
                    print_ids(&ids, args.json);
                    e.0.message = format!(
                        "queued {} of {} tasks, then: {}",
                        ids.len(),
                        args.count,
                        e.0.message
                    );
                }
                return Err(e);
            }
        };
        let batch: Vec<String> = list(&answer, "tasks")
            .iter()
            .filter_map(|t| t.get("id").and_then(Value::as_str).map(str::to_owned))
            .collect();
        if batch.len() != n as usize {
            bar.finish_and_clear();
            return Err(unexpected(&answer));
        }
        ids.extend(batch);
        bar.inc(u64::from(n));
        remaining -= n;
        last_answer = answer;
    }
    bar.finish_and_clear();

    if !args.wait {
        if args.json && args.count <= BATCH {
            print_json(&last_answer);
        } else {
            print_ids(&ids, args.json);
        }
        return Ok(0);
    }
    if !args.json {
        print_ids(&ids, false);
    }
    let tasks = wait(api, &ids, args.json)?;
    let failed: Vec<&Value> = tasks
        .iter()
        .filter(|t| t.get("status").and_then(Value::as_str) != Some("complete"))
        .collect();
    if args.json {
        print_json(&json!({ "tasks": tasks }));
    } else {
        summarize(&tasks, &failed);
    }
    Ok(if failed.is_empty() { 0 } else { 1 })
}

fn print_ids(ids: &[String], json: bool) {
    if json {
        let tasks: Vec<Value> = ids.iter().map(|id| json!({ "id": id })).collect();
        print_json(&json!({ "msg": "Queued up", "tasks": tasks }));
    } else {
        for id in ids {
            println!("{id}");
        }
    }
}

/// Polls until every task has ended; returns them in `ids`' order.
fn wait(api: &Api, ids: &[String], json: bool) -> Result<Vec<Value>, CliError> {
    let bar = bar(!json, ids.len() as u32, "ended");
    let mut done: BTreeMap<usize, Value> = BTreeMap::new();
    let mut interval = Duration::from_millis(200);
    loop {
        for (i, id) in ids.iter().enumerate() {
            if done.contains_key(&i) {
                continue;
            }
            let task = get(api, id)?;
            if ended(&task) {
                done.insert(i, task);
                bar.inc(1);
            } else if ids.len() == 1 {
                bar.set_message(text(&task, "status"));
            }
        }
        let failed = done
            .values()
            .filter(|t| t.get("status").and_then(Value::as_str) != Some("complete"))
            .count();
        if failed > 0 {
            bar.set_message(format!("{failed} not complete"));
        }
        if done.len() == ids.len() {
            break;
        }
        std::thread::sleep(interval);
        interval = (interval * 3 / 2).min(Duration::from_secs(2));
    }
    bar.finish_and_clear();
    Ok(done.into_values().collect())
}

fn summarize(tasks: &[Value], failed: &[&Value]) {
    if let [task] = tasks {
        let msg = match task.get("msg").and_then(Value::as_str) {
            Some(m) if !m.is_empty() && m != text(task, "status") => format!(": {m}"),
            _ => String::new(),
        };
        let duration = task
            .get("duration")
            .and_then(Value::as_i64)
            .map(|ms| format!(" in {}", crate::when::elapsed_ms(ms)))
            .unwrap_or_default();
        eprintln!(
            "task {} {}{duration}{msg}",
            text(task, "id"),
            text(task, "status")
        );
        return;
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for task in tasks {
        *counts.entry(text(task, "status")).or_default() += 1;
    }
    let summary: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    eprintln!("{} tasks ended: {}", tasks.len(), summary.join(", "));
    for task in failed.iter().take(20) {
        let (status, msg) = (text(task, "status"), text(task, "msg"));
        let msg = if msg == status || msg == "-" {
            String::new()
        } else {
            format!(": {}", crate::cmd::remote::clip(&msg, 60))
        };
        eprintln!("  {} {status}{msg}", text(task, "id"));
    }
    if failed.len() > 20 {
        eprintln!("  … and {} more", failed.len() - 20);
    }
}

/// A progress bar on a terminal's stderr (hidden otherwise).
fn bar(show: bool, total: u32, what: &str) -> ProgressBar {
    if !show || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(u64::from(total));
    bar.set_style(
        ProgressStyle::with_template(&format!("{{pos}}/{{len}} {what} [{{bar:30}}] {{msg}}"))
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
