//! The write path: a bounded queue in front of one sequencer task per process, which batches
//! appends through the ledger writer and answers each caller only after the commit.

mod fresh;
pub mod sequencer;
mod work;
pub mod writer;

pub use sequencer::{Appender, SequencerConfig, spawn_sequencer};
pub use writer::{AppendError, Appended, KeyHandle, KeySource, LedgerWriter, Prebuilt, Telemetry};
