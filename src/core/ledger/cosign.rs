//! C2SP tlog-cosignature, Ed25519 type (https://c2sp.org/tlog-cosignature): witness (cosigner)
//! keys, cosignature lines and their verification over a checkpoint body.
//!
//! A cosignature is an ordinary signed-note signature line whose bytes are
//! `key_id[4] ‖ u64 timestamp ‖ Ed25519 signature[64]`, the signature being over
//! `"cosignature/v1\ntime <timestamp>\n" ‖ checkpoint body`. Its key id uses signature type 0x04,
//! so a cosigner key can never be mistaken for a log key of the same name.

use super::hash::b64;
use super::keys::{KeyError, KeyId, Origin, split_vkey};
use super::note::{Note, NoteError, NoteSignature};
use ed25519_dalek::{Signature, VerifyingKey};
use std::fmt;

/// The C2SP signature type of Ed25519 cosignatures (tlog-cosignature, "cosignature/v1").
pub const ALG_COSIGNATURE_ED25519: u8 = 0x04;
/// The signature-line prefix: an em dash (U+2014) and a space.
const SIG_PREFIX: &str = "\u{2014} ";
/// `timestamped_signature` for Ed25519: u64 timestamp and 64 signature bytes.
const TIMESTAMPED_LEN: usize = 8 + 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CosignError {
    #[error("witness key: {0}")]
    Key(#[from] KeyError),
    #[error(
        "witness key is not an Ed25519 cosignature key (type byte must be 0x04, got {0:#04x}); \
         tlog-cosignature/v1 Ed25519 keys are required"
    )]
    KeyType(u8),
    #[error("malformed cosignature line: {0}")]
    BadLine(String),
    #[error("cosignature timestamp exceeds 2^63-1")]
    TimestampRange,
}

/// A cosigner's public key, from its vkey `<name>+<key id hex>+<b64(0x04 ‖ pk32)>`.
#[derive(Clone, PartialEq, Eq)]
pub struct CosignerKey {
    /// Key names follow the same rules as origins here: printable ASCII, no spaces, no `+`.
    name: Origin,
    key_id: KeyId,
    public: VerifyingKey,
}

impl CosignerKey {
    /// Refuses weak (small-order) keys: anyone could forge "signatures" under them.
    pub fn new(name: Origin, public: VerifyingKey) -> Result<CosignerKey, CosignError> {
        if public.is_weak() {
            return Err(KeyError::WeakKey.into());
        }
        let key_id = KeyId::of_key(name.as_str(), ALG_COSIGNATURE_ED25519, &public);
        Ok(CosignerKey {
            name,
            key_id,
            public,
        })
    }

    /// Strict parse: type 0x04, a valid non-weak point, and a stated key id that matches.
    pub fn parse(s: &str) -> Result<CosignerKey, CosignError> {
        let (name, stated, alg, pk) = split_vkey(s.trim())?;
        let name = Origin::parse(name)?;
        if alg != ALG_COSIGNATURE_ED25519 {
            return Err(CosignError::KeyType(alg));
        }
        let pk: [u8; 32] = pk.try_into().map_err(|_| KeyError::VkeyShape)?;
        let public = VerifyingKey::from_bytes(&pk).map_err(|_| KeyError::VkeyPoint)?;
        let key = CosignerKey::new(name, public)?;
        if key.key_id != stated {
            return Err(KeyError::KeyIdMismatch {
                stated: stated.to_hex(),
                computed: key.key_id.to_hex(),
            }
            .into());
        }
        Ok(key)
    }

    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    pub fn public(&self) -> &VerifyingKey {
        &self.public
    }

    /// Whether a signature line claims to be from this key (same name and key id); lines that
    /// do not are ignored, as C2SP asks, rather than failed.
    pub fn claims(&self, name: &str, key_id: KeyId) -> bool {
        self.name.as_str() == name && self.key_id == key_id
    }

