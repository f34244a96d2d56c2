//! `changetrail verify-report`: is this report directory what the ledger's key signed, built
//! against a checkpoint the ledger holds, with every row citing entries that exist and say what
//! the row says? Offline with a bundle, or against the database.

use super::{FILES, Manifest, ManifestSig};
use crate::core::evidence::rederive::{LedgerFacts, Locator, PayloadSource, Scope, rederive};
use crate::core::evidence::report::{
    self as core, EXCEPTION_COLUMNS, POPULATION_COLUMNS, sample_rank,
};
use crate::core::evidence::rules::Exception;
use crate::core::ledger::bundle::Line;
use crate::core::ledger::entry::{Entry, leaf_hash};
use crate::core::ledger::hash::{Hash, unb64};
use crate::core::ledger::keys::Vkey;
use crate::core::ledger::merkle::CompactRange;
use crate::core::ledger::note::{Checkpoint, Note, NoteVerdict};
use crate::core::ledger::verify::{Options, Verifier};
use crate::storage::Store;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// Findings past this many per code are counted, not listed.
const LISTED: usize = 20;

/// Where the ledger to check the report against comes from.
pub enum LedgerSource {
    None,
    Bundle(PathBuf),
    Store(Store),
}

#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// What was checked and held.
    pub passed: Vec<String>,
    /// (code, detail) of what did not hold.
    pub findings: Vec<(String, String)>,
    pub suppressed: BTreeMap<String, u64>,
}

impl Outcome {
    fn ok(&mut self, what: impl Into<String>) {
        self.passed.push(what.into());
    }

    fn fail(&mut self, code: &str, detail: impl Into<String>) {
        if self.findings.iter().filter(|(c, _)| c == code).count() >= LISTED {
            *self.suppressed.entry(code.to_owned()).or_default() += 1;
        } else {
            self.findings.push((code.to_owned(), detail.into()));
        }
    }

    pub fn failed(&self) -> bool {
        !self.findings.is_empty() || !self.suppressed.is_empty()
    }

    pub fn has(&self, code: &str) -> bool {
        self.findings.iter().any(|(c, _)| c == code) || self.suppressed.contains_key(code)
    }

    /// The summary a person reads; the last line is the verdict.
    pub fn text(&self, dir: &Path) -> String {
        let mut s = format!("Report {}\n", dir.display());
        for p in &self.passed {
            s.push_str(&format!("  ok    {p}\n"));
        }
        for (c, d) in &self.findings {
            s.push_str(&format!("  FAIL  {c}: {d}\n"));
        }
        for (c, n) in &self.suppressed {
            s.push_str(&format!("  FAIL  {c}: {n} more\n"));
        }
        s.push_str(if self.failed() {
            "Result: FAILED: the report was altered, is incomplete, or does not match the ledger (exit 1)\n"
        } else {
            "Result: OK: signed by a trusted key, every file and row as signed (exit 0)\n"
        });
        s
    }
}

/// A row's cited entries, to look up in the ledger.
struct Citation {
    file: &'static str,
    line: u64,
    subjects: Vec<String>,
    first: Option<u64>,
    last: Option<u64>,
    last_hash: Option<String>,
}

