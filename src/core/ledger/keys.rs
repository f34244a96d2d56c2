//! Ed25519 ledger keys: key ids, C2SP verifier keys (vkeys), private key text, rotation statements.

use super::hash::{Hash, b64, unb64};
use curve25519_dalek::{EdwardsPoint, Scalar};
use ed25519_dalek::hazmat::ExpandedSecretKey;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha512};
use std::fmt;
use zeroize::Zeroizing;

/// The C2SP signature-type byte for Ed25519.
const ALG_ED25519: u8 = 0x01;
const ROTATION_CONTEXT: &[u8] = b"changetrail/key-rotation/v1\n";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("origin must be 1-255 printable ASCII characters without spaces or '+', got {0:?}")]
    BadOrigin(String),
    #[error("verifier key must look like <origin>+<8 hex key id>+<base64 key>")]
    VkeyShape,
    #[error("verifier key is not an Ed25519 key (type byte must be 0x01)")]
    VkeyAlgorithm,
    #[error("verifier key's public key is not a valid Ed25519 point")]
    VkeyPoint,
    #[error("verifier key's public key is weak (small order) and can never be trusted")]
    WeakKey,
    #[error("key id {stated} does not match the key (expected {computed})")]
    KeyIdMismatch { stated: String, computed: String },
    #[error("private key must look like PRIVATE+KEY+<origin>+<8 hex key id>+<base64 key>")]
    PrivateShape,
}

/// The name of one ledger: printable ASCII, no spaces, no `+` (FORMAT.md "Origins and keys").
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Origin(String);

impl Origin {
    pub fn parse(s: &str) -> Result<Origin, KeyError> {
        let ok = !s.is_empty()
            && s.len() <= 255
            && s.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b'+');
        if ok {
            Ok(Origin(s.to_owned()))
        } else {
            Err(KeyError::BadOrigin(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Origin({})", self.0)
    }
}

/// The 4-byte C2SP key id, written as 8 lowercase hex characters in entries.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 4]);

impl KeyId {
    /// `H(origin ‖ 0x0A ‖ 0x01 ‖ pk32)[0..4]`.
    pub fn compute(origin: &Origin, public: &VerifyingKey) -> KeyId {
        KeyId::of_key(origin.as_str(), ALG_ED25519, public)
    }

    /// The C2SP signed-note key id for any signature type: `H(name ‖ 0x0A ‖ type ‖ pk32)[0..4]`
    /// (type 0x01 for note signatures, 0x04 for tlog-cosignature Ed25519).
    pub fn of_key(name: &str, sig_type: u8, public: &VerifyingKey) -> KeyId {
        let h = Hash::of(&[name.as_bytes(), b"\n", &[sig_type], public.as_bytes()]);
        KeyId([h.0[0], h.0[1], h.0[2], h.0[3]])
    }

    /// Exactly 8 lowercase hex characters; anything else is not a key id.
    pub fn parse_hex(s: &str) -> Option<KeyId> {
        if s.len() != 8 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let v = hex::decode(s).ok()?;
        Some(KeyId([v[0], v[1], v[2], v[3]]))
    }

    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.to_hex())
    }
}

/// Splits a C2SP vkey `<name>+<key id hex>+<b64(type ‖ key)>` into name, stated key id, signature
/// type and key bytes; the caller checks the name, the type and the key id.
pub(crate) fn split_vkey(s: &str) -> Result<(&str, KeyId, u8, Vec<u8>), KeyError> {
    // The name and key id contain no '+'; the base64 key may.
    let mut parts = s.splitn(3, '+');
    let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(KeyError::VkeyShape);
    };
    let stated = KeyId::parse_hex(id).ok_or(KeyError::VkeyShape)?;
    let mut raw = unb64(key).ok_or(KeyError::VkeyShape)?;
    if raw.is_empty() {
        return Err(KeyError::VkeyShape);
    }
    let alg = raw.remove(0);
    Ok((name, stated, alg, raw))
}

/// A public ledger key as reviewers pin it: `<origin>+<key id hex>+<b64(0x01 ‖ pk32)>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Vkey {
    origin: Origin,
    key_id: KeyId,
    public: VerifyingKey,
}

