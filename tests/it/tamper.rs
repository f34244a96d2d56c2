//! The tamper catalogue (research/tlog.md §9, A-G) against the streaming verifier: every case
//! must produce the finding class LEDGER.md names, with its exit code (1 tampering, 2 incomplete
//! or stale, 0 clean / redacted / unpinned). Bundles are built in memory (`fixtures`).
//!
//! Where one edit has knock-on effects (a lost entry shifts the recomputed tree, so later
//! checkpoints no longer match), the tests name the class the catalogue expects with its seq or
//! size and list the knock-on classes that may accompany it; nothing else may appear.

use crate::support::ledger::{
    Built, CREATED_AT, EntryParts, Forgery, Ledger, ORIGIN, SEED_ATTACKER, SEED_OLD, STEP_NS,
    Signer, checkpoint_pos, cosign, edit_entry, entry_pos, extend_chain, join, key, key_in,
    note_with, salt, signature_line, verify, verify_bytes, witness,
};
use changetrail::core::ledger::batch::genesis_draft;
use changetrail::core::ledger::bundle;
use changetrail::core::ledger::entry::{self, ErasurePayload};
use changetrail::core::ledger::hash::{Hash, b64, unb64};
use changetrail::core::ledger::keys::{RotationPayload, Vkey};
use changetrail::core::ledger::merkle::{consistency_ranges, node_hash};
use changetrail::core::ledger::note::{Checkpoint, Note};
use changetrail::core::ledger::verify::Class::{self, *};
use changetrail::core::ledger::verify::Report;
use proptest::prelude::*;
use std::sync::LazyLock;

// ---------------------------------------------------------------------------------------------
// Helpers

/// Verifies with the ledger's first key pinned, no saved state, no maximum age.
fn check(b: &Built, text: &str) -> Report {
    verify(text, &b.pinned(), None, None, 0)
}

fn check_lines(b: &Built, lines: &[String]) -> Report {
    check(b, &join(lines))
}

/// (class, seq, size) of every finding, in report order.
fn found(r: &Report) -> Vec<(Class, Option<u64>, Option<u64>)> {
    r.findings
        .iter()
        .map(|f| (f.class, f.seq, f.size))
        .collect()
}

fn seqs(r: &Report, class: Class) -> Vec<u64> {
    r.findings
        .iter()
        .filter(|f| f.class == class)
        .filter_map(|f| f.seq)
        .collect()
}

fn dedup(mut v: Vec<u64>) -> Vec<u64> {
    v.dedup();
    v
}

fn sizes(r: &Report, class: Class) -> Vec<u64> {
    r.findings
        .iter()
        .filter(|f| f.class == class)
        .filter_map(|f| f.size)
        .collect()
}

/// Every class in `must` is present, and every finding is in `must` or `may`.
#[track_caller]
fn assert_classes(r: &Report, must: &[Class], may: &[Class]) {
    for c in must {
        assert!(r.has(*c), "{c:?} expected in {:#?}", r.findings);
    }
    for f in &r.findings {
        assert!(
            must.contains(&f.class) || may.contains(&f.class),
            "unexpected finding {f:#?}\nall: {:#?}",
            r.findings
        );
    }
}

/// A general MODIFIED finding about line `number` (1-based) of the bundle.
#[track_caller]
fn assert_line_modified(r: &Report, number: usize) {
    let prefix = format!("line {number}:");
    assert!(
        r.findings
            .iter()
            .any(|f| f.class == Modified && f.seq.is_none() && f.detail.starts_with(&prefix)),
        "no MODIFIED finding for line {number}: {:#?}",
        r.findings
    );
}

fn body_of(note: &str) -> String {
    Note::parse(note).unwrap().text
}

/// Replaces the checkpoint line of `size` with one carrying `note`.
fn replace_checkpoint(lines: &mut [String], size: u64, note: &str) {
    let i = checkpoint_pos(lines, size);
    lines[i] = bundle::write::checkpoint(note);
}

/// Flips one bit of the Ed25519 signature (not the key id) in a single-signature note.
fn flip_note_signature(note: &str) -> String {
    let (head, sig) = note.trim_end_matches('\n').rsplit_once(' ').unwrap();
    let mut raw = unb64(sig).unwrap();
    raw[4 + 17] ^= 0x08;
    format!("{head} {}\n", b64(&raw))
}

/// The group order L of Ed25519, little-endian.
const GROUP_ORDER: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// The same signature with S replaced by S + L: equal modulo L, so a lax verifier accepts it.
fn malleate(sig: &[u8]) -> Vec<u8> {
    let mut out = sig.to_vec();
    let mut carry = 0u16;
    for (i, l) in GROUP_ORDER.iter().enumerate() {
        let v = u16::from(out[32 + i]) + u16::from(*l) + carry;
        out[32 + i] = v as u8;
        carry = v >> 8;
    }
    assert_eq!(carry, 0, "S + L fits in 32 bytes since S < L");
    out
}

// ---------------------------------------------------------------------------------------------
// The fixture itself

#[test]
fn fixture_bundle_verifies_clean() {
    let b = Ledger::standard().build();
    let r = check(&b, &b.text());
    assert_eq!(r.findings, vec![], "{:#?}", r.findings);
    assert_eq!(r.exit_code, 0);
    assert_eq!(r.summary.entries, 12);
    assert_eq!(r.summary.signatures, 12);
    assert_eq!(r.summary.checkpoints_valid, 3);
    assert_eq!(r.summary.covered_to, Some(12));
    assert_eq!(r.new_state, Some(b.state(12)));
    assert_eq!(
        r.summary.keys,
        vec![(0, b.old.vkey().to_string()), (7, b.new.vkey().to_string())]
    );
    // Realistic lines: non-ASCII payload text is escaped, times increase.
    assert!(b.text().contains("zo\\u00eb@example.com"));
    assert!(b.entries.windows(2).all(|w| w[0].time_ns < w[1].time_ns));
    // Unpinned, the same bundle passes with a warning only.
    let r = verify(&b.text(), &[], None, None, 0);
    assert_eq!(found(&r), vec![(Unpinned, None, None)]);
    assert_eq!(r.exit_code, 0);
}

// ---------------------------------------------------------------------------------------------
// A. Single-entry and field tampering

#[test]
fn a_payload_changed_without_its_commitment_is_modified() {
    let b = Ledger::standard().build();
    let mut lines = b.lines();
    edit_entry(&mut lines, 1, |p| {
        let text = p.payload.take().unwrap();
        p.payload = Some(text.replace("pool to 64", "pool to 16"));
    });
    let r = check_lines(&b, &lines);
    assert_eq!(
        found(&r),
        vec![(Modified, Some(1), None)],
        "{:#?}",
        r.findings
    );
    assert!(r.findings[0].detail.contains("commitment"));
    assert_eq!(r.exit_code, 1);
}

#[test]
fn a_changed_commitment_is_modified_and_breaks_signature_link_and_root() {
    let b = Ledger::standard().build();
    let mut lines = b.lines();
    edit_entry(&mut lines, 5, |p| {
        let mut e = p.decoded();
        e.payload_commitment.0[0] ^= 1;
        p.set_entry(&e);
    });
    let r = check_lines(&b, &lines);
    // The payload no longer opens it (5), the signature covers the old bytes (5), entry 6's
    // prev_hash names the old leaf (6), and the signed roots at 8 and 12 differ.
    assert_classes(
        &r,
        &[Modified, BadSignature, CheckpointMismatch],
        &[Incomplete],
    );
    assert_eq!(seqs(&r, Modified), vec![5, 6]);
    assert_eq!(seqs(&r, BadSignature), vec![5]);
    assert_eq!(sizes(&r, CheckpointMismatch), vec![8, 12]);
    assert_eq!(r.exit_code, 1);
}

