//! What goes over the wire: the JSON shapes of codes, revisions, tasks and
//! schedules, times as RFC 3339, and a strict reader of request objects.
//!
//! Shapes follow IronWorker v2 where it was specific. Where it was not, the
//! rules are: every documented key is always present (a value that does not
//! exist is `null`, never an omitted key, so clients see one shape), times
//! are RFC 3339 UTC with milliseconds (`2026-11-21T10:00:00.123Z`), and
//! durations are in milliseconds.

use super::error::ApiError;
use super::warnings::Warnings;
use berth_store::{Code, CodeRevision, CodeStats, Millis, NewCodeRevision, Schedule, Task};
use serde_json::{json, Map, Value};

// ----- times -------------------------------------------------------------

/// Formats milliseconds since the epoch as RFC 3339 UTC with milliseconds.
pub fn format_time(millis: Millis) -> String {
    berth_core::time::format_rfc3339_millis(millis)
}

/// An optional time as JSON (`null` when absent).
pub fn time(millis: Option<Millis>) -> Value {
    millis.map_or(Value::Null, |m| Value::String(format_time(m)))
}

// ----- request objects ------------------------------------------------------

/// What errors call a whole request body; its fields' paths have no prefix.
pub const BODY: &str = "the body";

/// A JSON object read field by field, so that each error names the field it
/// is about. A field that is read has its value checked (a malformed value
/// of a known field is refused with 400). A field nobody read is accepted
/// and reported as a warning (`unknown field "tasks[0].priorty"`), as is a
/// known field whose value asks for something berth does not do (see
/// [`Fields::warn`]): clients written for IronWorker send fields of their
/// own, and a misspelt option must still not go unnoticed.
///
/// `null` counts as absent, because many clients serialise unset options as
/// `null`.
pub struct Fields {
    /// How errors name the object, e.g. `tasks[2]`.
    what: String,
    map: Map<String, Value>,
    /// Warnings about fields that were read, given by [`Fields::warn`].
    notes: Vec<String>,
}

impl Fields {
    pub fn new(what: impl Into<String>, value: Value) -> Result<Fields, ApiError> {
        let what = what.into();
        match value {
            Value::Object(map) => Ok(Fields {
                what,
                map,
                notes: Vec::new(),
            }),
            other => Err(ApiError::bad(format!(
                "{what} must be a JSON object, not {}",
                kind(&other)
            ))),
        }
    }

    /// The raw value of a field (absent or `null` → `None`).
    pub fn take(&mut self, key: &str) -> Option<Value> {
        self.map.remove(key).filter(|v| !v.is_null())
    }

    fn wrong(&self, key: &str, expected: &str, got: &Value) -> ApiError {
        ApiError::bad(format!(
            "{}.{key} must be {expected}, not {}",
            self.what,
            kind(got)
        ))
    }

    pub fn string(&mut self, key: &str) -> Result<Option<String>, ApiError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.wrong(key, "a string", &other)),
        }
    }

    /// An integer. A number with a zero fraction (`3.0`, as some JSON
    /// writers emit integers) is accepted; anything else is refused.
    pub fn int(&mut self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(i) => Ok(Some(i)),
                None => match n.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Some(f as i64)),
                    _ => Err(ApiError::bad(format!(
                        "{}.{key} must be an integer, not {n}",
                        self.what
                    ))),
                },
            },
            Some(other) => Err(self.wrong(key, "an integer", &other)),
        }
    }

    /// An integer within `range` (inclusive), or `None`.
    pub fn int_in(
        &mut self,
        key: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Result<Option<i64>, ApiError> {
        match self.int(key)? {
            Some(i) if !range.contains(&i) => Err(ApiError::bad(format!(
                "{}.{key} must be between {} and {}, not {i}",
                self.what,
                range.start(),
                range.end()
            ))),
            other => Ok(other),
        }
    }

    /// A string of at most `max` bytes (names, labels).
    pub fn short_string(&mut self, key: &str, max: usize) -> Result<Option<String>, ApiError> {
        match self.string(key)? {
            Some(s) if s.len() > max => Err(ApiError::bad(format!(
                "{}.{key} is {} bytes long; at most {max} are allowed",
                self.what,
                s.len()
            ))),
            other => Ok(other),
        }
    }

    /// The name this object is known by in errors.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// A boolean.
    pub fn bool(&mut self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(other) => Err(self.wrong(key, "a boolean", &other)),
        }
    }

    /// The path of a field in warnings: `tasks[0].sync`, or just `sync` for
    /// a field of the body itself. Cut to 64 characters: a field name is as
    /// long as the client made it.
    fn path(&self, key: &str) -> String {
        const MAX_KEY_CHARS: usize = 64;
        let mut shown: String = key.chars().take(MAX_KEY_CHARS).collect();
        if shown.len() < key.len() {
            shown.push_str("...");
        }
        let key = shown;
        if self.what == BODY {
            key
        } else {
            format!("{}.{key}", self.what)
        }
    }

    /// Reports that field `key` was accepted but is not acted on, and why.
    /// For fields berth knows from IronWorker but does not implement; call
    /// it only when the value asks for something berth does not do (a
    /// field whose value is the default berth behaves as needs no word).
    pub fn warn(&mut self, key: &str, why: &str) {
        let note = format!("{}: {why}", self.path(key));
        self.notes.push(note);
    }

    /// Ends reading: every field that was not read becomes an `unknown
    /// field` warning, and the notes of [`Fields::warn`] are added too.
    pub fn finish(self, warnings: &Warnings) {
        for note in &self.notes {
            warnings.add(note.clone());
        }
        for key in self.map.keys() {
            warnings.add(format!("unknown field {:?}", self.path(key)));
        }
    }
}

