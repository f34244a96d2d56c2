//! `changetrail verify`: the streaming verifier over a bundle file or the database, with pinned
//! keys, a saved state, a freshness limit, a human summary or JSON findings, and the exit codes
//! of src/core/ledger/FORMAT.md.

use crate::app::cli::VerifyArgs;
use crate::app::config::Config;
use crate::core::ledger::bundle::Line;
use crate::core::ledger::hash::Hash;
use crate::core::ledger::keys::Vkey;
use crate::core::ledger::verify::{Class, Options, Report, TrustedState, Verifier};
use crate::core::time::{parse_rfc3339, rfc3339};
use crate::storage::Store;
use crate::sys::now_ns;
use crate::sys::rfc3339_now;
use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;

/// Findings printed in the text summary before pointing at `--format json`.
const TEXT_FINDINGS: usize = 50;

/// The saved last-trusted checkpoints, one per ledger origin. Keyed by the origin of the pinned
/// keys (never by anything the data under test chooses), so a server cannot make a reviewer
/// start afresh by renaming itself.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct StateFile {
    pub version: u32,
    pub ledgers: BTreeMap<String, SavedCheckpoint>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedCheckpoint {
    pub size: u64,
    pub root: String,
    pub checkpoint: String,
    pub updated_at: String,
}

impl StateFile {
    pub fn load(path: &Path) -> anyhow::Result<StateFile> {
        if !path.exists() {
            return Ok(StateFile {
                version: 1,
                ledgers: BTreeMap::new(),
            });
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read state {}", path.display()))?;
        let s: StateFile = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a verify state file", path.display()))?;
        if s.version != 1 {
            bail!(
                "{}: unsupported state version {}",
                path.display(),
                s.version
            );
        }
        Ok(s)
    }

    /// Writes atomically (temporary file, then rename).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    fn trusted(&self, origin: &str) -> anyhow::Result<Option<TrustedState>> {
        self.ledgers
            .get(origin)
            .map(|s| {
                Ok(TrustedState {
                    size: s.size,
                    root: Hash::from_b64(&s.root)
                        .context("state file root is not base64 of 32 bytes")?,
                })
            })
            .transpose()
    }
}

/// Feeds every line of `reader` to the verifier; returns its report.
pub fn verify_reader(
    mut reader: impl BufRead,
    opts: Options,
    bar: Option<&ProgressBar>,
) -> std::io::Result<Report> {
    let mut v = Verifier::new(opts);
    let mut buf = Vec::with_capacity(1024);
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf)?;
        if n == 0 {
            break;
        }
        if let Some(b) = bar {
            b.inc(n as u64);
        }
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        match std::str::from_utf8(line) {
            Ok(text) => v.push_line(text),
            Err(_) => v.push_unreadable("line is not valid UTF-8"),
        }
    }
    Ok(v.finish())
}

pub fn parse_keys(keys: &[String]) -> anyhow::Result<Vec<Vkey>> {
    keys.iter()
        .map(|k| Vkey::parse(k).with_context(|| format!("--trusted-key {k:?}")))
        .collect()
}

fn parse_max_age(s: &str) -> anyhow::Result<Option<i64>> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let d = humantime::parse_duration(s)
        .with_context(|| format!("--max-age {s:?}: use e.g. 2h, 30m or off"))?;
    Ok(Some(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)))
}

/// The origin whose saved state applies: the pinned keys' origin, else the bundle's own.
fn state_origin(trusted: &[Vkey], fallback: Option<String>) -> anyhow::Result<Option<String>> {
    match trusted.first() {
        Some(k) => {
            if trusted.iter().any(|t| t.origin() != k.origin()) {
                bail!("--trusted-key values name different ledgers; verify one ledger at a time");
            }
            Ok(Some(k.origin().to_string()))
        }
        None => Ok(fallback),
    }
}

fn peek_header_origin(path: &Path) -> Option<String> {
    let f = std::fs::File::open(path).ok()?;
    let mut first = String::new();
    std::io::BufReader::new(f).read_line(&mut first).ok()?;
    match Line::parse(first.trim_end_matches('\n')).ok()? {
        Line::Header { origin, .. } => Some(origin.into_owned()),
        _ => None,
    }
}

