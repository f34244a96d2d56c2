//! `changetrail bench report`: a ledger of N synthetic changes (`demo::scenario::Synthetic`,
//! the population the tests also send as spans; about eleven entries each, from spans and
//! Conductor alike, with a realistic share of exceptions) appended through the real writer, then
//! `report soc2` over the whole period run as a child process, timed, with its peak memory read
//! from /proc while it runs; then `verify-report` against the database.

use crate::app::config::Config;
use crate::app::keyfile;
use crate::app::startup::open_ledger;
use crate::core::evidence::identity::{Established, Principal};
use crate::core::evidence::{
    ApprovalFact, ChangeFact, Fact, FactRecord, Intake, RunFinishedFact, Source, TaskFact,
    VersionFact, version_fact,
};
use crate::demo::scenario::{Attempt, SYNTHETIC_DEPLOYER, SYNTHETIC_START_NS, Synthetic};
use crate::pipeline::Telemetry;
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::Path;
use std::time::{Duration, Instant};

const MIN: i64 = 60_000_000_000;

/// A verified identity whose token is the `token`-th one issued to `sub` (each change carries
/// tokens of its own, as a rotating issuer hands them out).
fn verified(sub: &str, roles: &[&str], token: u64) -> Option<Principal> {
    Some(Principal {
        subject: Some(sub.to_owned()),
        established: Established::Verified {
            issuer: "https://idp.example.com".into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            expires_ns: None,
            token_sha256: crate::core::ledger::hash::Hash::of(&[
                sub.as_bytes(),
                &token.to_be_bytes(),
            ])
            .to_hex(),
            signed_sha256: String::new(),
            jti: None,
            bound_change: None,
            bound_artifact: None,
        },
    })
}

fn record(key: String, change: &str, run: &str, source: Source, t: i64, fact: Fact) -> FactRecord {
    FactRecord {
        key,
        change_id: Some(change.to_owned()),
        run_id: Some(run.to_owned()),
        source,
        time_ns: t,
        stated_until_ns: None,
        sent_by: None,
        // A backfill of last year's history: late by design, and allowed to be.
        max_lateness_ns: Some(10 * 366 * 1440 * MIN),
        fact,
    }
}

/// The facts change `c` states, from spans and Conductor alike, for appending directly through
/// the writer: decoding and token verification on the way in are `bench ingest`'s to time. Every
/// identity is verified, with a token of its own (the deploys' is their credential's). The test
/// `bench_reports_changes_are_judged_as_their_spans_are` holds them to `c.items()` sent as spans.
pub fn facts(c: &Synthetic) -> Vec<FactRecord> {
    let (id, run) = (c.change.as_str(), c.run.as_str());
    let decided = c.at(c.approval_decided);
    let change = |source| ChangeFact {
        pipeline: Some("deploy_service".into()),
        environment: Some("production".into()),
        kind: Some(c.kind.into()),
        service: Some(c.service.clone()),
        version: Some(c.version.clone()),
        artifact: Some(c.artifact.clone()),
        revision: Some(c.revision.clone()),
        rollback_of: c.rollback_of.clone(),
        justification: None,
        requester: match source {
            Source::Span => verified(c.requester, &["engineer"], c.index),
            _ => None,
        },
        requested_ns: c.t0_ns,
    };
    let approval = || ApprovalFact {
        decision: c.decision.into(),
        stated_decision: None,
        approver: verified(c.approver, &["release-approver"], c.index),
        requested_ns: Some(c.at(c.approval_requested)),
        decided_ns: Some(decided),
        approved_subject: Some(c.artifact.clone()),
        task_run_id: Some(format!("{run}-approval")),
    };
    let task = |a: &Attempt| TaskFact {
        task: "deploy".into(),
        task_run_id: format!("{run}-deploy-{}", a.attempt),
        task_type: "deploy".into(),
        attempt: a.attempt,
        retried_from: (a.attempt > 0).then(|| format!("{run}-deploy-{}", a.attempt - 1)),
        result: a.result.into(),
        start_ns: c.at(a.start),
        end_ns: c.at(a.end),
        worker: Some("deployer-5c8b7".into()),
        identity: verified(SYNTHETIC_DEPLOYER, &["deployer"], c.credential_of),
        credential_id: None,
        triggered_by: None,
        trace_id: Some(format!("{:032x}", c.index)),
        span_id: Some(format!("{:016x}", c.index * 2 + u64::from(a.attempt))),
        reason: None,
    };
    let mut out = Vec::with_capacity(12);
    for (src, tag) in [(Source::Span, "span"), (Source::Conductor, "conductor")] {
        out.push(record(
            format!("run:{run}:requested:{tag}"),
            id,
            run,
            src,
            c.t0_ns,
            Fact::Change(change(src)),
        ));
        out.push(record(
            format!("approval:{id}:{run}-approval:{tag}"),
            id,
            run,
            src,
            decided,
            Fact::Approval(approval()),
        ));
        for a in &c.attempts {
            out.push(record(
                format!("task:{run}:{run}-deploy-{}:{tag}", a.attempt),
                id,
                run,
                src,
                c.at(a.end),
                Fact::Task(task(a)),
            ));
        }
    }
    out.push(record(
        format!("run:{run}:finished:span"),
        id,
        run,
        Source::Span,
        c.at(c.finished),
        Fact::RunFinished(RunFinishedFact {
            result: "success".into(),
            end_ns: c.at(c.finished),
            compensation_run: None,
        }),
    ));
    for (version, at) in &c.seen {
        out.push(version_fact(
            VersionFact {
                service: c.service.clone(),
                environment: "production".into(),
                version: version.clone(),
                first_seen_ns: c.at(*at),
                trace_id: None,
                previous: None,
            },
            30 * MIN,
            &Intake::default(),
        ));
    }
    out
}

