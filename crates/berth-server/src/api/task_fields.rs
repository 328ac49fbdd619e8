//! The request fields tasks and schedules share: the payload (a string of
//! at most `max_payload_bytes`), the length of `label` and `cluster`, and
//! the fields IronWorker clients send that berth accepts without acting on.

use super::error::{ApiError, ApiResult};
use super::wire::{self, Fields};
use crate::config::ServerConfig;
use serde_json::Value;

/// Longest `label` or `cluster`.
pub const MAX_TAG_BYTES: usize = 255;

/// Checks a payload's size (413: it is the request's bulk that is too
/// large, as IronWorker answered).
pub fn check_payload(config: &ServerConfig, what: &str, payload: &str) -> ApiResult<()> {
    if payload.len() > config.max_payload_bytes {
        return Err(ApiError::TooLarge(format!(
            "{what} is {} bytes; at most {} are allowed",
            payload.len(),
            config.max_payload_bytes
        )));
    }
    Ok(())
}

/// Reads `payload`: a string; anything else is refused with a hint, since
/// clients often send a JSON object where IronWorker wanted its text.
pub fn take_payload(f: &mut Fields, config: &ServerConfig) -> ApiResult<String> {
    let payload = match f.take("payload") {
        None => String::new(),
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(ApiError::bad(format!(
                "{}.payload must be a string, not {}: send JSON payloads encoded as a string",
                f.what(),
                wire::kind(&other)
            )))
        }
    };
    check_payload(config, &format!("{}.payload", f.what()), &payload)?;
    Ok(payload)
}

/// Reads the fields IronWorker clients send with a task or a schedule that
/// berth accepts without acting on them, type-checked like the others and
/// reported when their value asks for something berth does not do.
pub fn take_client_extras(f: &mut Fields, code_name: &str) -> ApiResult<()> {
    if f.string("name")?.is_some_and(|name| name != code_name) {
        f.warn(
            "name",
            "berth does not name tasks or schedules; the field is ignored (code_name names the code)",
        );
    }
    if f.bool("sync")? == Some(true) {
        f.warn(
            "sync",
            "berth runs every task alike and keeps its output at /log and /outlog; the field is ignored",
        );
    }
    Ok(())
}