#[test]
fn a_payload_and_commitment_changed_together_fail_the_signature() {
    let b = Ledger::standard().build();
    let mut lines = b.lines();
    edit_entry(&mut lines, 5, |p| {
        let payload = p
            .payload
            .take()
            .unwrap()
            .replace("\"ok\"", "\"rolled_back\"");
        let salt: [u8; 32] = p.salt.clone().unwrap().try_into().unwrap();
        let mut e = p.decoded();
        e.payload_commitment = entry::payload_commitment(&salt, payload.as_bytes());
        e.payload_len = payload.len() as u32;
        p.set_entry(&e);
        p.payload = Some(payload);
    });
    let r = check_lines(&b, &lines);
    assert_classes(
        &r,
        &[BadSignature, Modified, CheckpointMismatch],
        &[Incomplete],
    );
    assert_eq!(seqs(&r, BadSignature), vec![5]);
    // The payload opens the new commitment; only the next entry's link names the change.
    assert_eq!(seqs(&r, Modified), vec![6]);
    assert_eq!(r.exit_code, 1);
}

/// Every bit of every stored field of one entry: the entry bytes, the signature, the salt and
/// the payload.
#[test]
fn a_every_bit_of_an_entry_is_covered() {
    let b = Ledger::standard().build();
    let lines = b.lines();
    let original = EntryParts::parse(&lines[entry_pos(&lines, 5)]);
    let run = |edit: &dyn Fn(&mut EntryParts)| {
        let mut l = lines.clone();
        edit_entry(&mut l, 5, edit);
        check_lines(&b, &l)
    };
    for i in 0..original.entry.len() * 8 {
        let r = run(&|p: &mut EntryParts| p.entry[i / 8] ^= 1 << (i % 8));
        assert_eq!(r.exit_code, 1, "entry bit {i}: {:#?}", r.findings);
        assert!(
            r.findings.iter().any(|f| f.seq == Some(5)),
            "entry bit {i} not attributed to seq 5: {:#?}",
            r.findings
        );
    }
    for i in 0..original.sig.len() * 8 {
        let r = run(&|p: &mut EntryParts| p.sig[i / 8] ^= 1 << (i % 8));
        assert_eq!(
            found(&r),
            vec![(BadSignature, Some(5), None)],
            "sig bit {i}"
        );
        assert_eq!(r.exit_code, 1);
    }
    for i in 0..32 * 8 {
        let r = run(&|p: &mut EntryParts| p.salt.as_mut().unwrap()[i / 8] ^= 1 << (i % 8));
        assert_eq!(found(&r), vec![(Modified, Some(5), None)], "salt bit {i}");
    }
    let payload = original.payload.clone().unwrap();
    for i in 0..payload.len() * 8 {
        let mut bytes = payload.clone().into_bytes();
        bytes[i / 8] ^= 1 << (i % 8);
        let Ok(changed) = String::from_utf8(bytes) else {
            continue; // not representable in a JSON line; the proptest covers raw bytes
        };
        let r = run(&|p: &mut EntryParts| p.payload = Some(changed.clone()));
        assert_eq!(
            found(&r),
            vec![(Modified, Some(5), None)],
            "payload bit {i}"
        );
    }
}

#[test]
fn a_trailing_bytes_after_an_entry_are_modified() {
    let b = Ledger::standard().build();
    let mut lines = b.lines();
    edit_entry(&mut lines, 5, |p| p.entry.push(0));
    let r = check_lines(&b, &lines);
    // The undecodable entry cannot take its place in the chain: its seq is also absent.
    assert_classes(&r, &[Modified], &[Missing, CheckpointMismatch, Incomplete]);
    assert_eq!(seqs(&r, Modified), vec![5]);
    assert!(r.findings.iter().any(|f| f.detail.contains("trailing")));
    assert_eq!(r.exit_code, 1);
}

/// The same entry line respelled: each spelling means the same JSON, and each is rejected.
#[test]
fn a_non_canonical_line_spellings_are_modified() {
    let b = Ledger::standard().build();
    let lines = b.lines();
    let i = entry_pos(&lines, 1);
    let line = lines[i].clone();
    assert!(
        line.contains("zo\\u00eb"),
        "the payload must carry an escape: {line}"
    );
    let field_order = {
        let e = line.find(",\"entry\":").unwrap();
        let s = line.find(",\"sig\":").unwrap();
        let t = line.find(",\"salt\":").unwrap();
        format!("{}{}{}{}", &line[..e], &line[s..t], &line[e..s], &line[t..])
    };
    let variants = [
        (
            "duplicate key",
            line.replacen("\"seq\":1,", "\"seq\":1,\"seq\":1,", 1),
        ),
        ("uppercase \\u escape", line.replace("\\u00eb", "\\u00EB")),
        (
            "escaped ASCII letter",
            line.replacen("payments-api", "p\\u0061yments-api", 1),
        ),
        ("escaped slash", line.replacen('/', "\\/", 1)),
        (
            "space after colon",
            line.replacen("\"seq\":1", "\"seq\": 1", 1),
        ),
        ("space before brace", format!(" {line}")),
        ("trailing space", format!("{line} ")),
        ("carriage return", format!("{line}\r")),
        ("field order", field_order),
        (
            "number spelled 1.0",
            line.replacen("\"seq\":1,", "\"seq\":1.0,", 1),
        ),
        (
            "number spelled 1e0",
            line.replacen("\"seq\":1,", "\"seq\":1e0,", 1),
        ),
        (
            "leading zero",
            line.replacen("\"seq\":1,", "\"seq\":01,", 1),
        ),
    ];
    for (what, variant) in variants {
        assert_ne!(variant, line, "{what}");
        let mut l = lines.clone();
        l[i] = variant;
        let r = check_lines(&b, &l);
        assert_line_modified(&r, i + 1);
        // The rejected line does not count as entry 1.
        assert_classes(&r, &[Modified, Missing], &[CheckpointMismatch, Incomplete]);
        assert_eq!(seqs(&r, Missing), vec![1], "{what}");
        assert_eq!(r.exit_code, 1, "{what}");
    }
}

/// JSON numbers above 2^53 lose precision in a double; the verifier must keep them exact.
#[test]
fn a_seq_above_2_53_is_exact_and_above_u64_is_modified() {
    let big = (1u64 << 53) + 1;
    let (seq, claimed) = (big + 2, big + 3);
    assert_eq!(
        seq as f64, claimed as f64,
        "the two seqs collide as doubles"
    );
    let b = Ledger::new(8).start_at(big).build();
    let r = check(&b, &b.text());
    assert_eq!(r.findings, vec![], "{:#?}", r.findings);
    assert_eq!(r.summary.first_seq, Some(big));
    assert_eq!(r.summary.newest.as_ref().unwrap().size, big + 8);

    // The line claims seq 2^53 + 4 for the entry whose signed bytes say 2^53 + 3.
    let mut lines = b.lines();
    edit_entry(&mut lines, seq, |p| p.seq = claimed);
    let r = check_lines(&b, &lines);
    assert_eq!(
        found(&r),
        vec![(Modified, Some(claimed), None)],
        "{:#?}",
        r.findings
    );
    assert_eq!(r.findings[0].expected.as_deref(), Some("9007199254740996"));
    assert_eq!(r.findings[0].actual.as_deref(), Some("9007199254740995"));
    assert_eq!(r.exit_code, 1);

    // Above u64: not a seq at all.
    let b = Ledger::standard().build();
    let mut lines = b.lines();
    let i = entry_pos(&lines, 5);
    lines[i] = lines[i].replacen("\"seq\":5,", "\"seq\":18446744073709551621,", 1);
    let r = check_lines(&b, &lines);
    assert_line_modified(&r, i + 1);
    assert_classes(&r, &[Modified, Missing], &[CheckpointMismatch, Incomplete]);
    assert_eq!(r.exit_code, 1);
}

