//! Row-level checks needing no ledger: counts, headers, cited sequence numbers inside the
//! checkpoint and the manifest's range, and the sample re-drawn from the seed. They also gather
//! the citations the ledger is asked about afterwards.

use super::Outcome;
use crate::core::evidence::report::{EXCEPTION_COLUMNS, population_columns, sample_rank};
use crate::report::Manifest;
use std::collections::BTreeSet;
use std::path::Path;

/// A row's cited entries, to look up in the ledger.
pub(super) struct Citation {
    pub(super) file: &'static str,
    pub(super) line: u64,
    /// The change and its runs: what the cited entries must be about.
    pub(super) subjects: Vec<String>,
    pub(super) first: Option<u64>,
    pub(super) last: Option<u64>,
    /// The leaf hash of the last entry, as the row states it.
    pub(super) last_hash: Option<String>,
}

/// Undoes `core::neutralise` for comparing a cell with ledger data.
pub(super) fn plain(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if rest.starts_with(['=', '+', '-', '@', '\t', '\r']) => rest,
        _ => cell,
    }
}

fn seq_cell(cell: &str) -> Result<Option<u64>, String> {
    if cell.is_empty() {
        return Ok(None);
    }
    cell.parse::<u64>()
        .map(Some)
        .map_err(|_| format!("{cell:?} is not a sequence number"))
}

/// Reads a CSV, checking its header; returns the records.
pub(super) fn read_csv(
    dir: &Path,
    name: &'static str,
    header: &[&str],
    out: &mut Outcome,
) -> Vec<csv::StringRecord> {
    let mut r = match csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(dir.join(name))
    {
        Ok(r) => r,
        Err(e) => {
            out.fail("MISSING_FILE", format!("{name}: {e}"));
            return Vec::new();
        }
    };
    match r.headers() {
        Ok(h) if h.iter().eq(header.iter().copied()) => {}
        Ok(h) => out.fail(
            "BAD_FORMAT",
            format!(
                "{name}: columns are {:?}, expected {header:?}",
                h.iter().collect::<Vec<_>>()
            ),
        ),
        Err(e) => out.fail("BAD_FORMAT", format!("{name}: {e}")),
    }
    let mut rows = Vec::new();
    for (i, rec) in r.records().enumerate() {
        match rec {
            Ok(rec) => rows.push(rec),
            Err(e) => out.fail("BAD_FORMAT", format!("{name} record {}: {e}", i + 1)),
        }
    }
    rows
}

/// Row-level checks needing no ledger: counts, headers, cited sequence numbers inside the
/// checkpoint and the manifest's range, and the sample re-drawn from the seed.
pub(super) fn check_rows(
    dir: &Path,
    m: &Manifest,
    out: &mut Outcome,
    citations: &mut Vec<Citation>,
) {
    let mut range = Range {
        size: m.ledger.checkpoint.size,
        lo: m.ledger.first_seq.unwrap_or(0),
        hi: m.ledger.last_seq.unwrap_or(0),
        ok: true,
    };
    let ids = population(dir, &m.format, &mut range, out, citations);
    let exceptions = exceptions(dir, &mut range, out, citations);
    let counts = [
        ("population.csv", ids.len() as u64, m.rows.population),
        ("exceptions.csv", exceptions, m.rows.exceptions),
    ];
    let mut counts_ok = true;
    for (name, have, want) in counts {
        if have != want {
            counts_ok = false;
            out.fail(
                "ROW_COUNT",
                format!("{name} has {have} rows, the manifest says {want}"),
            );
        }
    }
    let mut seen = BTreeSet::new();
    for id in &ids {
        if !seen.insert(id) {
            counts_ok = false;
            out.fail("ROW_COUNT", format!("population.csv lists {id} twice"));
        }
    }
    if counts_ok {
        out.ok(format!(
            "{} population rows and {} exception rows, as the manifest counts",
            ids.len(),
            exceptions
        ));
    }
    if range.ok {
        let Range { size, lo, hi, .. } = range;
        out.ok(format!(
            "every cited entry lies within {lo}..={hi}, below checkpoint size {size}"
        ));
    }
    sample(dir, m, &ids, out);
}

/// The entries a report may cite: below the checkpoint, within the manifest's range.
struct Range {
    size: u64,
    lo: u64,
    hi: u64,
    /// Every citation so far lies inside.
    ok: bool,
}

