//! Building what the sequencer appends: entries (chained, committed, signed), the tree nodes
//! they complete, the new head, and checkpoints. Pure: the head, salts, time and keys come in.

use super::entry::{self, Entry, kinds};
use super::hash::Hash;
use super::keys::{KeyId, LedgerKey, Origin, RotationPayload};
use super::merkle::{CompactRange, NodeId, verify_consistency};
use super::note::{Checkpoint, Note};
use rayon::prelude::*;

/// Largest payload accepted into one entry.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;
/// Longest subject (a change id) accepted.
pub const MAX_SUBJECT_BYTES: usize = 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DraftError {
    #[error("entry kind must be 1-64 characters of a-z, 0-9, '.', '_' or '-'")]
    Kind,
    #[error("subject must be at most {MAX_SUBJECT_BYTES} bytes without control characters")]
    Subject,
    #[error("payload must be a JSON object of at most {MAX_PAYLOAD_BYTES} bytes: {0}")]
    Payload(String),
}

/// An entry waiting for a sequence number: what it says, not yet where it sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    kind: String,
    subject: String,
    payload: String,
}

impl Draft {
    pub fn new(kind: &str, subject: &str, payload: String) -> Result<Draft, DraftError> {
        let kind_ok = !kind.is_empty()
            && kind.len() <= 64
            && kind
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'));
        if !kind_ok {
            return Err(DraftError::Kind);
        }
        if subject.len() > MAX_SUBJECT_BYTES || subject.chars().any(char::is_control) {
            return Err(DraftError::Subject);
        }
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(DraftError::Payload(format!("{} bytes", payload.len())));
        }
        match serde_json::from_str::<serde_json::Value>(&payload) {
            Ok(serde_json::Value::Object(_)) => {}
            Ok(_) => return Err(DraftError::Payload("not an object".into())),
            Err(e) => return Err(DraftError::Payload(e.to_string())),
        }
        Ok(Draft {
            kind: kind.to_owned(),
            subject: subject.to_owned(),
            payload,
        })
    }

    /// A draft from a value the service built itself.
    pub fn of(
        kind: &str,
        subject: &str,
        payload: &impl serde::Serialize,
    ) -> Result<Draft, DraftError> {
        let text =
            serde_json::to_string(payload).map_err(|e| DraftError::Payload(e.to_string()))?;
        Draft::new(kind, subject, text)
    }

    pub fn kind(&self) -> &str {
        &self.kind
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }

    pub fn payload(&self) -> &str {
        &self.payload
    }
}

/// The ledger's head: everything needed to append the next entry and to sign a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub origin: Origin,
    pub size: u64,
    /// Leaf hash of entry `size - 1`, or the genesis value for an empty ledger.
    pub last_leaf: Hash,
    pub last_time_ns: i64,
    pub range: CompactRange,
    /// The key that signs the next entry.
    pub key_id: KeyId,
}

impl Head {
    pub fn empty(origin: Origin, key_id: KeyId) -> Head {
        Head {
            last_leaf: entry::genesis_prev_hash(&origin),
            origin,
            size: 0,
            last_time_ns: 0,
            range: CompactRange::new(),
            key_id,
        }
    }

    pub fn root(&self) -> Hash {
        self.range.root()
    }
}

/// One entry ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltEntry {
    pub seq: u64,
    pub time_ns: i64,
    pub kind: String,
    pub subject: String,
    pub bytes: Vec<u8>,
    pub leaf: Hash,
    pub sig: [u8; 64],
    pub salt: [u8; 32],
    pub payload: String,
}

#[derive(Debug, Clone)]
pub struct BuiltBatch {
    pub entries: Vec<BuiltEntry>,
    /// Perfect subtrees (level ≥ 1) the batch completed.
    pub nodes: Vec<(NodeId, Hash)>,
    pub head: Head,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("the ledger's current key is {ledger}, but this process signs with {ours}")]
    KeyMismatch { ledger: KeyId, ours: KeyId },
    #[error("the key belongs to origin {key}, but the ledger is {ledger}")]
    OriginMismatch { ledger: String, key: String },
    #[error("one salt per draft is required")]
    Salts,
    #[error("entry cannot be encoded: {0}")]
    Encode(String),
}

/// Timings of the build phases, for the benchmark's cost split.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuildTimings {
    pub encode_ns: u64,
    /// Payload commitments, leaf hashes and tree nodes.
    pub hash_ns: u64,
    pub sign_ns: u64,
}