pub async fn run(cfg: Config, a: VerifyArgs, database_flag: bool) -> anyhow::Result<i32> {
    let trusted = parse_keys(&a.trusted_keys)?;
    let max_age_ns = parse_max_age(&a.max_age)?;
    let now = match &a.at {
        Some(t) => {
            parse_rfc3339(t).with_context(|| format!("--at {t:?} is not an RFC 3339 time"))?
        }
        None => now_ns(),
    };
    if a.file.is_some() && database_flag {
        bail!("give either a bundle FILE or --database-url, not both");
    }
    let json = a.format == "json";
    let policy = a.policy.as_deref().map(load_policy).transpose()?;

    let store = match &a.file {
        Some(_) => None,
        None => Some(Store::connect(&cfg.database_url, &cfg.storage_options()).await?),
    };
    // The saved state is looked up by the pinned keys' origin; unpinned, by the ledger's own.
    let own_origin = match (&a.file, &store) {
        (Some(path), _) => peek_header_origin(path),
        (None, Some(s)) => s.head().await?.map(|h| h.head.origin.to_string()),
        (None, None) => None,
    };
    let origin = state_origin(&trusted, own_origin)?;
    let (state_file, state) = load_state(a.state.as_deref(), origin.as_deref())?;
    let opts = Options {
        trusted,
        state,
        max_age_ns,
        now_ns: now,
        threads: a.threads,
    };
    let (report, source, tail) = match (&a.file, &store) {
        (Some(path), _) => {
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            let bar = progress(file.metadata().map(|m| m.len()).unwrap_or(0), json);
            let reader = std::io::BufReader::with_capacity(1 << 20, file);
            let report = tokio::task::spawn_blocking(move || {
                let r = verify_reader(reader, opts, Some(&bar));
                bar.finish_and_clear();
                r
            })
            .await??;
            (report, path.display().to_string(), 0)
        }
        (None, Some(store)) => {
            let (mut report, tail) = crate::read::audit::verify_store(
                store,
                opts,
                Some(std::sync::Arc::new(super::Bar(progress(0, json)))),
            )
            .await?;
            // The change summary is recomputed from the facts the pass above checked, under this
            // configuration's correlation settings.
            let (findings, note) =
                crate::read::summary::audit_summary(store, &cfg.criteria()).await?;
            report.add(findings);
            if let Some(n) = note {
                eprintln!("Note: {n}.");
            }
            (
                report,
                crate::app::startup::redact_url(&cfg.database_url),
                tail,
            )
        }
        (None, None) => bail!("nothing to verify"),
    };
    let mut report = report;
    if let Some(policy) = &policy {
        let notes = match (&a.file, &store) {
            (Some(path), _) => bundle_checkpoints(path)?,
            (None, Some(store)) => stored_checkpoints(store, &report).await?,
            (None, None) => Vec::new(),
        };
        let finding = crate::core::ledger::verify::unwitnessed(&report, policy, &notes);
        report.add(finding.into_iter().collect());
    }
    finish_state(a.state.as_deref(), state_file, origin.as_deref(), &report)?;
    if json {
        print_json(&report);
        eprint!("{}", summary(&report, &source, tail));
    } else {
        print!("{}", summary(&report, &source, tail));
    }
    Ok(report.exit_code)
}

/// Reads and parses a `--policy` file; a bad one is a usage error (exit 3), never a pass.
pub fn load_policy(path: &Path) -> anyhow::Result<crate::core::ledger::policy::Policy> {
    use crate::core::ledger::policy::{MAX_POLICY_BYTES, Policy};
    use std::io::Read as _;
    // Never more than one byte past the limit: a policy path may name /dev/zero.
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| {
            f.take(MAX_POLICY_BYTES as u64 + 1)
                .read_to_string(&mut text)
        })
        .with_context(|| format!("cannot read policy {}", path.display()))?;
    Policy::parse(&text).with_context(|| format!("policy {}", path.display()))
}

/// The checkpoint notes a bundle carries (with their cosignature lines), by size.
fn bundle_checkpoints(path: &Path) -> anyhow::Result<Vec<(u64, String)>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut out = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        // Only checkpoint lines matter here; the verifier already judged every line.
        if !line.contains("\"checkpoint\"") {
            continue;
        }
        if let Ok(Line::Checkpoint { note }) = Line::parse(&line)
            && let Ok(n) = crate::core::ledger::note::Note::parse(&note)
            && let Ok(cp) = crate::core::ledger::note::Checkpoint::parse_body(&n.text)
        {
            out.push((cp.size, note.into_owned()));
        }
    }
    Ok(out)
}

/// The stored checkpoints up to the newest verified one, as served (with their cosignatures).
async fn stored_checkpoints(store: &Store, report: &Report) -> anyhow::Result<Vec<(u64, String)>> {
    let Some(newest) = &report.summary.newest else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for cp in store.checkpoints_between(0, newest.size).await? {
        out.push((
            cp.size,
            crate::read::tlog::served_checkpoint_note(store, &cp).await?,
        ));
    }
    Ok(out)
}

