//! What changetrail sends out to the team's own tools: deploy markers for the tracing backend
//! (`annotate`) over an OTLP/HTTP logs exporter (`otlp`), and alerts (`alerts`) to webhooks
//! (`webhook`) and OTLP logs, all through one HTTP sender (`http`). Each reads the committed
//! chain and keeps an outbox in the database, so a restart or a second instance sends nothing
//! twice.

pub mod alerts;
pub mod annotate;
pub mod http;
pub mod otlp;
pub mod webhook;

use crate::storage::{StorageError, Store};
use std::collections::BTreeSet;

/// The changes facts of entries `after < seq <= upto` name, directly or by a run.
pub(crate) async fn changes_between(
    store: &Store,
    after: i64,
    upto: i64,
) -> Result<BTreeSet<String>, StorageError> {
    let mut changes = BTreeSet::new();
    let mut runs = Vec::new();
    let rows = store
        .facts_after(u64::try_from(after).ok(), u64::try_from(upto).unwrap_or(0))
        .await?;
    for (change, run, _) in rows {
        match (change, run) {
            (Some(c), _) => {
                changes.insert(c);
            }
            (None, Some(r)) => runs.push(r),
            (None, None) => {}
        }
    }
    runs.sort();
    runs.dedup();
    changes.extend(store.changes_of_runs(&runs).await?);
    Ok(changes)
}
