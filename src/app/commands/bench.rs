//! Benchmarks: appends through the real sequencer, and bundle verification.

use crate::app::cli::BenchCommand;
use crate::app::commands::verify::{parse_keys, verify_reader};
use crate::app::config::Config;
use crate::app::keyfile;
use crate::app::startup::{open_ledger, redact_url};
use crate::core::ledger::batch::Draft;
use crate::core::ledger::entry::signature_message;
use crate::core::ledger::hash::Hash;
use crate::core::ledger::keys::{LedgerKey, Origin};
use crate::core::ledger::verify::Options;
use crate::pipeline::spawn_sequencer;
use crate::sys::now_ns;
use anyhow::Context;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio_util::sync::CancellationToken;

pub async fn run(
    mut cfg: Config,
    cmd: BenchCommand,
    config_file: Option<&std::path::Path>,
    database_given: bool,
) -> anyhow::Result<i32> {
    match cmd {
        BenchCommand::Ledger {
            entries,
            producers,
            job_size,
        } => {
            // Without --database-url: a scratch SQLite database and key, deleted afterwards.
            let scratch = if database_given {
                None
            } else {
                let dir = tempfile::tempdir()?;
                cfg.database_url = format!("sqlite://{}", dir.path().join("bench.db").display());
                cfg.ledger.key_file = dir.path().join("bench.key");
                cfg.ledger.signing_key = Default::default();
                let key = keyfile::generate(keyfile::generated_origin())?;
                keyfile::write_new_key(&cfg.ledger.key_file, &key)?;
                Some(dir)
            };
            bench_ledger(&cfg, entries, producers.max(1), job_size.max(1)).await?;
            drop(scratch);
            Ok(0)
        }
        BenchCommand::Report {
            changes,
            days,
            keep,
        } => {
            crate::app::commands::bench_report::run(
                cfg,
                changes,
                days,
                keep.as_deref(),
                database_given,
            )
            .await
        }
        BenchCommand::List {
            changes,
            days,
            keep,
        } => {
            crate::app::commands::bench_list::run(
                cfg,
                changes,
                days,
                keep.as_deref(),
                database_given,
            )
            .await
        }
        BenchCommand::Gate {
            changes,
            days,
            decisions,
            keep,
        } => {
            crate::app::commands::bench_gate::run(
                cfg,
                changes,
                days,
                decisions.max(8),
                keep.as_deref(),
                database_given,
            )
            .await
        }
        BenchCommand::Ingest(a) => crate::app::commands::bench_ingest::run(a).await,
        BenchCommand::Hostile(a) => {
            crate::app::commands::bench_hostile::run(a, config_file, database_given).await
        }
        BenchCommand::Binding {
            traces,
            spans,
            senders,
        } => crate::app::commands::bench_ingest::binding(cfg, traces, spans, senders).await,
        BenchCommand::Verify {
            file,
            trusted_keys,
            threads,
        } => {
            let opts = Options {
                trusted: parse_keys(&trusted_keys)?,
                state: None,
                max_age_ns: None,
                now_ns: now_ns(),
                threads,
            };
            let f = std::fs::File::open(&file)
                .with_context(|| format!("cannot open {}", file.display()))?;
            let bytes = f.metadata()?.len();
            let started = Instant::now();
            let report = tokio::task::spawn_blocking(move || {
                verify_reader(std::io::BufReader::with_capacity(1 << 20, f), opts, None)
            })
            .await??;
            let secs = started.elapsed().as_secs_f64();
            let n = report.summary.entries;
            println!(
                "bench verify: {} ({:.1} MB)",
                file.display(),
                bytes as f64 / 1e6
            );
            println!("  entries            {n}");
            println!("  signatures         {}", report.summary.signatures);
            println!(
                "  checkpoints        {} valid of {}",
                report.summary.checkpoints_valid, report.summary.checkpoints
            );
            println!("  seconds            {secs:.2}");
            println!("  verified entries/s {:.0}", n as f64 / secs);
            println!(
                "  peak RSS           {}",
                peak_rss().unwrap_or_else(|| "unknown".into())
            );
            println!(
                "  verdict            exit {} ({} findings)",
                report.exit_code,
                report.findings.len()
            );
            let b = tokio::task::spawn_blocking(verification_baseline).await??;
            println!("  baseline: raw Ed25519 verification on all cores, same run");
            println!(
                "    ed25519-dalek verify_batch (256)   {:.0} signatures/s",
                b.library
            );
            println!(
                "    signature checker alone          {:.0} signatures/s: the ceiling (the verifier reaches {:.2}× of it)",
                b.checker,
                n as f64 / secs / b.checker
            );
            Ok(report.exit_code)
        }
    }
}

/// The process's peak resident memory (VmHWM), from /proc.
pub fn peak_rss() -> Option<String> {
    let kb = vm_hwm_kb("/proc/self/status")?;
    Some(format!("{:.1} MB", kb as f64 / 1024.0))
}

