//! Which build of berth runs a command.
//!
//! `scripts/build.sh` ships berth twice, both static: `berth`, built against
//! musl, and `berth-daemon`, the same program built against glibc. berth is
//! started once per container by scripts and schedulers, and musl's start
//! is ~0.5 ms shorter here (static glibc probes the CPU with dozens of
//! `cpuid` instructions before `main`, each a trap to the hypervisor in a
//! VM). The long-running, multi-threaded commands (`up`, `server`, `agent`)
//! are faster on glibc (its allocator and string functions: the task server
//! spent ~0.5 ms more CPU per task on musl), so the musl build hands them to
//! its glibc sibling with `exec`. Without the sibling (a plain `cargo
//! build`), every command runs in this process.

use std::ffi::OsString;
use std::path::PathBuf;

/// File name of the glibc build, next to this binary.
pub const DAEMON_BUILD: &str = "berth-daemon";

/// On the musl build, replaces this process with the glibc build running
/// the same command line. Returns only if there is nothing to hand to (not
/// the musl build, or no sibling) or the `exec` failed, with the reason.
pub fn to_daemon_build() -> Option<std::io::Error> {
    if !cfg!(target_env = "musl") {
        return None;
    }
    let sibling = sibling()?;
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    use std::os::unix::process::CommandExt;
    tracing::debug!(build = %sibling.display(), "handing the command to the glibc build");
    Some(std::process::Command::new(&sibling).args(args).exec())
}

fn sibling() -> Option<PathBuf> {
    let me = std::env::current_exe().ok()?;
    let sibling = me.with_file_name(DAEMON_BUILD);
    (sibling != me && sibling.is_file()).then_some(sibling)
}
