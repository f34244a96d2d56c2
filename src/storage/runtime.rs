//! Runtime minutes (`runtime.minute` entries) by service and range, and the comparer's cursor
//! (`runtime_state`, operational, not evidence).

use super::{Result, Store, i, u};

/// A `runtime.minute` entry: (seq, subject, payload unless erased).
pub type MinuteRow = (u64, String, Option<String>);

impl Store {
    /// `runtime.minute` entries with `from <= seq < to`, the latest first, at most `limit`: those
    /// filed under `subject` when given (its index), else those whose subject starts with
    /// `prefix` (the kind's index).
    pub async fn runtime_minutes(
        &self,
        subject: Option<&str>,
        prefix: &str,
        (from, to): (u64, u64),
        limit: u64,
    ) -> Result<Vec<MinuteRow>> {
        let rows: Vec<(i64, String, Option<String>)> = match subject {
            Some(s) => on_pool!(self, p => sqlx::query_as(
                "SELECT e.seq, e.subject, p.payload FROM entries e LEFT JOIN payloads p ON p.seq = e.seq \
                 WHERE e.subject = $1 AND e.seq >= $2 AND e.seq < $3 AND e.kind = 'runtime.minute' \
                 ORDER BY e.seq DESC LIMIT $4")
                .bind(s).bind(i(from)).bind(i(to)).bind(i(limit)).fetch_all(p).await)?,
            // Compared byte for byte (substr), not by a collation-dependent LIKE.
            None => on_pool!(self, p => sqlx::query_as(
                "SELECT e.seq, e.subject, p.payload FROM entries e LEFT JOIN payloads p ON p.seq = e.seq \
                 WHERE e.kind = 'runtime.minute' AND e.seq >= $1 AND e.seq < $2 \
                 AND substr(e.subject, 1, CAST($3 AS INTEGER)) = $4 ORDER BY e.seq DESC LIMIT $5")
                .bind(i(from)).bind(i(to)).bind(i(prefix.chars().count() as u64)).bind(prefix)
                .bind(i(limit)).fetch_all(p).await)?,
        };
        rows.into_iter()
            .map(|(s, subject, payload)| Ok((u(s, "seq")?, subject, payload)))
            .collect()
    }

    /// The changes whose deploy attempts (`task.finished` facts, or `change.finished` for a change
    /// that reports no deploy step) are stated in [from, to], each
    /// once, the latest attempts first, at most `limit` (an attempt naming only its run counts
    /// for the change that claims the run).
    pub async fn changes_attempting_between(
        &self,
        from_ns: i64,
        to_ns: i64,
        limit: u64,
    ) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = on_pool!(self, p => sqlx::query_as(
            "SELECT c FROM (SELECT COALESCE(f.change_id, \
               (SELECT g.change_id FROM facts g WHERE g.run_id = f.run_id AND g.change_id IS NOT NULL \
                ORDER BY g.entry_seq LIMIT 1)) AS c, f.time_ns AS t \
             FROM facts f WHERE f.kind IN ('task.finished', 'change.finished') AND f.time_ns >= $1 AND f.time_ns <= $2) a \
             WHERE c IS NOT NULL GROUP BY c ORDER BY MAX(t) DESC, c LIMIT $3")
            .bind(from_ns).bind(to_ns).bind(i(limit)).fetch_all(p).await)?;
        Ok(rows.into_iter().map(|(c,)| c).collect())
    }

    /// Deploy attempts (and runs' ends) recorded after entry `after`, in chain order, at most
    /// `limit`: (entry
    /// seq, the change it names or, naming only its run, the change that claims the run, its
    /// receipt).
    pub async fn attempts_after(
        &self,
        after: i64,
        limit: u64,
    ) -> Result<Vec<(u64, Option<String>, i64)>> {
        let rows: Vec<(i64, Option<String>, i64)> = on_pool!(self, p => sqlx::query_as(
            "SELECT f.entry_seq, COALESCE(f.change_id, \
               (SELECT g.change_id FROM facts g WHERE g.run_id = f.run_id AND g.change_id IS NOT NULL \
                ORDER BY g.entry_seq LIMIT 1)), f.received_ns \
             FROM facts f WHERE f.kind IN ('task.finished', 'change.finished') AND f.entry_seq > $1 \
             ORDER BY f.entry_seq LIMIT $2")
            .bind(after).bind(i(limit)).fetch_all(p).await)?;
        rows.into_iter()
            .map(|(s, c, t)| Ok((u(s, "entry seq")?, c, t)))
            .collect()
    }

    /// How far the comparer has followed the deploy attempts, `None` before it first ran.
    pub async fn runtime_cursor(&self) -> Result<Option<i64>> {
        let r: Option<(i64,)> = on_pool!(self, p => sqlx::query_as(
            "SELECT through_seq FROM runtime_state WHERE id = 1")
            .fetch_optional(p).await)?;
        Ok(r.map(|(t,)| t))
    }

    /// Moves the comparer's cursor from `expected` to `through` unless another instance moved it
    /// first (then false, nothing written).
    pub async fn move_runtime_cursor(&self, expected: Option<i64>, through: i64) -> Result<bool> {
        let done = match expected {
            None => on_pool!(self, p => sqlx::query(
                "INSERT INTO runtime_state (id, through_seq) VALUES (1, $1) ON CONFLICT (id) DO NOTHING")
                .bind(through).execute(p).await.map(|r| r.rows_affected()))?,
            Some(e) => on_pool!(self, p => sqlx::query(
                "UPDATE runtime_state SET through_seq = $1 WHERE id = 1 AND through_seq = $2")
                .bind(through).bind(e).execute(p).await.map(|r| r.rows_affected()))?,
        };
        Ok(done == 1)
    }
}
