//! `changetrail export tiles DIR`: the tlog-tiles files `serve` answers under `[tlog] prefix`,
//! written statically (for object storage or a CDN) for the newest checkpoint, incrementally: a
//! directory already holding an older checkpoint of this ledger gets only the tiles that are new
//! or grew since, and the checkpoint last, so a reader never sees a checkpoint whose tiles are
//! missing.

use crate::app::cli::ExportTilesArgs;
use crate::app::config::Config;
use crate::core::ledger::note::{Checkpoint, Note};
use crate::core::ledger::tiles::{Tile, bundles_between, tiles_between};
use crate::read::tlog::{served_checkpoint_note, tile_bytes};
use crate::storage::Store;
use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

/// Tiles between progress lines when no terminal shows the bar.
const PROGRESS_EVERY: u64 = 1000;

/// A directory's checkpoint larger than this is not one we wrote.
const MAX_CHECKPOINT_BYTES: u64 = 64 * 1024;

pub async fn run(cfg: Config, a: ExportTilesArgs) -> anyhow::Result<i32> {
    let store = Store::connect(&cfg.database_url, &cfg.storage_options()).await?;
    store.migrate().await?;
    let cp = store
        .latest_checkpoint()
        .await?
        .context("the ledger has no checkpoint yet: nothing to export")?;
    let note = served_checkpoint_note(&store, &cp).await?;
    let ours = parse_checkpoint(&note).context("the newest stored checkpoint does not parse")?;
    let old_size = match previous(&a.dir).await? {
        None => 0,
        Some(theirs) => match check_previous(&store, &ours, &theirs).await {
            Ok(size) => size,
            Err(e) => {
                eprintln!("Refusing to write to {}: {e}", a.dir.display());
                return Ok(1);
            }
        },
    };
    let todo: Vec<Tile> = tiles_between(old_size, ours.size)
        .chain(bundles_between(old_size, ours.size))
        .collect();
    let bar = ProgressBar::new(todo.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} tiles {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut bytes = 0u64;
    for tile in &todo {
        // Tiles are read one at a time (at most 256 entries), so memory stays flat.
        let body = tile_bytes(&store, tile, ours.size)
            .await?
            .with_context(|| format!("{tile} is not within checkpoint {}", ours.size))?;
        bytes += body.len() as u64;
        write_atomically(&a.dir.join(tile.path()), &body).await?;
        bar.inc(1);
        bar.set_message(format!("{bytes} bytes"));
        // Without a terminal the bar is hidden: a line now and then shows a long export moving.
        if bar.is_hidden() && bar.position().is_multiple_of(PROGRESS_EVERY) {
            eprintln!("{}/{} tiles, {bytes} bytes", bar.position(), todo.len());
        }
    }
    // Last: a reader who sees this checkpoint finds every tile it needs.
    write_atomically(&a.dir.join("checkpoint"), note.as_bytes()).await?;
    bar.finish_and_clear();
    eprintln!(
        "Wrote {} tiles ({bytes} bytes) and the checkpoint of size {} to {} (the directory held size {old_size}).",
        todo.len(),
        ours.size,
        a.dir.display(),
    );
    Ok(0)
}

fn parse_checkpoint(note: &str) -> anyhow::Result<Checkpoint> {
    let note = Note::parse(note).map_err(|e| anyhow::anyhow!("{e}"))?;
    Checkpoint::parse_body(&note.text).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The checkpoint an earlier export left in `dir`, if any.
async fn previous(dir: &Path) -> anyhow::Result<Option<Checkpoint>> {
    let path = dir.join("checkpoint");
    let meta = match tokio::fs::metadata(&path).await {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if meta.len() > MAX_CHECKPOINT_BYTES {
        bail!("{} is not a checkpoint (too large)", path.display());
    }
    let text = tokio::fs::read_to_string(&path)
        .await
        .with_context(|| format!("cannot read {}", path.display()))?;
    parse_checkpoint(&text)
        .map(Some)
        .with_context(|| format!("{} is not a checkpoint", path.display()))
}

/// The size the directory already holds, when its checkpoint is one this ledger signed; the
/// reason otherwise (another ledger, a larger tree: a fork or a rollback).
async fn check_previous(
    store: &Store,
    ours: &Checkpoint,
    theirs: &Checkpoint,
) -> anyhow::Result<u64> {
    if theirs.origin != ours.origin {
        bail!(
            "its checkpoint is for origin {}, this ledger is {}",
            theirs.origin,
            ours.origin
        );
    }
    if theirs.size > ours.size {
        bail!(
            "its checkpoint has {} entries, more than this ledger's newest ({}): a rollback or a fork",
            theirs.size,
            ours.size
        );
    }
    // Every checkpoint this ledger signed is stored, and all are consistent with each other.
    match store.checkpoint_at(theirs.size).await? {
        Some(cp) if cp.root == theirs.root => Ok(theirs.size),
        _ => bail!(
            "its checkpoint of size {} has a root this ledger never signed: a fork",
            theirs.size
        ),
    }
}

/// Writes `body` to a temporary name beside `path`, syncs it and renames it into place, so a
/// reader sees the whole file or none, and a crash never leaves a torn tile behind the checkpoint.
async fn write_atomically(path: &Path, body: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("a tile path has a directory")?;
    tokio::fs::create_dir_all(dir)
        .await
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let name = path
        .file_name()
        .context("a tile path has a file name")?
        .to_string_lossy();
    let tmp: PathBuf = dir.join(format!(".{name}.tmp"));
    let file = tokio::fs::File::create(&tmp)
        .await
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut file = tokio::io::BufWriter::new(file);
    tokio::io::AsyncWriteExt::write_all(&mut file, body).await?;
    tokio::io::AsyncWriteExt::flush(&mut file).await?;
    file.get_ref().sync_all().await?;
    drop(file);
    tokio::fs::rename(&tmp, path)
        .await
        .with_context(|| format!("cannot rename {} into place", tmp.display()))?;
    Ok(())
}
