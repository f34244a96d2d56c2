//! The ledger's own exceptions: what the verifier finds over the entries the checkpoint covers,
//! listed as EVIDENCE_GAP beside the changes' exceptions.

use super::ReportError;
use super::fold::RowWriter;
use crate::core::evidence::report::{Catalogue, ExceptionRow};
use crate::core::evidence::rules::{self, Exception};
use crate::core::ledger::verify::{Class, Options};
use crate::read::audit::verify_store;
use crate::storage::Store;

/// What verifying the ledger found, as the report states it.
pub(super) struct Verdict {
    /// The listed findings as exceptions, with the entry each names.
    pub(super) gaps: Vec<(Exception, Option<u64>)>,
    /// The verdict in words.
    pub(super) verdict: String,
    /// Findings past the verifier's per-class cap: counted, not listed.
    pub(super) suppressed: u64,
}

impl Verdict {
    /// Every finding, listed or not.
    pub(super) fn findings(&self) -> u64 {
        self.gaps.len() as u64 + self.suppressed
    }

    /// The ledger verified intact.
    pub(super) fn ok(&self) -> bool {
        self.gaps.is_empty() && self.suppressed == 0
    }
}

/// What the verifier's task answers.
pub(super) type Verified = Result<Verdict, ReportError>;

/// Verifies every entry the store holds, trusting the ledger's first key.
pub(super) async fn findings(store: &Store, now_ns: i64) -> Verified {
    let first_key = crate::read::audit::first_key(store).await?;
    let opts = Options {
        trusted: first_key.into_iter().collect(),
        state: None,
        // Freshness is not the report's question; completeness and integrity are.
        max_age_ns: None,
        now_ns,
        threads: 0,
    };
    let (report, _) = verify_store(store, opts, None)
        .await
        .map_err(|e| ReportError::Other(format!("verifying the ledger: {e}")))?;
    let (gaps, suppressed) = ledger_exceptions(&report);
    let verdict = if gaps.is_empty() {
        format!(
            "verified: {} entries, {} signatures, {} checkpoints; intact{}",
            report.summary.entries,
            report.summary.signatures,
            report.summary.checkpoints_valid,
            if report.summary.redacted > 0 {
                format!(
                    " ({} payloads erased by logged requests)",
                    report.summary.redacted
                )
            } else {
                String::new()
            }
        )
    } else {
        format!(
            "FAILED: {} findings over {} entries",
            gaps.len() as u64 + suppressed,
            report.summary.entries
        )
    };
    Ok(Verdict {
        gaps,
        verdict,
        suppressed,
    })
}

/// The verifier's findings as the report lists them (EVIDENCE_GAP, with the entry each names),
/// and how many more it counted without listing.
pub fn ledger_exceptions(
    report: &crate::core::ledger::verify::Report,
) -> (Vec<(Exception, Option<u64>)>, u64) {
    let found = report
        .findings
        .iter()
        .filter(|f| !matches!(f.class, Class::Redacted | Class::Unpinned))
        .map(|f| {
            (
                Exception {
                    code: rules::EVIDENCE_GAP,
                    evidence: format!("ledger {}: {}", f.class.as_str(), f.detail),
                },
                f.seq,
            )
        })
        .collect();
    (found, report.suppressed.values().sum())
}

/// The findings into report.json's `ledger_findings` and exceptions.csv; the unlisted ones
/// still count against the control.
pub(super) fn write(v: &Verdict, cat: &Catalogue, rows: &mut RowWriter) -> Result<(), ReportError> {
    for (x, seq) in &v.gaps {
        rows.json
            .item(&serde_json::json!({"entry_seq": seq, "exception": x}))?;
        rows.tally.exception(x.code);
        rows.exception(ExceptionRow::new(cat, "", x, (*seq, *seq)))?;
    }
    for _ in 0..v.suppressed {
        rows.tally.exception(rules::EVIDENCE_GAP);
    }
    Ok(())
}
