//! report.json, written as the rows stream: `{"format":…,"changes":[` first, each change as it is
//! folded, then the unlinked deploys and the ledger's findings, and the summary at the end.

use super::{Ctx, ReportError, Summary};
use crate::core::evidence::report::{self as core, PopulationRow, Rotation};
use crate::core::evidence::rules::Exception;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// report.json while it is written.
pub(super) struct JsonOut {
    w: std::io::BufWriter<std::fs::File>,
    /// No item yet in the current list.
    first: bool,
}

/// A change as report.json lists it: its population row and its exceptions.
#[derive(Serialize)]
pub(super) struct JsonChange<'a> {
    #[serde(flatten)]
    pub(super) row: &'a PopulationRow,
    pub(super) exceptions: Vec<&'a Exception>,
}

impl JsonOut {
    /// report.json under `work`, opened at its list of changes.
    pub(super) fn create(work: &Path) -> Result<JsonOut, ReportError> {
        let mut w = std::io::BufWriter::with_capacity(
            1 << 16,
            std::fs::File::create(work.join("report.json"))?,
        );
        w.write_all(b"{\"format\":\"")?;
        w.write_all(core::MANIFEST_FORMAT.as_bytes())?;
        w.write_all(b"\",\"report\":\"soc2\",\"changes\":[\n")?;
        Ok(JsonOut { w, first: true })
    }

    /// One more item of the current list.
    pub(super) fn item<T: Serialize>(&mut self, v: &T) -> Result<(), ReportError> {
        if !self.first {
            self.w.write_all(b",\n")?;
        }
        self.first = false;
        to_writer(&mut self.w, v)
    }

    /// Closes the current list and opens the list `name`.
    pub(super) fn section(&mut self, name: &str) -> Result<(), ReportError> {
        self.w.write_all(format!("\n],\"{name}\":[\n").as_bytes())?;
        self.first = true;
        Ok(())
    }

    /// Closes the last list and writes the tail: the controls, the summary, the rotation table
    /// and the sample.
    pub(super) fn finish(mut self, ctx: &Ctx<'_>, s: &Summary) -> Result<(), ReportError> {
        let (query, cat, period) = (ctx.job.query, &ctx.job.settings.catalogue, &ctx.period);
        let tally = &s.tally;
        let w = &mut self.w;
        w.write_all(b"\n],\"controls\":")?;
        to_writer(&mut *w, &s.controls)?;
        w.write_all(b",\"summary\":")?;
        to_writer(
            &mut *w,
            &serde_json::json!({
                "title": cat.title,
                "framework": cat.framework,
                "query": query,
                "selection": s.selection,
                "period_start": crate::core::time::rfc3339(period.from_ns),
                "period_end": crate::core::time::rfc3339(period.to_ns),
                "generated_at": s.generated_at,
                "changes": tally.changes,
                "by_kind": tally.by_kind,
                "changes_with_exceptions": tally.changes_with_exceptions,
                "exceptions": s.exceptions_total(),
                "exceptions_by_code": tally.exceptions_by_code,
                "unlinked_deploys": s.unlinked,
                "retried_deploys": tally.retried_deploys,
                "changes_per_week": tally.per_week,
                "approval_lead_time": lead_time(tally).into_iter().collect::<BTreeMap<_, _>>(),
                "ledger_verification": s.ledger.verdict,
            }),
        )?;
        w.write_all(b",\"rotation\":")?;
        to_writer(&mut *w, &s.rotation_summary)?;
        w.write_all(b",\"sample\":")?;
        to_writer(
            &mut *w,
            &s.sample
                .iter()
                .map(|(rank, r)| serde_json::json!({"rank": rank, "change_id": r.change_id}))
                .collect::<Vec<_>>(),
        )?;
        w.write_all(b"}\n")?;
        w.flush()?;
        Ok(())
    }
}

fn to_writer<T: Serialize + ?Sized>(w: impl Write, v: &T) -> Result<(), ReportError> {
    serde_json::to_writer(w, v).map_err(|e| ReportError::Other(e.to_string()))
}

/// Changes per approval lead-time bucket, labelled.
pub(super) fn lead_time(tally: &core::Tally) -> Vec<(String, u64)> {
    core::LEAD_TIME_BUCKETS
        .iter()
        .zip(&tally.lead_time)
        .map(|((l, _), n)| (l.to_string(), *n))
        .collect()
}

/// Per service: its deploying credentials, the changes they made, and how many made several.
pub(super) fn rotation_summary(rotation: &Rotation) -> Vec<serde_json::Value> {
    rotation
        .summary()
        .into_iter()
        .map(|(service, (credentials, changes, reused))| {
            serde_json::json!({
                "service": service,
                "credentials": credentials,
                "changes": changes,
                "credentials_on_several_changes": reused,
            })
        })
        .collect()
}
