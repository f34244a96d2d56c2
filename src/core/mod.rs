//! The pure core: ledger encoding, hashing, signing, Merkle math, checkpoints, bundles and
//! verification. Architecture invariant: nothing here performs I/O or reads the clock; time,
//! randomness (salts, seeds) and bytes are passed in.

pub mod batch;
pub mod bundle;
pub mod contract;
pub mod derived;
pub mod entry;
pub mod evidence;
pub mod hash;
pub mod identity;
pub mod keys;
pub mod merkle;
pub mod note;
pub mod rederive;
pub mod report;
pub mod rules;
pub mod sigcheck;
pub mod telemetry;
pub mod verify;
