//! In-memory ledgers for the tamper catalogue (research/tlog.md §9): valid bundles built with the
//! core API only (no database, no clock), plus the few forgeries an attacker without the key can
//! make, and a verifier entry point that reads bytes the way `changetrail verify` does.

use changetrail::core::ledger::batch::{
    BuiltEntry, Draft, Head, build_batch, genesis_draft, rotation_draft,
};
use changetrail::core::ledger::bundle::{self, Line};
use changetrail::core::ledger::entry::{self, Entry, ErasurePayload, kinds};
use changetrail::core::ledger::hash::{Hash, unb64};
use changetrail::core::ledger::keys::{KeyId, LedgerKey, Origin, RotationPayload, Vkey};
use changetrail::core::ledger::merkle::CompactRange;
use changetrail::core::ledger::note::{Checkpoint, Note};
use changetrail::core::ledger::verify::{Options, Report, TrustedState, Verifier};
use serde_json::json;
use std::collections::BTreeMap;

pub const ORIGIN: &str = "ledger.example.com/prod";
/// Seed of the key that creates the ledger (the one reviewers pin).
pub const SEED_OLD: [u8; 32] = [0x11; 32];
/// Seed of the key the ledger rotates to.
pub const SEED_NEW: [u8; 32] = [0x22; 32];
/// Seed of a key of the same origin that the ledger never published.
pub const SEED_ATTACKER: [u8; 32] = [0x66; 32];
/// 2026-01-01T00:00:00Z.
pub const T0_NS: i64 = 1_767_225_600_000_000_000;
/// Entries are a minute apart.
pub const STEP_NS: i64 = 60_000_000_000;
pub const CREATED_AT: &str = "2026-01-02T00:00:00Z";
pub const SOFTWARE: &str = "changetrail 0.1.0";

/// A key of the test ledger's origin.
pub fn key(seed: [u8; 32]) -> LedgerKey {
    key_in(ORIGIN, seed)
}

pub fn key_in(origin: &str, seed: [u8; 32]) -> LedgerKey {
    LedgerKey::from_seed(Origin::parse(origin).unwrap(), seed).unwrap()
}

/// The time the fixture gives the `i`-th entry of a ledger (absent overrides).
pub fn time_of(i: u64) -> i64 {
    T0_NS + i as i64 * STEP_NS
}

/// Which of the ledger's two keys signs an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signer {
    Old,
    New,
}

/// Builder for a valid ledger: entries with realistic payloads and increasing times, an optional
/// key rotation and erasure, and checkpoints every `k` entries signed by the key in force.
#[derive(Debug, Clone)]
pub struct Ledger {
    origin: String,
    start: u64,
    size: u64,
    seeds: ([u8; 32], [u8; 32]),
    rotate_at: Option<u64>,
    checkpoint_every: u64,
    erase: Option<(u64, u64)>,
    history: u8,
    time_regression_at: Option<u64>,
    signer_at: BTreeMap<u64, Signer>,
    bad_rotation_signature: bool,
    rotation_payload: Option<RotationPayload>,
}

impl Ledger {
    /// `size` entries, seq 0.., signed by the old key, a checkpoint every 4 and at the end.
    pub fn new(size: u64) -> Ledger {
        Ledger {
            origin: ORIGIN.to_owned(),
            start: 0,
            size,
            seeds: (SEED_OLD, SEED_NEW),
            rotate_at: None,
            checkpoint_every: 4,
            erase: None,
            history: 0,
            time_regression_at: None,
            signer_at: BTreeMap::new(),
            bad_rotation_signature: false,
            rotation_payload: None,
        }
    }

    /// The catalogue's usual ledger: 12 entries, `key.rotated` at seq 6, checkpoints at 4, 8, 12.
    pub fn standard() -> Ledger {
        Ledger::new(12).rotate_at(6)
    }

    pub fn origin(mut self, origin: &str) -> Ledger {
        self.origin = origin.to_owned();
        self
    }

