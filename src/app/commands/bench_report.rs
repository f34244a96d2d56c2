//! `changetrail bench report`: a ledger of N synthetic changes (about eleven entries each, from
//! spans and Conductor alike, with a realistic share of exceptions) appended through the real
//! writer, then `report soc2` over the whole period run as a child process, timed, with its peak
//! memory read from /proc while it runs; then `verify-report` against the database.

use crate::app::config::Config;
use crate::app::keyfile;
use crate::app::startup::open_ledger;
use crate::core::evidence::identity::{Established, Principal};
use crate::core::evidence::{
    ApprovalFact, ChangeFact, Fact, FactRecord, Intake, RunFinishedFact, Source, TaskFact,
    VersionFact, version_fact,
};
use crate::pipeline::Telemetry;
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::Path;
use std::time::{Duration, Instant};

/// 2026-01-01T00:00:00Z.
const START_NS: i64 = 1_767_225_600 * 1_000_000_000;
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

/// The facts of change `i`: most are clean with a retried deploy; every 50th is self-approved,
/// every 97th approved late, every 131st rejected and deployed, every 199th an emergency without
/// review, every 211th a rollback of the change before it, every 300th deploys with the previous
/// change's credential; every 500th leaves an unlinked version.
fn change_facts(i: u64, days: u64) -> Vec<FactRecord> {
    let id = format!("CHG-{:06}", i);
    let run = format!("wf-{:06}", i);
    let spread = (days as i64 * 1440 * MIN) / 100_000;
    let t0 = START_NS + (i as i64 % 100_000) * spread.max(MIN) + (i as i64 / 100_000) * MIN;
    let service = format!("svc-{:02}", i % 40);
    let version = format!("1.{}.{}", i / 40, i % 40);
    let digest = format!(
        "sha256:{}",
        crate::core::ledger::hash::Hash::of(&[&i.to_be_bytes()]).to_hex()
    );
    let kind = if i % 199 == 7 {
        "emergency"
    } else if i % 211 == 5 {
        "rollback"
    } else {
        "normal"
    };
    let approver = if i % 50 == 3 {
        "alice@example.com"
    } else {
        "bob@example.com"
    };
    let decided = if i % 97 == 11 {
        t0 + 20 * MIN
    } else {
        t0 + 10 * MIN
    };
    let decision = if i % 131 == 13 {
        "rejected"
    } else {
        "approved"
    };
    let change = |source| ChangeFact {
        pipeline: Some("deploy_service".into()),
        environment: Some("production".into()),
        kind: Some(kind.into()),
        service: Some(service.clone()),
        version: Some(version.clone()),
        artifact: Some(digest.clone()),
        revision: Some(format!("{:07x}", i * 7919 % 0xfff_ffff)),
        rollback_of: (kind == "rollback").then(|| format!("CHG-{:06}", i.saturating_sub(1))),
        justification: None,
        requester: match source {
            Source::Span => verified("alice@example.com", &["engineer"], i),
            _ => None,
        },
        requested_ns: t0,
    };
    let deploy_token = if i % 300 == 17 { i - 1 } else { i };
    let approval = || ApprovalFact {
        decision: decision.into(),
        stated_decision: None,
        approver: verified(approver, &["release-approver"], i),
        requested_ns: Some(t0 + MIN),
        decided_ns: Some(decided),
        approved_subject: Some(digest.clone()),
        task_run_id: Some(format!("{run}-approval")),
    };
    let task = |attempt: u32, result: &str, s: i64, e: i64| TaskFact {
        task: "deploy".into(),
        task_run_id: format!("{run}-deploy-{attempt}"),
        task_type: "deploy".into(),
        attempt,
        retried_from: (attempt > 0).then(|| format!("{run}-deploy-{}", attempt - 1)),
        result: result.into(),
        start_ns: t0 + s * MIN,
        end_ns: t0 + e * MIN,
        worker: Some("deployer-5c8b7".into()),
        identity: verified("spiffe://example.com/deployer", &["deployer"], deploy_token),
        credential_id: None,
        triggered_by: None,
        trace_id: Some(format!("{:032x}", i)),
        span_id: Some(format!("{:016x}", i * 2 + u64::from(attempt))),
        reason: None,
    };
    let mut out = Vec::with_capacity(12);
    for (src, tag) in [(Source::Span, "span"), (Source::Conductor, "conductor")] {
        out.push(record(
            format!("run:{run}:requested:{tag}"),
            &id,
            &run,
            src,
            t0,
            Fact::Change(change(src)),
        ));
        out.push(record(
            format!("approval:{id}:{run}-approval:{tag}"),
            &id,
            &run,
            src,
            decided,
            Fact::Approval(approval()),
        ));
        out.push(record(
            format!("task:{run}:{run}-deploy-0:{tag}"),
            &id,
            &run,
            src,
            t0 + 13 * MIN,
            Fact::Task(task(0, "timeout", 12, 13)),
        ));
        out.push(record(
            format!("task:{run}:{run}-deploy-1:{tag}"),
            &id,
            &run,
            src,
            t0 + 16 * MIN,
            Fact::Task(task(1, "success", 14, 16)),
        ));
    }
    out.push(record(
        format!("run:{run}:finished:span"),
        &id,
        &run,
        Source::Span,
        t0 + 17 * MIN,
        Fact::RunFinished(RunFinishedFact {
            result: "success".into(),
            end_ns: t0 + 17 * MIN,
            compensation_run: None,
        }),
    ));
    let seen = |version: String, at: i64| {
        version_fact(
            VersionFact {
                service: service.clone(),
                environment: "production".into(),
                version,
                first_seen_ns: at,
                trace_id: None,
                previous: None,
            },
            30 * MIN,
            &Intake::default(),
        )
    };
    out.push(seen(version.clone(), t0 + 16 * MIN));
    if i % 500 == 250 {
        out.push(seen(format!("{version}-hotfix"), t0 + 90 * MIN));
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

pub async fn run(
    mut cfg: Config,
    changes: u64,
    days: u64,
    keep: Option<&Path>,
    database_given: bool,
) -> anyhow::Result<i32> {
    let scratch = tempfile::tempdir()?;
    let work = keep.unwrap_or(scratch.path());
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
            .flat_map(|c| change_facts(c, days))
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
    println!("bench report: {changes} changes over {days} days");
    println!(
        "  ledger             {} entries ({} appended in {append_secs:.1} s, {:.0} entries/s)",
        size,
        size - before,
        (size - before) as f64 / append_secs
    );

    let out = work.join(format!("report-{}", crate::sys::now_ns()));
    let out_s = out.display().to_string();
    let env = [(
        "CHANGETRAIL_LEDGER__KEY_FILE",
        cfg.ledger.key_file.display().to_string(),
    )];
    let to = crate::core::time::rfc3339(START_NS + days as i64 * 1440 * MIN + 1440 * MIN);
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
