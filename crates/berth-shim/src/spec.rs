//! `spec.json`: what the caller asks the shim to run.

use crate::error::ShimError;
use berth_runtime::ContainerSpec;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::Path;

/// The log cap when the spec names none: 16 MiB.
pub const DEFAULT_LOG_MAX_BYTES: u64 = 16 * 1024 * 1024;

/// The shim's input, written by the caller into the state dir.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShimSpec {
    pub container: ContainerSpec,
    /// Output past this many bytes is read and dropped (and counted).
    #[serde(default = "default_log_max_bytes")]
    pub log_max_bytes: u64,
}

fn default_log_max_bytes() -> u64 {
    DEFAULT_LOG_MAX_BYTES
}

impl ShimSpec {
    pub fn new(container: ContainerSpec) -> ShimSpec {
        ShimSpec {
            container,
            log_max_bytes: DEFAULT_LOG_MAX_BYTES,
        }
    }

    /// Reads and parses `path`. Whether the container itself can be created
    /// is checked by the runtime (`Runtime::validate`) before anything is.
    pub fn load(path: &Path) -> Result<ShimSpec, ShimError> {
        let invalid = |why: String| ShimError::InvalidSpec {
            path: path.to_owned(),
            why,
        };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(invalid("no such file".into()))
            }
            Err(e) => return Err(ShimError::io(format!("reading {}", path.display()), e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTAINER: &str = r#"{"id":"c1","rootfs":{"layers":["/l"]},"process":{"args":["true"]}}"#;

    #[test]
    fn log_cap_defaults_to_16_mib() {
        let spec: ShimSpec =
            serde_json::from_str(&format!(r#"{{"container":{CONTAINER}}}"#)).expect("parse spec");
        assert_eq!(spec.log_max_bytes, 16 * 1024 * 1024);
        assert_eq!(spec.container.id.as_str(), "c1");
    }

    #[test]
    fn typos_and_bad_ids_are_refused() {
        let typo = format!(r#"{{"container":{CONTAINER},"log_max_byte":5}}"#);
        assert!(serde_json::from_str::<ShimSpec>(&typo).is_err());
        let bad_id = CONTAINER.replace("c1", "../x");
        let bad = format!(r#"{{"container":{bad_id}}}"#);
        assert!(serde_json::from_str::<ShimSpec>(&bad).is_err());
    }
}
