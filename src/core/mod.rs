//! The pure core, in two halves: `ledger` (entry encoding, hashing, signing, RFC 6962 Merkle math,
//! checkpoints, bundles, the streaming verifier) and `evidence` (facts from spans and Conductor,
//! the fold into a change's evidence, identities, exception rules, report rows), plus `time`
//! (RFC 3339 text), `links` (the tracing UI's URL template) and `alerts` (alert entries and webhook bodies). Architecture invariant: nothing
//! here performs I/O or reads the clock; time, randomness (salts, seeds) and bytes are passed in. `tests/it/architecture.rs` holds it.

pub mod alerts;
pub mod evidence;
pub mod ledger;
pub mod links;
pub mod runtime;
pub mod time;
