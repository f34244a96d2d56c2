//! `changetrail verify-report`: is this report directory what the ledger's key signed, built
//! against a checkpoint the ledger holds, with every row citing entries that exist and say what
//! the row says? Offline with a bundle, or against the database.
//!
//! [`verify_report`] checks, in order: the rows on their own ([`rows`]), the ledger (a bundle,
//! read in one pass by [`bundle`], or the database), the manifest's signature, the files' hashes,
//! the checkpoint, the entries the rows cite, and with a bundle the rows re-derived from its
//! entries alone ([`rederive`]).

mod bundle;
mod policy;
mod rederive;
mod rows;

use super::{FILES, Manifest, ManifestSig};
use crate::core::evidence::report as core;
use crate::core::ledger::hash::{Hash, unb64};
use crate::core::ledger::keys::Vkey;
use crate::core::ledger::note::{Checkpoint, Note, NoteVerdict};
use crate::core::ledger::verify::Options;
use crate::storage::Store;
pub use policy::check_policy;
use rederive::Offline;
use rows::Citation;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// Findings past this many per code are counted, not listed.
const LISTED: usize = 20;

/// Where the ledger to check the report against comes from.
#[derive(Clone)]
pub enum LedgerSource {
    /// No ledger: the report is checked against its own manifest only.
    None,
    /// A bundle exported from the ledger (`changetrail export`).
    Bundle(PathBuf),
    /// The ledger's database.
    Store(Store),
}

/// What checking a report found.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// What was checked and held.
    pub passed: Vec<String>,
    /// (code, detail) of what did not hold.
    pub findings: Vec<(String, String)>,
    /// Findings past `LISTED` per code: counted, not listed.
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

    /// Something did not hold: the report fails.
    pub fn failed(&self) -> bool {
        !self.findings.is_empty() || !self.suppressed.is_empty()
    }

    /// A finding of this code was made (listed or counted).
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
        rows::check_rows(dir, m, &mut out, &mut citations);
    }
    let wanted: BTreeSet<u64> = citations
        .iter()
        .flat_map(|c| [c.first, c.last])
        .flatten()
        .collect();
    let size = manifest.as_ref().map(|m| m.ledger.checkpoint.size);
    let read = match size {
        Some(size) => read_ledger(&ledger, trusted, threads, size, &wanted).await?,
        None => LedgerRead::default(),
    };
    if let Some(report) = &read.report {
        ledger_verdict(report, &mut out, &mut keys);
    }

    check_signature(&manifest_bytes, &sig_text, &keys, &mut out);
    let Some(m) = manifest else {
        return Ok(out);
    };
    check_files(dir, &m, &mut out);
    check_checkpoint(&m, &keys, read.root.as_ref(), &mut out);
    if !matches!(ledger, LedgerSource::None) {
        check_citations(&citations, &read.leaves, &mut out);
    }
    if let Some(o) = read.offline {
        rederive::rederived(dir, &m, catalogue, o, &mut out);
    }
    Ok(out)
}

/// What the ledger says about the report's checkpoint and cited entries.
#[derive(Default)]
struct LedgerRead {
    /// The ledger verifier's report.
    report: Option<crate::core::ledger::verify::Report>,
    /// The ledger's root at the report's checkpoint size, or why there is none.
    root: Option<Result<Hash, String>>,
    /// The cited entries' leaves and subjects.
    leaves: HashMap<u64, (Hash, String)>,
    /// With a bundle: what re-deriving the rows needs.
    offline: Option<Offline>,
}

/// Verifies the ledger and reads what it holds at the report's checkpoint `size`: the root and
/// the `wanted` entries' leaves.
async fn read_ledger(
    ledger: &LedgerSource,
    trusted: &[Vkey],
    threads: usize,
    size: u64,
    wanted: &BTreeSet<u64>,
) -> anyhow::Result<LedgerRead> {
    match ledger {
        LedgerSource::None => Ok(LedgerRead::default()),
        LedgerSource::Bundle(path) => {
            let read = bundle::read_bundle(path, trusted, threads, size, wanted)?;
            Ok(LedgerRead {
                offline: Some(Offline {
                    findings: super::ledger_exceptions(&read.report).0,
                    facts: read.facts,
                    from_start: read.from_start,
                    bundle: path.clone(),
                }),
                report: Some(read.report),
                root: Some(read.root),
                leaves: read.found,
            })
        }
        LedgerSource::Store(store) => {
            let opts = Options {
                trusted: trusted.to_vec(),
                state: None,
                max_age_ns: None,
                now_ns: crate::sys::now_ns(),
                threads,
            };
            let (report, _) = crate::read::audit::verify_store(store, opts, None).await?;
            let root = Some(match store.checkpoint_at(size).await? {
                Some(c) => Ok(c.root),
                None if report.summary.entries < size => Err(format!(
                    "the ledger holds {} entries, fewer than the report's checkpoint size {size}",
                    report.summary.entries
                )),
                None => Err(format!("the ledger signed no checkpoint at size {size}")),
            });
            let mut leaves = HashMap::new();
            let seqs: Vec<u64> = wanted.iter().copied().collect();
            for chunk in seqs.chunks(500) {
                for (s, h, subject) in store.leaves(chunk).await? {
                    leaves.insert(s, (h, subject));
                }
            }
            Ok(LedgerRead {
                report: Some(report),
                root,
                leaves,
                offline: None,
            })
        }
    }
}

/// The signature over manifest.json's exact bytes, by one of `keys`.
fn check_signature(manifest_bytes: &[u8], sig_text: &str, keys: &[Vkey], out: &mut Outcome) {
    match serde_json::from_str::<ManifestSig>(sig_text) {
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
                .any(|k| k.verify(&core::manifest_message(manifest_bytes), &raw))
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
}

/// Every file as hashed, every report file listed, and nothing else in the directory.
fn check_files(dir: &Path, m: &Manifest, out: &mut Outcome) {
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
}

/// The checkpoint: signed by a trusted key, the one the manifest names, and (with a ledger) the
/// ledger's own tree at that size.
fn check_checkpoint(
    m: &Manifest,
    keys: &[Vkey],
    ledger_root: Option<&Result<Hash, String>>,
    out: &mut Outcome,
) {
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
    match ledger_root {
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
}

/// Every cited entry is in the ledger and about the row's change.
fn check_citations(
    citations: &[Citation],
    leaves: &HashMap<u64, (Hash, String)>,
    out: &mut Outcome,
) {
    let mut bad = 0u64;
    for c in citations {
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
                Some((_, subject)) if !c.subjects.is_empty() && !c.subjects.contains(subject) => {
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