impl Range {
    /// A row's cited (first, last) entries, if both cells are sequence numbers; each one outside
    /// the range is a finding.
    fn cite(
        &mut self,
        file: &'static str,
        line: u64,
        first: Result<Option<u64>, String>,
        last: Result<Option<u64>, String>,
        out: &mut Outcome,
    ) -> Option<(Option<u64>, Option<u64>)> {
        let Range { size, lo, hi, .. } = *self;
        match (first, last) {
            (Ok(a), Ok(b)) => {
                for s in [a, b].into_iter().flatten() {
                    if s >= size || s < lo || s > hi {
                        self.ok = false;
                        out.fail(
                            "ROW_NOT_COVERED",
                            format!("{file} line {line}: entry {s} is outside the report's entries {lo}..={hi} (checkpoint size {size})"),
                        );
                    }
                }
                Some((a, b))
            }
            (Err(e), _) | (_, Err(e)) => {
                out.fail("BAD_FORMAT", format!("{file} line {line}: {e}"));
                None
            }
        }
    }
}

/// population.csv's citations; returns its change ids in row order.
fn population(
    dir: &Path,
    format: &str,
    range: &mut Range,
    out: &mut Outcome,
    citations: &mut Vec<Citation>,
) -> Vec<String> {
    let Some(columns) = population_columns(format) else {
        out.fail(
            "BAD_FORMAT",
            format!("manifest.json: unknown report format {format:?}"),
        );
        return Vec::new();
    };
    let pop = read_csv(dir, "population.csv", &columns, out);
    let col = |name: &str| columns.iter().position(|c| *c == name).unwrap_or(0);
    let (c_id, c_wf, c_first, c_last, c_hash) = (
        col("change_id"),
        col("workflow_id"),
        col("audit_seq_first"),
        col("audit_seq_last"),
        col("audit_last_entry_hash"),
    );
    let mut ids = Vec::with_capacity(pop.len());
    for (i, r) in pop.iter().enumerate() {
        let line = i as u64 + 2;
        let id = plain(r.get(c_id).unwrap_or_default()).to_owned();
        let mut subjects = vec![id.clone()];
        subjects.extend(
            plain(r.get(c_wf).unwrap_or_default())
                .split(';')
                .filter(|s| !s.is_empty())
                .map(String::from),
        );
        if let Some((first, last)) = range.cite(
            "population.csv",
            line,
            seq_cell(r.get(c_first).unwrap_or_default()),
            seq_cell(r.get(c_last).unwrap_or_default()),
            out,
        ) {
            citations.push(Citation {
                file: "population.csv",
                line,
                subjects,
                first,
                last,
                last_hash: Some(r.get(c_hash).unwrap_or_default().to_owned())
                    .filter(|h| !h.is_empty()),
            });
        }
        ids.push(id);
    }
    ids
}

/// exceptions.csv's citations; returns its number of rows.
fn exceptions(
    dir: &Path,
    range: &mut Range,
    out: &mut Outcome,
    citations: &mut Vec<Citation>,
) -> u64 {
    let exc = read_csv(dir, "exceptions.csv", &EXCEPTION_COLUMNS, out);
    for (i, r) in exc.iter().enumerate() {
        let line = i as u64 + 2;
        let change = plain(r.get(1).unwrap_or_default()).to_owned();
        if let Some((first, last)) = range.cite(
            "exceptions.csv",
            line,
            seq_cell(r.get(4).unwrap_or_default()),
            seq_cell(r.get(5).unwrap_or_default()),
            out,
        ) && !change.is_empty()
        {
            // The change's own row names its runs; its exceptions cite the same entries.
            let subjects = citations
                .iter()
                .find(|c| c.file == "population.csv" && c.subjects.first() == Some(&change))
                .map(|c| c.subjects.clone())
                .unwrap_or_else(|| vec![change.clone()]);
            citations.push(Citation {
                file: "exceptions.csv",
                line,
                subjects,
                first,
                last,
                last_hash: None,
            });
        }
    }
    exc.len() as u64
}

/// The sample, drawn again from the seed over the population's ids.
fn sample(dir: &Path, m: &Manifest, ids: &[String], out: &mut Outcome) {
    if let Some(s) = &m.sample {
        let mut ranked: Vec<(String, &String)> = ids
            .iter()
            .map(|id| (sample_rank(&s.seed, id), id))
            .collect();
        ranked.sort();
        let expect: Vec<&String> = ranked.iter().take(s.size).map(|(_, id)| *id).collect();
        let mut header = vec!["draw", "rank"];
        header.extend(population_columns(&m.format).unwrap_or_default());
        let drawn = read_csv(dir, "sample.csv", &header, out);
        let got: Vec<String> = drawn
            .iter()
            .map(|r| plain(r.get(2).unwrap_or_default()).to_owned())
            .collect();
        if got.iter().eq(expect.iter().copied()) && got.len() as u64 == m.rows.sample {
            out.ok(format!(
                "the sample of {} re-draws from seed {:?}",
                got.len(),
                s.seed
            ));
        } else {
            out.fail(
                "SAMPLE_MISMATCH",
                format!(
                    "sample.csv holds {got:?}; seed {:?} draws {expect:?}",
                    s.seed
                ),
            );
        }
    }
}
