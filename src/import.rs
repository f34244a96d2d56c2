//! Conductor import: an execution (or status-listener payload) mapped to facts, with history
//! that vanished since an earlier import of the same run recorded as rewritten.

use crate::core::evidence::{self, Policy};
use crate::core::identity::IdentityVerifier;
use crate::pipeline::Telemetry;
use crate::storage::{StorageError, Store};
use std::collections::BTreeSet;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What an import will write, and what it found.
pub struct Prepared {
    pub run_id: String,
    pub change_id: String,
    pub telemetry: Telemetry,
    /// Task ids of earlier imports that this one no longer has (a Conductor restart).
    pub vanished: Vec<String>,
}

/// Maps the document and compares it with what earlier imports of the run recorded.
pub async fn prepare(
    store: &Store,
    doc: &serde_json::Value,
    policy: &Policy,
    ids: &IdentityVerifier,
    now_ns: i64,
) -> Result<Prepared, ImportError> {
    let imp = evidence::conductor_facts(doc, policy, ids).map_err(ImportError::Invalid)?;
    let before: BTreeSet<String> = store
        .imported_task_ids(&imp.run_id)
        .await?
        .into_iter()
        .collect();
    let mut facts = imp.facts;
    let mut vanished = Vec::new();
    if let Some(r) =
        evidence::rewritten(&imp.run_id, &imp.change_id, &before, &imp.task_ids, now_ns)
    {
        if let evidence::Fact::HistoryRewritten(h) = &r.fact {
            vanished = h.vanished_tasks.clone();
        }
        facts.push(r);
    }
    Ok(Prepared {
        run_id: imp.run_id,
        change_id: imp.change_id,
        telemetry: Telemetry {
            facts,
            ..Default::default()
        },
        vanished,
    })
}
