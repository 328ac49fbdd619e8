//! Making sure the connection caps fit in the process's open-files limit,
//! with room left for the daemon's own work.

use rustix::process::{getrlimit, setrlimit, Resource};

/// File descriptors kept out of every connection budget: the store's
/// database files and connections, the dispatcher's connections to agents,
/// the agent's sockets to its shims, image files being read or unpacked.
/// Clients that fill every connection slot still leave these free.
pub const FD_RESERVE: u64 = 1024;

/// The open-files limit is too low for the connection caps asked for.
#[derive(Debug, thiserror::Error)]
#[error(
    "{connections} client connections and {reserve} descriptors kept for the daemon's own \
     work need an open-files limit of {needed}, but this process may open only {allowed} \
     (ulimit -n): lower --max-connections or raise the limit"
)]
pub struct FileLimitError {
    pub connections: u64,
    pub reserve: u64,
    pub needed: u64,
    pub allowed: u64,
}

/// Raises the soft open-files limit (up to the hard one) so that
/// `connections` client connections (the sum over every listener of the
/// process) plus [`FD_RESERVE`] fit; returns the limit now in force.
///
/// Checked once at start, so that a flood of clients meets the connection
/// cap, never "too many open files" in the dispatcher or the agent.
pub fn ensure_file_headroom(connections: u64) -> Result<u64, FileLimitError> {
    let needed = connections.saturating_add(FD_RESERVE);
    let mut limit = getrlimit(Resource::Nofile);
    // `None` is RLIM_INFINITY.
    let current = limit.current.unwrap_or(u64::MAX);
    if current >= needed {
        return Ok(current);
    }
    let maximum = limit.maximum.unwrap_or(u64::MAX);
    let raised = maximum.min(needed.max(current));
    if raised > current {
        limit.current = Some(raised);
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!("raising the open-files limit to {raised}: {e}");
        }
    }
    let now = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    if now >= needed {
        Ok(now)
    } else {
        Err(FileLimitError {
            connections,
            reserve: FD_RESERVE,
            needed,
            allowed: now,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headroom_that_fits_is_granted_and_too_much_is_refused() {
        let hard = getrlimit(Resource::Nofile).maximum.unwrap_or(u64::MAX);
        // Whatever the soft limit was, a budget below the hard one fits.
        if hard > FD_RESERVE + 16 {
            let granted = ensure_file_headroom(16).expect("16 connections fit");
            assert!(granted >= 16 + FD_RESERVE);
        }
        if hard < u64::MAX - FD_RESERVE {
            let err = ensure_file_headroom(hard).expect_err("more than the hard limit");
            assert_eq!(err.needed, hard + FD_RESERVE);
            assert!(err.allowed < err.needed);
            assert!(err.to_string().contains("--max-connections"), "{err}");
        }
    }
}
