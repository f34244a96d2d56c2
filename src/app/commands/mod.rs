//! One module per CLI command: argument handling and printing around library calls.

pub mod bench;
pub mod bench_hostile;
pub mod bench_ingest;
pub mod bench_report;
pub mod config;
pub mod demo;
pub mod export;
pub mod keys;
pub mod ledger;
pub mod report;
pub mod serve;
pub mod tokens;
pub mod verify;
