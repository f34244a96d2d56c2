//! The ledger itself: entries with their payloads, the head row, and erasures (which delete a
//! payload and record why, leaving the entry and its chain link).

use super::{AppendTx, INSERT_CHUNK, Result, StorageError, Store, hash, i, u};
use crate::core::ledger::batch::{BuiltBatch, BuiltEntry, Head};
use crate::core::ledger::hash::Hash;
use crate::core::ledger::keys::{KeyId, Origin};
use crate::core::ledger::merkle::CompactRange;
use sqlx::QueryBuilder;

/// The head row: the core head plus when the last checkpoint was signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadRow {
    pub head: Head,
    pub checkpoint_size: u64,
    pub checkpoint_time_ns: i64,
}

/// One ledger entry as stored, with its salt and payload unless erased (or not read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRow {
    pub seq: u64,
    pub entry: Vec<u8>,
    pub sig: Vec<u8>,
    pub leaf_hash: Hash,
    pub time_ns: i64,
    pub kind: String,
    pub subject: String,
    pub salt: Option<Vec<u8>>,
    pub payload: Option<String>,
}

type EntryTuple = (
    i64,
    Vec<u8>,
    Vec<u8>,
    Vec<u8>,
    i64,
    String,
    String,
    Option<Vec<u8>>,
    Option<String>,
);
type BareEntryTuple = (i64, Vec<u8>, Vec<u8>, Vec<u8>, i64, String, String);
type HeadTuple = (String, i64, Vec<u8>, i64, Vec<u8>, String, i64, i64);

fn entry_row(t: EntryTuple) -> Result<EntryRow> {
    Ok(EntryRow {
        seq: u(t.0, "seq")?,
        entry: t.1,
        sig: t.2,
        leaf_hash: hash(&t.3, "leaf hash")?,
        time_ns: t.4,
        kind: t.5,
        subject: t.6,
        salt: t.7,
        payload: t.8,
    })
}

fn head_row(t: HeadTuple) -> Result<HeadRow> {
    let origin = Origin::parse(&t.0).map_err(|e| StorageError::Corrupt(e.to_string()))?;
    let size = u(t.1, "size")?;
    let peaks =
        t.4.chunks(32)
            .map(|c| hash(c, "frontier peak"))
            .collect::<Result<Vec<_>>>()?;
    let range = CompactRange::from_peaks(size, peaks)
        .ok_or_else(|| StorageError::Corrupt("frontier does not match the head size".into()))?;
    let key_id = KeyId::parse_hex(&t.5)
        .ok_or_else(|| StorageError::Corrupt("head key id is not hex".into()))?;
    Ok(HeadRow {
        head: Head {
            origin,
            size,
            last_leaf: hash(&t.2, "last leaf")?,
            last_time_ns: t.3,
            range,
            key_id,
        },
        checkpoint_size: u(t.6, "checkpoint size")?,
        checkpoint_time_ns: t.7,
    })
}

const ENTRY_COLUMNS: &str = "SELECT e.seq, e.entry, e.sig, e.leaf_hash, e.time_ns, e.kind, e.subject, p.salt, p.payload \
     FROM entries e LEFT JOIN payloads p ON p.seq = e.seq";
const HEAD_COLUMNS: &str = "SELECT origin, size, last_leaf, last_time_ns, frontier, key_id, checkpoint_size, checkpoint_time_ns FROM ledger_head WHERE id = 1";

impl Store {
    /// The head row; `None` for a ledger not yet created.
    pub async fn head(&self) -> Result<Option<HeadRow>> {
        let t: Option<HeadTuple> =
            on_pool!(self, p => sqlx::query_as(HEAD_COLUMNS).fetch_optional(p).await)?;
        t.map(head_row).transpose()
    }