    /// A range bundle: the entries before `start` are summarised by a prefix line (peaks).
    pub fn start_at(mut self, start: u64) -> Ledger {
        self.start = start;
        self
    }

    pub fn keys(mut self, old: [u8; 32], new: [u8; 32]) -> Ledger {
        self.seeds = (old, new);
        self
    }

    /// A `key.rotated` entry at `seq`, signed by the old key; later entries use the new key.
    pub fn rotate_at(mut self, seq: u64) -> Ledger {
        self.rotate_at = Some(seq);
        self
    }

    pub fn checkpoint_every(mut self, k: u64) -> Ledger {
        self.checkpoint_every = k;
        self
    }

    /// A `payload.erased` entry at `at` naming `target`, whose salt and payload the bundle omits.
    pub fn erase(mut self, target: u64, at: u64) -> Ledger {
        self.erase = Some((target, at));
        self
    }

    /// A different history with the same keys, sizes and times: what the key holder could
    /// write if they rewrote the ledger (other payloads, other salts), validly signed throughout.
    pub fn rewritten(mut self) -> Ledger {
        self.history += 1;
        self
    }

    /// Entry `seq` gets a time earlier than its predecessor's, yet is validly signed and chained:
    /// the sequencer is handed a head whose `last_time_ns` was lowered.
    pub fn time_regression_at(mut self, seq: u64) -> Ledger {
        self.time_regression_at = Some(seq);
        self
    }

    /// Entry `seq` is signed (validly) by `signer` whatever key is in force.
    pub fn sign_with(mut self, seq: u64, signer: Signer) -> Ledger {
        self.signer_at.insert(seq, signer);
        self
    }

    /// The rotation's `new_key_signature` is a genuine signature of the new key, over the
    /// statement for the wrong seq.
    pub fn bad_rotation_signature(mut self) -> Ledger {
        self.bad_rotation_signature = true;
        self
    }

    /// The `key.rotated` entry carries `payload` instead of a genuine rotation statement (the
    /// entries after it are still signed by the new key).
    pub fn rotation_payload(mut self, payload: RotationPayload) -> Ledger {
        self.rotation_payload = Some(payload);
        self
    }

    pub fn build(&self) -> Built {
        let origin = Origin::parse(&self.origin).unwrap();
        let old = LedgerKey::from_seed(origin.clone(), self.seeds.0).unwrap();
        let new = LedgerKey::from_seed(origin.clone(), self.seeds.1).unwrap();
        let mut head = Head::empty(origin.clone(), old.key_id());
        let mut peaks = Vec::new();
        if self.start > 0 {
            peaks = CompactRange::peak_ids(self.start)
                .iter()
                .map(|id| Hash::of(&[b"fixture peak", &[id.level], &id.idx.to_be_bytes()]))
                .collect();
            head.size = self.start;
            head.range = CompactRange::from_peaks(self.start, peaks.clone()).unwrap();
            head.last_leaf = Hash::of(&[b"fixture leaf before the range"]);
            head.last_time_ns = T0_NS - STEP_NS;
        }
        let mut built = Built {
            origin: origin.clone(),
            start: self.start,
            peaks,
            rotate_at: self.rotate_at,
            erased: self.erase.map(|(target, _)| target),
            entries: Vec::new(),
            roots: vec![head.root()],
            checkpoints: Vec::new(),
            old,
            new,
        };
        let clock = || 0u64;
        for seq in self.start..self.start + self.size {
            let draft = self.draft(seq, &built);
            let mut at = head.clone();
            let mut now = time_of(seq - self.start);
            if self.time_regression_at == Some(seq) {
                // build_batch never lets time go backwards relative to the head it is given;
                // a head with a lowered last_time_ns is how a faulty sequencer would do it.
                at.last_time_ns = now - 5 * STEP_NS;
                now = at.last_time_ns;
            }
            let in_force = if head.key_id == built.old.key_id() {
                Signer::Old
            } else {
                Signer::New
            };
            let signer = built.signer(self.signer_at.get(&seq).copied().unwrap_or(in_force));
            at.key_id = signer.key_id();
            let (batch, _) = build_batch(
                &at,
                &[draft],
                vec![salt(self.history, seq)],
                now,
                signer,
                &clock,
            )
            .unwrap();
            let mut next = batch.head;
            // An override signs one entry; the key in force stays what the chain says.
            next.key_id = head.key_id;
            if self.rotate_at == Some(seq) {
                next.key_id = built.new.key_id();
            }
            head = next;
            built.entries.extend(batch.entries);
            built.roots.push(head.root());
            let done = head.size - self.start;
            if done.is_multiple_of(self.checkpoint_every) || done == self.size {
                let signer = if head.key_id == built.old.key_id() {
                    &built.old
                } else {
                    &built.new
                };
                let checkpoint = Checkpoint {
                    origin: origin.clone(),
                    size: head.size,
                    root: head.root(),
                };
                built.checkpoints.push((head.size, checkpoint.sign(signer)));
            }
        }
        built
    }

