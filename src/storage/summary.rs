//! The per-change summary (`change_summary`, `summary_state`): what the change list filters,
//! orders and counts by. Derived; `read/summary.rs` keeps it and `verify` recomputes it.

use super::{AppendTx, Result, Store, i};
use sqlx::QueryBuilder;

/// One change as the list filters and orders it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryRow {
    pub change_id: String,
    pub requested_ns: i64,
    /// The earliest and latest time of the change.requested facts naming the change (MAX and
    /// MIN when there are none): which periods it falls in.
    pub first_request: i64,
    pub last_request: i64,
    /// Lower case; empty when the change states none.
    pub environment: String,
    pub service: String,
    pub kind: String,
    pub version: String,
    /// Exception codes, sorted, each padded by spaces (` A B `); empty for none.
    pub exceptions: String,
}

/// How far the summary has followed the chain, and under which settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryState {
    /// Every entry up to and including this seq is reflected; `None`: nothing yet.
    pub through: Option<u64>,
    pub criteria: String,
}

/// What the list asks of the summary.
#[derive(Debug, Clone, Default)]
pub struct SummaryQuery {
    pub from_ns: i64,
    pub to_ns: i64,
    /// Lower case.
    pub environment: Option<String>,
    pub service: Option<String>,
    pub kind: Option<String>,
    pub exception: Option<String>,
}

type RowTuple = (
    String,
    i64,
    i64,
    i64,
    String,
    String,
    String,
    String,
    String,
);

fn row(t: RowTuple) -> SummaryRow {
    SummaryRow {
        change_id: t.0,
        requested_ns: t.1,
        first_request: t.2,
        last_request: t.3,
        environment: t.4,
        service: t.5,
        kind: t.6,
        version: t.7,
        exceptions: t.8,
    }
}

/// The filter shared by the page and its count: changes with a request fact in the period (the
/// period means what the report's period means), matching every filter given. (A macro: the
/// query builder's type differs per backend.)
macro_rules! push_filter {
    ($q:expr, $f:expr) => {{
        let (q, f) = (&mut $q, $f);
        // In the period: a change.requested fact naming the change falls in it, as the report's
        // population is chosen. All its request facts inside, or its only one, answers that from
        // the row; a change whose requests straddle the period (rare) asks the facts.
        q.push(" FROM change_summary s WHERE s.last_request >= ")
            .push_bind(f.from_ns)
            .push(" AND s.first_request < ")
            .push_bind(f.to_ns)
            .push(" AND ((s.first_request >= ")
            .push_bind(f.from_ns)
            .push(" AND s.last_request < ")
            .push_bind(f.to_ns)
            .push(
                ") OR EXISTS (SELECT 1 FROM facts x WHERE x.change_id = s.change_id \
                   AND x.kind = 'change.requested' AND x.time_ns >= ",
            )
            .push_bind(f.from_ns)
            .push(" AND x.time_ns < ")
            .push_bind(f.to_ns)
            .push("))");
        for (col, v) in [
            ("environment", &f.environment),
            ("service", &f.service),
            ("kind", &f.kind),
        ] {
            if let Some(v) = v {
                q.push(format!(" AND s.{col} = ")).push_bind(v.clone());
            }
        }
        if let Some(code) = &f.exception {
            // `_` is a LIKE wildcard, and codes are made of capitals and underscores.
            let pattern = format!(
                "% {} %",
                code.replace('\\', "\\\\")
                    .replace('_', "\\_")
                    .replace('%', "\\%")
            );
            q.push(" AND s.exceptions LIKE ")
                .push_bind(pattern)
                .push(" ESCAPE '\\'");
        }
    }};
}

impl Store {
    pub async fn summary_state(&self) -> Result<Option<SummaryState>> {
        let r: Option<(i64, String)> = on_pool!(self, p => sqlx::query_as(
            "SELECT through_seq, criteria FROM summary_state WHERE id = 1").fetch_optional(p).await)?;
        Ok(r.map(|(t, criteria)| SummaryState {
            through: u64::try_from(t).ok(),
            criteria,
        }))
    }

    /// The ids of one page of the list, in (requested time, id) order, and how many match.
    pub async fn summary_page(
        &self,
        f: &SummaryQuery,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<String>, u64)> {
        // Ties in time are ordered by the id's bytes, as the fold path sorts them (PostgreSQL's
        // default collation may not be byte order).
        let collate = match self {
            Store::Postgres(_) => " COLLATE \"C\"",
            Store::Sqlite(_) => "",
        };
        let ids: Vec<(String,)> = on_pool!(self, p => {
            let mut q = QueryBuilder::new("SELECT s.change_id");
            push_filter!(q, f);
            q.push(format!(" ORDER BY s.requested_ns, s.change_id{collate} LIMIT "))
                .push_bind(i(limit))
                .push(" OFFSET ")
                .push_bind(i(offset));
            q.build_query_as().fetch_all(p).await
        })?;
        let total: (i64,) = on_pool!(self, p => {
            let mut q = QueryBuilder::new("SELECT COUNT(*)");
            push_filter!(q, f);
            q.build_query_as().fetch_one(p).await
        })?;
        Ok((
            ids.into_iter().map(|(c,)| c).collect(),
            u64::try_from(total.0).unwrap_or(0),
        ))
    }

