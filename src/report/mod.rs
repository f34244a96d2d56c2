//! The SOC 2 report: runs the catalogue in `reports/` through storage and the core's rules, and
//! writes population.csv, exceptions.csv, controls.csv, report.json, report.html, sample.csv and
//! the signed manifest. Changes stream through in chunks, so memory does not grow with the period.

pub mod archive;
pub mod verify;

use crate::core::evidence::report::{
    self as core, Catalogue, ControlResult, ExceptionRow, LedgerSpan, PopulationRow, Rotation,
    Sampler, SpanTally, Tally,
};
use crate::core::evidence::rules::{self, Exception, RuleContext};
use crate::core::evidence::{self, Evidence, Neighbours, Policy, VersionFact};
use crate::core::ledger::hash::Hash;
use crate::core::ledger::keys::LedgerKey;
use crate::core::ledger::verify::{Class, Options};
use crate::read::audit::verify_store;
use crate::read::changes::{ChangeFacts, Rollbacks, fetch_facts, fold_facts};
use crate::storage::{StorageError, Store};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Changes folded per round trip: large enough to amortise the queries, small enough that a
/// chunk's facts stay a few megabytes.
const CHUNK: usize = 400;
/// Exceptions listed in report.html; the CSV and JSON always hold all of them.
const HTML_EXCEPTIONS: usize = 1000;

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
// The manifest.

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHash {
    pub name: String,
    pub sha256: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestCheckpoint {
    pub size: u64,
    pub root: String,
    /// The signed note itself, so the report can be checked against it offline.
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestLedger {
    pub origin: String,
    pub key_id: String,
    pub vkey: String,
    pub checkpoint: ManifestCheckpoint,
    /// The lowest and highest entry sequence numbers any row cites.
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// The verifier's verdict over every entry the checkpoint covers.
    pub verification: String,
    pub findings: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestSample {
    pub size: usize,
    pub seed: String,
    pub method: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rows {
    pub population: u64,
    pub exceptions: u64,
    pub controls: u64,
    pub sample: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestSettings {
    pub production_environments: Vec<String>,
    pub deploy_task_types: Vec<String>,
    pub approval_task_types: Vec<String>,
    pub approver_roles: Vec<String>,
    pub emergency_review_window: String,
    pub version_match_tolerance: String,
    pub catalogue_sha256: String,
    /// Per-service approver roles (`[[reports.approvers]]`).
    #[serde(default)]
    pub approvers: Vec<crate::core::evidence::rules::ApproverRule>,
    /// The judging settings, in nanoseconds, so a verifier re-derives with exactly these (absent
    /// in reports made before re-derivation).
    #[serde(default)]
    pub receipt_tolerance_ns: Option<i64>,
    #[serde(default)]
    pub max_lateness_ns: Option<i64>,
    #[serde(default)]
    pub require_bound_approvals: Option<bool>,
    #[serde(default)]
    pub version_match_tolerance_ns: Option<i64>,
    #[serde(default)]
    pub emergency_review_window_ns: Option<i64>,
}

/// manifest.json: what was asked, against which checkpoint, and the hash of every file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub report: String,
    pub title: String,
    pub query: Query,
    /// The selection in words (AT-C 205.36: the query used to produce the population).
    pub selection: String,
    pub period_start: String,
    pub period_end: String,
    pub generated_at: String,
    pub software: String,
    pub ledger: ManifestLedger,
    pub settings: ManifestSettings,
    pub rows: Rows,
    pub sample: Option<ManifestSample>,
    pub files: Vec<FileHash>,
}

/// manifest.sig: a detached Ed25519 signature over `core::manifest_message(manifest.json)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestSig {
    pub format: String,
    pub key_id: String,
    /// Informational: a verifier uses the key it pinned, never this one.
    pub vkey: String,
    pub signature: String,
}

pub const FILES: [&str; 7] = [
    "population.csv",
    "exceptions.csv",
    "controls.csv",
    "rotation.csv",
    "report.json",
    "report.html",
    "sample.csv",
];

// ---------------------------------------------------------------------------------------------
// Building.

/// What a finished report says, for the command's summary.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub controls: Vec<ControlResult>,
    pub exceptions_by_code: BTreeMap<String, u64>,
}

/// What the report needs about the ledger's changes beyond the period's own.
struct Index {
    /// rollback_of value → the changes naming it.
    rollbacks: Rollbacks,
    /// (service, environment lowercased, version) → changes that declared deploying it.
    deployers: HashMap<(String, String, String), BTreeSet<String>>,
}

fn version_key(service: &str, env: &str, version: &str) -> (String, String, String) {
    (
        service.to_owned(),
        env.to_ascii_lowercase(),
        version.to_owned(),
    )
}

/// The fields of a stored change.requested or version.observed fact that the index needs, read
/// flat: `FactRecord`'s flattened, tagged layout makes serde buffer each fact and parse it twice.
#[derive(Deserialize)]
struct FactHead {
    #[serde(default)]
    change_id: Option<String>,
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    environment: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    first_seen_ns: Option<i64>,
    #[serde(default)]
    trace_id: Option<String>,
    #[serde(default)]
    previous: Option<String>,
}

/// Production versions first seen in the period (and the filters), each with the entry that
/// records it, by first sighting.
async fn period_versions(
    store: Store,
    size: u64,
    period: Period,
    query: Query,
    policy: Policy,
) -> Result<Vec<(VersionFact, u64, bool)>, ReportError> {
    let mut versions = Vec::new();
    let in_period = |t: i64| t >= period.from_ns && t < period.to_ns;
    for (payload, seq, received_ns) in store.facts_of_kind("version.observed", size).await? {
        let Ok(FactHead {
            service: Some(service),
            environment: Some(environment),
            version: Some(version),
            first_seen_ns: Some(first_seen_ns),
            trace_id,
            previous,
            ..
        }) = serde_json::from_str::<FactHead>(&payload)
        else {
            continue;
        };
        let in_scope = policy.is_production(&environment)
            && (in_period(first_seen_ns) || in_period(received_ns))
            && query
                .environment
                .as_ref()
                .is_none_or(|e| e.eq_ignore_ascii_case(&environment))
            && query.service.as_ref().is_none_or(|s| s == &service);
        if in_scope {
            let v = VersionFact {
                service,
                environment,
                version,
                first_seen_ns,
                trace_id,
                previous,
            };
            versions.push((v, seq, false));
        }
    }
    // Stored order is arbitrary; the report lists unlinked deploys by first sighting.
    versions.sort_by_key(|(v, seq, _)| (v.first_seen_ns, *seq));
    Ok(versions)
}

/// The index, and the ids of the changes requested in the period (sorted). Only what is small
/// crosses from storage: ids and times of every change, the few that roll something back, and
/// the changes outside the period (which may explain a version first seen inside it; a change
/// inside the period is checked against the versions as it is folded).
async fn index(
    store: &Store,
    size: u64,
    period: &Period,
) -> Result<(Index, Vec<String>), ReportError> {
    let mut in_period = BTreeSet::new();
    let mut ix = Index {
        rollbacks: HashMap::new(),
        deployers: HashMap::new(),
    };
    let inside = |t: i64| t >= period.from_ns && t < period.to_ns;
    for (change_id, _, time_ns, received_ns) in store.change_heads(size).await? {
        // By the time it states, or by when it arrived: history sent late into a closed period
        // shows in the period it arrived in too.
        if let Some(c) = &change_id
            && (inside(time_ns) || inside(received_ns))
        {
            in_period.insert(c.clone());
        }
    }
    let heads = |payload: &str| serde_json::from_str::<FactHead>(payload).ok();
    let subject = |f: &FactHead| {
        f.change_id
            .clone()
            .or_else(|| f.run_id.clone())
            .unwrap_or_default()
    };
    ix.rollbacks = crate::read::changes::rollback_index(store, size).await?;
    let outside = store
        .change_facts_outside(period.from_ns, period.to_ns, size)
        .await?;
    for f in outside.iter().filter_map(|p| heads(p)) {
        if let (Some(s), Some(e), Some(v)) = (&f.service, &f.environment, &f.version) {
            ix.deployers
                .entry(version_key(s, e, v))
                .or_default()
                .insert(subject(&f));
        }
    }
    Ok((ix, in_period.into_iter().collect()))
}

/// What one chunk of changes needs from storage: facts, what judging them looks up, bound
/// spans, ledger ranges and leaves.
struct Chunk {
    facts: ChangeFacts,
    neighbours: Neighbours,
    spans: HashMap<String, SpanTally>,
    entries: HashMap<String, crate::storage::SubjectEntries>,
    leaves: HashMap<u64, Hash>,
}

async fn fetch_chunk(store: &Store, ids: &[String], size: u64) -> Result<Chunk, ReportError> {
    let facts = fetch_facts(store, ids, size).await?;
    let neighbours = crate::read::changes::neighbours_of_facts(store, &facts, size).await?;
    let mut subjects: Vec<String> = ids.to_vec();
    for (_, records, _) in &facts {
        subjects.extend(records.iter().filter_map(|r| r.fact.run_id.clone()));
    }
    subjects.sort();
    subjects.dedup();
    let mut spans: HashMap<String, SpanTally> = HashMap::new();
    for (subject, trace, n) in store.span_counts(&subjects, size).await? {
        let t = spans.entry(subject).or_default();
        t.count += n;
        t.traces.insert(trace);
    }
    let entries = store.entries_of_subjects(&subjects, size).await?;
    let mut lasts: Vec<u64> = entries.iter().map(|e| e.last).collect();
    lasts.sort_unstable();
    lasts.dedup();
    let leaves = store
        .leaves(&lasts)
        .await?
        .into_iter()
        .map(|(s, h, _)| (s, h))
        .collect();
    Ok(Chunk {
        facts,
        neighbours,
        spans,
        entries: entries
            .into_iter()
            .map(|e| (e.subject.clone(), e))
            .collect(),
        leaves,
    })
}

fn matches(q: &Query, e: &Evidence) -> bool {
    let c = &e.change;
    let eq = |want: &Option<String>, have: &Option<String>| {
        want.as_ref()
            .is_none_or(|w| have.as_ref().is_some_and(|h| h.eq_ignore_ascii_case(w)))
    };
    c.production && eq(&q.environment, &c.environment) && eq(&q.service, &c.service)
}

/// A CSV writer as reports/README.md promises: RFC 4180 quoting, CRLF, UTF-8.
fn csv_writer(path: &Path) -> Result<Csv, ReportError> {
    let f = std::fs::File::create(path)?;
    Ok(csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .quote_style(csv::QuoteStyle::Necessary)
        .from_writer(std::io::BufWriter::with_capacity(1 << 16, f)))
}

fn csv_err(e: csv::Error) -> ReportError {
    ReportError::Io(std::io::Error::other(e.to_string()))
}

/// report.json written as rows stream: `{"changes":[…],` now, the rest at the end.
struct JsonOut {
    w: std::io::BufWriter<std::fs::File>,
    first: bool,
}

impl JsonOut {
    fn item<T: Serialize>(&mut self, v: &T) -> Result<(), ReportError> {
        if !self.first {
            self.w.write_all(b",\n")?;
        }
        self.first = false;
        serde_json::to_writer(&mut self.w, v).map_err(|e| ReportError::Other(e.to_string()))?;
        Ok(())
    }
}

#[derive(Serialize)]
struct JsonChange<'a> {
    #[serde(flatten)]
    row: &'a PopulationRow,
    exceptions: Vec<&'a Exception>,
}

/// The exceptions of the ledger itself: what the verifier found over the checkpoint's entries.
async fn ledger_findings(
    store: &Store,
    now_ns: i64,
) -> Result<(Vec<Exception>, Vec<Option<u64>>, String, u64), ReportError> {
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
    let (found, suppressed) = ledger_exceptions(&report);
    let (xs, seqs): (Vec<Exception>, Vec<Option<u64>>) = found.into_iter().unzip();
    let verdict = if xs.is_empty() {
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
            xs.len() as u64 + suppressed,
            report.summary.entries
        )
    };
    Ok((xs, seqs, verdict, suppressed))
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

/// Builds the report into `out` (created; it must not exist or be empty). The files are written
/// into a sibling directory first and moved into place at the end, so `out` never holds half a
/// report.
pub async fn build(
    store: &Store,
    key: &LedgerKey,
    query: &Query,
    settings: &Settings,
    out: &Path,
    now_ns: i64,
    bar: &ProgressBar,
) -> Result<Outcome, ReportError> {
    let period = query.period()?;
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
    let checkpoint = store
        .latest_checkpoint()
        .await?
        .ok_or(ReportError::NoCheckpoint)?;
    // The integrity check reads every entry; it runs beside the fold (its signature checks use
    // the other cores) instead of before it. A failed build stops it.
    let verifying = AbortOnDrop({
        let store = store.clone();
        tokio::spawn(async move { ledger_findings(&store, now_ns).await })
    });

    let work = partial_dir(out);
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    std::fs::create_dir_all(&work)?;
    // A failed build leaves nothing behind.
    let (manifest, controls, exceptions_by_code) = match write_files(
        store,
        key,
        query,
        settings,
        &period,
        &checkpoint,
        &work,
        now_ns,
        bar,
        verifying,
    )
    .await
    {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&work);
            return Err(e);
        }
    };
    if out.exists() {
        std::fs::remove_dir(out)?;
    }
    std::fs::rename(&work, out)?;
    bar.finish_and_clear();
    Ok(Outcome {
        dir: out.to_owned(),
        manifest,
        controls,
        exceptions_by_code,
    })
}

