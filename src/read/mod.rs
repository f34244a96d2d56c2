//! The ledger's read side: changes and their evidence packets folded from stored facts, proofs and
//! bundles streamed from storage, the audit that recomputes every derived table from the signed
//! entries, and the narrow window on history that ingest consults. Used by the REST API, ingest
//! and the CLI; writes nothing but the change summary (`summary`), a derived index of its own
//! folds that it keeps caught up and `verify` recomputes, and the facts changetrail states itself
//! through the sequencer (runtime comparisons, `suspects`; deploy gate decisions, `gate`).

pub mod alerts;
pub mod audit;
pub mod changes;
pub mod delivery;
pub mod export;
pub mod gate;
pub mod history;
pub mod receipt;
pub mod summary;
pub mod suspects;
pub mod tlog;

use crate::storage::StorageError;

/// Progress of a long read (verifying a ledger, building a report), for whoever shows it: the
/// CLI draws a bar, the API shows nothing. Keeps terminal drawing out of the read side.
pub trait Progress: Send + Sync {
    /// The total amount of work, once known.
    fn set_length(&self, total: u64);
    /// `n` more units done.
    fn advance(&self, n: u64);
    /// All done; whatever shows progress may go.
    fn finish(&self) {}
}

/// Progress nobody watches (the API, the demo).
pub struct NoProgress;

impl Progress for NoProgress {
    fn set_length(&self, _: u64) {}
    fn advance(&self, _: u64) {}
}

/// Why a read failed. A transient storage error (busy, connection lost, pool exhausted) is a
/// retryable answer (503) at the edges; the rest are not.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The database holds no ledger at all.
    #[error("the database holds no ledger")]
    NoLedger,
    /// A worker thread of the read stopped before it answered.
    #[error("{0}")]
    Interrupted(String),
}

impl ReadError {
    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            ReadError::Storage(e) => e.is_transient(),
            ReadError::NoLedger | ReadError::Interrupted(_) => false,
        }
    }
}
