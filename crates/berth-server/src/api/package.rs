//! Validation of uploaded code packages (zip archives).
//!
//! A package is unpacked on agents, so it is checked whole here, once, at
//! upload: a package that would escape its directory, smuggle a link out of
//! it, expand into more than the host can hold, or that cannot be unpacked
//! as one tree (two entries of one name, a file that is also a directory)
//! is refused before it is stored, and the agents can trust what the store
//! hands them.
//!
//! Names are Linux paths: any byte but NUL is allowed in a component
//! (`a:b` and `C:` are ordinary names there), `/` separates components.
//! Refused: a leading `/`, a `..` component, empty components, and
//! backslashes (some unzip tools read them as separators).

use std::collections::{HashMap, HashSet};
use std::io::{Cursor, Read};

/// Most entries in a package.
pub const MAX_ENTRIES: usize = 10_000;
/// The total uncompressed size may be this many times `max_package_bytes`.
pub const EXPANSION_FACTOR: u64 = 4;

/// Why a package was refused. Each message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("the file is not a valid zip archive: {0}")]
    NotZip(String),
    #[error("the zip has {0} entries; at most {MAX_ENTRIES} are allowed")]
    TooManyEntries(usize),
    #[error("zip entry {0:?} has an absolute path")]
    Absolute(String),
    #[error("zip entry {0:?} has a '..' component")]
    ParentDir(String),
    #[error("zip entry {0:?} has an unusable name (backslash, NUL or empty component)")]
    BadName(String),
    #[error("zip entry {0:?} appears twice")]
    Duplicate(String),
    #[error(
        "the zip's central directory lists {records} entries but only {distinct} distinct names: \
         entry names must be unique"
    )]
    DuplicateRecords { records: usize, distinct: usize },
    #[error("zip entry {entry:?} puts a path under {file:?}, which is a file in the zip")]
    FileIsDirectory { entry: String, file: String },
    #[error("zip entry {0:?} is a symbolic link; packages may not contain links")]
    Symlink(String),
    #[error("zip entry {0:?} is not a regular file or directory")]
    Special(String),
    #[error("zip entry {0:?} is encrypted")]
    Encrypted(String),
    #[error("the zip expands to more than {0} bytes")]
    TooLarge(u64),
    #[error("zip entry {name:?} is corrupt: {detail}")]
    Corrupt { name: String, detail: String },
    #[error("file_name {0:?} is not a regular file in the zip")]
    MissingFile(String),
}

/// What a valid package holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageInfo {
    pub entries: usize,
    pub uncompressed_bytes: u64,
    /// Regular files' names (without a leading `./`).
    pub files: HashSet<String>,
}

/// Unix file-type bits of an entry's mode.
const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;

/// Checks every entry of `bytes` (decompressing all of them, so that a
/// lying size header or a bad CRC is caught) against the rules above.
/// `max_uncompressed` bounds the total expanded size.
pub fn validate(bytes: &[u8], max_uncompressed: u64) -> Result<PackageInfo, PackageError> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| PackageError::NotZip(e.to_string()))?;
    // The zip crate keys entries by name: of two records with one name it
    // keeps the last, and `len()` counts one. So the records are counted
    // (and their names compared) in the central directory itself.
    let records = central_directory_names(bytes, archive.central_directory_start());
    if records.len() > MAX_ENTRIES {
        return Err(PackageError::TooManyEntries(records.len()));
    }
    if records.len() < archive.len() {
        return Err(PackageError::NotZip(format!(
            "its central directory holds {} readable records for {} entries",
            records.len(),
            archive.len()
        )));
    }
    if records.len() > archive.len() {
        let mut seen = HashSet::new();
        if let Some(twice) = records.iter().find(|name| !seen.insert(**name)) {
            return Err(PackageError::Duplicate(
                String::from_utf8_lossy(twice).into_owned(),
            ));
        }
        // Distinct bytes that decode to one name (CP437 and UTF-8), or
        // more records than the directory's end record counts.
        return Err(PackageError::DuplicateRecords {
            records: records.len(),
            distinct: archive.len(),
        });
    }
    let mut names = HashSet::new();
    let mut files = HashSet::new();
    // Every directory the entries need (explicit ones and the parents of
    // every entry), each with the first entry that needs it.
    let mut dirs: HashMap<String, String> = HashMap::new();
    let mut total: u64 = 0;
    for index in 0..archive.len() {
        let mut entry = archive
            .by_index(index)
            .map_err(|e| PackageError::NotZip(format!("entry {index}: {e}")))?;
        let raw = entry.name().to_owned();
        let name = check_name(&raw)?;
        if !names.insert(name.trim_end_matches('/').to_owned()) {
            return Err(PackageError::Duplicate(raw));
        }
        if entry.encrypted() {
            return Err(PackageError::Encrypted(raw));
        }
        let is_dir = raw.ends_with('/');
        match entry.unix_mode().map(|mode| mode & S_IFMT) {
            None | Some(0) => {}
            Some(S_IFLNK) => return Err(PackageError::Symlink(raw)),
            Some(S_IFREG) if !is_dir => {}
            Some(S_IFDIR) if is_dir => {}
            Some(_) => return Err(PackageError::Special(raw)),
        }
        // Read at most what is still allowed, plus one byte to notice more.
        let budget = max_uncompressed.saturating_sub(total);
        let read = std::io::copy(
            &mut (&mut entry).take(budget.saturating_add(1)),
            &mut std::io::sink(),
        )
        .map_err(|e| PackageError::Corrupt {
            name: raw.clone(),
            detail: e.to_string(),
        })?;
        if read > budget {
            return Err(PackageError::TooLarge(max_uncompressed));
        }
        total += read;
        if is_dir && read > 0 {
            return Err(PackageError::Corrupt {
                name: raw,
                detail: "a directory entry has content".to_owned(),
            });
        }
        let path = name.trim_end_matches('/');
        for (at, _) in path.match_indices('/') {
            dirs.entry(path[..at].to_owned())
                .or_insert_with(|| raw.clone());
        }
        if is_dir {
            dirs.entry(path.to_owned()).or_insert_with(|| raw.clone());
        } else {
            files.insert(name);
        }
    }
    // A file that is also a directory cannot be unpacked: the agent would
    // refuse the package at every task.
    if let Some((file, entry)) = dirs
        .iter()
        .filter(|(dir, _)| files.contains(dir.as_str()))
        .min_by(|a, b| a.0.cmp(b.0))
    {
        return Err(PackageError::FileIsDirectory {
            entry: entry.clone(),
            file: file.clone(),
        });
    }
    Ok(PackageInfo {
        entries: archive.len(),
        uncompressed_bytes: total,
        files,
    })
}

