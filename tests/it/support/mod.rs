//! The integration tests' one support layer: every test module imports its helpers from here (and
//! the code under test from `changetrail`), never from another test module, so a test file can be
//! read, moved or deleted on its own.
//!
//! - `server`: fresh databases on both backends, the real server on port 0, the binary.
//! - `db`: SQL behind the server's back (as an attacker with database access would), draft entries.
//! - `ledger`: in-memory ledgers and bundles for the verifier, no database and no clock.
//! - `otlp`: OTLP spans and requests, and a raw gRPC call.
//! - `idp`: the test identity provider and the tokens it mints.
//! - `scenario`: the scenarios' server configuration, sending workflows, reading packets, and the
//!   report scenarios with the exceptions each must raise (spans from `changetrail::demo::scenario`).
//! - `report`: building a report in-process and reading its CSV files.
//! - `conductor`: a stand-in Conductor server (search, executions, Orkes tokens) tests can
//!   change and make misbehave.
//! - `witness`: a C2SP witness written from the spec alone (tlog-witness, tlog-cosignature).
//! - `browser`, `python`: the optional outside tools (Chromium, an OpenTelemetry Python SDK),
//!   skipped with a printed note when absent.

pub mod browser;
pub mod conductor;
pub mod db;
pub mod idp;
pub mod ledger;
pub mod otlp;
pub mod python;
pub mod report;
pub mod scenario;
pub mod server;
pub mod witness;
