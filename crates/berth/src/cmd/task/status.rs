//! A task fetched by id, and whether it has ended: what `show`, `log
//! --follow` and `queue --wait` share.

use crate::client::{encode, Api};
use crate::cmd::remote::unwrap;
use crate::CliError;
use serde_json::Value;

/// The statuses a task ends in.
const TERMINAL: [&str; 5] = ["complete", "error", "cancelled", "timeout", "killed"];

/// A task by id.
pub fn get(api: &Api, id: &str) -> Result<Value, CliError> {
    let answer = api.get(&format!("/tasks/{}", encode(id)), &[])?;
    Ok(unwrap(&answer, "task").clone())
}

/// Whether a task object has ended.
pub fn ended(task: &Value) -> bool {
    task.get("status")
        .and_then(Value::as_str)
        .is_some_and(|s| TERMINAL.contains(&s))
}