/// Undoes `core::neutralise` for comparing a cell with ledger data.
fn plain(cell: &str) -> &str {
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
fn read_csv(
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

/// Checks a report directory. `trusted` are pinned vkeys; with a ledger, keys its rotation
/// entries hand trust to are accepted as well (a report signed after a rotation). With a bundle,
/// the report's rows are also re-derived from its entries alone and compared; `catalogue` is the
/// control catalogue's text when the report used another than the shipped one.
pub async fn verify_report(
    dir: &Path,
    ledger: LedgerSource,
    trusted: &[Vkey],
    threads: usize,
    catalogue: Option<&str>,
) -> anyhow::Result<Outcome> {
    let mut out = Outcome::default();
    if !dir.is_dir() {
        anyhow::bail!("{} is not a directory", dir.display());
    }
    // A report without its manifest or signature is a report that fails, not a usage error.
    let (manifest_bytes, sig_text) = match (
        std::fs::read(dir.join("manifest.json")),
        std::fs::read_to_string(dir.join("manifest.sig")),
    ) {
        (Ok(m), Ok(s)) => (m, s),
        (m, s) => {
            if let Err(e) = m {
                out.fail("MISSING_FILE", format!("manifest.json: {e}"));
            }
            if let Err(e) = s {
                out.fail("MISSING_FILE", format!("manifest.sig: {e}"));
            }
            return Ok(out);
        }
    };

    // The ledger first: it may vouch for keys the pins led to (rotations).
    let mut keys: Vec<Vkey> = trusted.to_vec();
    let manifest: Option<Manifest> = match serde_json::from_slice(&manifest_bytes) {
        Ok(m) => Some(m),
        Err(e) => {
            out.fail("BAD_FORMAT", format!("manifest.json: {e}"));
            None
        }
    };
    let mut citations: Vec<Citation> = Vec::new();
    if let Some(m) = &manifest {
        check_rows(dir, m, &mut out, &mut citations);
    }
    let wanted: BTreeSet<u64> = citations
        .iter()
        .flat_map(|c| [c.first, c.last])
        .flatten()
        .collect();
    let mut ledger_root: Option<Result<Hash, String>> = None;
    let mut leaves: HashMap<u64, (Hash, String)> = HashMap::new();
    let mut offline: Option<Offline> = None;
    let size = manifest.as_ref().map(|m| m.ledger.checkpoint.size);
    match (&ledger, size) {
        (LedgerSource::None, _) | (_, None) => {}
        (LedgerSource::Bundle(path), Some(size)) => {
            let read = read_bundle(path, trusted, threads, size, &wanted)?;
            ledger_verdict(&read.report, &mut out, &mut keys);
            ledger_root = Some(read.root);
            leaves = read.found;
            offline = Some(Offline {
                findings: super::ledger_exceptions(&read.report).0,
                facts: read.facts,
                from_start: read.from_start,
                bundle: path.clone(),
            });
        }
        (LedgerSource::Store(store), Some(size)) => {
            let opts = Options {
                trusted: trusted.to_vec(),
                state: None,
                max_age_ns: None,
                now_ns: crate::sys::now_ns(),
                threads,
            };
            let (report, _) = crate::read::audit::verify_store(store, opts, None).await?;
            ledger_verdict(&report, &mut out, &mut keys);
            ledger_root = Some(match store.checkpoint_at(size).await? {
                Some(c) => Ok(c.root),
                None if report.summary.entries < size => Err(format!(
                    "the ledger holds {} entries, fewer than the report's checkpoint size {size}",
                    report.summary.entries
                )),
                None => Err(format!("the ledger signed no checkpoint at size {size}")),
            });
            let seqs: Vec<u64> = wanted.iter().copied().collect();
            for chunk in seqs.chunks(500) {
                for (s, h, subject) in store.leaves(chunk).await? {
                    leaves.insert(s, (h, subject));
                }
            }
        }
    }

    // The signature over manifest.json's exact bytes.
    match serde_json::from_str::<ManifestSig>(&sig_text) {
        Err(e) => out.fail(
            "BAD_SIGNATURE",
            format!("manifest.sig is not a signature file: {e}"),
        ),
        Ok(sig) => {
            let raw = unb64(&sig.signature).unwrap_or_default();
            let candidates: Vec<&Vkey> = keys
                .iter()
                .filter(|k| k.key_id().to_hex() == sig.key_id)
                .collect();
            if candidates.is_empty() {
                out.fail(
                    "UNKNOWN_KEY",
                    format!(
                        "manifest.sig is by key {}, which no trusted key is",
                        sig.key_id
                    ),
                );
            } else if candidates
                .iter()
                .any(|k| k.verify(&core::manifest_message(&manifest_bytes), &raw))
            {
                out.ok(format!("manifest signature by trusted key {}", sig.key_id));
            } else {
                out.fail(
                    "BAD_SIGNATURE",
                    "manifest.sig does not verify over manifest.json",
                );
            }
        }
    }
    let Some(m) = manifest else {
        return Ok(out);
    };

    // Every file as hashed.
    let mut listed = BTreeSet::new();
    let mut files_ok = true;
    for f in &m.files {
        listed.insert(f.name.clone());
        match super::hash_file(&dir.join(&f.name), &f.name) {
            Err(e) => {
                files_ok = false;
                out.fail("MISSING_FILE", format!("{}: {e}", f.name));
            }
            Ok(h) if h.sha256 != f.sha256 || h.bytes != f.bytes => {
                files_ok = false;
                out.fail(
                    "FILE_MODIFIED",
                    format!(
                        "{}: SHA-256 {} ({} bytes), manifest says {} ({} bytes)",
                        f.name, h.sha256, h.bytes, f.sha256, f.bytes
                    ),
                );
            }
            Ok(_) => {}
        }
    }
    for name in FILES {
        if !listed.contains(name) {
            files_ok = false;
            out.fail("MISSING_FILE", format!("the manifest lists no {name}"));
        }
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !listed.contains(&name) && name != "manifest.json" && name != "manifest.sig" {
                files_ok = false;
                out.fail("UNLISTED_FILE", format!("{name} is not in the manifest"));
            }
        }
    }
    if files_ok {
        out.ok(format!(
            "{} files match their SHA-256 in the manifest",
            m.files.len()
        ));
    }

    // The checkpoint: signed by a trusted key, and the one the manifest names.
    let cp = &m.ledger.checkpoint;
    match Note::parse(&cp.note) {
        Err(e) => out.fail(
            "BAD_CHECKPOINT",
            format!("the manifest's checkpoint note: {e}"),
        ),
        Ok(note) => match (note.verify(keys.iter()), Checkpoint::parse_body(&note.text)) {
            (NoteVerdict::Valid(_), Ok(body))
                if body.size == cp.size && body.root.to_b64() == cp.root =>
            {
                out.ok(format!(
                    "checkpoint at size {} signed by a trusted key",
                    cp.size
                ));
            }
            (NoteVerdict::Valid(_), Ok(_)) => out.fail(
                "BAD_CHECKPOINT",
                "the checkpoint note's size or root differ from the manifest's",
            ),
            (NoteVerdict::Valid(_), Err(e)) => out.fail("BAD_CHECKPOINT", e.to_string()),
            (v, _) => out.fail(
                "BAD_CHECKPOINT",
                format!("the checkpoint note is not signed by a trusted key ({v:?})"),
            ),
        },
    }
    match &ledger_root {
        None => out.ok("no ledger given: rows checked against the manifest only (add --bundle or --database-url to check them against the ledger)"),
        Some(Ok(root)) if root.to_b64() == cp.root => {
            out.ok(format!("the ledger's tree at size {} has the report's root", cp.size))
        }
        Some(Ok(root)) => out.fail(
            "CHECKPOINT_NOT_IN_LEDGER",
            format!("the ledger's root at size {} is {}, the report was built against {}", cp.size, root.to_b64(), cp.root),
        ),
        Some(Err(e)) => out.fail("CHECKPOINT_NOT_IN_LEDGER", e.clone()),
    }

    // Every cited entry is in the ledger and about the row's change.
    if !matches!(ledger, LedgerSource::None) {
        let mut bad = 0u64;
        for c in &citations {
            for (which, seq) in [("first", c.first), ("last", c.last)] {
                let Some(seq) = seq else { continue };
                match leaves.get(&seq) {
                    None => {
                        bad += 1;
                        out.fail(
                            "ROW_NOT_COVERED",
                            format!(
                                "{} line {}: entry {seq} is not in the ledger",
                                c.file, c.line
                            ),
                        );
                    }
                    Some((_, subject))
                        if !c.subjects.is_empty() && !c.subjects.contains(subject) =>
                    {
                        bad += 1;
                        out.fail(
                            "ROW_MISMATCH",
                            format!(
                                "{} line {}: entry {seq} ({which}) is about {subject:?}, not {:?}",
                                c.file, c.line, c.subjects
                            ),
                        );
                    }
                    Some((hash, _))
                        if which == "last"
                            && c.last_hash.as_ref().is_some_and(|h| *h != hash.to_hex()) =>
                    {
                        bad += 1;
                        out.fail(
                            "ROW_MISMATCH",
                            format!(
                                "{} line {}: entry {seq} has leaf hash {}, the row says {}",
                                c.file,
                                c.line,
                                hash.to_hex(),
                                c.last_hash.clone().unwrap_or_default()
                            ),
                        );
                    }
                    Some(_) => {}
                }
            }
        }
        if bad == 0 {
            out.ok(format!(
                "{} rows cite entries the ledger holds, about their changes",
                citations.len()
            ));
        }
    }
    if let Some(o) = offline {
        rederived(dir, &m, catalogue, o, &mut out);
    }
    Ok(out)
}

/// The report's settings as its manifest records them, when it records all the judging ones
/// (a report from before re-derivation does not).
fn scope_of(m: &Manifest) -> Result<Scope, String> {
    let s = &m.settings;
    let (
        Some(receipt_tolerance_ns),
        Some(max_lateness_ns),
        Some(require_bound_approvals),
        Some(tolerance_ns),
        Some(emergency_review_window_ns),
    ) = (
        s.receipt_tolerance_ns,
        s.max_lateness_ns,
        s.require_bound_approvals,
        s.version_match_tolerance_ns,
        s.emergency_review_window_ns,
    )
    else {
        return Err(
            "the manifest records no judging settings (a report made before re-derivation)".into(),
        );
    };
    let period = m.query.period().map_err(|e| e.to_string())?;
    Ok(Scope {
        from_ns: period.from_ns,
        to_ns: period.to_ns,
        environment: m.query.environment.clone(),
        service: m.query.service.clone(),
        policy: crate::core::evidence::Policy {
            production_environments: s.production_environments.clone(),
            deploy_task_types: s.deploy_task_types.clone(),
            approval_task_types: s.approval_task_types.clone(),
        },
        rules: crate::core::evidence::rules::RuleContext {
            approver_roles: s.approver_roles.clone(),
            approvers: s.approvers.clone(),
            emergency_review_window_ns,
        },
        judging: crate::core::evidence::Settings {
            receipt_tolerance_ns,
            max_lateness_ns,
            require_bound_approvals,
        },
        tolerance_ns,
    })
}

/// What re-deriving a report needs from its bundle.
struct Offline {
    facts: LedgerFacts,
    /// The bundle starts at entry 0.
    from_start: bool,
    /// The ledger verifier's findings, as the report lists them.
    findings: Vec<(Exception, Option<u64>)>,
    /// The bundle, read again for each change's facts.
    bundle: PathBuf,
}

/// A bundle's entry payloads, read again by line offset.
struct BundlePayloads {
    file: std::fs::File,
    buf: Vec<u8>,
}

impl PayloadSource for BundlePayloads {
    fn payload(&mut self, at: Locator) -> Result<String, String> {
        use std::io::{Read, Seek, SeekFrom};
        let len = usize::try_from(at.len)
            .map_err(|_| format!("a line of {} bytes at byte {}", at.len, at.offset))?;
        self.buf.resize(len, 0);
        self.file
            .seek(SeekFrom::Start(at.offset))
            .and_then(|_| self.file.read_exact(&mut self.buf))
            .map_err(|e| format!("reading the bundle again at byte {}: {e}", at.offset))?;
        let text = std::str::from_utf8(&self.buf)
            .map_err(|_| format!("the bundle changed at byte {}", at.offset))?;
        match Line::parse(text) {
            Ok(Line::Entry(e)) => e
                .payload
                .map(|p| p.into_owned())
                .ok_or_else(|| format!("the bundle changed at byte {}", at.offset)),
            _ => Err(format!("the bundle changed at byte {}", at.offset)),
        }
    }
}

/// Re-derives the report's rows from the bundle's entries and names every row that differs.
fn rederived(dir: &Path, m: &Manifest, catalogue: Option<&str>, o: Offline, out: &mut Outcome) {
    let Offline {
        facts,
        from_start,
        findings,
        bundle,
    } = o;
    if !from_start {
        out.fail(
            "NOT_DERIVED",
            "the bundle does not start at entry 0: the rows cannot be re-derived from it (export the whole ledger)",
        );
        return;
    }
    let scope = match scope_of(m) {
        Ok(s) => s,
        Err(e) => {
            out.fail("NOT_DERIVED", e);
            return;
        }
    };
    let text = catalogue.unwrap_or(core::SOC2_CATALOGUE);
    if Hash::of(&[text.as_bytes()]).to_hex() != m.settings.catalogue_sha256 {
        out.fail(
            "NOT_DERIVED",
            "the report was built with another control catalogue than the one given: pass it with --catalogue",
        );
        return;
    }
    let cat = match core::Catalogue::parse(text) {
        Ok(c) => c,
        Err(e) => {
            out.fail("NOT_DERIVED", e);
            return;
        }
    };
    let mut payloads = match std::fs::File::open(&bundle) {
        Ok(file) => BundlePayloads {
            file,
            buf: Vec::new(),
        },
        Err(e) => {
            out.fail("NOT_DERIVED", format!("cannot open the bundle again: {e}"));
            return;
        }
    };
    let want = match rederive(facts, &mut payloads, &scope, &cat, &findings) {
        Ok(w) => w,
        Err(e) => {
            out.fail("NOT_DERIVED", e);
            return;
        }
    };
    let before = out.findings.len() + out.suppressed.values().sum::<u64>() as usize;

    // Population: one row per change, every column.
    let pop = read_csv(dir, "population.csv", &POPULATION_COLUMNS, out);
    let mut have: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in &pop {
        let cells: Vec<String> = r.iter().map(str::to_owned).collect();
        have.insert(plain(r.get(0).unwrap_or_default()).to_owned(), cells);
    }
    for row in &want.population {
        let cells = row.cells();
        match have.remove(&row.change_id) {
            None => out.fail(
                "DERIVED_MISMATCH",
                format!(
                    "population.csv has no row for {}, which the entries put in the population",
                    row.change_id
                ),
            ),
            Some(got) if got != cells => {
                let diff: Vec<String> = POPULATION_COLUMNS
                    .iter()
                    .zip(got.iter().zip(&cells))
                    .filter(|(_, (a, b))| a != b)
                    .map(|(c, (a, b))| format!("{c} is {a:?}, the entries give {b:?}"))
                    .collect();
                out.fail(
                    "DERIVED_MISMATCH",
                    format!("population.csv row {}: {}", row.change_id, diff.join("; ")),
                );
            }
            Some(_) => {}
        }
    }
    for id in have.keys() {
        out.fail(
            "DERIVED_MISMATCH",
            format!("population.csv row {id} is not in the population the entries give"),
        );
    }

    // Exceptions, controls and the rotation table: as multisets of rows, each said in words.
    let cell = |r: &[String], i: usize| r.get(i).map(String::as_str).unwrap_or("").to_owned();
    let rows = |name: &'static str,
                header: &[&str],
                want: Vec<Vec<String>>,
                say: &dyn Fn(&[String]) -> String,
                out: &mut Outcome| {
        let got: Vec<Vec<String>> = read_csv(dir, name, header, out)
            .iter()
            .map(|r| r.iter().map(str::to_owned).collect())
            .collect();
        let mut left: BTreeMap<Vec<String>, i64> = BTreeMap::new();
        for r in got {
            *left.entry(r).or_default() += 1;
        }
        for r in want {
            *left.entry(r).or_default() -= 1;
        }
        for (r, n) in left {
            if n > 0 {
                out.fail(
                    "DERIVED_MISMATCH",
                    format!("{name} lists {}, which the entries do not give", say(&r)),
                );
            } else if n < 0 {
                out.fail(
                    "DERIVED_MISMATCH",
                    format!("{name} lacks {}, which the entries give", say(&r)),
                );
            }
        }
    };
    rows(
        "exceptions.csv",
        &EXCEPTION_COLUMNS,
        want.exceptions.iter().map(|r| r.cells()).collect(),
        &|r| {
            let change = cell(r, 1);
            format!(
                "{} {} ({})",
                cell(r, 0),
                if change.is_empty() {
                    "about the ledger".to_owned()
                } else {
                    format!("on {change}")
                },
                cell(r, 3)
            )
        },
        out,
    );
    rows(
        "controls.csv",
        &core::CONTROL_COLUMNS,
        want.controls.iter().map(|r| r.cells()).collect(),
        &|r| {
            format!(
                "control {} as {} with {} exceptions ({})",
                cell(r, 0),
                cell(r, 6),
                cell(r, 4),
                cell(r, 5)
            )
        },
        out,
    );
    rows(
        "rotation.csv",
        &core::ROTATION_COLUMNS,
        want.rotation.iter().map(|r| r.cells()).collect(),
        &|r| {
            format!(
                "{} credential {} on {} changes ({} to {})",
                cell(r, 0),
                cell(r, 1),
                cell(r, 2),
                cell(r, 3),
                cell(r, 5)
            )
        },
        out,
    );
    if out.findings.len() + out.suppressed.values().sum::<u64>() as usize == before {
        out.ok(format!(
            "re-derived from the bundle's entries alone: {} population rows, {} exceptions, {} controls, {} credentials, as the report says",
            want.population.len(),
            want.exceptions.len(),
            want.controls.len(),
            want.rotation.len()
        ));
    }
}

/// Row-level checks needing no ledger: counts, headers, cited sequence numbers inside the
/// checkpoint and the manifest's range, and the sample re-drawn from the seed.
fn check_rows(dir: &Path, m: &Manifest, out: &mut Outcome, citations: &mut Vec<Citation>) {
    let size = m.ledger.checkpoint.size;
    let (lo, hi) = (
        m.ledger.first_seq.unwrap_or(0),
        m.ledger.last_seq.unwrap_or(0),
    );
    let mut range_ok = true;
    let mut cite = |file: &'static str,
                    line: u64,
                    first: Result<Option<u64>, String>,
                    last: Result<Option<u64>, String>,
                    out: &mut Outcome|
     -> Option<(Option<u64>, Option<u64>)> {
        match (first, last) {
            (Ok(a), Ok(b)) => {
                for s in [a, b].into_iter().flatten() {
                    if s >= size || s < lo || s > hi {
                        range_ok = false;
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
    };
    let pop = read_csv(dir, "population.csv", &POPULATION_COLUMNS, out);
    let col = |name: &str| {
        POPULATION_COLUMNS
            .iter()
            .position(|c| *c == name)
            .unwrap_or(0)
    };
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
        if let Some((first, last)) = cite(
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
    let exc = read_csv(dir, "exceptions.csv", &EXCEPTION_COLUMNS, out);
    for (i, r) in exc.iter().enumerate() {
        let line = i as u64 + 2;
        let change = plain(r.get(1).unwrap_or_default()).to_owned();
        if let Some((first, last)) = cite(
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
    let counts = [
        ("population.csv", pop.len() as u64, m.rows.population),
        ("exceptions.csv", exc.len() as u64, m.rows.exceptions),
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
            pop.len(),
            exc.len()
        ));
    }
    if range_ok {
        out.ok(format!(
            "every cited entry lies within {lo}..={hi}, below checkpoint size {size}"
        ));
    }
    // The sample, drawn again.
    if let Some(s) = &m.sample {
        let mut ranked: Vec<(String, &String)> = ids
            .iter()
            .map(|id| (sample_rank(&s.seed, id), id))
            .collect();
        ranked.sort();
        let expect: Vec<&String> = ranked.iter().take(s.size).map(|(_, id)| *id).collect();
        let mut header = vec!["draw", "rank"];
        header.extend(POPULATION_COLUMNS);
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

/// Folds the ledger verifier's verdict into the outcome, and adopts the keys it established.
fn ledger_verdict(
    report: &crate::core::ledger::verify::Report,
    out: &mut Outcome,
    keys: &mut Vec<Vkey>,
) {
    for (_, vkey) in &report.summary.keys {
        if let Ok(k) = Vkey::parse(vkey)
            && !keys.contains(&k)
        {
            keys.push(k);
        }
    }
    if report.exit_code == 0 {
        out.ok(format!(
            "ledger verifies: {} entries, {} checkpoints",
            report.summary.entries, report.summary.checkpoints_valid
        ));
    } else {
        for f in &report.findings {
            if f.class.exit_code() > 0 {
                out.fail("LEDGER", format!("{} {}", f.class.as_str(), f.detail));
            }
        }
        if !out.has("LEDGER") {
            out.fail(
                "LEDGER",
                format!("the ledger verifier exits {}", report.exit_code),
            );
        }
    }
}

/// What one pass over a bundle gives.
struct BundleRead {
    report: crate::core::ledger::verify::Report,
    /// The tree's root at the report's size.
    root: Result<Hash, String>,
    /// The cited entries' leaves and subjects.
    found: HashMap<u64, (Hash, String)>,
    /// Everything below the report's size, for re-deriving its rows.
    facts: LedgerFacts,
    /// The bundle starts at entry 0 (no prefix), so it holds every fact.
    from_start: bool,
}

/// One pass over a bundle: the verifier, the root at `size`, the cited entries' leaves and
/// what re-deriving the report needs.
fn read_bundle(
    path: &Path,
    trusted: &[Vkey],
    threads: usize,
    size: u64,
    wanted: &BTreeSet<u64>,
) -> anyhow::Result<BundleRead> {
    let f = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("cannot open bundle {}: {e}", path.display()))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, f);
    let mut v = Verifier::new(Options {
        trusted: trusted.to_vec(),
        state: None,
        max_age_ns: None,
        now_ns: crate::sys::now_ns(),
        threads,
    });
    let mut range = CompactRange::new();
    let mut root: Option<Hash> = (size == 0).then(|| range.root());
    let mut found = HashMap::new();
    let mut facts = LedgerFacts::new(size);
    let mut from_start = true;
    let mut buf = Vec::with_capacity(1024);
    let mut offset = 0u64;
    loop {
        buf.clear();
        let read = reader.read_until(b'\n', &mut buf)?;
        if read == 0 {
            break;
        }
        let at = offset;
        offset += read as u64;
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let Ok(text) = std::str::from_utf8(line) else {
            v.push_unreadable("line is not valid UTF-8");
            continue;
        };
        match Line::parse(text) {
            Ok(Line::Prefix { size: a, peaks }) if range.size() == 0 => {
                from_start = a == 0;
                let peaks: Option<Vec<Hash>> = peaks.iter().map(|p| Hash::from_b64(p)).collect();
                if let Some(r) = peaks.and_then(|p| CompactRange::from_peaks(a, p)) {
                    range = r;
                }
            }
            Ok(Line::Entry(e)) => {
                if let Some(bytes) = unb64(&e.entry) {
                    let leaf = leaf_hash(&bytes);
                    if let Ok(entry) = Entry::decode(&bytes) {
                        if e.seq < size {
                            facts.push(
                                e.seq,
                                &entry.kind,
                                &entry.subject,
                                entry.time_ns,
                                leaf,
                                e.payload.as_deref(),
                                Locator {
                                    offset: at,
                                    len: line.len() as u64,
                                },
                            );
                        }
                        if wanted.contains(&e.seq) {
                            found.insert(e.seq, (leaf, entry.subject));
                        }
                    }
                    if range.size() == e.seq && e.seq < size {
                        range.push(leaf, |_, _| {});
                        if range.size() == size {
                            root = Some(range.root());
                        }
                    }
                }
            }
            _ => {}
        }
        v.push_line(text);
    }
    let report = v.finish();
    let root = root.ok_or_else(|| {
        format!(
            "the bundle's entries reach size {}, short of the report's checkpoint size {size}",
            range.size()
        )
    });
    Ok(BundleRead {
        report,
        root,
        found,
        facts,
        from_start,
    })
}