    fn draft(&self, seq: u64, built: &Built) -> Draft {
        if seq == 0 {
            return genesis_draft(&built.old, SOFTWARE).unwrap();
        }
        if self.rotate_at == Some(seq) {
            if let Some(payload) = &self.rotation_payload {
                return Draft::of(kinds::KEY_ROTATED, "", payload).unwrap();
            }
            if self.bad_rotation_signature {
                let wrong = RotationPayload::sign(&built.new, seq + 1);
                return Draft::of(kinds::KEY_ROTATED, "", &wrong).unwrap();
            }
            return rotation_draft(&built.new, seq).unwrap();
        }
        if let Some((target, at)) = self.erase
            && at == seq
        {
            let erasure = ErasurePayload {
                erased_seq: target,
                reason: "GDPR Art. 17 request ER-2026-014".to_owned(),
                requested_by: "dpo@example.com".to_owned(),
            };
            let subject = built.entry(target).subject.clone();
            return Draft::of(kinds::PAYLOAD_ERASED, &subject, &erasure).unwrap();
        }
        let (kind, subject, payload) = workflow(seq, self.history);
        Draft::new(kind, &subject, payload.to_string()).unwrap()
    }
}

/// Deterministic per-entry salt (a real ledger draws 32 fresh random bytes).
pub fn salt(history: u8, seq: u64) -> [u8; 32] {
    Hash::of(&[b"fixture salt", &[history], &seq.to_be_bytes()]).0
}

/// A deploy workflow, one change per seven entries. The payloads carry non-ASCII text so that
/// bundle lines contain `\u` escapes.
fn workflow(seq: u64, history: u8) -> (&'static str, String, serde_json::Value) {
    let change = format!("CHG-{}", 2041 + seq / 7);
    let version = format!("2.14.{}", seq / 7 + u64::from(history) * 100);
    let approver = if history == 0 {
        "alice@example.com"
    } else {
        "mallory@example.com"
    };
    match seq % 7 {
        1 => (
            "change.requested",
            change.clone(),
            json!({
                "change": change,
                "service": "payments-api",
                "version": version,
                "requester": "zoë@example.com",
                "summary": "Raise the connection pool to 64 — INC-88 follow-up",
            }),
        ),
        2 => (
            "approval.requested",
            change.clone(),
            json!({
                "change": change,
                "approvers": [approver, "bob@example.com"],
                "policy": "two-person",
            }),
        ),
        3 => (
            "approval.decided",
            change.clone(),
            json!({"change": change, "approver": approver, "decision": "approved"}),
        ),
        4 => (
            "spans.bound",
            change.clone(),
            json!({
                "change": change,
                "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
                "spans": [{
                    "span_id": "00f067aa0ba902b7",
                    "name": "deploy payments-api",
                    "digest": format!("sha256:{}", Hash::of(&[&seq.to_be_bytes(), &[history]]).to_hex()),
                }],
            }),
        ),
        5 => (
            "task.finished",
            change.clone(),
            json!({"change": change, "task": "deploy", "status": "ok", "duration_ms": 48_211 + seq}),
        ),
        6 => (
            "change.finished",
            change.clone(),
            json!({"change": change, "outcome": "deployed"}),
        ),
        _ => (
            "version.observed",
            String::new(),
            json!({"service": "payments-api", "version": version, "observed_by": "otel-collector"}),
        ),
    }
}

