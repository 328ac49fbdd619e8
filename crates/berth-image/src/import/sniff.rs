//! Recognising compression by magic bytes, never by file name.

use crate::error::ImageError;
use oci_spec::image::MediaType;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

/// How a tar stream (a layer or a whole archive) is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The OCI media type of a layer blob compressed this way.
    pub(crate) fn layer_media_type(self) -> MediaType {
        match self {
            Compression::None => MediaType::ImageLayer,
            Compression::Gzip => MediaType::ImageLayerGzip,
            Compression::Zstd => MediaType::ImageLayerZstd,
        }
    }
}

/// Tells the compression of `head`, the first bytes of a stream.
pub(crate) fn sniff_bytes(head: &[u8]) -> Result<Compression, String> {
    const BZIP2_BLOCK: &[u8] = &[0x31, 0x41, 0x59, 0x26, 0x53, 0x59];
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Compression::Gzip)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Compression::Zstd)
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Err("xz compression is not supported (use gzip or zstd, or decompress it first)".into())
    } else if head.starts_with(b"BZh") && head.get(4..10) == Some(BZIP2_BLOCK) {
        Err("bzip2 compression is not supported (use gzip or zstd, or decompress it first)".into())
    } else {
        // Anything else is taken for a tar; the tar reader rejects garbage.
        Ok(Compression::None)
    }
}

/// Sniffs the file at `path`; `label` names it in errors.
pub(crate) fn sniff_path(path: &Path, label: &str) -> Result<Compression, ImageError> {
    let mut file = File::open(path).map_err(|e| ImageError::io_at("opening", path, e))?;
    let mut head = [0u8; 16];
    let mut filled = 0;
    while filled < head.len() {
        match file.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ImageError::io_at("reading", path, e)),
        }
    }
    if filled == 0 {
        return Err(ImageError::invalid_archive(label, "the file is empty"));
    }
    sniff_bytes(&head[..filled]).map_err(|reason| ImageError::invalid_archive(label, reason))
}

/// Wraps `reader` in the matching decompressor (gzip members and zstd frames
/// may be concatenated, as Go's readers allow).
pub(crate) fn decoder<'a, R: Read + 'a>(
    reader: R,
    compression: Compression,
    label: &str,
) -> Result<Box<dyn Read + 'a>, ImageError> {
    Ok(match compression {
        Compression::None => Box::new(BufReader::with_capacity(64 << 10, reader)),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::new(reader)
                .map_err(|e| ImageError::io(format!("starting zstd decoder for {label}"), e))?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_magic_bytes() {
        assert_eq!(sniff_bytes(&[0x1f, 0x8b, 8, 0]), Ok(Compression::Gzip));
        assert_eq!(
            sniff_bytes(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Ok(Compression::Zstd)
        );
        assert_eq!(sniff_bytes(b"etc/passwd\0\0\0"), Ok(Compression::None));
        assert!(sniff_bytes(&[0xfd, b'7', b'z', b'X', b'Z', 0, 0]).is_err());
        assert!(sniff_bytes(b"BZh91AY&SY").is_err());
        assert_eq!(sniff_bytes(b"BZhello-a-file"), Ok(Compression::None));
    }
}
