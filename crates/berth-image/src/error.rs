//! The one error type of the image store, classified by [`berth_core::ErrorCode`].
//!
//! Messages are written for the person at the terminal: they name the file or
//! archive entry involved and say why it was refused, so that nobody has to
//! rerun anything with debug logging to find out what went wrong.

use berth_core::{ErrorCode, HasErrorCode, ImageRef};
use std::io;
use std::path::{Path, PathBuf};

/// Why an image store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// No tag with that reference exists.
    #[error("image {reference} not found in the image store")]
    NotFound { reference: ImageRef },

    /// The import source is malformed or hostile; nothing was imported.
    #[error("invalid archive {archive}: {}{reason}", entry_prefix(.entry))]
    InvalidArchive {
        /// The archive (and layer, where it applies) being read.
        archive: String,
        /// The offending entry inside it, when one is to blame.
        entry: Option<String>,
        reason: String,
    },

    /// Something the store wrote earlier is missing or unreadable.
    #[error("image store is damaged at {}: {reason}", .path.display())]
    StoreCorrupt { path: PathBuf, reason: String },

    /// The image is leased by containers and removal was not forced.
    #[error(
        "image {reference} is in use by container(s) {}; remove those containers first or force the removal",
        .holders.join(", ")
    )]
    InUse {
        reference: ImageRef,
        holders: Vec<String>,
    },

    /// The request itself is wrong (missing source path, bad holder name).
    #[error("{reason}")]
    InvalidArgument { reason: String },

    /// The host failed an I/O operation (disk full, permission, EIO).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },

    /// An invariant of this crate did not hold; a bug.
    #[error("internal error in the image store: {reason}")]
    Internal { reason: String },
}

fn entry_prefix(entry: &Option<String>) -> String {
    match entry {
        Some(entry) => format!("entry {entry:?}: "),
        None => String::new(),
    }
}

impl ImageError {
    pub(crate) fn invalid_archive(archive: impl Into<String>, reason: impl Into<String>) -> Self {
        ImageError::InvalidArchive {
            archive: archive.into(),
            entry: None,
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid_entry(
        archive: impl Into<String>,
        entry: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        ImageError::InvalidArchive {
            archive: archive.into(),
            entry: Some(entry.into()),
            reason: reason.into(),
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        ImageError::StoreCorrupt {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: impl Into<io::Error>) -> Self {
        ImageError::Io {
            context: context.into(),
            source: source.into(),
        }
    }

    /// An I/O error on `path` while doing `action` ("reading", "creating", ...).
    pub(crate) fn io_at(action: &str, path: &Path, source: impl Into<io::Error>) -> Self {
        ImageError::Io {
            context: format!("{action} {}", path.display()),
            source: source.into(),
        }
    }

    pub(crate) fn invalid_argument(reason: impl Into<String>) -> Self {
        ImageError::InvalidArgument {
            reason: reason.into(),
        }
    }

    pub(crate) fn internal(reason: impl Into<String>) -> Self {
        ImageError::Internal {
            reason: reason.into(),
        }
    }
}

impl HasErrorCode for ImageError {
    fn code(&self) -> ErrorCode {
        match self {
            ImageError::NotFound { .. } => ErrorCode::ImageNotFound,
            ImageError::InvalidArchive { .. } => ErrorCode::InvalidArchive,
            ImageError::StoreCorrupt { .. } => ErrorCode::StoreCorrupt,
            ImageError::InUse { .. } => ErrorCode::ImageInUse,
            ImageError::InvalidArgument { .. } => ErrorCode::InvalidArgument,
            ImageError::Io { .. } => ErrorCode::HostIo,
            ImageError::Internal { .. } => ErrorCode::Internal,
        }
    }
}

/// Whether an OS error is the host's fault (full disk, broken device) rather
/// than something the archive asked for (a path that cannot exist, a link to
/// nothing). Decides between `host_io` and `invalid_archive` while unpacking.
pub(crate) fn is_host_fault(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(
            libc::ENOSPC
                | libc::EDQUOT
                | libc::EIO
                | libc::EROFS
                | libc::ENOMEM
                | libc::EMFILE
                | libc::ENFILE
                | libc::EFBIG
                | libc::EAGAIN
        )
    )
}

/// Classifies an error met while *reading* an archive stream: OS-level
/// failures of the host are `host_io`, everything else (bad gzip, truncated
/// tar, checksum mismatch) is the archive's fault.
pub(crate) fn read_error(archive: &str, entry: Option<&str>, err: io::Error) -> ImageError {
    if err.raw_os_error().is_some() {
        return ImageError::io(format!("reading {archive}"), err);
    }
    ImageError::InvalidArchive {
        archive: archive.to_owned(),
        entry: entry.map(str::to_owned),
        reason: read_error_reason(&err),
    }
}

/// Why a stream could not be read, in words (for `invalid_archive`).
fn read_error_reason(err: &io::Error) -> String {
    let detail = short_detail(err);
    match err.kind() {
        io::ErrorKind::UnexpectedEof => format!("data ends early (truncated archive?): {detail}"),
        _ => format!("corrupt or unreadable data: {detail}"),
    }
}

/// An error's text, cut short: parser messages may quote the garbage they met.
pub(crate) fn short_detail(err: &io::Error) -> String {
    let mut detail = err.to_string();
    if detail.len() > 160 {
        let cut = (0..=160)
            .rev()
            .find(|i| detail.is_char_boundary(*i))
            .unwrap_or(0);
        detail.truncate(cut);
        detail.push('…');
    }
    detail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_the_documented_code() {
        let r = ImageRef::parse("a:b").unwrap();
        let cases = [
            (
                ImageError::NotFound {
                    reference: r.clone(),
                },
                ErrorCode::ImageNotFound,
            ),
            (
                ImageError::invalid_archive("x", "y"),
                ErrorCode::InvalidArchive,
            ),
            (ImageError::corrupt("/p", "gone"), ErrorCode::StoreCorrupt),
            (
                ImageError::InUse {
                    reference: r,
                    holders: vec!["c1".into()],
                },
                ErrorCode::ImageInUse,
            ),
            (
                ImageError::invalid_argument("no"),
                ErrorCode::InvalidArgument,
            ),
            (
                ImageError::io("writing", io::Error::from_raw_os_error(libc::ENOSPC)),
                ErrorCode::HostIo,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code, "{err}");
        }
    }

    #[test]
    fn archive_messages_name_the_entry() {
        let err = ImageError::invalid_entry("/x.tar", "../etc/passwd", "path escapes the layer");
        assert_eq!(
            err.to_string(),
            "invalid archive /x.tar: entry \"../etc/passwd\": path escapes the layer"
        );
    }
}
