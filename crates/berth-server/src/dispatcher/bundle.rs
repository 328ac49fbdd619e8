//! A code package (zip) as a one-layer image: the same files under `task/`,
//! as a tar the agent's image store imports (and unpacks once per host,
//! however many tasks use it).

use std::io::{Cursor, Read};

/// Why a stored package cannot be converted (the API validated it, so this
/// means a corrupted row or a package from an older, laxer server).
#[derive(Debug, thiserror::Error)]
#[error("code package: {0}")]
pub struct BundleError(String);

/// Largest uncompressed package accepted here (the API's bound is lower).
const MAX_UNPACKED: u64 = 1 << 30;

/// Converts the zip to a tar whose entries live under `task/`. The file
/// `executable` (the classic form's `file_name`) is made executable, since
/// zips made on other systems often carry no Unix modes.
pub fn zip_to_layer_tar(
    zip_bytes: &[u8],
    executable: Option<&str>,
) -> Result<Vec<u8>, BundleError> {
    let mut archive = zip::ZipArchive::new(Cursor::new(zip_bytes))
        .map_err(|e| BundleError(format!("not a readable zip: {e}")))?;
    let mut out = tar::Builder::new(Vec::new());
    out.mode(tar::HeaderMode::Deterministic);
    append_dir(&mut out, "task/")?;
    let mut total: u64 = 0;
    for index in 0..archive.len() {
        let mut entry = archive
            .by_index(index)
            .map_err(|e| BundleError(format!("entry {index}: {e}")))?;
        let Some(path) = entry.enclosed_name() else {
            return Err(BundleError(format!(
                "entry {:?} leaves the package",
                entry.name()
            )));
        };
        let Some(relative) = path.to_str().map(|p| p.trim_end_matches('/').to_owned()) else {
            return Err(BundleError(format!(
                "entry {:?} is not UTF-8",
                entry.name()
            )));
        };
        if relative.is_empty() {
            continue;
        }
        let unix_mode = entry.unix_mode().unwrap_or(0);
        if unix_mode & 0o170000 == 0o120000 {
            return Err(BundleError(format!("entry {relative:?} is a symlink")));
        }
        if entry.is_dir() {
            append_dir(&mut out, &format!("task/{relative}/"))?;
            continue;
        }
        total = total.saturating_add(entry.size());
        if total > MAX_UNPACKED {
            return Err(BundleError("unpacks to more than 1 GiB".into()));
        }
        let mut data = Vec::with_capacity(entry.size().min(1 << 24) as usize);
        entry
            .read_to_end(&mut data)
            .map_err(|e| BundleError(format!("entry {relative:?}: {e}")))?;
        let mut mode = (unix_mode & 0o777) | 0o644;
        if executable == Some(relative.as_str()) || unix_mode & 0o111 != 0 {
            mode |= 0o755;
        }
        let mut header = new_header();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        out.append_data(&mut header, format!("task/{relative}"), data.as_slice())
            .map_err(|e| BundleError(format!("entry {relative:?}: {e}")))?;
    }
    out.into_inner()
        .map_err(|e| BundleError(format!("finishing the tar: {e}")))
}

fn append_dir(out: &mut tar::Builder<Vec<u8>>, path: &str) -> Result<(), BundleError> {
    let mut header = new_header();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_size(0);
    header.set_mode(0o755);
    out.append_data(&mut header, path, std::io::empty())
        .map_err(|e| BundleError(format!("directory {path:?}: {e}")))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zip_of(files: &[(&str, &[u8], Option<u32>)]) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, data, mode) in files {
            let mut options = zip::write::SimpleFileOptions::default();
            if let Some(mode) = mode {
                options = options.unix_permissions(*mode);
            }
            writer.start_file(*name, options).unwrap();
            writer.write_all(data).unwrap();
        }
        writer.finish().unwrap().into_inner()
    }

    fn entries(tar_bytes: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut archive = tar::Archive::new(tar_bytes);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = e.path().unwrap().to_string_lossy().into_owned();
                let mode = e.header().mode().unwrap();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (path, mode, data)
            })
            .collect()
    }

    #[test]
    fn files_land_under_task_with_the_entry_point_executable() {
        let zip = zip_of(&[
            ("run.sh", b"echo hi\n", Some(0o600)),
            ("lib/data.txt", b"data", None),
        ]);
        let tar = zip_to_layer_tar(&zip, Some("run.sh")).unwrap();
        let got = entries(&tar);
        assert_eq!(got[0].0, "task/");
        let run = got.iter().find(|e| e.0 == "task/run.sh").unwrap();
        assert_eq!(run.1 & 0o777, 0o755);
        assert_eq!(run.2, b"echo hi\n");
        let data = got.iter().find(|e| e.0 == "task/lib/data.txt").unwrap();
        assert_eq!(data.1 & 0o777, 0o644);
        assert_eq!(data.2, b"data");
    }

    #[test]
    fn escaping_entries_are_refused() {
        let zip = zip_of(&[("../evil", b"x", None)]);
        assert!(zip_to_layer_tar(&zip, None).is_err());
        assert!(zip_to_layer_tar(b"not a zip", None).is_err());
    }
}
