//! Storage: one set of queries over SQLite (the embedded default) and PostgreSQL.
//!
//! Every query is written once with `$n` placeholders (SQLite accepts them too) and runs on either
//! pool through `on_pool!`/`on_tx!`; only locking differs. Rows become core types here, so nothing
//! above this module sees a database type.

use crate::core::evidence::FactRecord;
use crate::core::evidence::telemetry::{LogRow, SpanRow};
use crate::core::ledger::batch::{BuiltBatch, Head};
use crate::core::ledger::hash::Hash;
use crate::core::ledger::keys::{KeyId, Origin};
use crate::core::ledger::merkle::{CompactRange, NodeId};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode, Postgres};
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Transaction};
use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// Rows per multi-row INSERT: well under both backends' bind-parameter limits.
const INSERT_CHUNK: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("unsupported database URL (it starts {0:?}): use sqlite://PATH or postgres://…")]
    Url(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// Not transient: a certificate or `sslmode` mismatch stays until someone fixes it.
    #[error("TLS to the database failed: {0} (check sslmode and sslrootcert in the database URL)")]
    Tls(sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl StorageError {
    /// Errors worth retrying: connection trouble, lock timeouts, serialization failures.
    pub fn is_transient(&self) -> bool {
        match self {
            StorageError::Db(e) => match e {
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => true,
                sqlx::Error::Database(d) => {
                    let code = d.code().unwrap_or_default();
                    // SQLite: BUSY, LOCKED, IOERR, FULL (and their extended codes). PostgreSQL:
                    // connection exceptions, serialization failures, deadlocks, lock timeouts,
                    // insufficient resources (disk full), shutdowns.
                    match code.parse::<u32>().ok().map(|c| c & 0xff) {
                        Some(base) => matches!(base, 5 | 6 | 10 | 13),
                        None => {
                            code.starts_with("08")
                                || code.starts_with("53")
                                || matches!(
                                    code.as_ref(),
                                    "40001" | "40P01" | "55P03" | "57P01" | "57P02" | "57P03"
                                )
                        }
                    }
                }
                _ => false,
            },
            _ => false,
        }
    }
}

type Result<T, E = StorageError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone)]
pub struct StorageOptions {
    /// SQLite `synchronous`: FULL makes every acknowledged commit survive power loss.
    pub sqlite_synchronous_full: bool,
    pub max_connections: u32,
    /// How long a write waits for someone else's lock before failing (retryable).
    pub lock_timeout: Duration,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            sqlite_synchronous_full: true,
            max_connections: 8,
            lock_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same body against whichever pool the store holds.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            Store::Sqlite($pool) => $body,
            Store::Postgres($pool) => $body,
        }
    };
}

/// Runs the same body against whichever transaction is open (`$conn` is the connection).
macro_rules! on_tx {
    ($tx:expr, $conn:ident => $body:expr) => {
        match $tx {
            AppendTx::Sqlite(tx) => {
                let $conn = &mut **tx;
                $body
            }
            AppendTx::Postgres(tx) => {
                let $conn = &mut **tx;
                $body
            }
        }
    };
}

