//! The wall clock as the agent stamps its records and events: milliseconds
//! since the Unix epoch.

/// [`berth_core::time::now_millis`] as the agent's API carries times:
/// unsigned (a clock set before 1970 reads as 0).
pub fn now_ms() -> u64 {
    u64::try_from(berth_core::time::now_millis()).unwrap_or(0)
}
