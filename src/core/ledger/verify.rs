//! The streaming ledger verifier (FORMAT.md "Verification"): one pass over bundle lines, O(log n)
//! tree state, signatures checked on all cores, findings classified exactly as the format says.
//!
//! Pure: lines go in, a report comes out. Reading files, the clock and printing are the caller's.

use super::bundle::{EntryLine, Line};
use super::entry::{self, Entry, ErasurePayload, kinds};
use super::hash::{Hash, unb64};
use super::keys::{Origin, RotationPayload, Vkey};
use super::merkle::{CompactRange, verify_consistency};
use super::note::{Checkpoint, Note, NoteVerdict};
use super::sigcheck::{SigJob, SignatureChecker};
use ed25519_dalek::Signature;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

/// One entry's stored fields, for `Verifier::push_entry`.
#[derive(Debug, Clone, Copy)]
pub struct RawEntry<'a> {
    pub seq: u64,
    pub entry: &'a [u8],
    pub sig: &'a [u8],
    /// `None` with `payload` `None`: erased.
    pub salt: Option<&'a [u8]>,
    pub payload: Option<&'a str>,
}

/// An entry however it arrived, decoded: `None` fields did not decode (a finding), an absent salt
/// is `None` and a present but malformed one `Some(None)`.
struct EntryInput<'a> {
    seq: u64,
    entry: Option<Cow<'a, [u8]>>,
    sig: Option<[u8; 64]>,
    salt: Option<Option<[u8; 32]>>,
    payload: Option<&'a str>,
}

impl<'a> EntryInput<'a> {
    fn from_line(l: &'a EntryLine<'a>) -> EntryInput<'a> {
        EntryInput {
            seq: l.seq,
            entry: unb64(&l.entry).map(Cow::Owned),
            sig: unb64(&l.sig).and_then(|s| s.try_into().ok()),
            salt: l
                .salt
                .as_ref()
                .map(|s| unb64(s).and_then(|v| v.try_into().ok())),
            payload: l.payload.as_deref(),
        }
    }
}

/// Findings kept per class; the rest are counted, so a wholly forged bundle cannot exhaust memory.
const MAX_FINDINGS_PER_CLASS: usize = 1000;
/// Leaves kept per block of the root window (see `RootWindow`).
const WINDOW_BLOCK: u64 = 1 << 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Class {
    Modified,
    BadSignature,
    UnknownKey,
    Missing,
    Reordered,
    Duplicate,
    TimeRegression,
    CheckpointMismatch,
    BadCheckpoint,
    Rollback,
    Fork,
    Incomplete,
    Stale,
    Redacted,
    Unpinned,
    /// A derived table (facts, spans, log records, credentials, tokens) holds a row no signed
    /// entry produced, or one that differs from what its entry produces.
    DerivedMismatch,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Modified => "MODIFIED",
            Class::BadSignature => "BAD_SIGNATURE",
            Class::UnknownKey => "UNKNOWN_KEY",
            Class::Missing => "MISSING",
            Class::Reordered => "REORDERED",
            Class::Duplicate => "DUPLICATE",
            Class::TimeRegression => "TIME_REGRESSION",
            Class::CheckpointMismatch => "CHECKPOINT_MISMATCH",
            Class::BadCheckpoint => "BAD_CHECKPOINT",
            Class::Rollback => "ROLLBACK",
            Class::Fork => "FORK",
            Class::Incomplete => "INCOMPLETE",
            Class::Stale => "STALE",
            Class::Redacted => "REDACTED",
            Class::Unpinned => "UNPINNED",
            Class::DerivedMismatch => "DERIVED_MISMATCH",
        }
    }

    /// The exit code FORMAT.md assigns: 1 tampering, 2 incomplete or stale, 0 informational.
    pub fn exit_code(self) -> i32 {
        match self {
            Class::Incomplete | Class::Stale => 2,
            Class::Redacted | Class::Unpinned => 0,
            _ => 1,
        }
    }
}

/// One finding, as `--format json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub class: Class,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual: Option<String>,
    pub detail: String,
}

impl Finding {
    pub fn at_seq(class: Class, seq: u64, detail: impl Into<String>) -> Finding {
        Finding {
            class,
            seq: Some(seq),
            size: None,
            expected: None,
            actual: None,
            detail: detail.into(),
        }
    }

