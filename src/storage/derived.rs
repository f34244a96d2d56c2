//! Derived tables: the credential index the judgement looks reuse up in, sightings of a version,
//! and the whole rows `verify` recomputes from the signed entries (facts, spans, log records,
//! credentials), read in entry order.

use super::{AppendTx, Result, StorageError, Store, i, u};
use crate::core::evidence::derived::FactRow;
use crate::core::evidence::{Fact, FactRecord, service_key_prefix, version_key_prefix};
use sqlx::QueryBuilder;

/// A spans row exactly as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSpanRow {
    pub trace_id: Vec<u8>,
    pub span_id: Vec<u8>,
    pub parent_span_id: Option<Vec<u8>>,
    pub digest: Vec<u8>,
    pub body: Vec<u8>,
    pub service: String,
    pub name: String,
    pub start_ns: i64,
    pub end_ns: i64,
    pub subject: String,
    pub rule: String,
    pub entry_seq: u64,
    pub received_ns: i64,
}

/// A log_records row exactly as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLogRow {
    pub digest: Vec<u8>,
    pub body: Vec<u8>,
    pub trace_id: Option<Vec<u8>>,
    pub span_id: Option<Vec<u8>>,
    pub time_ns: i64,
    pub event_name: String,
    pub subject: String,
    pub entry_seq: u64,
    pub received_ns: i64,
}

type FactTuple = (
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    i64,
    String,
    i64,
    i64,
);
type SpanRowTuple = (
    Vec<u8>,
    Vec<u8>,
    Option<Vec<u8>>,
    Vec<u8>,
    Vec<u8>,
    String,
    String,
    i64,
    i64,
    String,
    String,
    i64,
    i64,
);
type LogRowTuple = (
    Vec<u8>,
    Vec<u8>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    i64,
    String,
    String,
    i64,
    i64,
);

