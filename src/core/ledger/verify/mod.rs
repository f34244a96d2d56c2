//! The streaming ledger verifier (FORMAT.md "Verification"): one pass over bundle lines, O(log n)
//! tree state, signatures checked on all cores, findings classified exactly as the format says.
//!
//! Pure: lines go in, a report comes out. Reading files, the clock and printing are the caller's.
//!
//! `mod.rs` holds the verifier's state and reads the lines; `entries` checks each entry,
//! `checkpoints` each checkpoint, `finish` what only the end of the pass can tell; `findings` is
//! what it reports and `state` what it remembers besides the tree.

mod checkpoints;
mod entries;
mod findings;
mod finish;
mod state;
mod witnessed;

pub use findings::{Class, Finding, Options, Report, Summary, TrustedState, VerifiedCheckpoint};
pub use witnessed::unwitnessed;

use super::bundle::{EntryLine, Line};
use super::hash::{Hash, unb64};
use super::keys::Origin;
use super::merkle::CompactRange;
use super::sigcheck::SignatureChecker;
use checkpoints::PendingCheckpoint;
use findings::Findings;
pub use state::KeyHistory;
use state::RootWindow;
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
}