    pub fn at_size(class: Class, size: u64, detail: impl Into<String>) -> Finding {
        Finding {
            class,
            seq: None,
            size: Some(size),
            expected: None,
            actual: None,
            detail: detail.into(),
        }
    }

    pub fn general(class: Class, detail: impl Into<String>) -> Finding {
        Finding {
            class,
            seq: None,
            size: None,
            expected: None,
            actual: None,
            detail: detail.into(),
        }
    }

    pub fn values(mut self, expected: impl ToString, actual: impl ToString) -> Finding {
        self.expected = Some(expected.to_string());
        self.actual = Some(actual.to_string());
        self
    }
}

/// The last checkpoint a reviewer trusted, saved between runs (keyed by origin by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedState {
    pub size: u64,
    pub root: Hash,
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Pinned keys. Empty means trust comes from the ledger's own first entry (UNPINNED).
    pub trusted: Vec<Vkey>,
    pub state: Option<TrustedState>,
    /// Maximum age of the newest checkpoint's last entry, in nanoseconds; `None` disables STALE.
    pub max_age_ns: Option<i64>,
    /// "Now" for the freshness check, nanoseconds since the epoch.
    pub now_ns: i64,
    /// Signature worker threads; 0 = all cores.
    pub threads: usize,
}

/// A verified checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCheckpoint {
    pub size: u64,
    pub root: Hash,
    pub note: String,
    /// `time_ns` of the last entry the checkpoint covers.
    pub time_ns: i64,
}

#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub origin: Option<String>,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub entries: u64,
    pub signatures: u64,
    pub checkpoints: u64,
    pub checkpoints_valid: u64,
    pub redacted: u64,
    pub newest: Option<VerifiedCheckpoint>,
    /// Largest size up to which every entry is covered by a verified checkpoint.
    pub covered_to: Option<u64>,
    /// The keys in force, as (first seq, vkey), learned from pins and rotation entries.
    pub keys: Vec<(u64, String)>,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// Findings beyond the per-class cap, by class.
    pub suppressed: BTreeMap<Class, u64>,
    pub summary: Summary,
    pub exit_code: i32,
    /// The state to save when the run succeeded: the newest checkpoint if it advanced.
    pub new_state: Option<TrustedState>,
}

impl Report {
    pub fn has(&self, class: Class) -> bool {
        self.findings.iter().any(|f| f.class == class)
    }

    /// Counts findings of `class` a further check found but did not list.
    pub fn add_suppressed(&mut self, class: Class, n: u64) {
        if n == 0 {
            return;
        }
        *self.suppressed.entry(class).or_default() += n;
        self.exit_code = worse(self.exit_code, class.exit_code());
        if self.exit_code != 0 {
            self.new_state = None;
        }
    }

    /// Adds findings from a further check (e.g. of stored data), updating the verdict.
    pub fn add(&mut self, extra: Vec<Finding>) {
        for f in extra {
            self.exit_code = worse(self.exit_code, f.class.exit_code());
            self.findings.push(f);
        }
        if self.exit_code != 0 {
            self.new_state = None;
        }
    }
}

/// Combines exit codes: tampering (1) outranks incompleteness (2), which outranks success (0).
fn worse(a: i32, b: i32) -> i32 {
    match (a, b) {
        (1, _) | (_, 1) => 1,
        (2, _) | (_, 2) => 2,
        _ => 0,
    }
}

struct Findings {
    list: Vec<Finding>,
    per_class: HashMap<Class, usize>,
    suppressed: BTreeMap<Class, u64>,
}

impl Findings {
    fn push(&mut self, f: Finding) {
        let n = self.per_class.entry(f.class).or_default();
        if *n < MAX_FINDINGS_PER_CLASS {
            *n += 1;
            self.list.push(f);
        } else {
            *self.suppressed.entry(f.class).or_default() += 1;
        }
    }
}

/// Which key signs which sequence numbers, as learned from pins and rotation entries.
#[derive(Default)]
struct KeyHistory {
    /// (first seq, key), ascending.
    spans: Vec<(u64, Vkey)>,
}

impl KeyHistory {
    fn key_for(&self, seq: u64) -> Option<&Vkey> {
        self.spans
            .iter()
            .rev()
            .find(|(from, _)| *from <= seq)
            .map(|(_, k)| k)
    }
}

