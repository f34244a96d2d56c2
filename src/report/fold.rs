//! The fold: each change's facts folded into evidence, judged, run through the rules and written
//! as rows; then the period's production versions no change explains, as UNLINKED_DEPLOY.

use super::csv::{self, Csv};
use super::json::{JsonChange, JsonOut};
use super::query::{self, Chunk, Index, PeriodVersion, VersionKey, version_key};
use super::{Ctx, Progress, Query, ReportError, Settings};
use crate::core::evidence::report::{
    self as core, ExceptionRow, LedgerSpan, PopulationRow, Rotation, Sampler, SpanTally, Tally,
};
use crate::core::evidence::rules;
use crate::core::evidence::{self, Evidence, VersionFact};
use crate::read::changes::{fetch_facts, fold_facts};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

/// Exceptions listed in report.html; the CSV and JSON always hold all of them.
const HTML_EXCEPTIONS: usize = 1000;

/// The files rows stream into, and what the summary gathers from them.
pub(super) struct RowWriter {
    population: Csv,
    exceptions: Csv,
    pub(super) json: JsonOut,
    pub(super) tally: Tally,
    /// The first exceptions, for the page a person reads.
    html: Vec<ExceptionRow>,
    exception_rows: u64,
}

impl RowWriter {
    /// population.csv, exceptions.csv and report.json under `work`, ready for rows.
    pub(super) fn create(work: &Path) -> Result<RowWriter, ReportError> {
        Ok(RowWriter {
            population: csv::create(work, "population.csv", &core::POPULATION_COLUMNS)?,
            exceptions: csv::create(work, "exceptions.csv", &core::EXCEPTION_COLUMNS)?,
            json: JsonOut::create(work)?,
            tally: Tally::new(),
            html: Vec::new(),
            exception_rows: 0,
        })
    }

    /// One row of exceptions.csv (and of the page, while it has room).
    pub(super) fn exception(&mut self, row: ExceptionRow) -> Result<(), ReportError> {
        self.exceptions
            .write_record(row.cells())
            .map_err(csv::err)?;
        self.tally.seqs(row.audit_seq_first, row.audit_seq_last);
        self.exception_rows += 1;
        if self.html.len() < HTML_EXCEPTIONS {
            self.html.push(row);
        }
        Ok(())
    }

    /// A change's population row, its report.json item and its exceptions.
    fn change(
        &mut self,
        ev: &Evidence,
        row: &PopulationRow,
        xs: &[rules::Exception],
        ledger: &LedgerSpan,
        cat: &core::Catalogue,
    ) -> Result<(), ReportError> {
        self.population
            .write_record(row.cells())
            .map_err(csv::err)?;
        self.json.item(&JsonChange {
            row,
            exceptions: xs.iter().collect(),
        })?;
        self.tally.change(ev, xs);
        self.tally.seqs(ledger.first_seq, ledger.last_seq);
        for x in xs {
            self.exception(ExceptionRow::new(
                cat,
                &ev.change.id,
                x,
                (ledger.first_seq, ledger.last_seq),
            ))?;
        }
        Ok(())
    }

    /// Flushes the CSV files; returns report.json (still open), the tally, the page's exceptions
    /// and the number of exception rows.
    pub(super) fn close(self) -> Result<(JsonOut, Tally, Vec<ExceptionRow>, u64), ReportError> {
        let RowWriter {
            mut population,
            mut exceptions,
            json,
            tally,
            html,
            exception_rows,
        } = self;
        population.flush()?;
        exceptions.flush()?;
        Ok((json, tally, html, exception_rows))
    }
}

/// The fold's own state: the index, the sample, the changes seen, which period versions they
/// explain, and the deploying credentials per service.
pub(super) struct Fold {
    ix: Index,
    pub(super) sampler: Option<Sampler>,
    processed: HashSet<String>,
    versions: Vec<PeriodVersion>,
    by_key: HashMap<VersionKey, Vec<usize>>,
    pub(super) rotation: Rotation,
    /// Each production change's deploy, for delivery.csv.
    pub(super) landings: Vec<crate::core::evidence::delivery::Landing>,
}

impl Fold {
    pub(super) fn new(ix: Index, versions: Vec<PeriodVersion>, query: &Query) -> Fold {
        let mut by_key: HashMap<VersionKey, Vec<usize>> = HashMap::new();
        for (i, (v, _, _)) in versions.iter().enumerate() {
            by_key
                .entry(version_key(&v.service, &v.environment, &v.version))
                .or_default()
                .push(i);
        }
        Fold {
            ix,
            sampler: query
                .sample
                .zip(query.seed.as_ref())
                .map(|(n, seed)| Sampler::new(n, seed)),
            processed: HashSet::new(),
            versions,
            by_key,
            rotation: Rotation::default(),
            landings: Vec::new(),
        }
    }

    /// Folds every chunk the reader sends: each change's evidence, its rules, its rows. Blocking
    /// (it waits on the channel), so it runs on a blocking thread.
    fn chunks(
        &mut self,
        out: &mut RowWriter,
        query: &Query,
        settings: &Settings,
        progress: &dyn Progress,
        mut chunks: tokio::sync::mpsc::Receiver<Result<Chunk, ReportError>>,
    ) -> Result<(), ReportError> {
        while let Some(chunk) = chunks.blocking_recv() {
            let mut chunk = chunk?;
            let facts = std::mem::take(&mut chunk.facts);
            let mut folded = fold_facts(facts, &settings.policy, &self.ix.rollbacks);
            for (ev, _) in &mut folded {
                evidence::judge(ev, &chunk.neighbours, &settings.judging);
            }
            for (ev, broken) in &folded {
                progress.advance(1);
                if !matches(query, ev) {
                    continue;
                }
                self.change(out, ev, broken, &chunk, settings)?;
            }
        }
        Ok(())
    }

