//! Storage: one set of queries over SQLite (the embedded default) and PostgreSQL.
//!
//! Every query is written once with `$n` placeholders (SQLite accepts them too) and runs on either
//! pool through `on_pool!`/`on_tx!`; only locking differs. Rows become core types here, so nothing
//! above this module sees a database type.
//!
//! This file holds what every query needs (the pools, their options and migrations, the error
//! type, the append transaction). The queries sit with the tables they serve, each file adding
//! methods to `Store` (reads) and `AppendTx` (the writer's transaction): `entries` (entries,
//! payloads, the head, erasures), `tree` (tree nodes, checkpoints), `keys`, `cosignatures` (witness cosignatures), `tokens`, `alerts` (the alerter's outbox), `telemetry`
//! (spans, log records), `facts` (facts, credential uses), `derived` (what `verify` recomputes,
//! sightings) and `reports` (the report's streaming reads).

use crate::core::ledger::hash::Hash;
use sqlx::Transaction;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode, Postgres};
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use std::str::FromStr;
use std::time::Duration;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// Rows per multi-row INSERT: well under both backends' bind-parameter limits.
const INSERT_CHUNK: usize = 1000;

/// Why a storage call failed; `is_transient` says whether a retry may succeed.
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

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// How a store connects: durability, pool size and lock waits.
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

/// A connection pool on one ledger database; the queries are its methods.
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

    /// Which database this store runs on.
    pub fn backend(&self) -> Backend {
        match self {
            Store::Sqlite(_) => Backend::Sqlite,
            Store::Postgres(_) => Backend::Postgres,
        }
    }

    /// Brings the schema up to date, then fills derived tables added since the data was written.
    pub async fn migrate(&self) -> Result<()> {
        match self {
            Store::Sqlite(p) => SQLITE_MIGRATIONS.run(p).await?,
            Store::Postgres(p) => POSTGRES_MIGRATIONS.run(p).await?,
        }
        self.backfill_credentials().await
    }

    /// Closes the pool once the connections in use are returned.
    pub async fn close(&self) {
        on_pool!(self, p => p.close().await)
    }

    /// A cheap round trip, for readiness.
    pub async fn ping(&self) -> Result<()> {
        on_pool!(self, p => sqlx::query("SELECT 1").execute(p).await.map(|_| ()))?;
        Ok(())
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

/// An open append transaction. Everything the sequencer writes for a batch goes through one.
pub enum AppendTx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

impl AppendTx {
    /// Commits everything written through this transaction, at once.
    pub async fn commit(self) -> Result<()> {
        match self {
            AppendTx::Sqlite(tx) => tx.commit().await?,
            AppendTx::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }
}

mod alerts;
mod annotations;
mod conductor;
mod cosignatures;
mod derived;
mod entries;
mod facts;
mod keys;
mod reports;
mod runtime;
mod summary;
mod telemetry;
mod tiles;
mod tokens;
mod tree;
pub use alerts::{AlertEntry, Delivery, DeliveryState};
pub use cosignatures::CosignatureRow;
pub use derived::{StoredLogRow, StoredSpanRow};
pub use entries::{EntryRow, HeadRow};
pub use keys::KeyRow;
pub use reports::{ROLLBACK_FACTS, RawFact, SubjectEntries};
pub use runtime::MinuteRow;
pub use summary::{SummaryQuery, SummaryRow, SummaryState};
pub use telemetry::{SpanSummary, StoredLog, StoredSpan};
pub use tokens::TokenRow;
pub use tree::CheckpointRow;