/// Recent leaves with the tree state at the start of each block, so that a checkpoint line that
/// appears after the entries it covers can still be checked (within two blocks).
struct WindowBlock {
    start: CompactRange,
    leaves: Vec<(Hash, i64)>,
}

#[derive(Default)]
struct RootWindow {
    previous: Option<WindowBlock>,
    current: Option<WindowBlock>,
}

impl RootWindow {
    /// Records the leaf about to be appended to `before` (the tree without it).
    fn record(&mut self, before: &CompactRange, leaf: Hash, time_ns: i64) {
        let full = self
            .current
            .as_ref()
            .is_none_or(|b| b.leaves.len() as u64 >= WINDOW_BLOCK);
        if full {
            self.previous = self.current.take();
            self.current = Some(WindowBlock {
                start: before.clone(),
                leaves: Vec::with_capacity(WINDOW_BLOCK as usize),
            });
        }
        if let Some(b) = self.current.as_mut() {
            b.leaves.push((leaf, time_ns));
        }
    }

    /// Root and last-entry time at `size`, if the window still holds it.
    fn at(&self, size: u64) -> Option<(Hash, Option<i64>)> {
        for b in [&self.previous, &self.current].into_iter().flatten() {
            let lo = b.start.size();
            let hi = lo + b.leaves.len() as u64;
            if size >= lo && size <= hi {
                let mut cr = b.start.clone();
                let n = (size - lo) as usize;
                for (l, _) in &b.leaves[..n] {
                    cr.push(*l, |_, _| {});
                }
                let time = n.checked_sub(1).map(|i| b.leaves[i].1);
                return Some((cr.root(), time));
            }
        }
        None
    }
}

struct PendingCheckpoint {
    note: Note,
    checkpoint: Checkpoint,
    text: String,
}

/// The streaming verifier. Feed it lines with `push_line`, then call `finish`.
pub struct Verifier {
    opts: Options,
    origin: Option<Origin>,
    findings: Findings,
    summary: Summary,
    lines: u64,
    header_seen: bool,
    entries_started: bool,
    start_seq: u64,
    expected_seq: u64,
    /// Absent sequence numbers not (yet) seen out of order: start → end (exclusive).
    gaps: BTreeMap<u64, u64>,
    last_leaf: Option<Hash>,
    last_time: Option<i64>,
    range: CompactRange,
    window: RootWindow,
    keys: KeyHistory,
    sigs: SignatureChecker,
    pending: BTreeMap<u64, Vec<PendingCheckpoint>>,
    verified_roots: BTreeMap<u64, Hash>,
    missing_payloads: Vec<u64>,
    erased: HashSet<u64>,
    consistency: Vec<(u64, u64, Vec<Hash>)>,
    state_root_seen: Option<Hash>,
}

impl Verifier {
    pub fn new(opts: Options) -> Verifier {
        let sigs = SignatureChecker::new(opts.threads);
        Verifier {
            opts,
            origin: None,
            findings: Findings {
                list: Vec::new(),
                per_class: HashMap::new(),
                suppressed: BTreeMap::new(),
            },
            summary: Summary::default(),
            lines: 0,
            header_seen: false,
            entries_started: false,
            start_seq: 0,
            expected_seq: 0,
            gaps: BTreeMap::new(),
            last_leaf: None,
            last_time: None,
            range: CompactRange::new(),
            window: RootWindow::default(),
            keys: KeyHistory::default(),
            sigs,
            pending: BTreeMap::new(),
            verified_roots: BTreeMap::new(),
            missing_payloads: Vec::new(),
            erased: HashSet::new(),
            consistency: Vec::new(),
            state_root_seen: None,
        }
    }

    fn find(&mut self, f: Finding) {
        self.findings.push(f);
    }

