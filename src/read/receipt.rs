//! One change's self-contained receipt (`core::ledger::receipt`): its entries and the key
//! history, each proved against the newest checkpoint, gathered from the store.

use super::changes::{self, Criteria};
use super::export::{ExportError, inclusion_proof};
use crate::core::ledger::entry::kinds;
use crate::core::ledger::note::{Checkpoint, Note};
use crate::core::ledger::receipt::{self, ProvedEntry, Receipt};
use crate::storage::{EntryRow, Store};

/// More entries than any change has; a receipt stays far below the 64 MiB `verify-proof` reads.
const MAX_ENTRIES: usize = 10_000;

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
    let rows: Vec<EntryRow> = store
        .entries_about(&subjects)
        .await?
        .into_iter()
        .filter(|e| e.seq < cp.size)
        .collect();
    if rows.len() > MAX_ENTRIES {
        return Err(ExportError::Range(format!(
            "change {change_id} has {} entries, more than a receipt holds ({MAX_ENTRIES}); export a bundle instead",
            rows.len()
        )));
    }
    let erased: std::collections::BTreeSet<u64> = rows
        .iter()
        .filter(|e| e.payload.is_none())
        .map(|e| e.seq)
        .collect();
    let mut entries = Vec::with_capacity(rows.len());
    for e in rows {
        entries.push(prove(store, e, cp.size).await?);
    }
    let mut erasures = Vec::new();
    for (seq, by) in store.erasures().await? {
        if !erased.contains(&seq) {
            continue;
        }
        if by >= cp.size {
            return Err(ExportError::Range(format!(
                "the erasure of entry {seq} is not covered by a checkpoint yet; try again after the next one"
            )));
        }
        let e = store
            .entry(by)
            .await?
            .ok_or_else(|| ExportError::Range(format!("entry {by} is missing")))?;
        erasures.push(prove(store, e, cp.size).await?);
    }
    erasures.sort_by_key(|e| e.seq);
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
    receipt::build(&origin, change_id, &note, chain, entries, erasures)
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
