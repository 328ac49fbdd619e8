//! The running kernel's version, for features the runtime uses when the
//! kernel has them.

/// Whether the running kernel is at least `major.minor`.
pub fn at_least(major: u32, minor: u32) -> bool {
    let uname = rustix::system::uname();
    let release = uname.release().to_string_lossy();
    version(&release) >= (major, minor)
}

/// `(major, minor)` of a release string such as `6.18.44-fc-v1252`;
/// `(0, 0)` for what does not start with one.
fn version(release: &str) -> (u32, u32) {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let mut next = || parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let major = next();
    let minor = next();
    (major, minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_are_read_as_major_and_minor() {
        assert_eq!(version("6.18.44-fc-v1252"), (6, 18));
        assert_eq!(version("5.4.0-1-amd64"), (5, 4));
        assert_eq!(version("5.10"), (5, 10));
        assert_eq!(version("weird"), (0, 0));
        assert!(version("5.10.1") >= (5, 5));
        assert!(version("4.19.300") < (5, 5));
    }
}
