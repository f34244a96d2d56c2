//! Reads for the tlog-tiles view of the tree: one tile's hashes, one bundle's entry bytes, each a
//! single primary-key range query (every perfect subtree node is stored, so nothing is hashed).

use super::{Result, StorageError, Store, hash, i, u};
use crate::core::ledger::hash::Hash;
use crate::core::ledger::tiles::Tile;

impl Store {
    /// The hashes of `tile` (tree level 8·L, indices N·256 … N·256+W−1) in index order. The
    /// caller has checked that a checkpoint covers the tile, so a missing node is corruption.
    pub async fn tile_hashes(&self, tile: &Tile) -> Result<Vec<Hash>> {
        let (first, last) = node_range(tile)?;
        let level = tile.tree_level();
        let rows: Vec<(i64, Vec<u8>)> = if level == 0 {
            on_pool!(self, p => sqlx::query_as(
                "SELECT seq, leaf_hash FROM entries WHERE seq >= $1 AND seq <= $2 ORDER BY seq")
                .bind(i(first)).bind(i(last)).fetch_all(p).await)?
        } else {
            let level = i32::try_from(level)
                .map_err(|_| StorageError::Corrupt(format!("tile level {level}")))?;
            on_pool!(self, p => sqlx::query_as(
                "SELECT idx, hash FROM tree_nodes WHERE level = $1 AND idx >= $2 AND idx <= $3 ORDER BY idx")
                .bind(level).bind(i(first)).bind(i(last)).fetch_all(p).await)?
        };
        contiguous(tile, first, rows, |h| hash(&h, "tree node"))
    }

    /// The entry bytes of the bundle `tile` (entries N·256 … N·256+W−1) in sequence order.
    pub async fn bundle_entries(&self, tile: &Tile) -> Result<Vec<Vec<u8>>> {
        let (first, last) = node_range(tile)?;
        let rows: Vec<(i64, Vec<u8>)> = on_pool!(self, p => sqlx::query_as(
            "SELECT seq, entry FROM entries WHERE seq >= $1 AND seq <= $2 ORDER BY seq")
            .bind(i(first)).bind(i(last)).fetch_all(p).await)?;
        contiguous(tile, first, rows, Ok)
    }
}

/// The first and last node index of `tile` at its level.
fn node_range(tile: &Tile) -> Result<(u64, u64)> {
    tile.first_node()
        .and_then(|f| Some((f, f.checked_add(u64::from(tile.width()) - 1)?)))
        .ok_or_else(|| StorageError::Corrupt(format!("{tile} lies past any tree")))
}

/// Checks that `rows` hold exactly the indices `first …` the tile needs, and converts them.
fn contiguous<T>(
    tile: &Tile,
    first: u64,
    rows: Vec<(i64, Vec<u8>)>,
    convert: impl Fn(Vec<u8>) -> Result<T>,
) -> Result<Vec<T>> {
    if rows.len() != usize::from(tile.width()) {
        return Err(StorageError::Corrupt(format!(
            "{tile}: {} of {} stored nodes",
            rows.len(),
            tile.width()
        )));
    }
    let mut out = Vec::with_capacity(rows.len());
    for (want, (idx, bytes)) in (first..).zip(rows) {
        if u(idx, "node index")? != want {
            return Err(StorageError::Corrupt(format!(
                "{tile}: node {want} is missing"
            )));
        }
        out.push(convert(bytes)?);
    }
    Ok(out)
}