/// A JSON value's kind, for error messages.
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

// ----- response shapes ------------------------------------------------------

/// `max_concurrency` as IronWorker showed it: `-1` means unlimited.
fn concurrency(max: Option<i64>) -> i64 {
    max.unwrap_or(-1)
}

/// A code: IronWorker's code object, with berth's image-form fields
/// (`image`, `command`, `env_vars`) beside the classic ones. `rev` is the
/// latest revision's number and `latest_history_id` its id, as IronWorker
/// named them; `latest_checksum` is the package's SHA-256 (empty without a
/// package).
pub fn code(code: &Code) -> Value {
    let latest = &code.latest;
    let spec = &latest.spec;
    json!({
        "id": code.id,
        "project_id": code.project_id,
        "name": code.name,
        "runtime": spec.runtime,
        "image": spec.image,
        "command": spec.command,
        "file_name": spec.file_name,
        "config": spec.config,
        "env_vars": spec.env_vars,
        "rev": latest.rev,
        "latest_history_id": latest.id,
        "latest_checksum": latest.package_sha256.clone().unwrap_or_default(),
        "latest_change": format_time(latest.created_at),
        "package_size": latest.package_size,
        "created_at": format_time(code.created_at),
        "max_concurrency": concurrency(spec.max_concurrency),
        "retries": spec.retries,
        "retries_delay": spec.retries_delay,
        "default_priority": spec.default_priority,
        "placement": super::placement_fields::placement_json(&spec.placement),
        "network": network_name(spec),
        "paused": code.paused,
    })
}

/// The network a code's tasks run on, as the API shows it.
fn network_name(spec: &NewCodeRevision) -> String {
    spec.network
        .as_ref()
        .map_or_else(|| "bridge".to_owned(), |n| n.to_string())
}

/// One revision of a code (IronWorker's "code history" entry).
pub fn revision(rev: &CodeRevision) -> Value {
    let spec = &rev.spec;
    json!({
        "id": rev.id,
        "code_id": rev.code_id,
        "project_id": rev.project_id,
        "name": spec.name,
        "rev": rev.rev,
        "runtime": spec.runtime,
        "image": spec.image,
        "command": spec.command,
        "file_name": spec.file_name,
        "config": spec.config,
        "env_vars": spec.env_vars,
        "checksum": rev.package_sha256.clone().unwrap_or_default(),
        "package_size": rev.package_size,
        "max_concurrency": concurrency(spec.max_concurrency),
        "retries": spec.retries,
        "retries_delay": spec.retries_delay,
        "default_priority": spec.default_priority,
        "placement": super::placement_fields::placement_json(&spec.placement),
        "network": network_name(spec),
        "created_at": format_time(rev.created_at),
    })
}

pub fn stats(stats: &CodeStats) -> Value {
    json!({
        "queued": stats.queued,
        "preparing": stats.preparing,
        "running": stats.running,
        "complete": stats.complete,
        "error": stats.error,
        "cancelled": stats.cancelled,
        "killed": stats.killed,
        "timeout": stats.timeout,
    })
}

