//! changetrail: an OTLP receiver that turns deploy workflows and traces into signed,
//! hash-chained audit evidence. See README.md "Architecture" for the map.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod api;
pub mod audit;
pub mod auth;
pub mod changes;
pub mod cli;
pub mod commands;
pub mod config;
pub mod core;
pub mod demo;
pub mod export;
pub mod import;
pub mod ingest;
pub mod keyfile;
pub mod metrics;
pub mod pipeline;
pub mod report;
pub mod serve;
pub mod startup;
pub mod storage;
pub mod telemetry;
pub mod util;
