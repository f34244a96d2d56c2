//! A self-contained receipt for one change (FORMAT.md "Receipts"): every entry of the change with
//! its bytes, signature and payload, each with a C2SP tlog-proof against one checkpoint, and the
//! entries that carry the key history (`ledger.created`, every `key.rotated`), so a reviewer can
//! check it offline with only the file, a pinned vkey and (optionally) a witness policy.
//!
//! The file is canonical: the verifier re-encodes what it parsed and refuses any other spelling,
//! and every field is either checked against signed bytes or derived from them. So no byte of a
//! receipt can change without the verifier saying so.

use super::entry::{self, Entry, ErasurePayload, kinds};
use super::hash::{Hash, b64, unb64};
use super::keys::{Origin, RotationPayload, Vkey, first_key_named};
use super::merkle::verify_inclusion;
use super::note::{Checkpoint, Note, NoteVerdict};
use super::verify::KeyHistory;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

pub const FORMAT: &str = "changetrail-receipt/v1";
/// The first line of a C2SP tlog-proof.
pub const TLOG_PROOF_HEADER: &str = "c2sp.org/tlog-proof@v1";
/// More inclusion proof lines than a tree of 2^63 entries needs.
const MAX_PROOF_LINES: usize = 63;

/// The receipt as written: field order is the file's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    pub format: String,
    pub origin: String,
    pub change_id: String,
    /// The other subjects the change's entries are about (its runs): derived from the entries.
    pub runs: Vec<String>,
    /// The checkpoint every proof is against, with the witnesses' cosignatures.
    pub checkpoint: String,
    /// `ledger.created` and every `key.rotated` the checkpoint covers, in sequence order.
    pub key_chain: Vec<ReceiptEntry>,
    /// Every entry of the change the checkpoint covers, in sequence order.
    pub entries: Vec<ReceiptEntry>,
    /// The `payload.erased` entry of each erased payload above, in sequence order: an erasure is
    /// shown, never merely claimed by a null.
    pub erasures: Vec<ReceiptEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptEntry {
    pub seq: u64,
    pub kind: String,
    /// b64 of the entry bytes.
    pub entry: String,
    /// b64 of the Ed25519 signature.
    pub sig: String,
    /// b64 of the salt; null with `payload` null when the payload was erased.
    pub salt: Option<String>,
    pub payload: Option<String>,
    /// A C2SP tlog-proof of this entry against `checkpoint`.
    pub proof: String,
}

/// One stored entry and its inclusion proof, as the reader hands them to `build`.
pub struct ProvedEntry {
    pub seq: u64,
    pub entry: Vec<u8>,
    pub sig: Vec<u8>,
    pub salt: Option<Vec<u8>>,
    pub payload: Option<String>,
    pub proof: Vec<Hash>,
}

/// `c2sp.org/tlog-proof@v1`, `index N`, the proof hashes, a blank line, the checkpoint.
pub fn tlog_proof(index: u64, proof: &[Hash], checkpoint: &str) -> String {
    let mut s = format!("{TLOG_PROOF_HEADER}\nindex {index}\n");
    for h in proof {
        s.push_str(&h.to_b64());
        s.push('\n');
    }
    s.push('\n');
    s.push_str(checkpoint);
    s
}

/// Parses a tlog-proof strictly (no `extra` line: we never write one): index, hashes, checkpoint.
pub fn parse_tlog_proof(text: &str) -> Result<(u64, Vec<Hash>, &str), String> {
    let rest = text
        .strip_prefix(TLOG_PROOF_HEADER)
        .and_then(|r| r.strip_prefix('\n'))
        .ok_or("does not start with the c2sp.org/tlog-proof@v1 line")?;
    let (index_line, mut rest) = rest.split_once('\n').ok_or("has no index line")?;
    let index = index_line
        .strip_prefix("index ")
        .filter(|d| canonical_decimal(d))
        .and_then(|d| d.parse::<u64>().ok())
        .ok_or("index line is not `index <canonical decimal>`")?;
    let mut hashes = Vec::new();
    loop {
        let (line, tail) = rest
            .split_once('\n')
            .ok_or("proof lines are not followed by a blank line")?;
        rest = tail;
        if line.is_empty() {
            break;
        }
        if hashes.len() == MAX_PROOF_LINES {
            return Err("has more than 63 proof lines".into());
        }
        hashes.push(Hash::from_b64(line).ok_or("a proof line is not base64 of 32 bytes")?);
    }
    Ok((index, hashes, rest))
}

