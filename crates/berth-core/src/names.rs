//! Validated names: container ids and image references.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{kind} must not be empty")]
    Empty { kind: &'static str },
    #[error("{kind} {value:?} is too long (at most {max} characters)")]
    TooLong {
        kind: &'static str,
        value: String,
        max: usize,
    },
    #[error("{kind} {value:?} has a character that is not allowed ({allowed})")]
    BadCharacter {
        kind: &'static str,
        value: String,
        allowed: &'static str,
    },
}

fn check_name(
    kind: &'static str,
    value: &str,
    max: usize,
    allowed: &'static str,
    first_ok: impl Fn(char) -> bool,
    rest_ok: impl Fn(char) -> bool,
) -> Result<(), NameError> {
    let mut chars = value.chars();
    let Some(first) = chars.next() else {
        return Err(NameError::Empty { kind });
    };
    if value.len() > max {
        return Err(NameError::TooLong {
            kind,
            value: value.to_owned(),
            max,
        });
    }
    if !first_ok(first) || !chars.all(rest_ok) {
        return Err(NameError::BadCharacter {
            kind,
            value: value.to_owned(),
            allowed,
        });
    }
    Ok(())
}

/// A container id: 1–64 characters of `[A-Za-z0-9_.-]`, starting alphanumeric.
///
/// Ids become directory and cgroup names, so they can never contain `/` or
/// start with `.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ContainerId(String);

impl ContainerId {
    pub const MAX_LEN: usize = 64;

    pub fn new(value: impl Into<String>) -> Result<Self, NameError> {
        let value = value.into();
        check_name(
            "container id",
            &value,
            Self::MAX_LEN,
            "letters, digits, '_', '.', '-'; starting with a letter or digit",
            |c| c.is_ascii_alphanumeric(),
            |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'),
        )?;
        Ok(ContainerId(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ContainerId {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        ContainerId::new(value)
    }
}

impl From<ContainerId> for String {
    fn from(id: ContainerId) -> String {
        id.0
    }
}

impl FromStr for ContainerId {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ContainerId::new(s)
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An image reference `NAME[:TAG]` as stored in berth's image store.
///
/// The name is lower-case `[a-z0-9._/-]` (as in Docker, `/` separates path
/// components); the tag is `[A-Za-z0-9_.-]`, at most 128 characters, and
/// defaults to `latest`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ImageRef {
    name: String,
    tag: String,
}

/// On the wire an image reference is its `NAME[:TAG]` string.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for ImageRef {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <String as utoipa::PartialSchema>::schema()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for ImageRef {}

impl ImageRef {
    pub const DEFAULT_TAG: &'static str = "latest";

    pub fn parse(value: &str) -> Result<Self, NameError> {
        // A ':' after the last '/' separates the tag (a registry port such as
        // host:5000/name has its ':' before a '/').
        let last_slash = value.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match value[last_slash..].rfind(':') {
            Some(i) => (&value[..last_slash + i], &value[last_slash + i + 1..]),
            None => (value, Self::DEFAULT_TAG),
        };
        check_name(
            "image name",
            name,
            255,
            "lower-case letters, digits, '.', '_', '-', '/'; starting with a letter or digit",
            |c| c.is_ascii_lowercase() || c.is_ascii_digit(),
            |c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-' | '/'),
        )?;
        if name.ends_with('/') || name.contains("//") {
            return Err(NameError::BadCharacter {
                kind: "image name",
                value: name.to_owned(),
                allowed: "path components separated by single '/'",
            });
        }
        check_name(
            "image tag",
            tag,
            128,
            "letters, digits, '_', '.', '-'; starting with a letter, digit or '_'",
            |c| c.is_ascii_alphanumeric() || c == '_',
            |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'),
        )?;
        Ok(ImageRef {
            name: name.to_owned(),
            tag: tag.to_owned(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }
}

impl TryFrom<String> for ImageRef {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        ImageRef::parse(&value)
    }
}

impl From<ImageRef> for String {
    fn from(r: ImageRef) -> String {
        r.to_string()
    }
}

impl FromStr for ImageRef {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_are_path_safe() {
        assert!(ContainerId::new("web-1_a.b").is_ok());
        for bad in ["", ".hidden", "a/b", "../x", "a b", "-x", &"x".repeat(65)] {
            assert!(ContainerId::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn image_refs_default_to_latest() {
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!((r.name(), r.tag()), ("busybox", "latest"));
        let r = ImageRef::parse("library/debian:12.5-slim").unwrap();
        assert_eq!((r.name(), r.tag()), ("library/debian", "12.5-slim"));
        let r = ImageRef::parse("localhost:5000/app").unwrap_err();
        assert!(matches!(r, NameError::BadCharacter { .. }));
        assert_eq!(ImageRef::parse("a:b").unwrap().to_string(), "a:b");
    }

    #[test]
    fn bad_image_refs_are_refused() {
        for bad in [
            "", "Upper", "a:", ":tag", "a//b", "a/", "a:b:c", "a:-x", "../etc",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
