//! The deploy annotator's cursor and outbox (`annotation_state`, `annotations`): operational
//! state, not evidence; `notify/annotate.rs` keeps it.

use super::{Result, Store, i};

impl Store {
    /// How far the annotator has followed the chain: the last entry looked at (-1: none), or
    /// `None` before it first ran.
    pub async fn annotation_cursor(&self) -> Result<Option<i64>> {
        let r: Option<(i64,)> = on_pool!(self, p => sqlx::query_as(
            "SELECT through_seq FROM annotation_state WHERE id = 1")
            .fetch_optional(p).await)?;
        Ok(r.map(|(t,)| t))
    }

    /// Moves the cursor from `expected` to `through`, only if no other annotator moved it first;
    /// false when one did (nothing is written).
    pub async fn move_annotation_cursor(
        &self,
        expected: Option<i64>,
        through: i64,
    ) -> Result<bool> {
        let done = match expected {
            None => on_pool!(self, p => sqlx::query(
                "INSERT INTO annotation_state (id, through_seq) VALUES (1, $1) ON CONFLICT (id) DO NOTHING")
                .bind(through).execute(p).await.map(|r| r.rows_affected()))?,
            Some(e) => on_pool!(self, p => sqlx::query(
                "UPDATE annotation_state SET through_seq = $1 WHERE id = 1 AND through_seq = $2")
                .bind(through).bind(e).execute(p).await.map(|r| r.rows_affected()))?,
        };
        Ok(done == 1)
    }

    /// Claims the annotation of one change's deploy for this instance; false when the change
    /// was claimed before (by this or another instance), so each change is announced once.
    pub async fn claim_annotation(
        &self,
        change_id: &str,
        attempt: &str,
        now_ns: i64,
    ) -> Result<bool> {
        let n = on_pool!(self, p => sqlx::query(
            "INSERT INTO annotations (change_id, attempt, state, updated_ns) VALUES ($1, $2, 'claimed', $3) \
             ON CONFLICT (change_id) DO NOTHING")
            .bind(change_id).bind(attempt).bind(now_ns).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Claims again the annotations claimed before `before_ns` and never sent (their sender
    /// stopped or the endpoint was down), at most `limit`: (change id, attempt); each is now
    /// held with the token `now_ns`.
    pub async fn reclaim_annotations(
        &self,
        before_ns: i64,
        now_ns: i64,
        limit: u64,
    ) -> Result<Vec<(String, String)>> {
        Ok(on_pool!(self, p => sqlx::query_as(
            "UPDATE annotations SET updated_ns = $1 WHERE change_id IN \
             (SELECT change_id FROM annotations WHERE state = 'claimed' AND updated_ns < $2 \
              ORDER BY updated_ns LIMIT $3) AND state = 'claimed' AND updated_ns < $2 \
             RETURNING change_id, attempt")
            .bind(now_ns).bind(before_ns).bind(i(limit)).fetch_all(p).await)?)
    }

    /// Annotations claimed and not yet sent or refused.
    pub async fn annotations_claimed(&self) -> Result<u64> {
        let (n,): (i64,) = on_pool!(self, p => sqlx::query_as(
            "SELECT COUNT(*) FROM annotations WHERE state = 'claimed'")
            .fetch_one(p).await)?;
        Ok(u64::try_from(n).unwrap_or_default())
    }

    /// Whether any deploy of the change was announced or claimed already (a change has one
    /// marker: a later fact showing an earlier successful attempt does not send a second).
    pub async fn annotation_exists(&self, change_id: &str) -> Result<bool> {
        let r: Option<(String,)> = on_pool!(self, p => sqlx::query_as(
            "SELECT attempt FROM annotations WHERE change_id = $1 LIMIT 1")
            .bind(change_id).fetch_optional(p).await)?;
        Ok(r.is_some())
    }

    /// Renews a claim held since `token` (its `updated_ns`) right before sending, so it does
    /// not go stale mid-send, naming the `attempt` about to be announced (a later fact may have
    /// shown an earlier success); false when someone else took it meanwhile. The new token is
    /// `now_ns`.
    pub async fn renew_annotation(
        &self,
        change_id: &str,
        attempt: &str,
        token: i64,
        now_ns: i64,
    ) -> Result<bool> {
        let n = on_pool!(self, p => sqlx::query(
            "UPDATE annotations SET updated_ns = $1, attempt = $3 \
             WHERE change_id = $2 AND state = 'claimed' AND updated_ns = $4")
            .bind(now_ns).bind(change_id).bind(attempt).bind(token).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Records how a claim held since `token` ended: `sent`, `refused` (the endpoint rejected
    /// it) or `gone` (no such deploy any more); nothing when another sender took it meanwhile.
    pub async fn finish_annotation(
        &self,
        change_id: &str,
        token: i64,
        state: &str,
        now_ns: i64,
    ) -> Result<()> {
        on_pool!(self, p => sqlx::query(
            "UPDATE annotations SET state = $1, updated_ns = $2 \
             WHERE change_id = $3 AND state = 'claimed' AND updated_ns = $4")
            .bind(state).bind(now_ns).bind(change_id).bind(token)
            .execute(p).await.map(|_| ()))?;
        Ok(())
    }
}