/// The head row: the core head plus when the last checkpoint was signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadRow {
    pub head: Head,
    pub checkpoint_size: u64,
    pub checkpoint_time_ns: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRow {
    pub seq: u64,
    pub entry: Vec<u8>,
    pub sig: Vec<u8>,
    pub leaf_hash: Hash,
    pub time_ns: i64,
    pub kind: String,
    pub subject: String,
    pub salt: Option<Vec<u8>>,
    pub payload: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRow {
    pub size: u64,
    pub root: Hash,
    pub note: String,
    pub key_id: String,
    pub created_ns: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyRow {
    pub key_id: String,
    pub vkey: String,
    pub from_seq: u64,
    pub rotation_seq: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSpan {
    pub span_id: [u8; 8],
    pub digest: Hash,
    pub body: Vec<u8>,
    pub name: String,
    pub rule: String,
    pub subject: String,
    pub entry_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanSummary {
    pub trace_id: String,
    pub span_id: String,
    pub service: String,
    pub rule: String,
    /// The stored OTLP bytes (for status and names).
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLog {
    pub digest: Hash,
    pub body: Vec<u8>,
    pub event_name: String,
    pub subject: String,
    pub entry_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub id: String,
    pub name: String,
    pub role: String,
    pub secret_hash: Vec<u8>,
    pub created_ns: i64,
    pub revoked_ns: Option<i64>,
}

type EntryTuple = (
    i64,
    Vec<u8>,
    Vec<u8>,
    Vec<u8>,
    i64,
    String,
    String,
    Option<Vec<u8>>,
    Option<String>,
);
type BareEntryTuple = (i64, Vec<u8>, Vec<u8>, Vec<u8>, i64, String, String);
type HeadTuple = (String, i64, Vec<u8>, i64, Vec<u8>, String, i64, i64);
type CheckpointTuple = (i64, Vec<u8>, String, String, i64);
type TokenTuple = (String, String, String, Vec<u8>, i64, Option<i64>);
type SpanTuple = (Vec<u8>, Vec<u8>, Vec<u8>, String, String, String, i64);
type LogTuple = (Vec<u8>, Vec<u8>, String, String, i64);
type SummaryTuple = (Vec<u8>, Vec<u8>, String, String, Vec<u8>);

fn u(v: i64, what: &str) -> Result<u64> {
    u64::try_from(v).map_err(|_| StorageError::Corrupt(format!("negative {what}: {v}")))
}

fn i(v: u64) -> i64 {
    // Sequence numbers and sizes stay far below 2^63; saturate rather than wrap if not.
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn hash(v: &[u8], what: &str) -> Result<Hash> {
    Hash::from_slice(v).ok_or_else(|| StorageError::Corrupt(format!("{what} is not 32 bytes")))
}

fn entry_row(t: EntryTuple) -> Result<EntryRow> {
    Ok(EntryRow {
        seq: u(t.0, "seq")?,
        entry: t.1,
        sig: t.2,
        leaf_hash: hash(&t.3, "leaf hash")?,
        time_ns: t.4,
        kind: t.5,
        subject: t.6,
        salt: t.7,
        payload: t.8,
    })
}

fn head_row(t: HeadTuple) -> Result<HeadRow> {
    let origin = Origin::parse(&t.0).map_err(|e| StorageError::Corrupt(e.to_string()))?;
    let size = u(t.1, "size")?;
    let peaks =
        t.4.chunks(32)
            .map(|c| hash(c, "frontier peak"))
            .collect::<Result<Vec<_>>>()?;
    let range = CompactRange::from_peaks(size, peaks)
        .ok_or_else(|| StorageError::Corrupt("frontier does not match the head size".into()))?;
    let key_id = KeyId::parse_hex(&t.5)
        .ok_or_else(|| StorageError::Corrupt("head key id is not hex".into()))?;
    Ok(HeadRow {
        head: Head {
            origin,
            size,
            last_leaf: hash(&t.2, "last leaf")?,
            last_time_ns: t.3,
            range,
            key_id,
        },
        checkpoint_size: u(t.6, "checkpoint size")?,
        checkpoint_time_ns: t.7,
    })
}

fn checkpoint_row(t: CheckpointTuple) -> Result<CheckpointRow> {
    Ok(CheckpointRow {
        size: u(t.0, "checkpoint size")?,
        root: hash(&t.1, "checkpoint root")?,
        note: t.2,
        key_id: t.3,
        created_ns: t.4,
    })
}

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

/// A failed handshake reaches us as an I/O error wrapping rustls's (or as sqlx's own TLS error
/// for `sslmode=require` against a server without TLS), and an unreadable `sslrootcert` as a bare
/// "No such file"; naming them TLS points the operator at the URL rather than at the network.
fn pg_connect_error(e: sqlx::Error, o: &PgConnectOptions) -> StorageError {
    let verifies = matches!(
        o.get_ssl_mode(),
        PgSslMode::VerifyCa | PgSslMode::VerifyFull
    );
    let tls = match &e {
        sqlx::Error::Tls(_) => true,
        sqlx::Error::Io(io) => {
            io.get_ref()
                .is_some_and(|inner| inner.is::<tokio_rustls::rustls::Error>())
                || (verifies
                    && o.get_socket().is_none()
                    && matches!(
                        io.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                    ))
        }
        _ => false,
    };
    if tls {
        StorageError::Tls(e)
    } else {
        StorageError::Db(e)
    }
}

const ENTRY_COLUMNS: &str = "SELECT e.seq, e.entry, e.sig, e.leaf_hash, e.time_ns, e.kind, e.subject, p.salt, p.payload \
     FROM entries e LEFT JOIN payloads p ON p.seq = e.seq";
const HEAD_COLUMNS: &str = "SELECT origin, size, last_leaf, last_time_ns, frontier, key_id, checkpoint_size, checkpoint_time_ns FROM ledger_head WHERE id = 1";

impl Store {
    /// Connects to `sqlite://PATH` (created if missing, WAL) or `postgres://…`.
    pub async fn connect(url: &str, opts: &StorageOptions) -> Result<Store> {
        if url.starts_with("sqlite:") {
            let o = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(if opts.sqlite_synchronous_full {
                    SqliteSynchronous::Full
                } else {
                    SqliteSynchronous::Normal
                })
                // Another process (a CLI command, a second server) may hold the write lock briefly.
                .busy_timeout(opts.lock_timeout);
            let pool = SqlitePoolOptions::new()
                .max_connections(opts.max_connections)
                .connect_with(o)
                .await?;
            Ok(Store::Sqlite(pool))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let ms = opts.lock_timeout.as_millis().to_string();
            let o = PgConnectOptions::from_str(url)?.options([("lock_timeout", ms.as_str())]);
            let pool = PgPoolOptions::new()
                .max_connections(opts.max_connections)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(o.clone())
                .await
                .map_err(|e| pg_connect_error(e, &o))?;
            Ok(Store::Postgres(pool))
        } else {
            // Only the part before any ':' or '@': the rest may be a password.
            let shown = url.split([':', '@']).next().unwrap_or_default();
            Err(StorageError::Url(shown.chars().take(40).collect()))
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Store::Sqlite(_) => Backend::Sqlite,
            Store::Postgres(_) => Backend::Postgres,
        }
    }

    pub async fn migrate(&self) -> Result<()> {
        match self {
            Store::Sqlite(p) => SQLITE_MIGRATIONS.run(p).await?,
            Store::Postgres(p) => POSTGRES_MIGRATIONS.run(p).await?,
        }
        self.backfill_credentials().await
    }

    pub async fn close(&self) {
        on_pool!(self, p => p.close().await)
    }

    /// A cheap round trip, for readiness.
    pub async fn ping(&self) -> Result<()> {
        on_pool!(self, p => sqlx::query("SELECT 1").execute(p).await.map(|_| ()))?;
        Ok(())
    }

    pub async fn head(&self) -> Result<Option<HeadRow>> {
        let t: Option<HeadTuple> =
            on_pool!(self, p => sqlx::query_as(HEAD_COLUMNS).fetch_optional(p).await)?;
        t.map(head_row).transpose()
    }

    /// Entries with `seq >= from`, in order, at most `limit`, with their payloads if not erased.
    pub async fn entries(&self, from: u64, limit: u64) -> Result<Vec<EntryRow>> {
        let sql = const_format(ENTRY_COLUMNS, " WHERE e.seq >= $1 ORDER BY e.seq LIMIT $2");
        let rows: Vec<EntryTuple> = on_pool!(self, p => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(i(from))
            .bind(i(limit))
            .fetch_all(p)
            .await)?;
        rows.into_iter().map(entry_row).collect()
    }

    /// Like `entries`, without payloads and salts: for checks of the entry bytes alone, which
    /// need not read the payloads a second time.
    pub async fn entries_bare(&self, from: u64, limit: u64) -> Result<Vec<EntryRow>> {
        let rows: Vec<BareEntryTuple> = on_pool!(self, p => sqlx::query_as(
            "SELECT seq, entry, sig, leaf_hash, time_ns, kind, subject FROM entries WHERE seq >= $1 ORDER BY seq LIMIT $2")
            .bind(i(from))
            .bind(i(limit))
            .fetch_all(p)
            .await)?;
        rows.into_iter()
            .map(|t| entry_row((t.0, t.1, t.2, t.3, t.4, t.5, t.6, None, None)))
            .collect()
    }

    pub async fn entry(&self, seq: u64) -> Result<Option<EntryRow>> {
        let sql = const_format(ENTRY_COLUMNS, " WHERE e.seq = $1");
        let row: Option<EntryTuple> = on_pool!(self, p => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(i(seq))
            .fetch_optional(p)
            .await)?;
        row.map(entry_row).transpose()
    }

    pub async fn latest_checkpoint(&self) -> Result<Option<CheckpointRow>> {
        let t: Option<CheckpointTuple> = on_pool!(self, p => sqlx::query_as(
            "SELECT size, root, note, key_id, created_ns FROM checkpoints ORDER BY size DESC LIMIT 1")
            .fetch_optional(p)
            .await)?;
        t.map(checkpoint_row).transpose()
    }

    /// Checkpoints with `lo < size <= hi`, ascending.
    pub async fn checkpoints_between(&self, lo: u64, hi: u64) -> Result<Vec<CheckpointRow>> {
        let rows: Vec<CheckpointTuple> = on_pool!(self, p => sqlx::query_as(
            "SELECT size, root, note, key_id, created_ns FROM checkpoints WHERE size > $1 AND size <= $2 ORDER BY size")
            .bind(i(lo))
            .bind(i(hi))
            .fetch_all(p)
            .await)?;
        rows.into_iter().map(checkpoint_row).collect()
    }

    /// The smallest checkpoint of at least `size` entries.
    pub async fn checkpoint_covering(&self, size: u64) -> Result<Option<CheckpointRow>> {
        let t: Option<CheckpointTuple> = on_pool!(self, p => sqlx::query_as(
            "SELECT size, root, note, key_id, created_ns FROM checkpoints WHERE size >= $1 ORDER BY size LIMIT 1")
            .bind(i(size))
            .fetch_optional(p)
            .await)?;
        t.map(checkpoint_row).transpose()
    }

    pub async fn checkpoint_at(&self, size: u64) -> Result<Option<CheckpointRow>> {
        let t: Option<CheckpointTuple> = on_pool!(self, p => sqlx::query_as(
            "SELECT size, root, note, key_id, created_ns FROM checkpoints WHERE size = $1")
            .bind(i(size))
            .fetch_optional(p)
            .await)?;
        t.map(checkpoint_row).transpose()
    }

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

    /// Hashes of perfect subtrees, in the order asked; an absent node is corruption.
    pub async fn nodes(&self, ids: &[NodeId]) -> Result<Vec<Hash>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let h: Option<(Vec<u8>,)> = if id.level == 0 {
                on_pool!(self, p => sqlx::query_as("SELECT leaf_hash FROM entries WHERE seq = $1")
                    .bind(i(id.idx)).fetch_optional(p).await)?
            } else {
                on_pool!(self, p => sqlx::query_as("SELECT hash FROM tree_nodes WHERE level = $1 AND idx = $2")
                    .bind(i32::from(id.level)).bind(i(id.idx)).fetch_optional(p).await)?
            };
            let h = h.ok_or_else(|| {
                StorageError::Corrupt(format!("tree node {}/{} is missing", id.level, id.idx))
            })?;
            out.push(hash(&h.0, "tree node")?);
        }
        Ok(out)
    }

    /// Stored tree nodes (level ≥ 1) completed by leaves in `(lo, hi]`, in completion order:
    /// by the end of their leaf range, then by level — the order `CompactRange::push` makes them.
    ///
    /// A node (level L, index i) ends at leaf (i + 1)·2^L, so per level the nodes wanted are the
    /// index range [lo >> L, (hi >> L) − 1]: one primary-key range per level instead of a scan of
    /// the whole table (which made auditing a million-entry ledger quadratic).
    pub async fn nodes_completed_between(&self, lo: u64, hi: u64) -> Result<Vec<(NodeId, Hash)>> {
        let mut rows: Vec<(i32, i64, Vec<u8>)> = Vec::new();
        for level in 1..64u32 {
            if hi >> level == 0 {
                break;
            }
            let (first, last) = (lo >> level, (hi >> level) - 1);
            if first > last {
                continue;
            }
            let part: Vec<(i32, i64, Vec<u8>)> = on_pool!(self, p => sqlx::query_as(
                "SELECT level, idx, hash FROM tree_nodes WHERE level = $1 AND idx >= $2 AND idx <= $3")
                .bind(level as i32).bind(i(first)).bind(i(last)).fetch_all(p).await)?;
            rows.extend(part);
        }
        let mut out = rows
            .into_iter()
            .map(|(level, idx, h)| {
                let level = u8::try_from(level)
                    .map_err(|_| StorageError::Corrupt(format!("tree node level {level}")))?;
                Ok((
                    NodeId {
                        level,
                        idx: u(idx, "node index")?,
                    },
                    hash(&h, "tree node")?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        out.sort_by_key(|(id, _)| ((id.idx + 1) << id.level, id.level));
        Ok(out)
    }

    /// Erasure records: (erased seq, the payload.erased entry's seq).
    pub async fn erasures(&self) -> Result<Vec<(u64, u64)>> {
        let rows: Vec<(i64, i64)> = on_pool!(self, p => sqlx::query_as(
            "SELECT seq, erasure_seq FROM erasures ORDER BY seq").fetch_all(p).await)?;
        rows.into_iter()
            .map(|(a, b)| Ok((u(a, "seq")?, u(b, "erasure seq")?)))
            .collect()
    }

    /// Stored spans of a trace, in start order: (span id, digest, body, rule, subject, entry seq).
    pub async fn spans_of_trace(&self, trace_id: &[u8; 16]) -> Result<Vec<StoredSpan>> {
        let rows: Vec<SpanTuple> = on_pool!(self, p => sqlx::query_as(
            "SELECT span_id, digest, body, name, rule, subject, entry_seq FROM spans WHERE trace_id = $1 ORDER BY start_ns, span_id")
            .bind(&trace_id[..]).fetch_all(p).await)?;
        rows.into_iter()
            .map(|r| {
                Ok(StoredSpan {
                    span_id: r
                        .0
                        .try_into()
                        .map_err(|_| StorageError::Corrupt("span id".into()))?,
                    digest: hash(&r.1, "span digest")?,
                    body: r.2,
                    name: r.3,
                    rule: r.4,
                    subject: r.5,
                    entry_seq: u(r.6, "entry seq")?,
                })
            })
            .collect()
    }

    pub async fn span_count(&self) -> Result<u64> {
        let n: (i64,) =
            on_pool!(self, p => sqlx::query_as("SELECT COUNT(*) FROM spans").fetch_one(p).await)?;
        u(n.0, "count")
    }

    pub async fn log_count(&self) -> Result<u64> {
        let n: (i64,) = on_pool!(self, p => sqlx::query_as("SELECT COUNT(*) FROM log_records").fetch_one(p).await)?;
        u(n.0, "count")
    }

    /// Stored log records, oldest first: (digest, body, event name, subject, entry seq).
    pub async fn log_records(&self, limit: u64) -> Result<Vec<StoredLog>> {
        let rows: Vec<LogTuple> = on_pool!(self, p => sqlx::query_as(
            "SELECT digest, body, event_name, subject, entry_seq FROM log_records ORDER BY time_ns, digest LIMIT $1")
            .bind(i(limit)).fetch_all(p).await)?;
        rows.into_iter()
            .map(|r| {
                Ok(StoredLog {
                    digest: hash(&r.0, "log digest")?,
                    body: r.1,
                    event_name: r.2,
                    subject: r.3,
                    entry_seq: u(r.4, "entry seq")?,
                })
            })
            .collect()
    }

    /// Change ids with a change.requested fact in `[from, to)` (nanoseconds).
    pub async fn changes_between(&self, from: i64, to: i64) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = on_pool!(self, p => sqlx::query_as(
            "SELECT DISTINCT change_id FROM facts WHERE kind = 'change.requested' AND change_id IS NOT NULL \
             AND time_ns >= $1 AND time_ns < $2 ORDER BY change_id")
            .bind(from).bind(to).fetch_all(p).await)?;
        Ok(rows.into_iter().map(|(c,)| c).collect())
    }

    /// version.observed facts first seen in `[from, to]` (inclusive), by time.
    pub async fn version_facts_between(&self, from: i64, to: i64) -> Result<Vec<FactRecord>> {
        let rows: Vec<(String,)> = on_pool!(self, p => sqlx::query_as(
            "SELECT payload FROM facts WHERE kind = 'version.observed' AND time_ns >= $1 AND time_ns <= $2 \
             ORDER BY time_ns, fact_key")
            .bind(from).bind(to).fetch_all(p).await)?;
        rows.into_iter()
            .map(|(p,)| {
                serde_json::from_str(&p).map_err(|e| StorageError::Corrupt(format!("fact: {e}")))
            })
            .collect()
    }

    /// All version observations, oldest first.
    pub async fn version_facts(&self) -> Result<Vec<FactRecord>> {
        let rows: Vec<(String,)> = on_pool!(self, p => sqlx::query_as(
            "SELECT payload FROM facts WHERE kind = 'version.observed' ORDER BY time_ns, fact_key")
            .fetch_all(p).await)?;
        rows.into_iter()
            .map(|(p,)| {
                serde_json::from_str(&p).map_err(|e| StorageError::Corrupt(format!("fact: {e}")))
            })
            .collect()
    }

    /// Ledger entries whose subject is one of `subjects`, in order.
    pub async fn entries_about(&self, subjects: &[String]) -> Result<Vec<EntryRow>> {
        let mut out = Vec::new();
        for s in subjects {
            let sql = const_format(ENTRY_COLUMNS, " WHERE e.subject = $1 ORDER BY e.seq");
            let rows: Vec<EntryTuple> = on_pool!(self, p => sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(s).fetch_all(p).await)?;
            for r in rows {
                out.push(entry_row(r)?);
            }
        }
        out.sort_by_key(|e| e.seq);
        out.dedup_by_key(|e| e.seq);
        Ok(out)
    }

    /// Kept spans bound to any of `subjects` (a change id or its run ids).
    pub async fn spans_about(&self, subjects: &[String]) -> Result<Vec<SpanSummary>> {
        let mut out = Vec::new();
        for s in subjects {
            let rows: Vec<SummaryTuple> = on_pool!(self, p => sqlx::query_as(
                "SELECT trace_id, span_id, service, rule, body FROM spans WHERE subject = $1")
                .bind(s).fetch_all(p).await)?;
            for (t, sp, service, rule, body) in rows {
                out.push(SpanSummary {
                    trace_id: hex::encode(t),
                    span_id: hex::encode(sp),
                    service,
                    rule,
                    body,
                });
            }
        }
        Ok(out)
    }

    /// Task ids seen in earlier Conductor imports of a run (to notice history that vanished).
    pub async fn imported_task_ids(&self, run_id: &str) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = on_pool!(self, p => sqlx::query_as(
            "SELECT payload FROM facts WHERE run_id = $1 AND source = 'conductor' AND kind IN ('task.finished', 'approval.decided', 'approval.requested')")
            .bind(run_id).fetch_all(p).await)?;
        let mut ids = Vec::new();
        for (p,) in rows {
            if let Ok(f) = serde_json::from_str::<FactRecord>(&p) {
                match f.fact {
                    crate::core::evidence::Fact::Task(t) => ids.push(t.task_run_id),
                    crate::core::evidence::Fact::Approval(a) => ids.extend(a.task_run_id),
                    _ => {}
                }
            }
        }
        Ok(ids)
    }

    // --- tokens: rows the service checks; created and revoked through the ledger writer, each
    // with an entry, so `verify` can tell a row no entry produced ---

    pub async fn token(&self, id: &str) -> Result<Option<TokenRow>> {
        let t: Option<TokenTuple> = on_pool!(self, p => sqlx::query_as(
            "SELECT id, name, role, secret_hash, created_ns, revoked_ns FROM api_tokens WHERE id = $1")
            .bind(id).fetch_optional(p).await)?;
        Ok(t.map(token_row))
    }

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

    /// Entries of these (rare) kinds in order: (seq, kind, payload; None if erased). Answered
    /// from the kind index.
    pub async fn entries_of_kinds(
        &self,
        kinds: &[&str],
    ) -> Result<Vec<(u64, String, Option<String>)>> {
        let rows: Vec<(i64, String, Option<String>)> = on_pool!(self, p => {
            let mut q = QueryBuilder::new(
                "SELECT e.seq, e.kind, p.payload FROM entries e LEFT JOIN payloads p ON p.seq = e.seq \
                 WHERE e.kind IN (");
            let mut sep = q.separated(", ");
            for k in kinds {
                sep.push_bind(*k);
            }
            q.push(") ORDER BY e.seq");
            q.build_query_as().fetch_all(p).await
        })?;
        rows.into_iter()
            .map(|(s, k, p)| Ok((u(s, "seq")?, k, p)))
            .collect()
    }

    /// Begins the one kind of write transaction the ledger has. SQLite takes the write lock up
    /// front (`BEGIN IMMEDIATE`); PostgreSQL locks the head row in `lock_head`.
    pub async fn begin_append(&self) -> Result<AppendTx> {
        Ok(match self {
            Store::Sqlite(p) => AppendTx::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?),
            Store::Postgres(p) => AppendTx::Postgres(p.begin().await?),
        })
    }
}

fn const_format(a: &str, b: &str) -> String {
    let mut s = String::with_capacity(a.len() + b.len());
    s.push_str(a);
    s.push_str(b);
    s
}

/// An open append transaction. Everything the sequencer writes for a batch goes through one.
pub enum AppendTx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

impl AppendTx {
    /// Reads the head under the writer lock; `None` for a ledger not yet created. On PostgreSQL
    /// this serialises every process appending to the same database.
    pub async fn lock_head(&mut self) -> Result<Option<HeadRow>> {
        let t: Option<HeadTuple> = match self {
            AppendTx::Sqlite(tx) => {
                sqlx::query_as(HEAD_COLUMNS)
                    .fetch_optional(&mut **tx)
                    .await?
            }
            AppendTx::Postgres(tx) => {
                // Creating a ledger has no row to lock yet: an advisory lock covers that case.
                sqlx::query("SELECT pg_advisory_xact_lock(7262001)")
                    .execute(&mut **tx)
                    .await?;
                sqlx::query_as(sqlx::AssertSqlSafe(const_format(
                    HEAD_COLUMNS,
                    " FOR UPDATE",
                )))
                .fetch_optional(&mut **tx)
                .await?
            }
        };
        t.map(head_row).transpose()
    }

    pub async fn insert_batch(&mut self, batch: &BuiltBatch) -> Result<()> {
        for chunk in batch.entries.chunks(INSERT_CHUNK) {
            on_tx!(self, c => {
                let mut q = QueryBuilder::new(
                    "INSERT INTO entries (seq, entry, sig, leaf_hash, time_ns, kind, subject) ");
                q.push_values(chunk, |mut b, e| {
                    b.push_bind(i(e.seq))
                        .push_bind(&e.bytes)
                        .push_bind(&e.sig[..])
                        .push_bind(&e.leaf.0[..])
                        .push_bind(e.time_ns)
                        .push_bind(&e.kind)
                        .push_bind(&e.subject);
                });
                q.build().execute(&mut *c).await?;
                let mut q = QueryBuilder::new("INSERT INTO payloads (seq, salt, payload) ");
                q.push_values(chunk, |mut b, e| {
                    b.push_bind(i(e.seq)).push_bind(&e.salt[..]).push_bind(&e.payload);
                });
                q.build().execute(&mut *c).await?;
            });
        }
        for chunk in batch.nodes.chunks(INSERT_CHUNK) {
            on_tx!(self, c => {
                let mut q = QueryBuilder::new("INSERT INTO tree_nodes (level, idx, hash) ");
                q.push_values(chunk, |mut b, (id, h)| {
                    b.push_bind(i32::from(id.level)).push_bind(i(id.idx)).push_bind(&h.0[..]);
                });
                q.build().execute(&mut *c).await?;
            });
        }
        Ok(())
    }

    /// Writes the head row (insert on creation, update afterwards).
    pub async fn write_head(&mut self, row: &HeadRow, create: bool) -> Result<()> {
        let h = &row.head;
        let frontier: Vec<u8> = h.range.peaks().iter().flat_map(|p| p.0).collect();
        let sql = if create {
            "INSERT INTO ledger_head (origin, size, last_leaf, last_time_ns, frontier, key_id, checkpoint_size, checkpoint_time_ns, id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1)"
        } else {
            "UPDATE ledger_head SET origin = $1, size = $2, last_leaf = $3, last_time_ns = $4, frontier = $5, \
             key_id = $6, checkpoint_size = $7, checkpoint_time_ns = $8 WHERE id = 1"
        };
        on_tx!(self, c => sqlx::query(sql)
            .bind(h.origin.as_str())
            .bind(i(h.size))
            .bind(&h.last_leaf.0[..])
            .bind(h.last_time_ns)
            .bind(&frontier)
            .bind(h.key_id.to_hex())
            .bind(i(row.checkpoint_size))
            .bind(row.checkpoint_time_ns)
            .execute(c).await.map(|_| ()))?;
        Ok(())
    }

    pub async fn latest_checkpoint(&mut self) -> Result<Option<CheckpointRow>> {
        let t: Option<CheckpointTuple> = on_tx!(self, c => sqlx::query_as(
            "SELECT size, root, note, key_id, created_ns FROM checkpoints ORDER BY size DESC LIMIT 1")
            .fetch_optional(c).await)?;
        t.map(checkpoint_row).transpose()
    }

    pub async fn insert_checkpoint(&mut self, cp: &CheckpointRow) -> Result<()> {
        on_tx!(self, c => sqlx::query(
            "INSERT INTO checkpoints (size, root, note, key_id, created_ns) VALUES ($1, $2, $3, $4, $5)")
            .bind(i(cp.size)).bind(&cp.root.0[..]).bind(&cp.note).bind(&cp.key_id).bind(cp.created_ns)
            .execute(c).await.map(|_| ()))?;
        Ok(())
    }

    /// Node hashes as this transaction sees them (including rows it has just inserted).
    pub async fn nodes(&mut self, ids: &[NodeId]) -> Result<Vec<Hash>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let h: Option<(Vec<u8>,)> = if id.level == 0 {
                on_tx!(self, c => sqlx::query_as("SELECT leaf_hash FROM entries WHERE seq = $1")
                    .bind(i(id.idx)).fetch_optional(c).await)?
            } else {
                on_tx!(self, c => sqlx::query_as("SELECT hash FROM tree_nodes WHERE level = $1 AND idx = $2")
                    .bind(i32::from(id.level)).bind(i(id.idx)).fetch_optional(c).await)?
            };
            let h = h.ok_or_else(|| {
                StorageError::Corrupt(format!("tree node {}/{} is missing", id.level, id.idx))
            })?;
            out.push(hash(&h.0, "tree node")?);
        }
        Ok(out)
    }

    pub async fn insert_key(&mut self, k: &KeyRow) -> Result<()> {
        on_tx!(self, c => sqlx::query(
            "INSERT INTO signing_keys (key_id, vkey, from_seq, rotation_seq) VALUES ($1, $2, $3, $4)")
            .bind(&k.key_id).bind(&k.vkey).bind(i(k.from_seq)).bind(k.rotation_seq.map(i))
            .execute(c).await.map(|_| ()))?;
        Ok(())
    }

    /// The kind of entry `seq`, if it exists (erasure refuses some kinds).
    pub async fn entry_kind(&mut self, seq: u64) -> Result<Option<(String, bool)>> {
        let r: Option<(String, Option<i64>)> = on_tx!(self, c => sqlx::query_as(
            "SELECT e.kind, p.seq FROM entries e LEFT JOIN payloads p ON p.seq = e.seq WHERE e.seq = $1")
            .bind(i(seq)).fetch_optional(c).await)?;
        Ok(r.map(|(k, p)| (k, p.is_some())))
    }

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

    /// Records the erasure of `seq` by entry `erasure_seq` and deletes its payload and salt.
    pub async fn erase_payload(&mut self, seq: u64, erasure_seq: u64) -> Result<()> {
        on_tx!(self, c => {
            sqlx::query("INSERT INTO erasures (seq, erasure_seq) VALUES ($1, $2)")
                .bind(i(seq)).bind(i(erasure_seq)).execute(&mut *c).await?;
            sqlx::query("DELETE FROM payloads WHERE seq = $1").bind(i(seq)).execute(&mut *c).await?;
        });
        Ok(())
    }

    /// Which of these spans are stored already (retried exports resend them).
    pub async fn existing_spans(
        &mut self,
        keys: &[([u8; 16], [u8; 8])],
    ) -> Result<HashSet<([u8; 16], [u8; 8])>> {
        let mut found = HashSet::new();
        for chunk in keys.chunks(INSERT_CHUNK) {
            let rows: Vec<(Vec<u8>, Vec<u8>)> = on_tx!(self, c => {
                let mut q = QueryBuilder::new("SELECT trace_id, span_id FROM spans WHERE (trace_id, span_id) IN (");
                q.push_values(chunk, |mut b, (t, s)| {
                    b.push_bind(&t[..]).push_bind(&s[..]);
                });
                q.push(")");
                q.build_query_as().fetch_all(&mut *c).await?
            });
            for (t, s) in rows {
                if let (Ok(t), Ok(s)) = (t.try_into(), s.try_into()) {
                    found.insert((t, s));
                }
            }
        }
        Ok(found)
    }

    /// Which of these log-record digests are stored already.
    pub async fn existing_logs(&mut self, digests: &[Hash]) -> Result<HashSet<Hash>> {
        let mut found = HashSet::new();
        for chunk in digests.chunks(INSERT_CHUNK) {
            let rows: Vec<(Vec<u8>,)> = on_tx!(self, c => {
                let mut q = QueryBuilder::new("SELECT digest FROM log_records WHERE digest IN (");
                let mut sep = q.separated(", ");
                for d in chunk {
                    sep.push_bind(&d.0[..]);
                }
                q.push(")");
                q.build_query_as().fetch_all(&mut *c).await?
            });
            found.extend(rows.into_iter().filter_map(|(d,)| Hash::from_slice(&d)));
        }
        Ok(found)
    }

    /// Stores spans, each with the seq of the entry that references it.
    pub async fn insert_spans(&mut self, rows: &[(&SpanRow, u64)], received_ns: i64) -> Result<()> {
        for chunk in rows.chunks(INSERT_CHUNK / 2) {
            on_tx!(self, c => {
                let mut q = QueryBuilder::new(
                    "INSERT INTO spans (trace_id, span_id, parent_span_id, digest, body, service, name, \
                     start_ns, end_ns, subject, rule, entry_seq, received_ns) ");
                q.push_values(chunk, |mut b, (s, seq)| {
                    b.push_bind(&s.trace_id[..])
                        .push_bind(&s.span_id[..])
                        .push_bind(s.parent_span_id.map(|p| p.to_vec()))
                        .push_bind(&s.digest.0[..])
                        .push_bind(&s.body)
                        .push_bind(&s.service)
                        .push_bind(&s.name)
                        .push_bind(i(s.start_ns))
                        .push_bind(i(s.end_ns))
                        .push_bind(&s.subject)
                        .push_bind(s.rule.as_str())
                        .push_bind(i(*seq))
                        .push_bind(received_ns);
                });
                q.build().execute(&mut *c).await?;
            });
        }
        Ok(())
    }

    pub async fn insert_logs(&mut self, rows: &[(&LogRow, u64)], received_ns: i64) -> Result<()> {
        for chunk in rows.chunks(INSERT_CHUNK / 2) {
            on_tx!(self, c => {
                let mut q = QueryBuilder::new(
                    "INSERT INTO log_records (digest, body, trace_id, span_id, time_ns, event_name, subject, \
                     entry_seq, received_ns) ");
                q.push_values(chunk, |mut b, (l, seq)| {
                    b.push_bind(&l.digest.0[..])
                        .push_bind(&l.body)
                        .push_bind(l.trace_id.map(|t| t.to_vec()))
                        .push_bind(l.span_id.map(|s| s.to_vec()))
                        .push_bind(i(l.time_ns))
                        .push_bind(&l.event_name)
                        .push_bind(&l.subject)
                        .push_bind(i(*seq))
                        .push_bind(received_ns);
                });
                q.build().execute(&mut *c).await?;
            });
        }
        Ok(())
    }

    /// Which of these fact keys are stored already.
    pub async fn existing_facts(&mut self, keys: &[&str]) -> Result<HashSet<String>> {
        let mut found = HashSet::new();
        for chunk in keys.chunks(INSERT_CHUNK) {
            // Only a row recorded by a fact entry about the same subject counts: a row a
            // database writer planted under an expected key must not make the real fact a
            // "repeat" that is never signed.
            let rows: Vec<(String,)> = on_tx!(self, c => {
                let mut q = QueryBuilder::new(
                    "SELECT f.fact_key FROM facts f JOIN entries e ON e.seq = f.entry_seq \
                     AND e.kind = f.kind AND e.subject = COALESCE(f.change_id, f.run_id, '') \
                     WHERE f.fact_key IN (");
                let mut sep = q.separated(", ");
                for k in chunk {
                    sep.push_bind(*k);
                }
                q.push(")");
                q.build_query_as().fetch_all(&mut *c).await?
            });
            found.extend(rows.into_iter().map(|(k,)| k));
        }
        Ok(found)
    }

    /// Stores facts, each with the seq and time of the entry that records it, and the
    /// credentials they show (the first entry per credential and subject is kept).
    pub async fn insert_facts(&mut self, rows: &[(&FactRecord, u64, i64)]) -> Result<()> {
        for chunk in rows.chunks(INSERT_CHUNK / 2) {
            let payloads: Vec<String> = chunk
                .iter()
                .map(|(f, _, _)| {
                    serde_json::to_string(f).map_err(|e| StorageError::Corrupt(e.to_string()))
                })
                .collect::<Result<_>>()?;
            on_tx!(self, c => {
                let mut q = QueryBuilder::new(
                    "INSERT INTO facts (fact_key, kind, change_id, run_id, source, time_ns, payload, entry_seq, received_ns) ");
                q.push_values(chunk.iter().zip(&payloads), |mut b, ((f, seq, received), payload)| {
                    b.push_bind(&f.key)
                        .push_bind(f.fact.entry_kind())
                        .push_bind(&f.change_id)
                        .push_bind(&f.run_id)
                        .push_bind(f.source.as_str())
                        .push_bind(f.time_ns)
                        .push_bind(payload)
                        .push_bind(i(*seq))
                        .push_bind(*received);
                });
                q.build().execute(&mut *c).await?;
            });
        }
        let creds: Vec<(String, String, u64)> = rows
            .iter()
            .flat_map(|(f, seq, _)| {
                let subject = f.subject();
                f.credentials()
                    .into_iter()
                    .map(move |c| (c, subject.clone(), *seq))
            })
            .collect();
        self.insert_credentials(&creds).await
    }

    /// Records credential uses; a (credential, subject) seen before keeps its first entry.
    async fn insert_credentials(&mut self, rows: &[(String, String, u64)]) -> Result<()> {
        for chunk in rows.chunks(INSERT_CHUNK / 2) {
            on_tx!(self, c => {
                let mut q = QueryBuilder::new("INSERT INTO credentials (credential, subject, first_seq) ");
                q.push_values(chunk, |mut b, (cred, subject, seq)| {
                    b.push_bind(cred).push_bind(subject).push_bind(i(*seq));
                });
                q.push(" ON CONFLICT (credential, subject) DO NOTHING");
                q.build().execute(&mut *c).await?;
            });
        }
        Ok(())
    }

    /// Removes what an erased entry's payload produced in derived tables: its facts row, the
    /// credential uses only it showed (a use another fact of the same subject shows moves to
    /// that fact's entry), and the spans and log records a binding entry bound.
    pub async fn erase_derived(&mut self, seq: u64) -> Result<()> {
        let gone: Vec<(String, String)> = on_tx!(self, c => sqlx::query_as(
            "SELECT credential, subject FROM credentials WHERE first_seq = $1")
            .bind(i(seq)).fetch_all(&mut *c).await)?;
        on_tx!(self, c => {
            sqlx::query("DELETE FROM facts WHERE entry_seq = $1").bind(i(seq)).execute(&mut *c).await?;
            sqlx::query("DELETE FROM credentials WHERE first_seq = $1").bind(i(seq)).execute(&mut *c).await?;
            // An erased binding takes the telemetry it bound with it.
            sqlx::query("DELETE FROM spans WHERE entry_seq = $1").bind(i(seq)).execute(&mut *c).await?;
            sqlx::query("DELETE FROM log_records WHERE entry_seq = $1").bind(i(seq)).execute(&mut *c).await?;
        });
        let subjects: std::collections::BTreeSet<&String> = gone.iter().map(|(_, s)| s).collect();
        let mut again = Vec::new();
        for subject in subjects {
            let facts: Vec<(String, i64)> = on_tx!(self, c => sqlx::query_as(
                "SELECT payload, entry_seq FROM facts WHERE change_id = $1 \
                 OR (change_id IS NULL AND run_id = $1) ORDER BY entry_seq")
                .bind(subject).fetch_all(&mut *c).await)?;
            for (payload, fseq) in facts {
                let Ok(f) = serde_json::from_str::<FactRecord>(&payload) else {
                    continue;
                };
                for cred in f.credentials() {
                    if gone.iter().any(|(c, s)| c == &cred && s == subject) {
                        again.push((cred, subject.clone(), u(fseq, "entry seq")?));
                    }
                }
            }
        }
        self.insert_credentials(&again).await
    }

    pub async fn commit(self) -> Result<()> {
        match self {
            AppendTx::Sqlite(tx) => tx.commit().await?,
            AppendTx::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }
}

mod derived;
mod reports;
pub use derived::{StoredLogRow, StoredSpanRow};
pub use reports::{ROLLBACK_FACTS, RawFact, SubjectEntries};
