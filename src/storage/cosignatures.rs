//! Witness cosignatures stored beside the checkpoints they sign, and the witness client's memory
//! of each witness's latest size. Cosignature rows are append-only: each verifies by itself over
//! its checkpoint, so none is ever changed, and inserting one twice keeps the first.

use super::{Result, Store, i, u};

/// One stored cosignature line of the checkpoint at `checkpoint_size`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosignatureRow {
    pub checkpoint_size: u64,
    /// The witness's key name.
    pub witness: String,
    pub key_id: String,
    /// The signature line without its newline.
    pub line: String,
    pub timestamp_s: u64,
    pub received_ns: i64,
}

type Tuple = (i64, String, String, String, i64, i64);

fn row(t: Tuple) -> Result<CosignatureRow> {
    Ok(CosignatureRow {
        checkpoint_size: u(t.0, "cosigned size")?,
        witness: t.1,
        key_id: t.2,
        line: t.3,
        timestamp_s: u(t.4, "cosignature timestamp")?,
        received_ns: t.5,
    })
}

impl Store {
    /// Stores a verified cosignature; a second one by the same key for the same size is ignored.
    pub async fn insert_cosignature(&self, c: &CosignatureRow) -> Result<()> {
        on_pool!(self, p => sqlx::query(
            "INSERT INTO cosignatures \
             (checkpoint_size, witness, key_id, line, timestamp_s, received_ns) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (checkpoint_size, witness, key_id) DO NOTHING")
            .bind(i(c.checkpoint_size)).bind(&c.witness).bind(&c.key_id).bind(&c.line)
            .bind(i(c.timestamp_s)).bind(c.received_ns)
            .execute(p).await.map(|_| ()))?;
        Ok(())
    }

    /// The cosignatures of the checkpoint at `size`, by witness name and key id.
    pub async fn cosignatures(&self, size: u64) -> Result<Vec<CosignatureRow>> {
        let rows: Vec<Tuple> = on_pool!(self, p => sqlx::query_as(
            "SELECT checkpoint_size, witness, key_id, line, timestamp_s, received_ns \
             FROM cosignatures WHERE checkpoint_size = $1 ORDER BY witness, key_id")
            .bind(i(size)).fetch_all(p).await)?;
        rows.into_iter().map(row).collect()
    }

    /// Sizes of the newest checkpoints that carry any cosignature, largest first.
    pub async fn cosigned_sizes(&self, limit: u64) -> Result<Vec<u64>> {
        let rows: Vec<(i64,)> = on_pool!(self, p => sqlx::query_as(
            "SELECT DISTINCT checkpoint_size FROM cosignatures ORDER BY checkpoint_size DESC LIMIT $1")
            .bind(i(limit)).fetch_all(p).await)?;
        rows.into_iter()
            .map(|(s,)| u(s, "checkpoint size"))
            .collect()
    }

    /// The witness client's record of the size `witness` (its vkey) last cosigned.
    pub async fn witness_known_size(&self, witness: &str) -> Result<Option<u64>> {
        let v: Option<(i64,)> = on_pool!(self, p => sqlx::query_as(
            "SELECT known_size FROM witness_state WHERE witness = $1")
            .bind(witness).fetch_optional(p).await)?;
        v.map(|(s,)| u(s, "witness known size")).transpose()
    }

    /// Records that `witness` now knows `size`.
    pub async fn set_witness_known_size(
        &self,
        witness: &str,
        size: u64,
        now_ns: i64,
    ) -> Result<()> {
        on_pool!(self, p => sqlx::query(
            "INSERT INTO witness_state (witness, known_size, updated_ns) VALUES ($1, $2, $3) \
             ON CONFLICT (witness) DO UPDATE SET known_size = $2, updated_ns = $3")
            .bind(witness).bind(i(size)).bind(now_ns)
            .execute(p).await.map(|_| ()))?;
        Ok(())
    }
}
