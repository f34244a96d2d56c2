//! The ledger as others' tools read it: the checkpoint served to them (C2SP tlog-checkpoint, with
//! the witnesses' cosignatures once they are stored beside it), and its C2SP tlog-tiles.

use crate::core::ledger::cosign::Cosignature;
use crate::core::ledger::note::MAX_SIGNATURES;
use crate::core::ledger::tiles::{Tile, TileKind, push_bundle_entry};
use crate::storage::{CheckpointRow, StorageError, Store};

/// The note served for `cp`: the signed checkpoint as stored, followed by the stored witness
/// cosignature lines (each was verified under its witness's key before it was stored; a line
/// that does not even parse is left out, so the served note always parses).
pub async fn served_checkpoint_note(
    store: &Store,
    cp: &CheckpointRow,
) -> Result<String, StorageError> {
    let mut note = cp.note.clone();
    // A note holds at most MAX_SIGNATURES lines: past that it would no longer parse, anywhere.
    let mut room = MAX_SIGNATURES.saturating_sub(note.matches("\n\u{2014} ").count());
    for row in store.cosignatures(cp.size).await? {
        if room == 0 {
            break;
        }
        if Cosignature::parse_line(&row.line).is_ok() && !note.contains(&row.line) {
            room -= 1;
            note.push_str(&row.line);
            note.push('\n');
        }
    }
    Ok(note)
}

/// The bytes of `tile` as the tlog-tiles API serves them (and `export tiles` writes them): the
/// concatenated hashes of a tree tile, or the u16-length-prefixed entries of a bundle. `None`
/// when a tree of `size` entries (the newest checkpoint's) does not contain the whole tile, so
/// nothing beyond a signed checkpoint is ever served.
pub async fn tile_bytes(
    store: &Store,
    tile: &Tile,
    size: u64,
) -> Result<Option<Vec<u8>>, StorageError> {
    if !tile.within(size) {
        return Ok(None);
    }
    let width = usize::from(tile.width());
    match tile.kind() {
        TileKind::Hashes(_) => {
            let hashes = store.tile_hashes(tile).await?;
            let mut out = Vec::with_capacity(width * 32);
            for h in hashes {
                out.extend_from_slice(h.as_bytes());
            }
            Ok(Some(out))
        }
        TileKind::Entries => {
            let entries = store.bundle_entries(tile).await?;
            let mut out = Vec::with_capacity(entries.iter().map(|e| e.len() + 2).sum());
            let first = tile.first_node().unwrap_or(0);
            for (seq, e) in (first..).zip(&entries) {
                push_bundle_entry(&mut out, seq, e)
                    .map_err(|e| StorageError::Corrupt(e.to_string()))?;
            }
            Ok(Some(out))
        }
    }
}
