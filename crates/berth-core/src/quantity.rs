//! Resource quantities as users write them: `512m`, `1.5g`, `0.25` CPUs.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("{value:?} is not a size; use a number with an optional unit b, k, m, g or t (for example 512m)")]
    BadSize { value: String },
    #[error("{value:?} is not a CPU count; use a positive decimal such as 0.5 or 2")]
    BadCpus { value: String },
}

/// A number of bytes. Parses `1024`, `64k`, `512m`, `1.5g`, `2t` (binary units,
/// case-insensitive, optional trailing `b` / `ib`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const KIB: u64 = 1024;
    pub const MIB: u64 = 1024 * 1024;
    pub const GIB: u64 = 1024 * 1024 * 1024;

    pub fn bytes(self) -> u64 {
        self.0
    }

    pub fn mib(n: u64) -> Self {
        ByteSize(n * Self::MIB)
    }
}

impl FromStr for ByteSize {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || QuantityError::BadSize {
            value: s.to_owned(),
        };
        let lower = s.trim().to_ascii_lowercase();
        let body = lower
            .strip_suffix("ib")
            .or_else(|| lower.strip_suffix('b'))
            .unwrap_or(&lower);
        let (digits, multiplier) = match body.chars().last() {
            Some('k') => (&body[..body.len() - 1], Self::KIB),
            Some('m') => (&body[..body.len() - 1], Self::MIB),
            Some('g') => (&body[..body.len() - 1], Self::GIB),
            Some('t') => (&body[..body.len() - 1], Self::GIB * 1024),
            _ => (body, 1),
        };
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return Err(bad());
        }
        let value: f64 = digits.parse().map_err(|_| bad())?;
        let bytes = value * multiplier as f64;
        if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
            return Err(bad());
        }
        Ok(ByteSize(bytes.round() as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        let units = [(Self::GIB, "GiB"), (Self::MIB, "MiB"), (Self::KIB, "KiB")];
        for (size, unit) in units {
            if b >= size {
                let v = b as f64 / size as f64;
                return if b.is_multiple_of(size) {
                    write!(f, "{}{unit}", b / size)
                } else {
                    write!(f, "{v:.1}{unit}")
                };
            }
        }
        write!(f, "{b}B")
    }
}

/// A CPU allowance in thousandths of a CPU (`0.5` → 500).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CpuQuota(pub u32);

impl CpuQuota {
    pub fn millicpus(self) -> u32 {
        self.0
    }
}

impl FromStr for CpuQuota {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || QuantityError::BadCpus {
            value: s.to_owned(),
        };
        let t = s.trim();
        if t.is_empty() || !t.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return Err(bad());
        }
        let v: f64 = t.parse().map_err(|_| bad())?;
        let milli = (v * 1000.0).round();
        if !milli.is_finite() || milli < 0.0 || milli > u32::MAX as f64 {
            return Err(bad());
        }
        Ok(CpuQuota(milli as u32))
    }
}

impl fmt::Display for CpuQuota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0 as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        let cases = [
            ("1024", 1024),
            ("64k", 64 * 1024),
            ("512m", 512 << 20),
            ("512MiB", 512 << 20),
            ("1.5g", 3 << 29),
            ("2G", 2 << 30),
            ("10b", 10),
        ];
        for (text, bytes) in cases {
            assert_eq!(text.parse::<ByteSize>().unwrap().bytes(), bytes, "{text}");
        }
    }

    #[test]
    fn bad_sizes_are_refused() {
        for bad in ["", "m", "-1m", "1x", "1.2.3m", "12 34", "1e3"] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sizes_display_readably() {
        assert_eq!(ByteSize(512 << 20).to_string(), "512MiB");
        assert_eq!(ByteSize(1536 << 20).to_string(), "1.5GiB");
        assert_eq!(ByteSize(100).to_string(), "100B");
    }

    #[test]
    fn cpus_parse_to_millicpus() {
        assert_eq!("0.5".parse::<CpuQuota>().unwrap().millicpus(), 500);
        assert_eq!("2".parse::<CpuQuota>().unwrap().millicpus(), 2000);
        assert_eq!("0.001".parse::<CpuQuota>().unwrap().millicpus(), 1);
        for bad in ["", "-1", "one", "1,5"] {
            assert!(bad.parse::<CpuQuota>().is_err(), "{bad:?} accepted");
        }
    }
}
