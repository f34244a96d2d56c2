//! One change's self-contained receipt (`core::ledger::receipt`): its entries and the key
//! history, each proved against the newest checkpoint, gathered from the store.

use super::changes::{self, Criteria};
use super::export::{ExportError, inclusion_proof};
use crate::core::ledger::entry::kinds;
use crate::core::ledger::note::{Checkpoint, Note};
use crate::core::ledger::policy::Policy;
use crate::core::ledger::receipt::{self, ProvedEntry, Receipt};
use crate::storage::{CheckpointRow, EntryRow, Store};

/// More entries than any change has; a receipt stays far below the 64 MiB `verify-proof` reads.
const MAX_ENTRIES: usize = 10_000;

/// Cosigned checkpoints looked at, newest first, for one that meets the witness policy.
const WITNESSED_LOOKBACK: u64 = 16;

/// The receipt for `change_id`; `None` for an unknown change. It is against the newest
/// checkpoint, or with a witness `policy`, the newest that meets its quorum and still covers
/// every entry of the change (witnesses answer after the checkpoint is signed, so the newest may
/// not be cosigned yet); the newest when none does.
pub async fn receipt(
    store: &Store,
    change_id: &str,
    c: &Criteria,
    policy: Option<&Policy>,
) -> Result<Option<Receipt>, ExportError> {
    let Some((ev, _)) = changes::evidence_of(store, change_id, c).await? else {
        return Ok(None);
    };
    let newest = store
        .latest_checkpoint()
        .await?
        .ok_or_else(|| ExportError::Range("the ledger has no checkpoint yet".into()))?;
    let subjects = changes::subjects_of(&ev, change_id);
    let last_seq = store
        .entries_about(&subjects)
        .await?
        .last()
        .map_or(0, |e| e.seq);
    let (cp, note) = match policy.filter(|p| p.requires_cosignatures()) {
        Some(p) => witnessed(store, p, last_seq)
            .await?
            .unwrap_or((newest.clone(), String::new())),
        None => (newest.clone(), String::new()),
    };
    let note = if note.is_empty() {
        super::tlog::served_checkpoint_note(store, &cp).await?
    } else {
        note
    };
    let origin = Note::parse(&cp.note)
        .ok()
        .and_then(|n| Checkpoint::parse_body(&n.text).ok())
        .map(|b| b.origin)
        .ok_or_else(|| ExportError::Range("the newest checkpoint is unreadable".into()))?;
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

/// The newest checkpoint that covers `last_seq` and whose cosignatures meet `policy`, with its
/// served note.
async fn witnessed(
    store: &Store,
    policy: &Policy,
    last_seq: u64,
) -> Result<Option<(CheckpointRow, String)>, ExportError> {
    for size in store.cosigned_sizes(WITNESSED_LOOKBACK).await? {
        if size <= last_seq {
            break;
        }
        let Some(cp) = store.checkpoint_at(size).await? else {
            continue;
        };
        let note = super::tlog::served_checkpoint_note(store, &cp).await?;
        if policy.check(&note).is_ok_and(|v| v.quorum_met) {
            return Ok(Some((cp, note)));
        }
    }
    Ok(None)
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
