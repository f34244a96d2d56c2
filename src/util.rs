//! Small edge helpers shared by the CLI and the API.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Now as RFC 3339 UTC with second precision, e.g. `2026-11-24T06:18:12Z`.
pub fn rfc3339_now() -> String {
    rfc3339(OffsetDateTime::now_utc().unix_timestamp_nanos() as i64)
}

/// Nanoseconds since the epoch as RFC 3339 UTC (seconds precision).
pub fn rfc3339(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("@{secs}"))
}

/// Parses RFC 3339 into nanoseconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .and_then(|t| i64::try_from(t.unix_timestamp_nanos()).ok())
}
