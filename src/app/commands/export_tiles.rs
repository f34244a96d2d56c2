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
use std::collections::HashSet;
use std::io::Read;
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
    std::fs::create_dir_all(&a.dir)
        .with_context(|| format!("cannot create {}", a.dir.display()))?;
    // One export at a time per directory: two would share temporary files and could leave the
    // older checkpoint last.
    let lock = std::fs::File::create(a.dir.join(".export.lock"))
        .with_context(|| format!("cannot create the lock file in {}", a.dir.display()))?;
    if lock.try_lock().is_err() {
        eprintln!(
            "Another export is writing to {}; try again when it is done.",
            a.dir.display()
        );
        return Ok(1);
    }
    let with_entries = a.entries || cfg.tlog.public_entries;
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
    // Entry bundles are our entry bytes, which `serve` keeps behind the reviewer role unless
    // `[tlog] public_entries`: a copy bound for a CDN holds them only when asked.
    // A directory exported before without them gets every bundle, not only the new ones.
    let bundles_from = match std::fs::symlink_metadata(a.dir.join("tile/entries")) {
        Ok(_) => old_size,
        Err(_) => 0,
    };
    let bundles = bundles_between(bundles_from, ours.size).filter(|_| with_entries);
    let todo: Vec<Tile> = tiles_between(old_size, ours.size).chain(bundles).collect();
    let mut dirs = Dirs::new(&a.dir)?;
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
        write_atomically(&mut dirs, &tile.path(), &body)?;
        bar.inc(1);
        bar.set_message(format!("{bytes} bytes"));
        // Without a terminal the bar is hidden: a line now and then shows a long export moving.
        if bar.is_hidden() && bar.position().is_multiple_of(PROGRESS_EVERY) {
            eprintln!("{}/{} tiles, {bytes} bytes", bar.position(), todo.len());
        }
    }
    // Last: a reader who sees this checkpoint finds every tile it needs.
    write_atomically(&mut dirs, "checkpoint", note.as_bytes())?;
    bar.finish_and_clear();
    eprintln!(
        "Wrote {} tiles ({bytes} bytes) and the checkpoint of size {} to {} (the directory held size {old_size}){}.",
        todo.len(),
        ours.size,
        a.dir.display(),
        if with_entries {
            ""
        } else {
            "; no entry bundles (reviewer-only: --entries or [tlog] public_entries writes them)"
        },
    );
    drop(lock);
    Ok(0)
}

fn parse_checkpoint(note: &str) -> anyhow::Result<Checkpoint> {
    let note = Note::parse(note).map_err(|e| anyhow::anyhow!("{e}"))?;
    Checkpoint::parse_body(&note.text).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The checkpoint an earlier export left in `dir`, if any.
async fn previous(dir: &Path) -> anyhow::Result<Option<Checkpoint>> {
    let path = dir.join("checkpoint");
    // Not followed if a link, never read past the bound (a link to /dev/zero or a FIFO is not
    // a checkpoint we wrote).
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if !meta.is_file() || meta.len() > MAX_CHECKPOINT_BYTES {
        bail!(
            "{} is not a checkpoint (not a small regular file)",
            path.display()
        );
    }
    let mut text = String::new();
    std::fs::File::open(&path)
        .and_then(|f| f.take(MAX_CHECKPOINT_BYTES).read_to_string(&mut text))
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

/// The directories under the export's root, each checked to be a real directory (not a link
/// someone with write access planted to send tiles elsewhere) the first time it is used.
struct Dirs {
    root: PathBuf,
    checked: HashSet<PathBuf>,
}

impl Dirs {
    fn new(root: &Path) -> anyhow::Result<Dirs> {
        let meta = std::fs::symlink_metadata(root)
            .with_context(|| format!("cannot read {}", root.display()))?;
        if !meta.is_dir() {
            bail!("{} is not a directory", root.display());
        }
        Ok(Dirs {
            root: root.to_owned(),
            checked: HashSet::new(),
        })
    }

    /// `rel`'s directory under the root, created as needed, never through a symbolic link.
    fn parent_of(&mut self, rel: &str) -> anyhow::Result<PathBuf> {
        let mut dir = self.root.clone();
        let parts: Vec<&str> = rel.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            dir.push(part);
            if self.checked.contains(&dir) {
                continue;
            }
            match std::fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => bail!(
                    "{} is not a plain directory: refusing to write through it",
                    dir.display()
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir(&dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?,
                Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
            }
            self.checked.insert(dir.clone());
        }
        Ok(dir)
    }
}

/// Writes `body` to a fresh temporary file beside `rel` (created, never opened through an
/// existing name or link), syncs it and renames it into place, so a reader sees the whole file
/// or none, and a crash never leaves a torn tile behind the checkpoint.
fn write_atomically(dirs: &mut Dirs, rel: &str, body: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = dirs.parent_of(rel)?;
    let name = rel
        .rsplit('/')
        .next()
        .context("a tile path has a file name")?;
    let path = dir.join(name);
    let tmp: PathBuf = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    // A leftover from a crash, or a link planted under that name: removing a link removes only
    // the link.
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", tmp.display())),
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    file.write_all(body)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, &path)
        .with_context(|| format!("cannot rename {} into place", tmp.display()))?;
    Ok(())
}
