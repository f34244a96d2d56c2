//! `verify --policy`: the checkpoint a verification relies on (the newest verified one) must
//! carry the tlog-policy's quorum of valid witness cosignatures; if it does not, the verifier
//! walks back to the newest checkpoint that does and says how many entries lie beyond it.

use super::{Class, Finding, Report};
use crate::core::ledger::policy::Policy;

/// The UNWITNESSED finding for `report`, if any. `notes` are the checkpoint notes the data
/// carries (with their cosignature lines), any order; only sizes up to the newest verified
/// checkpoint and without a checkpoint finding of their own count.
pub fn unwitnessed(report: &Report, policy: &Policy, notes: &[(u64, String)]) -> Option<Finding> {
    let newest = report.summary.newest.as_ref()?;
    let entries = report.summary.last_seq.map_or(newest.size, |l| l + 1);
    let flawed = |size: u64| {
        report.findings.iter().any(|f| {
            f.size == Some(size)
                && matches!(f.class, Class::BadCheckpoint | Class::CheckpointMismatch)
        })
    };
    let mut candidates: Vec<&(u64, String)> = notes
        .iter()
        .filter(|(s, _)| *s <= newest.size && !flawed(*s))
        .collect();
    candidates.sort_by_key(|c| std::cmp::Reverse(c.0));
    // The newest one's own note may be the only copy (e.g. the verifier's), so it is tried too.
    let own = (newest.size, newest.note.clone());
    let mut missing: Option<Vec<String>> = None;
    let mut trouble: Option<String> = None;
    for (size, text) in std::iter::once(&own).chain(candidates) {
        match policy.check(text) {
            // Only over a checkpoint this run verified: the same size with another root (a fork
            // the witnesses saw), or one the pass never compared, does not count.
            Ok(v)
                if v.quorum_met
                    && v.checkpoint.size == *size
                    && report.summary.verified_roots.get(size) == Some(&v.checkpoint.root)
                    && report.summary.origin.as_deref() == Some(v.checkpoint.origin.as_str()) =>
            {
                if *size == newest.size {
                    return None;
                }
                let beyond = entries.saturating_sub(*size);
                return Some(finding(
                    newest.size,
                    missing,
                    trouble,
                    Some((*size, beyond)),
                ));
            }
            Ok(v) if *size == newest.size => {
                let m = missing.get_or_insert_with(Vec::new);
                if m.is_empty() {
                    *m = v.missing;
                }
            }
            Ok(_) => {}
            Err(e) if *size == newest.size => trouble = Some(e.to_string()),
            Err(_) => {}
        }
    }
    let f = finding(newest.size, missing, trouble, Some((0, entries)));
    Some(f.values("a witnessed checkpoint", "none"))
}

