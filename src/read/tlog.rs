//! The ledger as others' tools read it: the checkpoint served to them (C2SP tlog-checkpoint, with
//! the witnesses' cosignatures once they are stored beside it).

use crate::storage::{CheckpointRow, StorageError, Store};

/// The note served for `cp`: the signed checkpoint as stored.
pub async fn served_checkpoint_note(
    _store: &Store,
    cp: &CheckpointRow,
) -> Result<String, StorageError> {
    Ok(cp.note.clone())
}
