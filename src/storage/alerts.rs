//! The alerter's cursor and delivery outbox (`alert_state`, `alert_outbox`; operational, not
//! evidence), and the reads of a change's alert entries that `notify/alerts.rs` and the writer's
//! alert work decide by.

use super::{AppendTx, Result, Store, i, u};
use crate::core::alerts::{DELIVERED, RAISED, RESOLVED};

/// One alert entry of a change: (seq, kind, time, payload; `None` if erased).
pub type AlertEntry = (u64, String, i64, Option<String>);

/// A delivery taken from the outbox: which event, to which destination, the how-manieth try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub event_seq: u64,
    pub destination: String,
    pub attempts: u32,
}

/// A delivery as `GET /v1/alerts` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryState {
    pub event_seq: u64,
    pub destination: String,
    pub state: String,
    pub attempts: u32,
    pub delivered_seq: Option<u64>,
    pub last_error: Option<String>,
}

const EVENTS: &str = "SELECT e.seq, e.kind, e.time_ns, p.payload FROM entries e \
     LEFT JOIN payloads p ON p.seq = e.seq WHERE e.subject = $1 AND e.kind IN ($2, $3) ORDER BY e.seq";

fn events(rows: Vec<(i64, String, i64, Option<String>)>) -> Result<Vec<AlertEntry>> {
    rows.into_iter()
        .map(|(s, k, t, p)| Ok((u(s, "seq")?, k, t, p)))
        .collect()
}

impl Store {
    /// How far the alerter has followed the chain (the last entry looked at), `None` before it
    /// first ran.
    pub async fn alert_cursor(&self) -> Result<Option<i64>> {
        let r: Option<(i64,)> = on_pool!(self, p => sqlx::query_as(
            "SELECT through_seq FROM alert_state WHERE id = 1")
            .fetch_optional(p).await)?;
        Ok(r.map(|(t,)| t))
    }

    /// Moves the alerter's cursor from `expected` to `through` unless another instance moved it
    /// first (then false, nothing written).
    pub async fn move_alert_cursor(&self, expected: Option<i64>, through: i64) -> Result<bool> {
        let done = match expected {
            None => on_pool!(self, p => sqlx::query(
                "INSERT INTO alert_state (id, through_seq) VALUES (1, $1) ON CONFLICT (id) DO NOTHING")
                .bind(through).execute(p).await.map(|r| r.rows_affected()))?,
            Some(e) => on_pool!(self, p => sqlx::query(
                "UPDATE alert_state SET through_seq = $1 WHERE id = 1 AND through_seq = $2")
                .bind(through).bind(e).execute(p).await.map(|r| r.rows_affected()))?,
        };
        Ok(done == 1)
    }

    /// The change's `alert.raised` and `alert.resolved` entries, in order.
    pub async fn alert_events(&self, change_id: &str) -> Result<Vec<AlertEntry>> {
        let rows = on_pool!(self, p => sqlx::query_as(EVENTS)
            .bind(change_id).bind(RAISED).bind(RESOLVED).fetch_all(p).await)?;
        events(rows)
    }

    /// Every alert entry (raised, resolved, delivered), or the change's: (seq, kind, subject,
    /// time, payload), newest first.
    pub async fn alert_entries(
        &self,
        change_id: Option<&str>,
    ) -> Result<Vec<(u64, String, String, i64, Option<String>)>> {
        type Row = (i64, String, String, i64, Option<String>);
        const COLS: &str = "SELECT e.seq, e.kind, e.subject, e.time_ns, p.payload FROM entries e \
             LEFT JOIN payloads p ON p.seq = e.seq WHERE e.kind IN ($1, $2, $3)";
        let rows: Vec<Row> = match change_id {
            Some(c) => {
                on_pool!(self, p => sqlx::query_as(sqlx::AssertSqlSafe(format!("{COLS} AND e.subject = $4 ORDER BY e.seq DESC")))
                .bind(RAISED).bind(RESOLVED).bind(DELIVERED).bind(c).fetch_all(p).await)?
            }
            None => {
                on_pool!(self, p => sqlx::query_as(sqlx::AssertSqlSafe(format!("{COLS} ORDER BY e.seq DESC")))
                .bind(RAISED).bind(RESOLVED).bind(DELIVERED).fetch_all(p).await)?
            }
        };
        rows.into_iter()
            .map(|(s, k, subject, t, p)| Ok((u(s, "seq")?, k, subject, t, p)))
            .collect()
    }

