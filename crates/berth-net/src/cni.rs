//! `--network cni:NAME`: a standard CNI configuration, run with the
//! standard plugins (Debian's `containernetworking-plugins`, or a user's
//! Calico, Cilium, flannel…), as the CNI specification says a runtime
//! runs them: each plugin of the list in turn, config on stdin, the
//! command in `CNI_*` variables, the result on stdout.
//!
//! This is the ecosystem's plug-in point, not berth's fast path: every
//! plugin is a process (one bridge+portmap+bandwidth ADD took 54-72 ms
//! here). berth's own bridge stays in process.

use crate::error::{NetError, Result};
use serde_json::{json, Map, Value};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where configurations and plugins are looked for.
#[derive(Debug, Clone)]
pub struct CniPaths {
    /// `*.conflist`, `*.conf`, `*.json` files (default `/etc/cni/net.d`).
    pub conf_dir: PathBuf,
    /// Plugin binaries (default Debian's `/usr/lib/cni`, then `/opt/cni/bin`).
    pub plugin_dirs: Vec<PathBuf>,
}

impl Default for CniPaths {
    fn default() -> Self {
        CniPaths {
            conf_dir: PathBuf::from("/etc/cni/net.d"),
            plugin_dirs: vec![PathBuf::from("/usr/lib/cni"), PathBuf::from("/opt/cni/bin")],
        }
    }
}

/// A configuration list: its name, version and plugins, as loaded.
#[derive(Debug, Clone)]
pub struct NetworkList {
    pub name: String,
    pub cni_version: String,
    pub plugins: Vec<Value>,
}

impl NetworkList {
    /// The list as stored in an attachment record (to run DEL later).
    pub fn to_json(&self) -> Value {
        json!({"name": self.name, "cniVersion": self.cni_version, "plugins": self.plugins})
    }

    pub fn from_json(value: &Value) -> Result<NetworkList> {
        parse_list(value, "the attachment record")
    }
}