/// Aborts the task when dropped (an early error must not leave the verifier running).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type Verified = Result<(Vec<Exception>, Vec<Option<u64>>, String, u64), ReportError>;

/// Writes every file of the report into `work`; returns the manifest, the control results and
/// the exception counts.
#[allow(clippy::too_many_arguments)]
async fn write_files(
    store: &Store,
    key: &LedgerKey,
    query: &Query,
    settings: &Settings,
    period: &Period,
    checkpoint: &crate::storage::CheckpointRow,
    work: &Path,
    now_ns: i64,
    bar: &ProgressBar,
    mut verifying: AbortOnDrop<Verified>,
) -> Result<(Manifest, Vec<ControlResult>, BTreeMap<String, u64>), ReportError> {
    let size = checkpoint.size;

    let clock = std::time::Instant::now();
    let phase = |what: &str| {
        tracing::debug!(
            phase = what,
            secs = clock.elapsed().as_secs_f64(),
            "Report phase done."
        )
    };
    // Version sightings are read beside the index (another connection, another core).
    let mut reading_versions = AbortOnDrop(tokio::spawn(period_versions(
        store.clone(),
        size,
        period.clone(),
        query.clone(),
        settings.policy.clone(),
    )));
    let (ix, ids) = index(store, size, period).await?;
    phase("index");
    bar.set_length(ids.len() as u64);

    let versions = (&mut reading_versions.0)
        .await
        .map_err(|e| ReportError::Other(format!("reading version sightings stopped: {e}")))??;
    let mut by_key: HashMap<(String, String, String), Vec<usize>> = HashMap::new();
    for (i, (v, _, _)) in versions.iter().enumerate() {
        by_key
            .entry(version_key(&v.service, &v.environment, &v.version))
            .or_default()
            .push(i);
    }

    phase("versions");
    let mut population = csv_writer(&work.join("population.csv"))?;
    population
        .write_record(core::POPULATION_COLUMNS)
        .map_err(csv_err)?;
    let mut exceptions = csv_writer(&work.join("exceptions.csv"))?;
    exceptions
        .write_record(core::EXCEPTION_COLUMNS)
        .map_err(csv_err)?;
    let mut json = JsonOut {
        w: std::io::BufWriter::with_capacity(
            1 << 16,
            std::fs::File::create(work.join("report.json"))?,
        ),
        first: true,
    };
    json.w.write_all(b"{\"format\":\"")?;
    json.w.write_all(core::MANIFEST_FORMAT.as_bytes())?;
    json.w
        .write_all(b"\",\"report\":\"soc2\",\"changes\":[\n")?;

    let mut out = RowWriter {
        population,
        exceptions,
        json,
        tally: Tally::new(),
        html: Vec::new(),
        exception_rows: 0,
    };
    let mut fold = Fold {
        sampler: query
            .sample
            .zip(query.seed.as_ref())
            .map(|(n, seed)| Sampler::new(n, seed)),
        processed: HashSet::new(),
        versions,
        by_key,
        rotation: Rotation::default(),
    };

    // Storage reads (and parsing the facts) for the next chunks run in their own task while the
    // fold works on a blocking thread: the two halves use both cores once the verifier is done,
    // and a report built by the API never holds a runtime worker that OTLP ingest needs.
    let (chunk_tx, chunks) = tokio::sync::mpsc::channel::<Result<Chunk, ReportError>>(2);
    let _reader = AbortOnDrop({
        let (store, ids) = (store.clone(), ids.clone());
        tokio::spawn(async move {
            for chunk in ids.chunks(CHUNK) {
                let c = fetch_chunk(&store, chunk, size).await;
                let failed = c.is_err();
                if chunk_tx.send(c).await.is_err() || failed {
                    break;
                }
            }
        })
    });
    let folding = {
        let (query, settings, bar) = (query.clone(), settings.clone(), bar.clone());
        tokio::task::spawn_blocking(move || {
            fold_chunks(&mut out, &mut fold, &ix, &query, &settings, &bar, chunks)
                .map(|()| (out, fold, ix))
        })
    };
    // If this future is dropped, the reader is aborted, the channel closes and the fold ends.
    let (out, fold, ix) = folding
        .await
        .map_err(|e| ReportError::Other(format!("folding changes stopped: {e}")))??;
    let RowWriter {
        mut population,
        mut exceptions,
        mut json,
        mut tally,
        html: mut html_exceptions,
        mut exception_rows,
    } = out;
    let Fold {
        sampler,
        processed,
        versions,
        rotation,
        ..
    } = fold;
    let cat = &settings.catalogue;
    let mut emit = |row: ExceptionRow,
                    tally: &mut Tally,
                    html: &mut Vec<ExceptionRow>,
                    w: &mut csv::Writer<_>|
     -> Result<(), ReportError> {
        write_exception(row, tally, html, w, &mut exception_rows)
    };
    phase("changes");
    json.w.write_all(b"\n],\"unlinked_deploys\":[\n")?;
    json.first = true;

    // A version the period's changes do not explain may still be explained by a change outside
    // it (requested before the period, deployed inside): fold those candidates one by one.
    let mut unlinked = 0u64;
    for (v, seq, explained) in &versions {
        if *explained {
            continue;
        }
        let candidates: Vec<String> = ix
            .deployers
            .get(&version_key(&v.service, &v.environment, &v.version))
            .map(|c| {
                c.iter()
                    .filter(|c| !processed.contains(*c))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let facts = fetch_facts(store, &candidates, size).await?;
        let mut folded = fold_facts(facts, &settings.policy, &ix.rollbacks);
        crate::read::changes::judge_all(store, &mut folded, size, &settings.judging).await?;
        let found = folded
            .iter()
            .any(|(ev, _)| evidence::explains(ev, v, settings.tolerance_ns));
        if found {
            continue;
        }
        unlinked += 1;
        let x = rules::unlinked_deploy(v);
        json.item(&serde_json::json!({"version": v, "entry_seq": seq, "exception": &x}))?;
        tally.exception(x.code);
        emit(
            ExceptionRow::new(cat, "", &x, (Some(*seq), Some(*seq))),
            &mut tally,
            &mut html_exceptions,
            &mut exceptions,
        )?;
    }

    phase("unlinked");
    json.w.write_all(b"\n],\"ledger_findings\":[\n")?;
    json.first = true;
    let (gaps, gap_seqs, verdict, suppressed) = (&mut verifying.0)
        .await
        .map_err(|e| ReportError::Other(format!("ledger verification stopped: {e}")))??;
    for (x, seq) in gaps.iter().zip(&gap_seqs) {
        json.item(&serde_json::json!({"entry_seq": seq, "exception": x}))?;
        tally.exception(x.code);
        emit(
            ExceptionRow::new(cat, "", x, (*seq, *seq)),
            &mut tally,
            &mut html_exceptions,
            &mut exceptions,
        )?;
    }
    // Findings past the verifier's per-class cap still count against the control.
    for _ in 0..suppressed {
        tally.exception(rules::EVIDENCE_GAP);
    }
    population.flush()?;
    exceptions.flush()?;
    drop(population);
    drop(exceptions);

    phase("ledger verified");
    let controls = core::control_results(
        cat,
        &tally.exceptions_by_code,
        tally.changes,
        size,
        &settings.rules.untested_codes(),
    );
    let mut controls_csv = csv_writer(&work.join("controls.csv"))?;
    controls_csv
        .write_record(core::CONTROL_COLUMNS)
        .map_err(csv_err)?;
    for c in &controls {
        controls_csv.write_record(c.cells()).map_err(csv_err)?;
    }
    controls_csv.flush()?;
    drop(controls_csv);

    let mut rotation_csv = csv_writer(&work.join("rotation.csv"))?;
    rotation_csv
        .write_record(core::ROTATION_COLUMNS)
        .map_err(csv_err)?;
    for r in rotation.rows() {
        rotation_csv.write_record(r.cells()).map_err(csv_err)?;
    }
    rotation_csv.flush()?;
    drop(rotation_csv);
    let rotation_summary: Vec<serde_json::Value> = rotation
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
        .collect();
    let reused_credentials: Vec<&core::RotationRow> = rotation
        .rows()
        .filter(|r| r.changes > 1)
        .take(200)
        .collect();

    let sample = sampler.map(Sampler::finish).unwrap_or_default();
    let mut sample_csv = csv_writer(&work.join("sample.csv"))?;
    let mut header = vec!["draw", "rank"];
    header.extend(core::POPULATION_COLUMNS);
    sample_csv.write_record(&header).map_err(csv_err)?;
    for (i, (rank, row)) in sample.iter().enumerate() {
        let mut cells = vec![(i + 1).to_string(), rank.clone()];
        cells.extend(row.cells());
        sample_csv.write_record(&cells).map_err(csv_err)?;
    }
    sample_csv.flush()?;
    drop(sample_csv);

    let generated_at = crate::core::time::rfc3339(now_ns);
    let selection = format!(
        "every change with a change.requested fact timed or received in [{}, {}) and recorded by an entry below checkpoint size {size}, \
         in a production environment ({}){}{}; facts of later entries are not included",
        crate::core::time::rfc3339(period.from_ns),
        crate::core::time::rfc3339(period.to_ns),
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
    );
    let exceptions_total: u64 = tally.exceptions_by_code.values().sum();
    let ledger_ok = gaps.is_empty() && suppressed == 0;

    // JSON tail: the summary, controls and sample.
    json.w.write_all(b"\n],\"controls\":")?;
    serde_json::to_writer(&mut json.w, &controls).map_err(|e| ReportError::Other(e.to_string()))?;
    json.w.write_all(b",\"summary\":")?;
    serde_json::to_writer(
        &mut json.w,
        &serde_json::json!({
            "title": cat.title,
            "framework": cat.framework,
            "query": query,
            "selection": selection,
            "period_start": crate::core::time::rfc3339(period.from_ns),
            "period_end": crate::core::time::rfc3339(period.to_ns),
            "generated_at": generated_at,
            "changes": tally.changes,
            "by_kind": tally.by_kind,
            "changes_with_exceptions": tally.changes_with_exceptions,
            "exceptions": exceptions_total,
            "exceptions_by_code": tally.exceptions_by_code,
            "unlinked_deploys": unlinked,
            "retried_deploys": tally.retried_deploys,
            "changes_per_week": tally.per_week,
            "approval_lead_time": core::LEAD_TIME_BUCKETS.iter().zip(&tally.lead_time).map(|((l, _), n)| (l.to_string(), *n)).collect::<BTreeMap<_, _>>(),
            "ledger_verification": verdict,
        }),
    )
    .map_err(|e| ReportError::Other(e.to_string()))?;
    json.w.write_all(b",\"rotation\":")?;
    serde_json::to_writer(&mut json.w, &rotation_summary)
        .map_err(|e| ReportError::Other(e.to_string()))?;
    json.w.write_all(b",\"sample\":")?;
    serde_json::to_writer(
        &mut json.w,
        &sample
            .iter()
            .map(|(rank, r)| serde_json::json!({"rank": rank, "change_id": r.change_id}))
            .collect::<Vec<_>>(),
    )
    .map_err(|e| ReportError::Other(e.to_string()))?;
    json.w.write_all(b"}\n")?;
    json.w.flush()?;
    drop(json);

    // The page a person reads.
    let weeks: Vec<(String, u64)> = tally
        .per_week
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let lead: Vec<(String, u64)> = core::LEAD_TIME_BUCKETS
        .iter()
        .zip(&tally.lead_time)
        .map(|((l, _), n)| (l.to_string(), *n))
        .collect();
    let codes: Vec<(String, u64)> = rules::ALL
        .iter()
        .map(|c| {
            (
                c.to_string(),
                tally.exceptions_by_code.get(*c).copied().unwrap_or(0),
            )
        })
        .collect();
    let mut env = minijinja::Environment::new();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    env.add_template("soc2.html", &settings.template)
        .map_err(|e| ReportError::Other(format!("report template: {e}")))?;
    let html = env
        .get_template("soc2.html")
        .and_then(|t| {
            t.render(minijinja::context! {
                title => &cat.title,
                framework => &cat.framework,
                period_start => crate::core::time::rfc3339(period.from_ns),
                period_end => crate::core::time::rfc3339(period.to_ns),
                environment => &query.environment,
                service => &query.service,
                origin => key.origin().as_str(),
                checkpoint_size => size,
                checkpoint_root => checkpoint.root.to_b64(),
                first_seq => tally.first_seq,
                last_seq => tally.last_seq,
                generated_at => &generated_at,
                software_version => env!("CARGO_PKG_VERSION"),
                selection => &selection,
                tally => minijinja::value::Serde(&tally),
                exceptions_total => exceptions_total,
                unlinked => unlinked,
                ledger_ok => ledger_ok,
                ledger_verdict => &verdict,
                controls => minijinja::value::Serde(&controls),
                chart_weeks => core::bar_chart("chart-weeks", "Production changes per week", &weeks, false),
                chart_lead => core::bar_chart("chart-lead", "Approval lead time", &lead, false),
                chart_codes => core::hbar_chart("chart-codes", "Exceptions by code", &codes, true),
                exceptions => minijinja::value::Serde(&html_exceptions),
                sample => minijinja::value::Serde(sample.iter().map(|(_, r)| r).collect::<Vec<_>>()),
                rotation => minijinja::value::Serde(&rotation_summary),
                reused_credentials => minijinja::value::Serde(&reused_credentials),
                sample_seed => &query.seed,
                sample_method => core::SAMPLE_METHOD,
            })
        })
        .map_err(|e| ReportError::Other(format!("rendering report.html: {e:#}")))?;
    std::fs::write(work.join("report.html"), html)?;

    // The manifest over every file, then its signature.
    let mut files = Vec::new();
    for name in FILES {
        files.push(hash_file(&work.join(name), name)?);
    }
    let manifest = Manifest {
        format: core::MANIFEST_FORMAT.into(),
        report: "soc2".into(),
        title: cat.title.clone(),
        query: query.clone(),
        selection,
        period_start: crate::core::time::rfc3339(period.from_ns),
        period_end: crate::core::time::rfc3339(period.to_ns),
        generated_at,
        software: format!("changetrail {}", env!("CARGO_PKG_VERSION")),
        ledger: ManifestLedger {
            origin: key.origin().to_string(),
            key_id: key.key_id().to_hex(),
            vkey: key.vkey().to_string(),
            checkpoint: ManifestCheckpoint {
                size,
                root: checkpoint.root.to_b64(),
                note: checkpoint.note.clone(),
            },
            first_seq: tally.first_seq,
            last_seq: tally.last_seq,
            verification: verdict,
            findings: gaps.len() as u64 + suppressed,
        },
        settings: ManifestSettings {
            production_environments: settings.policy.production_environments.clone(),
            deploy_task_types: settings.policy.deploy_task_types.clone(),
            approval_task_types: settings.policy.approval_task_types.clone(),
            approver_roles: settings.rules.approver_roles.clone(),
            emergency_review_window: rules::human_duration(
                settings.rules.emergency_review_window_ns,
            ),
            version_match_tolerance: rules::human_duration(settings.tolerance_ns),
            catalogue_sha256: settings.catalogue_sha256.clone(),
            approvers: settings.rules.approvers.clone(),
            receipt_tolerance_ns: Some(settings.judging.receipt_tolerance_ns),
            max_lateness_ns: Some(settings.judging.max_lateness_ns),
            require_bound_approvals: Some(settings.judging.require_bound_approvals),
            version_match_tolerance_ns: Some(settings.tolerance_ns),
            emergency_review_window_ns: Some(settings.rules.emergency_review_window_ns),
        },
        rows: Rows {
            population: tally.changes,
            exceptions: exception_rows,
            controls: controls.len() as u64,
            sample: sample.len() as u64,
        },
        sample: query
            .sample
            .zip(query.seed.clone())
            .map(|(_, seed)| ManifestSample {
                size: sample.len(),
                seed,
                method: core::SAMPLE_METHOD.into(),
            }),
        files,
    };
    write_manifest(work, &manifest, key)?;

    Ok((manifest, controls, tally.exceptions_by_code))
}

/// The files rows stream into, and what the summary gathers from them.
struct RowWriter {
    population: Csv,
    exceptions: Csv,
    json: JsonOut,
    tally: Tally,
    /// The first exceptions, for the page a person reads.
    html: Vec<ExceptionRow>,
    exception_rows: u64,
}

type Csv = csv::Writer<std::io::BufWriter<std::fs::File>>;

/// The fold's own state: the sample, the changes seen, which period versions they explain, and
/// the deploying credentials per service.
struct Fold {
    sampler: Option<Sampler>,
    processed: HashSet<String>,
    versions: Vec<(VersionFact, u64, bool)>,
    by_key: HashMap<(String, String, String), Vec<usize>>,
    rotation: Rotation,
}

fn write_exception(
    row: ExceptionRow,
    tally: &mut Tally,
    html: &mut Vec<ExceptionRow>,
    w: &mut Csv,
    rows: &mut u64,
) -> Result<(), ReportError> {
    w.write_record(row.cells()).map_err(csv_err)?;
    tally.seqs(row.audit_seq_first, row.audit_seq_last);
    *rows += 1;
    if html.len() < HTML_EXCEPTIONS {
        html.push(row);
    }
    Ok(())
}

/// Folds every chunk the reader sends: each change's evidence, its rules, its rows. Blocking (it
/// waits on the channel), so it runs on a blocking thread.
fn fold_chunks(
    out: &mut RowWriter,
    fold: &mut Fold,
    ix: &Index,
    query: &Query,
    settings: &Settings,
    bar: &ProgressBar,
    mut chunks: tokio::sync::mpsc::Receiver<Result<Chunk, ReportError>>,
) -> Result<(), ReportError> {
    let cat = &settings.catalogue;
    while let Some(chunk) = chunks.blocking_recv() {
        let Chunk {
            facts,
            neighbours,
            spans,
            entries: by_subject,
            leaves,
        } = chunk?;
        let mut folded = fold_facts(facts, &settings.policy, &ix.rollbacks);
        for (ev, _) in &mut folded {
            evidence::judge(ev, &neighbours, &settings.judging);
        }
        for (ev, broken) in &folded {
            bar.inc(1);
            if !matches(query, ev) {
                continue;
            }
            fold.processed.insert(ev.change.id.clone());
            let mut span = SpanTally::default();
            let mut ledger = LedgerSpan::default();
            for s in std::iter::once(&ev.change.id).chain(ev.change.runs.iter()) {
                if let Some(t) = spans.get(s) {
                    span.count += t.count;
                    span.traces.extend(t.traces.iter().cloned());
                }
                if let Some(e) = by_subject.get(s) {
                    ledger.entries += e.count;
                    ledger.first_seq = Some(ledger.first_seq.map_or(e.first, |f| f.min(e.first)));
                    if ledger.last_seq.is_none_or(|l| e.last > l) {
                        ledger.last_seq = Some(e.last);
                        ledger.last_leaf_hash = leaves.get(&e.last).map(|h| h.to_hex());
                    }
                }
            }
            let xs = crate::read::changes::exceptions(ev, broken, &settings.rules);
            fold.rotation.change(ev);
            let row = PopulationRow::new(ev, &span, &ledger, &xs);
            out.population.write_record(row.cells()).map_err(csv_err)?;
            out.json.item(&JsonChange {
                row: &row,
                exceptions: xs.iter().collect(),
            })?;
            out.tally.change(ev, &xs);
            out.tally.seqs(ledger.first_seq, ledger.last_seq);
            for x in &xs {
                write_exception(
                    ExceptionRow::new(cat, &ev.change.id, x, (ledger.first_seq, ledger.last_seq)),
                    &mut out.tally,
                    &mut out.html,
                    &mut out.exceptions,
                    &mut out.exception_rows,
                )?;
            }
            if let Some(s) = fold.sampler.as_mut() {
                s.offer(&row);
            }
            if let (Some(svc), Some(env), Some(ver)) = (
                &ev.change.service,
                &ev.change.environment,
                &ev.change.version,
            ) && let Some(vs) = fold.by_key.get(&version_key(svc, env, ver))
            {
                for &i in vs {
                    let (v, _, explained) = &mut fold.versions[i];
                    if !*explained && evidence::explains(ev, v, settings.tolerance_ns) {
                        *explained = true;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Writes manifest.json and its detached signature manifest.sig into `dir`.
pub fn write_manifest(dir: &Path, manifest: &Manifest, key: &LedgerKey) -> Result<(), ReportError> {
    let bytes = pretty(manifest)?;
    std::fs::write(dir.join("manifest.json"), &bytes)?;
    let sig = ManifestSig {
        format: core::MANIFEST_FORMAT.into(),
        key_id: key.key_id().to_hex(),
        vkey: key.vkey().to_string(),
        signature: crate::core::ledger::hash::b64(&key.sign(&core::manifest_message(&bytes))),
    };
    std::fs::write(dir.join("manifest.sig"), pretty(&sig)?)?;
    Ok(())
}

/// Pretty JSON with a final newline.
fn pretty<T: Serialize>(v: &T) -> Result<Vec<u8>, ReportError> {
    let mut b = serde_json::to_vec_pretty(v).map_err(|e| ReportError::Other(e.to_string()))?;
    b.push(b'\n');
    Ok(b)
}

fn partial_dir(out: &Path) -> PathBuf {
    let mut p = out.as_os_str().to_owned();
    p.push(".partial");
    PathBuf::from(p)
}

/// SHA-256 and size of a file, read in blocks.
pub fn hash_file(path: &Path, name: &str) -> Result<FileHash, std::io::Error> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok(FileHash {
        name: name.to_owned(),
        sha256: hex::encode(h.finalize()),
        bytes,
    })
}
