//! Commands that append to the ledger directly (outside a running server) or prepare it.

use crate::app::cli::EraseArgs;
use crate::app::config::Config;
use crate::app::startup::{open_ledger, redact_url};
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

pub async fn import_conductor(
    cfg: Config,
    files: Vec<std::path::PathBuf>,
    max_lateness: Option<String>,
) -> anyhow::Result<i32> {
    let (store, writer) = open_ledger(&cfg, false).await?;
    let policy = cfg.policy();
    let ids = crate::ingest::issuers::for_command(
        cfg.identity_verifier()?,
        &cfg.key_sources(),
        writer.clone(),
    )
    .await?;
    let max_lateness_ns = max_lateness
        .as_deref()
        .map(crate::ingest::conductor::parse_max_lateness)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    // Facts a command imports name the operator who ran it: no API token sent them.
    let operator = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown user".into());
    let sent_by = crate::core::evidence::SentBy {
        token_id: None,
        name: format!("changetrail import conductor (run by {operator})"),
    };
    let mut failed = 0;
    let history = crate::read::history::History::new(store.clone());
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let doc: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", file.display()))?;
        let docs = match doc {
            serde_json::Value::Array(items) => items,
            one => vec![one],
        };
        for (i, d) in docs.iter().enumerate() {
            let intake = crate::core::evidence::Intake {
                received_ns: crate::sys::now_ns(),
                sent_by: Some(sent_by.clone()),
                max_lateness_ns,
                max_clock_skew_ns: i64::try_from(cfg.evidence.max_clock_skew.as_nanos())
                    .unwrap_or(i64::MAX),
            };
            match crate::ingest::conductor::prepare(&history, d, &policy, &ids, &intake).await {
                Ok(p) => {
                    let done = writer.append_with_telemetry(&[], &p.telemetry).await?;
                    eprintln!(
                        "{}[{i}]: run {} (change {}): {} new facts, {} already known{}",
                        file.display(),
                        p.run_id,
                        p.change_id,
                        done.facts_stored,
                        done.facts_duplicate,
                        match &p.rewrite {
                            None => String::new(),
                            Some(r) => format!(
                                "; history rewritten: {}",
                                crate::core::evidence::rewrite::describe(r)
                            ),
                        }
                    );
                }
                Err(e) => {
                    failed += 1;
                    eprintln!("{}[{i}]: not imported: {e}", file.display());
                }
            }
        }
    }
    // Cover what was imported right away: a reviewer's next export includes it.
    writer.checkpoint().await?;
    Ok(if failed == 0 { 0 } else { 1 })
}
