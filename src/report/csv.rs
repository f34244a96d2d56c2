//! The CSV files: population.csv and exceptions.csv stream as the fold writes them (see
//! `fold::RowWriter`); controls.csv, rotation.csv and sample.csv are written whole at the end.

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
