//! `berth-shim --dir <state dir> [--containers-dir D] [--cgroup-parent P]
//! [--ready-fd N]`
//!
//! Exit status: 0 when the container ran and `exit.json` holds its result;
//! 1 when `exit.json` holds an error (bad spec, create error, teardown
//! failure); 2 when no exit record could be written (bad usage, including
//! a `--ready-fd` that is not open for writing, unusable or busy state dir,
//! or `exit.json` itself failed).
//!
//! `--ready-fd N`: one line on fd N once the container runs
//! (`{"status":"running","pid":P}`, after `state.json` is written) or has
//! failed to start (`{"status":"failed"}`, after `exit.json` is written),
//! then fd N points at `/dev/null`; no line at all with exit status 2.
//! The crate docs (`lib.rs`) have the whole contract.

use anyhow::{bail, Context, Result};
use berth_shim::Options;
use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = r#"usage: berth-shim --dir <state dir> [--containers-dir <dir>]
                  [--cgroup-parent <name>] [--ready-fd <N>]

Runs the container described by <state dir>/spec.json, writes its output to
output.log and its exit record to exit.json, and serves shim.sock meanwhile.
Defaults: --containers-dir /var/lib/berth/containers, --cgroup-parent berth.

--ready-fd <N>: write one line to fd N (open for writing, not 2) once the
container runs, {"status":"running","pid":<container pid>}, after state.json
is written; or {"status":"failed"} once exit.json records why it did not
start. fd N then points at /dev/null. No line means no exit record (exit 2)."#;

enum Command {
    Run(Options),
    Help,
}

fn parse_args(mut args: impl Iterator<Item = OsString>) -> Result<Command> {
    let mut dir = None;
    let mut containers_dir = PathBuf::from("/var/lib/berth/containers");
    let mut cgroup_parent = String::from("berth");
    let mut ready_fd = None;
    while let Some(arg) = args.next() {
        let arg = arg.into_string().ok().context("arguments must be UTF-8")?;
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(OsString::from(v))),
            None => (arg, None),
        };
        if flag == "-h" || flag == "--help" {
            return Ok(Command::Help);
        }
        let value = match inline.or_else(|| args.next()) {
            Some(v) => v,
            None => bail!("{flag} needs a value"),
        };
        match flag.as_str() {
            "--dir" => dir = Some(PathBuf::from(value)),
            "--containers-dir" => containers_dir = PathBuf::from(value),
            "--cgroup-parent" => {
                cgroup_parent = value
                    .into_string()
                    .ok()
                    .context("--cgroup-parent must be UTF-8")?
            }
            "--ready-fd" => {
                // Whether the fd is open is checked by `run`, first thing.
                let fd = value.to_str().and_then(|v| v.parse::<i32>().ok());
                ready_fd = Some(fd.context("--ready-fd takes a file descriptor number")?);
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    let dir = dir.context("--dir is required")?;
    Ok(Command::Run(Options {
        dir,
        containers_dir,
        cgroup_parent,
        ready_fd,
    }))
}

/// Writes to stderr, if it is still there: the shim outlives its caller.
fn say(message: &str) {
    let _ = writeln!(std::io::stderr(), "berth-shim: {message}");
}

fn main() -> ExitCode {
    let opts = match parse_args(std::env::args_os().skip(1)) {
        Ok(Command::Run(opts)) => opts,
        Ok(Command::Help) => {
            let _ = writeln!(std::io::stdout(), "{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            say(&format!("{e:#}\n{USAGE}"));
            return ExitCode::from(2);
        }
    };
    match berth_shim::run(&opts) {
        Ok(record) => match record.error() {
            None => ExitCode::SUCCESS,
            Some(error) => {
                say(&format!("error: {error}"));
                ExitCode::from(1)
            }
        },
        Err(e @ berth_shim::ShimError::Usage(_)) => {
            say(&format!("{e}\n{USAGE}"));
            ExitCode::from(2)
        }
        Err(e) => {
            say(&format!("error: {e}"));
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command> {
        parse_args(args.iter().map(OsString::from))
    }

    #[test]
    fn flags_parse_with_defaults() {
        let Ok(Command::Run(opts)) = parse(&["--dir", "/s", "--cgroup-parent=x"]) else {
            panic!("not parsed");
        };
        assert_eq!(opts.dir, PathBuf::from("/s"));
        assert_eq!(opts.cgroup_parent, "x");
        assert_eq!(
            opts.containers_dir,
            PathBuf::from("/var/lib/berth/containers")
        );
        assert!(parse(&[]).is_err());
        assert!(parse(&["--dir"]).is_err());
        assert!(parse(&["--dir", "/s", "--bogus", "1"]).is_err());
        assert_eq!(opts.ready_fd, None);
    }

    #[test]
    fn ready_fd_is_a_number() {
        let Ok(Command::Run(opts)) = parse(&["--dir", "/s", "--ready-fd", "1"]) else {
            panic!("not parsed");
        };
        assert_eq!(opts.ready_fd, Some(1));
        assert!(parse(&["--dir", "/s", "--ready-fd", "one"]).is_err());
        assert!(parse(&["--dir", "/s", "--ready-fd="]).is_err());
        assert!(parse(&["--dir", "/s", "--ready-fd"]).is_err());
    }
}
