use crate::app::cli::ExportArgs;
use crate::app::config::Config;
use crate::read::export;
use crate::storage::Store;
use crate::sys::rfc3339_now;
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::AsyncWriteExt;

pub async fn run(cfg: Config, a: ExportArgs) -> anyhow::Result<i32> {
    // clap requires --out when no subcommand is given.
    let out = a.out.context("--out is required")?;
    let store = Store::connect(&cfg.database_url, &cfg.storage_options()).await?;
    store.migrate().await?;
    let plan = export::plan(&store, a.from, a.to, a.consistency_from).await?;
    if plan.extended_to_checkpoint {
        eprintln!(
            "Note: the range was extended to {} so the next checkpoint covers every entry.",
            plan.end - 1
        );
    }
    if plan.uncovered > 0 {
        eprintln!(
            "Warning: the last {} entries are not covered by a checkpoint yet; verify will report INCOMPLETE.",
            plan.uncovered
        );
    }
    let tmp = out.with_extension("partial");
    let mut file = tokio::io::BufWriter::new(
        tokio::fs::File::create(&tmp)
            .await
            .with_context(|| format!("cannot create {}", tmp.display()))?,
    );
    let bar = ProgressBar::new(plan.end - plan.start);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} entries {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut rx = export::stream(store.clone(), plan.clone(), rfc3339_now());
    while let Some(line) = rx.recv().await {
        let line = line?;
        if line.starts_with("{\"type\":\"entry\"") {
            bar.inc(1);
        }
        file.write_all(line.as_bytes()).await?;
    }
    file.flush().await?;
    file.get_ref().sync_all().await?;
    drop(file);
    tokio::fs::rename(&tmp, &out).await?;
    bar.finish_and_clear();
    eprintln!(
        "Exported entries {}..={} to {}.",
        plan.start,
        plan.end - 1,
        out.display()
    );
    Ok(0)
}
