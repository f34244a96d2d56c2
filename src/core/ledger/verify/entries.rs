//! Each entry's checks: its bytes decode, its sequence number and chain link, its time, its
//! payload against the signed commitment, the key in force and its signature, and key rotations.

use super::{Class, EntryInput, Finding, Verifier};
use crate::core::ledger::entry::{self, Entry, ErasurePayload, kinds};
use crate::core::ledger::hash::Hash;
use crate::core::ledger::keys::{RotationPayload, first_key_named};
use crate::core::ledger::sigcheck::SigJob;
use ed25519_dalek::Signature;

impl Verifier {
    pub(super) fn on_entry(&mut self, line: EntryInput<'_>) {
        self.summary.entries += 1;
        let Some(origin) = self.origin.clone() else {
            if self.summary.entries == 1 {
                let f = Finding::general(
                    Class::UnknownKey,
                    "the ledger's origin is unknown: nothing to check entries against",
                );
                self.find(f);
            }
            return;
        };
        if !self.entries_started {
            self.entries_started = true;
            self.summary.first_seq = Some(line.seq);
        }
        let bytes = match line.entry.as_deref() {
            Some(b) => b,
            None => {
                self.find(Finding::at_seq(
                    Class::Modified,
                    line.seq,
                    "entry bytes are not base64",
                ));
                return;
            }
        };
        let entry = match Entry::decode(bytes) {
            Ok(e) => e,
            Err(err) => {
                self.find(Finding::at_seq(
                    Class::Modified,
                    line.seq,
                    format!("entry bytes do not decode: {err}"),
                ));
                return;
            }
        };
        let seq = entry.seq;
        if seq != line.seq {
            let f = Finding::at_seq(
                Class::Modified,
                line.seq,
                "the line's seq differs from the seq inside the signed entry bytes",
            )
            .values(line.seq, seq);
            self.find(f);
        }
        if entry.origin != origin {
            let f = Finding::at_seq(Class::Modified, seq, "entry names another ledger origin")
                .values(&origin, &entry.origin);
            self.find(f);
        }
        self.summary.last_seq = Some(self.summary.last_seq.map_or(seq, |l| l.max(seq)));
        let leaf = entry::leaf_hash(bytes);

        // Sequence: contiguous, a gap (maybe filled later: then it was reordered), or a repeat.
        let contiguous = if seq == self.expected_seq {
            self.expected_seq += 1;
            true
        } else if seq > self.expected_seq {
            self.gaps.insert(self.expected_seq, seq);
            self.expected_seq = seq + 1;
            false
        } else {
            if self.take_from_gap(seq) {
                self.find(Finding::at_seq(
                    Class::Reordered,
                    seq,
                    "entry appears after later entries",
                ));
            } else {
                self.find(Finding::at_seq(
                    Class::Duplicate,
                    seq,
                    "sequence number appears more than once",
                ));
            }
            return;
        };

        // Chain link.
        if contiguous {
            let expected_prev = if seq == 0 {
                Some(entry::genesis_prev_hash(&origin))
            } else {
                self.last_leaf
            };
            if let Some(p) = expected_prev
                && p != entry.prev_hash
            {
                let f = Finding::at_seq(
                    Class::Modified,
                    seq,
                    "prev_hash is not the leaf hash of the previous entry",
                )
                .values(p.to_hex(), entry.prev_hash.to_hex());
                self.find(f);
            }
        }
        self.last_leaf = Some(leaf);

        // Time never decreases.
        if let Some(t) = self.last_time
            && entry.time_ns < t
        {
            let f = Finding::at_seq(
                Class::TimeRegression,
                seq,
                "time_ns is earlier than the previous entry's",
            )
            .values(t, entry.time_ns);
            self.find(f);
        }
        self.last_time = Some(entry.time_ns);

        // Payload: present payloads open their commitment; absent ones must be logged erasures.
        let payload = self.check_payload(seq, &entry, &line);

        // Key in force, signature, and rotations.
        self.check_key_and_signature(seq, &entry, line.sig, leaf, payload);

        // Tree.
        self.window.record(&self.range, leaf, entry.time_ns);
        self.range.push(leaf, |_, _| {});
        self.note_state_size();
        let size = self.range.size();
        if let Some(list) = self.pending.remove(&size) {
            for p in list {
                self.check_checkpoint(p, self.range.root(), Some(entry.time_ns));
            }
        }
    }

    fn take_from_gap(&mut self, seq: u64) -> bool {
        let Some((&start, &end)) = self.gaps.range(..=seq).next_back() else {
            return false;
        };
        if seq >= end {
            return false;
        }
        self.gaps.remove(&start);
        if start < seq {
            self.gaps.insert(start, seq);
        }
        if seq + 1 < end {
            self.gaps.insert(seq + 1, end);
        }
        true
    }