fn progress(len: u64, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("verifying {bar:40} {percent}% {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn load_state(
    path: Option<&Path>,
    origin: Option<&str>,
) -> anyhow::Result<(Option<StateFile>, Option<TrustedState>)> {
    let Some(path) = path else {
        return Ok((None, None));
    };
    let file = StateFile::load(path)?;
    let state = match origin {
        Some(o) => file.trusted(o)?,
        None => None,
    };
    Ok((Some(file), state))
}

fn finish_state(
    path: Option<&Path>,
    file: Option<StateFile>,
    origin: Option<&str>,
    report: &Report,
) -> anyhow::Result<()> {
    let (Some(path), Some(mut file), Some(origin)) = (path, file, origin) else {
        return Ok(());
    };
    let (Some(new), Some(newest)) = (&report.new_state, &report.summary.newest) else {
        return Ok(());
    };
    file.ledgers.insert(
        origin.to_owned(),
        SavedCheckpoint {
            size: new.size,
            root: new.root.to_b64(),
            checkpoint: newest.note.clone(),
            updated_at: rfc3339_now(),
        },
    );
    file.save(path)
}

fn print_json(report: &Report) {
    for f in &report.findings {
        if let Ok(s) = serde_json::to_string(f) {
            println!("{s}");
        }
    }
}

/// The human summary: what was asked, what was covered, what was found, and the verdict.
pub fn summary(report: &Report, source: &str, uncovered_tail: u64) -> String {
    let s = &report.summary;
    let mut out = String::new();
    out.push_str(&format!(
        "Ledger {} ({source})\n",
        s.origin.as_deref().unwrap_or("(unknown origin)")
    ));
    match (s.first_seq, s.last_seq) {
        (Some(a), Some(b)) => out.push_str(&format!(
            "  entries      {a}..={b}: {} read, {} signatures checked\n",
            s.entries, s.signatures
        )),
        _ => out.push_str("  entries      none\n"),
    }
    out.push_str(&format!(
        "  checkpoints  {} of {} valid",
        s.checkpoints_valid, s.checkpoints
    ));
    match &s.newest {
        Some(n) => out.push_str(&format!(
            "; newest covers {} entries (root {}), its last entry at {}\n",
            n.size,
            n.root.to_b64(),
            rfc3339(n.time_ns)
        )),
        None => out.push('\n'),
    }
    if uncovered_tail > 0 {
        out.push_str(&format!(
            "  note         {uncovered_tail} newer entries are not covered by a checkpoint yet and were not checked\n"
        ));
    }
    if s.redacted > 0 {
        out.push_str(&format!(
            "  redacted     {} payloads erased by logged requests\n",
            s.redacted
        ));
    }
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for f in &report.findings {
        *counts.entry(f.class.as_str()).or_default() += 1;
    }
    for (c, n) in &report.suppressed {
        *counts.entry(c.as_str()).or_default() += n;
    }
    if counts.is_empty() {
        out.push_str("  findings     none\n");
    } else {
        let list: Vec<String> = counts.iter().map(|(c, n)| format!("{c} {n}")).collect();
        out.push_str(&format!("  findings     {}\n", list.join(", ")));
        for f in report
            .findings
            .iter()
            .filter(|f| f.class != Class::Redacted)
            .take(TEXT_FINDINGS)
        {
            let at = match (f.seq, f.size) {
                (Some(q), _) => format!("seq {q}"),
                (None, Some(z)) => format!("size {z}"),
                _ => "bundle".into(),
            };
            out.push_str(&format!("    {:<19} {at}: {}", f.class.as_str(), f.detail));
            if let (Some(e), Some(a)) = (&f.expected, &f.actual) {
                out.push_str(&format!(" (expected {e}, got {a})"));
            }
            out.push('\n');
        }
        if report.findings.len() > TEXT_FINDINGS {
            out.push_str("    … use --format json for every finding\n");
        }
    }
    let verdict = match report.exit_code {
        0 if report.has(Class::Unpinned) => {
            "OK, but UNPINNED: trust came from the ledger itself; pin its key with --trusted-key"
        }
        0 => "OK: intact and covered by signed checkpoints",
        2 => {
            "INCOMPLETE or STALE: what is present is intact, but coverage or freshness is not proven"
        }
        _ if report.has(Class::Unwitnessed)
            && report
                .findings
                .iter()
                .all(|f| f.class.exit_code() != 1 || f.class == Class::Unwitnessed) =>
        {
            "FAILED: UNWITNESSED: the checkpoint relied on lacks the policy's quorum of witness cosignatures"
        }
        _ => "FAILED: the ledger was modified, reordered, truncated or signed by an untrusted key",
    };
    out.push_str(&format!("Result: {verdict} (exit {})\n", report.exit_code));
    out
}