    /// The first seq whose entry time is at or after `time_ns` (`size` if none). Entry times never
    /// decrease along the chain (LEDGER.md), so this is a binary search of primary-key lookups:
    /// no index on time is needed, and a large ledger costs ~log2(size) point reads.
    pub async fn first_seq_at(&self, time_ns: i64, size: u64) -> Result<u64> {
        let (mut lo, mut hi) = (0u64, size);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let t: Option<(i64,)> = on_pool!(self, p => sqlx::query_as(
                "SELECT time_ns FROM entries WHERE seq = $1").bind(i(mid)).fetch_optional(p).await)?;
            match t {
                Some((t,)) if t < time_ns => lo = mid + 1,
                _ => hi = mid,
            }
        }
        Ok(lo)
    }

    /// Entries with `seq >= from`, in order, at most `limit`, with their payloads if not erased.
    pub async fn entries(&self, from: u64, limit: u64) -> Result<Vec<EntryRow>> {
        let sql = const_format(ENTRY_COLUMNS, " WHERE e.seq >= $1 ORDER BY e.seq LIMIT $2");
        let rows: Vec<EntryTuple> = on_pool!(self, p => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(i(from))
            .bind(i(limit))
            .fetch_all(p)
            .await)?;
        rows.into_iter().map(entry_row).collect()
    }

    /// Like `entries`, without payloads and salts: for checks of the entry bytes alone, which
    /// need not read the payloads a second time.
    pub async fn entries_bare(&self, from: u64, limit: u64) -> Result<Vec<EntryRow>> {
        let rows: Vec<BareEntryTuple> = on_pool!(self, p => sqlx::query_as(
            "SELECT seq, entry, sig, leaf_hash, time_ns, kind, subject FROM entries WHERE seq >= $1 ORDER BY seq LIMIT $2")
            .bind(i(from))
            .bind(i(limit))
            .fetch_all(p)
            .await)?;
        rows.into_iter()
            .map(|t| entry_row((t.0, t.1, t.2, t.3, t.4, t.5, t.6, None, None)))
            .collect()
    }

    /// Entry `seq` with its payload if not erased.
    pub async fn entry(&self, seq: u64) -> Result<Option<EntryRow>> {
        let sql = const_format(ENTRY_COLUMNS, " WHERE e.seq = $1");
        let row: Option<EntryTuple> = on_pool!(self, p => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(i(seq))
            .fetch_optional(p)
            .await)?;
        row.map(entry_row).transpose()
    }

    /// Ledger entries whose subject is one of `subjects`, in order.
    pub async fn entries_about(&self, subjects: &[String]) -> Result<Vec<EntryRow>> {
        let mut out = Vec::new();
        for s in subjects {
            let sql = const_format(ENTRY_COLUMNS, " WHERE e.subject = $1 ORDER BY e.seq");
            let rows: Vec<EntryTuple> = on_pool!(self, p => sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(s).fetch_all(p).await)?;
            for r in rows {
                out.push(entry_row(r)?);
            }
        }
        out.sort_by_key(|e| e.seq);
        out.dedup_by_key(|e| e.seq);
        Ok(out)
    }

    /// Entries of these (rare) kinds in order: (seq, kind, payload; None if erased). Answered
    /// from the kind index.
    pub async fn entries_of_kinds(
        &self,
        kinds: &[&str],
    ) -> Result<Vec<(u64, String, Option<String>)>> {
        let rows: Vec<(i64, String, Option<String>)> = on_pool!(self, p => {
            let mut q = QueryBuilder::new(
                "SELECT e.seq, e.kind, p.payload FROM entries e LEFT JOIN payloads p ON p.seq = e.seq \
                 WHERE e.kind IN (");
            let mut sep = q.separated(", ");
            for k in kinds {
                sep.push_bind(*k);
            }
            q.push(") ORDER BY e.seq");
            q.build_query_as().fetch_all(p).await
        })?;
        rows.into_iter()
            .map(|(s, k, p)| Ok((u(s, "seq")?, k, p)))
            .collect()
    }

    /// Erasure records: (erased seq, the payload.erased entry's seq).
    pub async fn erasures(&self) -> Result<Vec<(u64, u64)>> {
        let rows: Vec<(i64, i64)> = on_pool!(self, p => sqlx::query_as(
            "SELECT seq, erasure_seq FROM erasures ORDER BY seq").fetch_all(p).await)?;
        rows.into_iter()
            .map(|(a, b)| Ok((u(a, "seq")?, u(b, "erasure seq")?)))
            .collect()
    }
}

