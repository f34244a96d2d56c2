//! `changetrail bench list`: the change list over `bench report`'s synthetic ledger, a page of 50
//! for a day, a month and every change, answered from the per-change summary and, as the
//! baseline in the same run, by folding the period (how the list answered before the summary).
//! Also what building the summary from nothing costs, what keeping it costs for one more
//! appended change, and how long the four keys of a month and of every day take.

use crate::app::commands::bench_report::{facts, kept_or_built};
use crate::app::config::Config;
use crate::app::startup::open_ledger;
use crate::demo::scenario::{SYNTHETIC_START_NS, Synthetic};
use crate::pipeline::Telemetry;
use crate::read::changes::{ChangeFilter, Judged, list_folded, list_judged};
use crate::read::summary::catch_up;
use crate::storage::SummaryState;
use anyhow::Context;
use std::path::Path;
use std::time::Instant;

const DAY_NS: i64 = 86_400 * 1_000_000_000;
const PAGE: usize = 50;

fn ids(page: &(Vec<Judged>, usize)) -> (Vec<&str>, usize) {
    (
        page.0
            .iter()
            .map(|j| j.evidence.change.id.as_str())
            .collect(),
        page.1,
    )
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

pub async fn run(
    cfg: Config,
    changes: u64,
    days: u64,
    keep: Option<&Path>,
    database_given: bool,
) -> anyhow::Result<i32> {
    let (cfg, _scratch) = kept_or_built(cfg, changes, days, keep, database_given, "list").await?;
    let (store, writer) = open_ledger(&cfg, false).await?;
    let criteria = cfg.criteria();
    let size = store.head().await?.context("no ledger")?.head.size;

    // From nothing: a state under other settings makes the summary start again.
    let state = store.summary_state().await?;
    let stale = SummaryState {
        through: None,
        criteria: "bench list: start again".into(),
    };
    store
        .write_summary(state.as_ref(), &stale, &[], &[], true)
        .await?;
    let t = Instant::now();
    catch_up(&store, &criteria, None).await?;
    println!(
        "  summary            built from nothing in {:.1} s ({size} entries)",
        t.elapsed().as_secs_f64()
    );

    let mid = SYNTHETIC_START_NS + (days as i64 / 2) * DAY_NS;
    let periods = [
        ("a day", mid, mid + DAY_NS, None),
        ("a month", mid, mid + 30 * DAY_NS, None),
        (
            "a month, one code",
            mid,
            mid + 30 * DAY_NS,
            Some("NO_APPROVAL"),
        ),
        ("every change", i64::MIN, i64::MAX, None),
    ];
    let mut differ = false;
    for (what, from_ns, to_ns, code) in periods {
        let f = ChangeFilter {
            from_ns,
            to_ns,
            ..Default::default()
        };
        // The median of five: the first run warms the caches.
        let mut times = Vec::new();
        let mut summarised = None;
        for _ in 0..5 {
            let t = Instant::now();
            summarised = Some(list_judged(&store, &f, &criteria, code, 0, PAGE).await?);
            times.push(ms(t));
        }
        times.sort_by(f64::total_cmp);
        let t = Instant::now();
        let folded = list_folded(&store, &f, &criteria, code, 0, PAGE).await?;
        let baseline = ms(t);
        let summarised = summarised.context("no run")?;
        let same = ids(&summarised) == ids(&folded);
        differ |= !same;
        println!(
            "  list, {what:<17} {:>8.1} ms from the summary, {:>9.1} ms folding the period (baseline); {} changes{}",
            times[2],
            baseline,
            summarised.1,
            if same { "" } else { " — THE PAGES DIFFER" }
        );
    }

    // The four keys (GET /v1/delivery, the dashboard) fold the period and 90 days before it:
    // no summary answers them yet.
    for (what, from_ns, to_ns) in [
        ("a month", mid, mid + 30 * DAY_NS),
        (
            "every day",
            SYNTHETIC_START_NS,
            SYNTHETIC_START_NS + days.max(1) as i64 * DAY_NS,
        ),
    ] {
        let t = Instant::now();
        let d = crate::read::delivery::delivery(&store, &criteria, from_ns, to_ns, None).await?;
        println!(
            "  delivery, {what:<10} {:>8.1} ms folding the period and 90 days before it; {} deployments, {} failures",
            ms(t),
            d.keys.all.deployments,
            d.keys.failures.len()
        );
    }

    // Keeping it: one more change appended, then the step that takes it in.
    // A change not in the ledger yet (a kept ledger grows by one each run).
    let next = Synthetic::new(changes + size, days);
    writer
        .append_with_telemetry(
            &[],
            &Telemetry {
                facts: facts(&next),
                ..Default::default()
            },
        )
        .await?;
    let t = Instant::now();
    catch_up(&store, &criteria, None).await?;
    println!(
        "  summary            one more change taken in: {:.1} ms",
        ms(t)
    );
    store.close().await;
    Ok(if differ { 1 } else { 0 })
}
