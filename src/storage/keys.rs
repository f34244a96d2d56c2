//! Signing keys: each key's verifying half and the entry from which it signs.

use super::{AppendTx, Result, Store, i, u};

/// A signing key: its id, verifying key, the first entry it signs and the rotation entry that
/// introduced it (none for the first key).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyRow {
    pub key_id: String,
    pub vkey: String,
    pub from_seq: u64,
    pub rotation_seq: Option<u64>,
}

impl Store {
    /// Every signing key, oldest first.
    pub async fn keys(&self) -> Result<Vec<KeyRow>> {
        let rows: Vec<(String, String, i64, Option<i64>)> = on_pool!(self, p => sqlx::query_as(
            "SELECT key_id, vkey, from_seq, rotation_seq FROM signing_keys ORDER BY from_seq")
            .fetch_all(p)
            .await)?;
        rows.into_iter()
            .map(|r| {
                Ok(KeyRow {
                    key_id: r.0,
                    vkey: r.1,
                    from_seq: u(r.2, "from_seq")?,
                    rotation_seq: r.3.map(|s| u(s, "rotation_seq")).transpose()?,
                })
            })
            .collect()
    }
}

impl AppendTx {
    /// Stores a key (its rotation entry is appended in the same transaction).
    pub async fn insert_key(&mut self, k: &KeyRow) -> Result<()> {
        on_tx!(self, c => sqlx::query(
            "INSERT INTO signing_keys (key_id, vkey, from_seq, rotation_seq) VALUES ($1, $2, $3, $4)")
            .bind(&k.key_id).bind(&k.vkey).bind(i(k.from_seq)).bind(k.rotation_seq.map(i))
            .execute(c).await.map(|_| ()))?;
        Ok(())
    }
}
