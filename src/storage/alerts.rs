//! The alerter's cursor and delivery outbox (`alert_state`, `alert_outbox`; operational, not
//! evidence), and the reads of a change's alert entries that `notify/alerts.rs` and the writer's
//! alert work decide by.

use super::{AppendTx, Result, Store, i, u};
use crate::core::alerts::{DELIVERED, RAISED, RESOLVED};
use sqlx::QueryBuilder;

/// One alert event as listed: (seq, kind, subject, time, payload; `None` if erased).
pub type AlertEventRow = (u64, String, String, i64, Option<String>);

/// `AND` the alert event kinds (or only `kind`) and the subject, onto a query over `entries e`.
fn alert_filter<DB: sqlx::Database>(
    q: &mut QueryBuilder<DB>,
    change_id: Option<&str>,
    kind: Option<&str>,
) where
    for<'t> &'t str: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    match kind {
        Some(k) => {
            q.push(" AND e.kind = ").push_bind(k);
        }
        None => {
            q.push(" AND e.kind IN (")
                .push_bind(RAISED)
                .push(", ")
                .push_bind(RESOLVED)
                .push(")");
        }
    }
    if let Some(c) = change_id {
        q.push(" AND e.subject = ").push_bind(c);
    }
}

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
            // The sightings start where the entries do: nothing before is judged.
            None => on_pool!(self, p => sqlx::query(
                "INSERT INTO alert_state (id, through_seq, unlinked_seq) VALUES (1, $1, $1) ON CONFLICT (id) DO NOTHING")
                .bind(through).execute(p).await.map(|r| r.rows_affected()))?,
            Some(e) => on_pool!(self, p => sqlx::query(
                "UPDATE alert_state SET through_seq = $1 WHERE id = 1 AND through_seq = $2")
                .bind(through).bind(e).execute(p).await.map(|r| r.rows_affected()))?,
        };
        Ok(done == 1)
    }

    /// The last version sighting judged for UNLINKED_DEPLOY (`None` before the alerter ran).
    pub async fn alert_unlinked_cursor(&self) -> Result<Option<i64>> {
        let r: Option<(i64,)> = on_pool!(self, p => sqlx::query_as(
            "SELECT unlinked_seq FROM alert_state WHERE id = 1")
            .fetch_optional(p).await)?;
        Ok(r.map(|(t,)| t))
    }

    /// Moves the sightings cursor from `expected` to `through` unless another instance did.
    pub async fn move_alert_unlinked_cursor(&self, expected: i64, through: i64) -> Result<bool> {
        let n = on_pool!(self, p => sqlx::query(
            "UPDATE alert_state SET unlinked_seq = $1 WHERE id = 1 AND unlinked_seq = $2")
            .bind(through).bind(expected).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Version sightings of entries `after < seq <= upto` received by `received_by_ns`, in chain
    /// order, at most `limit`: (entry seq, the fact's payload). Entry times never decrease along
    /// the chain, so the first one too recent ends the list.
    pub async fn sightings_due(
        &self,
        after: i64,
        upto: u64,
        received_by_ns: i64,
        limit: u64,
    ) -> Result<Vec<(u64, String)>> {
        let rows: Vec<(i64, String)> = on_pool!(self, p => sqlx::query_as(
            "SELECT f.entry_seq, f.payload FROM facts f JOIN entries e ON e.seq = f.entry_seq \
             WHERE f.kind = 'version.observed' AND f.entry_seq > $1 AND f.entry_seq <= $2 \
             AND e.time_ns <= $3 ORDER BY f.entry_seq LIMIT $4")
            .bind(after).bind(i(upto)).bind(received_by_ns).bind(i(limit)).fetch_all(p).await)?;
        rows.into_iter()
            .map(|(s, p)| Ok((u(s, "entry seq")?, p)))
            .collect()
    }

    /// The changes the summary says deploy `version` of `service` to `environment` (lower case):
    /// the candidates that may explain a sighting, each then folded and judged from its facts.
    pub async fn changes_deploying(
        &self,
        service: &str,
        version: &str,
        environment: &str,
    ) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = on_pool!(self, p => sqlx::query_as(
            "SELECT change_id FROM change_summary WHERE service = $1 AND version = $2 AND environment = $3 \
             ORDER BY change_id LIMIT 1000")
            .bind(service).bind(version).bind(environment).fetch_all(p).await)?;
        Ok(rows.into_iter().map(|(c,)| c).collect())
    }

    /// The change's `alert.raised` and `alert.resolved` entries, in order.
    pub async fn alert_events(&self, change_id: &str) -> Result<Vec<AlertEntry>> {
        let rows = on_pool!(self, p => sqlx::query_as(EVENTS)
            .bind(change_id).bind(RAISED).bind(RESOLVED).fetch_all(p).await)?;
        events(rows)
    }

    /// A page of alert events (`alert.raised`, `alert.resolved`, or only `kind`), the change's
    /// or all, newest first, before entry `before`: (seq, kind, subject, time, payload).
    pub async fn alert_event_page(
        &self,
        change_id: Option<&str>,
        kind: Option<&str>,
        before: u64,
        limit: u64,
    ) -> Result<Vec<AlertEventRow>> {
        let rows: Vec<(i64, String, String, i64, Option<String>)> = on_pool!(self, p => {
            let mut q = QueryBuilder::new(
                "SELECT e.seq, e.kind, e.subject, e.time_ns, p.payload FROM entries e \
                 LEFT JOIN payloads p ON p.seq = e.seq WHERE e.seq < ");
            q.push_bind(i(before));
            alert_filter(&mut q, change_id, kind);
            q.push(" ORDER BY e.seq DESC LIMIT ").push_bind(i(limit));
            q.build_query_as().fetch_all(p).await
        })?;
        rows.into_iter()
            .map(|(s, k, subject, t, p)| Ok((u(s, "seq")?, k, subject, t, p)))
            .collect()
    }

    /// How many alert events the filter matches.
    pub async fn alert_event_count(
        &self,
        change_id: Option<&str>,
        kind: Option<&str>,
    ) -> Result<u64> {
        let (n,): (i64,) = on_pool!(self, p => {
            let mut q = QueryBuilder::new("SELECT COUNT(*) FROM entries e WHERE 1 = 1");
            alert_filter(&mut q, change_id, kind);
            q.build_query_as().fetch_one(p).await
        })?;
        Ok(u64::try_from(n).unwrap_or_default())
    }

    /// Calls `f` with every alert event (the change's or all) in chain order, streamed: what is
    /// open is folded from them without holding them all.
    pub async fn for_each_alert_event(
        &self,
        change_id: Option<&str>,
        mut f: impl FnMut(AlertEventRow),
    ) -> Result<()> {
        use futures::TryStreamExt as _;
        on_pool!(self, p => {
            let mut q = QueryBuilder::new(
                "SELECT e.seq, e.kind, e.subject, e.time_ns, p.payload FROM entries e \
                 LEFT JOIN payloads p ON p.seq = e.seq WHERE 1 = 1");
            alert_filter(&mut q, change_id, None);
            q.push(" ORDER BY e.seq");
            let mut rows = q.build_query_as::<(i64, String, String, i64, Option<String>)>().fetch(p);
            while let Some((s, k, subject, t, payload)) = rows.try_next().await? {
                f((u(s, "seq")?, k, subject, t, payload));
            }
            Ok::<(), super::StorageError>(())
        })
    }

    /// The outbox rows of these events.
    pub async fn alert_deliveries(&self, events: &[u64]) -> Result<Vec<DeliveryState>> {
        type Row = (i64, String, String, i64, Option<i64>, Option<String>);
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<Row> = on_pool!(self, p => {
            let mut q = QueryBuilder::new(
                "SELECT event_seq, destination, state, attempts, delivered_seq, last_error \
                 FROM alert_outbox WHERE event_seq IN (");
            let mut sep = q.separated(", ");
            for e in events {
                sep.push_bind(i(*e));
            }
            q.push(") ORDER BY event_seq, destination");
            q.build_query_as().fetch_all(p).await
        })?;
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

    /// The `alert.delivered` entries among `seqs`: (seq, payload).
    pub async fn alert_delivered_entries(
        &self,
        seqs: &[u64],
    ) -> Result<Vec<(u64, Option<String>)>> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<(i64, Option<String>)> = on_pool!(self, p => {
            let mut q = QueryBuilder::new(
                "SELECT e.seq, p.payload FROM entries e LEFT JOIN payloads p ON p.seq = e.seq \
                 WHERE e.kind = ");
            q.push_bind(DELIVERED).push(" AND e.seq IN (");
            let mut sep = q.separated(", ");
            for s in seqs {
                sep.push_bind(i(*s));
            }
            q.push(")");
            q.build_query_as().fetch_all(p).await
        })?;
        rows.into_iter()
            .map(|(s, p)| Ok((u(s, "seq")?, p)))
            .collect()
    }

    /// Takes up to `limit` deliveries to `destinations` that are due (pending and past their
    /// wait, or claimed by a holder that let its deadline pass) for the holder `token`, until
    /// `deadline_ns`; oldest events first.
    pub async fn claim_alert_deliveries(
        &self,
        destinations: &[String],
        now_ns: i64,
        token: i64,
        deadline_ns: i64,
        limit: u64,
    ) -> Result<Vec<Delivery>> {
        if destinations.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<(i64, String, i64)> = on_pool!(self, p => {
            let mut q = QueryBuilder::new("UPDATE alert_outbox SET state = 'claimed', claim = ");
            q.push_bind(token).push(", next_ns = ").push_bind(deadline_ns)
                .push(", attempts = attempts + 1 WHERE (event_seq, destination) IN \
                       (SELECT event_seq, destination FROM alert_outbox \
                        WHERE state IN ('pending', 'claimed') AND next_ns <= ")
                .push_bind(now_ns).push(" AND destination IN (");
            let mut sep = q.separated(", ");
            for d in destinations {
                sep.push_bind(d);
            }
            q.push(") ORDER BY event_seq LIMIT ").push_bind(i(limit))
                .push(") AND state IN ('pending', 'claimed') AND next_ns <= ").push_bind(now_ns)
                .push(" RETURNING event_seq, destination, attempts");
            q.build_query_as().fetch_all(p).await
        })?;
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

    /// Extends a claim held with `token` to `deadline_ns` right before a send, so it cannot
    /// lapse mid-send; false when another holder took it meanwhile (then it is not sent).
    pub async fn renew_alert_claim(
        &self,
        d: &Delivery,
        token: i64,
        deadline_ns: i64,
    ) -> Result<bool> {
        let n = on_pool!(self, p => sqlx::query(
            "UPDATE alert_outbox SET next_ns = $1 \
             WHERE event_seq = $2 AND destination = $3 AND state = 'claimed' AND claim = $4")
            .bind(deadline_ns).bind(i(d.event_seq)).bind(&d.destination).bind(token)
            .execute(p).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Gives a delivery held with `token` back: pending again from `next_ns`, or `refused` for
    /// good; `tried`: whether it was sent (a delivery put off for an earlier one was not, and
    /// its attempt is not counted). False when another holder took it meanwhile.
    pub async fn release_alert_delivery(
        &self,
        d: &Delivery,
        token: i64,
        refused: bool,
        tried: bool,
        next_ns: i64,
        error: &str,
    ) -> Result<bool> {
        let state = if refused { "refused" } else { "pending" };
        let uncount = i64::from(!tried);
        let n = on_pool!(self, p => sqlx::query(
            "UPDATE alert_outbox SET state = $1, next_ns = $2, last_error = $3, attempts = attempts - $7 \
             WHERE event_seq = $4 AND destination = $5 AND state = 'claimed' AND claim = $6")
            .bind(state).bind(next_ns).bind(error).bind(i(d.event_seq)).bind(&d.destination).bind(token).bind(uncount)
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

    /// Takes the delivery from the claim `token` holds, under the writer's lock: true once, for
    /// the holder whose claim is current (the row is locked until the transaction ends, so a
    /// holder re-claiming it meanwhile finds it taken), so `alert.delivered` is appended once.
    pub async fn take_alert_claim(
        &mut self,
        event_seq: u64,
        destination: &str,
        token: i64,
    ) -> Result<bool> {
        let n = on_tx!(self, c => sqlx::query(
            "UPDATE alert_outbox SET state = 'delivering' \
             WHERE event_seq = $1 AND destination = $2 AND state = 'claimed' AND claim = $3")
            .bind(i(event_seq)).bind(destination).bind(token).execute(c).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Whether a fact naming `change_id` was recorded after entry `seq` (a look judged as of
    /// `seq` is then out of date).
    pub async fn change_facts_after(&mut self, change_id: &str, seq: i64) -> Result<bool> {
        let r: Option<(i64,)> = on_tx!(self, c => sqlx::query_as(
            "SELECT entry_seq FROM facts WHERE change_id = $1 AND entry_seq > $2 LIMIT 1")
            .bind(change_id).bind(seq).fetch_optional(c).await)?;
        Ok(r.is_some())
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
             WHERE event_seq = $2 AND destination = $3 AND state = 'delivering'")
            .bind(i(delivered_seq)).bind(i(event_seq)).bind(destination).execute(c).await.map(|_| ()))?;
        Ok(())
    }
}
