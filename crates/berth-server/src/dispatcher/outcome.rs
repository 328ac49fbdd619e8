//! How an ended container becomes a task status: the one place that tells
//! a task's own failure (shown to the user) from an infrastructure fault
//! (retried invisibly, bounded).
//!
//! THE RULE. When berth or the kernel acted on a running task, that act
//! names the status, whatever exit code the task then returned; only a task
//! left alone is judged by its exit code. In order:
//! 1. a cancel requested while the task ran → `cancelled` (even if the task
//!    exits 0 from its SIGTERM handler; and a task that failed before a
//!    cancel reached it is not retried but `cancelled` too). A cancel that
//!    arrives after the task already ended with 0 changes nothing:
//!    `complete`.
//! 2. its timeout expired → `timeout`.
//! 3. the host agent stopped or killed it (memory pressure on the host, an
//!    operator's stop) → `killed`.
//! 4. the kernel's OOM killer killed any process of the task (its memory
//!    limit) → `killed`, even if that was a child and the task exited 0:
//!    the task went over its limit and may have lost work.
//! 5. otherwise exit code 0 → `complete`; anything else → `error`, retried
//!    as the code's `retries` say.
//!
//! The exit code is recorded in every case.

use berth_api::{ContainerState, ContainerView};
use berth_store::{CodeRevision, Task, TaskStatus};

/// What to do with an attempt that ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Finish {
        status: TaskStatus,
        msg: Option<String>,
        exit_code: Option<i64>,
    },
    /// The task's own failure, run again as the code's `retries` say.
    RetryTask { delay_secs: i64, msg: String },
    /// Not the task's fault: run it again.
    RetryInfra { msg: String },
}

/// Decides from the container's final view and the task as stored now
/// (so a cancel that raced the end is seen).
pub fn decide(view: &ContainerView, task: &Task, code: &CodeRevision, max_infra: i64) -> Decision {
    if let Some(error) = &view.error {
        if view.state == ContainerState::Failed && error.retryable {
            return infra(
                task,
                max_infra,
                format!("[{}] {}", error.code, error.message),
            );
        }
    }
    let result = view.result.as_ref();
    if let Some((status, msg)) = intervention(view, task) {
        return Decision::Finish {
            status,
            msg: Some(msg),
            exit_code: result.and_then(|r| r.exit_code).map(i64::from),
        };
    }
    let Some(result) = result else {
        // Ended without running (the command is missing, the image is
        // unknown …): the task's own error, with the agent's message.
        let msg = view
            .error
            .as_ref()
            .map(|e| format!("[{}] {}", e.code, e.message))
            .unwrap_or_else(|| "the container ended without a result".into());
        return Decision::Finish {
            status: TaskStatus::Error,
            msg: Some(msg),
            exit_code: None,
        };
    };
    let exit_code = result.exit_code.map(i64::from);
    if exit_code == Some(0) {
        return Decision::Finish {
            status: TaskStatus::Complete,
            msg: None,
            exit_code,
        };
    }
    let msg = match (result.exit_code, result.signal) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "ended without an exit status".to_owned(),
    };
    let task_retries = task.retry_count - task.infra_failures;
    if task_retries < code.spec.retries {
        return Decision::RetryTask {
            delay_secs: code.spec.retries_delay,
            msg,
        };
    }
    Decision::Finish {
        status: TaskStatus::Error,
        msg: Some(msg),
        exit_code,
    }
}

/// What berth or the kernel did to the attempt that decides its status
/// whatever its exit code: steps 1 to 4 of the rule (module docs).
fn intervention(view: &ContainerView, task: &Task) -> Option<(TaskStatus, String)> {
    let result = view.result.as_ref();
    let succeeded = result.is_some_and(|r| r.exit_code == Some(0));
    // The agent records a stop or kill as it begins; one that began only
    // after the container had ended did nothing to it.
    let acted = view
        .kill_reason
        .as_ref()
        .filter(|reason| match view.exited_at {
            Some(exited_at) => reason.at <= exited_at,
            None => true,
        });
    let stopped = acted.is_some_and(|reason| reason.reason == STOPPED);
    if task.cancel_requested && (stopped || !succeeded) {
        return Some((TaskStatus::Cancelled, "cancelled".into()));
    }
    if result.is_some_and(|r| r.timed_out) {
        return Some((
            TaskStatus::Timeout,
            format!("timed out after {} s", task.timeout),
        ));
    }
    if let Some(reason) = acted {
        return Some((
            TaskStatus::Killed,
            format!("killed by the host agent: {}", reason.message),
        ));
    }
    if result.is_some_and(|r| r.oom_killed) {
        let msg = if succeeded {
            "out of memory: a process of the task was killed at its memory limit \
             (the task then exited 0)"
        } else {
            "out of memory: killed at its memory limit"
        };
        return Some((TaskStatus::Killed, msg.into()));
    }
    None
}

/// The agent's [`berth_api::KillReason::reason`] for a stop through its
/// API (how the dispatcher cancels a running task).
const STOPPED: &str = "stopped";