// ---------------------------------------------------------------------------------------------
// B. Structure

#[test]
fn b_deleted_middle_entry_is_missing() {
    let b = Ledger::standard().build();
    let mut lines = b.lines();
    lines.remove(entry_pos(&lines, 5));
    let r = check_lines(&b, &lines);
    // Later roots are recomputed without entry 5, so the signed checkpoints after it differ.
    assert_classes(&r, &[Missing], &[CheckpointMismatch, Incomplete]);
    let missing: Vec<_> = r.findings.iter().filter(|f| f.class == Missing).collect();
    assert_eq!(missing.len(), 1);
    assert_eq!(missing[0].seq, Some(5));
    assert_eq!(missing[0].detail, "sequence number is absent");
    assert_eq!(r.exit_code, 1);
}

#[test]
fn b_three_consecutive_deleted_entries_are_one_missing_range() {
    let b = Ledger::standard().build();
    let mut lines = b.lines();
    for seq in 3..=5 {
        lines.remove(entry_pos(&lines, seq));
    }
    let r = check_lines(&b, &lines);
    assert_classes(&r, &[Missing], &[CheckpointMismatch, Incomplete]);
    let missing: Vec<_> = r.findings.iter().filter(|f| f.class == Missing).collect();
    assert_eq!(missing.len(), 1, "one finding for the range: {missing:#?}");
    assert_eq!(missing[0].seq, Some(3));
    assert!(missing[0].detail.contains("3..=5"), "{}", missing[0].detail);
    assert_eq!(r.exit_code, 1);
}

#[test]
fn b_inserted_forged_entry_is_detected() {
    let b = Ledger::standard().build();
    let attacker = key(SEED_ATTACKER);
    let forge = |key_id| Forgery {
        seq: 5,
        time_ns: b.entry(4).time_ns + 1_000_000_000,
        prev_hash: b.entry(4).leaf,
        key_id,
        kind: "approval.decided".into(),
        subject: "CHG-2041".into(),
        payload: r#"{"approver":"mallory@example.com","change":"CHG-2041","decision":"approved"}"#
            .into(),
    };
    // Claiming the ledger's key: the signature fails. Under the attacker's own key id: the key
    // is not the one in force. Either way the genuine entry 5 that follows is a repeat and
    // entry 6 no longer links to what the tree now holds.
    for (key_id, class) in [
        (b.old.key_id(), BadSignature),
        (attacker.key_id(), UnknownKey),
    ] {
        let (line, _) = forge(key_id).sign(&attacker);
        let mut lines = b.lines();
        let i = entry_pos(&lines, 4);
        lines.insert(i + 1, line);
        let r = check_lines(&b, &lines);
        assert_classes(
            &r,
            &[class, Duplicate],
            &[Modified, CheckpointMismatch, Incomplete],
        );
        assert_eq!(seqs(&r, class), vec![5]);
        assert_eq!(seqs(&r, Duplicate), vec![5]);
        assert_eq!(r.exit_code, 1);
    }
}

#[test]
fn b_swapped_adjacent_entries_are_reordered() {
    let b = Ledger::standard().build();
    let mut lines = b.lines();
    let (i, j) = (entry_pos(&lines, 4), entry_pos(&lines, 5));
    lines.swap(i, j);
    let r = check_lines(&b, &lines);
    assert_classes(&r, &[Reordered], &[CheckpointMismatch, Incomplete]);
    assert_eq!(seqs(&r, Reordered), vec![4]);
    assert_eq!(r.exit_code, 1);
}

#[test]
fn b_swapped_distant_entries_are_reordered() {
    let b = Ledger::standard().build();
    let mut lines = b.lines();
    let (i, j) = (entry_pos(&lines, 2), entry_pos(&lines, 5));
    lines.swap(i, j);
    let r = check_lines(&b, &lines);
    assert_classes(&r, &[Reordered], &[CheckpointMismatch, Incomplete]);
    // 5 arrives where 2 belongs; 3, 4 and then 2 each come after a later entry.
    assert_eq!(seqs(&r, Reordered), vec![2, 3, 4]);
    assert_eq!(r.exit_code, 1);
}

#[test]
fn b_duplicated_entry_is_duplicate() {
    let b = Ledger::standard().build();
    let mut lines = b.lines();
    let i = entry_pos(&lines, 5);
    lines.insert(i + 1, lines[i].clone());
    let r = check_lines(&b, &lines);
    assert_eq!(
        found(&r),
        vec![(Duplicate, Some(5), None)],
        "{:#?}",
        r.findings
    );
    assert_eq!(r.exit_code, 1);
}

#[test]
fn b_renumbered_line_seq_is_modified() {
    let b = Ledger::standard().build();
    let mut lines = b.lines();
    edit_entry(&mut lines, 5, |p| p.seq = 9);
    let r = check_lines(&b, &lines);
    assert_eq!(
        found(&r),
        vec![(Modified, Some(9), None)],
        "{:#?}",
        r.findings
    );
    assert_eq!(r.findings[0].expected.as_deref(), Some("9"));
    assert_eq!(r.findings[0].actual.as_deref(), Some("5"));
    assert_eq!(r.exit_code, 1);
}

#[test]
fn b_gap_closed_by_renumbering_lines_is_still_missing() {
    let b = Ledger::standard().build();
    let mut lines = b.lines();
    lines.remove(entry_pos(&lines, 5));
    for seq in 6..12 {
        edit_entry(&mut lines, seq, |p| p.seq = seq - 1);
    }
    let r = check_lines(&b, &lines);
    assert_classes(&r, &[Modified, Missing], &[CheckpointMismatch, Incomplete]);
    assert_eq!(seqs(&r, Modified), (5..=10).collect::<Vec<_>>());
    assert_eq!(seqs(&r, Missing), vec![5]);
    assert_eq!(r.exit_code, 1);
}

#[test]
fn b_time_regression_with_valid_signature_is_only_time_regression() {
    let b = Ledger::standard().time_regression_at(5).build();
    assert!(b.entry(5).time_ns < b.entry(4).time_ns);
    assert!(b.entry(6).time_ns > b.entry(4).time_ns);
    let r = check(&b, &b.text());
    assert_eq!(
        found(&r),
        vec![(TimeRegression, Some(5), None)],
        "{:#?}",
        r.findings
    );
    assert_eq!(r.findings[0].expected, Some(b.entry(4).time_ns.to_string()));
    assert_eq!(r.findings[0].actual, Some(b.entry(5).time_ns.to_string()));
    assert_eq!(r.exit_code, 1);
}

// ---------------------------------------------------------------------------------------------
// C. Tail and head

#[test]
fn c_cut_tail_leaving_its_checkpoint_is_incomplete() {
    let b = Ledger::standard().build();
    let mut lines = b.lines();
    for seq in [11, 10] {
        lines.remove(entry_pos(&lines, seq));
    }
    let r = check_lines(&b, &lines);
    // Entries 8..=9 lie beyond the newest checkpoint that verifies; the one of size 12 covers
    // entries the bundle does not hold.
    assert_eq!(
        found(&r),
        vec![(Incomplete, None, Some(8)), (Incomplete, None, Some(12))],
        "{:#?}",
        r.findings
    );
    assert_eq!(r.exit_code, 2);
}

