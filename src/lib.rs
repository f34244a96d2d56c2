//! changetrail: an OTLP receiver that turns deploy workflows and traces into signed,
//! hash-chained audit evidence. See README.md "Architecture" for the map.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod core;
