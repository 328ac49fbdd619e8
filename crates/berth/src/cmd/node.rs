//! `berth node …`: the fleet's hosts, through the server's `/v1/nodes`
//! with an operator token.

use crate::cli::{NodeArgs, NodeCommand};
use crate::client::{encode, Api, ResolvedOperator};
use crate::cmd::invalid;
use crate::cmd::remote::print_json;
use crate::output::table;
use crate::CliError;
use serde_json::{json, Map, Value};

pub fn run(args: NodeArgs) -> anyhow::Result<u8> {
    let api = Api::operator(&ResolvedOperator::from_args(&args.operator)?);
    let (answer, json) = match args.command {
        NodeCommand::Ls { json } => {
            let nodes = api.get("/v1/nodes", &[])?;
            if !json {
                list(&nodes);
                return Ok(0);
            }
            (nodes, true)
        }
        NodeCommand::Inspect { name, json } => (api.get(&node_path(&name, ""), &[])?, json),
        NodeCommand::Drain { name, json } => {
            (api.post(&node_path(&name, "/drain"), &Value::Null)?, json)
        }
        NodeCommand::Undrain { name, json } => {
            (api.post(&node_path(&name, "/undrain"), &Value::Null)?, json)
        }
        NodeCommand::Label {
            name,
            changes,
            json,
        } => {
            let change = label_change(&changes)?;
            (api.put(&node_path(&name, "/labels"), &change)?, json)
        }
        NodeCommand::Rm { name, json } => {
            let answer = api.delete(&node_path(&name, ""))?;
            if !json {
                println!("removed host {name} from the fleet");
                return Ok(0);
            }
            (answer, true)
        }
    };
    if json {
        print_json(&answer);
    } else {
        show(&answer);
    }
    Ok(0)
}

fn node_path(name: &str, rest: &str) -> String {
    format!("/v1/nodes/{}{rest}", encode(name))
}

/// `KEY=VALUE` sets, `KEY-` removes (as kubectl's `label` does).
fn label_change(changes: &[String]) -> Result<Value, CliError> {
    let mut set = Map::new();
    let mut remove = Vec::new();
    for change in changes {
        if let Some((key, value)) = change.split_once('=') {
            if key.is_empty() {
                return Err(invalid(format!("{change:?}: a label needs a key")));
            }
            set.insert(key.to_owned(), Value::String(value.to_owned()));
        } else if let Some(key) = change.strip_suffix('-').filter(|k| !k.is_empty()) {
            remove.push(key.to_owned());
        } else {
            return Err(invalid(format!(
                "{change:?}: expected KEY=VALUE to set or KEY- to remove"
            )));
        }
    }
    Ok(json!({ "set": set, "remove": remove }))
}

fn text(value: &Value, pointer: &str) -> String {
    match value.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".to_owned(),
        Some(other) => other.to_string(),
    }
}

fn cpus(value: &Value, pointer: &str) -> String {
    value
        .pointer(pointer)
        .and_then(Value::as_u64)
        .map_or_else(|| "-".to_owned(), |m| format!("{}", m as f64 / 1000.0))
}

fn bytes(value: &Value, pointer: &str) -> String {
    value
        .pointer(pointer)
        .and_then(Value::as_u64)
        .map_or_else(|| "-".to_owned(), |b| berth_core::ByteSize(b).to_string())
}

fn labels(node: &Value) -> String {
    let Some(labels) = node.get("labels").and_then(Value::as_object) else {
        return "-".to_owned();
    };
    if labels.is_empty() {
        return "-".to_owned();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(",")
}

fn heartbeat(node: &Value) -> String {
    node.get("last_heartbeat_ms")
        .and_then(Value::as_i64)
        .map_or_else(|| "-".to_owned(), |ms| crate::when::relative(ms / 1000))
}

fn list(nodes: &Value) {
    let rows: Vec<Vec<String>> = nodes
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|n| {
            vec![
                text(n, "/name"),
                text(n, "/state"),
                text(n, "/address"),
                cpus(n, "/report/allocatable/cpu_millis"),
                bytes(n, "/report/allocatable/memory_bytes"),
                text(n, "/report/used/containers_running"),
                labels(n),
                heartbeat(n),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "STATE",
            "ADDRESS",
            "CPUS",
            "MEMORY",
            "RUNNING",
            "LABELS",
            "HEARTBEAT",
        ],
        &rows,
    );
}

fn show(node: &Value) {
    let fields = [
        ("name", text(node, "/name")),
        ("id", text(node, "/id")),
        ("state", text(node, "/state")),
        ("address", text(node, "/address")),
        ("labels", labels(node)),
        ("version", text(node, "/report/version")),
        (
            "capacity",
            format!(
                "{} cpus, {} memory, {} disk",
                text(node, "/report/capacity/cpus"),
                bytes(node, "/report/capacity/memory_bytes"),
                bytes(node, "/report/capacity/disk_bytes")
            ),
        ),
        (
            "allocatable",
            format!(
                "{} cpus, {} memory, {} disk, {} pids",
                cpus(node, "/report/allocatable/cpu_millis"),
                bytes(node, "/report/allocatable/memory_bytes"),
                bytes(node, "/report/allocatable/disk_bytes"),
                text(node, "/report/allocatable/pids")
            ),
        ),
        (
            "allocated",
            format!(
                "{} cpus, {} memory",
                cpus(node, "/report/allocated/cpu_millis"),
                bytes(node, "/report/allocated/memory_bytes")
            ),
        ),
        ("running", text(node, "/report/used/containers_running")),
        (
            "images",
            node.pointer("/report/images")
                .and_then(Value::as_array)
                .map_or(0, Vec::len)
                .to_string(),
        ),
        ("heartbeat", heartbeat(node)),
    ];
    for (key, value) in fields {
        println!("{key:<12} {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_set_with_equals_and_removed_with_a_dash() {
        let change = label_change(&["zone=b".into(), "gpu-".into(), "empty=".into()]).unwrap();
        assert_eq!(
            change,
            json!({"set": {"zone": "b", "empty": ""}, "remove": ["gpu"]})
        );
        for bad in ["zone", "=x", "-"] {
            assert!(label_change(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
