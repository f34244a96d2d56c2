//! changetrail: an OTLP receiver that turns deploy workflows and traces into signed,
//! hash-chained audit evidence. See README.md "Architecture" for the map; this is the one place
//! the parts are wired.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod api;
pub mod app;
pub mod auth;
pub mod conductor;
pub mod core;
pub mod demo;
pub mod ingest;
pub mod notify;
pub mod pipeline;
pub mod read;
pub mod report;
pub mod storage;
pub mod sys;
pub mod tlog;
