//! GNU tar's PAX sparse files (formats 0.1 and 1.0), which the `tar` crate
//! hands over as ordinary files holding a map and the data chunks. Go's
//! archive/tar (and so Docker) expands them; so do we, keeping the holes.

use super::state::Unpacker;
use crate::error::{self, ImageError};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};

/// How a sparse entry's data maps onto the real file.
pub(super) struct Sparse {
    /// The real name (`GNU.sparse.name`); the entry's own is made up.
    pub name: Option<Vec<u8>>,
    pub real_size: u64,
    /// (offset, length) of each data chunk; `None` for format 1.0, whose map
    /// starts the entry's data.
    pub map: Option<Vec<(u64, u64)>>,
}

/// Upper bound on sparse map entries (each costs 16 bytes of memory).
const MAX_SPARSE_CHUNKS: u64 = 1 << 20;

impl Unpacker<'_> {
    /// Interprets `GNU.sparse.*` PAX records (formats 0.1 and 1.0; the
    /// ancient 0.0, with repeated records, is refused rather than misread).
    pub(super) fn sparse_info(
        &self,
        name: &str,
        mut fields: HashMap<String, Vec<u8>>,
    ) -> Result<Sparse, ImageError> {
        let number = |key: &str, value: Option<&Vec<u8>>| {
            value
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| {
                    self.fail(name, format!("missing or malformed PAX GNU.sparse.{key}"))
                })
        };
        let sparse_name = fields.remove("name");
        let version = (
            fields.get("major").map(Vec::as_slice),
            fields.get("minor").map(Vec::as_slice),
        );
        if version == (Some(&b"1"[..]), Some(&b"0"[..])) {
            return Ok(Sparse {
                name: sparse_name,
                real_size: number("realsize", fields.get("realsize"))?,
                map: None,
            });
        }
        let Some(map) = fields.get("map") else {
            return Err(self.fail(
                name,
                "old GNU sparse format 0.0 is not supported; recreate the archive without --sparse",
            ));
        };
        let real_size = number("size", fields.get("size").or(fields.get("realsize")))?;
        let numbers: Option<Vec<u64>> = std::str::from_utf8(map).ok().and_then(|m| {
            m.split(',')
                .filter(|n| !n.is_empty())
                .map(|n| n.parse().ok())
                .collect()
        });
        let numbers = numbers
            .filter(|n| n.len() % 2 == 0 && n.len() as u64 <= 2 * MAX_SPARSE_CHUNKS)
            .ok_or_else(|| self.fail(name, "malformed PAX GNU.sparse.map"))?;
        Ok(Sparse {
            name: sparse_name,
            real_size,
            map: Some(numbers.chunks(2).map(|c| (c[0], c[1])).collect()),
        })
    }

    /// Writes the chunks of a PAX sparse file at their offsets, leaving
    /// holes between them. Returns the number of data bytes written.
    pub(super) fn write_sparse<R: Read>(
        &mut self,
        name: &str,
        entry: &mut tar::Entry<'_, R>,
        file: &File,
        sparse: &Sparse,
    ) -> Result<u64, ImageError> {
        let label = self.label;
        let read_err = |e: io::Error| error::read_error(label, Some(name), e);
        let map = match &sparse.map {
            Some(map) => map.clone(),
            None => read_sparse_map(entry)
                .map_err(read_err)?
                .map_err(|reason| self.fail(name, reason))?,
        };
        let mut end = 0u64;
        for &(offset, length) in &map {
            let chunk_end = offset.checked_add(length);
            if offset < end || chunk_end.is_none_or(|e| e > sparse.real_size) {
                return Err(self.fail(name, "sparse map is out of order or exceeds the file size"));
            }
            end = offset + length;
        }
        let mut written = 0u64;
        for (offset, length) in map {
            let mut position = offset;
            let mut left = length;
            while left > 0 {
                let want = left.min(self.buf.len() as u64) as usize;
                let n = match entry.read(&mut self.buf[..want]) {
                    Ok(0) => return Err(self.fail(name, "sparse file data ends early")),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(read_err(e)),
                };
                std::os::unix::fs::FileExt::write_all_at(file, &self.buf[..n], position)
                    .map_err(|e| self.os(name, "writing the file", e))?;
                position += n as u64;
                left -= n as u64;
                written += n as u64;
            }
        }
        let mut probe = [0u8; 1];
        if entry.read(&mut probe).map_err(read_err)? != 0 {
            return Err(self.fail(name, "sparse file has more data than its map describes"));
        }
        file.set_len(sparse.real_size)
            .map_err(|e| self.os(name, "setting the file size", e))?;
        Ok(written)
    }
}

/// Reads the map at the start of a PAX sparse 1.0 file's data: decimal
/// numbers, one per line (the chunk count, then offset and length of each),
/// padded to a 512-byte block.
fn read_sparse_map<R: Read>(r: &mut R) -> io::Result<Result<Vec<(u64, u64)>, &'static str>> {
    let mut consumed = 0u64;
    let mut next_number = |r: &mut R| -> io::Result<Result<u64, &'static str>> {
        let mut digits = Vec::new();
        loop {
            let mut byte = [0u8; 1];
            if r.read(&mut byte)? == 0 {
                return Ok(Err("sparse map ends early"));
            }
            consumed += 1;
            match byte[0] {
                b'\n' => break,
                b @ b'0'..=b'9' if digits.len() < 20 => digits.push(b),
                _ => return Ok(Err("malformed sparse map")),
            }
        }
        Ok(std::str::from_utf8(&digits)
            .ok()
            .and_then(|d| d.parse().ok())
            .ok_or("malformed sparse map"))
    };
    let count = match next_number(r)? {
        Ok(count) if count <= MAX_SPARSE_CHUNKS => count,
        Ok(_) => return Ok(Err("sparse map has too many chunks")),
        Err(e) => return Ok(Err(e)),
    };
    let mut map = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let offset = match next_number(r)? {
            Ok(n) => n,
            Err(e) => return Ok(Err(e)),
        };
        let length = match next_number(r)? {
            Ok(n) => n,
            Err(e) => return Ok(Err(e)),
        };
        map.push((offset, length));
    }
    let padding = (512 - consumed % 512) % 512;
    let skipped = io::copy(&mut r.take(padding), &mut io::sink())?;
    if skipped != padding {
        return Ok(Err("sparse map ends early"));
    }
    Ok(Ok(map))
}