impl Vkey {
    pub fn new(origin: Origin, public: VerifyingKey) -> Result<Vkey, KeyError> {
        if public.is_weak() {
            return Err(KeyError::WeakKey);
        }
        let key_id = KeyId::compute(&origin, &public);
        Ok(Vkey {
            origin,
            key_id,
            public,
        })
    }

    /// Strict parse: the stated key id must match the key, weak keys are refused.
    pub fn parse(s: &str) -> Result<Vkey, KeyError> {
        let (name, stated, alg, pk) = split_vkey(s)?;
        let origin = Origin::parse(name)?;
        if alg != ALG_ED25519 {
            return Err(KeyError::VkeyAlgorithm);
        }
        let pk: [u8; 32] = pk.try_into().map_err(|_| KeyError::VkeyShape)?;
        let public = VerifyingKey::from_bytes(&pk).map_err(|_| KeyError::VkeyPoint)?;
        let vkey = Vkey::new(origin, public)?;
        if vkey.key_id != stated {
            return Err(KeyError::KeyIdMismatch {
                stated: stated.to_hex(),
                computed: vkey.key_id.to_hex(),
            });
        }
        Ok(vkey)
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    pub fn public(&self) -> &VerifyingKey {
        &self.public
    }

    /// `verify_strict`: rejects small-order components and non-canonical encodings.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let Ok(sig) = Signature::from_slice(sig) else {
            return false;
        };
        self.public.verify_strict(msg, &sig).is_ok()
    }
}

impl fmt::Display for Vkey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = Vec::with_capacity(33);
        raw.push(ALG_ED25519);
        raw.extend_from_slice(self.public.as_bytes());
        write!(f, "{}+{}+{}", self.origin, self.key_id, b64(&raw))
    }
}

impl fmt::Debug for Vkey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Vkey({self})")
    }
}

/// A ledger signing key bound to its origin. Deliberately not `Debug`/`Display`: the secret
/// must never reach a log line by accident.
pub struct LedgerKey {
    signing: SigningKey,
    /// `SHA-512(seed)` split into the secret scalar and the nonce prefix, kept so that a batch of
    /// signatures does not expand the key once per signature.
    expanded: ExpandedSecretKey,
    vkey: Vkey,
}

impl LedgerKey {
    pub fn from_seed(origin: Origin, seed: [u8; 32]) -> Result<LedgerKey, KeyError> {
        let signing = SigningKey::from_bytes(&seed);
        let vkey = Vkey::new(origin, signing.verifying_key())?;
        let expanded = ExpandedSecretKey::from(signing.as_bytes());
        Ok(LedgerKey {
            signing,
            expanded,
            vkey,
        })
    }

