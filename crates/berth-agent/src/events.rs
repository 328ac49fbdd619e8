//! The lifecycle event log: `<agent dir>/events.log`, one JSON event per line.
//!
//! Lines are appended without fsync: a killed agent loses nothing (the page
//! cache keeps what `write` returned), and after a host crash a restarted
//! agent re-derives missing events from the state dirs, whose records the
//! shims write durably ([`EventLog::ensure`]). Delivery is therefore
//! at-least-once: a consumer keys events on `(container, kind)`.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;
use tokio::sync::watch;

pub use berth_api::{Event, EventKind};

/// The log in memory and on disk.
pub struct EventLog {
    inner: Mutex<Inner>,
    last_seq: watch::Sender<u64>,
}

struct Inner {
    file: File,
    events: Vec<Event>,
    /// What each container's current incarnation has had (`deleted`
    /// clears it, so a reused id starts afresh).
    seen: HashSet<(String, EventKind)>,
    /// The last write may have been partial: start the next on a new line.
    torn: bool,
}

fn note(seen: &mut HashSet<(String, EventKind)>, event: &Event) {
    if event.kind == EventKind::Deleted {
        seen.retain(|(id, _)| *id != event.container);
    } else {
        seen.insert((event.container.clone(), event.kind));
    }
}

impl EventLog {
    /// Opens (creating) the log and reads what it holds. A torn last line
    /// (a crash mid-write) is dropped.
    pub fn open(path: &Path) -> io::Result<EventLog> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        // Line by line as bytes: a torn or garbled line (a crash, a full
        // disk) is skipped, never fatal.
        let events: Vec<Event> = bytes
            .split(|b| *b == b'\n')
            .filter_map(|line| serde_json::from_slice(line).ok())
            .collect();
        let file = OpenOptions::new().append(true).create(true).open(path)?;
        let mut seen = HashSet::new();
        for e in &events {
            note(&mut seen, e);
        }
        let last = events.last().map_or(0, |e| e.seq);
        Ok(EventLog {
            inner: Mutex::new(Inner {
                file,
                events,
                seen,
                // Start on a fresh line if the last write was torn.
                torn: bytes.last().is_some_and(|b| *b != b'\n'),
            }),
            last_seq: watch::channel(last).0,
        })
    }

    /// Appends an event and wakes followers.
    pub fn push(&self, container: &str, kind: EventKind, detail: serde_json::Value) {
        let mut inner = self.lock();
        let seq = inner.events.last().map_or(0, |e| e.seq) + 1;
        let event = Event {
            seq,
            time: crate::clock::now_ms(),
            container: container.to_owned(),
            kind,
            detail,
        };
        match serde_json::to_vec(&event) {
            Ok(mut line) => {
                line.push(b'\n');
                if inner.torn {
                    line.insert(0, b'\n');
                }
                inner.torn = inner.file.write_all(&line).is_err();
                if inner.torn {
                    // The event stays served from memory; a restart
                    // re-derives it from the state dir.
                    tracing::warn!("appending to the event log failed");
                }
            }
            Err(e) => tracing::warn!("encoding an event: {e}"),
        }
        note(&mut inner.seen, &event);
        inner.events.push(event);
        drop(inner);
        self.last_seq.send_replace(seq);
    }

    /// Appends the event unless the log already has one of this kind for
    /// this container (used when rediscovering state after a restart).
    pub fn ensure(&self, container: &str, kind: EventKind, detail: serde_json::Value) {
        if !self.has(container, kind) {
            self.push(container, kind, detail);
        }
    }

    pub fn has(&self, container: &str, kind: EventKind) -> bool {
        self.lock().seen.contains(&(container.to_owned(), kind))
    }

    /// Events after `since`, optionally of one container, at most `limit`.
    pub fn after(&self, since: u64, container: Option<&str>, limit: usize) -> Vec<Event> {
        let inner = self.lock();
        let start = inner.events.partition_point(|e| e.seq <= since);
        inner.events[start..]
            .iter()
            .filter(|e| container.is_none_or(|c| e.container == c))
            .take(limit)
            .cloned()
            .collect()
    }

    /// Changes whenever an event is appended.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.last_seq.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave Inner inconsistent in
        // a way that matters more than losing the agent, so go on.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_survive_reopening_and_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.log");
        {
            let log = EventLog::open(&path).expect("open");
            log.push("a", EventKind::Created, serde_json::Value::Null);
            log.push("a", EventKind::Started, serde_json::json!({"pid": 7}));
        }
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(br#"{"seq":3,"time":1,"contai"#)
            .expect("torn write");
        let log = EventLog::open(&path).expect("reopen");
        assert_eq!(log.after(0, None, 100).len(), 2);
        assert!(log.has("a", EventKind::Started));
        log.ensure("a", EventKind::Started, serde_json::Value::Null);
        log.ensure("a", EventKind::Exited, serde_json::Value::Null);
        let all = log.after(0, None, 100);
        assert_eq!(
            all.iter().map(|e| (e.seq, e.kind)).collect::<Vec<_>>(),
            vec![
                (1, EventKind::Created),
                (2, EventKind::Started),
                (3, EventKind::Exited)
            ]
        );
        assert_eq!(log.after(2, Some("a"), 100).len(), 1);
        assert!(log.after(0, Some("b"), 100).is_empty());
        drop(log);
        // The torn line is gone for good: the file parses line by line.
        let reopened = EventLog::open(&path).expect("reopen again");
        assert_eq!(reopened.after(0, None, 100).len(), 3);
    }

    #[test]
    fn a_reused_id_gets_its_own_events() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.log");
        let log = EventLog::open(&path).expect("open");
        log.ensure("c", EventKind::Exited, serde_json::Value::Null);
        log.push("c", EventKind::Deleted, serde_json::Value::Null);
        assert!(!log.has("c", EventKind::Exited));
        log.ensure("c", EventKind::Exited, serde_json::Value::Null);
        assert_eq!(log.after(0, Some("c"), 10).len(), 3);
        drop(log);
        // The same holds when the log is read back after a restart.
        let reopened = EventLog::open(&path).expect("reopen");
        assert!(reopened.has("c", EventKind::Exited));
        reopened.push("c", EventKind::Deleted, serde_json::Value::Null);
        assert!(!reopened.has("c", EventKind::Exited));
    }

    #[test]
    fn garbage_in_the_log_is_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.log");
        std::fs::write(&path, b"\xff\xfe not json\n{\"seq\":1,\"time\":1,\"container\":\"a\",\"kind\":\"created\"}\n\x80").expect("write");
        let log = EventLog::open(&path).expect("open despite garbage");
        assert_eq!(log.after(0, None, 10).len(), 1);
        log.push("a", EventKind::Started, serde_json::Value::Null);
        drop(log);
        let reopened = EventLog::open(&path).expect("reopen");
        assert_eq!(reopened.after(0, None, 10).len(), 2);
    }
}
