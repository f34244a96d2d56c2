//! The ledger format (`FORMAT.md` beside this file): entries, their hashes and signatures, keys
//! and rotation, RFC 6962 Merkle math and proofs, C2SP signed-note checkpoints, batch building,
//! bundle lines and the streaming verifier.

pub mod batch;
pub mod bundle;
pub mod cosign;
pub mod entry;
pub mod hash;
pub mod keys;
pub mod merkle;
pub mod note;
pub mod policy;
pub mod receipt;
pub mod sigcheck;
pub mod tiles;
pub mod verify;