/// An infrastructure fault: retried while the bound allows.
pub fn infra(task: &Task, max_infra: i64, msg: String) -> Decision {
    if task.infra_failures < max_infra {
        Decision::RetryInfra { msg }
    } else {
        Decision::Finish {
            status: TaskStatus::Error,
            msg: Some(format!(
                "gave up after {} infrastructure failures; the last: {msg}",
                task.infra_failures + 1
            )),
            exit_code: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const EXITED_AT: u64 = 1_700_000_010_000;

    /// An exited container: `result` fields over a plain exit, and the
    /// agent's kill reason (reason, milliseconds before the exit).
    fn exited(result: serde_json::Value, kill: Option<(&str, i64)>) -> ContainerView {
        let mut full = json!({
            "id": "task-1-1", "exit_code": 0, "oom_killed": false, "timed_out": false,
            "wall_time_ms": 1.0, "teardown_ms": 0.1,
        });
        for (key, value) in result.as_object().expect("result fields") {
            full[key] = value.clone();
        }
        let kill_reason = kill.map(|(reason, before_exit)| {
            json!({"reason": reason, "message": format!("{reason} through the API"),
                   "at": EXITED_AT as i64 - before_exit})
        });
        serde_json::from_value(json!({
            "id": "task-1-1", "state": "exited", "image": "busybox", "image_id": "sha256:00",
            "created_at": EXITED_AT - 5_000, "started_at": EXITED_AT - 4_000,
            "exited_at": EXITED_AT, "memory_request": 0, "labels": {},
            "result": full, "kill_reason": kill_reason,
        }))
        .expect("a container view")
    }

    fn task(cancel_requested: bool) -> Task {
        serde_json::from_value(json!({
            "id": "1", "project_id": "p", "code_id": "c", "code_name": "c", "code_rev": 1,
            "status": "running", "msg": null, "payload": "", "priority": 0, "timeout": 60,
            "delay": 0, "cluster": null, "label": null, "schedule_id": null,
            "original_task_id": null, "retry_count": 0, "infra_failures": 0, "percent": null,
            "exit_code": null, "created_at": 0, "updated_at": 0, "eligible_at": 0,
            "start_time": 0, "end_time": null, "attempt": 1, "agent": "a",
            "cancel_requested": cancel_requested,
        }))
        .expect("a task")
    }

    fn code(retries: i64) -> CodeRevision {
        CodeRevision {
            code_id: "c".into(),
            id: "r".into(),
            project_id: "p".into(),
            rev: 1,
            spec: berth_store::NewCodeRevision {
                name: "c".into(),
                retries,
                ..Default::default()
            },
            package_sha256: None,
            package_size: 0,
            created_at: 0,
        }
    }

    fn status(view: &ContainerView, task: &Task) -> (TaskStatus, Option<String>, Option<i64>) {
        match decide(view, task, &code(0), 5) {
            Decision::Finish {
                status,
                msg,
                exit_code,
            } => (status, msg, exit_code),
            other => panic!("expected an end, got {other:?}"),
        }
    }

    #[test]
    fn what_berth_or_the_kernel_did_wins_over_the_exit_code() {
        use TaskStatus::*;
        let cancel = task(true);
        let alone = task(false);
        // The inconsistency of issue 16, both ways round: an exit 0 from a
        // SIGTERM handler after a cancel, and a child OOM-killed in a task
        // that exits 0.
        let stopped_then_exit_0 = exited(json!({}), Some(("stopped", 300)));
        assert_eq!(status(&stopped_then_exit_0, &cancel).0, Cancelled);
        let child_oom_exit_0 = exited(json!({"oom_killed": true}), None);
        let (got, msg, code) = status(&child_oom_exit_0, &alone);
        assert_eq!((got, code), (Killed, Some(0)));
        assert!(msg.unwrap_or_default().contains("out of memory"));

        let cases = [
            // (result, kill reason, cancel requested) → status
            (
                json!({"exit_code": 3}),
                Some(("stopped", 300)),
                true,
                Cancelled,
            ),
            (
                json!({"exit_code": null, "signal": 9}),
                Some(("stopped", 300)),
                true,
                Cancelled,
            ),
            // A cancel that came after a success changes nothing; after a
            // failure it still ends the task (no retry).
            (json!({}), None, true, Complete),
            (json!({}), Some(("stopped", -5)), true, Complete),
            (json!({"exit_code": 3}), None, true, Cancelled),
            // The timeout, whatever the handler returned.
            (json!({"timed_out": true}), None, false, Timeout),
            (
                json!({"timed_out": true, "exit_code": 3}),
                None,
                false,
                Timeout,
            ),
            // The agent's memory policy or an operator's stop.
            (json!({}), Some(("memory_pressure", 100)), false, Killed),
            (
                json!({"exit_code": null, "signal": 9}),
                Some(("memory_pressure", 100)),
                false,
                Killed,
            ),
            (json!({}), Some(("stopped", 100)), false, Killed),
            // A stop that began after the end did nothing.
            (json!({}), Some(("memory_pressure", -100)), false, Complete),
            // The OOM killer, whether the task then failed or not.
            (
                json!({"oom_killed": true, "exit_code": 137}),
                None,
                false,
                Killed,
            ),
            // Left alone: the exit code.
            (json!({}), None, false, Complete),
            (json!({"exit_code": 1}), None, false, Error),
        ];
        for (result, kill, cancel_requested, expected) in cases {
            let view = exited(result.clone(), kill);
            let (got, _, _) = status(&view, &task(cancel_requested));
            assert_eq!(got, expected, "{result} {kill:?} cancel={cancel_requested}");
        }
    }

    #[test]
    fn only_a_task_left_alone_is_retried_for_its_exit_code() {
        let failed = exited(json!({"exit_code": 3}), None);
        assert!(matches!(
            decide(&failed, &task(false), &code(2), 5),
            Decision::RetryTask { .. }
        ));
        for view in [
            exited(json!({"exit_code": 3, "timed_out": true}), None),
            exited(json!({"exit_code": 3, "oom_killed": true}), None),
            exited(json!({"exit_code": 3}), Some(("memory_pressure", 10))),
        ] {
            assert!(matches!(
                decide(&view, &task(false), &code(2), 5),
                Decision::Finish { .. }
            ));
        }
        assert!(matches!(
            decide(&failed, &task(true), &code(2), 5),
            Decision::Finish {
                status: TaskStatus::Cancelled,
                ..
            }
        ));
    }
}
