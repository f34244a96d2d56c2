//! The SOC 2 report: runs the catalogue in `reports/` through storage and the core's rules, and
//! writes population.csv, exceptions.csv, controls.csv, rotation.csv, report.json, report.html,
//! sample.csv and the signed manifest. Changes stream through in chunks, so memory does not grow
//! with the period.
//!
//! [`build`] runs the phases in order: [`query`] reads what the fold needs from storage (an
//! index of every change, the period's version sightings, then the changes in chunks); [`fold`]
//! turns each change's facts into evidence, exceptions and rows; [`ledger`] verifies the ledger
//! beside it; [`csv`], [`json`] and [`html`] write the files; [`sign`] hashes them into the
//! manifest the ledger's key signs. [`verify`] checks a finished report.

pub mod archive;
mod csv;
mod fold;
mod html;
mod json;
mod ledger;
mod manifest;
mod query;
mod sign;
pub mod verify;

pub use ledger::ledger_exceptions;
pub use manifest::{
    FILES, FileHash, Manifest, ManifestCheckpoint, ManifestLedger, ManifestSample,
    ManifestSettings, ManifestSig, OPTIONAL_FILES, Rows, hash_file,
};
pub use sign::write_manifest;

use crate::core::evidence::report::{
    self as core, Catalogue, ControlResult, ExceptionRow, PopulationRow, Rotation, Sampler, Tally,
};
use crate::core::evidence::rules::RuleContext;
use crate::core::evidence::{self, Policy};
use crate::core::ledger::hash::Hash;
use crate::core::ledger::keys::LedgerKey;
use crate::storage::{CheckpointRow, StorageError, Store};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a report could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{0}")]
    Invalid(String),
    #[error("the ledger has no checkpoint yet: nothing to build a report against")]
    NoCheckpoint,
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("writing the report: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

/// What the report is asked for (the manifest records it as the query).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    /// Period start (inclusive), RFC 3339.
    pub from: String,
    /// Period end (exclusive), RFC 3339.
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<String>,
}

/// A report date: `YYYY-MM-DD` (UTC midnight) or RFC 3339. `end` makes a bare date mean the end of
/// that day, so `--to 2026-06-30` includes June 30 as an auditor would read it.
pub fn parse_date(s: &str, end: bool) -> Result<i64, ReportError> {
    let s = s.trim();
    if let Some(ns) = crate::core::time::parse_rfc3339(s) {
        return Ok(ns);
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    let d = time::Date::parse(s, &fmt).map_err(|_| {
        ReportError::Invalid(format!(
            "{s:?} is not a date: use YYYY-MM-DD or an RFC 3339 time such as 2026-01-01T00:00:00Z"
        ))
    })?;
    let d = if end {
        d.next_day()
            .ok_or_else(|| ReportError::Invalid(format!("{s:?} is out of range")))?
    } else {
        d
    };
    let ns = d.midnight().assume_utc().unix_timestamp_nanos();
    i64::try_from(ns).map_err(|_| ReportError::Invalid(format!("{s:?} is out of range")))
}

/// The query with its dates resolved.
#[derive(Debug, Clone)]
pub struct Period {
    pub from_ns: i64,
    pub to_ns: i64,
}

impl Query {
    pub fn period(&self) -> Result<Period, ReportError> {
        let p = Period {
            from_ns: parse_date(&self.from, false)?,
            to_ns: parse_date(&self.to, true)?,
        };
        if p.from_ns >= p.to_ns {
            return Err(ReportError::Invalid(format!(
                "the period is empty: {} is not before {}",
                self.from, self.to
            )));
        }
        if self.sample.is_some() != self.seed.is_some() {
            return Err(ReportError::Invalid(
                "--sample N and --seed S go together, so the sample can be drawn again".into(),
            ));
        }
        if self.sample == Some(0) {
            return Err(ReportError::Invalid("--sample must be at least 1".into()));
        }
        Ok(p)
    }
}

/// What the report takes from configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub policy: Policy,
    pub tolerance_ns: i64,
    pub rules: RuleContext,
    /// Receipts, lateness, bound approval tokens.
    pub judging: evidence::Settings,
    pub catalogue: Catalogue,
    /// SHA-256 (hex) of the catalogue text, recorded in the manifest.
    pub catalogue_sha256: String,
    pub template: String,
}

