//! What the client commands (`code`, `task`, `schedule`) share: the API
//! connection, payloads, and reading the server's JSON tolerantly.

use crate::cli::{ClientArgs, PayloadArgs};
use crate::client::{Api, Resolved};
use crate::cmd::invalid;
use crate::CliError;
use berth_core::{ErrorCode, ErrorReport};
use serde_json::Value;
use std::io::Read;

/// The API of the configured server and project.
pub fn connect(args: &ClientArgs) -> Result<Api, CliError> {
    Ok(Api::new(&Resolved::from_args(args)?))
}

/// Prints the server's JSON on one line (for scripts).
pub fn print_json(value: &Value) {
    println!("{value}");
}

/// The payload text: --payload, --payload-file (- = stdin), else empty.
pub fn read_payload(args: &PayloadArgs) -> Result<String, CliError> {
    if let Some(text) = &args.payload {
        return Ok(text.clone());
    }
    let Some(path) = &args.payload_file else {
        return Ok(String::new());
    };
    let mut bytes = Vec::new();
    let read = if path.as_os_str() == "-" {
        std::io::stdin().lock().read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut bytes))
    };
    read.map_err(|e| invalid(format!("reading the payload from {}: {e}", path.display())))?;
    String::from_utf8(bytes).map_err(|_| {
        invalid(format!(
            "the payload in {} is not UTF-8 text",
            path.display()
        ))
    })
}

/// A field as text: strings as they are, other values as JSON, "-" when
/// missing, null or empty.
pub fn text(value: &Value, key: &str) -> String {
    match value.get(key) {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) if s.is_empty() => "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => if *b { "yes" } else { "no" }.to_owned(),
        Some(other) => other.to_string(),
    }
}

/// A time field as "3m ago" / "in 5s", or "-".
pub fn when(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(crate::when::seconds_of)
        .map_or_else(|| "-".to_owned(), crate::when::relative)
}

/// A time field as "2024-05-01T12:00:00Z (3m ago)", or "-".
pub fn when_long(value: &Value, key: &str) -> String {
    match value.get(key).and_then(crate::when::seconds_of) {
        Some(secs) => format!(
            "{} ({})",
            crate::when::format_rfc3339(secs),
            crate::when::relative(secs)
        ),
        None => "-".to_owned(),
    }
}

/// The array under `key` (or the value itself when it is an array).
pub fn list<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    match value {
        Value::Array(items) => items,
        _ => value
            .get(key)
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice),
    }
}

/// The object under `key` when the server wraps it (`{"code": {…}}`), else
/// the value itself.
pub fn unwrap<'a>(value: &'a Value, key: &str) -> &'a Value {
    match value.get(key) {
        Some(inner @ Value::Object(_)) => inner,
        _ => value,
    }
}

/// The id of a created object: `id`, or the first of `list_key`'s items.
pub fn created_id(value: &Value, list_key: &str) -> Result<String, CliError> {
    let id = value
        .get("id")
        .or_else(|| list(value, list_key).first().and_then(|v| v.get("id")))
        .and_then(Value::as_str);
    id.map(str::to_owned).ok_or_else(|| unexpected(value))
}

/// The server answered 2xx with JSON we cannot use.
pub fn unexpected(value: &Value) -> CliError {
    CliError(ErrorReport::new(
        ErrorCode::Internal,
        format!("unexpected answer from the server: {value}"),
    ))
}

/// Prints `key  value` lines, keys aligned, skipping missing values.
pub fn details(rows: &[(&str, String)]) {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in rows {
        if value != "-" {
            println!("{key:<width$}   {value}");
        }
    }
}

/// At most `max` characters, with an ellipsis, on one line.
pub fn clip(text: &str, max: usize) -> String {
    let one_line = text.replace(['\n', '\r'], " ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let mut out: String = one_line.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// Whether an error is the server's "not found".
pub fn is_not_found(err: &CliError) -> bool {
    err.0.code == ErrorCode::NotFound
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_json_tolerantly() {
        let v = json!({"tasks": [{"id": "a"}], "n": 3, "s": "", "b": true});
        assert_eq!(text(&v, "n"), "3");
        assert_eq!(text(&v, "s"), "-");
        assert_eq!(text(&v, "b"), "yes");
        assert_eq!(text(&v, "missing"), "-");
        assert_eq!(list(&v, "tasks").len(), 1);
        assert_eq!(created_id(&v, "tasks").unwrap(), "a");
        assert_eq!(unwrap(&json!({"code": {"id": "x"}}), "code")["id"], "x");
        assert_eq!(clip("abcdef", 4), "abc…");
    }
}