    /// Parses the text form `PRIVATE+KEY+<origin>+<key id>+<b64(0x01 ‖ seed32)>` (the Go
    /// `note` signer-key spelling), checking that the key id matches.
    pub fn parse_private(s: &str) -> Result<LedgerKey, KeyError> {
        let s = s.trim();
        let rest = s
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(KeyError::PrivateShape)?;
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(KeyError::PrivateShape);
        };
        let origin = Origin::parse(name)?;
        let stated = KeyId::parse_hex(id).ok_or(KeyError::PrivateShape)?;
        let raw = unb64(key).ok_or(KeyError::PrivateShape)?;
        let (alg, seed) = raw.split_first().ok_or(KeyError::PrivateShape)?;
        if *alg != ALG_ED25519 {
            return Err(KeyError::VkeyAlgorithm);
        }
        let seed: [u8; 32] = seed.try_into().map_err(|_| KeyError::PrivateShape)?;
        let key = LedgerKey::from_seed(origin, seed)?;
        if key.key_id() != stated {
            return Err(KeyError::KeyIdMismatch {
                stated: stated.to_hex(),
                computed: key.key_id().to_hex(),
            });
        }
        Ok(key)
    }

    /// The secret text form; callers write it only to a 0600 file.
    pub fn to_private_text(&self) -> String {
        let mut raw = Vec::with_capacity(33);
        raw.push(ALG_ED25519);
        raw.extend_from_slice(self.signing.as_bytes());
        format!(
            "PRIVATE+KEY+{}+{}+{}",
            self.vkey.origin,
            self.vkey.key_id,
            b64(&raw)
        )
    }

    pub fn vkey(&self) -> &Vkey {
        &self.vkey
    }

    pub fn key_id(&self) -> KeyId {
        self.vkey.key_id
    }

    pub fn origin(&self) -> &Origin {
        &self.vkey.origin
    }

    /// A secret for another purpose, derived from the signing seed and `label` (SHA-256 over a
    /// domain-separated label and the 32-byte uniformly random seed): whoever holds the key file
    /// holds it, nobody else can compute it, and it names no new file to protect. The parking
    /// journal's key-encryption key is one (`ingest/journal`).
    pub fn derive_secret(&self, label: &str) -> Zeroizing<[u8; 32]> {
        let mut h = sha2::Sha256::new();
        h.update(b"changetrail derived secret v1\0");
        h.update((label.len() as u64).to_be_bytes());
        h.update(label.as_bytes());
        h.update(self.signing.as_bytes());
        Zeroizing::new(h.finalize().into())
    }

    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.signing.sign(msg).to_bytes()
    }

    /// Ed25519 signatures of `msgs`, byte for byte what `sign` gives each (RFC 8032 signing is
    /// deterministic), about a fifth cheaper: the nonce points `R = r·B` are compressed together
    /// with one field inversion (`compress_batch_alloc`) instead of one inversion each, and the
    /// key is expanded once. The steps are RFC 8032 §5.1.6 as ed25519-dalek performs them.
    pub fn sign_batch<M: AsRef<[u8]>>(&self, msgs: &[M]) -> Vec<[u8; 64]> {
        let a = self.signing.verifying_key().to_bytes();
        let wide = |parts: &[&[u8]]| {
            let mut h = Sha512::new();
            for p in parts {
                h.update(p);
            }
            Scalar::from_bytes_mod_order_wide(&h.finalize().into())
        };
        // r = SHA-512(prefix ‖ M) mod L: secret, as in `sign`; R = r·B in constant time.
        // Any one of them with its public signature gives the key away: wiped when dropped.
        let nonces: Zeroizing<Vec<Scalar>> = Zeroizing::new(
            msgs.iter()
                .map(|m| wide(&[&self.expanded.hash_prefix, m.as_ref()]))
                .collect(),
        );
        let points: Vec<EdwardsPoint> = nonces.iter().map(EdwardsPoint::mul_base).collect();
        let compressed = EdwardsPoint::compress_batch_alloc(&points);
        msgs.iter()
            .zip(nonces.iter())
            .zip(compressed)
            .map(|((m, r), big_r)| {
                // k = SHA-512(R ‖ A ‖ M) mod L; S = r + k·s.
                let k = wide(&[big_r.as_bytes(), &a, m.as_ref()]);
                let s = k * self.expanded.scalar + r;
                let mut sig = [0u8; 64];
                sig[..32].copy_from_slice(big_r.as_bytes());
                sig[32..].copy_from_slice(s.as_bytes());
                sig
            })
            .collect()
    }
}

/// The first key a `ledger.created` payload names (entry 0's `vkey`), if it names a valid one.
pub fn first_key_named(created_payload: &str) -> Option<Vkey> {
    #[derive(serde::Deserialize)]
    struct Created {
        vkey: String,
    }
    let c: Created = serde_json::from_str(created_payload).ok()?;
    Vkey::parse(&c.vkey).ok()
}

/// The message the new key signs in a `key.rotated` entry:
/// `"changetrail/key-rotation/v1\n" ‖ origin ‖ "\n" ‖ new_vkey ‖ "\n" ‖ decimal(seq)`.
pub fn rotation_message(origin: &Origin, new_vkey: &Vkey, seq: u64) -> Vec<u8> {
    let mut m = Vec::with_capacity(128);
    m.extend_from_slice(ROTATION_CONTEXT);
    m.extend_from_slice(origin.as_str().as_bytes());
    m.push(b'\n');
    m.extend_from_slice(new_vkey.to_string().as_bytes());
    m.push(b'\n');
    m.extend_from_slice(seq.to_string().as_bytes());
    m
}

/// The payload of a `key.rotated` entry at `seq`, counter-signed by the new key.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct RotationPayload {
    pub new_vkey: String,
    pub new_key_signature: String,
}

impl RotationPayload {
    pub fn sign(new_key: &LedgerKey, seq: u64) -> RotationPayload {
        let msg = rotation_message(new_key.origin(), new_key.vkey(), seq);
        RotationPayload {
            new_vkey: new_key.vkey().to_string(),
            new_key_signature: b64(&new_key.sign(&msg)),
        }
    }

