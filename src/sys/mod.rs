//! Process-wide services every edge may use: the wall clock and the operating system's random
//! generator (the only places either is read; `core` is handed times and bytes instead, and the
//! edges say in their imports where a clock is read), and the metrics registry.

pub mod metrics;

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock nanoseconds since the epoch: the time the sequencer stamps on entries.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Now as RFC 3339 UTC with second precision.
pub fn rfc3339_now() -> String {
    crate::core::time::rfc3339(now_ns())
}

/// Fresh random bytes (salts, key seeds, token secrets) from the operating system.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The OS generator failing leaves no safe fallback: salts and keys must be unpredictable.
    if let Err(e) = getrandom::fill(&mut b) {
        panic!("the operating system's random generator failed: {e}");
    }
    b
}