#[test]
fn c_cut_tail_with_its_checkpoints_is_stale_with_max_age() {
    let b = Ledger::standard().build();
    let mut lines = b.lines();
    lines.truncate(checkpoint_pos(&lines, 8) + 1);
    let now = b.last_time() + 30_000_000_000;
    let max_age = Some(3 * STEP_NS);
    // The whole ledger is fresh at that moment.
    let r = verify(&b.text(), &b.pinned(), None, max_age, now);
    assert_eq!(r.findings, vec![], "{:#?}", r.findings);
    // Cut after the checkpoint of 8, the bundle is a consistent shorter ledger: only its age
    // gives it away.
    let r = verify(&join(&lines), &b.pinned(), None, max_age, now);
    assert_eq!(found(&r), vec![(Stale, None, Some(8))], "{:#?}", r.findings);
    assert_eq!(r.exit_code, 2);
    // With the age check off and no anchor, nothing can tell (the CLI's --max-age defaults to
    // 24h for this reason).
    let r = verify(&join(&lines), &b.pinned(), None, None, now);
    assert_eq!(r.exit_code, 0);
}

#[test]
fn c_cut_tail_against_saved_state_is_rollback() {
    let b = Ledger::standard().build();
    let saved = check(&b, &b.text()).new_state.unwrap();
    assert_eq!(saved, b.state(12));
    let mut lines = b.lines();
    lines.truncate(checkpoint_pos(&lines, 8) + 1);
    let r = verify(&join(&lines), &b.pinned(), Some(saved), None, 0);
    assert_eq!(
        found(&r),
        vec![(Rollback, None, Some(8))],
        "{:#?}",
        r.findings
    );
    assert_eq!(r.findings[0].expected.as_deref(), Some("12"));
    assert_eq!(r.findings[0].actual.as_deref(), Some("8"));
    assert_eq!(r.exit_code, 1);
    assert_eq!(r.new_state, None);
}

#[test]
fn c_empty_bundle_is_never_clean() {
    let b = Ledger::standard().build();
    // Zero bytes: not even a header.
    let r = check(&b, "");
    assert_classes(&r, &[Modified, Incomplete], &[]);
    assert_eq!(r.exit_code, 1);
    // A header (and the informational key lines) with no entries and no checkpoint.
    let mut lines = vec![b.header()];
    lines.extend(b.key_lines());
    let r = check_lines(&b, &lines);
    assert_eq!(
        found(&r),
        vec![(Incomplete, None, None)],
        "{:#?}",
        r.findings
    );
    assert_eq!(r.exit_code, 2);
    // The same, to a reviewer who saw the ledger at 12.
    let r = verify(&join(&lines), &b.pinned(), Some(b.state(12)), None, 0);
    assert_classes(&r, &[Incomplete, Rollback], &[]);
    assert_eq!(r.exit_code, 1);
}

#[test]
fn c_genesis_payload_tampered_is_modified() {
    let b = Ledger::standard().build();
    let mut lines = b.lines();
    edit_entry(&mut lines, 0, |p| {
        let text = p.payload.take().unwrap();
        p.payload = Some(text.replace("changetrail 0.1.0", "changetrail 0.1.1"));
    });
    let r = check_lines(&b, &lines);
    // The payload that names the first key no longer opens, so entry 0 has no trusted key.
    assert_classes(&r, &[Modified], &[UnknownKey]);
    assert!(
        r.findings.iter().all(|f| f.seq == Some(0)),
        "{:#?}",
        r.findings
    );
    assert_eq!(r.exit_code, 1);
}

#[test]
fn c_genesis_entry_bytes_tampered_is_modified() {
    let b = Ledger::standard().build();
    let mut lines = b.lines();
    edit_entry(&mut lines, 0, |p| {
        let mut e = p.decoded();
        e.prev_hash.0[31] ^= 1;
        p.set_entry(&e);
    });
    let r = check_lines(&b, &lines);
    assert_classes(
        &r,
        &[Modified, BadSignature, CheckpointMismatch],
        &[Incomplete],
    );
    assert_eq!(seqs(&r, Modified), vec![0, 1]);
    assert_eq!(seqs(&r, BadSignature), vec![0]);
    assert_eq!(r.exit_code, 1);
}

#[test]
fn c_genesis_replaced_by_another_key_is_unknown_key() {
    let b = Ledger::standard().build();
    let attacker = key(SEED_ATTACKER);
    let (line, _) = Forgery {
        seq: 0,
        time_ns: b.entry(0).time_ns,
        prev_hash: entry::genesis_prev_hash(&b.origin),
        key_id: attacker.key_id(),
        kind: "ledger.created".into(),
        subject: String::new(),
        payload: genesis_draft(&attacker, "changetrail 0.1.0")
            .unwrap()
            .payload()
            .to_owned(),
    }
    .sign(&attacker);
    let mut lines = b.lines();
    let i = entry_pos(&lines, 0);
    lines[i] = line;
    let r = check_lines(&b, &lines);
    assert_classes(
        &r,
        &[UnknownKey, Modified, CheckpointMismatch],
        &[Incomplete],
    );
    // Entry 0 is named twice: its key is not the pinned one, and so it has no key in force.
    assert_eq!(dedup(seqs(&r, UnknownKey)), vec![0]);
    assert_eq!(seqs(&r, Modified), vec![1]);
    assert_eq!(r.exit_code, 1);
}

// ---------------------------------------------------------------------------------------------
// D. Checkpoints

#[test]
fn d_checkpoint_signature_bit_flip_is_bad_checkpoint() {
    let b = Ledger::standard().build();
    let mut lines = b.lines();
    replace_checkpoint(&mut lines, 4, &flip_note_signature(b.note(4)));
    let r = check_lines(&b, &lines);
    assert_eq!(
        found(&r),
        vec![(BadCheckpoint, None, Some(4))],
        "{:#?}",
        r.findings
    );
    assert_eq!(r.exit_code, 1);
    // On the newest checkpoint, the entries after the previous one are also uncovered.
    let mut lines = b.lines();
    replace_checkpoint(&mut lines, 12, &flip_note_signature(b.note(12)));
    let r = check_lines(&b, &lines);
    assert_eq!(
        found(&r),
        vec![(Incomplete, None, Some(8)), (BadCheckpoint, None, Some(12))],
        "{:#?}",
        r.findings
    );
    assert_eq!(r.exit_code, 1);
}

#[test]
fn d_checkpoint_signed_only_by_unknown_keys_is_unknown_key() {
    let b = Ledger::standard().build();
    let body = body_of(b.note(4));
    let attacker = key(SEED_ATTACKER);
    // Another key of the same name, or a witness the reviewer never heard of.
    for note in [Note::sign(&body, &attacker), Note::sign(&body, &witness(1))] {
        let mut lines = b.lines();
        replace_checkpoint(&mut lines, 4, &note);
        let r = check_lines(&b, &lines);
        assert_eq!(
            found(&r),
            vec![(UnknownKey, None, Some(4))],
            "{:#?}",
            r.findings
        );
        assert_eq!(r.exit_code, 1);
    }
    // The trusted key's id as the hint, over someone else's signature: a known key failed.
    let mut raw = b.old.key_id().0.to_vec();
    raw.extend_from_slice(&attacker.sign(body.as_bytes()));
    let note = format!("{body}\n\u{2014} {ORIGIN} {}\n", b64(&raw));
    let mut lines = b.lines();
    replace_checkpoint(&mut lines, 4, &note);
    let r = check_lines(&b, &lines);
    assert_eq!(
        found(&r),
        vec![(BadCheckpoint, None, Some(4))],
        "{:#?}",
        r.findings
    );
    assert_eq!(r.exit_code, 1);
}

