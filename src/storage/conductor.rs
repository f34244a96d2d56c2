//! The Conductor reconciler's cursor: per server, the last `updateTime` fully imported and the
//! executions imported at exactly that time. Moved compare-and-swap, so two instances sharing a
//! database never move it past each other's work.

use super::{Result, Store};

/// A stored cursor: `(update_time_ms, ids_at)`, `ids_at` a JSON array of workflow ids.
pub type StoredCursor = (i64, String);

impl Store {
    /// The reconciler's cursor for `server`, if it ever moved.
    pub async fn conductor_cursor(&self, server: &str) -> Result<Option<StoredCursor>> {
        Ok(on_pool!(self, p => sqlx::query_as(
            "SELECT update_time_ms, ids_at FROM conductor_cursor WHERE server = $1")
            .bind(server).fetch_optional(p).await)?)
    }

    /// Every reconciler's place: `(server, update_time_ms, moved_ns)`, by server.
    pub async fn conductor_cursors(&self) -> Result<Vec<(String, i64, i64)>> {
        Ok(on_pool!(self, p => sqlx::query_as(
            "SELECT server, update_time_ms, moved_ns FROM conductor_cursor ORDER BY server")
            .fetch_all(p).await)?)
    }

    /// Moves `server`'s cursor from `expected` to `to` unless it moved meanwhile (then false,
    /// nothing written).
    pub async fn move_conductor_cursor(
        &self,
        server: &str,
        expected: Option<&StoredCursor>,
        to: &StoredCursor,
        now_ns: i64,
    ) -> Result<bool> {
        let done = match expected {
            None => on_pool!(self, p => sqlx::query(
                "INSERT INTO conductor_cursor (server, update_time_ms, ids_at, moved_ns) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (server) DO NOTHING")
                .bind(server).bind(to.0).bind(&to.1).bind(now_ns)
                .execute(p).await.map(|r| r.rows_affected()))?,
            Some(e) => on_pool!(self, p => sqlx::query(
                "UPDATE conductor_cursor SET update_time_ms = $1, ids_at = $2, moved_ns = $3 \
                 WHERE server = $4 AND update_time_ms = $5 AND ids_at = $6")
                .bind(to.0).bind(&to.1).bind(now_ns).bind(server).bind(e.0).bind(&e.1)
                .execute(p).await.map(|r| r.rows_affected()))?,
        };
        Ok(done == 1)
    }
}