fn canonical_decimal(d: &str) -> bool {
    !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()) && (d == "0" || !d.starts_with('0'))
}

impl ReceiptEntry {
    fn new(e: ProvedEntry, kind: String, checkpoint: &str) -> ReceiptEntry {
        ReceiptEntry {
            seq: e.seq,
            kind,
            entry: b64(&e.entry),
            sig: b64(&e.sig),
            salt: e.salt.as_deref().map(b64),
            payload: e.payload,
            proof: tlog_proof(e.seq, &e.proof, checkpoint),
        }
    }
}

/// Assembles a receipt from stored entries (already proved against `checkpoint`). Entries whose
/// bytes do not decode are refused: the service never writes a receipt it could not verify.
pub fn build(
    origin: &Origin,
    change_id: &str,
    checkpoint: &str,
    key_chain: Vec<ProvedEntry>,
    entries: Vec<ProvedEntry>,
    erasures: Vec<ProvedEntry>,
) -> Result<Receipt, String> {
    let decode = |e: &ProvedEntry| {
        Entry::decode(&e.entry).map_err(|err| format!("entry {} does not decode: {err}", e.seq))
    };
    let mut runs = BTreeSet::new();
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let d = decode(&e)?;
        if d.subject != change_id {
            runs.insert(d.subject.clone());
        }
        out.push(ReceiptEntry::new(e, d.kind, checkpoint));
    }
    let proved = |list: Vec<ProvedEntry>| -> Result<Vec<ReceiptEntry>, String> {
        let mut out = Vec::with_capacity(list.len());
        for e in list {
            let d = decode(&e)?;
            out.push(ReceiptEntry::new(e, d.kind, checkpoint));
        }
        Ok(out)
    };
    let chain = proved(key_chain)?;
    let erasures = proved(erasures)?;
    Ok(Receipt {
        format: FORMAT.into(),
        origin: origin.as_str().into(),
        change_id: change_id.into(),
        runs: runs.into_iter().collect(),
        checkpoint: checkpoint.into(),
        key_chain: chain,
        entries: out,
        erasures,
    })
}

