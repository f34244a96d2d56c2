//! C2SP tlog-policy (https://c2sp.org/tlog-policy): which logs and witnesses are trusted and how
//! many witnesses must cosign a checkpoint (the quorum), and the check of a checkpoint note
//! against it.
//!
//! ```text
//! log <vkey> [<url>]
//! witness <name> <vkey> [<url>]
//! group <name> all|any|<k> <name>...
//! quorum <name>|none
//! ```
//! Names are defined before use, each name is a group member at most once in the whole file (so a
//! witness counts towards the quorum in one way only), and `none` is reserved.

use super::cosign::{CosignerKey, valid_cosignatures};
use super::keys::{KeyId, Vkey};
use super::note::{Checkpoint, Note, NoteVerdict};
use std::collections::{BTreeMap, BTreeSet};

/// At least the 32 of each that the spec asks implementations to support.
pub const MAX_LOGS: usize = 64;
pub const MAX_WITNESSES: usize = 64;
pub const MAX_GROUPS: usize = 64;
/// A policy file larger than this is not a policy file.
pub const MAX_POLICY_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("policy file is larger than {MAX_POLICY_BYTES} bytes")]
    TooLarge,
    #[error("policy line {line}: {msg}")]
    Line { line: usize, msg: String },
    #[error("policy has no quorum line (exactly one is required; use `quorum none` for none)")]
    NoQuorum,
}

