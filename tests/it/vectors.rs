//! Known-answer tests: the ledger format's vectors (src/core/ledger/FORMAT.md), reproduced byte
//! for byte from the same inputs.

use changetrail::core::ledger::batch::{Draft, Head, build_batch, rotation_draft};
use changetrail::core::ledger::bundle::{self, Line};
use changetrail::core::ledger::entry::{self, Entry};
use changetrail::core::ledger::hash::{Hash, b64, unb64};
use changetrail::core::ledger::keys::{LedgerKey, Origin, Vkey};
use changetrail::core::ledger::merkle::CompactRange;
use changetrail::core::ledger::note::Checkpoint;
use changetrail::core::ledger::verify::{Options, Verifier};
use serde::Deserialize;

#[derive(Deserialize)]
pub struct Vectors {
    pub origin: String,
    pub keys: Vec<VKey>,
    pub genesis_prev_hash_hex: String,
    pub entries: Vec<VEntry>,
    pub merkle_roots_by_size_hex: std::collections::BTreeMap<String, String>,
    pub checkpoints: Vec<String>,
}

#[derive(Deserialize)]
pub struct VKey {
    pub seed_hex: String,
    pub public_hex: String,
    pub key_id: String,
    pub vkey: String,
}

#[derive(Deserialize)]
pub struct VEntry {
    pub seq: u64,
    pub time_ns: i64,
    pub kind: String,
    pub subject: String,
    pub salt_b64: String,
    pub payload: String,
    pub key_id: String,
    pub entry_b64: String,
    pub leaf_hash_hex: String,
    pub signature_b64: String,
}

pub fn vectors() -> Vectors {
    serde_json::from_str(include_str!("vectors/ledger-v1.json")).unwrap()
}

pub const BUNDLE: &str = include_str!("vectors/ledger-v1-bundle.jsonl");

pub fn key(v: &Vectors, i: usize) -> LedgerKey {
    let seed: [u8; 32] = hex::decode(&v.keys[i].seed_hex)
        .unwrap()
        .try_into()
        .unwrap();
    LedgerKey::from_seed(Origin::parse(&v.origin).unwrap(), seed).unwrap()
}

pub fn salt(e: &VEntry) -> [u8; 32] {
    unb64(&e.salt_b64).unwrap().try_into().unwrap()
}

#[test]
fn keys_ids_and_vkeys_match() {
    let v = vectors();
    for (i, k) in v.keys.iter().enumerate() {
        let key = key(&v, i);
        assert_eq!(hex::encode(key.vkey().public().as_bytes()), k.public_hex);
        assert_eq!(key.key_id().to_hex(), k.key_id);
        assert_eq!(key.vkey().to_string(), k.vkey);
        assert_eq!(Vkey::parse(&k.vkey).unwrap(), *key.vkey());
        // The private text form round-trips to the same key.
        let again = LedgerKey::parse_private(&key.to_private_text()).unwrap();
        assert_eq!(again.vkey(), key.vkey());
    }
    let origin = Origin::parse(&v.origin).unwrap();
    assert_eq!(
        entry::genesis_prev_hash(&origin).to_hex(),
        v.genesis_prev_hash_hex
    );
}

