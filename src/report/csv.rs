//! The CSV files: population.csv and exceptions.csv stream as the fold writes them (see
//! `fold::RowWriter`); controls.csv, rotation.csv, delivery.csv and sample.csv are written whole
//! at the end.

use super::ReportError;
use crate::core::evidence::report::{self as core, ControlResult, PopulationRow, Rotation};
use std::path::Path;

/// A CSV file being written.
pub(super) type Csv = csv::Writer<std::io::BufWriter<std::fs::File>>;

/// A CSV writer as reports/README.md promises: RFC 4180 quoting, CRLF, UTF-8.
pub(super) fn writer(path: &Path) -> Result<Csv, ReportError> {
    let f = std::fs::File::create(path)?;
    Ok(csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .quote_style(csv::QuoteStyle::Necessary)
        .from_writer(std::io::BufWriter::with_capacity(1 << 16, f)))
}

/// A CSV file under `work` with its header written.
pub(super) fn create(work: &Path, name: &str, header: &[&str]) -> Result<Csv, ReportError> {
    let mut w = writer(&work.join(name))?;
    w.write_record(header).map_err(err)?;
    Ok(w)
}

pub(super) fn err(e: csv::Error) -> ReportError {
    ReportError::Io(std::io::Error::other(e.to_string()))
}

/// A whole table: the header, then every row.
fn table<I, R>(work: &Path, name: &str, header: &[&str], rows: I) -> Result<(), ReportError>
where
    I: IntoIterator<Item = R>,
    R: IntoIterator,
    R::Item: AsRef<[u8]>,
{
    let mut w = create(work, name, header)?;
    for r in rows {
        w.write_record(r).map_err(err)?;
    }
    w.flush()?;
    Ok(())
}

/// controls.csv: one row per control of the catalogue.
pub(super) fn controls(work: &Path, controls: &[ControlResult]) -> Result<(), ReportError> {
    table(
        work,
        "controls.csv",
        &core::CONTROL_COLUMNS,
        controls.iter().map(ControlResult::cells),
    )
}

/// rotation.csv: one row per deploying credential.
pub(super) fn rotation(work: &Path, rotation: &Rotation) -> Result<(), ReportError> {
    table(
        work,
        "rotation.csv",
        &core::ROTATION_COLUMNS,
        rotation.rows().map(|r| r.cells()),
    )
}

/// delivery.csv: the four keys per service, then `*` for all of them (empty cells: no figure).
pub(super) fn delivery(
    work: &Path,
    d: &crate::core::evidence::delivery::Delivery,
) -> Result<(), ReportError> {
    use crate::core::evidence::delivery::Keys;
    let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
    let cells = |service: &str, k: &Keys| {
        vec![
            service.to_owned(),
            k.deployments.to_string(),
            format!("{:.3}", k.deployments_per_day),
            opt(k.lead_time_median_s),
            opt(k.lead_time_p90_s),
            k.landed.to_string(),
            k.failed.to_string(),
            k.change_failure_rate
                .map(|r| format!("{r:.3}"))
                .unwrap_or_default(),
            k.restored.to_string(),
            opt(k.time_to_restore_median_s),
            opt(k.time_to_restore_max_s),
        ]
    };
    table(
        work,
        "delivery.csv",
        &[
            "service",
            "deployments",
            "deployments_per_day",
            "lead_time_median_s",
            "lead_time_p90_s",
            "landed",
            "failed",
            "change_failure_rate",
            "restored",
            "time_to_restore_median_s",
            "time_to_restore_max_s",
        ],
        d.services
            .iter()
            .map(|(s, k)| cells(s, k))
            .chain(std::iter::once(cells("*", &d.all))),
    )
}

/// sample.csv: the drawn rows in draw order, each with its rank.
pub(super) fn sample(work: &Path, sample: &[(String, PopulationRow)]) -> Result<(), ReportError> {
    let mut header = vec!["draw", "rank"];
    header.extend(core::POPULATION_COLUMNS);
    table(
        work,
        "sample.csv",
        &header,
        sample.iter().enumerate().map(|(i, (rank, row))| {
            let mut cells = vec![(i + 1).to_string(), rank.clone()];
            cells.extend(row.cells());
            cells
        }),
    )
}
