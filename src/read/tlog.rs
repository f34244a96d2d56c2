//! The ledger as others' tools read it: the checkpoint served to them (C2SP tlog-checkpoint, with
//! the witnesses' cosignatures once they are stored beside it).

use crate::core::ledger::cosign::Cosignature;
use crate::storage::{CheckpointRow, StorageError, Store};

/// The note served for `cp`: the signed checkpoint as stored, followed by the stored witness
/// cosignature lines (each was verified under its witness's key before it was stored; a line
/// that does not even parse is left out, so the served note always parses).
pub async fn served_checkpoint_note(
    store: &Store,
    cp: &CheckpointRow,
) -> Result<String, StorageError> {
    let mut note = cp.note.clone();
    for row in store.cosignatures(cp.size).await? {
        if Cosignature::parse_line(&row.line).is_ok() && !note.contains(&row.line) {
            note.push_str(&row.line);
            note.push('\n');
        }
    }
    Ok(note)
}