/// Why a note could not be checked at all (as opposed to a quorum not being met).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyCheckError {
    #[error("checkpoint note: {0}")]
    Note(String),
    #[error("checkpoint is not signed by any log the policy lists")]
    UnknownLog,
    #[error("checkpoint's signature by log key {0} does not verify")]
    BadLogSignature(KeyId),
    #[error("{0}")]
    BadCosignature(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyWitness {
    pub name: String,
    pub key: CosignerKey,
    pub url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyLog {
    pub key: Vkey,
    pub url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Member {
    Witness(usize),
    Group(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    threshold: usize,
    members: Vec<Member>,
}

/// A parsed tlog-policy. Built only by [`Policy::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    logs: Vec<PolicyLog>,
    witnesses: Vec<PolicyWitness>,
    groups: Vec<Group>,
    /// `None` is `quorum none`.
    quorum: Option<Member>,
}

/// The outcome of checking one checkpoint note against a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyVerdict {
    /// The checkpoint body (origin, size, root) the note carries.
    pub checkpoint: Checkpoint,
    /// Whether the valid cosignatures meet the quorum.
    pub quorum_met: bool,
    /// Policy names of the witnesses with a valid cosignature, in policy order.
    pub cosigned: Vec<String>,
    /// Policy names of the witnesses without one, in policy order.
    pub missing: Vec<String>,
}

impl Policy {
    /// Parses a policy file strictly; errors name the line.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::TooLarge);
        }
        let mut b = Builder::default();
        for (i, line) in text.split('\n').enumerate() {
            let err = |msg: String| PolicyError::Line { line: i + 1, msg };
            if let Some(c) = line.bytes().find(|&c| c < 0x20 && c != b'\t' || c == 0x7f) {
                return Err(err(format!("control character {c:#04x} is not allowed")));
            }
            // Whitespace is ASCII space and tab only.
            let words: Vec<&str> = line.split([' ', '\t']).filter(|w| !w.is_empty()).collect();
            match words.first() {
                None => {}
                Some(w) if w.starts_with('#') => {}
                Some(_) => b.line(&words).map_err(err)?,
            }
        }
        if !b.quorum_seen {
            return Err(PolicyError::NoQuorum);
        }
        Ok(Policy {
            logs: b.logs,
            witnesses: b.witnesses,
            groups: b.groups,
            quorum: b.quorum,
        })
    }

    pub fn logs(&self) -> &[PolicyLog] {
        &self.logs
    }

    pub fn witnesses(&self) -> &[PolicyWitness] {
        &self.witnesses
    }

    /// Whether the policy asks for any cosignature at all (`quorum none` does not).
    pub fn requires_cosignatures(&self) -> bool {
        self.quorum.is_some()
    }

    /// Whether the witnesses marked true in `cosigned` (indexed like [`Policy::witnesses`])
    /// meet the quorum.
    pub fn quorum_met(&self, cosigned: &[bool]) -> bool {
        let Some(quorum) = self.quorum else {
            return true;
        };
        // Groups only name earlier groups, so one pass in definition order settles them all.
        let mut groups_ok: Vec<bool> = Vec::with_capacity(self.groups.len());
        let ok = |m: &Member, groups_ok: &[bool]| match *m {
            Member::Witness(w) => cosigned.get(w).copied().unwrap_or(false),
            Member::Group(g) => groups_ok.get(g).copied().unwrap_or(false),
        };
        for g in &self.groups {
            let n = g.members.iter().filter(|m| ok(m, &groups_ok)).count();
            groups_ok.push(n >= g.threshold);
        }
        ok(&quorum, &groups_ok)
    }

    /// Checks a checkpoint note: when the policy lists logs, one of them must have signed it
    /// (a failing signature by a listed key refuses the note); when it lists none, the caller
    /// must check the log signature itself. Then counts the witnesses whose cosignature over
    /// the note's text verifies. A line that claims a policy witness's key but fails refuses
    /// the note, as a signed note with a failing known signature is malformed.
    pub fn check(&self, note_text: &str) -> Result<PolicyVerdict, PolicyCheckError> {
        let note = Note::parse(note_text).map_err(|e| PolicyCheckError::Note(e.to_string()))?;
        let checkpoint = Checkpoint::parse_body(&note.text)
            .map_err(|e| PolicyCheckError::Note(e.to_string()))?;
        if !self.logs.is_empty() {
            let keys: Vec<&Vkey> = self
                .logs
                .iter()
                .map(|l| &l.key)
                .filter(|k| k.origin() == &checkpoint.origin)
                .collect();
            match note.verify(keys.iter().copied()) {
                NoteVerdict::Valid(_) => {}
                NoteVerdict::BadSignature(id) => return Err(PolicyCheckError::BadLogSignature(id)),
                NoteVerdict::NoKnownKey => return Err(PolicyCheckError::UnknownLog),
            }
        }
        let mut flags = Vec::with_capacity(self.witnesses.len());
        let (mut cosigned, mut missing) = (Vec::new(), Vec::new());
        for w in &self.witnesses {
            let valid =
                valid_cosignatures(&note, &w.key).map_err(PolicyCheckError::BadCosignature)?;
            flags.push(!valid.is_empty());
            if valid.is_empty() {
                missing.push(w.name.clone());
            } else {
                cosigned.push(w.name.clone());
            }
        }
        Ok(PolicyVerdict {
            checkpoint,
            quorum_met: self.quorum_met(&flags),
            cosigned,
            missing,
        })
    }
}

#[derive(Default)]
struct Builder {
    logs: Vec<PolicyLog>,
    witnesses: Vec<PolicyWitness>,
    groups: Vec<Group>,
    names: BTreeMap<String, Member>,
    /// Names already listed as a group member somewhere.
    used: BTreeSet<String>,
    quorum: Option<Member>,
    quorum_seen: bool,
    /// Public keys seen (log or witness): the spec calls two vkeys duplicate when they wrap the
    /// same key, whatever their names.
    keys: BTreeSet<[u8; 32]>,
}

impl Builder {
    fn line(&mut self, w: &[&str]) -> Result<(), String> {
        match w[0] {
            "log" => self.log(&w[1..]),
            "witness" => self.witness(&w[1..]),
            "group" => self.group(&w[1..]),
            "quorum" => self.quorum(&w[1..]),
            other => Err(format!(
                "unknown keyword {other:?} (expected log, witness, group or quorum)"
            )),
        }
    }

    fn new_key(&mut self, pk: [u8; 32]) -> Result<(), String> {
        if self.keys.insert(pk) {
            Ok(())
        } else {
            Err("duplicate key: this public key is already listed".into())
        }
    }

