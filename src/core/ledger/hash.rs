//! SHA-256 digests and the base64/hex spellings the formats use.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};
use std::fmt;

/// A SHA-256 digest: leaf hashes, tree nodes, roots, commitments.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// SHA-256 over the concatenation of `parts` (no separators: callers add their own framing).
    pub fn of(parts: &[&[u8]]) -> Hash {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p);
        }
        Hash(h.finalize().into())
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Hash> {
        <[u8; 32]>::try_from(bytes).ok().map(Hash)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn to_b64(&self) -> String {
        b64(&self.0)
    }

    /// Strict base64 of exactly 32 bytes.
    pub fn from_b64(s: &str) -> Option<Hash> {
        unb64(s).and_then(|v| Hash::from_slice(&v))
    }

    pub fn from_hex(s: &str) -> Option<Hash> {
        hex::decode(s).ok().and_then(|v| Hash::from_slice(&v))
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Standard base64 with padding, as FORMAT.md writes every binary field.
pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Strict standard base64: padding required, non-zero trailing bits rejected, so every byte
/// sequence has exactly one accepted spelling (a flipped bit in the text cannot decode to the same bytes).
pub fn unb64(s: &str) -> Option<Vec<u8>> {
    STANDARD.decode(s).ok()
}