#[test]
fn d_validly_signed_wrong_root_is_checkpoint_mismatch() {
    let b = Ledger::standard().build();
    let forged = Checkpoint {
        origin: b.origin.clone(),
        size: 4,
        root: b.root(3),
    }
    .sign(&b.old);
    let mut lines = b.lines();
    replace_checkpoint(&mut lines, 4, &forged);
    let r = check_lines(&b, &lines);
    assert_eq!(
        found(&r),
        vec![(CheckpointMismatch, None, Some(4))],
        "{:#?}",
        r.findings
    );
    assert_eq!(r.findings[0].expected, Some(b.root(4).to_b64()));
    assert_eq!(r.findings[0].actual, Some(b.root(3).to_b64()));
    assert_eq!(r.exit_code, 1);
    // Next to the genuine checkpoint it is also evidence of a fork: two signed roots for 4.
    let mut lines = b.lines();
    let i = checkpoint_pos(&lines, 4);
    lines.insert(i + 1, bundle::write::checkpoint(&forged));
    let r = check_lines(&b, &lines);
    assert_eq!(
        found(&r),
        vec![(CheckpointMismatch, None, Some(4)), (Fork, None, Some(4))],
        "{:#?}",
        r.findings
    );
}

#[test]
fn d_checkpoint_of_another_origin_is_bad_checkpoint() {
    let b = Ledger::standard().build();
    let staging = "ledger.example.com/staging";
    let other = key_in(staging, SEED_OLD);
    let note = Checkpoint {
        origin: other.origin().clone(),
        size: 4,
        root: b.root(4),
    }
    .sign(&other);
    let mut lines = b.lines();
    replace_checkpoint(&mut lines, 4, &note);
    let r = check_lines(&b, &lines);
    assert_eq!(
        found(&r),
        vec![(BadCheckpoint, None, Some(4))],
        "{:#?}",
        r.findings
    );
    assert_eq!(r.findings[0].actual.as_deref(), Some(staging));
    assert_eq!(r.exit_code, 1);
}

#[test]
fn d_checkpoint_missing_a_body_line_is_bad_checkpoint() {
    let b = Ledger::standard().build();
    let root = b.root(4).to_b64();
    for body in [
        format!("{ORIGIN}\n{root}\n"),
        format!("4\n{root}\n"),
        format!("{ORIGIN}\n4\n"),
        format!("{ORIGIN}\n4\n{root}\nextension\n"),
    ] {
        let mut lines = b.lines();
        replace_checkpoint(&mut lines, 4, &Note::sign(&body, &b.old));
        let r = check_lines(&b, &lines);
        assert_eq!(found(&r), vec![(BadCheckpoint, None, None)], "{body:?}");
        assert_eq!(r.exit_code, 1);
    }
}

#[test]
fn d_extra_unknown_key_signatures_pass() {
    let b = Ledger::standard().build();
    let attacker = key(SEED_ATTACKER);
    let mut lines = b.lines();
    for (size, note) in &b.checkpoints {
        let note = cosign(&cosign(&cosign(note, &witness(1)), &witness(2)), &attacker);
        assert_eq!(Note::parse(&note).unwrap().signatures.len(), 4);
        replace_checkpoint(&mut lines, *size, &note);
    }
    let r = check_lines(&b, &lines);
    assert_eq!(r.findings, vec![], "{:#?}", r.findings);
    assert_eq!(r.exit_code, 0);
}

#[test]
fn d_signature_order_does_not_matter() {
    let b = Ledger::standard().build();
    let body = body_of(b.note(4));
    let ours = signature_line(&body, &b.old);
    let w1 = signature_line(&body, &witness(1));
    let w2 = signature_line(&body, &witness(2));
    for order in [
        [ours.clone(), w1.clone(), w2.clone()],
        [w1.clone(), ours.clone(), w2.clone()],
        [w1.clone(), w2.clone(), ours.clone()],
    ] {
        let mut lines = b.lines();
        replace_checkpoint(&mut lines, 4, &note_with(&body, &order));
        let r = check_lines(&b, &lines);
        assert_eq!(r.findings, vec![], "{:#?}", r.findings);
        assert_eq!(r.exit_code, 0);
    }
}

#[test]
fn d_signature_count_17_and_100_pass_101_is_rejected() {
    let b = Ledger::standard().build();
    let body = body_of(b.note(4));
    let ours = signature_line(&body, &b.old);
    let witnesses: Vec<String> = (0..100)
        .map(|i| signature_line(&body, &witness(i)))
        .collect();
    let with = |n_witnesses: usize, ours_last: bool| {
        let mut sigs = witnesses[..n_witnesses].to_vec();
        if ours_last {
            sigs.push(ours.clone());
        } else {
            sigs.insert(0, ours.clone());
        }
        let mut lines = b.lines();
        replace_checkpoint(&mut lines, 4, &note_with(&body, &sigs));
        check_lines(&b, &lines)
    };
    for (n, ours_last) in [(16, false), (16, true), (99, false), (99, true)] {
        let r = with(n, ours_last);
        assert_eq!(
            r.findings,
            vec![],
            "{} signatures: {:#?}",
            n + 1,
            r.findings
        );
        assert_eq!(r.exit_code, 0);
    }
    for ours_last in [false, true] {
        let r = with(100, ours_last);
        assert_eq!(
            found(&r),
            vec![(BadCheckpoint, None, None)],
            "{:#?}",
            r.findings
        );
        assert!(r.findings[0].detail.contains("more than 100"));
        assert_eq!(r.exit_code, 1);
    }
}

#[test]
fn d_non_canonical_size_is_bad_checkpoint() {
    let b = Ledger::standard().build();
    let root = b.root(4).to_b64();
    for size in ["04", "+4", " 4", "4 ", "0x4", "18446744073709551620"] {
        let body = format!("{ORIGIN}\n{size}\n{root}\n");
        let mut lines = b.lines();
        replace_checkpoint(&mut lines, 4, &Note::sign(&body, &b.old));
        let r = check_lines(&b, &lines);
        assert_eq!(
            found(&r),
            vec![(BadCheckpoint, None, None)],
            "size {size:?}"
        );
        assert_eq!(r.exit_code, 1);
    }
}

#[test]
fn d_control_character_in_note_is_bad_checkpoint() {
    let b = Ledger::standard().build();
    let root = b.root(4).to_b64();
    let sig = |body: &str| signature_line(body, &b.old);
    let mut notes = Vec::new();
    for (line1, line2) in [
        (format!("{ORIGIN}\r"), "4".to_owned()),
        (ORIGIN.to_owned(), "4\t".to_owned()),
        (ORIGIN.to_owned(), "4\u{0}".to_owned()),
        (ORIGIN.to_owned(), "4\u{7f}".to_owned()),
        (ORIGIN.to_owned(), "4\u{85}".to_owned()),
    ] {
        // Validly signed over the text as it stands.
        let body = format!("{line1}\n{line2}\n{root}\n");
        notes.push(note_with(&body, &[sig(&body)]));
    }
    let body = body_of(b.note(4));
    notes.push(note_with(&body, &[sig(&body).replacen(' ', "\t", 1)]));
    notes.push(b.note(4).replace('\n', "\r\n"));
    for note in notes {
        let mut lines = b.lines();
        replace_checkpoint(&mut lines, 4, &note);
        let r = check_lines(&b, &lines);
        assert_eq!(found(&r), vec![(BadCheckpoint, None, None)], "{note:?}");
        assert!(
            r.findings[0].detail.contains("control character"),
            "{note:?}"
        );
        assert_eq!(r.exit_code, 1);
    }
}

