//! The default stack `berth up` makes itself: the host's static busybox as
//! a one-layer image, so a fresh machine can run `sh` and `binary` tasks
//! without any registry.

use berth::cmd::invalid;
use berth::CliError;
use berth_core::{ErrorCode, ErrorReport};
use berth_image::ImageStore;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The image the runtimes `sh` and `binary` map to.
pub const DEFAULT_STACK: &str = "berth/stack-busybox:latest";

const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";

/// Imports the default stack unless the store has it. Returns whether it
/// was made now.
pub fn ensure_default_stack(images: &ImageStore) -> Result<bool, CliError> {
    let reference = berth_core::ImageRef::parse(DEFAULT_STACK)
        .map_err(|e| invalid(format!("default stack name: {e}")))?;
    if images.resolve(&reference).is_ok() {
        return Ok(false);
    }
    let busybox = find_static_busybox()?;
    let tar = stack_tar(&busybox)?;
    let dir = tempfile::tempdir().map_err(|e| io_error("a temp dir for the stack", e))?;
    let path = dir.path().join("stack.tar");
    std::fs::write(&path, tar).map_err(|e| io_error("writing the stack tarball", e))?;
    images.import(&reference, &path, &mut |_| {})?;
    Ok(true)
}

fn find_static_busybox() -> Result<PathBuf, CliError> {
    for candidate in ["/bin/busybox", "/usr/bin/busybox"] {
        let path = Path::new(candidate);
        if path.is_file() {
            return Ok(path.to_owned());
        }
    }
    Err(CliError(ErrorReport::new(
        ErrorCode::ImageNotFound,
        "the default stack is made from a static busybox: install busybox-static \
         (apt-get install busybox-static) or map the runtimes to an image of your own \
         with `berth stack map`",
    )))
}

/// busybox, its applets as symlinks, and the few files a shell expects.
fn stack_tar(busybox: &Path) -> Result<Vec<u8>, CliError> {
    let binary = std::fs::read(busybox).map_err(|e| io_error("reading busybox", e))?;
    let listing = Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(|e| io_error("running busybox --list", e))?;
    let applets = String::from_utf8_lossy(&listing.stdout).into_owned();
    let mut out = tar::Builder::new(Vec::new());
    let build = |out: &mut tar::Builder<Vec<u8>>| -> std::io::Result<()> {
        for dir in ["bin", "etc", "tmp", "proc", "sys", "dev", "root", "task"] {
            let mut header = new_header();
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            header.set_mode(if dir == "tmp" { 0o1777 } else { 0o755 });
            out.append_data(&mut header, format!("{dir}/"), std::io::empty())?;
        }
        let mut header = new_header();
        header.set_size(binary.len() as u64);
        header.set_mode(0o755);
        out.append_data(&mut header, "bin/busybox", binary.as_slice())?;
        for applet in applets.lines().map(str::trim) {
            if applet.is_empty() || applet == "busybox" || applet.contains('/') {
                continue;
            }
            let mut header = new_header();
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            header.set_mode(0o777);
            out.append_link(&mut header, format!("bin/{applet}"), "busybox")?;
        }
        for (path, content) in [("etc/passwd", PASSWD), ("etc/group", GROUP)] {
            let mut header = new_header();
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            out.append_data(&mut header, path, content.as_bytes())?;
        }
        Ok(())
    };
    build(&mut out).map_err(|e| io_error("building the stack tarball", e))?;
    out.into_inner()
        .map_err(|e| io_error("finishing the stack tarball", e))
}

fn io_error(what: &str, e: std::io::Error) -> CliError {
    CliError(ErrorReport::new(ErrorCode::HostIo, format!("{what}: {e}")))
}

/// A header owned by root with a fixed time (the tar crate leaves those
/// fields empty, which importers rightly refuse).
fn new_header() -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}