    /// One line of the bundle, without its newline. Invalid UTF-8 is passed as an error by the caller.
    pub fn push_line(&mut self, text: &str) {
        self.lines += 1;
        let line = match Line::parse(text) {
            Ok(l) => l,
            Err(e) => {
                let f = Finding::general(Class::Modified, format!("line {}: {e}", self.lines));
                self.find(f);
                return;
            }
        };
        self.header_first(matches!(line, Line::Header { .. }));
        match line {
            Line::Header { format, origin, .. } => self.on_header(&format, &origin),
            // Key lines are informational (FORMAT.md): trust comes from pins and rotation entries.
            Line::Key { .. } => {}
            Line::Prefix { size, peaks } => self.on_prefix(size, &peaks),
            Line::Entry(e) => self.on_entry(EntryInput::from_line(&e)),
            Line::Checkpoint { note } => self.on_checkpoint(&note),
            Line::Consistency { from, to, proof } => {
                let proof: Option<Vec<Hash>> = proof.iter().map(|p| Hash::from_b64(p)).collect();
                match proof {
                    Some(p) => self.consistency.push((from, to, p)),
                    None => self.find(Finding::general(
                        Class::Modified,
                        format!(
                            "line {}: consistency proof hash is not base64 of 32 bytes",
                            self.lines
                        ),
                    )),
                }
            }
        }
    }

    /// One entry as storage holds it (bytes, not a bundle line's base64): the same checks as its
    /// bundle line gets, without encoding and parsing text in between.
    pub fn push_entry(&mut self, e: RawEntry<'_>) {
        self.lines += 1;
        self.header_first(false);
        self.on_entry(EntryInput {
            seq: e.seq,
            entry: Some(std::borrow::Cow::Borrowed(e.entry)),
            sig: e.sig.try_into().ok(),
            salt: e.salt.map(|s| s.try_into().ok()),
            payload: e.payload,
        });
    }

    /// The header must come first; anything else first is a finding (once).
    fn header_first(&mut self, is_header: bool) {
        if !self.header_seen && !is_header {
            self.header_seen = true;
            let f = Finding::general(
                Class::Modified,
                "the bundle does not start with its header line",
            );
            self.find(f);
            self.adopt_origin(None);
        }
    }

    /// Reports a line that could not be read at all (invalid UTF-8, I/O is the caller's).
    pub fn push_unreadable(&mut self, detail: &str) {
        self.lines += 1;
        let f = Finding::general(Class::Modified, format!("line {}: {detail}", self.lines));
        self.find(f);
    }

    fn on_header(&mut self, format: &str, origin: &str) {
        if self.header_seen {
            let f = Finding::general(
                Class::Modified,
                format!("line {}: a second header line", self.lines),
            );
            self.find(f);
            return;
        }
        self.header_seen = true;
        if format != super::bundle::FORMAT {
            let f = Finding::general(Class::Modified, "unknown bundle format")
                .values(super::bundle::FORMAT, format);
            self.find(f);
        }
        // An origin that does not parse is damage, not "no origin": falling back to the pinned
        // keys' origin silently would let a changed header byte pass.
        if Origin::parse(origin).is_err() {
            let f = Finding::general(Class::Modified, "the header's origin is not a valid origin")
                .values("an origin", origin);
            self.find(f);
        }
        self.adopt_origin(Some(origin));
    }

    /// Fixes the ledger origin: the pinned keys' origin; the header's only when nothing is pinned.
    fn adopt_origin(&mut self, header: Option<&str>) {
        let header = header.and_then(|h| Origin::parse(h).ok());
        if self.opts.trusted.is_empty() {
            self.origin = header;
            let f = Finding::general(
                Class::Unpinned,
                "no key was pinned: trust comes from the ledger's own first entry; pin a key with --trusted-key",
            );
            self.find(f);
            return;
        }
        let pinned: Vec<&Origin> = self.opts.trusted.iter().map(|k| k.origin()).collect();
        match header {
            Some(h) if pinned.contains(&&h) => self.origin = Some(h),
            Some(h) => {
                let f = Finding::general(
                    Class::UnknownKey,
                    format!("the bundle is for ledger {h}, and no pinned key belongs to it"),
                )
                .values(pinned[0], &h);
                self.find(f);
                self.origin = Some(h);
            }
            None => self.origin = Some(pinned[0].clone()),
        }
        self.summary.origin = self.origin.as_ref().map(|o| o.to_string());
    }