    /// Whether `cosig` is this key's valid cosignature over the checkpoint `body` (the note
    /// text including its final newline, without signature lines). `verify_strict` refuses
    /// non-canonical and small-order signature components.
    pub fn verify(&self, body: &str, cosig: &Cosignature) -> bool {
        if !self.claims(&cosig.name, cosig.key_id) || cosig.timestamp > i64::MAX as u64 {
            return false;
        }
        let sig = Signature::from_bytes(&cosig.signature);
        self.public
            .verify_strict(&cosigned_message(body, cosig.timestamp), &sig)
            .is_ok()
    }
}

impl fmt::Display for CosignerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = Vec::with_capacity(33);
        raw.push(ALG_COSIGNATURE_ED25519);
        raw.extend_from_slice(self.public.as_bytes());
        write!(f, "{}+{}+{}", self.name, self.key_id, b64(&raw))
    }
}

impl fmt::Debug for CosignerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CosignerKey({self})")
    }
}

/// The message an Ed25519 cosigner signs: `"cosignature/v1\ntime <ts>\n" ‖ body`.
pub fn cosigned_message(body: &str, timestamp: u64) -> Vec<u8> {
    let mut m = Vec::with_capacity(body.len() + 40);
    m.extend_from_slice(b"cosignature/v1\ntime ");
    m.extend_from_slice(timestamp.to_string().as_bytes());
    m.push(b'\n');
    m.extend_from_slice(body.as_bytes());
    m
}

/// One parsed cosignature line (not yet verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cosignature {
    pub name: String,
    pub key_id: KeyId,
    /// POSIX seconds at which the witness cosigned.
    pub timestamp: u64,
    pub signature: [u8; 64],
}

impl Cosignature {
    /// Reads the bytes after the key id of a note signature as a `timestamped_signature`.
    pub fn from_note_signature(sig: &NoteSignature) -> Result<Cosignature, CosignError> {
        if sig.signature.len() != TIMESTAMPED_LEN {
            return Err(CosignError::BadLine(format!(
                "signature of {} must be 4 + 8 + 64 bytes, got 4 + {}",
                sig.name,
                sig.signature.len()
            )));
        }
        let (ts, rest) = sig.signature.split_at(8);
        let mut ts8 = [0u8; 8];
        ts8.copy_from_slice(ts);
        let timestamp = u64::from_be_bytes(ts8);
        if timestamp > i64::MAX as u64 {
            return Err(CosignError::TimestampRange);
        }
        let mut signature = [0u8; 64];
        signature.copy_from_slice(rest);
        Ok(Cosignature {
            name: sig.name.clone(),
            key_id: sig.key_id,
            timestamp,
            signature,
        })
    }

    /// Parses one line `— <name> <b64(key_id ‖ u64 timestamp ‖ sig64)>` (with or without its
    /// final newline).
    pub fn parse_line(line: &str) -> Result<Cosignature, CosignError> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        if line.contains('\n') {
            return Err(CosignError::BadLine("more than one line".into()));
        }
        // Reuse the note parser's strict reading of a signature line by parsing a minimal note.
        let note = Note::parse(&format!("x\n\n{line}\n"))
            .map_err(|e: NoteError| CosignError::BadLine(e.to_string()))?;
        match note.signatures.as_slice() {
            [sig] => Cosignature::from_note_signature(sig),
            _ => Err(CosignError::BadLine(
                "expected exactly one signature".into(),
            )),
        }
    }

    /// The signature line, ending in a newline.
    pub fn to_line(&self) -> String {
        let mut raw = Vec::with_capacity(4 + TIMESTAMPED_LEN);
        raw.extend_from_slice(&self.key_id.0);
        raw.extend_from_slice(&self.timestamp.to_be_bytes());
        raw.extend_from_slice(&self.signature);
        format!("{SIG_PREFIX}{} {}\n", self.name, b64(&raw))
    }
}