/// VmHWM (peak resident memory, kB) from a /proc/…/status file.
pub fn vm_hwm_kb(status_file: &str) -> Option<u64> {
    std::fs::read_to_string(status_file)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

async fn bench_ledger(
    cfg: &Config,
    total: u64,
    producers: usize,
    job_size: usize,
) -> anyhow::Result<()> {
    let (store, writer) = open_ledger(cfg, true).await?;
    let start_size = store.head().await?.map_or(0, |h| h.head.size);
    let shutdown = CancellationToken::new();
    let (appender, sequencer) = spawn_sequencer(writer.clone(), cfg.sequencer(), shutdown.clone());
    let claimed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let appender = appender.clone();
        let claimed = claimed.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            loop {
                let first = claimed.fetch_add(job_size as u64, Ordering::Relaxed);
                if first >= total {
                    return Ok::<u64, anyhow::Error>(n);
                }
                let count = (total - first).min(job_size as u64);
                let drafts: Vec<Draft> = (first..first + count)
                    .map(|i| synthetic(i, p))
                    .collect::<Result<_, _>>()?;
                appender
                    .append_waiting(drafts)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                n += count;
            }
        }));
    }
    let mut appended = 0;
    for t in tasks {
        appended += t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    shutdown.cancel();
    sequencer.await?;
    let m = &writer.metrics;
    let batches = m.batches.load(Ordering::Relaxed).max(1);
    let entries = m.entries.load(Ordering::Relaxed).max(1);
    let per = |ns: &AtomicU64| ns.load(Ordering::Relaxed) as f64 / entries as f64 / 1000.0;
    let head = store.head().await?.context("no ledger")?;
    println!(
        "bench ledger: {} ({})",
        redact_url(&cfg.database_url),
        match store.backend() {
            crate::storage::Backend::Sqlite => "SQLite",
            crate::storage::Backend::Postgres => "PostgreSQL",
        }
    );
    println!("  entries appended   {appended} by {producers} producers, {job_size} per request");
    println!("  seconds            {secs:.2}");
    println!("  entries/s          {:.0}", appended as f64 / secs);
    println!(
        "  transactions       {batches} (mean {:.0} entries)",
        entries as f64 / batches as f64
    );
    println!(
        "  checkpoints        {}",
        m.checkpoints.load(Ordering::Relaxed)
    );
    println!(
        "  cost per entry (µs of one core for encode/hash; wall-clock for sign on all cores and storage):"
    );
    println!("    encode           {:.2}", per(&m.encode_ns));
    println!("    hash             {:.2}", per(&m.hash_ns));
    println!("    sign             {:.2}", per(&m.sign_ns));
    println!("    storage+commit   {:.2}", per(&m.storage_ns));
    println!(
        "  signed ahead       {} batches used, {} rebuilt (head or stored rows not as predicted)",
        m.prebuilt_used.load(Ordering::Relaxed),
        m.prebuilt_discarded.load(Ordering::Relaxed)
    );
    println!("  ledger size        {} → {}", start_size, head.head.size);
    let rate = appended as f64 / secs;
    let b = tokio::task::spawn_blocking(signing_baseline).await??;
    println!("  baseline: raw Ed25519 signing of 57-byte messages on this machine, same run");
    println!("    one at a time, one core    {:.0} signatures/s", b.one);
    println!("    one at a time, all cores   {:.0} signatures/s", b.all);
    println!(
        "    in batches of 64, all cores {:.0} signatures/s: the ceiling (the ledger reaches {:.2}× of it)",
        b.batched,
        rate / b.batched
    );
    Ok(())
}

/// Signatures per baseline: about a second of work each, so a short stall does not skew it.
const BASELINE_MESSAGES: u64 = 100_000;

/// A key and `BASELINE_MESSAGES` distinct entry signature messages, for the baselines.
fn baseline_messages() -> anyhow::Result<(LedgerKey, Vec<[u8; 57]>)> {
    let key = LedgerKey::from_seed(Origin::parse("bench.example/baseline")?, [7; 32])?;
    let messages = (0..BASELINE_MESSAGES)
        .map(|i| signature_message(&Hash::of(&[&i.to_be_bytes()])))
        .collect();
    Ok((key, messages))
}

/// Ed25519 signatures per second with nothing else to do.
struct SigningBaseline {
    /// `sign`, one signature after another, on one core.
    one: f64,
    /// `sign` on all cores.
    all: f64,
    /// `sign_batch` in chunks of 64 on all cores, as the ledger signs: the ceiling a ledger that
    /// signs every entry cannot pass on this machine.
    batched: f64,
}