/// A note cannot be non-UTF-8 inside a JSON line; the line itself is then unreadable.
#[test]
fn d_non_utf8_note_is_modified() {
    let b = Ledger::standard().build();
    let lines = b.lines();
    let i = checkpoint_pos(&lines, 4);
    // A lone surrogate escape.
    let mut l = lines.clone();
    l[i] = l[i].replacen("\\u2014", "\\ud800", 1);
    let r = check_lines(&b, &l);
    assert_eq!(found(&r), vec![(Modified, None, None)], "{:#?}", r.findings);
    assert_line_modified(&r, i + 1);
    // A raw invalid byte.
    let mut bytes = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        bytes.extend_from_slice(line.as_bytes());
        if n == i {
            bytes.truncate(bytes.len() - 3);
            bytes.extend_from_slice(b"\xff\"}");
        }
        bytes.push(b'\n');
    }
    let r = verify_bytes(&bytes, &b.pinned(), None, None, 0);
    assert_eq!(found(&r), vec![(Modified, None, None)], "{:#?}", r.findings);
    assert!(r.findings[0].detail.contains("UTF-8"));
    assert_eq!(r.exit_code, 1);
}

// ---------------------------------------------------------------------------------------------
// E. Rollback and fork

#[test]
fn e_older_checkpoint_against_newer_state_is_rollback() {
    let now = Ledger::standard().build();
    let saved = check(&now, &now.text()).new_state.unwrap();
    // The same ledger as exported when it held 8 entries.
    let earlier = Ledger::new(8).rotate_at(6).build();
    assert_eq!(earlier.root(8), now.root(8));
    let r = verify(&earlier.text(), &now.pinned(), Some(saved), None, 0);
    assert_eq!(
        found(&r),
        vec![(Rollback, None, Some(8))],
        "{:#?}",
        r.findings
    );
    assert_eq!(r.exit_code, 1);
    assert_eq!(r.new_state, None);
    // Served in the right order, each bundle moves the state forward.
    let r = verify(&earlier.text(), &now.pinned(), Some(now.state(4)), None, 0);
    assert_eq!(r.exit_code, 0);
    assert_eq!(r.new_state, Some(now.state(8)));
}

#[test]
fn e_rewrite_with_the_same_key_is_fork_against_a_saved_state() {
    let honest = Ledger::standard().build();
    let rewrite = Ledger::standard().rewritten().build();
    assert_ne!(rewrite.root(12), honest.root(12));
    // Without an anchor a complete rewrite by the key holder verifies clean: every entry and
    // checkpoint is validly signed by the pinned key (and its rotation). Only a saved state, a
    // write-once copy of the checkpoints or a witness can catch it (LEDGER.md "Verification").
    let r = check(&honest, &rewrite.text());
    assert_eq!(r.findings, vec![], "{:#?}", r.findings);
    assert_eq!(r.exit_code, 0);
    // Same size, different root.
    let r = verify(
        &rewrite.text(),
        &honest.pinned(),
        Some(honest.state(12)),
        None,
        0,
    );
    assert_eq!(found(&r), vec![(Fork, None, Some(12))], "{:#?}", r.findings);
    assert_eq!(r.findings[0].expected, Some(honest.root(12).to_b64()));
    assert_eq!(r.findings[0].actual, Some(rewrite.root(12).to_b64()));
    assert_eq!(r.exit_code, 1);
    // A state at a smaller size: the rewrite's tree disagrees at that size.
    let r = verify(
        &rewrite.text(),
        &honest.pinned(),
        Some(honest.state(8)),
        None,
        0,
    );
    assert_eq!(found(&r), vec![(Fork, None, Some(8))], "{:#?}", r.findings);
    assert_eq!(r.exit_code, 1);
}

#[test]
fn e_two_signed_roots_for_one_size_in_a_bundle_are_a_fork() {
    let honest = Ledger::standard().build();
    let rewrite = Ledger::standard().rewritten().build();
    let mut lines = honest.lines();
    lines.push(bundle::write::checkpoint(rewrite.note(12)));
    let r = check_lines(&honest, &lines);
    assert_eq!(
        found(&r),
        vec![(CheckpointMismatch, None, Some(12)), (Fork, None, Some(12))],
        "{:#?}",
        r.findings
    );
    assert_eq!(r.exit_code, 1);
}

/// RFC 6962 MTH over `leaves`.
fn mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Hash::of(&[]),
        1 => leaves[0],
        n => {
            let k = 1 << (usize::BITS - 1 - (n - 1).leading_zeros());
            node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

/// A bundle of entries `from..` of `b` (a prefix line summarises the rest), with a consistency
/// proof from `proof_from` to the end computed over `b`'s own tree.
fn range_bundle(b: &Built, from: u64, proof_from: u64) -> String {
    let leaves: Vec<Hash> = b.entries.iter().map(|e| e.leaf).collect();
    let end = leaves.len() as u64;
    let mut lines = vec![b.header()];
    lines.extend(b.key_lines());
    lines.push(bundle::write::prefix(from, b.head_at(from).range.peaks()));
    let all = b.lines();
    let first = entry_pos(&all, from);
    lines.extend(all[first..].iter().cloned());
    let proof: Vec<Hash> = consistency_ranges(proof_from, end)
        .unwrap()
        .into_iter()
        .map(|r| mth(&leaves[r.start as usize..r.end as usize]))
        .collect();
    lines.push(bundle::write::consistency(proof_from, end, &proof));
    join(&lines)
}

/// A bundle that starts after the reviewer's saved state must prove, with a consistency proof,
/// that it extends that state; a rewritten history cannot (the linear-fake class, immudb
/// CVE-2022-36111: a later proof must not re-explain what the reviewer already saw).
#[test]
fn e_range_bundle_must_prove_consistency_with_the_saved_state() {
    let honest = Ledger::standard().build();
    let rewrite = Ledger::standard().rewritten().build();
    // The range starts after the rotation, so the reviewer pins both keys.
    let pinned = vec![honest.old.vkey().clone(), honest.new.vkey().clone()];
    let run = |text: &str| verify(text, &pinned, Some(honest.state(4)), None, 0);

    let r = run(&range_bundle(&honest, 8, 4));
    assert_eq!(r.findings, vec![], "{:#?}", r.findings);
    assert_eq!(r.new_state, Some(honest.state(12)));

    // Without its proof the range says nothing about entries 0..4.
    let text = range_bundle(&honest, 8, 4);
    let without: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with("{\"type\":\"consistency\""))
        .map(str::to_owned)
        .collect();
    let r = run(&join(&without));
    assert_eq!(found(&r), vec![(Fork, None, Some(4))], "{:#?}", r.findings);
    assert_eq!(r.exit_code, 1);

    // The rewrite's own proof does not lead from the honest root at 4.
    let r = run(&range_bundle(&rewrite, 8, 4));
    assert_eq!(found(&r), vec![(Fork, None, Some(4))], "{:#?}", r.findings);
    assert_eq!(r.exit_code, 1);
}

/// A server that renames the ledger must not make the reviewer's verifier start afresh
/// (the immudb CVE-2022-39199 class): trust stays with the pinned keys' origin and the state.
#[test]
fn e_different_header_origin_does_not_start_fresh() {
    let b = Ledger::standard().build();
    let renamed = "ledger.example.com/prod-restored";
    let mut lines = b.lines();
    lines[0] = bundle::write::header(renamed, CREATED_AT);
    let r = check_lines(&b, &lines);
    assert!(r.has(UnknownKey), "{:#?}", r.findings);
    assert!(
        r.findings
            .iter()
            .any(|f| f.class == UnknownKey && f.actual.as_deref() == Some(renamed))
    );
    assert_eq!(r.exit_code, 1);
    let r = verify(&join(&lines), &b.pinned(), Some(b.state(12)), None, 0);
    assert!(r.has(UnknownKey) && r.has(Rollback), "{:#?}", r.findings);
    assert_eq!(r.exit_code, 1);
    assert_eq!(r.new_state, None);

    // A whole ledger under the new name (keys of that name, same seeds): still not trusted.
    let other = Ledger::standard().origin(renamed).build();
    let r = verify(&other.text(), &b.pinned(), Some(b.state(12)), None, 0);
    assert!(r.has(UnknownKey) && r.has(Rollback), "{:#?}", r.findings);
    assert_eq!(r.exit_code, 1);
}

