//! SIGTERM and SIGINT for the long-running commands (`agent`, `server`,
//! `up`).
//!
//! The handlers go in before anything is bound. Until they are in place a
//! SIGTERM takes its default action, so one sent the moment a socket
//! appears would end the process without its graceful stop: no socket
//! removed, no state tmpfs released.

use berth::CliError;
use berth_core::{ErrorCode, ErrorReport};
use tokio::signal::unix::{signal, Signal, SignalKind};

/// Stop signals caught from the moment it is made.
pub struct StopSignal {
    terminate: Signal,
    interrupt: Signal,
}

impl StopSignal {
    /// Catches SIGTERM and SIGINT from now on. Must be called inside the
    /// tokio runtime; fails only if the handlers cannot be installed,
    /// since running on without them would turn every stop into a crash.
    pub fn catch() -> Result<StopSignal, CliError> {
        let catch = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|e| {
                CliError(ErrorReport::new(
                    ErrorCode::HostIo,
                    format!("installing the {name} handler: {e}"),
                ))
            })
        };
        Ok(StopSignal {
            terminate: catch(SignalKind::terminate(), "SIGTERM")?,
            interrupt: catch(SignalKind::interrupt(), "SIGINT")?,
        })
    }

    /// Resolves once either signal has arrived (including one that came
    /// before this was first polled).
    pub async fn received(mut self) {
        self.arrived().await
    }

    /// As [`StopSignal::received`], keeping the handlers for later.
    pub async fn arrived(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}