impl Settings {
    pub fn new(
        policy: Policy,
        tolerance_ns: i64,
        rules: RuleContext,
        judging: evidence::Settings,
        catalogue_text: &str,
    ) -> Result<Settings, ReportError> {
        Ok(Settings {
            policy,
            tolerance_ns,
            rules,
            judging,
            catalogue: Catalogue::parse(catalogue_text).map_err(ReportError::Invalid)?,
            catalogue_sha256: Hash::of(&[catalogue_text.as_bytes()]).to_hex(),
            template: core::SOC2_TEMPLATE.to_owned(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Building.

/// One report to build: from which store, signed by which key, asked what, written where.
#[derive(Clone, Copy)]
pub struct Job<'a> {
    pub store: &'a Store,
    pub key: &'a LedgerKey,
    pub query: &'a Query,
    pub settings: &'a Settings,
    /// The directory to create; it must not exist or be empty.
    pub out: &'a Path,
    /// When the report says it was generated (and the ledger verifier's now).
    pub now_ns: i64,
}

/// How far the fold over the period's changes is (in changes), for whoever watches.
pub use crate::read::{NoProgress, Progress};

/// What a finished report says, for the command's summary.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub controls: Vec<ControlResult>,
    pub exceptions_by_code: BTreeMap<String, u64>,
}

/// Builds the report into `job.out` (created; it must not exist or be empty). The files are
/// written into a sibling directory first and moved into place at the end, so `out` never holds
/// half a report.
pub async fn build(job: Job<'_>, progress: Arc<dyn Progress>) -> Result<Outcome, ReportError> {
    let out = job.out;
    let period = job.query.period()?;
    if out.exists()
        && std::fs::read_dir(out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(ReportError::Invalid(format!(
            "{} exists and is not empty; choose a new directory",
            out.display()
        )));
    }
    let checkpoint = job
        .store
        .latest_checkpoint()
        .await?
        .ok_or(ReportError::NoCheckpoint)?;
    // The integrity check reads every entry; it runs beside the fold (its signature checks use
    // the other cores) instead of before it. A failed build stops it.
    let verifying = AbortOnDrop({
        let store = job.store.clone();
        tokio::spawn(async move { ledger::findings(&store, job.now_ns).await })
    });

    let work = partial_dir(out);
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    std::fs::create_dir_all(&work)?;
    let ctx = Ctx {
        job,
        period,
        checkpoint,
        work,
    };
    // A failed build leaves nothing behind.
    let (manifest, controls, exceptions_by_code) =
        match write_files(&ctx, progress, verifying).await {
            Ok(done) => done,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&ctx.work);
                return Err(e);
            }
        };
    if out.exists() {
        std::fs::remove_dir(out)?;
    }
    std::fs::rename(&ctx.work, out)?;
    Ok(Outcome {
        dir: out.to_owned(),
        manifest,
        controls,
        exceptions_by_code,
    })
}

/// The job with what `build` resolved: the period, the checkpoint the report is built against,
/// and the directory the files are written into.
struct Ctx<'a> {
    job: Job<'a>,
    period: Period,
    checkpoint: CheckpointRow,
    work: PathBuf,
}

impl Ctx<'_> {
    fn size(&self) -> u64 {
        self.checkpoint.size
    }

    /// The selection in words, as the manifest and the summaries state it.
    fn selection(&self) -> String {
        let (query, settings) = (self.job.query, self.job.settings);
        format!(
            "every change with a change.requested fact timed or received in [{}, {}) and recorded by an entry below checkpoint size {}, \
             in a production environment ({}){}{}; facts of later entries are not included",
            crate::core::time::rfc3339(self.period.from_ns),
            crate::core::time::rfc3339(self.period.to_ns),
            self.size(),
            settings.policy.production_environments.join(", "),
            query
                .environment
                .as_ref()
                .map(|e| format!(", environment {e}"))
                .unwrap_or_default(),
            query
                .service
                .as_ref()
                .map(|s| format!(", service {s}"))
                .unwrap_or_default(),
        )
    }
}

/// Aborts the task when dropped (an early error must not leave the verifier running).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the files written after the rows state: report.json's tail, report.html and the
/// manifest.
struct Summary {
    selection: String,
    generated_at: String,
    tally: Tally,
    /// Production versions no change explains.
    unlinked: u64,
    ledger: ledger::Verdict,
    controls: Vec<ControlResult>,
    rotation: Rotation,
    /// One line per service: its credentials, the changes they made, and the reused ones.
    rotation_summary: Vec<serde_json::Value>,
    sample: Vec<(String, PopulationRow)>,
    /// The first exceptions, for the page a person reads.
    html_exceptions: Vec<ExceptionRow>,
    exception_rows: u64,
    delivery: Delivery,
}