/// A built ledger and the pieces of its bundle.
pub struct Built {
    pub origin: Origin,
    pub start: u64,
    pub peaks: Vec<Hash>,
    pub rotate_at: Option<u64>,
    pub erased: Option<u64>,
    /// Entries as the sequencer built them (payloads present, also for the erased one).
    pub entries: Vec<BuiltEntry>,
    /// `roots[size - start]`: the tree root at every size.
    pub roots: Vec<Hash>,
    /// (size, signed note), in order.
    pub checkpoints: Vec<(u64, String)>,
    pub old: LedgerKey,
    pub new: LedgerKey,
}

impl Built {
    pub fn signer(&self, s: Signer) -> &LedgerKey {
        match s {
            Signer::Old => &self.old,
            Signer::New => &self.new,
        }
    }

    pub fn entry(&self, seq: u64) -> &BuiltEntry {
        &self.entries[(seq - self.start) as usize]
    }

    /// The keys a reviewer pins: the first key only (the rotation must be followed).
    pub fn pinned(&self) -> Vec<Vkey> {
        vec![self.old.vkey().clone()]
    }

    pub fn root(&self, size: u64) -> Hash {
        self.roots[(size - self.start) as usize]
    }

    /// The saved state of a reviewer who trusted the checkpoint of `size`.
    pub fn state(&self, size: u64) -> TrustedState {
        TrustedState {
            size,
            root: self.root(size),
        }
    }

    pub fn note(&self, size: u64) -> &str {
        &self
            .checkpoints
            .iter()
            .find(|(s, _)| *s == size)
            .unwrap_or_else(|| panic!("no checkpoint of size {size}"))
            .1
    }

    /// The sequencer's head after `size` entries of a ledger built from seq 0: what someone
    /// continuing the chain from there starts with.
    pub fn head_at(&self, size: u64) -> Head {
        assert_eq!(self.start, 0, "head_at needs the whole ledger");
        let mut range = CompactRange::new();
        for e in &self.entries[..size as usize] {
            range.push(e.leaf, |_, _| {});
        }
        let last = size.checked_sub(1).map(|s| self.entry(s));
        let key_id = match self.rotate_at {
            Some(r) if size > r => self.new.key_id(),
            _ => self.old.key_id(),
        };
        Head {
            origin: self.origin.clone(),
            size,
            last_leaf: last.map_or_else(|| entry::genesis_prev_hash(&self.origin), |e| e.leaf),
            last_time_ns: last.map_or(0, |e| e.time_ns),
            range,
            key_id,
        }
    }

    pub fn last_time(&self) -> i64 {
        self.entries.last().map_or(T0_NS, |e| e.time_ns)
    }

    pub fn header(&self) -> String {
        bundle::write::header(self.origin.as_str(), CREATED_AT)
    }

    /// The informational key lines (they carry no trust: verifiers use pins and rotations).
    pub fn key_lines(&self) -> Vec<String> {
        let old = self.old.vkey().to_string();
        match self.rotate_at {
            Some(r) => vec![
                bundle::write::key(&old, self.start, Some(r)),
                bundle::write::key(&self.new.vkey().to_string(), r + 1, None),
            ],
            None => vec![bundle::write::key(&old, self.start, None)],
        }
    }

    /// The entry's bundle line; an erased entry's salt and payload are written as null.
    pub fn entry_line(&self, seq: u64) -> String {
        let e = self.entry(seq);
        if self.erased == Some(seq) {
            bundle::write::entry(seq, &e.bytes, &e.sig, None, None)
        } else {
            bundle::write::entry(seq, &e.bytes, &e.sig, Some(&e.salt), Some(&e.payload))
        }
    }

