//! What changetrail sends out to the team's own tools: deploy markers for the tracing backend
//! (`annotate`) over an OTLP/HTTP logs exporter (`otlp`). Each reads the committed chain and
//! keeps an outbox in the database, so a restart or a second instance sends nothing twice.

pub mod annotate;
pub mod otlp;