/// A note split into the log's signature lines and the rest (candidate cosignatures).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitNote {
    pub note: Note,
    /// Signature lines named after the log's origin.
    pub log: Vec<NoteSignature>,
    /// Every other signature line, in order.
    pub others: Vec<NoteSignature>,
}

/// Parses `note_text` and splits its signature lines by whether they carry the log's name
/// (`origin`). Nothing is verified here.
pub fn split_note(note_text: &str, origin: &str) -> Result<SplitNote, NoteError> {
    let note = Note::parse(note_text)?;
    let (log, others) = note
        .signatures
        .iter()
        .cloned()
        .partition(|s| s.name == origin);
    Ok(SplitNote { note, log, others })
}

/// The cosignatures in `note` that `key` made and that verify over the note's text; the valid
/// ones only, each with its line. A line that claims the key but fails is reported as `Err`.
pub fn valid_cosignatures(note: &Note, key: &CosignerKey) -> Result<Vec<Cosignature>, String> {
    let mut out = Vec::new();
    for sig in note
        .signatures
        .iter()
        .filter(|s| key.claims(&s.name, s.key_id))
    {
        let cosig = Cosignature::from_note_signature(sig).map_err(|e| e.to_string())?;
        if !key.verify(&note.text, &cosig) {
            return Err(format!(
                "cosignature from {} ({}) does not verify",
                key.name(),
                key.key_id()
            ));
        }
        out.push(cosig);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer as _, SigningKey};

    fn key(seed: u8, name: &str) -> (SigningKey, CosignerKey) {
        let sk = SigningKey::from_bytes(&[seed; 32]);
        let k = CosignerKey::new(Origin::parse(name).unwrap(), sk.verifying_key()).unwrap();
        (sk, k)
    }

    fn cosign(sk: &SigningKey, k: &CosignerKey, body: &str, ts: u64) -> Cosignature {
        Cosignature {
            name: k.name().to_owned(),
            key_id: k.key_id(),
            timestamp: ts,
            signature: sk.sign(&cosigned_message(body, ts)).to_bytes(),
        }
    }

    const BODY: &str =
        "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";

    /// The spec's example cosignature line: key id 8d66cf3f... and the timestamp 1679315147 that
    /// the spec's example message shows (`time 1679315147`).
    #[test]
    fn spec_example_line_parses() {
        let line = "\u{2014} witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==";
        let c = Cosignature::parse_line(line).unwrap();
        assert_eq!(c.name, "witness.example.com/w1");
        assert_eq!(c.key_id.to_hex(), "8d66cf3f");
        assert_eq!(c.timestamp, 1_679_315_147);
        assert_eq!(c.to_line(), format!("{line}\n"));
    }

    /// The message layout is the spec's example, byte for byte.
    #[test]
    fn message_is_the_spec_layout() {
        let m = cosigned_message(BODY, 1_679_315_147);
        assert_eq!(
            String::from_utf8(m).unwrap(),
            "cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
        );
    }

    /// Key id: `H(name ‖ "\n" ‖ 0x04 ‖ pk)[0..4]`, computed here from the spec's formula with
    /// sha2 directly, and different from the 0x01 id of the same key.
    #[test]
    fn key_id_uses_type_04_and_vkey_round_trips() {
        use sha2::{Digest as _, Sha256};
        let (_, k) = key(7, "witness.example/w1");
        let mut h = Sha256::new();
        h.update(b"witness.example/w1\n\x04");
        h.update(k.public().as_bytes());
        let want = h.finalize();
        assert_eq!(k.key_id().0, want[..4]);
        assert_ne!(k.key_id(), KeyId::compute(&k.name, k.public()));
        let text = k.to_string();
        assert_eq!(CosignerKey::parse(&text).unwrap(), k);
    }

    #[test]
    fn key_parse_is_strict() {
        let (_, k) = key(7, "witness.example/w1");
        let good = k.to_string();
        let b64key = good.splitn(3, '+').nth(2).unwrap().to_owned();
        let wrong_id = format!("witness.example/w1+00000000+{b64key}");
        assert!(matches!(
            CosignerKey::parse(&wrong_id),
            Err(CosignError::Key(KeyError::KeyIdMismatch { .. }))
        ));
        let renamed = good.replace("witness.example/w1", "witness.example/w2");
        assert!(CosignerKey::parse(&renamed).is_err());
        // A log (type 0x01) key is not a cosigner key.
        let log = crate::core::ledger::keys::Vkey::new(k.name.clone(), *k.public()).unwrap();
        assert_eq!(
            CosignerKey::parse(&log.to_string()),
            Err(CosignError::KeyType(0x01))
        );
        // The identity point is weak.
        let mut raw = vec![ALG_COSIGNATURE_ED25519, 1];
        raw.extend_from_slice(&[0u8; 31]);
        assert!(CosignerKey::parse(&format!("w+00000000+{}", b64(&raw))).is_err());
        assert!(CosignerKey::parse("w+0102").is_err());
    }

    #[test]
    fn verify_accepts_own_and_refuses_changes() {
        let (sk, k) = key(7, "witness.example/w1");
        let (sk2, k2) = key(8, "witness.example/w2");
        let c = cosign(&sk, &k, BODY, 1_700_000_000);
        assert!(k.verify(BODY, &c));
        assert!(!k.verify(&BODY.replace("20852163", "20852164"), &c));
        let mut later = c.clone();
        later.timestamp += 1;
        assert!(!k.verify(BODY, &later));
        // A valid cosignature by another key is not ours.
        assert!(!k.verify(BODY, &cosign(&sk2, &k2, BODY, 1)));
        // Same key, our name, but the message signed without the header: refused.
        let mut bare = c.clone();
        bare.signature = sk.sign(BODY.as_bytes()).to_bytes();
        assert!(!k.verify(BODY, &bare));
        let parsed = Cosignature::parse_line(&c.to_line()).unwrap();
        assert_eq!(parsed, c);
    }

    #[test]
    fn lines_are_strict() {
        let (sk, k) = key(7, "witness.example/w1");
        let c = cosign(&sk, &k, BODY, 5);
        let line = c.to_line();
        // A plain note signature (64 bytes, no timestamp) is not a cosignature.
        let mut raw = k.key_id().0.to_vec();
        raw.extend_from_slice(&[0u8; 64]);
        assert!(Cosignature::parse_line(&format!("\u{2014} w {}", b64(&raw))).is_err());
        assert!(Cosignature::parse_line(&line.replace('\u{2014}', "-")).is_err());
        assert!(Cosignature::parse_line(&format!("{line}{line}")).is_err());
        let mut big = c.clone();
        big.timestamp = u64::MAX;
        assert_eq!(
            Cosignature::parse_line(&big.to_line()),
            Err(CosignError::TimestampRange)
        );
    }

    #[test]
    fn split_and_collect_cosignatures() {
        let (sk, k) = key(7, "witness.example/w1");
        let c = cosign(&sk, &k, BODY, 9);
        let mut raw = vec![1, 2, 3, 4];
        raw.extend_from_slice(&[0u8; 64]);
        let log_line = format!("\u{2014} example.com/behind-the-sofa {}\n", b64(&raw));
        let note = format!("{BODY}\n{log_line}{}", c.to_line());
        let split = split_note(&note, "example.com/behind-the-sofa").unwrap();
        assert_eq!(split.log.len(), 1);
        assert_eq!(split.others.len(), 1);
        assert_eq!(
            valid_cosignatures(&split.note, &k).unwrap(),
            vec![c.clone()]
        );
        let (_, other) = key(9, "witness.example/w9");
        assert!(valid_cosignatures(&split.note, &other).unwrap().is_empty());
        let forged = note.replace("20852163", "20852164");
        let parsed = Note::parse(&forged).unwrap();
        assert!(valid_cosignatures(&parsed, &k).is_err());
    }
}