    /// Header, key lines, the prefix of a range bundle, then each entry followed by the
    /// checkpoints its seq completes, as the exporter writes them.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![self.header()];
        out.extend(self.key_lines());
        if self.start > 0 {
            out.push(bundle::write::prefix(self.start, &self.peaks));
        }
        for e in &self.entries {
            out.push(self.entry_line(e.seq));
            for (_, note) in self.checkpoints.iter().filter(|(s, _)| *s == e.seq + 1) {
                out.push(bundle::write::checkpoint(note));
            }
        }
        out
    }

    /// The bundle text.
    pub fn text(&self) -> String {
        join(&self.lines())
    }
}

/// Lines to bundle text: one line per `\n`, including the last.
pub fn join(lines: &[String]) -> String {
    let mut s = String::new();
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
    s
}

/// Index of the first entry line whose line seq is `seq`.
pub fn entry_pos(lines: &[String], seq: u64) -> usize {
    lines
        .iter()
        .position(|l| matches!(Line::parse(l), Ok(Line::Entry(e)) if e.seq == seq))
        .unwrap_or_else(|| panic!("no entry line for seq {seq}"))
}

/// Index of the first checkpoint line of `size`.
pub fn checkpoint_pos(lines: &[String], size: u64) -> usize {
    lines
        .iter()
        .position(|l| match Line::parse(l) {
            Ok(Line::Checkpoint { note }) => Note::parse(&note)
                .ok()
                .and_then(|n| Checkpoint::parse_body(&n.text).ok())
                .is_some_and(|c| c.size == size),
            _ => false,
        })
        .unwrap_or_else(|| panic!("no checkpoint line of size {size}"))
}

/// An entry line taken apart, to be edited and written back canonically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryParts {
    pub seq: u64,
    pub entry: Vec<u8>,
    pub sig: Vec<u8>,
    pub salt: Option<Vec<u8>>,
    pub payload: Option<String>,
}

impl EntryParts {
    pub fn parse(line: &str) -> EntryParts {
        let Ok(Line::Entry(e)) = Line::parse(line) else {
            panic!("not an entry line: {line}");
        };
        EntryParts {
            seq: e.seq,
            entry: unb64(&e.entry).unwrap(),
            sig: unb64(&e.sig).unwrap(),
            salt: e.salt.map(|s| unb64(&s).unwrap()),
            payload: e.payload.map(|p| p.into_owned()),
        }
    }

    pub fn decoded(&self) -> Entry {
        Entry::decode(&self.entry).unwrap()
    }

    /// Replaces the entry bytes with `e` encoded (the signature is left as it was).
    pub fn set_entry(&mut self, e: &Entry) {
        self.entry = e.encode().unwrap();
    }

    pub fn line(&self) -> String {
        bundle::write::entry(
            self.seq,
            &self.entry,
            &self.sig,
            self.salt.as_deref(),
            self.payload.as_deref(),
        )
    }
}

/// Applies `edit` to the entry line of `seq` and writes it back in canonical form.
pub fn edit_entry(lines: &mut [String], seq: u64, edit: impl FnOnce(&mut EntryParts)) {
    let i = entry_pos(lines, seq);
    let mut parts = EntryParts::parse(&lines[i]);
    edit(&mut parts);
    lines[i] = parts.line();
}

/// `key`'s signature line over `body` (with its newline), as `Note::sign` writes it.
pub fn signature_line(body: &str, key: &LedgerKey) -> String {
    let note = Note::sign(body, key);
    note[body.len() + 1..].to_owned()
}

/// A note over `body` with the given signature lines, in the given order.
pub fn note_with(body: &str, signature_lines: &[String]) -> String {
    let mut s = format!("{body}\n");
    for l in signature_lines {
        s.push_str(l);
    }
    s
}

