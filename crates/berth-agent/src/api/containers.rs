//! `/v1/containers/…`.

use super::extract::{JsonBody, Params};
use crate::clock::now_ms;
use crate::error::ApiError;
use crate::record::{Entry, Phase, STOPPED};
use crate::shim::{self, parse_signal};
use crate::Agent;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_api::{
    ContainerView, CreateContainer, DeleteQuery, KillReason, ListQuery, LogsQuery, SignalQuery,
    WaitQuery,
};
use berth_core::{ContainerId, ErrorCode};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

pub async fn list(
    State(agent): State<Agent>,
    Params(query): Params<ListQuery>,
) -> Result<Json<Vec<ContainerView>>, ApiError> {
    let label = match &query.label {
        Some(l) => Some(
            l.split_once('=')
                .ok_or_else(|| ApiError::invalid(format!("label {l:?}: expected key=value")))?,
        ),
        None => None,
    };
    let views = agent
        .list()
        .iter()
        .map(|e| e.view())
        .filter(|v| query.state.is_none_or(|s| v.state == s))
        .filter(|v| label.is_none_or(|(k, val)| v.labels.get(k).map(String::as_str) == Some(val)))
        .collect();
    Ok(Json(views))
}

pub async fn create(
    State(agent): State<Agent>,
    JsonBody(request): JsonBody<CreateContainer>,
) -> Result<(StatusCode, Json<ContainerView>), ApiError> {
    let view = agent.create(request).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

fn entry(agent: &Agent, id: &str) -> Result<Arc<Entry>, ApiError> {
    ContainerId::new(id).map_err(|e| ApiError::invalid(format!("container id: {e}")))?;
    agent.get(id)
}

pub async fn inspect(
    State(agent): State<Agent>,
    Path(id): Path<String>,
) -> Result<Json<ContainerView>, ApiError> {
    Ok(Json(entry(&agent, &id)?.view()))
}

pub async fn delete(
    State(agent): State<Agent>,
    Path(id): Path<String>,
    Params(query): Params<DeleteQuery>,
) -> Result<StatusCode, ApiError> {
    let entry = entry(&agent, &id)?;
    if query.force && !matches!(entry.phase(), Phase::Exited { .. }) {
        stop_detached(&entry, libc::SIGKILL, Duration::ZERO).await?;
    }
    tokio::task::spawn_blocking(move || agent.delete(&entry))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(StatusCode::NO_CONTENT)
}

/// Long-poll: answers when the container has ended or `timeout` passed;
/// the view's `state` says which.
pub async fn wait(
    State(agent): State<Agent>,
    Path(id): Path<String>,
    Params(query): Params<WaitQuery>,
) -> Result<Json<ContainerView>, ApiError> {
    let entry = entry(&agent, &id)?;
    let timeout = seconds(query.timeout, 60.0, 3600.0, "timeout")?;
    wait_for_end(&entry, timeout).await;
    Ok(Json(entry.view()))
}

/// Waits until the container has ended; false if `limit` passed first.
async fn wait_for_end(entry: &Entry, limit: Duration) -> bool {
    let mut rx = entry.phase.subscribe();
    let ended = async move {
        rx.wait_for(|p| matches!(p, Phase::Exited { .. }))
            .await
            .is_ok()
    };
    tokio::time::timeout(limit, ended).await.unwrap_or(false)
}

fn seconds(value: Option<f64>, default: f64, max: f64, name: &str) -> Result<Duration, ApiError> {
    let v = value.unwrap_or(default);
    if !v.is_finite() || !(0.0..=max).contains(&v) {
        return Err(ApiError::invalid(format!(
            "{name} must be between 0 and {max} seconds"
        )));
    }
    Ok(Duration::from_secs_f64(v))
}

/// Sends the signal (default SIGTERM), waits the grace period, then
/// SIGKILL; answers once the container has ended.
pub async fn stop(
    State(agent): State<Agent>,
    Path(id): Path<String>,
    Params(query): Params<SignalQuery>,
) -> Result<Json<ContainerView>, ApiError> {
    let entry = entry(&agent, &id)?;
    let signal = parse_signal(query.signal.as_deref().unwrap_or("TERM"))?;
    let grace = seconds(query.grace, 10.0, 3600.0, "grace")?;
    if entry.is_running() {
        stop_detached(&entry, signal, grace).await?;
    }
    Ok(Json(entry.view()))
}

/// Runs a stop in its own task: a caller that goes away mid-grace must not
/// leave the escalation to SIGKILL undone.
async fn stop_detached(entry: &Arc<Entry>, signal: i32, grace: Duration) -> Result<(), ApiError> {
    let entry = entry.clone();
    tokio::spawn(async move { stop_container(&entry, signal, grace).await })
        .await
        .map_err(|e| ApiError::internal(format!("stop task: {e}")))?
}

async fn stop_container(entry: &Entry, signal: i32, grace: Duration) -> Result<(), ApiError> {
    entry.set_kill_reason(KillReason {
        reason: STOPPED.into(),
        message: format!("stopped through the API (signal {signal})"),
        at: now_ms(),
    })?;
    deliver(entry, signal).await?;
    if signal != libc::SIGKILL && wait_for_end(entry, grace).await {
        return Ok(());
    }
    deliver(entry, libc::SIGKILL).await?;
    if wait_for_end(entry, Duration::from_secs(30)).await {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::TeardownFailed,
            format!("container {} did not end within 30 s of SIGKILL", entry.id),
        ))
    }
}

/// Sends a signal; a container that ended meanwhile is not an error.
async fn deliver(entry: &Entry, signal: i32) -> Result<(), ApiError> {
    match shim::kill(&entry.dir, signal).await {
        Err(e) if e.code() == ErrorCode::InvalidState => Ok(()),
        other => other,
    }
}

