//! Docker's default capability set, as a bit mask.

/// Capability numbers (linux/capability.h).
pub mod cap {
    pub const CHOWN: u32 = 0;
    pub const DAC_OVERRIDE: u32 = 1;
    pub const FOWNER: u32 = 3;
    pub const FSETID: u32 = 4;
    pub const KILL: u32 = 5;
    pub const SETGID: u32 = 6;
    pub const SETUID: u32 = 7;
    pub const SETPCAP: u32 = 8;
    pub const NET_BIND_SERVICE: u32 = 10;
    pub const NET_RAW: u32 = 13;
    pub const SYS_CHROOT: u32 = 18;
    pub const SYS_ADMIN: u32 = 21;
    pub const MKNOD: u32 = 27;
    pub const AUDIT_WRITE: u32 = 29;
    pub const SETFCAP: u32 = 31;
}

/// The capabilities a container's root user keeps (Docker's default list).
pub const DEFAULT_CAPS: &[u32] = &[
    cap::CHOWN,
    cap::DAC_OVERRIDE,
    cap::FOWNER,
    cap::FSETID,
    cap::KILL,
    cap::SETGID,
    cap::SETUID,
    cap::SETPCAP,
    cap::NET_BIND_SERVICE,
    cap::NET_RAW,
    cap::SYS_CHROOT,
    cap::MKNOD,
    cap::AUDIT_WRITE,
    cap::SETFCAP,
];

/// A set of capabilities as a 64-bit mask.
pub fn mask(caps: &[u32]) -> u64 {
    caps.iter().fold(0u64, |m, c| m | (1u64 << c))
}

/// The highest capability number the running kernel knows.
pub fn last_cap() -> u32 {
    crate::kernel_files::read(std::path::Path::new("/proc/sys/kernel/cap_last_cap"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_set_excludes_dangerous_caps() {
        let m = mask(DEFAULT_CAPS);
        assert_eq!(m.count_ones() as usize, DEFAULT_CAPS.len());
        assert_eq!(m & (1 << cap::SYS_ADMIN), 0);
        assert_ne!(m & (1 << cap::CHOWN), 0);
    }
}
