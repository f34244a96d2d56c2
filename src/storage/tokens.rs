//! API tokens: rows the service checks. They are created and revoked through the ledger writer,
//! each with an entry, so `verify` can tell a row no entry produced.

use super::{AppendTx, Result, Store};

/// An API token as stored: the secret only as its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub id: String,
    pub name: String,
    pub role: String,
    pub secret_hash: Vec<u8>,
    pub created_ns: i64,
    pub revoked_ns: Option<i64>,
}

type TokenTuple = (String, String, String, Vec<u8>, i64, Option<i64>);

fn token_row(t: TokenTuple) -> TokenRow {
    TokenRow {
        id: t.0,
        name: t.1,
        role: t.2,
        secret_hash: t.3,
        created_ns: t.4,
        revoked_ns: t.5,
    }
}

impl Store {
    /// The token row under `id`.
    pub async fn token(&self, id: &str) -> Result<Option<TokenRow>> {
        let t: Option<TokenTuple> = on_pool!(self, p => sqlx::query_as(
            "SELECT id, name, role, secret_hash, created_ns, revoked_ns FROM api_tokens WHERE id = $1")
            .bind(id).fetch_optional(p).await)?;
        Ok(t.map(token_row))
    }

    /// Every token, revoked ones included, oldest first.
    pub async fn tokens(&self) -> Result<Vec<TokenRow>> {
        let rows: Vec<TokenTuple> = on_pool!(self, p => sqlx::query_as(
            "SELECT id, name, role, secret_hash, created_ns, revoked_ns FROM api_tokens ORDER BY created_ns, id")
            .fetch_all(p).await)?;
        Ok(rows.into_iter().map(token_row).collect())
    }

    /// The token entries (created, revoked) in order, with their payloads (None if erased).
    pub async fn token_entries(&self) -> Result<Vec<(u64, String, Option<String>)>> {
        self.entries_of_kinds(&["token.created", "token.revoked"])
            .await
    }
}

impl AppendTx {
    /// Stores a new token row (its ledger entry is appended in the same transaction).
    pub async fn insert_token(&mut self, t: &TokenRow) -> Result<()> {
        on_tx!(self, c => sqlx::query(
            "INSERT INTO api_tokens (id, name, role, secret_hash, created_ns, revoked_ns) VALUES ($1, $2, $3, $4, $5, NULL)")
            .bind(&t.id).bind(&t.name).bind(&t.role).bind(&t.secret_hash).bind(t.created_ns)
            .execute(c).await.map(|_| ()))?;
        Ok(())
    }

    /// The token row under `id`, inside the transaction.
    pub async fn token(&mut self, id: &str) -> Result<Option<TokenRow>> {
        let t: Option<TokenTuple> = on_tx!(self, c => sqlx::query_as(
            "SELECT id, name, role, secret_hash, created_ns, revoked_ns FROM api_tokens WHERE id = $1")
            .bind(id).fetch_optional(c).await)?;
        Ok(t.map(token_row))
    }

    /// Marks a token revoked; false if no active token has that id.
    pub async fn revoke_token(&mut self, id: &str, now_ns: i64) -> Result<bool> {
        let n = on_tx!(self, c => sqlx::query(
            "UPDATE api_tokens SET revoked_ns = $1 WHERE id = $2 AND revoked_ns IS NULL")
            .bind(now_ns).bind(id).execute(c).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }
}
