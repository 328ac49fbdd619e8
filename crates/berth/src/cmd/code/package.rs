//! Code packages: zipping a directory, checking a zip holds the file to run.

use crate::cmd::invalid;
use crate::CliError;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use zip::write::SimpleFileOptions;

/// Zips `dir` (recursively, in name order, keeping Unix modes). The server
/// takes no links in packages, so a symlink that stays inside `dir` is
/// stored as what it points to; one that leads out of `dir` (or nowhere) is
/// refused, and so is a loop of directory links.
pub fn zip_dir(dir: &Path) -> Result<Vec<u8>, CliError> {
    let root = dir
        .canonicalize()
        .map_err(|e| invalid(format!("{}: {e}", dir.display())))?;
    if !root.is_dir() {
        return Err(invalid(format!("{} is not a directory", dir.display())));
    }
    let mut zipper = Zipper {
        writer: zip::ZipWriter::new(Cursor::new(Vec::new())),
        root: root.clone(),
        walking: vec![root.clone()],
    };
    zipper.add_dir(&root, "")?;
    let cursor = zipper
        .writer
        .finish()
        .map_err(|e| invalid(format!("zipping {}: {e}", dir.display())))?;
    Ok(cursor.into_inner())
}

struct Zipper {
    writer: zip::ZipWriter<Cursor<Vec<u8>>>,
    root: PathBuf,
    /// The real directories being walked, outermost first (loop check).
    walking: Vec<PathBuf>,
}

fn io_error(path: &Path, e: std::io::Error) -> CliError {
    invalid(format!("{}: {e}", path.display()))
}

impl Zipper {
    /// Adds the entries of the real directory `dir` under `prefix`.
    fn add_dir(&mut self, dir: &Path, prefix: &str) -> Result<(), CliError> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| io_error(dir, e))?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(|e| io_error(dir, e))?;
        entries.sort();
        for path in entries {
            let base = path
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| invalid(format!("{}: names must be UTF-8", path.display())))?;
            let name = format!("{prefix}{base}");
            let meta = std::fs::symlink_metadata(&path).map_err(|e| io_error(&path, e))?;
            if meta.file_type().is_symlink() {
                let target = self.inside_target(&path)?;
                let target_meta = std::fs::metadata(&target).map_err(|e| io_error(&target, e))?;
                self.add(&target, &target_meta, &name)?;
            } else {
                self.add(&path, &meta, &name)?;
            }
        }
        Ok(())
    }

    /// Adds the real file or directory `path` as `name`.
    fn add(&mut self, path: &Path, meta: &std::fs::Metadata, name: &str) -> Result<(), CliError> {
        let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777;
        let options = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(mode)
            .large_file(meta.len() >= u64::from(u32::MAX));
        let zip_err =
            |e: zip::result::ZipError| invalid(format!("zipping {}: {e}", path.display()));
        if meta.is_dir() {
            if self.walking.iter().any(|d| d == path) {
                return Err(invalid(format!(
                    "refusing {name}: a symlink loop (it leads back to {})",
                    path.display()
                )));
            }
            self.writer
                .add_directory(format!("{name}/"), options)
                .map_err(zip_err)?;
            self.walking.push(path.to_path_buf());
            let added = self.add_dir(path, &format!("{name}/"));
            self.walking.pop();
            added
        } else if meta.is_file() {
            let content = std::fs::read(path).map_err(|e| io_error(path, e))?;
            self.writer.start_file(name, options).map_err(zip_err)?;
            self.writer
                .write_all(&content)
                .map_err(|e| io_error(path, e))
        } else {
            eprintln!(
                "berth: warning: skipping {} (not a file or directory)",
                path.display()
            );
            Ok(())
        }
    }

    /// What the symlink at `link` resolves to, if that is inside the root.
    fn inside_target(&self, link: &Path) -> Result<PathBuf, CliError> {
        let shown = std::fs::read_link(link)
            .map(|t| t.display().to_string())
            .unwrap_or_default();
        let resolved = link.canonicalize().map_err(|_| {
            invalid(format!(
                "refusing symlink {} -> {shown}: it leads nowhere",
                link.display()
            ))
        })?;
        if !resolved.starts_with(&self.root) {
            return Err(invalid(format!(
                "refusing symlink {} -> {shown}: it leads out of {}",
                link.display(),
                self.root.display()
            )));
        }
        Ok(resolved)
    }
}

/// Refuses a zip that is not one, or lacks `file_name`.
pub fn check_zip(bytes: &[u8], file_name: &str, shown: &Path) -> Result<(), CliError> {
    let archive = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| invalid(format!("{} is not a zip file: {e}", shown.display())))?;
    let wanted = file_name.trim_start_matches("./");
    if archive.file_names().any(|name| name == wanted) {
        Ok(())
    } else {
        Err(invalid(format!(
            "{} has no {file_name:?} (--file names the file in the package to run)",
            shown.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::{symlink, PermissionsExt};

    #[test]
    fn zips_a_directory_with_modes_and_inner_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("pkg");
        std::fs::create_dir_all(root.join("lib")).unwrap();
        std::fs::write(root.join("run.sh"), "echo hi\n").unwrap();
        std::fs::set_permissions(root.join("run.sh"), PermissionsExt::from_mode(0o755)).unwrap();
        std::fs::write(root.join("lib/util.sh"), "true\n").unwrap();
        symlink("../run.sh", root.join("lib/link")).unwrap();
        symlink("lib", root.join("lib2")).unwrap();

        let bytes = zip_dir(&root).unwrap();
        check_zip(&bytes, "run.sh", &root).unwrap();
        assert!(check_zip(&bytes, "missing.sh", &root).is_err());
        let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
        let names: Vec<String> = archive.file_names().map(str::to_owned).collect();
        for name in ["lib/", "lib/util.sh", "lib2/util.sh", "run.sh"] {
            assert!(names.contains(&name.to_owned()), "{name} not in {names:?}");
        }
        let run = archive.by_name("run.sh").unwrap();
        assert_eq!(run.unix_mode().unwrap() & 0o777, 0o755);
        drop(run);
        let mut link = archive.by_name("lib/link").unwrap();
        assert!(!link.is_symlink());
        let mut content = String::new();
        link.read_to_string(&mut content).unwrap();
        assert_eq!(content, "echo hi\n");
    }

    #[test]
    fn refuses_symlinks_out_and_loops() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("pkg");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(dir.path().join("secret"), "x").unwrap();
        symlink("../secret", root.join("escape")).unwrap();
        let err = zip_dir(&root).unwrap_err();
        assert!(err.0.message.contains("leads out"), "{}", err.0.message);
        std::fs::remove_file(root.join("escape")).unwrap();
        symlink("/nonexistent/x", root.join("dangling")).unwrap();
        let err = zip_dir(&root).unwrap_err();
        assert!(err.0.message.contains("leads nowhere"), "{}", err.0.message);
        std::fs::remove_file(root.join("dangling")).unwrap();
        symlink("..", root.join("sub/up")).unwrap();
        let err = zip_dir(&root).unwrap_err();
        assert!(err.0.message.contains("loop"), "{}", err.0.message);
    }
}