/// Runs this binary with `args`, returning (exit code, seconds, peak RSS in MB).
fn timed_child(args: &[&str], env: &[(&str, String)]) -> anyhow::Result<(i32, f64, f64)> {
    let exe = std::env::current_exe()?;
    let started = Instant::now();
    let mut cmd = std::process::Command::new(exe);
    cmd.args(args)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn()?;
    let mut peak = 0;
    let code = loop {
        if let Some(kb) =
            crate::app::commands::bench::vm_hwm_kb(&format!("/proc/{}/status", child.id()))
        {
            peak = peak.max(kb);
        }
        if let Some(status) = child.try_wait()? {
            break status.code().unwrap_or(-1);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok((code, started.elapsed().as_secs_f64(), peak as f64 / 1024.0))
}

/// The synthetic ledger a benchmark reads: the one kept in `keep` when it holds one (`bench
/// report --keep DIR` or an earlier run made it; used as it is), else one built there, or in a
/// scratch directory that lives as long as the returned handle.
pub async fn kept_or_built(
    cfg: Config,
    changes: u64,
    days: u64,
    keep: Option<&Path>,
    database_given: bool,
    what: &str,
) -> anyhow::Result<(Config, tempfile::TempDir)> {
    let scratch = tempfile::tempdir()?;
    let work = keep.unwrap_or(scratch.path());
    if keep.is_some() && !database_given && work.join("bench-report.db").exists() {
        let mut cfg = cfg;
        cfg.database_url = format!("sqlite://{}", work.join("bench-report.db").display());
        cfg.ledger.key_file = work.join("bench-report.key");
        cfg.ledger.signing_key = Default::default();
        println!("bench {what}: the ledger kept in {}", work.display());
        return Ok((cfg, scratch));
    }
    let cfg = build_ledger(cfg, changes, days, work, database_given, what).await?;
    Ok((cfg, scratch))
}

/// A synthetic ledger of `changes` changes over `days` days in `work` (SQLite there unless a
/// database was given), appended through the real writer and checkpointed: the configuration to
/// reach it. Prints how long appending took.
pub async fn build_ledger(
    mut cfg: Config,
    changes: u64,
    days: u64,
    work: &Path,
    database_given: bool,
    what: &str,
) -> anyhow::Result<Config> {
    std::fs::create_dir_all(work)?;
    if !database_given {
        cfg.database_url = format!("sqlite://{}", work.join("bench-report.db").display());
        // Benchmark data need not survive a power cut; the report reads it the same way.
        cfg.storage.sqlite_synchronous = crate::app::config::SqliteSynchronous::Normal;
    }
    cfg.ledger.key_file = work.join("bench-report.key");
    cfg.ledger.signing_key = Default::default();
    cfg.ledger.checkpoint_every = 100_000;
    if !cfg.ledger.key_file.exists() {
        keyfile::write_new_key(
            &cfg.ledger.key_file,
            &keyfile::generate(keyfile::generated_origin())?,
        )?;
    }
    let (store, writer) = open_ledger(&cfg, false).await?;
    let before = store.head().await?.map_or(0, |h| h.head.size);
    let bar = ProgressBar::new(changes);
    bar.set_style(
        ProgressStyle::with_template("appending {bar:40} {pos}/{len} changes {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let per_call = 200u64;
    let mut i = 0;
    while i < changes {
        let facts: Vec<FactRecord> = (i..(i + per_call).min(changes))
            .flat_map(|c| facts(&Synthetic::new(c, days)))
            .collect();
        writer
            .append_with_telemetry(
                &[],
                &Telemetry {
                    facts,
                    ..Default::default()
                },
            )
            .await?;
        i = (i + per_call).min(changes);
        bar.set_position(i);
    }
    writer.checkpoint().await?;
    bar.finish_and_clear();
    let size = store.head().await?.context("no ledger")?.head.size;
    let append_secs = started.elapsed().as_secs_f64();
    store.close().await;
    drop(writer);
    println!("bench {what}: {changes} changes over {days} days");
    println!(
        "  ledger             {} entries ({} appended in {append_secs:.1} s, {:.0} entries/s)",
        size,
        size - before,
        (size - before) as f64 / append_secs
    );
    Ok(cfg)
}

pub async fn run(
    cfg: Config,
    changes: u64,
    days: u64,
    keep: Option<&Path>,
    database_given: bool,
) -> anyhow::Result<i32> {
    let scratch = tempfile::tempdir()?;
    let work = keep.unwrap_or(scratch.path());
    let cfg = build_ledger(cfg, changes, days, work, database_given, "report").await?;
    let out = work.join(format!("report-{}", crate::sys::now_ns()));
    let out_s = out.display().to_string();
    let env = [(
        "CHANGETRAIL_LEDGER__KEY_FILE",
        cfg.ledger.key_file.display().to_string(),
    )];
    let to = crate::core::time::rfc3339(SYNTHETIC_START_NS + days as i64 * 1440 * MIN + 1440 * MIN);
    let (code, secs, mb) = timed_child(
        &[
            "--database-url",
            &cfg.database_url,
            "report",
            "soc2",
            "--from",
            "2026-01-01",
            "--to",
            &to,
            "--out",
            &out_s,
            "--sample",
            "25",
            "--seed",
            "bench",
        ],
        &env,
    )?;
    anyhow::ensure!(code == 0, "report soc2 exited {code}");
    let manifest: crate::report::Manifest =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json"))?)?;
    println!("  report soc2        {secs:.1} s, peak RSS {mb:.0} MB");
    println!(
        "    rows             {} population, {} exceptions, {} sample; ledger {}",
        manifest.rows.population,
        manifest.rows.exceptions,
        manifest.rows.sample,
        manifest.ledger.verification
    );
    for f in &manifest.files {
        println!("    {:<16} {:>8.1} MB", f.name, f.bytes as f64 / 1e6);
    }
    let (code, secs, mb) = timed_child(
        &[
            "--database-url",
            &cfg.database_url,
            "verify-report",
            &out_s,
            "--trusted-key",
            &manifest.ledger.vkey,
        ],
        &env,
    )?;
    println!(
        "  verify-report      {secs:.1} s, peak RSS {mb:.0} MB, exit {code} (against the database)"
    );
    if keep.is_some() {
        println!(
            "  kept               {} (database, key, report)",
            work.display()
        );
    }
    Ok(if code == 0 { 0 } else { 1 })
}
