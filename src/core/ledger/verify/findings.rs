//! What the verifier reports: the classes of finding FORMAT.md defines, each finding, the
//! options a run takes, its summary and its verdict.

use crate::core::ledger::hash::Hash;
use crate::core::ledger::keys::Vkey;
use std::collections::{BTreeMap, HashMap};

/// Findings kept per class; the rest are counted, so a wholly forged bundle cannot exhaust memory.
const MAX_FINDINGS_PER_CLASS: usize = 1000;

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
    /// `--policy`: the checkpoint the verification relies on lacks the tlog-policy's quorum of
    /// valid witness cosignatures.
    Unwitnessed,
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
            Class::Unwitnessed => "UNWITNESSED",
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
    /// The root of every checkpoint whose signature and recomputed root were verified, by size:
    /// what a witness's cosignature must be over to count (`verify --policy`).
    pub verified_roots: BTreeMap<u64, Hash>,
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
pub(super) fn worse(a: i32, b: i32) -> i32 {
    match (a, b) {
        (1, _) | (_, 1) => 1,
        (2, _) | (_, 2) => 2,
        _ => 0,
    }
}

/// The findings of a run, kept up to `MAX_FINDINGS_PER_CLASS` per class and counted beyond.
pub(super) struct Findings {
    pub(super) list: Vec<Finding>,
    pub(super) per_class: HashMap<Class, usize>,
    pub(super) suppressed: BTreeMap<Class, u64>,
}

impl Findings {
    pub(super) fn push(&mut self, f: Finding) {
        let n = self.per_class.entry(f.class).or_default();
        if *n < MAX_FINDINGS_PER_CLASS {
            *n += 1;
            self.list.push(f);
        } else {
            *self.suppressed.entry(f.class).or_default() += 1;
        }
    }
}
