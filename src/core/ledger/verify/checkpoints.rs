//! Each checkpoint line: its note parses and is for this ledger, a key in force at its size
//! signed it, and its root is the root the entries give at that size (now, from the window of
//! recent leaves, or once the entries reach it).

use super::{Class, Finding, VerifiedCheckpoint, Verifier};
use crate::core::ledger::hash::Hash;
use crate::core::ledger::keys::Vkey;
use crate::core::ledger::note::{Checkpoint, Note, NoteVerdict};

/// A checkpoint line read and waiting for the entries it covers.
pub(super) struct PendingCheckpoint {
    note: Note,
    checkpoint: Checkpoint,
    text: String,
}

impl Verifier {
    pub(super) fn on_checkpoint(&mut self, text: &str) {
        self.summary.checkpoints += 1;
        let note = match Note::parse(text) {
            Ok(n) => n,
            Err(e) => {
                self.find(Finding::general(
                    Class::BadCheckpoint,
                    format!("line {}: {e}", self.lines),
                ));
                return;
            }
        };
        let checkpoint = match Checkpoint::parse_body(&note.text) {
            Ok(c) => c,
            Err(e) => {
                self.find(Finding::general(
                    Class::BadCheckpoint,
                    format!("line {}: {e}", self.lines),
                ));
                return;
            }
        };
        if Some(&checkpoint.origin) != self.origin.as_ref() {
            let f = Finding::at_size(
                Class::BadCheckpoint,
                checkpoint.size,
                "checkpoint is for another ledger origin",
            )
            .values(
                self.origin.as_ref().map_or("?".into(), |o| o.to_string()),
                &checkpoint.origin,
            );
            self.find(f);
            return;
        }
        let size = checkpoint.size;
        let pending = PendingCheckpoint {
            note,
            checkpoint,
            text: text.to_owned(),
        };
        if size > self.range.size() {
            self.pending.entry(size).or_default().push(pending);
        } else if size == self.range.size() {
            let root = self.range.root();
            self.check_checkpoint(pending, root, self.last_time);
        } else {
            match self.window.at(size) {
                Some((root, time)) => self.check_checkpoint(pending, root, time),
                None if size < self.start_seq => {
                    // Before the bundle's first entry: only its signature can be checked here.
                    self.check_signature_only(&pending);
                }
                None => {
                    let f = Finding::at_size(
                        Class::Incomplete,
                        size,
                        "checkpoint appears too long after the entries it covers to be checked in one pass",
                    );
                    self.find(f);
                }
            }
        }
    }

    /// Keys allowed to sign a checkpoint of `size` (`KeyHistory::checkpoint_keys`).
    fn checkpoint_keys(&self, size: u64) -> Vec<Vkey> {
        self.keys
            .checkpoint_keys(size)
            .into_iter()
            .cloned()
            .collect()
    }

    fn all_known_keys(&self) -> Vec<Vkey> {
        let mut v: Vec<Vkey> = self.opts.trusted.clone();
        for (_, k) in &self.keys.spans {
            if !v.contains(k) {
                v.push(k.clone());
            }
        }
        v
    }

    /// Returns true when a trusted key for this size signed the note.
    pub(super) fn check_signature_only(&mut self, p: &PendingCheckpoint) -> bool {
        let size = p.checkpoint.size;
        let known = self.all_known_keys();
        match p.note.verify(known.iter()) {
            NoteVerdict::BadSignature(id) => {
                let f = Finding::at_size(
                    Class::BadCheckpoint,
                    size,
                    format!("signature by key {id} does not verify"),
                );
                self.find(f);
                false
            }
            NoteVerdict::NoKnownKey => {
                let f = Finding::at_size(
                    Class::UnknownKey,
                    size,
                    "checkpoint is not signed by any trusted key",
                );
                self.find(f);
                false
            }
            NoteVerdict::Valid(ids) => {
                let allowed = self.checkpoint_keys(size);
                if ids
                    .iter()
                    .any(|id| allowed.iter().any(|k| k.key_id() == *id))
                {
                    true
                } else {
                    let f = Finding::at_size(
                        Class::UnknownKey,
                        size,
                        "checkpoint is signed only by keys not in force at this size",
                    )
                    .values(
                        allowed
                            .iter()
                            .map(|k| k.key_id().to_hex())
                            .collect::<Vec<_>>()
                            .join(","),
                        ids.iter().map(|i| i.to_hex()).collect::<Vec<_>>().join(","),
                    );
                    self.find(f);
                    false
                }
            }
        }
    }

    pub(super) fn check_checkpoint(
        &mut self,
        p: PendingCheckpoint,
        root: Hash,
        time_ns: Option<i64>,
    ) {
        let size = p.checkpoint.size;
        let signed = self.check_signature_only(&p);
        if p.checkpoint.root != root {
            let f = Finding::at_size(
                Class::CheckpointMismatch,
                size,
                "the root recomputed from the entries differs from the signed checkpoint",
            )
            .values(root.to_b64(), p.checkpoint.root.to_b64());
            self.find(f);
            if signed
                && let Some(other) = self.verified_roots.get(&size)
                && *other != p.checkpoint.root
            {
                let f = Finding::at_size(
                    Class::Fork,
                    size,
                    "two validly signed checkpoints of the same size have different roots",
                )
                .values(other.to_b64(), p.checkpoint.root.to_b64());
                self.find(f);
            }
            return;
        }
        if !signed {
            return;
        }
        self.summary.checkpoints_valid += 1;
        self.verified_roots.insert(size, root);
        let newer = self.summary.newest.as_ref().is_none_or(|n| n.size <= size);
        if newer {
            self.summary.newest = Some(VerifiedCheckpoint {
                size,
                root,
                note: p.text,
                time_ns: time_ns.unwrap_or(i64::MIN),
            });
        }
    }
}
