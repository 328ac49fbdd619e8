//! How an ended container becomes a task status: the one place that tells
//! a task's own failure (shown to the user) from an infrastructure fault
//! (retried invisibly, bounded).

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
    let succeeded = result.is_some_and(|r| r.exit_code == Some(0));
    if task.cancel_requested && !succeeded {
        return Decision::Finish {
            status: TaskStatus::Cancelled,
            msg: Some("cancelled".into()),
            exit_code: result.and_then(|r| r.exit_code).map(i64::from),
        };
    }
    if let Some(reason) = &view.kill_reason {
        if !succeeded {
            return Decision::Finish {
                status: TaskStatus::Killed,
                msg: Some(format!("killed by the host agent: {}", reason.message)),
                exit_code: result.and_then(|r| r.exit_code).map(i64::from),
            };
        }
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
    if result.timed_out {
        return Decision::Finish {
            status: TaskStatus::Timeout,
            msg: Some(format!("timed out after {} s", task.timeout)),
            exit_code,
        };
    }
    if result.oom_killed {
        return Decision::Finish {
            status: TaskStatus::Killed,
            msg: Some("out of memory: killed at its memory limit".into()),
            exit_code,
        };
    }
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
