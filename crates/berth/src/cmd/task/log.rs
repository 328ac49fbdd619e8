//! `berth task log [-f]`.

use super::status::{ended, get};
use crate::client::{encode, Api};
use crate::CliError;
use std::io::Write;
use std::time::Duration;

pub fn run(api: &Api, id: &str, follow: bool) -> Result<(), CliError> {
    let path = format!("/tasks/{}/log", encode(id));
    let mut stdout = std::io::stdout().lock();
    let mut write = |bytes: &[u8]| -> Result<(), CliError> {
        stdout
            .write_all(bytes)
            .and_then(|()| stdout.flush())
            .map_err(|e| crate::cmd::invalid(format!("writing the log: {e}")))
    };
    if !follow {
        return write(&api.get_bytes(&path, &[])?);
    }
    let mut shown: Vec<u8> = Vec::new();
    loop {
        // Read the status first: a log read after the task ended is complete.
        let finished = ended(&get(api, id)?);
        let log = api.get_bytes(&path, &[])?;
        if log.starts_with(&shown) {
            write(&log[shown.len()..])?;
        } else {
            // A new attempt started over (a retry): show it from its start.
            write(b"\n--- berth: the task was run again; its new output follows ---\n")?;
            write(&log)?;
        }
        shown = log;
        if finished {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
