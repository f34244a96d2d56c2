//! `changetrail report soc2` and `changetrail verify-report`.

use crate::app::cli::{Soc2Args, VerifyReportArgs};
use crate::app::config::Config;
use crate::app::startup::open_ledger;
use crate::report::verify::{LedgerSource, verify_report};
use crate::report::{self, Query};
use crate::storage::Store;
use crate::sys::now_ns;
use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use std::sync::Arc;

pub async fn soc2(cfg: Config, a: Soc2Args) -> anyhow::Result<i32> {
    let query = Query {
        from: a.from,
        to: a.to,
        environment: a.environment,
        service: a.service,
        sample: a.sample,
        seed: a.seed,
    };
    // Usage errors before touching the database.
    query.period()?;
    let settings = cfg.report_settings(a.catalogue.as_deref())?;
    let (store, writer) = open_ledger(&cfg, false).await?;
    // Cover everything recorded so far, so the report includes it and can cite it.
    writer.checkpoint().await?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("changes {bar:40} {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let key = writer.key();
    let job = report::Job {
        store: &store,
        key: &key,
        query: &query,
        settings: &settings,
        out: &a.out,
        now_ns: now_ns(),
    };
    let out = report::build(job, Arc::new(super::Bar(bar.clone()))).await?;
    bar.finish_and_clear();
    let m = &out.manifest;
    eprintln!(
        "SOC 2 report for {} to {} written to {} in {:.1} s",
        m.period_start,
        m.period_end,
        out.dir.display(),
        started.elapsed().as_secs_f64()
    );
    eprintln!(
        "  {} production changes, {} exceptions, checkpoint size {}, entries cited {}",
        m.rows.population,
        m.rows.exceptions,
        m.ledger.checkpoint.size,
        match (m.ledger.first_seq, m.ledger.last_seq) {
            (Some(a), Some(b)) => format!("{a}..={b}"),
            _ => "none".into(),
        }
    );
    eprintln!("  ledger: {}", m.ledger.verification);
    for c in &out.controls {
        eprintln!(
            "  {:<16} {:<11} {:>6} tested, {:>5} exceptions  {}",
            c.id, c.result, c.population_tested, c.exceptions, c.title
        );
    }
    if !out.exceptions_by_code.is_empty() {
        let list: Vec<String> = out
            .exceptions_by_code
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        eprintln!("  exceptions by code: {}", list.join(", "));
    }
    eprintln!(
        "Check it with: changetrail verify-report {} --trusted-key {}",
        out.dir.display(),
        m.ledger.vkey
    );
    Ok(0)
}

pub async fn verify(cfg: Config, a: VerifyReportArgs, database_flag: bool) -> anyhow::Result<i32> {
    let trusted = crate::app::commands::verify::parse_keys(&a.trusted_keys)?;
    let source = match (a.bundle, database_flag) {
        (Some(_), true) => bail!("give either --bundle FILE or --database-url, not both"),
        (Some(b), false) => LedgerSource::Bundle(b),
        (None, true) => LedgerSource::Store(
            Store::connect(&cfg.database_url, &cfg.storage_options())
                .await
                .with_context(|| {
                    format!(
                        "cannot open {}",
                        crate::app::startup::redact_url(&cfg.database_url)
                    )
                })?,
        ),
        (None, false) => LedgerSource::None,
    };
    let catalogue = a
        .catalogue
        .as_ref()
        .map(|f| {
            std::fs::read_to_string(f)
                .with_context(|| format!("cannot read the control catalogue {}", f.display()))
        })
        .transpose()?;
    let policy = a
        .policy
        .as_deref()
        .map(super::verify::load_policy)
        .transpose()?;
    let kept = policy.as_ref().map(|_| source.clone());
    let mut outcome =
        verify_report(&a.dir, source, &trusted, a.threads, catalogue.as_deref()).await?;
    if let (Some(policy), Some(source)) = (&policy, &kept) {
        crate::report::verify::check_policy(&a.dir, source, policy, &mut outcome).await?;
    }
    print!("{}", outcome.text(&a.dir));
    Ok(if outcome.failed() { 1 } else { 0 })
}
