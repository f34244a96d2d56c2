//! C2SP signed notes (https://c2sp.org/signed-note) and tlog checkpoints (https://c2sp.org/tlog-checkpoint).

use super::hash::{Hash, b64, unb64};
use super::keys::{KeyId, LedgerKey, Origin, Vkey};

/// The signature-line prefix: an em dash (U+2014) and a space.
const SIG_PREFIX: &str = "\u{2014} ";
/// More signature lines than any honest note carries (C2SP asks verifiers to accept at least 16).
pub const MAX_SIGNATURES: usize = 100;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NoteError {
    #[error("note contains a control character other than newline")]
    ControlCharacter,
    #[error("note has no blank line separating text and signatures")]
    NoSeparator,
    #[error("note has no signature lines")]
    NoSignatures,
    #[error("note has more than {MAX_SIGNATURES} signature lines")]
    TooManySignatures,
    #[error("malformed signature line: {0}")]
    BadSignatureLine(String),
    #[error("checkpoint body is malformed: {0}")]
    BadCheckpoint(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub key_id: KeyId,
    pub signature: Vec<u8>,
}

/// A parsed signed note: the signed text (ending in a newline) and its signature lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub text: String,
    pub signatures: Vec<NoteSignature>,
}

impl Note {
    pub fn parse(note: &str) -> Result<Note, NoteError> {
        if note.chars().any(|c| c.is_control() && c != '\n') {
            return Err(NoteError::ControlCharacter);
        }
        let split = note.rfind("\n\n").ok_or(NoteError::NoSeparator)?;
        let text = &note[..split + 1];
        let sigs = &note[split + 2..];
        if sigs.is_empty() {
            return Err(NoteError::NoSignatures);
        }
        let Some(sigs) = sigs.strip_suffix('\n') else {
            return Err(NoteError::BadSignatureLine(
                "the note must end with a newline".into(),
            ));
        };
        let mut signatures = Vec::new();
        for line in sigs.split('\n') {
            if signatures.len() == MAX_SIGNATURES {
                return Err(NoteError::TooManySignatures);
            }
            let rest = line
                .strip_prefix(SIG_PREFIX)
                .ok_or_else(|| NoteError::BadSignatureLine(line.chars().take(40).collect()))?;
            let (name, sig) = rest
                .split_once(' ')
                .ok_or_else(|| NoteError::BadSignatureLine("missing key name".into()))?;
            if name.is_empty() || name.contains('+') || sig.contains(' ') {
                return Err(NoteError::BadSignatureLine(format!(
                    "bad key name {name:?}"
                )));
            }
            let raw = unb64(sig)
                .ok_or_else(|| NoteError::BadSignatureLine("signature is not base64".into()))?;
            if raw.len() < 5 {
                return Err(NoteError::BadSignatureLine("signature too short".into()));
            }
            signatures.push(NoteSignature {
                name: name.to_owned(),
                key_id: KeyId([raw[0], raw[1], raw[2], raw[3]]),
                signature: raw[4..].to_vec(),
            });
        }
        Ok(Note {
            text: text.to_owned(),
            signatures,
        })
    }

    /// Signs `text` (which must end in a newline) and writes the note.
    pub fn sign(text: &str, key: &LedgerKey) -> String {
        let mut raw = Vec::with_capacity(68);
        raw.extend_from_slice(&key.key_id().0);
        raw.extend_from_slice(&key.sign(text.as_bytes()));
        format!("{text}\n{SIG_PREFIX}{} {}\n", key.origin(), b64(&raw))
    }