    /// The earliest and latest change.requested fact naming each of `ids` below `size`, read
    /// from the columns `changes_between` reads (so a fact whose payload does not parse still
    /// places its change in periods as the report's population does).
    pub async fn request_times(
        &self,
        ids: &[String],
        size: u64,
    ) -> Result<std::collections::HashMap<String, (i64, i64)>> {
        // `kind || ''`: SQLite would otherwise walk facts_kind_time through every request fact
        // of the ledger for each chunk, instead of looking the ids up (as `existing_changes`).
        let mut out = std::collections::HashMap::new();
        for chunk in ids.chunks(500) {
            let rows: Vec<(String, i64, i64)> = on_pool!(self, p => {
                let mut q = QueryBuilder::new(
                    "SELECT change_id, MIN(time_ns), MAX(time_ns) FROM facts WHERE kind || '' = 'change.requested' AND entry_seq < ");
                q.push_bind(i(size)).push(" AND change_id IN (");
                let mut sep = q.separated(", ");
                for id in chunk {
                    sep.push_bind(id);
                }
                q.push(") GROUP BY change_id");
                q.build_query_as().fetch_all(p).await
            })?;
            out.extend(rows.into_iter().map(|(c, lo, hi)| (c, (lo, hi))));
        }
        Ok(out)
    }

    /// Whether the summary holds any row.
    pub async fn summary_has_rows(&self) -> Result<bool> {
        let r: Option<(String,)> = on_pool!(self, p => sqlx::query_as(
            "SELECT change_id FROM change_summary LIMIT 1").fetch_optional(p).await)?;
        Ok(r.is_some())
    }

    /// Summary rows with `change_id > after`, in id order, at most `limit` (the verifier's pass).
    pub async fn summary_rows(&self, after: &str, limit: u64) -> Result<Vec<SummaryRow>> {
        let rows: Vec<RowTuple> = on_pool!(self, p => sqlx::query_as(
            "SELECT change_id, requested_ns, first_request, last_request, environment, service, kind, version, exceptions \
             FROM change_summary WHERE change_id > $1 ORDER BY change_id LIMIT $2")
            .bind(after).bind(i(limit)).fetch_all(p).await)?;
        Ok(rows.into_iter().map(row).collect())
    }