    fn new_name(&self, name: &str) -> Result<(), String> {
        if name == "none" {
            return Err("the name `none` is reserved".into());
        }
        if self.names.contains_key(name) {
            return Err(format!("name {name:?} is already defined"));
        }
        Ok(())
    }

    fn log(&mut self, w: &[&str]) -> Result<(), String> {
        let (vkey, url) = match w {
            [v] => (v, None),
            [v, u] => (v, Some((*u).to_owned())),
            _ => return Err("expected `log <vkey> [<url>]`".into()),
        };
        if self.logs.len() == MAX_LOGS {
            return Err(format!("more than {MAX_LOGS} logs"));
        }
        let key = Vkey::parse(vkey).map_err(|e| format!("log key: {e}"))?;
        self.new_key(key.public().to_bytes())?;
        self.logs.push(PolicyLog { key, url });
        Ok(())
    }

    fn witness(&mut self, w: &[&str]) -> Result<(), String> {
        let (name, vkey, url) = match w {
            [n, v] => (n, v, None),
            [n, v, u] => (n, v, Some((*u).to_owned())),
            _ => return Err("expected `witness <name> <vkey> [<url>]`".into()),
        };
        self.new_name(name)?;
        if self.witnesses.len() == MAX_WITNESSES {
            return Err(format!("more than {MAX_WITNESSES} witnesses"));
        }
        let key = CosignerKey::parse(vkey).map_err(|e| format!("witness {name}: {e}"))?;
        self.new_key(key.public().to_bytes())?;
        self.names
            .insert((*name).to_owned(), Member::Witness(self.witnesses.len()));
        self.witnesses.push(PolicyWitness {
            name: (*name).to_owned(),
            key,
            url,
        });
        Ok(())
    }

    fn group(&mut self, w: &[&str]) -> Result<(), String> {
        let [name, k, members @ ..] = w else {
            return Err("expected `group <name> all|any|<k> <name>...`".into());
        };
        if members.is_empty() {
            return Err(format!("group {name} lists no members"));
        }
        self.new_name(name)?;
        if self.groups.len() == MAX_GROUPS {
            return Err(format!("more than {MAX_GROUPS} groups"));
        }
        let n = members.len();
        let threshold = match *k {
            "all" => n,
            "any" => 1,
            k => parse_threshold(k, n)?,
        };
        let mut resolved = Vec::with_capacity(n);
        for m in members {
            let member = self.resolve(m)?;
            if !self.used.insert((*m).to_owned()) {
                return Err(format!("{m:?} is already a member of a group"));
            }
            resolved.push(member);
        }
        self.names
            .insert((*name).to_owned(), Member::Group(self.groups.len()));
        self.groups.push(Group {
            threshold,
            members: resolved,
        });
        Ok(())
    }

    fn resolve(&self, name: &str) -> Result<Member, String> {
        if name == "none" {
            return Err("`none` cannot be a group member".into());
        }
        self.names
            .get(name)
            .copied()
            .ok_or_else(|| format!("{name:?} is not defined on an earlier line"))
    }

    fn quorum(&mut self, w: &[&str]) -> Result<(), String> {
        let [name] = w else {
            return Err("expected `quorum <name>`".into());
        };
        if self.quorum_seen {
            return Err("a second quorum line (exactly one is allowed)".into());
        }
        self.quorum = if *name == "none" {
            None
        } else {
            Some(self.resolve(name)?)
        };
        self.quorum_seen = true;
        Ok(())
    }
}

/// A decimal k with 1 ≤ k ≤ n, no sign and no leading zero.
fn parse_threshold(k: &str, n: usize) -> Result<usize, String> {
    let canonical = !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()) && !k.starts_with('0');
    let value = if canonical {
        k.parse::<usize>().ok()
    } else {
        None
    };
    match value {
        Some(v) if v <= n => Ok(v),
        _ => Err(format!(
            "threshold {k:?} must be all, any, or a decimal k with 1 <= k <= {n}"
        )),
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
