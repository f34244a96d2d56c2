//! The Merkle tree over the entries: stored inner nodes (leaves are the entries' leaf hashes) and
//! the signed checkpoints of its roots.

use super::{AppendTx, Result, StorageError, Store, hash, i, u};
use crate::core::ledger::hash::Hash;
use crate::core::ledger::merkle::NodeId;

/// A signed checkpoint: the tree root at `size` and the note carrying its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRow {
    pub size: u64,
    pub root: Hash,
    pub note: String,
    pub key_id: String,
    pub created_ns: i64,
}

type CheckpointTuple = (i64, Vec<u8>, String, String, i64);

fn checkpoint_row(t: CheckpointTuple) -> Result<CheckpointRow> {
    Ok(CheckpointRow {
        size: u(t.0, "checkpoint size")?,
        root: hash(&t.1, "checkpoint root")?,
        note: t.2,
        key_id: t.3,
        created_ns: t.4,
    })
}

impl Store {
    /// The checkpoint of the largest size.
    pub async fn latest_checkpoint(&self) -> Result<Option<CheckpointRow>> {
        let t: Option<CheckpointTuple> = on_pool!(self, p => sqlx::query_as(
            "SELECT size, root, note, key_id, created_ns FROM checkpoints ORDER BY size DESC LIMIT 1")
            .fetch_optional(p)
            .await)?;
        t.map(checkpoint_row).transpose()
    }

    /// Checkpoints with `lo < size <= hi`, ascending.
    pub async fn checkpoints_between(&self, lo: u64, hi: u64) -> Result<Vec<CheckpointRow>> {
        let rows: Vec<CheckpointTuple> = on_pool!(self, p => sqlx::query_as(
            "SELECT size, root, note, key_id, created_ns FROM checkpoints WHERE size > $1 AND size <= $2 ORDER BY size")
            .bind(i(lo))
            .bind(i(hi))
            .fetch_all(p)
            .await)?;
        rows.into_iter().map(checkpoint_row).collect()
    }

    /// The smallest checkpoint of at least `size` entries.
    pub async fn checkpoint_covering(&self, size: u64) -> Result<Option<CheckpointRow>> {
        let t: Option<CheckpointTuple> = on_pool!(self, p => sqlx::query_as(
            "SELECT size, root, note, key_id, created_ns FROM checkpoints WHERE size >= $1 ORDER BY size LIMIT 1")
            .bind(i(size))
            .fetch_optional(p)
            .await)?;
        t.map(checkpoint_row).transpose()
    }

    /// The checkpoint of exactly `size` entries.
    pub async fn checkpoint_at(&self, size: u64) -> Result<Option<CheckpointRow>> {
        let t: Option<CheckpointTuple> = on_pool!(self, p => sqlx::query_as(
            "SELECT size, root, note, key_id, created_ns FROM checkpoints WHERE size = $1")
            .bind(i(size))
            .fetch_optional(p)
            .await)?;
        t.map(checkpoint_row).transpose()
    }

    /// Hashes of perfect subtrees, in the order asked; an absent node is corruption.
    pub async fn nodes(&self, ids: &[NodeId]) -> Result<Vec<Hash>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let h: Option<(Vec<u8>,)> = if id.level == 0 {
                on_pool!(self, p => sqlx::query_as("SELECT leaf_hash FROM entries WHERE seq = $1")
                    .bind(i(id.idx)).fetch_optional(p).await)?
            } else {
                on_pool!(self, p => sqlx::query_as("SELECT hash FROM tree_nodes WHERE level = $1 AND idx = $2")
                    .bind(i32::from(id.level)).bind(i(id.idx)).fetch_optional(p).await)?
            };
            let h = h.ok_or_else(|| {
                StorageError::Corrupt(format!("tree node {}/{} is missing", id.level, id.idx))
            })?;
            out.push(hash(&h.0, "tree node")?);
        }
        Ok(out)
    }

    /// Stored tree nodes (level ≥ 1) completed by leaves in `(lo, hi]`, in completion order:
    /// by the end of their leaf range, then by level — the order `CompactRange::push` makes them.
    ///
    /// A node (level L, index i) ends at leaf (i + 1)·2^L, so per level the nodes wanted are the
    /// index range [lo >> L, (hi >> L) − 1]: one primary-key range per level instead of a scan of
    /// the whole table (which made auditing a million-entry ledger quadratic).
    pub async fn nodes_completed_between(&self, lo: u64, hi: u64) -> Result<Vec<(NodeId, Hash)>> {
        let mut rows: Vec<(i32, i64, Vec<u8>)> = Vec::new();
        for level in 1..64u32 {
            if hi >> level == 0 {
                break;
            }
            let (first, last) = (lo >> level, (hi >> level) - 1);
            if first > last {
                continue;
            }
            let part: Vec<(i32, i64, Vec<u8>)> = on_pool!(self, p => sqlx::query_as(
                "SELECT level, idx, hash FROM tree_nodes WHERE level = $1 AND idx >= $2 AND idx <= $3")
                .bind(level as i32).bind(i(first)).bind(i(last)).fetch_all(p).await)?;
            rows.extend(part);
        }
        let mut out = rows
            .into_iter()
            .map(|(level, idx, h)| {
                let level = u8::try_from(level)
                    .map_err(|_| StorageError::Corrupt(format!("tree node level {level}")))?;
                Ok((
                    NodeId {
                        level,
                        idx: u(idx, "node index")?,
                    },
                    hash(&h, "tree node")?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        out.sort_by_key(|(id, _)| ((id.idx + 1) << id.level, id.level));
        Ok(out)
    }
}

impl AppendTx {
    /// The checkpoint of the largest size, inside the transaction.
    pub async fn latest_checkpoint(&mut self) -> Result<Option<CheckpointRow>> {
        let t: Option<CheckpointTuple> = on_tx!(self, c => sqlx::query_as(
            "SELECT size, root, note, key_id, created_ns FROM checkpoints ORDER BY size DESC LIMIT 1")
            .fetch_optional(c).await)?;
        t.map(checkpoint_row).transpose()
    }

    /// Stores a newly signed checkpoint.
    pub async fn insert_checkpoint(&mut self, cp: &CheckpointRow) -> Result<()> {
        on_tx!(self, c => sqlx::query(
            "INSERT INTO checkpoints (size, root, note, key_id, created_ns) VALUES ($1, $2, $3, $4, $5)")
            .bind(i(cp.size)).bind(&cp.root.0[..]).bind(&cp.note).bind(&cp.key_id).bind(cp.created_ns)
            .execute(c).await.map(|_| ()))?;
        Ok(())
    }

    /// Node hashes as this transaction sees them (including rows it has just inserted).
    pub async fn nodes(&mut self, ids: &[NodeId]) -> Result<Vec<Hash>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let h: Option<(Vec<u8>,)> = if id.level == 0 {
                on_tx!(self, c => sqlx::query_as("SELECT leaf_hash FROM entries WHERE seq = $1")
                    .bind(i(id.idx)).fetch_optional(c).await)?
            } else {
                on_tx!(self, c => sqlx::query_as("SELECT hash FROM tree_nodes WHERE level = $1 AND idx = $2")
                    .bind(i32::from(id.level)).bind(i(id.idx)).fetch_optional(c).await)?
            };
            let h = h.ok_or_else(|| {
                StorageError::Corrupt(format!("tree node {}/{} is missing", id.level, id.idx))
            })?;
            out.push(hash(&h.0, "tree node")?);
        }
        Ok(out)
    }
}
