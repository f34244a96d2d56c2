//! Commands that append to the ledger directly (outside a running server) or prepare it.

use crate::cli::EraseArgs;
use crate::config::Config;
use crate::startup::{open_ledger, redact_url};
use crate::storage::Store;
use anyhow::Context;

pub async fn migrate(cfg: Config) -> anyhow::Result<i32> {
    let store = Store::connect(&cfg.database_url, &cfg.storage_options())
        .await
        .with_context(|| format!("cannot open {}", redact_url(&cfg.database_url)))?;
    store.migrate().await?;
    eprintln!("Migrations applied to {}.", redact_url(&cfg.database_url));
    Ok(0)
}

pub async fn erase(cfg: Config, a: EraseArgs) -> anyhow::Result<i32> {
    let (_, writer) = open_ledger(&cfg, false).await?;
    let out = writer.erase(a.seq, &a.reason, &a.requested_by).await?;
    eprintln!(
        "Erased the payload of entry {}; logged as entry {} (checkpoint at size {}).",
        a.seq,
        out.seqs.first().copied().unwrap_or_default(),
        out.checkpoint.unwrap_or_default()
    );
    Ok(0)
}

pub async fn checkpoint(cfg: Config) -> anyhow::Result<i32> {
    let (store, writer) = open_ledger(&cfg, false).await?;
    writer.checkpoint().await?;
    let cp = store.latest_checkpoint().await?.context("no checkpoint")?;
    print!("{}", cp.note);
    Ok(0)
}
