//! `berth schedule create|ls|show|cancel`.

use crate::cli::{ScheduleArgs, ScheduleCommand, ScheduleCreateArgs};
use crate::client::{encode, Api};
use crate::cmd::invalid;
use crate::cmd::remote::{
    clip, connect, created_id, details, list, print_json, read_payload, text, unwrap, when,
    when_long,
};
use crate::output::table;
use crate::when::{format_rfc3339, now_secs};
use crate::CliError;
use serde_json::{json, Map, Value};

pub fn run(args: ScheduleArgs) -> anyhow::Result<u8> {
    let api = connect(&args.client)?;
    match args.command {
        ScheduleCommand::Create(create_args) => create(&api, *create_args)?,
        ScheduleCommand::Ls { json } => {
            let answer = api.get("/schedules", &[("per_page", "100".into())])?;
            if json {
                print_json(&answer);
            } else {
                let rows: Vec<Vec<String>> = list(&answer, "schedules")
                    .iter()
                    .map(|s| {
                        vec![
                            text(s, "id"),
                            text(s, "code_name"),
                            text(s, "status"),
                            every(s),
                            when(s, "next_start"),
                            when(s, "last_run_time"),
                            runs(s),
                            clip(&text(s, "label"), 20),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "ID", "CODE", "STATUS", "EVERY", "NEXT", "LAST RUN", "RUNS", "LABEL",
                    ],
                    &rows,
                );
            }
        }
        ScheduleCommand::Show { id, json } => {
            let answer = api.get(&format!("/schedules/{}", encode(&id)), &[])?;
            let schedule = unwrap(&answer, "schedule");
            if json {
                print_json(schedule);
            } else {
                show(schedule);
            }
        }
        ScheduleCommand::Cancel { id, json } => {
            let answer = api.post(&format!("/schedules/{}/cancel", encode(&id)), &json!({}))?;
            if json {
                print_json(&answer);
            } else {
                match answer.get("msg").and_then(Value::as_str) {
                    Some(msg) if !msg.is_empty() => println!("schedule {id}: {msg}"),
                    _ => println!("cancelled schedule {id}"),
                }
            }
        }
    }
    Ok(0)
}

fn create(api: &Api, args: ScheduleCreateArgs) -> Result<(), CliError> {
    let start_at = args.start_at.unwrap_or_else(now_secs);
    if let Some(end_at) = args.end_at {
        if end_at < start_at {
            return Err(invalid("--end-at is before --start-at"));
        }
    }
    if args.run_every == Some(0) {
        return Err(invalid("--run-every must be at least 1 second"));
    }
    let mut schedule = Map::new();
    schedule.insert("code_name".into(), json!(args.code_name));
    schedule.insert("payload".into(), json!(read_payload(&args.payload)?));
    schedule.insert("start_at".into(), json!(format_rfc3339(start_at)));
    if let Some(every) = args.run_every {
        schedule.insert("run_every".into(), json!(every));
    }
    if let Some(times) = args.run_times {
        schedule.insert("run_times".into(), json!(times));
    }
    if let Some(end_at) = args.end_at {
        schedule.insert("end_at".into(), json!(format_rfc3339(end_at)));
    }
    if let Some(p) = args.priority {
        schedule.insert("priority".into(), json!(p));
    }
    if let Some(t) = args.timeout {
        schedule.insert("timeout".into(), json!(t));
    }
    if let Some(label) = &args.label {
        schedule.insert("label".into(), json!(label));
    }
    if let Some(cluster) = &args.cluster {
        schedule.insert("cluster".into(), json!(cluster));
    }
    let answer = api.post(
        "/schedules",
        &json!({ "schedules": [Value::Object(schedule)] }),
    )?;
    if args.json {
        print_json(&answer);
    } else {
        println!("{}", created_id(&answer, "schedules")?);
    }
    Ok(())
}

/// `run_every` as `1h`, or `once`.
fn every(schedule: &Value) -> String {
    match schedule.get("run_every").and_then(Value::as_u64) {
        Some(secs) if secs > 0 => crate::when::short_duration(secs),
        _ => "once".to_owned(),
    }
}

/// `3` or `3/10` runs made.
fn runs(schedule: &Value) -> String {
    let count = schedule
        .get("run_count")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    match schedule.get("run_times").and_then(Value::as_i64) {
        Some(times) => format!("{count}/{times}"),
        None => count.to_string(),
    }
}

fn show(schedule: &Value) {
    details(&[
        ("id", text(schedule, "id")),
        ("code", text(schedule, "code_name")),
        ("status", text(schedule, "status")),
        ("every", every(schedule)),
        ("runs", runs(schedule)),
        ("start at", when_long(schedule, "start_at")),
        ("end at", when_long(schedule, "end_at")),
        ("next start", when_long(schedule, "next_start")),
        ("last run", when_long(schedule, "last_run_time")),
        ("priority", text(schedule, "priority")),
        ("timeout", text(schedule, "timeout")),
        ("label", text(schedule, "label")),
        ("created", when_long(schedule, "created_at")),
        ("payload", clip(&text(schedule, "payload"), 200)),
    ]);
}