    fn on_prefix(&mut self, size: u64, peaks: &[std::borrow::Cow<'_, str>]) {
        if self.entries_started || self.range.size() != 0 {
            let f = Finding::general(
                Class::Modified,
                format!("line {}: prefix line after entries", self.lines),
            );
            self.find(f);
            return;
        }
        let hashes: Option<Vec<Hash>> = peaks.iter().map(|p| Hash::from_b64(p)).collect();
        match hashes.and_then(|h| CompactRange::from_peaks(size, h)) {
            Some(cr) => {
                self.range = cr;
                self.start_seq = size;
                self.expected_seq = size;
                self.note_state_size();
            }
            None => {
                let f =
                    Finding::general(Class::Modified, "prefix peaks do not match the prefix size");
                self.find(f);
            }
        }
    }

    fn note_state_size(&mut self) {
        if let Some(st) = &self.opts.state
            && st.size == self.range.size()
        {
            self.state_root_seen = Some(self.range.root());
        }
    }

    fn on_entry(&mut self, line: EntryInput<'_>) {
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
            #[derive(serde::Deserialize)]
            struct Created {
                vkey: String,
            }
            let named = payload
                .and_then(|p| serde_json::from_str::<Created>(p).ok())
                .and_then(|c| Vkey::parse(&c.vkey).ok());
            match named {
                Some(k) if self.opts.trusted.is_empty() || self.opts.trusted.contains(&k) => {
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
            .find(|k| k.key_id() == entry.key_id)
        {
            self.keys.spans.push((seq, k.clone()));
        }
    }

    fn on_checkpoint(&mut self, text: &str) {
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

    /// Keys allowed to sign a checkpoint of `size`: the key of its last entry or the next one.
    fn checkpoint_keys(&self, size: u64) -> Vec<Vkey> {
        let mut v = Vec::new();
        for s in [size.saturating_sub(1), size] {
            if let Some(k) = self.keys.key_for(s)
                && !v.contains(k)
            {
                v.push(k.clone());
            }
        }
        v
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
    fn check_signature_only(&mut self, p: &PendingCheckpoint) -> bool {
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

    fn check_checkpoint(&mut self, p: PendingCheckpoint, root: Hash, time_ns: Option<i64>) {
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

    pub fn finish(mut self) -> Report {
        if !self.header_seen {
            self.find(Finding::general(
                Class::Modified,
                "the bundle is empty: no header line",
            ));
        }
        // Checkpoints larger than the entries given.
        let pending = std::mem::take(&mut self.pending);
        for (size, list) in pending {
            for p in list {
                self.check_signature_only(&p);
                let f = Finding::at_size(
                    Class::Incomplete,
                    size,
                    "checkpoint covers more entries than the bundle holds",
                )
                .values(size, self.range.size());
                self.find(f);
            }
        }
        // Gaps never filled.
        let gaps = std::mem::take(&mut self.gaps);
        for (start, end) in gaps {
            let detail = if end - start == 1 {
                "sequence number is absent".to_owned()
            } else {
                format!("sequence numbers {start}..={} are absent", end - 1)
            };
            self.find(Finding::at_seq(Class::Missing, start, detail));
        }
        // Payloads absent: logged erasures are fine, others are missing evidence.
        let missing = std::mem::take(&mut self.missing_payloads);
        for seq in missing {
            if self.erased.contains(&seq) {
                self.summary.redacted += 1;
                self.find(Finding::at_seq(
                    Class::Redacted,
                    seq,
                    "payload erased; the erasure is logged",
                ));
            } else {
                self.find(Finding::at_seq(
                    Class::Missing,
                    seq,
                    "payload and salt are absent and no payload.erased entry names this seq",
                ));
            }
        }
        // Signatures.
        let sigs = std::mem::replace(&mut self.sigs, SignatureChecker::new(1));
        self.summary.signatures = sigs.checked();
        for seq in sigs.finish() {
            self.find(Finding::at_seq(
                Class::BadSignature,
                seq,
                "entry signature does not verify",
            ));
        }
        self.check_coverage();
        self.check_state();
        self.check_consistency_lines();
        self.check_freshness();

        let exit_code = self
            .findings
            .list
            .iter()
            .map(|f| f.class.exit_code())
            .chain(self.findings.suppressed.keys().map(|c| c.exit_code()))
            .fold(0, worse);
        let new_state = match (&self.summary.newest, exit_code) {
            (Some(n), 0) if self.opts.state.as_ref().is_none_or(|s| s.size <= n.size) => {
                Some(TrustedState {
                    size: n.size,
                    root: n.root,
                })
            }
            _ => None,
        };
        self.summary.keys = self
            .keys
            .spans
            .iter()
            .map(|(s, k)| (*s, k.to_string()))
            .collect();
        let mut findings = self.findings.list;
        findings.sort_by_key(|f| {
            (
                f.class.exit_code() == 0,
                f.seq.or(f.size).unwrap_or(0),
                f.class,
            )
        });
        Report {
            findings,
            suppressed: self.findings.suppressed,
            summary: self.summary,
            exit_code,
            new_state,
        }
    }

    fn check_coverage(&mut self) {
        let entries_end = self.range.size();
        let has_entries = self.summary.first_seq.is_some();
        match &self.summary.newest {
            None if has_entries => {
                self.summary.covered_to = None;
                let f =
                    Finding::general(Class::Incomplete, "no valid checkpoint covers the entries");
                self.find(f);
            }
            None => {
                let f = Finding::general(
                    Class::Incomplete,
                    "the bundle holds no entries and no checkpoint",
                );
                self.find(f);
            }
            Some(n) => {
                let n_size = n.size;
                self.summary.covered_to = Some(n_size);
                if entries_end > n_size {
                    let f = Finding::at_size(
                        Class::Incomplete,
                        n_size,
                        format!(
                            "entries {n_size}..={} come after the newest checkpoint and are not covered",
                            entries_end - 1
                        ),
                    );
                    self.find(f);
                }
            }
        }
    }

    fn check_state(&mut self) {
        let Some(state) = self.opts.state.clone() else {
            return;
        };
        let Some(newest) = self.summary.newest.clone() else {
            if state.size > 0 {
                let f = Finding::at_size(
                    Class::Rollback,
                    state.size,
                    "no checkpoint verified, but the saved state has one",
                )
                .values(state.size, 0);
                self.find(f);
            }
            return;
        };
        if newest.size < state.size {
            let f = Finding::at_size(
                Class::Rollback,
                newest.size,
                "the newest checkpoint is smaller than the saved state",
            )
            .values(state.size, newest.size);
            self.find(f);
            return;
        }
        if newest.size == state.size {
            if newest.root != state.root {
                let f = Finding::at_size(
                    Class::Fork,
                    state.size,
                    "same size as the saved state, different root",
                )
                .values(state.root.to_b64(), newest.root.to_b64());
                self.find(f);
            }
            return;
        }
        if let Some(root) = self.state_root_seen {
            if root != state.root {
                let f = Finding::at_size(
                    Class::Fork,
                    state.size,
                    "the entries give a different root at the saved state's size",
                )
                .values(state.root.to_b64(), root.to_b64());
                self.find(f);
            }
            return;
        }
        // The bundle starts after the saved state: a consistency proof must connect them.
        let proven = self.consistency.iter().any(|(from, to, proof)| {
            *from == state.size
                && self.verified_roots.get(to).is_some_and(|r| {
                    verify_consistency(state.size, *to, &state.root, r, proof).is_ok()
                })
        });
        if !proven {
            let f = Finding::at_size(
                Class::Fork,
                state.size,
                "no valid consistency proof connects the saved state to this bundle's checkpoints",
            );
            self.find(f);
        }
    }

    fn check_consistency_lines(&mut self) {
        let lines = std::mem::take(&mut self.consistency);
        for (from, to, proof) in &lines {
            let old = self.verified_roots.get(from).copied().or_else(|| {
                self.opts
                    .state
                    .as_ref()
                    .filter(|s| s.size == *from)
                    .map(|s| s.root)
            });
            let (Some(old), Some(new)) = (old, self.verified_roots.get(to).copied()) else {
                continue;
            };
            if let Err(e) = verify_consistency(*from, *to, &old, &new, proof) {
                let is_state = self.opts.state.as_ref().is_some_and(|s| s.size == *from);
                if !is_state {
                    let f = Finding::at_size(
                        Class::Modified,
                        *to,
                        format!("consistency proof from {from} fails: {e}"),
                    );
                    self.find(f);
                }
            }
        }
    }

    fn check_freshness(&mut self) {
        let Some(max_age) = self.opts.max_age_ns else {
            return;
        };
        match &self.summary.newest {
            None => {}
            Some(n) => {
                let age = self.opts.now_ns.saturating_sub(n.time_ns);
                if age > max_age {
                    let f = Finding::at_size(
                        Class::Stale,
                        n.size,
                        "the newest checkpoint covers nothing newer than the maximum age",
                    )
                    .values(
                        format!("age <= {}s", max_age / 1_000_000_000),
                        format!("age {}s", age / 1_000_000_000),
                    );
                    self.find(f);
                }
            }
        }
    }
}