/// A task. `duration` is milliseconds between `start_time` and `end_time`
/// (`null` until both exist); `timeout` and `delay` are seconds.
pub fn task(task: &Task) -> Value {
    let duration = match (task.start_time, task.end_time) {
        (Some(start), Some(end)) => Value::from((end - start).max(0)),
        _ => Value::Null,
    };
    json!({
        "id": task.id,
        "project_id": task.project_id,
        "code_id": task.code_id,
        "code_name": task.code_name,
        "code_rev": task.code_rev,
        "status": task.status.as_str(),
        "msg": task.msg,
        "retry_count": task.retry_count,
        "exit_code": task.exit_code,
        "start_time": time(task.start_time),
        "end_time": time(task.end_time),
        "duration": duration,
        "priority": task.priority,
        "timeout": task.timeout,
        "delay": task.delay,
        "payload": task.payload,
        "label": task.label,
        "cluster": task.cluster,
        "schedule_id": task.schedule_id,
        "original_task_id": task.original_task_id,
        "percent": task.percent,
        "placement": super::placement_fields::placement_json(&task.placement),
        // The host of the current (or last) attempt, and what it reserved.
        "node": task.node_name,
        "reserved": task.reserved.as_ref().map(|r| json!({
            "memory_limit": r.memory_limit,
            "memory_request": r.request.memory_bytes,
            "cpus": r.request.cpu_millis as f64 / 1000.0,
            "disk": r.request.disk_bytes,
            "pids": r.request.pids,
        })),
        "created_at": format_time(task.created_at),
        "updated_at": format_time(task.updated_at),
    })
}

/// A schedule. `run_every` is seconds; `timeout` seconds.
pub fn schedule(s: &Schedule) -> Value {
    let spec = &s.spec;
    json!({
        "id": s.id,
        "project_id": s.project_id,
        "code_name": spec.code_name,
        "status": s.status.as_str(),
        "payload": spec.payload,
        "start_at": format_time(spec.start_at),
        "end_at": time(spec.end_at),
        "next_start": time(s.next_start),
        "last_run_time": time(s.last_run_time),
        "run_every": spec.run_every,
        "run_times": spec.run_times,
        "run_count": s.run_count,
        "priority": spec.priority,
        "timeout": spec.timeout,
        "label": spec.label,
        "cluster": spec.cluster,
        "created_at": format_time(s.created_at),
        "updated_at": format_time(s.updated_at),
    })
}

/// `{"msg": …}`, the answer of every action without other content.
pub fn msg(text: &str) -> Value {
    json!({ "msg": text })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_format_in_utc_with_milliseconds() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_time(1_795_255_200_123), "2026-11-21T10:00:00.123Z");
        assert_eq!(format_time(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_time(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn fields_refuse_mistyped_values_and_report_unknown_ones() {
        let mut f = Fields::new("task", json!({"a": "x", "b": 3.0, "c": null, "d": 1})).unwrap();
        assert_eq!(f.string("a").unwrap().as_deref(), Some("x"));
        assert_eq!(f.int("b").unwrap(), Some(3));
        assert_eq!(f.int("c").unwrap(), None);
        let warnings = Warnings::default();
        f.finish(&warnings);
        assert_eq!(warnings.list(), vec![r#"unknown field "task.d""#]);

        let mut f = Fields::new("task", json!({"a": 1, "b": 1.5, "c": 9, "e": "no"})).unwrap();
        assert!(f.string("a").unwrap_err().to_string().contains("task.a"));
        assert!(f.int("b").is_err());
        assert!(f.int_in("c", 0..=2).unwrap_err().to_string().contains("9"));
        assert!(f.bool("e").unwrap_err().to_string().contains("task.e"));
        assert!(Fields::new("x", json!([])).is_err());
    }

    #[test]
    fn warnings_name_the_field_by_its_path() {
        let long = "k".repeat(100);
        let mut f = Fields::new(BODY, json!({"x": 1, "sync": true, long.clone(): 1})).unwrap();
        assert_eq!(f.bool("sync").unwrap(), Some(true));
        f.warn("sync", "ignored");
        let warnings = Warnings::default();
        f.finish(&warnings);
        let cut = format!("unknown field \"{}...\"", "k".repeat(64));
        assert_eq!(
            warnings.list(),
            vec![
                "sync: ignored".to_owned(),
                cut,
                r#"unknown field "x""#.to_owned()
            ]
        );
    }
}
