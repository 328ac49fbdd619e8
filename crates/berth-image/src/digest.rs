//! SHA-256 content addressing: digest strings and hashing readers.

use sha2::{Digest as _, Sha256};
use std::io::{self, Read};

/// The only digest algorithm the store writes and accepts.
pub(crate) const SHA256_PREFIX: &str = "sha256:";

/// Whether `s` is a lower-case hex SHA-256 (64 characters), i.e. safe to use
/// as a single path component.
pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The hex part of `sha256:<hex>`, or `None` for any other form.
pub(crate) fn sha256_hex_of(digest: &str) -> Option<&str> {
    digest
        .strip_prefix(SHA256_PREFIX)
        .filter(|hex| is_sha256_hex(hex))
}

/// `sha256:<hex>` for a hex digest.
pub(crate) fn prefixed(hex: &str) -> String {
    format!("{SHA256_PREFIX}{hex}")
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A shortened digest for messages (`sha256:0123456789ab`).
pub(crate) fn short(hex: &str) -> String {
    format!("{SHA256_PREFIX}{}", &hex[..hex.len().min(12)])
}

/// A reader that hashes and counts everything read through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Reads the rest of the stream (so the digest covers all of it, including
    /// what a tar reader leaves after the end-of-archive marker, and so that a
    /// decompressor verifies its trailing checksum), then returns the hex
    /// digest and the total byte count.
    pub(crate) fn finish(mut self) -> io::Result<(String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((hex::encode(self.hasher.finalize()), self.bytes))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// A reader that reports how many bytes went through it, at most every
/// [`ProgressReader::STEP`] bytes (and once at the end of the stream).
pub(crate) struct ProgressReader<'a, R> {
    inner: R,
    bytes: u64,
    reported: u64,
    report: &'a mut dyn FnMut(u64),
}

impl<'a, R: Read> ProgressReader<'a, R> {
    const STEP: u64 = 1 << 20;

    pub(crate) fn new(inner: R, report: &'a mut dyn FnMut(u64)) -> Self {
        ProgressReader {
            inner,
            bytes: 0,
            reported: 0,
            report,
        }
    }
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        if (n == 0 && self.reported != self.bytes) || self.bytes - self.reported >= Self::STEP {
            self.reported = self.bytes;
            (self.report)(self.bytes);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_parse_strictly() {
        let hex = "a".repeat(64);
        assert_eq!(sha256_hex_of(&format!("sha256:{hex}")), Some(hex.as_str()));
        assert_eq!(sha256_hex_of(&format!("sha512:{hex}")), None);
        assert_eq!(sha256_hex_of(&format!("sha256:{}", "A".repeat(64))), None);
        assert_eq!(sha256_hex_of("sha256:../../etc/passwd"), None);
        assert!(!is_sha256_hex(&"a".repeat(63)));
    }

    #[test]
    fn hashing_reader_covers_unread_tail() {
        let data = b"hello world";
        let mut r = HashingReader::new(&data[..]);
        let mut first = [0u8; 5];
        r.read_exact(&mut first).unwrap();
        let (hex, n) = r.finish().unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(hex, sha256_hex(data));
    }
}