/// Entries built one at a time through the same function the sequencer uses, with the vectors'
/// times, salts and keys (including the rotation at seq 6), give the vectors' bytes exactly.
#[test]
fn sequencer_reproduces_every_entry_root_and_checkpoint() {
    let v = vectors();
    let (k1, k2) = (key(&v, 0), key(&v, 1));
    let origin = Origin::parse(&v.origin).unwrap();
    let mut head = Head::empty(origin.clone(), k1.key_id());
    let mut checkpoints = Vec::new();
    let clock = || 0u64;
    for e in &v.entries {
        let signer = if head.key_id == k1.key_id() { &k1 } else { &k2 };
        let draft = if e.kind == "key.rotated" {
            let d = rotation_draft(&k2, e.seq).unwrap();
            assert_eq!(d.payload(), e.payload, "rotation payload");
            d
        } else {
            Draft::new(&e.kind, &e.subject, e.payload.clone()).unwrap()
        };
        let (batch, _) =
            build_batch(&head, &[draft], vec![salt(e)], e.time_ns, signer, &clock).unwrap();
        let built = &batch.entries[0];
        assert_eq!(
            b64(&built.bytes),
            e.entry_b64,
            "entry bytes of seq {}",
            e.seq
        );
        assert_eq!(
            built.leaf.to_hex(),
            e.leaf_hash_hex,
            "leaf of seq {}",
            e.seq
        );
        assert_eq!(
            b64(&built.sig),
            e.signature_b64,
            "signature of seq {}",
            e.seq
        );
        assert_eq!(built.payload, e.payload);
        head = batch.head;
        if e.kind == "key.rotated" {
            head.key_id = k2.key_id();
        }
        assert_eq!(
            head.root().to_hex(),
            v.merkle_roots_by_size_hex[&head.size.to_string()]
        );
        if head.size.is_multiple_of(4) || head.size == 10 {
            let signer = if head.key_id == k1.key_id() { &k1 } else { &k2 };
            let cp = Checkpoint {
                origin: origin.clone(),
                size: head.size,
                root: head.root(),
            };
            checkpoints.push(cp.sign(signer));
        }
    }
    assert_eq!(checkpoints, v.checkpoints);
    assert_eq!(
        CompactRange::new().root().to_hex(),
        v.merkle_roots_by_size_hex["0"]
    );
}

#[test]
fn entries_decode_and_re_encode_exactly() {
    let v = vectors();
    for e in &v.entries {
        let bytes = unb64(&e.entry_b64).unwrap();
        let decoded = Entry::decode(&bytes).unwrap();
        assert_eq!(decoded.seq, e.seq);
        assert_eq!(decoded.kind, e.kind);
        assert_eq!(decoded.key_id.to_hex(), e.key_id);
        assert_eq!(
            decoded.payload_commitment,
            entry::payload_commitment(&salt(e), e.payload.as_bytes())
        );
        assert_eq!(decoded.encode().unwrap(), bytes);
        assert_eq!(
            Hash::from_hex(&e.leaf_hash_hex).unwrap(),
            entry::leaf_hash(&bytes)
        );
    }
}

/// Our bundle writer spells every line of the vector bundle exactly as the independent encoder did.
#[test]
fn bundle_lines_are_canonical() {
    for line in BUNDLE.lines() {
        let parsed = Line::parse(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(parsed.to_text(), line);
    }
    assert!(bundle::FORMAT.starts_with("changetrail-bundle/"));
}

pub fn verify_text(text: &str, trusted: &[&str]) -> changetrail::core::ledger::verify::Report {
    let mut v = Verifier::new(Options {
        trusted: trusted.iter().map(|k| Vkey::parse(k).unwrap()).collect(),
        state: None,
        max_age_ns: None,
        now_ns: 0,
        threads: 2,
    });
    for line in text.lines() {
        v.push_line(line);
    }
    v.finish()
}

#[test]
fn verify_accepts_the_vector_bundle_with_the_first_key_pinned() {
    let v = vectors();
    let report = verify_text(BUNDLE, &[&v.keys[0].vkey]);
    assert_eq!(report.findings, vec![], "{:#?}", report.findings);
    assert_eq!(report.exit_code, 0);
    assert_eq!(report.summary.entries, 10);
    assert_eq!(report.summary.checkpoints_valid, 3);
    assert_eq!(report.summary.newest.as_ref().unwrap().size, 10);
}

#[test]
fn verify_with_only_the_second_key_pinned_rejects_the_history() {
    let v = vectors();
    let report = verify_text(BUNDLE, &[&v.keys[1].vkey]);
    assert_eq!(report.exit_code, 1);
    assert!(report.has(changetrail::core::ledger::verify::Class::UnknownKey));
}