// ---------------------------------------------------------------------------------------------
// F. Keys

#[test]
fn f_entry_after_rotation_signed_by_the_old_key_is_unknown_key() {
    let b = Ledger::standard().sign_with(7, Signer::Old).build();
    let r = check(&b, &b.text());
    assert_eq!(
        found(&r),
        vec![(UnknownKey, Some(7), None)],
        "{:#?}",
        r.findings
    );
    assert_eq!(r.findings[0].expected, Some(b.new.key_id().to_hex()));
    assert_eq!(r.findings[0].actual, Some(b.old.key_id().to_hex()));
    assert_eq!(r.exit_code, 1);
}

/// A checkpoint after the rotation signed by the rotated-out key (still pinned, still valid
/// as a signature) is not trusted for that size.
#[test]
fn f_checkpoint_after_rotation_signed_by_the_old_key_is_unknown_key() {
    let b = Ledger::standard().build();
    let mut lines = b.lines();
    let body = body_of(b.note(12));
    replace_checkpoint(&mut lines, 12, &Note::sign(&body, &b.old));
    let r = check_lines(&b, &lines);
    assert_eq!(
        found(&r),
        vec![(Incomplete, None, Some(8)), (UnknownKey, None, Some(12))],
        "{:#?}",
        r.findings
    );
    assert_eq!(r.exit_code, 1);
}

/// A rotation to a small-order public key (`is_weak`) is refused like any invalid rotation.
#[test]
fn f_rotation_to_a_weak_key_is_modified() {
    let mut identity = vec![0x01u8, 0x01];
    identity.resize(33, 0);
    let weak = RotationPayload {
        new_vkey: format!("{ORIGIN}+00000000+{}", b64(&identity)),
        new_key_signature: b64(&[0u8; 64]),
    };
    let b = Ledger::standard().rotation_payload(weak).build();
    let r = check(&b, &b.text());
    assert_classes(&r, &[Modified, UnknownKey], &[Incomplete]);
    assert_eq!(seqs(&r, Modified), vec![6]);
    let modified = r.findings.iter().find(|f| f.class == Modified).unwrap();
    assert!(modified.detail.contains("weak"), "{}", modified.detail);
    assert_eq!(seqs(&r, UnknownKey), (7..12).collect::<Vec<_>>());
    assert_eq!(r.exit_code, 1);
}

#[test]
fn f_history_resigned_by_a_new_key_is_unknown_key_when_the_old_key_is_pinned() {
    let honest = Ledger::standard().build();
    let resigned = Ledger::standard().keys(SEED_ATTACKER, [0x77; 32]).build();
    let r = check(&honest, &resigned.text());
    assert_classes(&r, &[UnknownKey], &[Incomplete]);
    assert_eq!(dedup(seqs(&r, UnknownKey)), (0..12).collect::<Vec<_>>());
    assert_eq!(sizes(&r, UnknownKey), vec![4, 8, 12]);
    assert_eq!(r.exit_code, 1);
    // Unpinned, the resigned ledger is self-consistent: that is what pinning is for.
    let r = verify(&resigned.text(), &[], None, None, 0);
    assert_eq!(found(&r), vec![(Unpinned, None, None)]);
    assert_eq!(r.exit_code, 0);
}

#[test]
fn f_rotation_with_a_wrong_new_key_signature_is_modified_and_later_entries_unknown_key() {
    let b = Ledger::standard().bad_rotation_signature().build();
    let r = check(&b, &b.text());
    assert_classes(&r, &[Modified, UnknownKey], &[Incomplete]);
    assert_eq!(seqs(&r, Modified), vec![6]);
    assert_eq!(seqs(&r, UnknownKey), (7..12).collect::<Vec<_>>());
    // The checkpoints the new key signed are not trusted either.
    assert_eq!(sizes(&r, UnknownKey), vec![8, 12]);
    assert_eq!(r.exit_code, 1);
}

#[test]
fn f_rotation_boundary_passes() {
    let b = Ledger::standard().build();
    let key_id = |seq| EntryParts::parse(&b.entry_line(seq)).decoded().key_id;
    assert_eq!(
        key_id(6),
        b.old.key_id(),
        "the rotation is signed by the old key"
    );
    assert_eq!(key_id(7), b.new.key_id(), "the next entry by the new key");
    let r = check(&b, &b.text());
    assert_eq!(r.findings, vec![], "{:#?}", r.findings);
    assert_eq!(r.summary.keys[1], (7, b.new.vkey().to_string()));
    // A rotation that completes a checkpoint: the checkpoint of 4 is signed by the new key.
    let b = Ledger::new(12).rotate_at(3).build();
    let r = check(&b, &b.text());
    assert_eq!(r.findings, vec![], "{:#?}", r.findings);
    assert_eq!(r.exit_code, 0);
}

#[test]
fn f_new_key_one_seq_early_is_unknown_key() {
    let b = Ledger::standard().sign_with(6, Signer::New).build();
    let r = check(&b, &b.text());
    // The rotation itself is not signed by the key in force, so it is not followed either.
    assert_classes(&r, &[UnknownKey], &[Incomplete]);
    assert_eq!(seqs(&r, UnknownKey), (6..12).collect::<Vec<_>>());
    assert_eq!(r.exit_code, 1);
}

#[test]
fn f_deleted_rotation_entry_leaves_the_new_key_untrusted() {
    let b = Ledger::standard().build();
    let mut lines = b.lines();
    lines.remove(entry_pos(&lines, 6));
    let r = check_lines(&b, &lines);
    assert_classes(
        &r,
        &[Missing, UnknownKey],
        &[CheckpointMismatch, Incomplete],
    );
    assert_eq!(seqs(&r, Missing), vec![6]);
    assert_eq!(seqs(&r, UnknownKey), (7..12).collect::<Vec<_>>());
    assert_eq!(r.exit_code, 1);
}

#[test]
fn f_non_canonical_s_is_bad_signature() {
    let b = Ledger::standard().build();
    for seq in [5, 9] {
        let mut lines = b.lines();
        edit_entry(&mut lines, seq, |p| p.sig = malleate(&p.sig));
        let r = check_lines(&b, &lines);
        assert_eq!(
            found(&r),
            vec![(BadSignature, Some(seq), None)],
            "{:#?}",
            r.findings
        );
        assert_eq!(r.exit_code, 1);
    }
}

#[test]
fn f_one_bad_signature_among_3000_entries_is_pinpointed() {
    let b = Ledger::new(3000)
        .rotate_at(1500)
        .checkpoint_every(500)
        .build();
    let mut lines = b.lines();
    edit_entry(&mut lines, 1777, |p| p.sig[40] ^= 0x01);
    let r = verify(&join(&lines), &b.pinned(), None, None, 0);
    assert_eq!(
        found(&r),
        vec![(BadSignature, Some(1777), None)],
        "{:#?}",
        r.findings
    );
    assert_eq!(r.summary.signatures, 3000);
    assert_eq!(r.exit_code, 1);
}

