//! The commands `berthd` serves (`up`, `server`, `agent`, `project`,
//! `token`, `stack`).
//!
//! berth is started once per container, so it links only what `berth run`
//! and the task platform's client need. The daemons and the operator
//! commands, which link the server, the store and the agent, live in
//! `berthd`; `berth up …` and the others replace this process with
//! `berthd up …`, found next to this binary (where `scripts/build.sh`,
//! `cargo build` and the install steps put it) or else on `PATH`. The
//! arguments pass unchanged, and so does argv[0], so that berthd's help
//! and errors name the command as it was typed.

use berth::CliError;
use berth_core::{ErrorCode, ErrorReport};
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

/// File name of the daemon binary.
const BERTHD: &str = "berthd";

/// Replaces this process with berthd running this process's command line;
/// returns only with the reason it could not.
pub fn exec(command: &str) -> anyhow::Result<u8> {
    let me = std::env::current_exe().ok();
    let Some(berthd) = locate(me.as_deref(), std::env::var_os("PATH")) else {
        let beside = me
            .as_deref()
            .and_then(Path::parent)
            .map_or_else(|| "this binary".to_owned(), |d| d.display().to_string());
        return Err(CliError(ErrorReport::new(
            ErrorCode::NotFound,
            format!(
                "`berth {command}` is served by {BERTHD}, which is neither in {beside} nor on PATH: \
                 install it next to berth (scripts/build.sh builds both into target/dist/)"
            ),
        ))
        .into());
    };
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| OsString::from("berth"));
    let err = std::process::Command::new(&berthd)
        .arg0(argv0)
        .args(args)
        .exec();
    Err(CliError(ErrorReport::new(
        ErrorCode::HostIo,
        format!("starting {} for `berth {command}`: {err}", berthd.display()),
    ))
    .into())
}

/// berthd next to `me`, else the first on `path`.
fn locate(me: Option<&Path>, path: Option<OsString>) -> Option<PathBuf> {
    let beside = me.map(|me| me.with_file_name(BERTHD));
    let on_path = path
        .iter()
        .flat_map(std::env::split_paths)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(BERTHD));
    beside.into_iter().chain(on_path).find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn executable(path: &Path) {
        std::fs::write(path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn berthd_beside_berth_comes_before_path() {
        let beside = tempfile::tempdir().unwrap();
        let on_path = tempfile::tempdir().unwrap();
        let me = beside.path().join("berth");
        let path = Some(on_path.path().as_os_str().to_owned());
        assert_eq!(locate(Some(&me), path.clone()), None);
        executable(&on_path.path().join(BERTHD));
        assert_eq!(
            locate(Some(&me), path.clone()),
            Some(on_path.path().join(BERTHD))
        );
        executable(&beside.path().join(BERTHD));
        assert_eq!(locate(Some(&me), path), Some(beside.path().join(BERTHD)));
    }

    #[test]
    fn a_file_that_cannot_run_or_a_relative_path_entry_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(BERTHD), "").unwrap();
        let me = dir.path().join("berth");
        assert_eq!(locate(Some(&me), None), None);
        assert_eq!(locate(None, Some(OsString::from("relative/dir"))), None);
    }
}
