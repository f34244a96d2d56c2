//! The application shell: the command line and its commands, configuration, start-up (every
//! listener bound before anything is served), the HTTP/gRPC server loop with its limits, logs,
//! metrics and the key file. Everything here wires the parts together; no domain logic.

pub mod cli;
pub mod commands;
pub mod config;
pub mod keyfile;
pub mod serve;
pub mod startup;
pub mod telemetry;