fn signing_baseline() -> anyhow::Result<SigningBaseline> {
    use rayon::prelude::*;
    let (key, messages) = baseline_messages()?;
    let rate = |f: &dyn Fn() -> usize| {
        let started = Instant::now();
        // Using the signatures keeps the compiler from skipping the work.
        std::hint::black_box(f());
        messages.len() as f64 / started.elapsed().as_secs_f64()
    };
    Ok(SigningBaseline {
        one: rate(&|| messages.iter().map(|m| key.sign(m)[0] as usize).sum()),
        all: rate(&|| messages.par_iter().map(|m| key.sign(m)[0] as usize).sum()),
        batched: rate(&|| {
            messages
                .par_chunks(64)
                .map(|c| {
                    key.sign_batch(c)
                        .iter()
                        .map(|s| s[0] as usize)
                        .sum::<usize>()
                })
                .sum()
        }),
    })
}

/// Ed25519 signatures per second checked on all cores with nothing else to do.
struct VerificationBaseline {
    /// ed25519-dalek's `verify_batch`, 256 per batch: the library's generic batch check.
    library: f64,
    /// The verifier's own signature checker (`SignatureChecker`: batches of 4,096 of one key in
    /// one equation) fed ready-made signatures: the ceiling for a verifier that checks every
    /// entry's signature on this machine.
    checker: f64,
}

fn verification_baseline() -> anyhow::Result<VerificationBaseline> {
    use crate::core::ledger::sigcheck::{SigJob, SignatureChecker};
    use ed25519_dalek::Signature;
    use rayon::prelude::*;
    let (key, messages) = baseline_messages()?;
    let leaves: Vec<Hash> = (0..messages.len() as u64)
        .map(|i| Hash::of(&[&i.to_be_bytes()]))
        .collect();
    let sigs: Vec<Signature> = key
        .sign_batch(&messages)
        .iter()
        .map(Signature::from_bytes)
        .collect();
    let vk = *key.vkey().public();
    let started = Instant::now();
    let failed = messages
        .par_chunks(256)
        .zip(sigs.par_chunks(256))
        .filter(|(m, s)| {
            let msgs: Vec<&[u8]> = m.iter().map(|m| &m[..]).collect();
            ed25519_dalek::verify_batch(&msgs, s, &vec![vk; m.len()]).is_err()
        })
        .count();
    let library = messages.len() as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut checker = SignatureChecker::new(0);
    for (seq, (leaf, sig)) in leaves.iter().zip(&sigs).enumerate() {
        checker.push(SigJob {
            seq: seq as u64,
            key: vk,
            leaf: *leaf,
            sig: *sig,
        });
    }
    let bad = checker.finish();
    let ours = messages.len() as f64 / started.elapsed().as_secs_f64();
    anyhow::ensure!(
        failed == 0 && bad.is_empty(),
        "the baseline's own signatures did not verify"
    );
    Ok(VerificationBaseline {
        library,
        checker: ours,
    })
}

/// A realistic entry: the kinds and payload sizes the correlation pipeline writes.
fn synthetic(i: u64, producer: usize) -> Result<Draft, crate::core::ledger::batch::DraftError> {
    let change = format!("CHG-{}", 10_000 + i / 8);
    let digest = crate::core::ledger::hash::Hash::of(&[&i.to_be_bytes()]).to_hex();
    let trace = &digest[..32];
    match i % 8 {
        0 => Draft::of(
            "change.requested",
            &change,
            &serde_json::json!({
                "change": change, "kind": "normal", "environment": "production",
                "service": format!("svc-{}", i % 37), "version": format!("1.{}.{}", i % 50, i % 7),
                "artifact": format!("sha256:{digest}"), "requester": {"subject": "alice@example.com", "established": "verified",
                "issuer": "https://idp.example.com", "token_sha256": digest}, "workflow_run": format!("wf-{i}-{producer}"),
            }),
        ),
        1 => Draft::of(
            "approval.decided",
            &change,
            &serde_json::json!({
                "change": change, "decision": "approved", "approver": {"subject": "bob@example.com", "established": "verified",
                "roles": ["release-approver"]}, "requested_at": "2026-11-24T06:00:00Z", "decided_at": "2026-11-24T06:04:10Z",
                "approved_subject": format!("sha256:{digest}"), "method": "span",
            }),
        ),
        2..=4 => Draft::of(
            "task.finished",
            &change,
            &serde_json::json!({
                "change": change, "task": "deploy", "task_run": format!("task-{i}"), "attempt": i % 3,
                "result": if i % 3 == 2 { "success" } else { "timeout" }, "worker": "worker-7",
                "identity": "spiffe://example.com/ns/deploy/sa/runner", "trace_id": trace, "span_id": &digest[32..48],
            }),
        ),
        5 | 6 => Draft::of(
            "spans.bound",
            &change,
            &serde_json::json!({
                "change": change, "rule": "trace", "trace_id": trace,
                "spans": (0..8).map(|k| format!("{}:{}", &digest[k * 4..k * 4 + 16], &digest[48..64])).collect::<Vec<_>>(),
            }),
        ),
        _ => Draft::of(
            "change.finished",
            &change,
            &serde_json::json!({
                "change": change, "result": "success", "attempts": 3, "deployed": format!("sha256:{digest}"),
            }),
        ),
    }
}