impl Receipt {
    /// The file's bytes: pretty JSON and a final newline, the only spelling `verify` accepts.
    pub fn to_text(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// What a valid receipt shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub origin: Origin,
    pub change_id: String,
    pub checkpoint_size: u64,
    /// The checkpoint note as it came (with cosignatures), for a witness policy to judge.
    pub checkpoint_note: String,
    pub entries: usize,
    /// Entries whose payload was erased (the commitment still binds what was there).
    pub erased: Vec<u64>,
    /// The key that signed the checkpoint.
    pub checkpoint_key: String,
}

/// Checks a receipt offline: canonical bytes, the checkpoint signed by a key reached from the
/// pinned ones through the receipt's own key chain, every entry's bytes, signature, payload and
/// inclusion proof. Any failure is an error naming what failed.
pub fn verify(text: &str, trusted: &[Vkey]) -> Result<Verified, String> {
    if trusted.is_empty() {
        return Err("no key is pinned: pass the ledger's first vkey with --trusted-key".into());
    }
    let r: Receipt =
        serde_json::from_str(text).map_err(|e| format!("the receipt is not readable: {e}"))?;
    if r.to_text() != text {
        return Err("the receipt is not in its canonical form (bytes were changed)".into());
    }
    if r.format != FORMAT {
        return Err(format!("format is {:?}, not {FORMAT}", r.format));
    }
    let origin = Origin::parse(&r.origin).map_err(|e| format!("origin: {e}"))?;
    if !trusted.iter().any(|k| k.origin() == &origin) {
        return Err(format!(
            "the receipt is for ledger {origin}, and no pinned key belongs to it"
        ));
    }
    let note = Note::parse(&r.checkpoint).map_err(|e| format!("checkpoint: {e}"))?;
    let cp = Checkpoint::parse_body(&note.text).map_err(|e| format!("checkpoint: {e}"))?;
    if cp.origin != origin {
        return Err(format!("the checkpoint is for ledger {}", cp.origin));
    }
    let keys = follow_key_chain(&r, &origin, &cp, trusted)?;
    let signer = checkpoint_signer(&keys, &note, cp.size)?;
    let mut erased = Vec::new();
    let mut runs = BTreeSet::new();
    let mut named_runs = BTreeSet::new();
    let mut about_change = false;
    let mut last = None;
    for e in &r.entries {
        if last.is_some_and(|l| e.seq <= l) {
            return Err(format!("entry {} is out of order or repeated", e.seq));
        }
        last = Some(e.seq);
        let d = check_entry(e, &origin, &cp, &r.checkpoint, &keys)?;
        if d.subject == r.change_id {
            about_change = true;
            named_runs.extend(e.payload.as_deref().and_then(run_id));
        } else {
            runs.insert(d.subject);
        }
        if e.payload.is_none() {
            erased.push(e.seq);
        }
    }
    if !about_change {
        return Err(format!("no entry is about change {:?}", r.change_id));
    }
    if runs.iter().collect::<Vec<_>>() != r.runs.iter().collect::<Vec<_>>() {
        return Err("`runs` is not the set of the entries' other subjects".into());
    }
    // A run's entries belong to the change only if one of the change's own entries names it:
    // else any run's entries could be filed under any change.
    if let Some(stray) = runs.iter().find(|run| !named_runs.contains(*run)) {
        return Err(format!(
            "entries about {stray:?} are included, but no entry of the change names that run"
        ));
    }
    check_erasures(&r, &erased, &origin, &cp, &keys)?;
    Ok(Verified {
        origin,
        change_id: r.change_id,
        checkpoint_size: cp.size,
        checkpoint_note: r.checkpoint,
        entries: r.entries.len(),
        erased,
        checkpoint_key: signer.to_string(),
    })
}

/// The `run_id` a fact record's payload names at its top level.
pub fn run_id(payload: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Named {
        run_id: Option<String>,
    }
    serde_json::from_str::<Named>(payload).ok()?.run_id
}

/// Each erased payload must come with the proved `payload.erased` entry that erased it, and the
/// receipt carries no other: an erasure is logged in the ledger, never just a null in a file.
fn check_erasures(
    r: &Receipt,
    erased: &[u64],
    origin: &Origin,
    cp: &Checkpoint,
    keys: &KeyHistory,
) -> Result<(), String> {
    let mut shown: BTreeMap<u64, u64> = BTreeMap::new();
    let mut last = None;
    for e in &r.erasures {
        if last.is_some_and(|l| e.seq <= l) {
            return Err(format!("erasure {} is out of order or repeated", e.seq));
        }
        last = Some(e.seq);
        if e.kind != kinds::PAYLOAD_ERASED {
            return Err(format!("erasure entry {} is a {:?}", e.seq, e.kind));
        }
        check_entry(e, origin, cp, &r.checkpoint, keys)?;
        let p: ErasurePayload = e
            .payload
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok())
            .ok_or_else(|| format!("erasure entry {} does not say what it erased", e.seq))?;
        if p.erased_seq >= e.seq {
            return Err(format!("erasure {} names a later entry", e.seq));
        }
        shown.insert(p.erased_seq, e.seq);
    }
    for seq in erased {
        if shown.remove(seq).is_none() {
            return Err(format!(
                "entry {seq}'s payload is missing and no payload.erased entry in the receipt erased it"
            ));
        }
    }
    if let Some((seq, by)) = shown.into_iter().next() {
        return Err(format!(
            "erasure {by} names entry {seq}, which is not an erased entry of the receipt"
        ));
    }
    Ok(())
}

/// The checkpoint of `size` must be signed by a key allowed for it; the key that signed it.
fn checkpoint_signer<'a>(keys: &'a KeyHistory, note: &Note, size: u64) -> Result<&'a Vkey, String> {
    let allowed = keys.checkpoint_keys(size);
    match note.verify(allowed.iter().copied()) {
        NoteVerdict::Valid(ids) => allowed
            .into_iter()
            .find(|k| ids.contains(&k.key_id()))
            .ok_or_else(|| "checkpoint signer not found".into()),
        NoteVerdict::BadSignature(id) => Err(format!(
            "the checkpoint's signature by key {} does not verify",
            id.to_hex()
        )),
        NoteVerdict::NoKnownKey => Err(format!(
            "the checkpoint is not signed by the key in force at size {size}"
        )),
    }
}