pub async fn kill(
    State(agent): State<Agent>,
    Path(id): Path<String>,
    Params(query): Params<SignalQuery>,
) -> Result<StatusCode, ApiError> {
    let entry = entry(&agent, &id)?;
    if query.grace.is_some() {
        return Err(ApiError::invalid("grace applies to stop, not kill"));
    }
    let signal = parse_signal(query.signal.as_deref().unwrap_or("KILL"))?;
    if !entry.is_running() {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            format!("container {id} is not running"),
        ));
    }
    shim::kill(&entry.dir, signal).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn metrics(
    State(agent): State<Agent>,
    Path(id): Path<String>,
) -> Result<Json<berth_api::CgroupMetrics>, ApiError> {
    let entry = entry(&agent, &id)?;
    if !entry.is_running() {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            format!("container {id} is not running; its final figures are in its result"),
        ));
    }
    let cid = ContainerId::new(id).map_err(|e| ApiError::invalid(e.to_string()))?;
    let metrics = tokio::task::spawn_blocking(move || agent.runtime.container_metrics(&cid))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::from_lib(&e))?;
    Ok(Json(metrics))
}

/// The output log from `offset`; with `follow`, streams until the
/// container has ended and everything it wrote has been sent (or until it
/// has been silent for five minutes: the client then resumes from its
/// offset). The `X-Berth-Log-Offset` header echoes where the body starts.
///
/// The log of an ended container that lost output (past its cap, or to a
/// failed write such as a full disk) ends with one more line, not part of
/// the file and not counted in offsets: `[berth: N bytes of output were
/// dropped: WHY]`.
pub async fn logs(
    State(agent): State<Agent>,
    Path(id): Path<String>,
    Params(query): Params<LogsQuery>,
) -> Result<Response, ApiError> {
    let entry = entry(&agent, &id)?;
    let file = match tokio::fs::File::open(entry.dir.log_file()).await {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(ApiError::io("opening the log", e)),
    };
    let state = LogTail {
        file,
        offset: query.offset,
        follow: query.follow,
        entry,
        seeked: false,
        done: false,
        idle_since: tokio::time::Instant::now(),
        last_byte: None,
    };
    let stream = futures_util::stream::unfold(state, |mut tail| async move {
        tail.next_chunk().await.map(|chunk| (chunk, tail))
    });
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert("x-berth-log-offset", query.offset.into());
    Ok(response)
}

struct LogTail {
    file: Option<tokio::fs::File>,
    offset: u64,
    follow: bool,
    entry: Arc<Entry>,
    seeked: bool,
    done: bool,
    idle_since: tokio::time::Instant,
    /// The last byte sent, to start the dropped-output line on a line of
    /// its own.
    last_byte: Option<u8>,
}

/// A follow stream with no new output for this long ends.
const FOLLOW_IDLE_LIMIT: Duration = Duration::from_secs(300);

impl LogTail {
    async fn next_chunk(&mut self) -> Option<Result<Vec<u8>, std::io::Error>> {
        if self.done {
            return None;
        }
        let mut phase = self.entry.phase.subscribe();
        loop {
            // Seen before reading: the shim writes all output before it
            // records the exit, so an empty read after the end means done.
            let ended_before_read = self.ended();
            if self.file.is_none() {
                // A container still starting has no log yet.
                match tokio::fs::File::open(self.entry.dir.log_file()).await {
                    Ok(f) => self.file = Some(f),
                    Err(_) if self.follow && !ended_before_read => {}
                    Err(_) => return None,
                }
            }
            if let Some(file) = self.file.as_mut() {
                if !self.seeked {
                    if let Err(e) = file.seek(std::io::SeekFrom::Start(self.offset)).await {
                        self.done = true;
                        return Some(Err(e));
                    }
                    self.seeked = true;
                }
                let mut buf = vec![0u8; 64 * 1024];
                match file.read(&mut buf).await {
                    Ok(0) => {}
                    Ok(n) => {
                        buf.truncate(n);
                        self.offset += n as u64;
                        self.idle_since = tokio::time::Instant::now();
                        self.last_byte = buf.last().copied();
                        return Some(Ok(buf));
                    }
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
            }
            // At the end of what is written so far.
            if ended_before_read {
                self.done = true;
                return self.dropped_output_line().map(Ok);
            }
            if !self.follow {
                return None;
            }
            // A silent container would keep a vanished client's stream
            // (and its file) open forever: end idle streams; the client
            // resumes from its offset.
            if self.idle_since.elapsed() >= FOLLOW_IDLE_LIMIT {
                return None;
            }
            let changed = phase.changed();
            let _ = tokio::time::timeout(Duration::from_millis(100), changed).await;
        }
    }

    fn ended(&self) -> bool {
        matches!(*self.entry.phase.borrow(), Phase::Exited { .. })
    }

    /// The line that ends the log of a container that lost output.
    fn dropped_output_line(&self) -> Option<Vec<u8>> {
        let phase = self.entry.phase.borrow();
        let Phase::Exited {
            record:
                berth_shim::ExitRecord::Finished {
                    log_dropped_bytes,
                    log_write_error,
                    ..
                },
            ..
        } = &*phase
        else {
            return None;
        };
        if *log_dropped_bytes == 0 {
            return None;
        }
        let why = match log_write_error {
            Some(error) => format!("the log could not be written ({error})"),
            None => "the log reached its size cap".to_owned(),
        };
        let start = match self.last_byte {
            Some(b'\n') | None => "",
            Some(_) => "\n",
        };
        Some(
            format!("{start}[berth: {log_dropped_bytes} bytes of output were dropped: {why}]\n")
                .into_bytes(),
        )
    }
}
