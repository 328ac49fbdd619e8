//! Reading and writing cgroup control files.

use crate::error::{Result, RuntimeError};
use std::fs;
use std::io::Write;
use std::path::Path;

/// Writes `value` into a control file in one `write(2)`, as the kernel expects.
pub fn write(path: &Path, value: &str) -> Result<()> {
    let attempt = || -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new().write(true).open(path)?;
        f.write_all(value.as_bytes())
    };
    attempt().map_err(|e| RuntimeError::Cgroup {
        path: path.to_owned(),
        action: "writing",
        source: e,
    })
}

/// Writes each value with its own `write(2)` on one open file (the devices
/// controller takes one rule per write).
pub fn write_each(path: &Path, values: &[&str]) -> Result<()> {
    let attempt = || -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new().write(true).open(path)?;
        for v in values {
            f.write_all(v.as_bytes())?;
        }
        Ok(())
    };
    attempt().map_err(|e| RuntimeError::Cgroup {
        path: path.to_owned(),
        action: "writing",
        source: e,
    })
}

/// Reads a file holding a single number; `max` reads as `u64::MAX`.
pub fn read_u64(path: &Path) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    let t = text.trim();
    if t == "max" {
        return Some(u64::MAX);
    }
    t.parse().ok()
}

/// Reads `key value` lines (memory.stat, cpu.stat, memory.events…) and
/// returns the value of `key`.
pub fn read_keyed(path: &Path, key: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    keyed_value(&text, key)
}

pub fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}
