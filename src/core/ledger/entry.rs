//! Ledger entries, byte for byte as FORMAT.md "Entries" (beside this file) defines them.

use super::hash::Hash;
use super::keys::{KeyId, Origin};

pub const ENTRY_MAGIC: &[u8; 21] = b"changetrail/entry/v1\n";
const GENESIS_CONTEXT: &[u8] = b"changetrail/genesis/v1\n";
const PAYLOAD_CONTEXT: &[u8] = b"changetrail/payload/v1\n";
const SIGNATURE_CONTEXT: &[u8] = b"changetrail/entry-sig/v1\n";

/// Entry kinds the service writes. Verifiers treat every kind alike; these names matter to
/// the service (what it may erase, how it follows key rotation).
pub mod kinds {
    pub const LEDGER_CREATED: &str = "ledger.created";
    pub const KEY_ROTATED: &str = "key.rotated";
    pub const HEARTBEAT: &str = "heartbeat";
    pub const PAYLOAD_ERASED: &str = "payload.erased";
    /// An API token was created (or registered): its id, name, role and secret's hash.
    pub const TOKEN_CREATED: &str = "token.created";
    pub const TOKEN_REVOKED: &str = "token.revoked";
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntryError {
    #[error("entry does not start with the changetrail/entry/v1 magic")]
    Magic,
    #[error("entry ends early while reading {0}")]
    Truncated(&'static str),
    #[error("{0} is not valid UTF-8")]
    Utf8(&'static str),
    #[error("key id is not 8 lowercase hex characters")]
    KeyId,
    #[error("origin is not a valid ledger origin")]
    Origin,
    #[error("{0} trailing bytes after the entry")]
    Trailing(usize),
    #[error("{0} is longer than its length prefix allows")]
    TooLong(&'static str),
}

/// The decoded fields of one entry. `encode` and `decode` are exact inverses: decoding accepts
/// only bytes that `encode` would produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub origin: Origin,
    pub seq: u64,
    pub time_ns: i64,
    pub prev_hash: Hash,
    pub key_id: KeyId,
    pub kind: String,
    pub subject: String,
    pub payload_commitment: Hash,
    pub payload_len: u32,
}

impl Entry {
    pub fn encode(&self) -> Result<Vec<u8>, EntryError> {
        let origin = self.origin.as_str().as_bytes();
        let mut out = Vec::with_capacity(
            21 + 2 + origin.len() + 8 + 8 + 32 + 9 + 4 + self.kind.len() + self.subject.len() + 36,
        );
        out.extend_from_slice(ENTRY_MAGIC);
        put_str16(&mut out, origin, "origin")?;
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.time_ns.to_be_bytes());
        out.extend_from_slice(&self.prev_hash.0);
        let key_id = self.key_id.to_hex();
        out.push(key_id.len() as u8);
        out.extend_from_slice(key_id.as_bytes());
        put_str16(&mut out, self.kind.as_bytes(), "kind")?;
        put_str16(&mut out, self.subject.as_bytes(), "subject")?;
        out.extend_from_slice(&self.payload_commitment.0);
        out.extend_from_slice(&self.payload_len.to_be_bytes());
        Ok(out)
    }

    /// Strict decoding: wrong magic, truncation, trailing bytes, invalid UTF-8 or a key id that
    /// is not 8 lowercase hex characters are all errors (the verifier reports them as MODIFIED).
    pub fn decode(bytes: &[u8]) -> Result<Entry, EntryError> {
        let mut r = Reader { buf: bytes };
        if r.take(ENTRY_MAGIC.len(), "magic")? != ENTRY_MAGIC {
            return Err(EntryError::Magic);
        }
        let origin = r.str16("origin")?;
        let origin = Origin::parse(origin).map_err(|_| EntryError::Origin)?;
        let seq = u64::from_be_bytes(r.array("seq")?);
        let time_ns = i64::from_be_bytes(r.array("time_ns")?);
        let prev_hash = Hash(r.array("prev_hash")?);
        let key_len = r.take(1, "key id length")?[0] as usize;
        let key_id = std::str::from_utf8(r.take(key_len, "key id")?)
            .ok()
            .and_then(KeyId::parse_hex)
            .ok_or(EntryError::KeyId)?;
        let kind = r.str16("kind")?.to_owned();
        let subject = r.str16("subject")?.to_owned();
        let payload_commitment = Hash(r.array("payload_commitment")?);
        let payload_len = u32::from_be_bytes(r.array("payload_len")?);
        if !r.buf.is_empty() {
            return Err(EntryError::Trailing(r.buf.len()));
        }
        Ok(Entry {
            origin,
            seq,
            time_ns,
            prev_hash,
            key_id,
            kind,
            subject,
            payload_commitment,
            payload_len,
        })
    }
}

fn put_str16(out: &mut Vec<u8>, s: &[u8], what: &'static str) -> Result<(), EntryError> {
    let len = u16::try_from(s.len()).map_err(|_| EntryError::TooLong(what))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s);
    Ok(())
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], EntryError> {
        if self.buf.len() < n {
            return Err(EntryError::Truncated(what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], EntryError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn str16(&mut self, what: &'static str) -> Result<&'a str, EntryError> {
        let len = u16::from_be_bytes(self.array(what)?) as usize;
        std::str::from_utf8(self.take(len, what)?).map_err(|_| EntryError::Utf8(what))
    }
}

/// `prev_hash` of entry 0: `H("changetrail/genesis/v1\n" ‖ origin)`.
pub fn genesis_prev_hash(origin: &Origin) -> Hash {
    Hash::of(&[GENESIS_CONTEXT, origin.as_str().as_bytes()])
}

/// `H(0x00 ‖ entry_bytes)`: the chain link and the RFC 6962 leaf, one value.
pub fn leaf_hash(entry_bytes: &[u8]) -> Hash {
    Hash::of(&[&[0x00], entry_bytes])
}

/// `H("changetrail/payload/v1\n" ‖ salt ‖ payload)`.
pub fn payload_commitment(salt: &[u8; 32], payload: &[u8]) -> Hash {
    Hash::of(&[PAYLOAD_CONTEXT, salt, payload])
}

/// The bytes an entry signature covers: `"changetrail/entry-sig/v1\n" ‖ leaf_hash`.
pub fn signature_message(leaf: &Hash) -> [u8; 57] {
    let mut m = [0u8; 57];
    m[..25].copy_from_slice(SIGNATURE_CONTEXT);
    m[25..].copy_from_slice(&leaf.0);
    m
}

/// Payload of a `payload.erased` entry.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ErasurePayload {
    pub erased_seq: u64,
    pub reason: String,
    pub requested_by: String,
}

/// A `token.created` entry: who may now call the service, as what. The secret itself is never
/// recorded; its hash is what the service checks, so the ledger pins it: a database writer who
/// adds a token, or changes one's role or secret, leaves a row no entry produced.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenCreated {
    pub token_id: String,
    pub name: String,
    pub role: String,
    /// SHA-256 (hex) of the secret, as the service stores it.
    pub secret_sha256: String,
    /// Who created it: an admin's token, a command and its operator, the first start.
    pub by: String,
    /// Recorded when the ledger first learned of a token made before tokens were recorded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopted: bool,
}

/// A `token.revoked` entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenRevoked {
    pub token_id: String,
    pub by: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Entry {
        Entry {
            origin: Origin::parse("example.com/log").unwrap(),
            seq: 7,
            time_ns: 1_700_000_000_000_000_000,
            prev_hash: Hash([9; 32]),
            key_id: KeyId([0xde, 0xad, 0xbe, 0xef]),
            kind: "change.requested".into(),
            subject: "CHG-1".into(),
            payload_commitment: Hash([3; 32]),
            payload_len: 42,
        }
    }

    #[test]
    fn round_trips() {
        let e = sample();
        let bytes = e.encode().unwrap();
        assert_eq!(Entry::decode(&bytes).unwrap(), e);
    }

    #[test]
    fn rejects_trailing_bytes_and_truncation() {
        let mut bytes = sample().encode().unwrap();
        bytes.push(0);
        assert_eq!(Entry::decode(&bytes), Err(EntryError::Trailing(1)));
        bytes.truncate(bytes.len() - 2);
        assert!(matches!(
            Entry::decode(&bytes),
            Err(EntryError::Truncated(_))
        ));
    }

    #[test]
    fn rejects_uppercase_key_id_and_bad_magic() {
        let bytes = sample().encode().unwrap();
        let text = bytes.clone();
        let pos = text.windows(8).position(|w| w == b"deadbeef").unwrap();
        let mut upper = bytes.clone();
        upper[pos..pos + 8].copy_from_slice(b"DEADBEEF");
        assert_eq!(Entry::decode(&upper), Err(EntryError::KeyId));
        let mut magic = bytes;
        magic[0] = b'C';
        assert_eq!(Entry::decode(&magic), Err(EntryError::Magic));
    }
}
