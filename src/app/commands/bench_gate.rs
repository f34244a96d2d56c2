//! `changetrail bench gate`: deploy gate decisions (`POST /v1/gate`'s work: read the change's
//! evidence, judge it, decide, append the decision and wait for its commit) over `bench report`'s
//! synthetic ledger, one after another and from concurrent workflows; with, as the baseline in
//! the same run, the read and judgement alone (what `GET /v1/changes/{id}` folds), so what the
//! recording costs is plain.

use crate::app::commands::bench_report::kept_or_built;
use crate::app::config::Config;
use crate::app::startup::open_ledger;
use crate::core::evidence::SentBy;
use crate::core::evidence::gate::GateRequest;
use crate::demo::scenario::Synthetic;
use crate::pipeline::spawn_sequencer;
use crate::read::changes::evidence_of;
use anyhow::Context;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// p50, p99 and the maximum of `times` (sorted here), in milliseconds.
fn quantiles(times: &mut [Duration]) -> (f64, f64, f64) {
    times.sort();
    let at = |q: f64| {
        let i = ((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1;
        times[i].as_secs_f64() * 1e3
    };
    (at(0.5), at(0.99), at(1.0))
}

/// The change `i`-th of `n` decisions asks about: spread over the whole population.
fn pick(i: u64, changes: u64) -> u64 {
    (i.wrapping_mul(2_654_435_761)) % changes.max(1)
}

pub async fn run(
    cfg: Config,
    changes: u64,
    days: u64,
    decisions: u64,
    keep: Option<&Path>,
    database_given: bool,
) -> anyhow::Result<i32> {
    let (cfg, _scratch) = kept_or_built(cfg, changes, days, keep, database_given, "gate").await?;
    let (store, writer) = open_ledger(&cfg, false).await?;
    let criteria = cfg.criteria();
    let shutdown = CancellationToken::new();
    let (appender, sequencer) = spawn_sequencer(writer.clone(), cfg.sequencer(), shutdown.clone());
    let size = store.head().await?.context("no ledger")?.head.size;
    println!("  ledger             {size} entries");
    let request = |i: u64| {
        let c = Synthetic::new(pick(i, changes), days);
        GateRequest {
            change_id: c.change,
            environment: "production".into(),
            artifact_digest: c.artifact,
        }
    };
    let asked_by = SentBy {
        token_id: None,
        name: "bench gate".into(),
    };

    // The baseline: the change's evidence read and judged, nothing decided or recorded.
    let mut times = Vec::new();
    for i in 0..decisions {
        let t = Instant::now();
        evidence_of(&store, &request(i).change_id, &criteria).await?;
        times.push(t.elapsed());
    }
    let (p50, p99, max) = quantiles(&mut times);
    println!(
        "  read and judge     p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms ({decisions} changes; the baseline)"
    );

    // One workflow at a time: each decision read, decided, appended and committed.
    let mut times = Vec::new();
    let (mut allowed, mut denied) = (0u64, 0u64);
    for i in 0..decisions {
        let t = Instant::now();
        let d = crate::read::gate::decide(
            &store,
            &appender,
            &criteria,
            &request(i + decisions),
            asked_by.clone(),
        )
        .await?;
        times.push(t.elapsed());
        if d.fact.allowed() {
            allowed += 1;
        } else {
            denied += 1;
        }
    }
    let (p50, p99, max) = quantiles(&mut times);
    println!(
        "  gate, sequential   p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms ({allowed} allowed, {denied} denied, each committed before its answer)"
    );

    // Eight workflows asking at once: decisions share the sequencer's batches.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..8u64 {
        let (store, appender, criteria, asked_by) = (
            store.clone(),
            appender.clone(),
            criteria.clone(),
            asked_by.clone(),
        );
        let reqs: Vec<GateRequest> = (0..decisions / 8)
            .map(|i| request(2 * decisions + w * decisions + i))
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            for r in reqs {
                let t = Instant::now();
                crate::read::gate::decide(&store, &appender, &criteria, &r, asked_by.clone())
                    .await?;
                times.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(times)
        }));
    }
    let mut times = Vec::new();
    for t in tasks {
        times.extend(t.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    let n = times.len();
    let (p50, p99, max) = quantiles(&mut times);
    println!(
        "  gate, 8 at once    p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms ({n} decisions, {:.0} decisions/s)",
        n as f64 / secs
    );
    shutdown.cancel();
    sequencer.await?;
    store.close().await;
    Ok(0)
}