/// The four keys of the population, with what the page charts of them.
struct Delivery {
    keys: crate::core::evidence::delivery::Delivery,
    per_week: Vec<(String, u64)>,
    lead: Vec<(String, u64)>,
}

impl Summary {
    fn exceptions_total(&self) -> u64 {
        self.tally.exceptions_by_code.values().sum()
    }
}

/// Writes every file of the report into `ctx.work`; returns the manifest, the control results
/// and the exception counts.
async fn write_files(
    ctx: &Ctx<'_>,
    progress: Arc<dyn Progress>,
    mut verifying: AbortOnDrop<ledger::Verified>,
) -> Result<(Manifest, Vec<ControlResult>, BTreeMap<String, u64>), ReportError> {
    let (job, size) = (ctx.job, ctx.size());
    let clock = std::time::Instant::now();
    let phase = |what: &str| {
        tracing::debug!(
            phase = what,
            secs = clock.elapsed().as_secs_f64(),
            "Report phase done."
        )
    };
    // Version sightings are read beside the index (another connection, another core).
    let mut reading_versions = AbortOnDrop(tokio::spawn(query::period_versions(
        job.store.clone(),
        size,
        ctx.period.clone(),
        job.query.clone(),
        job.settings.policy.clone(),
    )));
    let (ix, ids) = query::index(job.store, size, &ctx.period).await?;
    phase("index");
    progress.set_length(ids.len() as u64);
    let versions = (&mut reading_versions.0)
        .await
        .map_err(|e| ReportError::Other(format!("reading version sightings stopped: {e}")))??;
    phase("versions");

    let rows = fold::RowWriter::create(&ctx.work)?;
    let fold = fold::Fold::new(ix, versions, job.query);
    let (fold, mut rows) = fold::changes(ctx, ids, fold, rows, progress).await?;
    phase("changes");
    rows.json.section("unlinked_deploys")?;
    let unlinked = fold::unlinked(ctx, &fold, &mut rows).await?;
    phase("unlinked");
    rows.json.section("ledger_findings")?;
    let verdict = (&mut verifying.0)
        .await
        .map_err(|e| ReportError::Other(format!("ledger verification stopped: {e}")))??;
    ledger::write(&verdict, &job.settings.catalogue, &mut rows)?;
    let (json, tally, html_exceptions, exception_rows) = rows.close()?;
    phase("ledger verified");

    let controls = core::control_results(
        &job.settings.catalogue,
        &tally.exceptions_by_code,
        tally.changes,
        size,
        &job.settings.rules.untested_codes(),
    );
    csv::controls(&ctx.work, &controls)?;
    csv::rotation(&ctx.work, &fold.rotation)?;
    let (from, to) = (ctx.period.from_ns, ctx.period.to_ns);
    let delivery = Delivery {
        keys: crate::core::evidence::delivery::four_keys(&fold.landings, from, to),
        per_week: crate::core::evidence::delivery::deployments_per_week(&fold.landings, from, to),
        lead: crate::core::evidence::delivery::lead_time_buckets(&fold.landings, from, to),
    };
    csv::delivery(&ctx.work, &delivery.keys)?;
    let sample = fold.sampler.map(Sampler::finish).unwrap_or_default();
    csv::sample(&ctx.work, &sample)?;

    let summary = Summary {
        selection: ctx.selection(),
        generated_at: crate::core::time::rfc3339(job.now_ns),
        tally,
        unlinked,
        ledger: verdict,
        controls,
        rotation_summary: json::rotation_summary(&fold.rotation),
        rotation: fold.rotation,
        sample,
        html_exceptions,
        exception_rows,
        delivery,
    };
    json.finish(ctx, &summary)?;
    html::write(ctx, &summary)?;
    let manifest = sign::manifest(ctx, &summary)?;
    write_manifest(&ctx.work, &manifest, job.key)?;
    Ok((manifest, summary.controls, summary.tally.exceptions_by_code))
}

fn partial_dir(out: &Path) -> PathBuf {
    let mut p = out.as_os_str().to_owned();
    p.push(".partial");
    PathBuf::from(p)
}
