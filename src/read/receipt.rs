//! One change's self-contained receipt (`core::ledger::receipt`): its entries, the erasures of
//! any erased payloads and the key history, each proved against one checkpoint, gathered from
//! the store and checked with the offline verifier before anyone gets it.

use super::changes::{self, Criteria};
use super::export::{ExportError, inclusion_proof};
use crate::core::ledger::entry::kinds;
use crate::core::ledger::keys::first_key_named;
use crate::core::ledger::note::{Checkpoint, Note};
use crate::core::ledger::policy::Policy;
use crate::core::ledger::receipt::{self, ProvedEntry, Receipt, run_id};
use crate::storage::{CheckpointRow, EntryRow, StorageError, Store};
use std::collections::{BTreeMap, BTreeSet};

/// More entries than any change has; a receipt stays far below the 64 MiB `verify-proof` reads.
const MAX_ENTRIES: usize = 10_000;

/// Cosigned checkpoints looked at, newest first, for one that meets the witness policy.
const WITNESSED_LOOKBACK: u64 = 64;

#[derive(Debug, thiserror::Error)]
pub enum ReceiptError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Export(#[from] ExportError),
    /// Not yet: what the receipt needs is not covered by a checkpoint; retry after the next.
    #[error("{0}")]
    NotYet(String),
    /// Never, as asked: too large for a receipt.
    #[error("{0}")]
    TooLarge(String),
    /// The receipt built would not verify: a fault, never handed out.
    #[error("{0}")]
    Faulty(String),
}

/// A receipt and whether its checkpoint meets the witness policy (`None`: no policy).
pub struct Built {
    pub receipt: Receipt,
    pub witnessed: Option<bool>,
}

/// The receipt for `change_id`; `None` for an unknown change. It is against the newest
/// checkpoint, or with a witness `policy`, the newest that meets its quorum and covers every
/// entry the receipt needs (witnesses answer after a checkpoint is signed, so the newest may
/// not be cosigned yet); the newest when none does, and `witnessed` says so.
pub async fn receipt(
    store: &Store,
    change_id: &str,
    c: &Criteria,
    policy: Option<&Policy>,
) -> Result<Option<Built>, ReceiptError> {
    let Some((ev, _)) = changes::evidence_of(store, change_id, c).await? else {
        return Ok(None);
    };
    let newest = store
        .latest_checkpoint()
        .await?
        .ok_or_else(|| ReceiptError::NotYet("the ledger has no checkpoint yet".into()))?;
    let rows = belonging(
        store
            .entries_about(&changes::subjects_of(&ev, change_id))
            .await?,
        change_id,
    );
    let erasures_of: BTreeMap<u64, u64> = store.erasures().await?.into_iter().collect();
    // Everything the receipt needs: the change's entries and the erasures of erased ones.
    let needed = rows
        .iter()
        .flat_map(|e| std::iter::once(e.seq).chain(erasures_of.get(&e.seq).copied()))
        .max()
        .unwrap_or(0);
    let required = policy.filter(|p| p.requires_cosignatures());
    let (cp, note, witnessed) = match required {
        Some(p) => match witnessed(store, p, needed).await? {
            Some((cp, note)) => (cp, note, Some(true)),
            None => {
                let note = super::tlog::served_checkpoint_note(store, &newest).await?;
                let met = p.check(&note).is_ok_and(|v| v.quorum_met);
                (newest, note, Some(met))
            }
        },
        None => {
            let note = super::tlog::served_checkpoint_note(store, &newest).await?;
            (newest, note, policy.map(|_| true))
        }
    };
    let rows: Vec<EntryRow> = rows.into_iter().filter(|e| e.seq < cp.size).collect();
    if rows.len() > MAX_ENTRIES {
        return Err(ReceiptError::TooLarge(format!(
            "change {change_id} has {} entries, more than a receipt holds ({MAX_ENTRIES}); export a bundle instead",
            rows.len()
        )));
    }
    if !rows.iter().any(|e| e.subject == change_id) {
        return Err(ReceiptError::NotYet(format!(
            "no entry of change {change_id} is covered by a checkpoint yet; try again after the next one"
        )));
    }
    let mut erasures = Vec::new();
    for e in rows.iter().filter(|e| e.payload.is_none()) {
        match erasures_of.get(&e.seq) {
            Some(by) if *by < cp.size => {
                erasures.push(prove(store, entry(store, *by).await?, cp.size).await?)
            }
            _ => {
                return Err(ReceiptError::NotYet(format!(
                    "the erasure of entry {} is not covered by a checkpoint yet; try again after the next one",
                    e.seq
                )));
            }
        }
    }
    erasures.sort_by_key(|e| e.seq);
    let mut entries = Vec::with_capacity(rows.len());
    for e in rows {
        entries.push(prove(store, e, cp.size).await?);
    }
    let rotations = store.entries_of_kinds(&[kinds::KEY_ROTATED]).await?;
    let seqs = std::iter::once(0).chain(rotations.into_iter().map(|(seq, _, _)| seq));
    let mut chain = Vec::new();
    for seq in seqs.filter(|s| *s < cp.size) {
        chain.push(prove(store, entry(store, seq).await?, cp.size).await?);
    }
    let origin = Note::parse(&cp.note)
        .ok()
        .and_then(|n| Checkpoint::parse_body(&n.text).ok())
        .map(|b| b.origin)
        .ok_or_else(|| ReceiptError::Faulty("the checkpoint is unreadable".into()))?;
    let r = receipt::build(&origin, change_id, &note, chain, entries, erasures)
        .map_err(ReceiptError::Faulty)?;
    self_check(&r)?;
    Ok(Some(Built {
        receipt: r,
        witnessed,
    }))
}

/// The change's own entries, and those of the runs its own entries name (with their payloads):
/// the verifier refuses a run no entry of the change names, so such entries are left out.
fn belonging(rows: Vec<EntryRow>, change_id: &str) -> Vec<EntryRow> {
    let named: BTreeSet<String> = rows
        .iter()
        .filter(|e| e.subject == change_id)
        .filter_map(|e| e.payload.as_deref().and_then(run_id))
        .collect();
    rows.into_iter()
        .filter(|e| e.subject == change_id || named.contains(&e.subject))
        .collect()
}

/// The receipt must pass the offline verifier with the ledger's first key (the one entry 0
/// names): a receipt its reader would refuse is a fault here, not a file for them.
fn self_check(r: &Receipt) -> Result<(), ReceiptError> {
    let first = r
        .key_chain
        .first()
        .and_then(|e| e.payload.as_deref())
        .and_then(first_key_named)
        .ok_or_else(|| ReceiptError::Faulty("entry 0 names no key".into()))?;
    receipt::verify(&r.to_text(), &[first])
        .map(|_| ())
        .map_err(|e| ReceiptError::Faulty(format!("the receipt built does not verify: {e}")))
}

async fn entry(store: &Store, seq: u64) -> Result<EntryRow, ReceiptError> {
    store
        .entry(seq)
        .await?
        .ok_or_else(|| ReceiptError::Faulty(format!("entry {seq} is missing")))
}

/// The newest checkpoint that covers `needed` and whose cosignatures meet `policy`, with its
/// served note.
async fn witnessed(
    store: &Store,
    policy: &Policy,
    needed: u64,
) -> Result<Option<(CheckpointRow, String)>, ReceiptError> {
    for size in store.cosigned_sizes(WITNESSED_LOOKBACK).await? {
        if size <= needed {
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

async fn prove(store: &Store, e: EntryRow, size: u64) -> Result<ProvedEntry, ReceiptError> {
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