impl AppendTx {
    /// Reads the head under the writer lock; `None` for a ledger not yet created. On PostgreSQL
    /// this serialises every process appending to the same database.
    pub async fn lock_head(&mut self) -> Result<Option<HeadRow>> {
        let t: Option<HeadTuple> = match self {
            AppendTx::Sqlite(tx) => {
                sqlx::query_as(HEAD_COLUMNS)
                    .fetch_optional(&mut **tx)
                    .await?
            }
            AppendTx::Postgres(tx) => {
                // Creating a ledger has no row to lock yet: an advisory lock covers that case.
                sqlx::query("SELECT pg_advisory_xact_lock(7262001)")
                    .execute(&mut **tx)
                    .await?;
                sqlx::query_as(sqlx::AssertSqlSafe(const_format(
                    HEAD_COLUMNS,
                    " FOR UPDATE",
                )))
                .fetch_optional(&mut **tx)
                .await?
            }
        };
        t.map(head_row).transpose()
    }

    /// Stores a batch's entries, their payloads and the tree nodes they complete.
    pub async fn insert_batch(&mut self, batch: &BuiltBatch) -> Result<()> {
        if let AppendTx::Postgres(tx) = self {
            return insert_batch_postgres(tx, batch).await;
        }
        for chunk in batch.entries.chunks(INSERT_CHUNK) {
            on_tx!(self, c => {
                let mut q = QueryBuilder::new(
                    "INSERT INTO entries (seq, entry, sig, leaf_hash, time_ns, kind, subject) ");
                q.push_values(chunk, |mut b, e| {
                    b.push_bind(i(e.seq))
                        .push_bind(&e.bytes)
                        .push_bind(&e.sig[..])
                        .push_bind(&e.leaf.0[..])
                        .push_bind(e.time_ns)
                        .push_bind(&e.kind)
                        .push_bind(&e.subject);
                });
                q.build().execute(&mut *c).await?;
                let mut q = QueryBuilder::new("INSERT INTO payloads (seq, salt, payload) ");
                q.push_values(chunk, |mut b, e| {
                    b.push_bind(i(e.seq)).push_bind(&e.salt[..]).push_bind(&e.payload);
                });
                q.build().execute(&mut *c).await?;
            });
        }
        for chunk in batch.nodes.chunks(INSERT_CHUNK) {
            on_tx!(self, c => {
                let mut q = QueryBuilder::new("INSERT INTO tree_nodes (level, idx, hash) ");
                q.push_values(chunk, |mut b, (id, h)| {
                    b.push_bind(i32::from(id.level)).push_bind(i(id.idx)).push_bind(&h.0[..]);
                });
                q.build().execute(&mut *c).await?;
            });
        }
        Ok(())
    }

    /// Writes the head row (insert on creation, update afterwards).
    pub async fn write_head(&mut self, row: &HeadRow, create: bool) -> Result<()> {
        let h = &row.head;
        let frontier: Vec<u8> = h.range.peaks().iter().flat_map(|p| p.0).collect();
        let sql = if create {
            "INSERT INTO ledger_head (origin, size, last_leaf, last_time_ns, frontier, key_id, checkpoint_size, checkpoint_time_ns, id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1)"
        } else {
            "UPDATE ledger_head SET origin = $1, size = $2, last_leaf = $3, last_time_ns = $4, frontier = $5, \
             key_id = $6, checkpoint_size = $7, checkpoint_time_ns = $8 WHERE id = 1"
        };
        on_tx!(self, c => sqlx::query(sql)
            .bind(h.origin.as_str())
            .bind(i(h.size))
            .bind(&h.last_leaf.0[..])
            .bind(h.last_time_ns)
            .bind(&frontier)
            .bind(h.key_id.to_hex())
            .bind(i(row.checkpoint_size))
            .bind(row.checkpoint_time_ns)
            .execute(c).await.map(|_| ()))?;
        Ok(())
    }

    /// The kind of entry `seq`, if it exists (erasure refuses some kinds).
    pub async fn entry_kind(&mut self, seq: u64) -> Result<Option<(String, bool)>> {
        let r: Option<(String, Option<i64>)> = on_tx!(self, c => sqlx::query_as(
            "SELECT e.kind, p.seq FROM entries e LEFT JOIN payloads p ON p.seq = e.seq WHERE e.seq = $1")
            .bind(i(seq)).fetch_optional(c).await)?;
        Ok(r.map(|(k, p)| (k, p.is_some())))
    }