fn finding(
    size: u64,
    missing: Option<Vec<String>>,
    trouble: Option<String>,
    witnessed: Option<(u64, u64)>,
) -> Finding {
    // Size 0 stands for "none": the empty tree needs no witness.
    let mut detail = format!("checkpoint at size {size} lacks the policy's quorum of cosignatures");
    if let Some(m) = missing.filter(|m| !m.is_empty()) {
        detail.push_str(&format!(" (missing: {})", m.join(", ")));
    }
    if let Some(t) = trouble {
        detail.push_str(&format!(" ({t})"));
    }
    match witnessed {
        Some((0, _)) | None => detail.push_str(&format!(
            "; no checkpoint given meets the quorum: {} entries are unwitnessed",
            witnessed.map_or(0, |w| w.1)
        )),
        Some((w, beyond)) => detail.push_str(&format!(
            "; the newest witnessed checkpoint is size {w}, {beyond} entries lie beyond it"
        )),
    }
    Finding::at_size(Class::Unwitnessed, size, detail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ledger::cosign::{Cosignature, CosignerKey, cosigned_message};
    use crate::core::ledger::hash::Hash;
    use crate::core::ledger::keys::{LedgerKey, Origin};
    use crate::core::ledger::note::Checkpoint;
    use crate::core::ledger::verify::{Summary, VerifiedCheckpoint};
    use ed25519_dalek::{Signer as _, SigningKey};

    fn note(size: u64, cosigner: Option<(&SigningKey, &CosignerKey)>) -> String {
        note_over(size, Hash::of(&[&size.to_be_bytes()]), cosigner)
    }

    fn note_over(size: u64, root: Hash, cosigner: Option<(&SigningKey, &CosignerKey)>) -> String {
        let origin = Origin::parse("log.example/a").unwrap();
        let key = LedgerKey::from_seed(origin.clone(), [3; 32]).unwrap();
        let cp = Checkpoint { origin, size, root };
        let mut n = cp.sign(&key);
        if let Some((sk, k)) = cosigner {
            let c = Cosignature {
                name: k.name().to_owned(),
                key_id: k.key_id(),
                timestamp: 7,
                signature: sk.sign(&cosigned_message(&cp.body(), 7)).to_bytes(),
            };
            n.push_str(&c.to_line());
        }
        n
    }

    fn report(newest: u64, last_seq: u64, note_text: String) -> Report {
        Report {
            findings: Vec::new(),
            suppressed: Default::default(),
            summary: Summary {
                origin: Some("log.example/a".into()),
                verified_roots: [4u64, 8, 10, newest]
                    .into_iter()
                    .map(|s| (s, Hash::of(&[&s.to_be_bytes()])))
                    .collect(),
                last_seq: Some(last_seq),
                newest: Some(VerifiedCheckpoint {
                    size: newest,
                    root: Hash::of(&[&newest.to_be_bytes()]),
                    note: note_text,
                    time_ns: 0,
                }),
                ..Summary::default()
            },
            exit_code: 0,
            new_state: None,
        }
    }

    #[test]
    fn walks_back_to_the_newest_witnessed_checkpoint() {
        let sk = SigningKey::from_bytes(&[5; 32]);
        let k = CosignerKey::new(Origin::parse("w.example").unwrap(), sk.verifying_key()).unwrap();
        let policy = Policy::parse(&format!("witness W {k}\nquorum W\n")).unwrap();
        let witnessed = note(8, Some((&sk, &k)));
        // The newest carries the quorum: nothing to report.
        assert_eq!(
            unwitnessed(&report(8, 9, witnessed.clone()), &policy, &[]),
            None
        );
        // It does not: walk back to size 8; 12 - 8 = 4 entries lie beyond it.
        let r = report(10, 11, note(10, None));
        let f = unwitnessed(&r, &policy, &[(8, witnessed.clone()), (4, note(4, None))]).unwrap();
        assert_eq!((f.class, f.size), (Class::Unwitnessed, Some(10)));
        assert!(
            f.detail.contains("missing: W") && f.detail.contains("size 8, 4 entries"),
            "{}",
            f.detail
        );
        // A cosigned checkpoint of size 8 over another root (a fork shown to the witness) or
        // over a size this run never verified does not count.
        let fork = note_over(8, Hash::of(&[b"fork"]), Some((&sk, &k)));
        let f = unwitnessed(&r, &policy, &[(8, fork), (9, note(9, Some((&sk, &k))))]).unwrap();
        assert!(
            f.detail.contains("no checkpoint given meets the quorum"),
            "{}",
            f.detail
        );
        // A flawed checkpoint at 8 does not count; none left.
        let mut r = report(10, 11, note(10, None));
        r.findings
            .push(Finding::at_size(Class::CheckpointMismatch, 8, "x"));
        let f = unwitnessed(&r, &policy, &[(8, witnessed)]).unwrap();
        assert!(
            f.detail
                .contains("no checkpoint given meets the quorum: 12 entries"),
            "{}",
            f.detail
        );
        // `quorum none` asks for nothing.
        let none = Policy::parse("quorum none\n").unwrap();
        assert_eq!(
            unwitnessed(&report(10, 11, note(10, None)), &none, &[]),
            None
        );
    }
}