    /// Takes up to `limit` deliveries that are due (pending and past their wait, or claimed by
    /// a holder that let its deadline pass) for the holder `token`, until `deadline_ns`; oldest
    /// events first.
    pub async fn claim_alert_deliveries(
        &self,
        now_ns: i64,
        token: i64,
        deadline_ns: i64,
        limit: u64,
    ) -> Result<Vec<Delivery>> {
        let rows: Vec<(i64, String, i64)> = on_pool!(self, p => sqlx::query_as(
            "UPDATE alert_outbox SET state = 'claimed', claim = $1, next_ns = $2, attempts = attempts + 1 \
             WHERE (event_seq, destination) IN (SELECT event_seq, destination FROM alert_outbox \
                 WHERE state IN ('pending', 'claimed') AND next_ns <= $3 ORDER BY event_seq LIMIT $4) \
             AND state IN ('pending', 'claimed') AND next_ns <= $3 \
             RETURNING event_seq, destination, attempts")
            .bind(token).bind(deadline_ns).bind(now_ns).bind(i(limit)).fetch_all(p).await)?;
        let mut out = rows
            .into_iter()
            .map(|(s, d, a)| {
                Ok(Delivery {
                    event_seq: u(s, "event seq")?,
                    destination: d,
                    attempts: u32::try_from(a).unwrap_or(u32::MAX),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        out.sort_by_key(|d| d.event_seq);
        Ok(out)
    }

    /// Gives a delivery held with `token` back after a failed try: pending again from
    /// `next_ns`, or `refused` for good; false when another holder took it meanwhile.
    pub async fn release_alert_delivery(
        &self,
        d: &Delivery,
        token: i64,
        refused: bool,
        next_ns: i64,
        error: &str,
    ) -> Result<bool> {
        let state = if refused { "refused" } else { "pending" };
        let n = on_pool!(self, p => sqlx::query(
            "UPDATE alert_outbox SET state = $1, next_ns = $2, last_error = $3 \
             WHERE event_seq = $4 AND destination = $5 AND state = 'claimed' AND claim = $6")
            .bind(state).bind(next_ns).bind(error).bind(i(d.event_seq)).bind(&d.destination).bind(token)
            .execute(p).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Whether an earlier alert event of the change still waits to reach `destination`.
    pub async fn alert_undelivered_before(
        &self,
        change_id: &str,
        event_seq: u64,
        destination: &str,
    ) -> Result<bool> {
        let r: Option<(i64,)> = on_pool!(self, p => sqlx::query_as(
            "SELECT o.event_seq FROM alert_outbox o JOIN entries e ON e.seq = o.event_seq \
             WHERE e.subject = $1 AND o.destination = $2 AND o.event_seq < $3 \
             AND o.state IN ('pending', 'claimed') LIMIT 1")
            .bind(change_id).bind(destination).bind(i(event_seq)).fetch_optional(p).await)?;
        Ok(r.is_some())
    }

    /// Outbox rows by state: (pending or claimed, refused).
    pub async fn alert_outbox_counts(&self) -> Result<(u64, u64)> {
        let (waiting, refused): (i64, i64) = on_pool!(self, p => sqlx::query_as(
            "SELECT COALESCE(SUM(CASE WHEN state IN ('pending', 'claimed') THEN 1 ELSE 0 END), 0), \
                    COALESCE(SUM(CASE WHEN state = 'refused' THEN 1 ELSE 0 END), 0) FROM alert_outbox")
            .fetch_one(p).await)?;
        Ok((
            u64::try_from(waiting).unwrap_or_default(),
            u64::try_from(refused).unwrap_or_default(),
        ))
    }

    /// Every outbox row of the events from `from_seq` on.
    pub async fn alert_deliveries(&self, from_seq: u64) -> Result<Vec<DeliveryState>> {
        type Row = (i64, String, String, i64, Option<i64>, Option<String>);
        let rows: Vec<Row> = on_pool!(self, p => sqlx::query_as(
            "SELECT event_seq, destination, state, attempts, delivered_seq, last_error FROM alert_outbox \
             WHERE event_seq >= $1 ORDER BY event_seq, destination")
            .bind(i(from_seq)).fetch_all(p).await)?;
        rows.into_iter()
            .map(|(s, destination, state, a, d, last_error)| {
                Ok(DeliveryState {
                    event_seq: u(s, "event seq")?,
                    destination,
                    state,
                    attempts: u32::try_from(a).unwrap_or(u32::MAX),
                    delivered_seq: d.map(|d| u(d, "delivered seq")).transpose()?,
                    last_error,
                })
            })
            .collect()
    }
}

impl AppendTx {
    /// `Store::alert_events` under the writer's lock: what the alert work decides by, so two
    /// instances never raise one code twice.
    pub async fn alert_events(&mut self, change_id: &str) -> Result<Vec<AlertEntry>> {
        let rows = on_tx!(self, c => sqlx::query_as(EVENTS)
            .bind(change_id).bind(RAISED).bind(RESOLVED).fetch_all(c).await)?;
        events(rows)
    }

    /// One pending delivery of event `seq` per destination, due now.
    pub async fn insert_alert_outbox(
        &mut self,
        seq: u64,
        destinations: &[String],
        now_ns: i64,
    ) -> Result<()> {
        for d in destinations {
            on_tx!(self, c => sqlx::query(
                "INSERT INTO alert_outbox (event_seq, destination, state, attempts, next_ns, claim) \
                 VALUES ($1, $2, 'pending', 0, $3, 0) ON CONFLICT (event_seq, destination) DO NOTHING")
                .bind(i(seq)).bind(d).bind(now_ns).execute(c).await.map(|_| ()))?;
        }
        Ok(())
    }

    /// Whether the delivery is still claimed by `token` (read under the writer's lock, so the
    /// `alert.delivered` entry is appended once).
    pub async fn alert_claim_held(
        &mut self,
        event_seq: u64,
        destination: &str,
        token: i64,
    ) -> Result<bool> {
        let r: Option<(String, i64)> = on_tx!(self, c => sqlx::query_as(
            "SELECT state, claim FROM alert_outbox WHERE event_seq = $1 AND destination = $2")
            .bind(i(event_seq)).bind(destination).fetch_optional(c).await)?;
        Ok(r.is_some_and(|(state, claim)| state == "claimed" && claim == token))
    }

    /// Marks a delivery made, by the `alert.delivered` entry `delivered_seq`.
    pub async fn mark_alert_delivered(
        &mut self,
        event_seq: u64,
        destination: &str,
        delivered_seq: u64,
    ) -> Result<()> {
        on_tx!(self, c => sqlx::query(
            "UPDATE alert_outbox SET state = 'delivered', delivered_seq = $1, last_error = NULL \
             WHERE event_seq = $2 AND destination = $3")
            .bind(i(delivered_seq)).bind(i(event_seq)).bind(destination).execute(c).await.map(|_| ()))?;
        Ok(())
    }
}
