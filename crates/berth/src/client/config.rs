//! Where the task-platform commands find their server, project and token.
//!
//! Each setting is taken from the first of: its flag (`--url`, `--project`,
//! `--token`), its environment variable (`BERTH_URL`, `BERTH_PROJECT_ID`,
//! `BERTH_TOKEN`, then IronWorker's `IRON_PROJECT_ID` / `IRON_TOKEN`), and
//! the JSON config file (`--client-config PATH`, else `BERTH_CONFIG`, else
//! [`default_path`]), which `berth up` writes.

use crate::cli::ClientArgs;
use crate::cmd::invalid;
use crate::CliError;
use serde::{Deserialize, Serialize};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The client config file's content. Every field may be missing: flags and
/// environment variables can supply the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// An operator token: the fleet's hosts (`berth node …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_token: Option<String>,
}

/// Complete settings: enough to talk to a project's API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The server's base URL without a trailing slash, e.g. `http://127.0.0.1:8380`.
    pub url: String,
    pub project_id: String,
    pub token: String,
}

/// `$XDG_CONFIG_HOME/berth/config.json`, else `$HOME/.config/berth/config.json`.
pub fn default_path() -> PathBuf {
    default_path_with(&|name| std::env::var(name).ok())
}

fn default_path_with(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    let non_empty = |name| env(name).filter(|v| !v.is_empty());
    if let Some(xdg) = non_empty("XDG_CONFIG_HOME").filter(|v| Path::new(v).is_absolute()) {
        return Path::new(&xdg).join("berth").join("config.json");
    }
    let home = non_empty("HOME").unwrap_or_else(|| ".".to_owned());
    Path::new(&home)
        .join(".config")
        .join("berth")
        .join("config.json")
}

/// Reads a config file; `Ok(None)` if it does not exist.
pub fn load(path: &Path) -> io::Result<Option<ClientConfig>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("not valid JSON: {e}")))
}

