//! `berth pool …`: the fair-share pools, through the server's `/v1/pools`
//! with an operator token.

use crate::cli::{PoolArgs, PoolCommand};
use crate::client::{encode, Api, ResolvedOperator};
use crate::cmd::invalid;
use crate::cmd::remote::print_json;
use crate::output::table;
use crate::CliError;
use serde_json::{json, Map, Value};

pub fn run(args: PoolArgs) -> anyhow::Result<u8> {
    let api = Api::operator(&ResolvedOperator::from_args(&args.operator)?);
    match args.command {
        PoolCommand::Ls { json } => {
            let pools = api.get("/v1/pools", &[])?;
            if json {
                print_json(&pools);
            } else {
                list(&pools);
            }
        }
        PoolCommand::Set {
            name,
            weight,
            min,
            max,
            json,
        } => {
            let mut body = Map::new();
            body.insert("weight".into(), json!(weight));
            if let Some(min) = &min {
                body.insert("min".into(), amounts("--min", min)?);
            }
            if let Some(max) = &max {
                body.insert("max".into(), amounts("--max", max)?);
            }
            let answer = api.put(
                &format!("/v1/pools/{}", encode(&name)),
                &Value::Object(body),
            )?;
            if json {
                print_json(&answer);
            } else {
                println!("pool {name}: {}", describe(&answer));
            }
        }
        PoolCommand::Rm { name, json } => {
            let answer = api.delete(&format!("/v1/pools/{}", encode(&name)))?;
            if json {
                print_json(&answer);
            } else {
                println!("removed the configuration of pool {name}");
            }
        }
    }
    Ok(0)
}

/// `cpus=4,memory=8g,disk=…,pids=…` as the API's amounts object.
fn amounts(flag: &str, text: &str) -> Result<Value, CliError> {
    let mut out = Map::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| invalid(format!("{flag} {part:?}: expected KEY=VALUE")))?;
        let value = match key {
            "cpus" => json!(value
                .parse::<f64>()
                .map_err(|_| invalid(format!("{flag} cpus={value}: a number of CPUs")))?),
            "pids" => json!(value
                .parse::<u64>()
                .map_err(|_| invalid(format!("{flag} pids={value}: a whole number")))?),
            "memory" | "disk" => json!(value),
            other => {
                return Err(invalid(format!(
                    "{flag} {other:?}: known are cpus, memory, disk and pids"
                )))
            }
        };
        out.insert(key.to_owned(), value);
    }
    Ok(Value::Object(out))
}

fn amount_text(amounts: &Value) -> String {
    let Some(map) = amounts.as_object() else {
        return "-".to_owned();
    };
    let parts: Vec<String> = map
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| match (k.as_str(), v.as_u64()) {
            ("memory" | "disk", Some(b)) => format!("{k}={}", berth_core::ByteSize(b)),
            _ => format!("{k}={v}"),
        })
        .collect();
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(",")
    }
}

fn describe(pool: &Value) -> String {
    format!(
        "weight {}, min {}, max {}",
        pool["weight"],
        amount_text(&pool["min"]),
        amount_text(&pool["max"])
    )
}

fn list(pools: &Value) {
    let rows: Vec<Vec<String>> = pools
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|p| {
            vec![
                p["name"].as_str().unwrap_or("-").to_owned(),
                p["weight"].to_string(),
                amount_text(&p["min"]),
                amount_text(&p["max"]),
            ]
        })
        .collect();
    table(&["POOL", "WEIGHT", "MIN", "MAX"], &rows);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_parsed_from_flags() {
        assert_eq!(
            amounts("--min", "cpus=0.5,memory=8g").unwrap(),
            json!({"cpus": 0.5, "memory": "8g"})
        );
        for bad in ["cpus", "cpus=x", "gpus=1", "pids=-1"] {
            assert!(amounts("--min", bad).is_err(), "{bad}");
        }
    }
}
