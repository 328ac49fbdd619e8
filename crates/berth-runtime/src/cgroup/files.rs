//! Reading and writing cgroup control files.

use crate::error::{Result, RuntimeError};
use crate::kernel_files;
use std::path::Path;

/// Writes `value` into a control file in one `write(2)`, as the kernel expects.
pub fn write(path: &Path, value: &str) -> Result<()> {
    kernel_files::write_each(path, &[value]).map_err(|e| RuntimeError::Cgroup {
        path: path.to_owned(),
        action: "writing",
        source: e,
    })
}

/// Writes each value with its own `write(2)` on one open file (the devices
/// controller takes one rule per write).
pub fn write_each(path: &Path, values: &[&str]) -> Result<()> {
    kernel_files::write_each(path, values).map_err(|e| RuntimeError::Cgroup {
        path: path.to_owned(),
        action: "writing",
        source: e,
    })
}

/// Reads a file holding a single number; `max` reads as `u64::MAX`.
pub fn read_u64(path: &Path) -> Option<u64> {
    let text = kernel_files::read(path).ok()?;
    let t = text.trim();
    if t == "max" {
        return Some(u64::MAX);
    }
    t.parse().ok()
}

/// Reads `key value` lines (memory.stat, cpu.stat, memory.events…) and
/// returns the value of `key`.
pub fn read_keyed(path: &Path, key: &str) -> Option<u64> {
    let text = kernel_files::read(path).ok()?;
    keyed_value(&text, key)
}

pub fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}
