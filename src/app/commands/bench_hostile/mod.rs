//! `changetrail bench hostile`: a server of its own under the worst input its limits allow (an
//! ingest-token holder sending the costliest requests back to back, and a thousand idle or slow
//! connections on every listener) while an honest exporter sends beside them; reports the
//! server's peak memory, what the attack cost the honest exporter, and whether anything the
//! server acknowledged was lost.
//!
//! The parts: `attacks` builds the worst requests for the server's limits, `attackers` sends
//! them, `slow` holds the idle and slow connections, `server` runs the `serve` child, `measure`
//! runs the two phases and checks the database after, `print` reports.

mod attackers;
mod attacks;
mod measure;
mod print;
mod server;
mod slow;

use crate::app::cli::BenchHostileArgs;
use crate::app::config::{Config, DEFAULTS};
use anyhow::{Context, bail};
use attacks::Attack;
use measure::Bench;
use print::Results;
use server::{Scratch, Server};
use slow::slow_connections_allowed;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Runs the bench; 0 when nothing acknowledged was lost and the chain verifies, else 1.
pub async fn run(
    a: BenchHostileArgs,
    config_file: Option<&Path>,
    database_given: bool,
) -> anyhow::Result<i32> {
    if database_given {
        bail!(
            "bench hostile runs a server of its own on a scratch SQLite database; drop --database-url"
        );
    }
    let duration = humantime::parse_duration(&a.duration).context("--duration")?;
    let config_file = config_file
        .map(|f| std::fs::canonicalize(f).with_context(|| format!("--config {}", f.display())))
        .transpose()?;
    let cfg = server_config(config_file.as_deref())?;
    if !cfg.tls.cert_file.as_os_str().is_empty() {
        bail!("bench hostile speaks plain HTTP and gRPC; use a configuration without [tls]");
    }
    let (slow, fd_note) = slow_connections_allowed(a.slow_connections, a.attackers + a.exporters);
    if let Some(n) = &fd_note {
        eprintln!("bench hostile: {n}");
    }

    let scratch = Scratch::new(a.keep.as_deref())?;
    let (key_file, vkey) = scratch_key(&cfg, scratch.path())?;
    let db_url = format!("sqlite://{}", scratch.path().join("ledger.db").display());

    eprintln!("bench hostile: building the attack requests for these limits");
    let attacks = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || Attack::all(&cfg)).await??
    };
    let attacks = Arc::new(select(attacks, &a.attacks)?);

    eprintln!(
        "bench hostile: starting the server in {}",
        scratch.path().display()
    );
    let mut server = Server::start(scratch.path(), config_file.as_deref(), &db_url, &key_file)?;
    server.wait_until_serving().await?;
    let mut bench = Bench::start(server, &a, duration).await?;
    let unloaded = bench.unloaded().await?;
    let attacked = bench.attacked(a.attackers, slow, &attacks).await?;

    eprintln!("bench hostile: stopping the server (SIGTERM) and checking the database");
    let (exit, acked) = bench.stop().await?;
    let checked = measure::check(&db_url, &cfg, &acked, vkey).await?;

    Results {
        config: config_file.as_deref(),
        one_token: a.one_token,
        cfg: &cfg,
        slow,
        fd_note,
        rss_start_kb: bench.rss_start_kb,
        attacks: &attacks,
        unloaded: &unloaded,
        attacked: &attacked,
        exit,
        acked: acked.len(),
        checked: &checked,
    }
    .print();
    if let Some(dir) = scratch.kept() {
        println!("  kept               {}", dir.display());
    }
    Ok(if checked.lost.is_empty() && checked.verify_exit == 0 {
        0
    } else {
        1
    })
}

/// A new ledger key in the scratch directory (the configured origin, or a generated one), and
/// its verifier key to pin when the chain is checked after the run.
fn scratch_key(
    cfg: &Config,
    dir: &Path,
) -> anyhow::Result<(PathBuf, crate::core::ledger::keys::Vkey)> {
    let origin = if cfg.ledger.origin.is_empty() {
        crate::app::keyfile::generated_origin()
    } else {
        crate::core::ledger::keys::Origin::parse(&cfg.ledger.origin)
            .map_err(|e| anyhow::anyhow!("[ledger] origin: {e}"))?
    };
    let key = crate::app::keyfile::generate(origin)?;
    let key_file = dir.join("ledger.key");
    crate::app::keyfile::write_new_key(&key_file, &key)?;
    let vkey = key.vkey().clone();
    drop(key);
    Ok((key_file, vkey))
}

/// The attack kinds `--attacks` names (all when it names none).
fn select(all: Vec<Attack>, names: &[String]) -> anyhow::Result<Vec<Attack>> {
    if names.is_empty() {
        return Ok(all);
    }
    let known: Vec<&str> = all.iter().map(|a| a.name).collect();
    if let Some(bad) = names.iter().find(|n| !known.contains(&n.as_str())) {
        bail!(
            "--attacks: no attack named {bad:?}; there are {}",
            known.join(", ")
        );
    }
    Ok(all
        .into_iter()
        .filter(|a| names.iter().any(|n| n == a.name))
        .collect())
}

/// The server's configuration: the built-in defaults and `--config`, nothing from this shell's
/// environment (the child gets none of it, so a leftover CHANGETRAIL_* setting cannot make the
/// requests built here miss the server's real limits).
fn server_config(file: Option<&Path>) -> anyhow::Result<Config> {
    use figment::Figment;
    use figment::providers::{Format, Toml};
    let mut fig = Figment::from(Toml::string(DEFAULTS));
    if let Some(f) = file {
        fig = fig.merge(Toml::file(f));
    }
    fig.extract()
        .map_err(|e| anyhow::anyhow!("the configuration is invalid: {e}"))
}