/// Chains, commits to and signs `drafts` after `head`. Commitments and signatures are computed
/// in parallel; the chain itself is sequential by nature. `now_ns` never moves time backwards:
/// entries get `max(now_ns, head.last_time_ns)`.
pub fn build_batch(
    head: &Head,
    drafts: &[Draft],
    salts: Vec<[u8; 32]>,
    now_ns: i64,
    key: &LedgerKey,
    clock: &dyn Fn() -> u64,
) -> Result<(BuiltBatch, BuildTimings), BatchError> {
    if key.key_id() != head.key_id {
        return Err(BatchError::KeyMismatch {
            ledger: head.key_id,
            ours: key.key_id(),
        });
    }
    if key.origin() != &head.origin {
        return Err(BatchError::OriginMismatch {
            ledger: head.origin.to_string(),
            key: key.origin().to_string(),
        });
    }
    if salts.len() != drafts.len() {
        return Err(BatchError::Salts);
    }
    let t0 = clock();
    let time_ns = now_ns.max(head.last_time_ns);
    let commitments: Vec<Hash> = drafts
        .par_iter()
        .zip(salts.par_iter())
        .map(|(d, s)| entry::payload_commitment(s, d.payload.as_bytes()))
        .collect();
    let t_commit = clock();
    let (mut encode_ns, mut hash_ns) = (0u64, t_commit.saturating_sub(t0));
    let mut range = head.range.clone();
    let mut prev = head.last_leaf;
    let mut nodes = Vec::new();
    let mut entries = Vec::with_capacity(drafts.len());
    for (i, ((draft, salt), commitment)) in drafts.iter().zip(salts).zip(commitments).enumerate() {
        let seq = head.size + i as u64;
        let e = Entry {
            origin: head.origin.clone(),
            seq,
            time_ns,
            prev_hash: prev,
            key_id: head.key_id,
            kind: draft.kind.clone(),
            subject: draft.subject.clone(),
            payload_commitment: commitment,
            payload_len: draft.payload.len() as u32,
        };
        let ta = clock();
        let bytes = e
            .encode()
            .map_err(|err| BatchError::Encode(err.to_string()))?;
        let tb = clock();
        let leaf = entry::leaf_hash(&bytes);
        range.push(leaf, |id, h| nodes.push((id, h)));
        let tc = clock();
        encode_ns += tb.saturating_sub(ta);
        hash_ns += tc.saturating_sub(tb);
        prev = leaf;
        entries.push(BuiltEntry {
            seq,
            time_ns,
            kind: e.kind,
            subject: e.subject,
            bytes,
            leaf,
            sig: [0; 64],
            salt,
            payload: draft.payload.clone(),
        });
    }
    let t1 = clock();
    // Chunks of 64 share one field inversion (`sign_batch`) and still spread over the cores.
    entries.par_chunks_mut(64).for_each(|chunk| {
        let msgs: Vec<[u8; 57]> = chunk
            .iter()
            .map(|e| entry::signature_message(&e.leaf))
            .collect();
        for (e, sig) in chunk.iter_mut().zip(key.sign_batch(&msgs)) {
            e.sig = sig;
        }
    });
    let t2 = clock();
    let new_head = Head {
        origin: head.origin.clone(),
        size: head.size + entries.len() as u64,
        last_leaf: prev,
        last_time_ns: time_ns,
        range,
        key_id: head.key_id,
    };
    Ok((
        BuiltBatch {
            entries,
            nodes,
            head: new_head,
        },
        BuildTimings {
            encode_ns,
            hash_ns,
            sign_ns: t2.saturating_sub(t1),
        },
    ))
}

/// The `ledger.created` payload for a new ledger.
pub fn genesis_draft(key: &LedgerKey, software: &str) -> Result<Draft, DraftError> {
    #[derive(serde::Serialize)]
    struct Created<'a> {
        origin: &'a str,
        vkey: String,
        software: &'a str,
    }
    Draft::of(
        kinds::LEDGER_CREATED,
        "",
        &Created {
            origin: key.origin().as_str(),
            vkey: key.vkey().to_string(),
            software,
        },
    )
}

/// The `key.rotated` draft for a rotation appended at `seq`, counter-signed by the new key.
pub fn rotation_draft(new_key: &LedgerKey, seq: u64) -> Result<Draft, DraftError> {
    Draft::of(kinds::KEY_ROTATED, "", &RotationPayload::sign(new_key, seq))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckpointRefused {
    #[error("the previous checkpoint note is unreadable: {0}")]
    PreviousUnreadable(String),
    #[error("the previous checkpoint (size {0}) is larger than the tree ({1})")]
    Shrinks(u64, u64),
    #[error(
        "the tree at size {new} is not consistent with the previous checkpoint at size {old}: {reason}"
    )]
    Inconsistent { old: u64, new: u64, reason: String },
}

/// Signs a checkpoint of `head`, refusing unless the consistency `proof` shows it extends the
/// `previous` signed note (a log must never sign two inconsistent checkpoints).
pub fn sign_checkpoint(
    head: &Head,
    key: &LedgerKey,
    previous: Option<&str>,
    proof: &[Hash],
) -> Result<(Checkpoint, String), CheckpointRefused> {
    let checkpoint = Checkpoint {
        origin: head.origin.clone(),
        size: head.size,
        root: head.root(),
    };
    if let Some(prev) = previous {
        let note =
            Note::parse(prev).map_err(|e| CheckpointRefused::PreviousUnreadable(e.to_string()))?;
        let old = Checkpoint::parse_body(&note.text)
            .map_err(|e| CheckpointRefused::PreviousUnreadable(e.to_string()))?;
        if old.size > checkpoint.size {
            return Err(CheckpointRefused::Shrinks(old.size, checkpoint.size));
        }
        if old.size > 0 {
            verify_consistency(
                old.size,
                checkpoint.size,
                &old.root,
                &checkpoint.root,
                proof,
            )
            .map_err(|e| CheckpointRefused::Inconsistent {
                old: old.size,
                new: checkpoint.size,
                reason: e.to_string(),
            })?;
        }
    }
    let note = checkpoint.sign(key);
    Ok((checkpoint, note))
}

/// Size of the previous checkpoint named by a note, for choosing which proof to fetch.
pub fn checkpoint_size(note: &str) -> Option<u64> {
    let n = Note::parse(note).ok()?;
    Checkpoint::parse_body(&n.text).ok().map(|c| c.size)
}