/// Someone without the old key appends a rotation to their own key, under the old key's id.
/// The rotation's entry signature fails; what it hands over must not be trusted.
fn forged_rotation() -> (Built, Vec<String>) {
    let b = Ledger::standard().build();
    let attacker = key(SEED_ATTACKER);
    let head = b.head_at(6);
    let payload = serde_json::to_string(&RotationPayload::sign(&attacker, 6)).unwrap();
    let (line, leaf) = Forgery {
        seq: 6,
        time_ns: b.entry(6).time_ns,
        prev_hash: head.last_leaf,
        key_id: b.old.key_id(),
        kind: "key.rotated".into(),
        subject: String::new(),
        payload,
    }
    .sign(&attacker);
    let mut lines = b.lines();
    lines.truncate(entry_pos(&lines, 6));
    lines.push(line);
    let mut after = head;
    after.size = 7;
    after.last_leaf = leaf;
    after.last_time_ns = b.entry(6).time_ns;
    after.range.push(leaf, |_, _| {});
    lines.extend(extend_chain(&after, &attacker, 5, 4));
    (b, lines)
}

#[test]
fn f_forged_rotation_is_bad_signature() {
    let (b, lines) = forged_rotation();
    let r = check_lines(&b, &lines);
    assert!(seqs(&r, BadSignature) == vec![6], "{:#?}", r.findings);
    assert_eq!(r.exit_code, 1);
}

/// LEDGER.md "Key rotation": a verifier accepts a new key only through a valid rotation entry
/// signed by a key it already trusts. A rotation whose entry signature fails is not valid, so the
/// entries and checkpoints signed by the key it names are UNKNOWN_KEY.
#[test]
fn f_forged_rotation_does_not_hand_over_trust() {
    let (b, lines) = forged_rotation();
    let r = check_lines(&b, &lines);
    assert_eq!(seqs(&r, BadSignature), vec![6], "{:#?}", r.findings);
    assert_eq!(
        seqs(&r, UnknownKey),
        (7..12).collect::<Vec<_>>(),
        "{:#?}",
        r.findings
    );
    assert_eq!(sizes(&r, UnknownKey), vec![8, 12], "{:#?}", r.findings);
}

// ---------------------------------------------------------------------------------------------
// G. Binding of payloads

#[test]
fn g_payload_with_the_wrong_salt_is_modified() {
    let b = Ledger::standard().build();
    let mut lines = b.lines();
    edit_entry(&mut lines, 5, |p| p.salt = Some(salt(9, 5).to_vec()));
    let r = check_lines(&b, &lines);
    assert_eq!(
        found(&r),
        vec![(Modified, Some(5), None)],
        "{:#?}",
        r.findings
    );
    assert!(r.findings[0].detail.contains("commitment"));
    assert_eq!(r.exit_code, 1);
}

#[test]
fn g_payload_of_another_entry_is_modified() {
    let b = Ledger::standard().build();
    let mut lines = b.lines();
    let four = EntryParts::parse(&lines[entry_pos(&lines, 4)]);
    edit_entry(&mut lines, 5, |p| {
        p.salt = four.salt.clone();
        p.payload = four.payload.clone();
    });
    let r = check_lines(&b, &lines);
    assert_eq!(
        found(&r),
        vec![(Modified, Some(5), None)],
        "{:#?}",
        r.findings
    );
    assert_eq!(r.exit_code, 1);
}

#[test]
fn g_erased_payload_with_a_logged_erasure_is_redacted() {
    let b = Ledger::standard().erase(2, 9).build();
    let erasure: ErasurePayload = serde_json::from_str(&b.entry(9).payload).unwrap();
    assert_eq!(erasure.erased_seq, 2);
    assert_eq!(b.entry(9).kind, "payload.erased");
    let line = b.entry_line(2);
    assert!(line.ends_with(",\"salt\":null,\"payload\":null}"), "{line}");
    let r = check(&b, &b.text());
    assert_eq!(
        found(&r),
        vec![(Redacted, Some(2), None)],
        "{:#?}",
        r.findings
    );
    assert_eq!(r.summary.redacted, 1);
    assert_eq!(r.exit_code, 0);
    assert_eq!(r.new_state, Some(b.state(12)));
}

#[test]
fn g_nulled_payload_without_an_erasure_is_missing() {
    let b = Ledger::standard().build();
    let mut lines = b.lines();
    edit_entry(&mut lines, 2, |p| {
        p.salt = None;
        p.payload = None;
    });
    let r = check_lines(&b, &lines);
    assert_eq!(
        found(&r),
        vec![(Missing, Some(2), None)],
        "{:#?}",
        r.findings
    );
    assert_eq!(r.exit_code, 1);
    // An erasure names 2; nulling 3 as well is not covered by it.
    let b = Ledger::standard().erase(2, 9).build();
    let mut lines = b.lines();
    edit_entry(&mut lines, 3, |p| {
        p.salt = None;
        p.payload = None;
    });
    let r = check_lines(&b, &lines);
    assert_eq!(
        found(&r),
        vec![(Missing, Some(3), None), (Redacted, Some(2), None)],
        "{:#?}",
        r.findings
    );
    assert_eq!(r.exit_code, 1);
    // Half an erasure: salt gone, payload kept.
    let b = Ledger::standard().build();
    let mut lines = b.lines();
    edit_entry(&mut lines, 2, |p| p.salt = None);
    let r = check_lines(&b, &lines);
    assert_eq!(
        found(&r),
        vec![(Modified, Some(2), None)],
        "{:#?}",
        r.findings
    );
    assert_eq!(r.exit_code, 1);
}

// ---------------------------------------------------------------------------------------------
// I. Any single-byte change to a bundle is detected

struct Mutable {
    text: Vec<u8>,
    pinned: Vec<Vkey>,
    /// Byte offsets a change must be detected at.
    positions: Vec<usize>,
}

/// A bundle with a rotation, an erasure and three checkpoints, and the offsets that matter.
/// Excluded, because LEDGER.md gives them no trust: the header's `created_at` value (when the
/// bundle was written) and the `key` lines (informational; trust comes from pinned keys and
/// rotation entries). Everything else, separators and newlines included, is covered.
static MUTABLE: LazyLock<Mutable> = LazyLock::new(|| {
    let b = Ledger::standard().erase(2, 9).build();
    let mut positions = Vec::new();
    let mut offset = 0;
    for (n, line) in b.lines().iter().enumerate() {
        let len = line.len() + 1;
        if line.starts_with("{\"type\":\"key\"") {
        } else if n == 0 {
            let value = line.find("\"created_at\":\"").unwrap() + "\"created_at\":\"".len();
            let value_end = value + CREATED_AT.len();
            assert_eq!(&line[value..value_end], CREATED_AT);
            positions.extend(
                (offset..offset + len)
                    .filter(|p| !(offset + value..offset + value_end).contains(p)),
            );
        } else {
            positions.extend(offset..offset + len);
        }
        offset += len;
    }
    Mutable {
        text: b.text().into_bytes(),
        pinned: b.pinned(),
        positions,
    }
});

fn verify_mutable(bytes: &[u8]) -> Report {
    verify_bytes(bytes, &MUTABLE.pinned, None, None, 0)
}

#[test]
fn i_mutation_baseline_is_clean() {
    let r = verify_mutable(&MUTABLE.text);
    assert_eq!(
        found(&r),
        vec![(Redacted, Some(2), None)],
        "{:#?}",
        r.findings
    );
    assert_eq!(r.exit_code, 0);
    assert!(MUTABLE.positions.len() > MUTABLE.text.len() * 3 / 4);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn i_any_single_byte_change_is_detected(pick in any::<prop::sample::Index>(), xor in 1u8..=255) {
        let m = &*MUTABLE;
        let at = m.positions[pick.index(m.positions.len())];
        let mut bytes = m.text.clone();
        bytes[at] ^= xor;
        let r = verify_mutable(&bytes);
        prop_assert_ne!(
            r.exit_code, 0,
            "byte {} changed from {:?} to {:?} went unnoticed: {:#?}",
            at, m.text[at] as char, bytes[at] as char, r.findings
        );
    }
}
