//! `berth server ls`: the servers sharing the control plane's store and
//! which one leads, through the server's `/v1/servers` with an operator
//! token. (`berth server` itself, the daemon, is berthd's.)

use crate::cli::ServerLsArgs;
use crate::client::{Api, ResolvedOperator};
use crate::cmd::remote::print_json;
use crate::output::table;
use clap::Parser;
use serde_json::Value;
use std::ffi::OsString;

/// `args`: what followed `berth server ls`.
pub fn run(args: &[OsString]) -> anyhow::Result<u8> {
    let args = match ServerLsArgs::try_parse_from(
        std::iter::once(OsString::from("berth server ls")).chain(args.iter().cloned()),
    ) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    let api = Api::operator(&ResolvedOperator::from_args(&args.operator)?);
    let answer = api.get("/v1/servers", &[])?;
    if args.json {
        print_json(&answer);
    } else {
        list(&answer);
    }
    Ok(0)
}

fn text(value: &Value, key: &str) -> String {
    match value.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".to_owned(),
        Some(other) => other.to_string(),
    }
}

fn list(answer: &Value) {
    let servers = answer
        .get("servers")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = servers
        .iter()
        .map(|s| {
            let leads = s.get("leader").and_then(Value::as_bool) == Some(true);
            vec![
                text(s, "name"),
                text(s, "state"),
                if leads { "leader" } else { "-" }.to_owned(),
                text(s, "url"),
                text(s, "version"),
                s.get("started_at_ms")
                    .and_then(Value::as_i64)
                    .map_or_else(|| "-".to_owned(), |ms| crate::when::relative(ms / 1000)),
                s.get("last_seen_ago_ms")
                    .and_then(Value::as_i64)
                    .map_or_else(
                        || "-".to_owned(),
                        |ms| format!("{} ago", crate::when::elapsed_ms(ms)),
                    ),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "STATE",
            "ROLE",
            "URL",
            "VERSION",
            "STARTED",
            "LAST SEEN",
        ],
        &rows,
    );
    if let Some(term) = answer.get("term").and_then(Value::as_i64) {
        println!("dispatch lease: term {term}");
    }
}