/// `note` with `key`'s signature line appended (a cosignature, e.g. a witness's).
pub fn cosign(note: &str, key: &LedgerKey) -> String {
    let body = Note::parse(note).unwrap().text;
    format!("{note}{}", signature_line(&body, key))
}

/// A witness key with its own name (origin), for cosignatures the ledger does not know.
pub fn witness(i: u8) -> LedgerKey {
    key_in(&format!("witness{i}.example.org/w"), [0x80 | i; 32])
}

/// An entry made by someone who does not hold the ledger key: correct chain fields and a
/// payload that opens its commitment, signed by whatever key they have.
pub struct Forgery {
    pub seq: u64,
    pub time_ns: i64,
    pub prev_hash: Hash,
    /// The key id the entry claims.
    pub key_id: KeyId,
    pub kind: String,
    pub subject: String,
    pub payload: String,
}

impl Forgery {
    /// The forged entry's bundle line and leaf hash.
    pub fn sign(&self, signer: &LedgerKey) -> (String, Hash) {
        let salt = salt(0xff, self.seq);
        let e = Entry {
            origin: signer.origin().clone(),
            seq: self.seq,
            time_ns: self.time_ns,
            prev_hash: self.prev_hash,
            key_id: self.key_id,
            kind: self.kind.clone(),
            subject: self.subject.clone(),
            payload_commitment: entry::payload_commitment(&salt, self.payload.as_bytes()),
            payload_len: self.payload.len() as u32,
        };
        let bytes = e.encode().unwrap();
        let leaf = entry::leaf_hash(&bytes);
        let sig = signer.sign(&entry::signature_message(&leaf));
        let line = bundle::write::entry(self.seq, &bytes, &sig, Some(&salt), Some(&self.payload));
        (line, leaf)
    }
}

/// Continues the chain after `head` with `count` entries signed by `signer` (who need not be
/// trusted), with a checkpoint signed by `signer` every `every` sizes and at the end: the bundle
/// lines an attacker holding some key would append.
pub fn extend_chain(head: &Head, signer: &LedgerKey, count: u64, every: u64) -> Vec<String> {
    let mut head = head.clone();
    head.key_id = signer.key_id();
    let mut lines = Vec::new();
    let end = head.size + count;
    while head.size < end {
        let seq = head.size;
        let payload = json!({"service": "payments-api", "version": "9.9.9", "note": "hotfix"});
        let draft = Draft::new("version.observed", "", payload.to_string()).unwrap();
        let now = head.last_time_ns + STEP_NS;
        let (batch, _) =
            build_batch(&head, &[draft], vec![salt(0xfe, seq)], now, signer, &|| 0).unwrap();
        head = batch.head;
        let e = &batch.entries[0];
        lines.push(bundle::write::entry(
            seq,
            &e.bytes,
            &e.sig,
            Some(&e.salt),
            Some(&e.payload),
        ));
        if head.size.is_multiple_of(every) || head.size == end {
            let checkpoint = Checkpoint {
                origin: head.origin.clone(),
                size: head.size,
                root: head.root(),
            };
            lines.push(bundle::write::checkpoint(&checkpoint.sign(signer)));
        }
    }
    lines
}

/// Verifies raw bundle bytes as `changetrail verify` would, with `now_ns` as "now", splitting
/// lines like the CLI's reader: on `\n`, invalid UTF-8 reported as an unreadable line.
pub fn verify_bytes(
    bytes: &[u8],
    pinned: &[Vkey],
    state: Option<TrustedState>,
    max_age_ns: Option<i64>,
    now_ns: i64,
) -> Report {
    let mut v = Verifier::new(Options {
        trusted: pinned.to_vec(),
        state,
        max_age_ns,
        now_ns,
        threads: 2,
    });
    for chunk in bytes.split_inclusive(|b| *b == b'\n') {
        let line = chunk.strip_suffix(b"\n").unwrap_or(chunk);
        match std::str::from_utf8(line) {
            Ok(text) => v.push_line(text),
            Err(_) => v.push_unreadable("line is not valid UTF-8"),
        }
    }
    v.finish()
}
