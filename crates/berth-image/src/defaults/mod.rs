//! An image's runtime defaults plus a caller's overrides → the settings of
//! a container's first process, by Docker's rules.
//!
//! Both `berth run` and the host agent's create-container API start
//! containers from images, and they must agree exactly on what a container
//! runs, in which directory, with which environment and as whom; so the rules
//! live here, next to the image configs, rather than in either caller. The
//! result is plain data: this crate must not depend on the runtime.

mod user;

use crate::error::ImageError;
use crate::model::ResolvedImage;

/// What a caller overrides of an image's defaults (Docker's rules).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaunchOverrides {
    /// `None`: the image's entrypoint. `Some` of an empty list (or of `[""]`,
    /// the Docker API's spelling of `--entrypoint ""`): no entrypoint.
    /// `Some(v)`: `v`. Overriding the entrypoint also drops the image's cmd.
    pub entrypoint: Option<Vec<String>>,
    /// Non-empty: replaces the image's cmd (the entrypoint stays in front).
    pub command: Vec<String>,
    /// `KEY=VALUE` pairs; each replaces the image's value of `KEY`. (Docker's
    /// `-e KEY` form, copying the caller's own variable, is the caller's to
    /// expand before this point.)
    pub env: Vec<String>,
    /// `name|uid[:group|gid]`, resolved against the image's `/etc/passwd` and
    /// `/etc/group`; replaces the image's user. Empty means root.
    pub user: Option<String>,
    /// Replaces the image's working directory; empty means unset.
    pub working_dir: Option<String>,
}

/// The process settings that result from an image and its overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// The command line: entrypoint, then cmd. Never empty.
    pub args: Vec<String>,
    /// `KEY=VALUE` strings: the image's, overridden, plus `HOME` (the user's
    /// home directory from the image's `/etc/passwd`) unless already set.
    pub env: Vec<String>,
    /// Working directory (`/` when neither the caller nor the image sets one).
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: the groups of the image's `/etc/group` that list
    /// the user by name, except its primary group.
    pub additional_gids: Vec<u32>,
}

impl ResolvedImage {
    /// Applies `overrides` to this image's runtime defaults.
    ///
    /// Reads `/etc/passwd` and `/etc/group` from the image's layers when a
    /// user is given by name (or to find a numeric user's home and groups);
    /// the files are opened inside each layer directory only, never through a
    /// symlink out of it, and only when they are regular files.
    ///
    /// Errors (all [`ImageError::InvalidArgument`], code `invalid_argument`):
    /// an env entry that is not `KEY=VALUE` or has an empty key, no command at
    /// all (neither given nor in the image), a user or group name the image
    /// does not define.
    pub fn launch(&self, overrides: &LaunchOverrides) -> Result<Launch, ImageError> {
        let args = self.command(overrides)?;
        let mut env = merge_env(&self.config.env, &overrides.env)?;
        // An empty user (`-u ""`, or `"User": ""` in a config) means root,
        // as in Docker, even when the image names another user.
        let user = user::resolve(
            overrides
                .user
                .as_deref()
                .or(self.config.user.as_deref())
                .filter(|u| !u.is_empty()),
            &self.layers,
        )?;
        if !env.iter().any(|e| env_key(e) == Some("HOME")) {
            env.push(format!("HOME={}", user.home));
        }
        let cwd = overrides
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .or_else(|| self.config.working_dir.clone().filter(|w| !w.is_empty()))
            .unwrap_or_else(|| "/".into());
        Ok(Launch {
            args,
            env,
            cwd,
            uid: user.uid,
            gid: user.gid,
            additional_gids: user.additional_gids,
        })
    }

    /// Docker's rule: a given command replaces the image's cmd; the
    /// entrypoint (the image's, or the override) stays in front; overriding
    /// the entrypoint drops the image's cmd, which was written for the old one.
    fn command(&self, overrides: &LaunchOverrides) -> Result<Vec<String>, ImageError> {
        let entrypoint = match overrides.entrypoint.as_deref() {
            None => self.config.entrypoint.clone(),
            Some([]) => vec![],
            // `[""]` is how Docker's API (and `docker run --entrypoint ""`)
            // says "no entrypoint"; kept as one empty argument it could only
            // fail to execute.
            Some([only]) if only.is_empty() => vec![],
            Some(e) => e.to_vec(),
        };
        let cmd = if !overrides.command.is_empty() {
            overrides.command.clone()
        } else if overrides.entrypoint.is_some() {
            vec![]
        } else {
            self.config.cmd.clone()
        };
        let full: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
        if full.is_empty() {
            return Err(ImageError::invalid_argument(format!(
                "no command given and image {} has no default command",
                self.reference
            )));
        }
        Ok(full)
    }
}

/// The image's environment with each override replacing the variable of the
/// same name (and moving it to the end, where Docker puts it too).
fn merge_env(image_env: &[String], overrides: &[String]) -> Result<Vec<String>, ImageError> {
    let mut env: Vec<String> = image_env.to_vec();
    for entry in overrides {
        let key = match env_key(entry) {
            Some("") => {
                return Err(ImageError::invalid_argument(format!(
                    "environment entry {entry:?}: empty variable name"
                )))
            }
            Some(key) => key,
            None => {
                return Err(ImageError::invalid_argument(format!(
                    "environment entry {entry:?}: expected KEY=VALUE"
                )))
            }
        };
        env.retain(|e| env_key(e) != Some(key));
        env.push(entry.clone());
    }
    Ok(env)
}

/// The name of a `KEY=VALUE` entry; `None` without `=`.
fn env_key(entry: &str) -> Option<&str> {
    entry.split_once('=').map(|(key, _)| key)
}

#[cfg(test)]
mod tests;
