//! The shim's diagnostics: one line each on its stderr (`shim.log` when the
//! agent started it), never allowed to stop the shim.

use std::io::{self, Write};

/// A diagnostic on the shim's stderr, if anyone still reads it: the agent
/// that started the shim may be gone, and that must never stop the shim.
pub(crate) fn diag(message: &str) {
    let _ = writeln!(
        io::stderr(),
        "berth-shim[{}]: {message}",
        std::process::id()
    );
}
