//! The one integration test binary (STYLE.md): modules per capability.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod alerts;
mod annotations;
mod api;
mod architecture;
mod bench_hostile;
mod browser;
mod cli;
mod conductor;
mod conductor_worker;
mod console;
mod delivery;
mod demo;
mod gate;
mod hostile;
mod idp;
mod instances;
mod integrity;
mod listeners;
mod merkle;
mod openapi;
mod otlp;
mod pg_tls;
mod python;
mod reports;
mod scenarios;
mod storage;
mod summary;
mod support;
mod suspects;
mod tamper;
mod tls;
mod vectors;
mod witness;
