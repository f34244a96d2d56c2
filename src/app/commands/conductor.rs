//! `changetrail conductor sync [--since T]`: one reconciliation round by hand, or a backfill.

use crate::app::config::Config;
use crate::app::startup::open_ledger;
use crate::conductor::{Reconciler, Sinks};
use crate::pipeline::spawn_sequencer;
use crate::sys::now_ns;
use anyhow::Context;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// `--since`: RFC 3339 text, or an age (`90d`) before now; nanoseconds.
fn since_ns(s: &str, now: i64) -> anyhow::Result<i64> {
    if let Some(t) = crate::core::time::parse_rfc3339(s.trim()) {
        return Ok(t);
    }
    let age = humantime::parse_duration(s.trim()).with_context(|| {
        format!("--since {s:?} is neither a time (2026-11-01T00:00:00Z) nor an age (90d)")
    })?;
    Ok(now.saturating_sub(i64::try_from(age.as_nanos()).unwrap_or(i64::MAX)))
}

pub async fn sync(cfg: Config, since: Option<String>) -> anyhow::Result<i32> {
    if !cfg.conductor.enabled() {
        anyhow::bail!("[conductor] url is not set: there is no Conductor server to sync with");
    }
    let now = now_ns();
    let since = since.as_deref().map(|s| since_ns(s, now)).transpose()?;
    let (store, writer) = open_ledger(&cfg, false).await?;
    let identity = crate::ingest::issuers::for_command(
        cfg.identity_verifier()?,
        &cfg.key_sources(),
        writer.clone(),
    )
    .await?;
    let stop = CancellationToken::new();
    let (appender, sequencer) = spawn_sequencer(writer.clone(), cfg.sequencer(), stop.clone());
    let mut reconciler = Reconciler::new(
        cfg.conductor.settings(),
        Sinks {
            appender,
            store,
            policy: cfg.policy(),
            identity,
            max_clock_skew_ns: i64::try_from(cfg.evidence.max_clock_skew.as_nanos())
                .unwrap_or(i64::MAX),
            metrics: Arc::new(crate::sys::metrics::Registry::default()),
        },
    )
    .map_err(anyhow::Error::msg)?;
    if let Some(t) = since {
        reconciler = reconciler.backfill_from(t, now);
    }
    let round = reconciler
        .round(&stop, |r| {
            eprintln!(
                "page {}: {} executions imported, {} new facts, {} rewrites, cursor at updateTime {}",
                r.pages, r.imported, r.facts_recorded, r.rewrites, r.cursor.update_time_ms
            );
        })
        .await;
    stop.cancel();
    let _ = sequencer.await;
    match round {
        Ok(r) => {
            eprintln!(
                "done: {} executions imported ({} refused as unmappable), {} new facts, {} rewrites recorded, {} runs re-checked{}",
                r.imported,
                r.refused,
                r.facts_recorded,
                r.rewrites,
                r.rechecked,
                if since.is_some() {
                    "; the durable cursor was left alone"
                } else {
                    ""
                }
            );
            // Cover what was imported right away: a reviewer's next export includes it.
            writer.checkpoint().await?;
            Ok(0)
        }
        Err(e) => {
            eprintln!("not complete: {e} (what committed stays; run it again to go on)");
            writer.checkpoint().await?;
            Ok(1)
        }
    }
}