impl Store {
    /// Fills the credential index from the facts stored before it existed, once (recorded in
    /// `backfills`). Facts are read in entry order, so each use keeps its first entry.
    pub(super) async fn backfill_credentials(&self) -> Result<()> {
        const NAME: &str = "credentials";
        let done: Option<(String,)> = on_pool!(self, p => sqlx::query_as(
            "SELECT name FROM backfills WHERE name = $1").bind(NAME).fetch_optional(p).await)?;
        if done.is_some() {
            return Ok(());
        }
        let mut tx = self.begin_append().await?;
        // Under the writer lock: no writer records a use meanwhile that an older fact shows.
        tx.lock_head().await?;
        let mut after: i64 = -1;
        loop {
            let rows: Vec<(String, i64)> = on_tx!(&mut tx, c => sqlx::query_as(
                "SELECT payload, entry_seq FROM facts WHERE entry_seq > $1 ORDER BY entry_seq LIMIT 2000")
                .bind(after).fetch_all(&mut *c).await)?;
            let Some(last) = rows.last().map(|r| r.1) else {
                break;
            };
            after = last;
            let mut creds = Vec::new();
            for (payload, seq) in rows {
                if let Ok(f) = serde_json::from_str::<FactRecord>(&payload) {
                    let subject = f.subject();
                    for c in f.credentials() {
                        creds.push((c, subject.clone(), u(seq, "entry seq")?));
                    }
                }
            }
            tx.insert_credentials(&creds).await?;
        }
        // Several processes may migrate at once: the first to commit records it, the others
        // found nothing new to insert (credential rows keep their first entry).
        on_tx!(&mut tx, c => sqlx::query(
            "INSERT INTO backfills (name, done_ns) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(NAME).bind(crate::sys::now_ns()).execute(&mut *c).await.map(|_| ()))?;
        tx.commit().await
    }

    /// The first use of each of `credentials` in an entry below `size`: (credential, subject,
    /// seq). The first is all reuse needs: a change reused a credential exactly when its first
    /// use belongs to another change. (A static credential on 100,000 changes is one row here.)
    pub async fn credential_uses(
        &self,
        credentials: &[String],
        size: u64,
    ) -> Result<Vec<(String, String, u64)>> {
        let mut out = Vec::new();
        for chunk in credentials.chunks(500) {
            let rows: Vec<(String, String, i64)> = on_pool!(self, p => {
                let mut q = QueryBuilder::new(
                    "SELECT c.credential, c.subject, c.first_seq FROM credentials c JOIN \
                     (SELECT credential, MIN(first_seq) AS first FROM credentials WHERE first_seq < ");
                q.push_bind(i(size)).push(" AND credential IN (");
                let mut sep = q.separated(", ");
                for c in chunk {
                    sep.push_bind(c);
                }
                q.push(") GROUP BY credential) m ON m.credential = c.credential AND m.first = c.first_seq");
                q.build_query_as().fetch_all(p).await
            })?;
            for (c, s, seq) in rows {
                out.push((c, s, u(seq, "first seq")?));
            }
        }
        Ok(out)
    }

    /// Sighting facts below `size` whose key lies in `[lo, hi)` byte for byte, newest entry
    /// first, at most `limit`. SQLite compares keys bytewise; PostgreSQL compares in the
    /// database's collation, which need not be bytewise, so there the range is taken in the C
    /// collation (an index of migration 0006 answers it).
    async fn sightings_between(
        &self,
        lo: &str,
        hi: &str,
        size: u64,
        limit: i64,
    ) -> Result<Vec<(String, u64)>> {
        let sql = match self {
            // `kind || ''` and `entry_seq + 0` keep SQLite (no statistics) on the key range:
            // through facts_kind_time or facts_entry it would read every sighting once per
            // rollback (318 s instead of 1 s in a 100k-change report).
            Store::Sqlite(_) => {
                "SELECT payload, entry_seq FROM facts WHERE fact_key >= $1 AND fact_key < $2 \
                 AND kind || '' = 'version.observed' AND entry_seq + 0 >= 0 AND entry_seq + 0 < $3 \
                 ORDER BY entry_seq DESC LIMIT $4"
            }
            Store::Postgres(_) => {
                "SELECT payload, entry_seq FROM facts WHERE fact_key COLLATE \"C\" >= $1 \
                 AND fact_key COLLATE \"C\" < $2 AND kind = 'version.observed' \
                 AND entry_seq >= 0 AND entry_seq < $3 ORDER BY entry_seq DESC LIMIT $4"
            }
        };
        let rows: Vec<(String, i64)> = on_pool!(self, p => sqlx::query_as(sql)
            .bind(lo).bind(hi).bind(i(size)).bind(limit).fetch_all(p).await)?;
        rows.into_iter()
            .map(|(payload, seq)| Ok((payload, u(seq, "entry seq")?)))
            .collect()
    }

    /// Sighting facts below `size` whose key starts with `prefix` and goes on with a byte below
    /// `A` (it and `prefix@bucket`; other versions sharing the prefix are dropped by the caller).
    async fn sightings_with_prefix(&self, prefix: &str, size: u64) -> Result<Vec<FactRecord>> {
        self.sightings_between(prefix, &format!("{prefix}A"), size, i64::MAX)
            .await?
            .into_iter()
            .map(|(payload, _)| {
                serde_json::from_str(&payload)
                    .map_err(|e| StorageError::Corrupt(format!("fact: {e}")))
            })
            .collect()
    }

    /// When each (service, environment, version) was seen running in production, by the
    /// version.observed facts below `size`. Keys before the environment was lower-cased in them
    /// are found under the environment as given.
    pub async fn sightings_of(
        &self,
        versions: &[(String, String, String)],
        size: u64,
    ) -> Result<Vec<FactRecord>> {
        let mut out = Vec::new();
        for (service, env, version) in versions {
            let mut prefixes = vec![version_key_prefix(service, env, version)];
            let as_given = format!("{}{version}", service_key_prefix(service, env));
            if as_given != prefixes[0] {
                prefixes.push(as_given);
            }
            for prefix in prefixes {
                // A prefix of another version's key ("1.0" of "1.0.1") is not a match.
                out.extend(
                    self.sightings_with_prefix(&prefix, size)
                        .await?
                        .into_iter()
                        .filter(|f| matches!(&f.fact, Fact::Version(v) if &v.version == version)),
                );
            }
        }
        Ok(out)
    }

    /// facts rows of entries in `[lo, hi)`, by entry.
    pub async fn facts_between(&self, lo: u64, hi: u64) -> Result<Vec<FactRow>> {
        let rows: Vec<FactTuple> = on_pool!(self, p => sqlx::query_as(
            "SELECT fact_key, kind, change_id, run_id, source, time_ns, payload, entry_seq, received_ns \
             FROM facts WHERE entry_seq >= $1 AND entry_seq < $2 ORDER BY entry_seq, fact_key")
            .bind(i(lo)).bind(i(hi)).fetch_all(p).await)?;
        rows.into_iter()
            .map(|t| {
                Ok(FactRow {
                    fact_key: t.0,
                    kind: t.1,
                    change_id: t.2,
                    run_id: t.3,
                    source: t.4,
                    time_ns: t.5,
                    payload: t.6,
                    entry_seq: u(t.7, "entry seq")?,
                    received_ns: t.8,
                })
            })
            .collect()
    }

    /// spans rows of entries in `[lo, hi)`, by entry.
    pub async fn spans_between(&self, lo: u64, hi: u64) -> Result<Vec<StoredSpanRow>> {
        let rows: Vec<SpanRowTuple> = on_pool!(self, p => sqlx::query_as(
            "SELECT trace_id, span_id, parent_span_id, digest, body, service, name, start_ns, end_ns, \
             subject, rule, entry_seq, received_ns FROM spans WHERE entry_seq >= $1 AND entry_seq < $2 \
             ORDER BY entry_seq, trace_id, span_id")
            .bind(i(lo)).bind(i(hi)).fetch_all(p).await)?;
        rows.into_iter()
            .map(|t| {
                Ok(StoredSpanRow {
                    trace_id: t.0,
                    span_id: t.1,
                    parent_span_id: t.2,
                    digest: t.3,
                    body: t.4,
                    service: t.5,
                    name: t.6,
                    start_ns: t.7,
                    end_ns: t.8,
                    subject: t.9,
                    rule: t.10,
                    entry_seq: u(t.11, "entry seq")?,
                    received_ns: t.12,
                })
            })
            .collect()
    }

    /// log_records rows of entries in `[lo, hi)`, by entry.
    pub async fn logs_between(&self, lo: u64, hi: u64) -> Result<Vec<StoredLogRow>> {
        let rows: Vec<LogRowTuple> = on_pool!(self, p => sqlx::query_as(
            "SELECT digest, body, trace_id, span_id, time_ns, event_name, subject, entry_seq, received_ns \
             FROM log_records WHERE entry_seq >= $1 AND entry_seq < $2 ORDER BY entry_seq, digest")
            .bind(i(lo)).bind(i(hi)).fetch_all(p).await)?;
        rows.into_iter()
            .map(|t| {
                Ok(StoredLogRow {
                    digest: t.0,
                    body: t.1,
                    trace_id: t.2,
                    span_id: t.3,
                    time_ns: t.4,
                    event_name: t.5,
                    subject: t.6,
                    entry_seq: u(t.7, "entry seq")?,
                    received_ns: t.8,
                })
            })
            .collect()
    }

    /// Derived rows that name an entry at or past `size`, or before the first: (table, key,
    /// the entry named). No signed entry produced them.
    pub async fn derived_rows_outside(&self, size: u64) -> Result<Vec<(String, String, i64)>> {
        let rows: Vec<(String, String, i64)> = on_pool!(self, p => sqlx::query_as(
            "SELECT 'facts', fact_key, entry_seq FROM facts WHERE entry_seq >= $1 OR entry_seq < 0 \
             UNION ALL SELECT 'credentials', credential || ' ' || subject, first_seq FROM credentials \
               WHERE first_seq >= $1 OR first_seq < 0 \
             UNION ALL SELECT 'log_records', '', entry_seq FROM log_records WHERE entry_seq >= $1 OR entry_seq < 0 \
             UNION ALL SELECT 'spans', '', entry_seq FROM spans WHERE entry_seq >= $1 OR entry_seq < 0 LIMIT 100")
            .bind(i(size)).fetch_all(p).await)?;
        Ok(rows)
    }

    /// Credential rows whose first entry is in `[lo, hi)`: (first seq, credential, subject).
    pub async fn credentials_between(
        &self,
        lo: u64,
        hi: u64,
    ) -> Result<Vec<(u64, String, String)>> {
        let rows: Vec<(i64, String, String)> = on_pool!(self, p => sqlx::query_as(
            "SELECT first_seq, credential, subject FROM credentials \
             WHERE first_seq >= $1 AND first_seq < $2 ORDER BY first_seq, credential, subject")
            .bind(i(lo)).bind(i(hi)).fetch_all(p).await)?;
        rows.into_iter()
            .map(|(seq, c, s)| Ok((u(seq, "first seq")?, c, s)))
            .collect()
    }
}

impl Store {
    /// The latest recorded sighting (by entry) of any version of (service, environment).
    pub async fn latest_sighting(
        &self,
        service: &str,
        environment: &str,
    ) -> Result<Option<crate::core::evidence::VersionFact>> {
        let lower = service_key_prefix(service, &environment.to_ascii_lowercase());
        let given = service_key_prefix(service, environment);
        let mut prefixes = vec![lower];
        if given != prefixes[0] {
            prefixes.push(given);
        }
        let mut found: Option<(u64, crate::core::evidence::VersionFact)> = None;
        for prefix in prefixes {
            // Every key of the pair starts with the prefix, which ends in the separator 0x1f:
            // 0x20 in its place bounds them.
            let hi = format!("{}\u{20}", &prefix[..prefix.len() - 1]);
            let newest = self.sightings_between(&prefix, &hi, u64::MAX, 1).await?;
            if let Some((payload, seq)) = newest.into_iter().next() {
                let f: FactRecord = serde_json::from_str(&payload)
                    .map_err(|e| StorageError::Corrupt(format!("fact: {e}")))?;
                if let Fact::Version(v) = f.fact
                    && found.as_ref().is_none_or(|(s, _)| seq > *s)
                {
                    found = Some((seq, v));
                }
            }
        }
        Ok(found.map(|(_, v)| v))
    }
}