    /// Checks the signatures against `keys` the way C2SP says: lines from unknown keys are
    /// ignored, a known key whose signature fails rejects the note.
    pub fn verify<'a>(&self, keys: impl IntoIterator<Item = &'a Vkey> + Clone) -> NoteVerdict {
        let mut valid = Vec::new();
        for sig in &self.signatures {
            let mut known = keys
                .clone()
                .into_iter()
                .filter(|k| k.origin().as_str() == sig.name && k.key_id() == sig.key_id)
                .peekable();
            if known.peek().is_none() {
                continue;
            }
            if known.any(|k| k.verify(self.text.as_bytes(), &sig.signature)) {
                valid.push(sig.key_id);
            } else {
                return NoteVerdict::BadSignature(sig.key_id);
            }
        }
        if valid.is_empty() {
            NoteVerdict::NoKnownKey
        } else {
            NoteVerdict::Valid(valid)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoteVerdict {
    /// At least one known key signed it and none failed; the ids that verified.
    Valid(Vec<KeyId>),
    /// A known key's signature failed.
    BadSignature(KeyId),
    /// No signature from a key the caller knows.
    NoKnownKey,
}

/// A tlog checkpoint body: origin, tree size and root; no extension lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: Origin,
    pub size: u64,
    pub root: Hash,
}

impl Checkpoint {
    pub fn body(&self) -> String {
        format!("{}\n{}\n{}\n", self.origin, self.size, self.root.to_b64())
    }

    /// Parses the note text of a checkpoint strictly: three lines, a canonical decimal size.
    pub fn parse_body(text: &str) -> Result<Checkpoint, NoteError> {
        let Some(text) = text.strip_suffix('\n') else {
            return Err(NoteError::BadCheckpoint("body must end with a newline"));
        };
        let lines: Vec<&str> = text.split('\n').collect();
        if lines.len() != 3 {
            return Err(NoteError::BadCheckpoint(
                "body must be exactly origin, size and root (no extension lines)",
            ));
        }
        let origin =
            Origin::parse(lines[0]).map_err(|_| NoteError::BadCheckpoint("invalid origin line"))?;
        let size_ok = !lines[1].is_empty()
            && lines[1].bytes().all(|b| b.is_ascii_digit())
            && (lines[1] == "0" || !lines[1].starts_with('0'));
        if !size_ok {
            return Err(NoteError::BadCheckpoint("size is not a canonical decimal"));
        }
        let size = lines[1]
            .parse()
            .map_err(|_| NoteError::BadCheckpoint("size is out of range"))?;
        let root = Hash::from_b64(lines[2])
            .ok_or(NoteError::BadCheckpoint("root is not base64 of 32 bytes"))?;
        Ok(Checkpoint { origin, size, root })
    }

    pub fn sign(&self, key: &LedgerKey) -> String {
        Note::sign(&self.body(), key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from the C2SP signed-note specification.
    #[test]
    fn c2sp_example_verifies() {
        let vkey =
            Vkey::parse("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
                .unwrap();
        let note = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
        let parsed = Note::parse(note).unwrap();
        assert_eq!(
            parsed.verify([&vkey]),
            NoteVerdict::Valid(vec![vkey.key_id()])
        );
        let tampered = note.replace("cryptography", "cryptographY");
        assert_eq!(
            Note::parse(&tampered).unwrap().verify([&vkey]),
            NoteVerdict::BadSignature(vkey.key_id())
        );
    }

    #[test]
    fn checkpoint_body_is_strict() {
        let ok = "o.example/x\n10\n5GKfYVZSYkZyB0eZQbcwAB/s+ajki320ebtbj5asNXU=\n";
        assert_eq!(Checkpoint::parse_body(ok).unwrap().size, 10);
        for bad in [
            "o.example/x\n010\n5GKfYVZSYkZyB0eZQbcwAB/s+ajki320ebtbj5asNXU=\n",
            "o.example/x\n+10\n5GKfYVZSYkZyB0eZQbcwAB/s+ajki320ebtbj5asNXU=\n",
            "o.example/x\n10\n5GKfYVZSYkZyB0eZQbcwAB/s+ajki320ebtbj5asNXU=\nextra\n",
            "o.example/x\n10\n",
            "o.example/x\n10\n5GKfYVZSYkZyB0eZQbcwAB/s+ajki320ebtbj5asNXU=",
        ] {
            assert!(Checkpoint::parse_body(bad).is_err(), "{bad:?}");
        }
    }
}