impl CniPaths {
    /// The configuration named `name`: the file whose `name` field says so,
    /// first in lexical order (as libcni picks).
    pub fn load(&self, name: &str) -> Result<NetworkList> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.conf_dir)
            .map_err(|e| {
                NetError::NotFound(format!(
                    "no CNI configuration {name}: cannot read {}: {e}",
                    self.conf_dir.display()
                ))
            })?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                matches!(
                    p.extension().and_then(|x| x.to_str()),
                    Some("conflist" | "conf" | "json")
                )
            })
            .collect();
        files.sort();
        for file in files {
            let Ok(text) = std::fs::read_to_string(&file) else {
                continue;
            };
            let Ok(value) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            if value.get("name").and_then(Value::as_str) == Some(name) {
                return parse_list(&value, &file.display().to_string());
            }
        }
        Err(NetError::NotFound(format!(
            "no CNI configuration named {name} in {}",
            self.conf_dir.display()
        )))
    }

    fn plugin(&self, kind: &str) -> Result<PathBuf> {
        if kind.is_empty() || kind.contains('/') {
            return Err(NetError::Invalid(format!(
                "CNI plugin type {kind:?} is not a plugin name"
            )));
        }
        self.plugin_dirs
            .iter()
            .map(|d| d.join(kind))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                NetError::NotFound(format!(
                    "CNI plugin {kind} is not in {}",
                    self.search_path()
                ))
            })
    }

    fn search_path(&self) -> String {
        let dirs: Vec<String> = self
            .plugin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        dirs.join(":")
    }

    /// ADD through the whole list; returns the last plugin's result. On a
    /// failure the plugins already run are told DEL, as the spec asks.
    pub fn add(&self, list: &NetworkList, container: &str, netns: &Path) -> Result<Value> {
        let mut previous: Option<Value> = None;
        for (i, plugin) in list.plugins.iter().enumerate() {
            match self.exec(
                list,
                plugin,
                "ADD",
                container,
                Some(netns),
                previous.as_ref(),
            ) {
                Ok(result) => previous = Some(result),
                Err(e) => {
                    let ran = NetworkList {
                        plugins: list.plugins[..=i].to_vec(),
                        ..list.clone()
                    };
                    let _ = self.del(&ran, container, Some(netns), previous.as_ref());
                    return Err(e);
                }
            }
        }
        previous.ok_or_else(|| {
            NetError::Invalid(format!("CNI configuration {} has no plugins", list.name))
        })
    }

    /// DEL through the list in reverse; every plugin is told, the first
    /// error is returned. `netns` is `None` once the namespace is gone.
    pub fn del(
        &self,
        list: &NetworkList,
        container: &str,
        netns: Option<&Path>,
        result: Option<&Value>,
    ) -> Result<()> {
        let mut first_error = None;
        for plugin in list.plugins.iter().rev() {
            if let Err(e) = self.exec(list, plugin, "DEL", container, netns, result) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn exec(
        &self,
        list: &NetworkList,
        plugin: &Value,
        command: &str,
        container: &str,
        netns: Option<&Path>,
        previous: Option<&Value>,
    ) -> Result<Value> {
        let kind = plugin
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let binary = self.plugin(kind)?;
        let mut config: Map<String, Value> = plugin.as_object().cloned().unwrap_or_default();
        config.insert("name".into(), Value::String(list.name.clone()));
        config.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
        if let Some(previous) = previous {
            config.insert("prevResult".into(), previous.clone());
        }
        let stdin = serde_json::to_vec(&Value::Object(config))
            .map_err(|e| NetError::io("encoding a CNI config", std::io::Error::other(e)))?;
        let mut child = Command::new(&binary)
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container)
            .env(
                "CNI_NETNS",
                netns.map(|p| p.as_os_str().to_owned()).unwrap_or_default(),
            )
            .env("CNI_IFNAME", "eth0")
            .env("CNI_ARGS", "")
            .env("CNI_PATH", self.search_path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| NetError::io(format!("starting CNI plugin {}", binary.display()), e))?;
        if let Some(mut input) = child.stdin.take() {
            input
                .write_all(&stdin)
                .map_err(|e| NetError::io(format!("writing to CNI plugin {kind}"), e))?;
        }
        let out = wait_at_most(child, PLUGIN_TIMEOUT)
            .map_err(|e| NetError::io(format!("waiting for CNI plugin {kind}"), e))?;
        let answer: Option<Value> = serde_json::from_slice(&out.stdout).ok();
        if !out.status.success() {
            let message = answer
                .as_ref()
                .and_then(|a| a.get("msg"))
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_owned());
            let details = answer
                .as_ref()
                .and_then(|a| a.get("details"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            return Err(NetError::io(
                format!("CNI plugin {kind} {command}"),
                std::io::Error::other(format!("{message} {details}").trim().to_owned()),
            ));
        }
        Ok(answer.unwrap_or(Value::Null))
    }
}

/// How long one plugin may take: they finish in milliseconds, unless one
/// is stuck (on a lock, a dead daemon of its own).
const PLUGIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The child's output once it ends, or after `limit` (it is killed then,
/// and its output, whatever it is, ends the wait).
fn wait_at_most(
    child: std::process::Child,
    limit: std::time::Duration,
) -> std::io::Result<std::process::Output> {
    let pid = rustix::process::Pid::from_child(&child);
    let (ended, watch) = std::sync::mpsc::channel::<()>();
    // Wakes when the child ends (the sender is dropped) or at the limit.
    let watchdog = std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = watch.recv_timeout(limit) {
            // Still our unreaped child (unless it ended this very
            // moment): its pid is not anyone else's.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    });
    let out = child.wait_with_output();
    drop(ended);
    let _ = watchdog.join();
    out
}

fn parse_list(value: &Value, from: &str) -> Result<NetworkList> {
    let bad = |why: &str| NetError::Invalid(format!("CNI configuration in {from}: {why}"));
    let name = value
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no name"))?
        .to_owned();
    let cni_version = value
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or("0.4.0")
        .to_owned();
    // A `.conf` holds one plugin; a `.conflist` a list.
    let plugins = match value.get("plugins") {
        Some(Value::Array(plugins)) if !plugins.is_empty() => plugins.clone(),
        Some(_) => return Err(bad("plugins must be a non-empty list")),
        None if value.get("type").is_some() => vec![value.clone()],
        None => return Err(bad("neither plugins nor a type")),
    };
    Ok(NetworkList {
        name,
        cni_version,
        plugins,
    })
}

/// The container's IPv4 address in a CNI result (`ips[].address`, or the
/// older `ip4.ip`), without its prefix.
pub fn address_in(result: &Value) -> Option<Ipv4Addr> {
    let from_ips = result
        .get("ips")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|ip| ip.get("address").and_then(Value::as_str));
    let from_old = result
        .get("ip4")
        .and_then(|ip4| ip4.get("ip"))
        .and_then(Value::as_str);
    from_ips
        .chain(from_old)
        .filter_map(|a| a.split('/').next()?.parse().ok())
        .next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conf_is_a_list_of_one_and_results_give_the_address() {
        let single = json!({"cniVersion": "1.0.0", "name": "n", "type": "bridge"});
        let list = parse_list(&single, "x").unwrap();
        assert_eq!(list.plugins.len(), 1);
        assert!(parse_list(&json!({"name": "n"}), "x").is_err());
        assert!(parse_list(&json!({"name": "n", "plugins": []}), "x").is_err());
        let result = json!({"ips": [{"address": "10.22.0.5/16", "gateway": "10.22.0.1"}]});
        assert_eq!(address_in(&result), Some(Ipv4Addr::new(10, 22, 0, 5)));
        assert_eq!(
            address_in(&json!({"ip4": {"ip": "10.1.2.3/24"}})),
            Some(Ipv4Addr::new(10, 1, 2, 3))
        );
        assert_eq!(address_in(&json!({})), None);
    }

    #[test]
    fn plugin_names_cannot_be_paths() {
        let paths = CniPaths::default();
        assert!(matches!(
            paths.plugin("../../bin/sh"),
            Err(NetError::Invalid(_))
        ));
    }
}