    /// Returns the new key if the payload names a valid key of `origin` that signed this rotation.
    pub fn verify(&self, origin: &Origin, seq: u64) -> Result<Vkey, String> {
        let vkey = Vkey::parse(&self.new_vkey).map_err(|e| format!("new_vkey: {e}"))?;
        if vkey.origin() != origin {
            return Err(format!(
                "new_vkey belongs to origin {}, not {}",
                vkey.origin(),
                origin
            ));
        }
        let sig = unb64(&self.new_key_signature)
            .ok_or_else(|| "new_key_signature is not base64".to_owned())?;
        if !vkey.verify(&rotation_message(origin, &vkey, seq), &sig) {
            return Err("new_key_signature does not verify with new_vkey".to_owned());
        }
        Ok(vkey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The batch signer against RFC 8032's first test vector and against ed25519-dalek's own
    /// `sign`, for many keys, message lengths and batch sizes (a wrong step in the batch path
    /// would change every signature, so byte equality is the whole test).
    #[test]
    fn batch_signatures_are_the_single_signatures() {
        let origin = Origin::parse("example.com/log").unwrap();
        let seed: [u8; 32] =
            hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
                .unwrap()
                .try_into()
                .unwrap();
        let key = LedgerKey::from_seed(origin.clone(), seed).unwrap();
        let rfc = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155\
                   5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";
        assert_eq!(hex::encode(key.sign_batch(&[b""])[0]), rfc);
        assert_eq!(hex::encode(key.sign(b"")), rfc);
        assert!(key.sign_batch::<&[u8]>(&[]).is_empty());
        for k in 0u8..8 {
            let key = LedgerKey::from_seed(origin.clone(), [k; 32]).unwrap();
            for n in [1usize, 2, 7, 65] {
                let msgs: Vec<Vec<u8>> = (0..n).map(|i| vec![k ^ i as u8; i * 13 % 200]).collect();
                let batch = key.sign_batch(&msgs);
                assert_eq!(batch.len(), n);
                for (m, sig) in msgs.iter().zip(&batch) {
                    assert_eq!(*sig, key.sign(m));
                    let vk = key.signing.verifying_key();
                    assert!(vk.verify_strict(m, &Signature::from_bytes(sig)).is_ok());
                }
            }
        }
    }

    /// Base64 uses '+': keys whose encoding contains it must still parse (seeds found by search).
    #[test]
    fn keys_with_plus_in_base64_round_trip() {
        let origin = Origin::parse("example.com/log").unwrap();
        let mut seen_plus = 0;
        for seed in 0u8..=255 {
            let key = LedgerKey::from_seed(origin.clone(), [seed; 32]).unwrap();
            let vkey = key.vkey().to_string();
            let private = key.to_private_text();
            seen_plus += usize::from(vkey.matches('+').count() > 2);
            assert_eq!(Vkey::parse(&vkey).unwrap(), *key.vkey(), "{vkey}");
            assert_eq!(
                LedgerKey::parse_private(&private).unwrap().vkey(),
                key.vkey()
            );
        }
        assert!(
            seen_plus > 0,
            "no seed produced a '+' in base64; the test proves nothing"
        );
    }

    #[test]
    fn vkey_parse_is_strict() {
        let key = LedgerKey::from_seed(Origin::parse("example.com/log").unwrap(), [1; 32]).unwrap();
        let good = key.vkey().to_string();
        let wrong_id = format!(
            "example.com/log+00000000+{}",
            good.splitn(3, '+').nth(2).unwrap()
        );
        assert!(matches!(
            Vkey::parse(&wrong_id),
            Err(KeyError::KeyIdMismatch { .. })
        ));
        assert!(Vkey::parse(&good.replace("example.com/log", "other.example/log")).is_err());
        assert!(Vkey::parse("example.com/log+0102").is_err());
        // A small-order public key is refused outright.
        let mut raw = vec![1u8];
        raw.extend_from_slice(&[0u8; 32]);
        raw[1] = 1; // the identity point (0, 1)
        let weak = format!("x+00000000+{}", b64(&raw));
        assert!(Vkey::parse(&weak).is_err());
    }
}