/// Writes the config atomically (a temporary file in the same directory,
/// then a rename), readable by its owner only (mode 0600). Creates the
/// directory (mode 0700) if needed.
pub fn save(path: &Path, config: &ClientConfig) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "config path has no file name")
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let mut body = serde_json::to_vec_pretty(config).map_err(io::Error::other)?;
    body.push(b'\n');
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // An older file of ours with looser permissions keeps them on open.
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        file.write_all(&body)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        std::fs::File::open(&dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Complete settings of an operator: the server and an operator token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedOperator {
    pub url: String,
    pub token: String,
}

impl ResolvedOperator {
    /// `--url`, else `BERTH_URL`, else the config file's `url`; the token
    /// from `--operator-token`, else `BERTH_OPERATOR_TOKEN`, else the
    /// config file's `operator_token`.
    pub fn from_args(args: &crate::cli::OperatorArgs) -> Result<ResolvedOperator, CliError> {
        resolve_operator(args, &|name| std::env::var(name).ok())
    }
}

/// The client config to read: `--config`, else `BERTH_CONFIG`, else the
/// default path; and whether it was named explicitly (then it must exist).
fn config_path(
    from_flag: Option<PathBuf>,
    env: &dyn Fn(&str) -> Option<String>,
) -> (PathBuf, bool) {
    let explicit = from_flag.or_else(|| {
        env("BERTH_CONFIG")
            .filter(|v| !v.trim().is_empty())
            .map(PathBuf::from)
    });
    match explicit {
        Some(path) => (path, true),
        None => (default_path_with(env), false),
    }
}

/// The client config at `path`: `None` if a default path has no file, an
/// error if an explicitly named one is missing or any one is unreadable.
fn load_config(path: &Path, explicit: bool) -> Result<Option<ClientConfig>, CliError> {
    let file = load(path).map_err(|e| {
        invalid(format!(
            "cannot read the client config {}: {e}",
            path.display()
        ))
    })?;
    if file.is_none() && explicit {
        return Err(invalid(format!(
            "the client config {} does not exist",
            path.display()
        )));
    }
    Ok(file)
}

fn resolve_operator(
    args: &crate::cli::OperatorArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ResolvedOperator, CliError> {
    let env_var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let mut url = args.url.clone().or_else(|| env_var("BERTH_URL"));
    let mut token = args
        .operator_token
        .clone()
        .or_else(|| env_var("BERTH_OPERATOR_TOKEN"));
    let (path, explicit) = config_path(args.config.clone(), env);
    if url.is_none() || token.is_none() {
        if let Some(file) = load_config(&path, explicit)? {
            url = url.or(file.url);
            token = token.or(file.operator_token);
        }
    }
    match (url, token) {
        (Some(url), Some(token)) => Ok(ResolvedOperator {
            url: normalize_url(&url)?,
            token: token.trim().to_owned(),
        }),
        (url, _) => Err(invalid(format!(
            "operator commands need {}: pass --url and --operator-token, or set BERTH_URL and \
             BERTH_OPERATOR_TOKEN (make one with `berth token create --operator`), or put \
             `operator_token` in {}",
            if url.is_none() {
                "a server URL and an operator token"
            } else {
                "an operator token"
            },
            path.display()
        ))),
    }
}

impl Resolved {
    /// The settings for this invocation (see the module docs for the order).
    pub fn from_args(args: &ClientArgs) -> Result<Resolved, CliError> {
        resolve(args, &|name| std::env::var(name).ok())
    }
}

fn resolve(args: &ClientArgs, env: &dyn Fn(&str) -> Option<String>) -> Result<Resolved, CliError> {
    let env_var = |names: &[&str]| {
        names
            .iter()
            .find_map(|name| env(name).filter(|v| !v.trim().is_empty()))
    };
    let mut url = args.url.clone().or_else(|| env_var(&["BERTH_URL"]));
    let mut project_id = args
        .project
        .clone()
        .or_else(|| env_var(&["BERTH_PROJECT_ID", "IRON_PROJECT_ID"]));
    let mut token = args
        .token
        .clone()
        .or_else(|| env_var(&["BERTH_TOKEN", "IRON_TOKEN"]));

    let (path, explicit) = config_path(args.config.clone(), env);
    if url.is_none() || project_id.is_none() || token.is_none() {
        if let Some(file) = load_config(&path, explicit)? {
            url = url.or(file.url);
            project_id = project_id.or(file.project_id);
            token = token.or(file.token);
        }
    }

    let missing: Vec<&str> = [
        ("a server URL (--url, BERTH_URL)", url.is_none()),
        (
            "a project id (--project, BERTH_PROJECT_ID)",
            project_id.is_none(),
        ),
        ("a token (--token, BERTH_TOKEN)", token.is_none()),
    ]
    .into_iter()
    .filter_map(|(what, is_missing)| is_missing.then_some(what))
    .collect();
    match (url, project_id, token) {
        (Some(url), Some(project_id), Some(token)) => Ok(Resolved {
            url: normalize_url(&url)?,
            project_id: project_id.trim().to_owned(),
            token: token.trim().to_owned(),
        }),
        _ => Err(invalid(format!(
            "berth does not know which server to talk to: missing {}. Run `berth up` \
             (it writes {}), or pass --url, --project and --token, or set BERTH_URL, \
             BERTH_PROJECT_ID and BERTH_TOKEN",
            missing.join(", "),
            path.display()
        ))),
    }
}

/// Whether two server URLs name the same server (after the normalisation
/// of [`normalize_url`]); an invalid URL names none.
pub fn same_url(a: &str, b: &str) -> bool {
    match (normalize_url(a), normalize_url(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// `host:port` → `http://host:port`; no trailing slash. https is refused:
/// this build has no TLS.
/// The server URL, or several comma separated (servers sharing one store),
/// each normalized: `host:port` gets `http://`, trailing slashes go.
fn normalize_url(urls: &str) -> Result<String, CliError> {
    let urls: Vec<String> = urls
        .split(',')
        .map(normalize_one_url)
        .collect::<Result<_, _>>()?;
    Ok(urls.join(","))
}

fn normalize_one_url(url: &str) -> Result<String, CliError> {
    let url = url.trim().trim_end_matches('/');
    if url.is_empty() {
        return Err(invalid("the server URL is empty"));
    }
    if url.starts_with("https://") {
        return Err(invalid(format!(
            "{url}: https is not supported by this berth yet; use http:// (e.g. through an SSH tunnel)"
        )));
    }
    if url.starts_with("http://") {
        return Ok(url.to_owned());
    }
    if url.contains("://") {
        return Err(invalid(format!(
            "{url}: the server URL must start with http://"
        )));
    }
    Ok(format!("http://{url}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn write_config(dir: &Path, config: &ClientConfig) -> PathBuf {
        let path = dir.join("berth").join("config.json");
        save(&path, config).unwrap();
        path
    }

    #[test]
    fn flag_beats_env_beats_file_per_setting() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(
            dir.path(),
            &ClientConfig {
                url: Some("http://file:1".into()),
                project_id: Some("file-project".into()),
                token: Some("file-token".into()),
                operator_token: None,
            },
        );
        let args = ClientArgs {
            url: Some("http://flag:1/".into()),
            config: Some(path),
            ..ClientArgs::default()
        };
        let env = env_of(&[("BERTH_PROJECT_ID", "env-project")]);
        let got = resolve(&args, &env).unwrap();
        assert_eq!(
            got,
            Resolved {
                url: "http://flag:1".into(),
                project_id: "env-project".into(),
                token: "file-token".into(),
            }
        );
    }

    #[test]
    fn iron_variables_are_a_fallback_and_xdg_locates_the_file() {
        let dir = tempfile::tempdir().unwrap();
        write_config(
            dir.path(),
            &ClientConfig {
                url: Some("127.0.0.1:8380".into()),
                ..ClientConfig::default()
            },
        );
        let xdg = dir.path().to_str().unwrap();
        let env = env_of(&[
            ("XDG_CONFIG_HOME", xdg),
            ("IRON_PROJECT_ID", "iron-project"),
            ("IRON_TOKEN", "iron-token"),
            ("BERTH_TOKEN", "berth-token"),
        ]);
        let got = resolve(&ClientArgs::default(), &env).unwrap();
        assert_eq!(got.url, "http://127.0.0.1:8380");
        assert_eq!(got.project_id, "iron-project");
        assert_eq!(got.token, "berth-token");
    }

    #[test]
    fn missing_settings_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_of(&[("HOME", dir.path().to_str().unwrap())]);
        let err = resolve(&ClientArgs::default(), &env).unwrap_err();
        assert!(err.0.message.contains("berth up"), "{}", err.0.message);
        assert!(err.0.message.contains("--url"), "{}", err.0.message);
        let args = ClientArgs {
            config: Some(dir.path().join("nope.json")),
            ..ClientArgs::default()
        };
        let err = resolve(&args, &env).unwrap_err();
        assert!(
            err.0.message.contains("does not exist"),
            "{}",
            err.0.message
        );
    }

    #[test]
    fn the_operator_token_comes_from_flag_env_or_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(
            dir.path(),
            &ClientConfig {
                url: Some("http://file:1".into()),
                operator_token: Some("file-ops".into()),
                ..ClientConfig::default()
            },
        );
        let args = crate::cli::OperatorArgs {
            config: Some(path.clone()),
            ..Default::default()
        };
        let no_env = |_: &str| None;
        let from_file = resolve_operator(&args, &no_env).unwrap();
        assert_eq!(from_file.url, "http://file:1");
        assert_eq!(from_file.token, "file-ops");
        let env = |name: &str| (name == "BERTH_OPERATOR_TOKEN").then(|| "env-ops".to_owned());
        assert_eq!(resolve_operator(&args, &env).unwrap().token, "env-ops");
        let flag = crate::cli::OperatorArgs {
            operator_token: Some("flag-ops".into()),
            ..args.clone()
        };
        assert_eq!(resolve_operator(&flag, &env).unwrap().token, "flag-ops");
        // A project's token is never taken for an operator's.
        let project_only = write_config(
            dir.path(),
            &ClientConfig {
                url: Some("http://file:1".into()),
                token: Some("project-token".into()),
                ..ClientConfig::default()
            },
        );
        let args = crate::cli::OperatorArgs {
            config: Some(project_only),
            ..Default::default()
        };
        let err = resolve_operator(&args, &no_env).unwrap_err().to_string();
        assert!(err.contains("operator token"), "{err}");
    }

    #[test]
    fn save_is_private_and_round_trips() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let config = ClientConfig {
            url: Some("http://a:1".into()),
            project_id: Some("p".into()),
            token: Some("t".into()),
            operator_token: Some("o".into()),
        };
        let path = write_config(dir.path(), &config);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load(&path).unwrap(), Some(config));
        assert_eq!(load(&dir.path().join("missing")).unwrap(), None);
    }

    #[test]
    fn urls_are_normalized() {
        assert!(same_url("127.0.0.1:8380", "http://127.0.0.1:8380/"));
        assert!(!same_url("127.0.0.1:8380", "http://127.0.0.1:8381"));
        assert!(!same_url("https://h", "https://h"));
        assert_eq!(normalize_url("h:1/").unwrap(), "http://h:1");
        assert!(normalize_url("https://h").is_err());
        assert!(normalize_url("ftp://h").is_err());
        assert_eq!(
            normalize_url("h:1, http://g:2/").unwrap(),
            "http://h:1,http://g:2",
            "servers sharing a store, comma separated"
        );
        assert!(normalize_url("h:1,").is_err(), "an empty entry");
    }
}
