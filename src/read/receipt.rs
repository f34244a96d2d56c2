//! One change's self-contained receipt (`core::ledger::receipt`): its entries and the key
//! history, each proved against the newest checkpoint, gathered from the store.

use super::changes::{self, Criteria};
use super::export::{ExportError, inclusion_proof};
use crate::core::ledger::entry::kinds;
use crate::core::ledger::note::{Checkpoint, Note};
use crate::core::ledger::receipt::{self, ProvedEntry, Receipt};
use crate::storage::{EntryRow, Store};

/// The receipt for `change_id` against the newest checkpoint; `None` for an unknown change.
pub async fn receipt(
    store: &Store,
    change_id: &str,
    c: &Criteria,
) -> Result<Option<Receipt>, ExportError> {
    let Some((ev, _)) = changes::evidence_of(store, change_id, c).await? else {
        return Ok(None);
    };
    let cp = store
        .latest_checkpoint()
        .await?
        .ok_or_else(|| ExportError::Range("the ledger has no checkpoint yet".into()))?;
    let note = super::tlog::served_checkpoint_note(store, &cp).await?;
    let origin = Note::parse(&cp.note)
        .ok()
        .and_then(|n| Checkpoint::parse_body(&n.text).ok())
        .map(|b| b.origin)
        .ok_or_else(|| ExportError::Range("the newest checkpoint is unreadable".into()))?;
    let subjects = changes::subjects_of(&ev, change_id);
    let mut entries = Vec::new();
    for e in store.entries_about(&subjects).await? {
        if e.seq < cp.size {
            entries.push(prove(store, e, cp.size).await?);
        }
    }
    if entries.is_empty() {
        return Err(ExportError::Range(format!(
            "no entry of change {change_id} is covered by a checkpoint yet; try again after the next one"
        )));
    }
    let mut chain = Vec::new();
    let rotations = store.entries_of_kinds(&[kinds::KEY_ROTATED]).await?;
    let seqs = std::iter::once(0).chain(rotations.into_iter().map(|(seq, _, _)| seq));
    for seq in seqs.filter(|s| *s < cp.size) {
        let e = store
            .entry(seq)
            .await?
            .ok_or_else(|| ExportError::Range(format!("entry {seq} is missing")))?;
        chain.push(prove(store, e, cp.size).await?);
    }
    receipt::build(&origin, change_id, &note, chain, entries)
        .map(Some)
        .map_err(ExportError::Range)
}

async fn prove(store: &Store, e: EntryRow, size: u64) -> Result<ProvedEntry, ExportError> {
    let proof = inclusion_proof(store, e.seq, size).await?;
    Ok(ProvedEntry {
        seq: e.seq,
        entry: e.entry,
        sig: e.sig,
        salt: e.salt,
        payload: e.payload,
        proof,
    })
}
