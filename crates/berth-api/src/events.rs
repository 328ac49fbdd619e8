//! `/v1/events`: the container lifecycle events an agent records.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// What happened to a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Created,
    Started,
    /// The container ended (its result or error is in `detail`).
    Exited,
    /// The kernel's OOM killer killed a process at the container's limit.
    Oom,
    /// The agent's memory policy killed it (node under memory pressure).
    MemoryKilled,
    /// Its timeout expired and it was killed.
    TimedOut,
    Deleted,
}

/// One event. Delivery is at-least-once: a consumer keys events on
/// `(container, kind)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// Position in the log, from 1, strictly increasing.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub time: u64,
    pub container: String,
    pub kind: EventKind,
    /// Kind-specific facts (an exit's result or error), absent when none.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

/// `GET /v1/events`: newline-delimited JSON events.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events after this sequence number.
    #[serde(default)]
    pub since: u64,
    /// Keep the stream open for new events (an empty line every 30 s while
    /// nothing happens).
    #[serde(default)]
    pub follow: bool,
    /// Only this container's events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}