    /// Records the erasure of `seq` by entry `erasure_seq` and deletes its payload and salt.
    pub async fn erase_payload(&mut self, seq: u64, erasure_seq: u64) -> Result<()> {
        on_tx!(self, c => {
            sqlx::query("INSERT INTO erasures (seq, erasure_seq) VALUES ($1, $2)")
                .bind(i(seq)).bind(i(erasure_seq)).execute(&mut *c).await?;
            sqlx::query("DELETE FROM payloads WHERE seq = $1").bind(i(seq)).execute(&mut *c).await?;
        });
        Ok(())
    }
}

/// PostgreSQL: each table's rows as one array per column, expanded by `UNNEST` — one short
/// statement per table whatever the batch size (prepared once, then cached), where a multi-row
/// VALUES list is a new statement with thousands of parameters for the server to parse and plan
/// at every batch size.
async fn insert_batch_postgres(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    batch: &BuiltBatch,
) -> Result<()> {
    // A column is one array value, and PostgreSQL refuses a value or message over 1 GB: large
    // payloads are sent in several statements of at most `UNNEST_BYTES` each.
    let mut start = 0;
    while start < batch.entries.len() {
        let mut bytes = 0;
        let mut end = start;
        while end < batch.entries.len() && (end == start || bytes < UNNEST_BYTES) {
            let e = &batch.entries[end];
            bytes += e.bytes.len() + e.payload.len() + e.kind.len() + e.subject.len() + 128;
            end += 1;
        }
        insert_entries_postgres(tx, &batch.entries[start..end]).await?;
        start = end;
    }
    for chunk in batch.nodes.chunks(UNNEST_NODES) {
        sqlx::query(
            "INSERT INTO tree_nodes (level, idx, hash) \
             SELECT * FROM UNNEST($1::integer[], $2::bigint[], $3::bytea[])",
        )
        .bind(
            chunk
                .iter()
                .map(|(id, _)| i32::from(id.level))
                .collect::<Vec<i32>>(),
        )
        .bind(chunk.iter().map(|(id, _)| i(id.idx)).collect::<Vec<i64>>())
        .bind(chunk.iter().map(|(_, h)| &h.0[..]).collect::<Vec<&[u8]>>())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Bytes of entry rows per UNNEST statement, far below PostgreSQL's 1 GB per value.
const UNNEST_BYTES: usize = 64 << 20;
/// Tree nodes per UNNEST statement (about 50 bytes each).
const UNNEST_NODES: usize = 100_000;

/// One UNNEST statement each for these entries' `entries` and `payloads` rows.
async fn insert_entries_postgres(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    e: &[BuiltEntry],
) -> Result<()> {
    let seqs: Vec<i64> = e.iter().map(|e| i(e.seq)).collect();
    sqlx::query(
        "INSERT INTO entries (seq, entry, sig, leaf_hash, time_ns, kind, subject) \
         SELECT * FROM UNNEST($1::bigint[], $2::bytea[], $3::bytea[], $4::bytea[], $5::bigint[], $6::text[], $7::text[])",
    )
    .bind(&seqs)
    .bind(e.iter().map(|e| &e.bytes[..]).collect::<Vec<&[u8]>>())
    .bind(e.iter().map(|e| &e.sig[..]).collect::<Vec<&[u8]>>())
    .bind(e.iter().map(|e| &e.leaf.0[..]).collect::<Vec<&[u8]>>())
    .bind(e.iter().map(|e| e.time_ns).collect::<Vec<i64>>())
    .bind(e.iter().map(|e| e.kind.as_str()).collect::<Vec<&str>>())
    .bind(e.iter().map(|e| e.subject.as_str()).collect::<Vec<&str>>())
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO payloads (seq, salt, payload) \
         SELECT * FROM UNNEST($1::bigint[], $2::bytea[], $3::text[])",
    )
    .bind(&seqs)
    .bind(e.iter().map(|e| &e.salt[..]).collect::<Vec<&[u8]>>())
    .bind(e.iter().map(|e| e.payload.as_str()).collect::<Vec<&str>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn const_format(a: &str, b: &str) -> String {
    let mut s = String::with_capacity(a.len() + b.len());
    s.push_str(a);
    s.push_str(b);
    s
}