    /// Rollback changes of a service in an environment (lower case), as summarised: whose
    /// judgement a new sighting of a version there can move.
    pub async fn summary_rollbacks_of(
        &self,
        service: &str,
        environment: &str,
    ) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = on_pool!(self, p => sqlx::query_as(
            "SELECT change_id FROM change_summary WHERE kind = 'rollback' AND service = $1 AND environment = $2")
            .bind(service).bind(environment).fetch_all(p).await)?;
        Ok(rows.into_iter().map(|(c,)| c).collect())
    }

    /// Facts of entries `after < seq <= upto` (all from the start without `after`), in order:
    /// (change id, run id, payload).
    pub async fn facts_after(
        &self,
        after: Option<u64>,
        upto: u64,
    ) -> Result<Vec<(Option<String>, Option<String>, String)>> {
        let after = after.map_or(-1, i);
        Ok(on_pool!(self, p => sqlx::query_as(
            "SELECT change_id, run_id, payload FROM facts WHERE entry_seq > $1 AND entry_seq <= $2 ORDER BY entry_seq")
            .bind(after).bind(i(upto)).fetch_all(p).await)?)
    }

    /// Whether an erasure was recorded by an entry `after < seq <= upto`.
    pub async fn erasure_between(&self, after: Option<u64>, upto: u64) -> Result<bool> {
        let after = after.map_or(-1, i);
        let r: Option<(i64,)> = on_pool!(self, p => sqlx::query_as(
            "SELECT seq FROM erasures WHERE erasure_seq > $1 AND erasure_seq <= $2 LIMIT 1")
            .bind(after).bind(i(upto)).fetch_optional(p).await)?;
        Ok(r.is_some())
    }

    /// Every change id facts of entries up to `through` name, in order (what the summary must
    /// hold a row for).
    pub async fn change_ids_through(&self, through: u64) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = on_pool!(self, p => sqlx::query_as(
            "SELECT DISTINCT change_id FROM facts WHERE change_id IS NOT NULL AND entry_seq <= $1 ORDER BY change_id")
            .bind(i(through)).fetch_all(p).await)?;
        Ok(rows.into_iter().map(|(c,)| c).collect())
    }

    /// Changes that state any of `runs` (whose run claims a new fact can contest).
    pub async fn changes_of_runs(&self, runs: &[String]) -> Result<Vec<String>> {
        self.distinct_in(
            "SELECT DISTINCT change_id FROM facts WHERE change_id IS NOT NULL AND run_id IN (",
            runs,
        )
        .await
    }

    async fn distinct_in(&self, head: &str, values: &[String]) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for chunk in values.chunks(500) {
            let rows: Vec<(String,)> = on_pool!(self, p => {
                let mut q = QueryBuilder::new(head);
                let mut sep = q.separated(", ");
                for v in chunk {
                    sep.push_bind(v);
                }
                q.push(")");
                q.build_query_as().fetch_all(p).await
            })?;
            out.extend(rows.into_iter().map(|(c,)| c));
        }
        Ok(out)
    }

    /// Replaces the rows of `rows`' changes, deletes those of `remove`, and moves the state from `expected` to `state`, in
    /// one transaction, only if the state is still `expected` (another summarizer may have done
    /// it already: then nothing is written and the answer is false). `reset` first deletes every
    /// row (new settings).
    pub async fn write_summary(
        &self,
        expected: Option<&SummaryState>,
        state: &SummaryState,
        rows: &[SummaryRow],
        remove: &[String],
        reset: bool,
    ) -> Result<bool> {
        let mut tx = self.begin_append().await?;
        let current = read_state(&mut tx).await?;
        if current.as_ref() != expected {
            return Ok(false); // dropped: rolled back
        }
        if reset {
            on_tx!(&mut tx, c => sqlx::query("DELETE FROM change_summary").execute(&mut *c).await.map(|_| ()))?;
        }
        for chunk in remove.chunks(500) {
            on_tx!(&mut tx, c => {
                let mut q = QueryBuilder::new("DELETE FROM change_summary WHERE change_id IN (");
                let mut sep = q.separated(", ");
                for id in chunk {
                    sep.push_bind(id);
                }
                q.push(")");
                q.build().execute(&mut *c).await.map(|_| ())
            })?;
        }
        for chunk in rows.chunks(200) {
            on_tx!(&mut tx, c => {
                let mut q = QueryBuilder::new(
                    "INSERT INTO change_summary (change_id, requested_ns, first_request, last_request, environment, service, kind, version, exceptions) ");
                q.push_values(chunk, |mut b, r| {
                    b.push_bind(&r.change_id)
                        .push_bind(r.requested_ns)
                        .push_bind(r.first_request)
                        .push_bind(r.last_request)
                        .push_bind(&r.environment)
                        .push_bind(&r.service)
                        .push_bind(&r.kind)
                        .push_bind(&r.version)
                        .push_bind(&r.exceptions);
                });
                q.push(
                    " ON CONFLICT (change_id) DO UPDATE SET requested_ns = excluded.requested_ns, \
                     first_request = excluded.first_request, last_request = excluded.last_request, \
                     environment = excluded.environment, service = excluded.service, kind = excluded.kind, \
                     version = excluded.version, exceptions = excluded.exceptions");
                q.build().execute(&mut *c).await.map(|_| ())
            })?;
        }
        let through = state.through.map_or(-1, i);
        on_tx!(&mut tx, c => sqlx::query(
            "INSERT INTO summary_state (id, through_seq, criteria) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO UPDATE SET through_seq = excluded.through_seq, criteria = excluded.criteria")
            .bind(through).bind(&state.criteria).execute(&mut *c).await.map(|_| ()))?;
        tx.commit().await?;
        Ok(true)
    }
}

/// The state row, locked against other summarizers until the transaction ends (PostgreSQL; a
/// SQLite write transaction is exclusive already).
async fn read_state(tx: &mut AppendTx) -> Result<Option<SummaryState>> {
    let r: Option<(i64, String)> = match tx {
        AppendTx::Sqlite(t) => {
            sqlx::query_as("SELECT through_seq, criteria FROM summary_state WHERE id = 1")
                .fetch_optional(&mut **t)
                .await?
        }
        AppendTx::Postgres(t) => {
            sqlx::query_as(
                "SELECT through_seq, criteria FROM summary_state WHERE id = 1 FOR UPDATE",
            )
            .fetch_optional(&mut **t)
            .await?
        }
    };
    Ok(r.map(|(t, criteria)| SummaryState {
        through: u64::try_from(t).ok(),
        criteria,
    }))
}