/// Walks `ledger.created` then each `key.rotated`, each proved in the checkpoint and signed by
/// the key in force, so a later key is trusted only through a rotation the pinned key began.
fn follow_key_chain(
    r: &Receipt,
    origin: &Origin,
    cp: &Checkpoint,
    trusted: &[Vkey],
) -> Result<KeyHistory, String> {
    let Some(first) = r.key_chain.first() else {
        return Err("the key chain is empty: it must start with entry 0 (ledger.created)".into());
    };
    if first.seq != 0 || first.kind != kinds::LEDGER_CREATED {
        return Err("the key chain must start with entry 0 (ledger.created)".into());
    }
    let named = first
        .payload
        .as_deref()
        .and_then(first_key_named)
        .ok_or("entry 0 does not name the ledger's first key")?;
    // Only a pinned key of this very ledger: with keys of two ledgers pinned, one's holder could
    // otherwise sign a receipt for the other.
    if named.origin() != origin || !trusted.contains(&named) {
        return Err(format!(
            "the ledger's first key {named} is not pinned (pin it with --trusted-key)"
        ));
    }
    let mut chain = KeyHistory {
        spans: vec![(0, named)],
    };
    let mut last = None;
    for (i, e) in r.key_chain.iter().enumerate() {
        if last.is_some_and(|l| e.seq <= l) {
            return Err(format!("key chain entry {} is out of order", e.seq));
        }
        last = Some(e.seq);
        if i > 0 && e.kind != kinds::KEY_ROTATED {
            return Err(format!("key chain entry {} is a {:?}", e.seq, e.kind));
        }
        check_entry(e, origin, cp, &r.checkpoint, &chain)?;
        if e.kind == kinds::KEY_ROTATED {
            let new_key = e
                .payload
                .as_deref()
                .ok_or_else(|| format!("rotation {} has no payload", e.seq))
                .and_then(|p| {
                    serde_json::from_str::<RotationPayload>(p)
                        .map_err(|err| format!("rotation {} is unreadable: {err}", e.seq))
                })
                .and_then(|p| p.verify(origin, e.seq))
                .map_err(|err| format!("rotation {} cannot be followed: {err}", e.seq))?;
            chain.spans.push((e.seq + 1, new_key));
        }
    }
    Ok(chain)
}

/// One entry: decodes strictly, matches its stated seq and kind, is signed by the key in force,
/// opens its payload commitment, and its tlog-proof puts it in the checkpoint.
fn check_entry(
    e: &ReceiptEntry,
    origin: &Origin,
    cp: &Checkpoint,
    checkpoint_text: &str,
    keys: &KeyHistory,
) -> Result<Entry, String> {
    let at = |m: &str| format!("entry {}: {m}", e.seq);
    let bytes = unb64(&e.entry).ok_or_else(|| at("entry is not base64"))?;
    let d = Entry::decode(&bytes).map_err(|err| at(&format!("bytes do not decode: {err}")))?;
    if d.seq != e.seq || d.kind != e.kind || &d.origin != origin {
        return Err(at("seq, kind or origin differ from the entry's bytes"));
    }
    let leaf = entry::leaf_hash(&bytes);
    let key = keys
        .key_for(e.seq)
        .filter(|k| k.key_id() == d.key_id)
        .ok_or_else(|| at("signed by a key that is not in force at this seq"))?;
    let sig = unb64(&e.sig).ok_or_else(|| at("signature is not base64"))?;
    if !key.verify(&entry::signature_message(&leaf), &sig) {
        return Err(at("signature does not verify"));
    }
    match (&e.salt, &e.payload) {
        (Some(salt), Some(payload)) => {
            let salt: [u8; 32] = unb64(salt)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(|| at("salt is not base64 of 32 bytes"))?;
            let ok = entry::payload_commitment(&salt, payload.as_bytes()) == d.payload_commitment
                && payload.len() as u64 == u64::from(d.payload_len);
            if !ok {
                return Err(at("payload does not open its commitment"));
            }
        }
        (None, None) => {}
        _ => return Err(at("salt and payload must be both present or both erased")),
    }
    let (index, proof, proof_cp) =
        parse_tlog_proof(&e.proof).map_err(|err| at(&format!("tlog-proof {err}")))?;
    if index != e.seq || proof_cp != checkpoint_text {
        return Err(at("tlog-proof is for another index or another checkpoint"));
    }
    verify_inclusion(index, cp.size, &leaf, &proof, &cp.root)
        .map_err(|err| at(&format!("inclusion proof fails: {err}")))?;
    Ok(d)
}

#[cfg(test)]
#[path = "receipt_tests.rs"]
mod tests;
