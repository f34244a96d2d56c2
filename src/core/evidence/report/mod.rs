//! The SOC 2 report as plain data: the control catalogue, one population row per change, exception
//! rows, control results, the reproducible sample, the charts and the manifest's signing message.
//! The edge (`crate::report`) feeds it evidence from storage and writes the files.
//!
//! `controls` holds the catalogue and the control results, `rows` the population, exception and
//! rotation rows, `sample` the reproducible draw, `charts` the aggregates and their SVG charts.

mod charts;
mod controls;
mod rows;
mod sample;

pub use charts::{LEAD_TIME_BUCKETS, Tally, bar_chart, hbar_chart, week_of};
pub use controls::{CONTROL_COLUMNS, Catalogue, Control, ControlResult, control_results};
pub use rows::{
    EXCEPTION_COLUMNS, ExceptionRow, LedgerSpan, POPULATION_COLUMNS, PopulationRow,
    ROTATION_COLUMNS, Rotation, RotationRow, SpanTally,
};
pub use sample::{SAMPLE_METHOD, Sampler, sample_rank};

/// The catalogue shipped with the binary (`reports/soc2.toml`).
pub const SOC2_CATALOGUE: &str = include_str!("../../../../reports/soc2.toml");
/// The HTML template shipped with the binary (`reports/soc2.html`).
pub const SOC2_TEMPLATE: &str = include_str!("../../../../reports/soc2.html");

/// The format tag of the manifest; a change to any file's layout is a new version.
pub const MANIFEST_FORMAT: &str = "changetrail-report/v2";

/// The population's columns in a report of `format`: v1 (before the deploy gate) had no
/// `gate_*` columns. Reports already handed out keep verifying; an unknown format has none.
pub fn population_columns(format: &str) -> Option<Vec<&'static str>> {
    match format {
        MANIFEST_FORMAT => Some(POPULATION_COLUMNS.to_vec()),
        "changetrail-report/v1" => Some(
            POPULATION_COLUMNS
                .iter()
                .copied()
                .filter(|c| !c.starts_with("gate_"))
                .collect(),
        ),
        _ => None,
    }
}
/// Domain separation for the manifest signature (Ed25519 over this prefix and the manifest bytes).
pub const MANIFEST_SIG_CONTEXT: &[u8] = b"changetrail/report-manifest/v1\n";

/// What the manifest signature signs: the context string and the exact bytes of manifest.json.
pub fn manifest_message(manifest: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(MANIFEST_SIG_CONTEXT.len() + manifest.len());
    m.extend_from_slice(MANIFEST_SIG_CONTEXT);
    m.extend_from_slice(manifest);
    m
}

// ---------------------------------------------------------------------------------------------
// Cells.

/// UTC RFC 3339 with milliseconds (`2026-01-01T10:15:00.000Z`): approval and deploy times a second
/// apart must not print the same.
pub fn time_cell(ns: Option<i64>) -> String {
    let Some(ns) = ns else {
        return String::new();
    };
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns));
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| format!("@{ns}"))
}

/// A cell that a spreadsheet would run as a formula (`= + - @`, or a tab or carriage return that
/// some importers strip before looking) gets a leading apostrophe, the OWASP-recommended guard.
pub fn neutralise(cell: &str) -> std::borrow::Cow<'_, str> {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{cell}").into(),
        _ => cell.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_neutralised_and_others_left_alone() {
        for bad in ["=HYPERLINK(\"x\")", "+1", "-2+3", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(neutralise(bad), format!("'{bad}"));
        }
        for ok in ["alice@example.com", "CHG-1", "", "1.0-rc", "sha256:ab"] {
            assert_eq!(neutralise(ok), ok);
        }
    }

    #[test]
    fn times_are_utc_with_milliseconds() {
        assert_eq!(
            time_cell(Some(1_767_261_600_123_456_789)),
            "2026-01-01T10:00:00.123Z"
        );
        assert_eq!(time_cell(None), "");
    }
}

#[cfg(test)]
mod format_tests {
    use super::*;

    #[test]
    fn each_report_format_has_its_population_columns() {
        let v2 = population_columns(MANIFEST_FORMAT).unwrap();
        assert_eq!(v2, POPULATION_COLUMNS);
        let v1 = population_columns("changetrail-report/v1").unwrap();
        assert_eq!(v1.len(), POPULATION_COLUMNS.len() - 2);
        assert!(!v1.contains(&"gate_decision") && !v1.contains(&"gate_seq"));
        assert_eq!(v1[v1.len() - 5], "exception_codes");
        assert!(population_columns("changetrail-report/v9").is_none());
    }
}
