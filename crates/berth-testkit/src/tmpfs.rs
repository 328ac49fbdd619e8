//! A small tmpfs a test mounts to make a disk run full on demand.

use std::io::Write;
use std::path::{Path, PathBuf};

/// A tmpfs of a fixed size mounted at a path (created if needed);
/// unmounted when dropped. Needs root.
pub struct SmallTmpfs {
    path: PathBuf,
    filler: PathBuf,
    /// The mount's device, to refuse filling anything else.
    dev: u64,
}

impl SmallTmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` reads it, e.g. `16m`)
    /// at `path`.
    pub fn mount(path: &Path, size: &str) -> SmallTmpfs {
        std::fs::create_dir_all(path).expect("create the mount point");
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs at {} (needs root)",
            path.display()
        );
        use std::os::unix::fs::MetadataExt;
        let dev = std::fs::metadata(path).expect("stat the mount").dev();
        SmallTmpfs {
            path: path.to_path_buf(),
            filler: path.join(".filler"),
            dev,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fills the file system until it refuses more (ENOSPC). Refuses (and
    /// panics) if the mount is no longer there: it would fill the disk
    /// below instead.
    pub fn fill(&self) {
        use std::os::unix::fs::MetadataExt;
        let mounted =
            crate::mounts_under(&self.path).contains(&self.path.to_string_lossy().into_owned());
        let dev = std::fs::metadata(&self.path).map(|m| m.dev()).ok();
        assert!(
            mounted && dev == Some(self.dev),
            "the tmpfs at {} is gone: not filling what lies below it",
            self.path.display()
        );
        let mut file = std::fs::File::create(&self.filler).expect("create the filler");
        assert_eq!(
            file.metadata().map(|m| m.dev()).ok(),
            Some(self.dev),
            "the filler is not on the tmpfs"
        );
        let chunk = vec![0xA5u8; 64 * 1024];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(err) if err.raw_os_error() == Some(28) => break,
                Err(err) => panic!("filling {}: {err}", self.path.display()),
            }
        }
        // Whatever partial page is left, a byte at a time.
        while file.write(&[0]).is_ok_and(|n| n == 1) {}
    }

    /// Frees what [`SmallTmpfs::fill`] took.
    pub fn free(&self) {
        std::fs::remove_file(&self.filler).expect("remove the filler");
    }

    /// Unmounts it now (a test that checks for leftover mounts first).
    pub fn unmount(&self) {
        crate::unmount_under(&self.path);
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        self.unmount();
    }
}
