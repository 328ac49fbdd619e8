//! Reading image configs, and writing the one a plain rootfs import gets.
//!
//! Configs are read through a small lenient view instead of
//! `oci_spec::image::ImageConfiguration`: Docker-written configs carry many
//! fields we do not need (and some in shapes the OCI types model strictly),
//! while the runtime needs only a handful. Parsing less also keeps
//! [`crate::ImageStore::resolve`] fast.

use crate::digest;
use crate::model::RuntimeDefaults;
use berth_core::time;
use serde::Deserialize;
use std::collections::BTreeMap;

/// `PATH` of an image that does not say otherwise (Docker's default).
pub(crate) const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The fields of an OCI / Docker image config that berth uses.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ConfigView {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub config: Option<ContainerConfigView>,
    pub rootfs: RootFsView,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ContainerConfigView {
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RootFsView {
    #[serde(rename = "type")]
    pub typ: String,
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

impl ConfigView {
    pub(crate) fn parse(bytes: &[u8]) -> Result<ConfigView, String> {
        let view: ConfigView =
            serde_json::from_slice(bytes).map_err(|e| format!("image config is not valid: {e}"))?;
        if view.rootfs.typ != "layers" {
            return Err(format!(
                "image config has rootfs type {:?}; only \"layers\" exists",
                view.rootfs.typ
            ));
        }
        Ok(view)
    }

    /// The hex digests of the layers' uncompressed tars, bottom first; refuses
    /// anything but well-formed `sha256:` digests since they become directory
    /// names.
    pub(crate) fn diff_id_hexes(&self) -> Result<Vec<String>, String> {
        self.rootfs
            .diff_ids
            .iter()
            .map(|d| {
                digest::sha256_hex_of(d)
                    .map(str::to_owned)
                    .ok_or_else(|| format!("image config lists diff_id {d:?}, not a sha256 digest"))
            })
            .collect()
    }

    pub(crate) fn runtime_defaults(&self) -> RuntimeDefaults {
        let c = self.config.clone().unwrap_or_default();
        RuntimeDefaults {
            env: c.env.unwrap_or_default(),
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
            working_dir: c.working_dir.filter(|s| !s.is_empty()),
            user: c.user.filter(|s| !s.is_empty()),
        }
    }

    pub(crate) fn labels(&self) -> BTreeMap<String, String> {
        self.config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default()
    }
}

/// The host's architecture as GOARCH spells it (what image platforms use).
pub(crate) fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "loongarch64" => "loong64",
        "mips64" => "mips64",
        other => other,
    }
}

/// The config of an image made from a plain rootfs tarball: host platform,
/// Docker's default `PATH`, no command (the user gives one at run time).
pub(crate) fn rootfs_config(diff_id_hex: &str, source_name: &str) -> Vec<u8> {
    let created = time::format_rfc3339_seconds(time::now_millis());
    let config = serde_json::json!({
        "created": created,
        "architecture": host_arch(),
        "os": "linux",
        "config": { "Env": [DEFAULT_PATH_ENV] },
        "rootfs": { "type": "layers", "diff_ids": [digest::prefixed(diff_id_hex)] },
        "history": [{ "created": created, "created_by": format!("berth image import {source_name}") }],
    });
    config.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_docker_configs_leniently() {
        let json = br#"{"architecture":"amd64","os":"linux","config":{"Env":null,"Cmd":["sh"],
            "ExposedPorts":{"80/tcp":{}},"WorkingDir":"","User":"app","Labels":{"a":"b"}},
            "rootfs":{"type":"layers","diff_ids":["sha256:0000000000000000000000000000000000000000000000000000000000000000"]},
            "history":[{"empty_layer":true}]}"#;
        let view = ConfigView::parse(json).unwrap();
        let d = view.runtime_defaults();
        assert_eq!(d.cmd, vec!["sh"]);
        assert!(d.env.is_empty());
        assert_eq!(d.working_dir, None);
        assert_eq!(d.user.as_deref(), Some("app"));
        assert_eq!(view.labels()["a"], "b");
        assert_eq!(view.diff_id_hexes().unwrap().len(), 1);
    }

    #[test]
    fn refuses_bad_diff_ids() {
        let json = br#"{"rootfs":{"type":"layers","diff_ids":["sha256:../../x"]}}"#;
        assert!(ConfigView::parse(json).unwrap().diff_id_hexes().is_err());
    }

    #[test]
    fn generated_config_parses_back() {
        let hex = "1".repeat(64);
        let view = ConfigView::parse(&rootfs_config(&hex, "root.tar")).unwrap();
        assert_eq!(view.os, "linux");
        assert_eq!(view.architecture, host_arch());
        assert_eq!(view.diff_id_hexes().unwrap(), vec![hex]);
        assert_eq!(view.runtime_defaults().env, vec![DEFAULT_PATH_ENV]);
        assert!(view.runtime_defaults().cmd.is_empty());
    }

    #[test]
    fn generated_config_is_created_now_in_whole_seconds() {
        let before = time::now_millis();
        let config: serde_json::Value =
            serde_json::from_slice(&rootfs_config(&"1".repeat(64), "root.tar")).unwrap();
        let created = config["created"].as_str().unwrap();
        assert!(
            created.ends_with('Z') && !created.contains('.'),
            "{created}"
        );
        let at = time::parse_rfc3339(created).unwrap();
        assert!(at <= time::now_millis() && at > before - 1000, "{created}");
        assert_eq!(config["history"][0]["created"], created);
    }
}
