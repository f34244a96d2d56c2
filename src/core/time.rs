//! RFC 3339 text to and from nanoseconds since the epoch. Pure: the clock itself is read only in
//! `crate::sys`.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Nanoseconds since the epoch as RFC 3339 UTC with second precision, e.g. `2026-11-24T06:18:12Z`
/// (`@<seconds>` for a time outside what RFC 3339 can write).
pub fn rfc3339(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("@{secs}"))
}

/// RFC 3339 (any offset, any precision) to nanoseconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_at_second_precision() {
        let ns = parse_rfc3339("2026-11-24T06:18:12.75+01:00").unwrap();
        assert_eq!(ns, 1_795_497_492_750_000_000);
        assert_eq!(rfc3339(ns), "2026-11-24T05:18:12Z");
        assert_eq!(parse_rfc3339("2026-11-24 06:18:12"), None);
        // Every i64 of nanoseconds (1677 to 2262) is a year RFC 3339 can write.
        assert_eq!(rfc3339(i64::MIN), "1677-09-21T00:12:43Z");
    }
}