/// The names of the central directory's file records from `start` on, as
/// stored (at most `MAX_ENTRIES + 1`: more is refused anyway). The walk
/// stops at the first thing that is not a whole record (the directory's
/// end record); the zip crate has already checked the archive's shape.
fn central_directory_names(bytes: &[u8], start: u64) -> Vec<&[u8]> {
    const SIGNATURE: &[u8] = b"PK\x01\x02";
    /// The fixed part of a central directory record.
    const FIXED: usize = 46;
    let u16_at = |at: usize| {
        bytes
            .get(at..at + 2)
            .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
    };
    let mut names = Vec::new();
    let Ok(mut at) = usize::try_from(start) else {
        return names;
    };
    while names.len() <= MAX_ENTRIES && bytes.get(at..at + 4) == Some(SIGNATURE) {
        let (Some(name_len), Some(extra_len), Some(comment_len)) =
            (u16_at(at + 28), u16_at(at + 30), u16_at(at + 32))
        else {
            break;
        };
        let name_start = at + FIXED;
        let Some(name) = bytes.get(name_start..name_start + name_len) else {
            break;
        };
        names.push(name);
        at = name_start + name_len + extra_len + comment_len;
    }
    names
}

/// Checks an entry name and returns it without a leading `./`.
///
/// Backslashes are refused rather than interpreted: some unzip tools treat
/// them as separators, so `..\x` could mean a traversal to one of them.
/// A colon is an ordinary character of a Linux file name (the packages are
/// unpacked on Linux only), so `a:b` and `C:/x` are relative names.
pub(crate) fn check_name(raw: &str) -> Result<String, PackageError> {
    if raw.starts_with('/') {
        return Err(PackageError::Absolute(raw.to_owned()));
    }
    if raw.contains('\\') || raw.contains('\0') {
        return Err(PackageError::BadName(raw.to_owned()));
    }
    let trimmed = raw.trim_end_matches('/');
    let mut parts = Vec::new();
    for (i, part) in trimmed.split('/').enumerate() {
        match part {
            ".." => return Err(PackageError::ParentDir(raw.to_owned())),
            "." if i == 0 => {}
            "" | "." => return Err(PackageError::BadName(raw.to_owned())),
            _ => parts.push(part),
        }
    }
    if parts.is_empty() {
        return Err(PackageError::BadName(raw.to_owned()));
    }
    let mut name = parts.join("/");
    if raw.ends_with('/') {
        name.push('/');
    }
    Ok(name)
}

/// `file_name` as entries are named (without a leading `./`).
pub fn normalize_file_name(file_name: &str) -> &str {
    file_name.strip_prefix("./").unwrap_or(file_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert_eq!(check_name("a/b.sh").unwrap(), "a/b.sh");
        assert_eq!(check_name("./a/").unwrap(), "a/");
        assert!(matches!(
            check_name("/etc/x"),
            Err(PackageError::Absolute(_))
        ));
        // A colon is a legal file-name character on Linux.
        assert_eq!(check_name("a:b").unwrap(), "a:b");
        assert_eq!(check_name("C:/x").unwrap(), "C:/x");
        assert_eq!(check_name("dir/12:30.log").unwrap(), "dir/12:30.log");
        assert!(matches!(
            check_name("a/../../x"),
            Err(PackageError::ParentDir(_))
        ));
        assert!(matches!(check_name(".."), Err(PackageError::ParentDir(_))));
        assert!(matches!(
            check_name("a\\..\\x"),
            Err(PackageError::BadName(_))
        ));
        assert!(matches!(check_name("a//b"), Err(PackageError::BadName(_))));
        assert!(matches!(check_name("./"), Err(PackageError::BadName(_))));
        assert!(matches!(check_name(""), Err(PackageError::BadName(_))));
    }
}