    fn check_payload<'a>(
        &mut self,
        seq: u64,
        entry: &Entry,
        line: &EntryInput<'a>,
    ) -> Option<&'a str> {
        match (line.salt, line.payload) {
            (Some(salt), Some(payload)) => {
                let Some(salt) = salt else {
                    self.find(Finding::at_seq(
                        Class::Modified,
                        seq,
                        "salt is not base64 of 32 bytes",
                    ));
                    return None;
                };
                let commitment = entry::payload_commitment(&salt, payload.as_bytes());
                if commitment != entry.payload_commitment {
                    let f = Finding::at_seq(
                        Class::Modified,
                        seq,
                        "payload does not open the entry's payload commitment",
                    )
                    .values(entry.payload_commitment.to_hex(), commitment.to_hex());
                    self.find(f);
                    return None;
                }
                if payload.len() as u64 != u64::from(entry.payload_len) {
                    let f = Finding::at_seq(
                        Class::Modified,
                        seq,
                        "payload length differs from payload_len",
                    )
                    .values(entry.payload_len, payload.len());
                    self.find(f);
                }
                if entry.kind == kinds::PAYLOAD_ERASED {
                    match serde_json::from_str::<ErasurePayload>(payload) {
                        Ok(e) => {
                            self.erased.insert(e.erased_seq);
                        }
                        Err(e) => self.find(Finding::at_seq(
                            Class::Modified,
                            seq,
                            format!("payload.erased entry has an unreadable payload: {e}"),
                        )),
                    }
                }
                Some(payload)
            }
            (None, None) => {
                self.missing_payloads.push(seq);
                None
            }
            _ => {
                self.find(Finding::at_seq(
                    Class::Modified,
                    seq,
                    "salt and payload must be both present or both erased",
                ));
                None
            }
        }
    }

    fn check_key_and_signature(
        &mut self,
        seq: u64,
        entry: &Entry,
        sig: Option<[u8; 64]>,
        leaf: Hash,
        payload: Option<&str>,
    ) {
        if self.keys.spans.is_empty() {
            self.establish_first_key(seq, entry, payload);
        }
        let in_force = self.keys.key_for(seq).cloned();
        let is_rotation = entry.kind == kinds::KEY_ROTATED;
        let mut signed_by_key_in_force = false;
        match &in_force {
            Some(k) if k.key_id() == entry.key_id => {
                match sig {
                    // A rotation hands trust to a new key, so its own signature must be known
                    // good before any later entry is judged by that key: check it right away.
                    Some(sig)
                        if is_rotation && !k.verify(&entry::signature_message(&leaf), &sig) =>
                    {
                        self.find(Finding::at_seq(
                            Class::BadSignature,
                            seq,
                            "key rotation entry signature does not verify; the new key is not trusted",
                        ));
                    }
                    Some(sig) => {
                        signed_by_key_in_force = true;
                        self.sigs.push(SigJob {
                            seq,
                            key: *k.public(),
                            leaf,
                            sig: Signature::from_bytes(&sig),
                        });
                    }
                    None => self.find(Finding::at_seq(
                        Class::Modified,
                        seq,
                        "signature is not base64 of 64 bytes",
                    )),
                }
            }
            Some(k) => {
                let f = Finding::at_seq(
                    Class::UnknownKey,
                    seq,
                    "entry is signed by a key that is not in force at this seq",
                )
                .values(k.key_id(), entry.key_id);
                self.find(f);
            }
            None => {
                let f = Finding::at_seq(
                    Class::UnknownKey,
                    seq,
                    "entry is signed by a key that is not pinned",
                )
                .values("a pinned key", entry.key_id);
                self.find(f);
            }
        }
        if is_rotation && signed_by_key_in_force {
            let Some(origin) = self.origin.clone() else {
                return;
            };
            let result = match payload {
                None => Err("its payload is absent".to_owned()),
                Some(p) => serde_json::from_str::<RotationPayload>(p)
                    .map_err(|e| format!("its payload is unreadable: {e}"))
                    .and_then(|r| r.verify(&origin, seq)),
            };
            match result {
                Ok(new_key) => self.keys.spans.push((seq + 1, new_key)),
                Err(e) => self.find(Finding::at_seq(
                    Class::Modified,
                    seq,
                    format!("key rotation cannot be followed: {e}"),
                )),
            }
        }
    }

    /// The key in force at the first entry: for seq 0, the key `ledger.created` names (which must
    /// be pinned unless nothing is); for a range bundle, the pinned key the entry names.
    fn establish_first_key(&mut self, seq: u64, entry: &Entry, payload: Option<&str>) {
        if seq == 0 && entry.kind == kinds::LEDGER_CREATED {
            let named = payload.and_then(first_key_named);
            match named {
                // A pinned key of another ledger is not this ledger's first key: with keys of two
                // ledgers pinned, one's holder could otherwise sign a history for the other.
                Some(k)
                    if self.origin.as_ref() == Some(k.origin())
                        && (self.opts.trusted.is_empty() || self.opts.trusted.contains(&k)) =>
                {
                    self.keys.spans.push((0, k));
                }
                Some(k) => {
                    let f = Finding::at_seq(
                        Class::UnknownKey,
                        0,
                        "the ledger's first key is not pinned",
                    )
                    .values(
                        self.opts
                            .trusted
                            .iter()
                            .map(|k| k.to_string())
                            .collect::<Vec<_>>()
                            .join(" "),
                        &k,
                    );
                    self.find(f);
                }
                None => {
                    let f = Finding::at_seq(
                        Class::Modified,
                        0,
                        "ledger.created does not name a valid first key",
                    );
                    self.find(f);
                }
            }
            return;
        }
        if self.opts.trusted.is_empty() {
            return;
        }
        if let Some(k) = self
            .opts
            .trusted
            .iter()
            .find(|k| k.key_id() == entry.key_id && self.origin.as_ref() == Some(k.origin()))
        {
            self.keys.spans.push((seq, k.clone()));
        }
    }
}
