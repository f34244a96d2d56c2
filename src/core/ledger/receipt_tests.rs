use super::*;
use crate::core::ledger::batch::{
    BuiltEntry, Draft, Head, build_batch, genesis_draft, rotation_draft,
};
use crate::core::ledger::keys::LedgerKey;
use crate::core::ledger::merkle::{inclusion_ranges, node_hash};

fn key(seed: u8) -> LedgerKey {
    LedgerKey::from_seed(Origin::parse("receipts.example/test").unwrap(), [seed; 32]).unwrap()
}

/// The RFC 6962 hash of `leaves`, straight from the definition.
fn mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Hash::of(&[]),
        1 => leaves[0],
        n => {
            let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
            node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

/// A ledger of entry 0, CHG-1's two entries, a rotation at seq 3, a run's entry and another
/// change's entry signed by the new key, and a checkpoint over all of it by the new key.
struct Ledger {
    entries: Vec<BuiltEntry>,
    note: String,
    first: LedgerKey,
}

fn ledger() -> Ledger {
    let (k0, k1) = (key(1), key(2));
    let mut head = Head::empty(k0.origin().clone(), k0.key_id());
    let mut all = Vec::new();
    let mut append = |head: &mut Head, drafts: Vec<Draft>, k: &LedgerKey| {
        let salts = (0..drafts.len()).map(|i| [i as u8 + 7; 32]).collect();
        let (b, _) = build_batch(head, &drafts, salts, 1_000, k, &|| 0).unwrap();
        *head = b.head;
        all.extend(b.entries);
    };
    let d = |kind: &str, subject: &str, p: &str| Draft::new(kind, subject, p.into()).unwrap();
    append(&mut head, vec![genesis_draft(&k0, "test").unwrap()], &k0);
    append(
        &mut head,
        vec![
            d("change.requested", "CHG-1", r#"{"run_id":"wf-1"}"#),
            d("approval.decided", "CHG-1", r#"{"by":"alice"}"#),
        ],
        &k0,
    );
    append(&mut head, vec![rotation_draft(&k1, 3).unwrap()], &k0);
    head.key_id = k1.key_id();
    append(
        &mut head,
        vec![
            d("task.finished", "wf-1", r#"{"ok":true}"#),
            d("change.requested", "CHG-2", r#"{}"#),
            d(
                "payload.erased",
                "",
                r#"{"erased_seq":2,"reason":"GDPR","requested_by":"dpo"}"#,
            ),
        ],
        &k1,
    );
    let cp = Checkpoint {
        origin: head.origin.clone(),
        size: head.size,
        root: head.root(),
    };
    Ledger {
        entries: all,
        note: cp.sign(&k1),
        first: k0,
    }
}

impl Ledger {
    fn proved(&self, seq: u64) -> ProvedEntry {
        let leaves: Vec<Hash> = self.entries.iter().map(|e| e.leaf).collect();
        let proof = inclusion_ranges(seq, leaves.len() as u64)
            .unwrap()
            .into_iter()
            .map(|r| mth(&leaves[r.start as usize..r.end as usize]))
            .collect();
        let e = &self.entries[seq as usize];
        ProvedEntry {
            seq,
            entry: e.bytes.clone(),
            sig: e.sig.to_vec(),
            salt: Some(e.salt.to_vec()),
            payload: Some(e.payload.clone()),
            proof,
        }
    }

    fn receipt(&self, seqs: &[u64]) -> Receipt {
        build(
            &Origin::parse("receipts.example/test").unwrap(),
            "CHG-1",
            &self.note,
            vec![self.proved(0), self.proved(3)],
            seqs.iter().map(|s| self.proved(*s)).collect(),
            vec![],
        )
        .unwrap()
    }
}

#[test]
fn a_receipt_verifies_across_a_rotation_with_the_first_key_pinned() {
    let l = ledger();
    let text = l.receipt(&[1, 2, 4]).to_text();
    let v = verify(&text, &[l.first.vkey().clone()]).unwrap();
    assert_eq!(v.entries, 3);
    assert_eq!(v.checkpoint_size, 7);
    assert_eq!(v.checkpoint_key, key(2).vkey().to_string());
    assert!(v.erased.is_empty());
    let r: Receipt = serde_json::from_str(&text).unwrap();
    assert_eq!(r.runs, vec!["wf-1".to_owned()]);
    // Each proof is a standard C2SP tlog-proof.
    assert!(
        r.entries[0]
            .proof
            .starts_with("c2sp.org/tlog-proof@v1\nindex 1\n")
    );
    assert!(r.entries[0].proof.ends_with(&l.note));
}

#[test]
fn an_erased_payload_still_verifies_and_is_named() {
    let l = ledger();
    let mut r = l.receipt(&[1, 2]);
    r.entries[1].salt = None;
    r.entries[1].payload = None;
    // A null alone is refused: the erasure must be shown.
    let err = verify(&r.to_text(), &[l.first.vkey().clone()]).unwrap_err();
    assert!(err.contains("no payload.erased entry"), "{err}");
    r.erasures = vec![ReceiptEntry::new(
        l.proved(6),
        "payload.erased".into(),
        &l.note,
    )];
    let v = verify(&r.to_text(), &[l.first.vkey().clone()]).unwrap();
    assert_eq!(v.erased, vec![2]);
    // An erasure shown for an entry whose payload is present is refused too.
    let mut r = l.receipt(&[1, 2]);
    r.erasures = vec![ReceiptEntry::new(
        l.proved(6),
        "payload.erased".into(),
        &l.note,
    )];
    let err = verify(&r.to_text(), &[l.first.vkey().clone()]).unwrap_err();
    assert!(err.contains("not an erased entry"), "{err}");
}

#[test]
fn what_a_receipt_cannot_hide_or_fake() {
    let l = ledger();
    let pin = [l.first.vkey().clone()];
    let base = l.receipt(&[1, 2, 4]);
    let refused = |r: &Receipt, why: &str| {
        let err = verify(&r.to_text(), &pin).unwrap_err();
        assert!(err.contains(why), "{err}");
    };
    // Another change's entry passed off as this one's: its subject becomes a run that is not listed.
    let mut r = base.clone();
    r.entries.push(ReceiptEntry::new(
        l.proved(5),
        "change.requested".into(),
        &l.note,
    ));
    refused(&r, "runs");
    // Another change's entry with `runs` made to match: no entry of CHG-1 names that subject.
    let mut r = base.clone();
    r.entries.push(ReceiptEntry::new(
        l.proved(5),
        "change.requested".into(),
        &l.note,
    ));
    r.runs.insert(0, "CHG-2".into());
    refused(&r, "no entry of the change names that run");
    // Only keys of another ledger pinned.
    let other = LedgerKey::from_seed(Origin::parse("other.example/x").unwrap(), [1; 32]).unwrap();
    let err = verify(&base.to_text(), &[other.vkey().clone()]).unwrap_err();
    assert!(err.contains("no pinned key belongs to it"), "{err}");
    // The rotation left out: entries after it are signed by a key never handed trust.
    let mut r = base.clone();
    r.key_chain.pop();
    refused(&r, "key in force");
    // A payload swapped for another's.
    let mut r = base.clone();
    r.entries[0].payload = Some(r#"{"run_id":"wf-2"}"#.into());
    refused(&r, "commitment");
    // Entries out of order.
    let mut r = base.clone();
    r.entries.swap(0, 1);
    refused(&r, "out of order");
    // Only the current key pinned: trust must start at entry 0.
    let err = verify(&base.to_text(), &[key(2).vkey().clone()]).unwrap_err();
    assert!(err.contains("first key"), "{err}");
    // A different spelling of the same JSON.
    let compact = serde_json::to_string(&base).unwrap();
    assert!(verify(&compact, &pin).unwrap_err().contains("canonical"));
    // No entries at all.
    let mut r = base.clone();
    r.entries.clear();
    r.runs.clear();
    refused(&r, "no entry");
}

#[test]
fn tlog_proofs_parse_strictly() {
    let h = Hash::of(&[b"x"]);
    let text = tlog_proof(5, &[h, h], "o\n1\nroot\n\n— o sig\n");
    let (i, p, cp) = parse_tlog_proof(&text).unwrap();
    assert_eq!((i, p.len(), cp), (5, 2, "o\n1\nroot\n\n— o sig\n"));
    for bad in [
        text.replace("index 5", "index 05"),
        text.replace("tlog-proof@v1", "tlog-proof@v2"),
        text.replacen(&h.to_b64(), "AAAA", 1),
        "c2sp.org/tlog-proof@v1\nindex 1\n".to_owned(),
    ] {
        assert!(parse_tlog_proof(&bad).is_err(), "{bad:?}");
    }
}