    /// One change of the population: its rows, its place in the sample and the rotation table,
    /// and the period versions it explains.
    fn change(
        &mut self,
        out: &mut RowWriter,
        ev: &Evidence,
        broken: &[u64],
        chunk: &Chunk,
        settings: &Settings,
    ) -> Result<(), ReportError> {
        self.processed.insert(ev.change.id.clone());
        let (span, ledger) = cited(ev, chunk);
        let xs = crate::read::changes::exceptions(ev, broken, &settings.rules);
        self.rotation.change(ev);
        self.landings
            .extend(crate::core::evidence::delivery::Landing::of(ev));
        let row = PopulationRow::new(ev, &span, &ledger, &xs);
        out.change(ev, &row, &xs, &ledger, &settings.catalogue)?;
        if let Some(s) = self.sampler.as_mut() {
            s.offer(&row);
        }
        if let (Some(svc), Some(env), Some(ver)) = (
            &ev.change.service,
            &ev.change.environment,
            &ev.change.version,
        ) && let Some(vs) = self.by_key.get(&version_key(svc, env, ver))
        {
            for &i in vs {
                let (v, _, explained) = &mut self.versions[i];
                if !*explained && evidence::explains(ev, v, settings.tolerance_ns) {
                    *explained = true;
                }
            }
        }
        Ok(())
    }
}

/// The spans bound to a change and its runs, and the ledger entries that record them.
fn cited(ev: &Evidence, chunk: &Chunk) -> (SpanTally, LedgerSpan) {
    let mut span = SpanTally::default();
    let mut ledger = LedgerSpan::default();
    for s in std::iter::once(&ev.change.id).chain(ev.change.runs.iter()) {
        if let Some(t) = chunk.spans.get(s) {
            span.count += t.count;
            span.traces.extend(t.traces.iter().cloned());
        }
        if let Some(e) = chunk.entries.get(s) {
            ledger.entries += e.count;
            ledger.first_seq = Some(ledger.first_seq.map_or(e.first, |f| f.min(e.first)));
            if ledger.last_seq.is_none_or(|l| e.last > l) {
                ledger.last_seq = Some(e.last);
                ledger.last_leaf_hash = chunk.leaves.get(&e.last).map(|h| h.to_hex());
            }
        }
    }
    (span, ledger)
}

fn matches(q: &Query, e: &Evidence) -> bool {
    let c = &e.change;
    let eq = |want: &Option<String>, have: &Option<String>| {
        want.as_ref()
            .is_none_or(|w| have.as_ref().is_some_and(|h| h.eq_ignore_ascii_case(w)))
    };
    c.production && eq(&q.environment, &c.environment) && eq(&q.service, &c.service)
}

/// Folds the period's changes (`ids`) into `out`. Storage reads (and parsing the facts) for the
/// next chunks run in their own task while the fold works on a blocking thread: the two halves
/// use both cores once the verifier is done, and a report built by the API never holds a runtime
/// worker that OTLP ingest needs.
pub(super) async fn changes(
    ctx: &Ctx<'_>,
    ids: Vec<String>,
    mut fold: Fold,
    mut out: RowWriter,
    progress: Arc<dyn Progress>,
) -> Result<(Fold, RowWriter), ReportError> {
    let (_reader, chunks) = query::read_chunks(ctx.job.store, ids, ctx.size());
    let (query, settings) = (ctx.job.query.clone(), ctx.job.settings.clone());
    let folding = tokio::task::spawn_blocking(move || {
        fold.chunks(&mut out, &query, &settings, progress.as_ref(), chunks)
            .map(|()| (fold, out))
    });
    // If this future is dropped, the reader is aborted, the channel closes and the fold ends.
    folding
        .await
        .map_err(|e| ReportError::Other(format!("folding changes stopped: {e}")))?
}

/// The period's versions no change explains, into report.json's `unlinked_deploys` and
/// exceptions.csv; returns how many.
pub(super) async fn unlinked(
    ctx: &Ctx<'_>,
    fold: &Fold,
    out: &mut RowWriter,
) -> Result<u64, ReportError> {
    let mut unlinked = 0u64;
    for (v, seq, explained) in &fold.versions {
        if *explained || explained_outside(ctx, fold, v).await? {
            continue;
        }
        unlinked += 1;
        let x = rules::unlinked_deploy(v);
        out.json
            .item(&serde_json::json!({"version": v, "entry_seq": seq, "exception": &x}))?;
        out.tally.exception(x.code);
        out.exception(ExceptionRow::new(
            &ctx.job.settings.catalogue,
            "",
            &x,
            (Some(*seq), Some(*seq)),
        ))?;
    }
    Ok(unlinked)
}

/// A version the period's changes do not explain may still be explained by a change outside
/// it (requested before the period, deployed inside): those candidates, folded and judged.
async fn explained_outside(
    ctx: &Ctx<'_>,
    fold: &Fold,
    v: &VersionFact,
) -> Result<bool, ReportError> {
    let (store, settings, size) = (ctx.job.store, ctx.job.settings, ctx.size());
    let candidates: Vec<String> = fold
        .ix
        .deployers
        .get(&version_key(&v.service, &v.environment, &v.version))
        .map(|c| {
            c.iter()
                .filter(|c| !fold.processed.contains(*c))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let facts = fetch_facts(store, &candidates, size).await?;
    let mut folded = fold_facts(facts, &settings.policy, &fold.ix.rollbacks);
    crate::read::changes::judge_all(store, &mut folded, size, &settings.judging).await?;
    Ok(folded
        .iter()
        .any(|(ev, _)| evidence::explains(ev, v, settings.tolerance_ns)))
}
