//! Independent RFC 6962 / RFC 9162 known answers (vectors/merkle-proofs.json, written by
//! vectors/gen_merkle.py straight from the RFC's recursive MTH / PATH / PROOF definitions) against
//! core::merkle: roots from `CompactRange`, proofs from the ranges + stored perfect subtrees, and
//! `verify_inclusion` / `verify_consistency` on every positive and negative case.
//!
//! Each check collects every disagreement before failing, so one run names all of them.

use changetrail::core::ledger::hash::Hash;
use changetrail::core::ledger::merkle::{
    CompactRange, NodeId, ProofError, consistency_ranges, fold_nodes, inclusion_ranges,
    perfect_nodes, verify_consistency, verify_inclusion,
};
use serde::Deserialize;
use std::collections::HashMap;
use std::ops::Range;

const VECTORS: &str = include_str!("vectors/merkle-proofs.json");

#[derive(Deserialize)]
struct Doc {
    trees: Vec<Tree>,
    negative_inclusion: Vec<NegInclusion>,
    negative_consistency: Vec<NegConsistency>,
}

#[derive(Deserialize)]
struct Tree {
    name: String,
    leaves_hex: Vec<String>,
    /// `roots_hex[s]`: the root of the first `s` leaves.
    roots_hex: Vec<String>,
    /// `[lo, hi, MTH(D[lo:hi])]` for every range a positive proof lists.
    subtree_hashes: Vec<(u64, u64, String)>,
    inclusion: Vec<Inclusion>,
    consistency: Vec<Consistency>,
}

#[derive(Deserialize)]
struct Inclusion {
    index: u64,
    size: u64,
    leaf_hash: String,
    /// Leaf ranges `[lo, hi)` in proof order.
    proof: Vec<(u64, u64)>,
}

#[derive(Deserialize)]
struct Consistency {
    size1: u64,
    size2: u64,
    proof: Vec<(u64, u64)>,
}

#[derive(Deserialize)]
struct NegInclusion {
    tree: String,
    description: String,
    index: u64,
    size: u64,
    leaf_hash: String,
    proof: Vec<String>,
    root: String,
    expect: String,
}

#[derive(Deserialize)]
struct NegConsistency {
    tree: String,
    description: String,
    size1: u64,
    size2: u64,
    root1: String,
    root2: String,
    proof: Vec<String>,
    expect: String,
}

fn doc() -> Doc {
    serde_json::from_str(VECTORS).expect("merkle-proofs.json parses")
}

fn h(hex: &str) -> Hash {
    Hash::from_hex(hex).unwrap_or_else(|| panic!("not a 32-byte hex hash: {hex:?}"))
}

fn hs(hexes: &[String]) -> Vec<Hash> {
    hexes.iter().map(|x| h(x)).collect()
}

/// The vector file's error names for our error variants.
fn category(e: &ProofError) -> &'static str {
    match e {
        ProofError::IndexOutOfRange { .. } => "index_out_of_range",
        ProofError::BadSizes { .. } => "bad_sizes",
        ProofError::NonEmptyProof => "non_empty_proof",
        ProofError::EmptyProof => "empty_proof",
        ProofError::WrongLength => "wrong_length",
        ProofError::RootMismatch => "root_mismatch",
    }
}

fn fail_if_any(what: &str, failures: &[String]) {
    const SHOWN: usize = 40;
    assert!(
        failures.is_empty(),
        "{} {what} disagreement(s){}:\n{}",
        failures.len(),
        if failures.len() > SHOWN {
            ", the first shown"
        } else {
            ""
        },
        failures[..failures.len().min(SHOWN)].join("\n")
    );
}

/// Our side of one tree: leaf hashes computed here, every perfect subtree hash as storage keeps
/// it (level 0 the leaves, higher levels from `CompactRange::push`'s node callback), and the
/// compact range's root after every push.
struct Ours {
    leaves: Vec<Hash>,
    nodes: HashMap<NodeId, Hash>,
    roots: Vec<Hash>,
}

impl Ours {
    fn build(tree: &Tree) -> Ours {
        let leaves: Vec<Hash> = tree
            .leaves_hex
            .iter()
            .map(|x| Hash::of(&[&[0x00], &hex::decode(x).expect("leaf hex")]))
            .collect();
        let mut nodes = HashMap::new();
        let mut cr = CompactRange::new();
        let mut roots = vec![cr.root()];
        for (i, leaf) in leaves.iter().enumerate() {
            nodes.insert(
                NodeId {
                    level: 0,
                    idx: i as u64,
                },
                *leaf,
            );
            cr.push(*leaf, |id, hash| {
                assert!(
                    nodes.insert(id, hash).is_none(),
                    "node {id:?} reported twice"
                );
            });
            assert_eq!(cr.size(), i as u64 + 1);
            roots.push(cr.root());
        }
        Ours {
            leaves,
            nodes,
            roots,
        }
    }

    /// The hash of `range` from stored perfect subtrees, as the database and bundles derive it.
    fn range_hash(&self, range: Range<u64>) -> Result<Hash, String> {
        let parts = perfect_nodes(range.clone())
            .into_iter()
            .map(|id| {
                self.nodes
                    .get(&id)
                    .copied()
                    .ok_or_else(|| format!("{range:?}: perfect node {id:?} was never stored"))
            })
            .collect::<Result<Vec<Hash>, String>>()?;
        fold_nodes(&parts).ok_or_else(|| format!("{range:?}: no perfect nodes"))
    }

    fn proof(&self, ranges: &[Range<u64>]) -> Result<Vec<Hash>, String> {
        ranges.iter().map(|r| self.range_hash(r.clone())).collect()
    }
}

fn ranges(pairs: &[(u64, u64)]) -> Vec<Range<u64>> {
    pairs.iter().map(|&(lo, hi)| lo..hi).collect()
}

/// The vectors' proof hashes, looked up in their own table (never from our code).
fn their_hashes(table: &HashMap<(u64, u64), Hash>, pairs: &[(u64, u64)]) -> Vec<Hash> {
    pairs
        .iter()
        .map(|p| *table.get(p).unwrap_or_else(|| panic!("{p:?} missing")))
        .collect()
}

fn table(tree: &Tree) -> HashMap<(u64, u64), Hash> {
    tree.subtree_hashes
        .iter()
        .map(|(lo, hi, x)| ((*lo, *hi), h(x)))
        .collect()
}

/// Guards against a loop that silently runs zero times: the file holds what it says it holds.
#[test]
fn merkle_vectors_cover_every_size_and_pair() {
    let doc = doc();
    let names: Vec<&str> = doc.trees.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["ct", "leaf-37"]);
    for tree in &doc.trees {
        let n = tree.leaves_hex.len() as u64;
        assert_eq!(tree.roots_hex.len() as u64, n + 1, "{}", tree.name);
        let mut incl: Vec<(u64, u64)> = tree.inclusion.iter().map(|c| (c.index, c.size)).collect();
        incl.sort_unstable();
        let want: Vec<(u64, u64)> = (0..n)
            .flat_map(|i| (i + 1..=n).map(move |s| (i, s)))
            .collect();
        assert_eq!(incl, want, "{}: inclusion (index, size) pairs", tree.name);
        let mut cons: Vec<(u64, u64)> = tree
            .consistency
            .iter()
            .map(|c| (c.size1, c.size2))
            .collect();
        cons.sort_unstable();
        let want: Vec<(u64, u64)> = (1..=n).flat_map(|a| (a..=n).map(move |b| (a, b))).collect();
        assert_eq!(
            cons, want,
            "{}: consistency (size1, size2) pairs",
            tree.name
        );
    }
    assert_eq!(doc.trees[0].leaves_hex.len(), 8);
    assert_eq!(doc.trees[1].leaves_hex.len(), 37);
    assert_eq!(
        doc.trees[0].roots_hex[8],
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    );
    assert!(doc.negative_inclusion.len() > 200);
    assert!(doc.negative_consistency.len() > 200);
}

#[test]
fn merkle_compact_range_gives_every_root() {
    let mut failures = Vec::new();
    for tree in &doc().trees {
        let ours = Ours::build(tree);
        for (size, want) in tree.roots_hex.iter().enumerate() {
            if ours.roots[size] != h(want) {
                failures.push(format!(
                    "{} size {size}: CompactRange root {} want {want}",
                    tree.name, ours.roots[size]
                ));
            }
            // The root also folds from the peaks' perfect nodes, and a rebuilt range agrees.
            if size > 0 {
                match ours.range_hash(0..size as u64) {
                    Ok(r) if r == h(want) => {}
                    other => failures.push(format!(
                        "{} size {size}: fold of perfect_nodes(0..{size}) {other:?} want {want}",
                        tree.name
                    )),
                }
            }
            let peaks: Vec<Hash> = CompactRange::peak_ids(size as u64)
                .iter()
                .map(|id| ours.nodes[id])
                .collect();
            let rebuilt = CompactRange::from_peaks(size as u64, peaks).expect("peak count");
            if rebuilt.root() != h(want) {
                failures.push(format!(
                    "{} size {size}: from_peaks root differs",
                    tree.name
                ));
            }
        }
    }
    fail_if_any("root", &failures);
}

#[test]
fn merkle_subtree_hashes_fold_from_perfect_nodes() {
    let mut failures = Vec::new();
    for tree in &doc().trees {
        let ours = Ours::build(tree);
        for (lo, hi, want) in &tree.subtree_hashes {
            match ours.range_hash(*lo..*hi) {
                Ok(got) if got == h(want) => {}
                other => failures.push(format!(
                    "{} [{lo}, {hi}): ours {other:?} want {want}",
                    tree.name
                )),
            }
        }
    }
    fail_if_any("subtree hash", &failures);
}

#[test]
fn merkle_inclusion_proofs_match_byte_for_byte() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for tree in &doc().trees {
        let ours = Ours::build(tree);
        let table = table(tree);
        for case in &tree.inclusion {
            let at = format!("{} inclusion {}/{}", tree.name, case.index, case.size);
            if ours.leaves[case.index as usize] != h(&case.leaf_hash) {
                failures.push(format!("{at}: leaf hash differs"));
            }
            let Some(our_ranges) = inclusion_ranges(case.index, case.size) else {
                failures.push(format!("{at}: inclusion_ranges gave None"));
                continue;
            };
            if our_ranges != ranges(&case.proof) {
                failures.push(format!(
                    "{at}: ranges {our_ranges:?} want {:?}",
                    ranges(&case.proof)
                ));
            }
            let want = their_hashes(&table, &case.proof);
            match ours.proof(&our_ranges) {
                Ok(got) if got == want => checked += 1,
                Ok(got) => failures.push(format!("{at}: hashes {got:?} want {want:?}")),
                Err(e) => failures.push(format!("{at}: {e}")),
            }
        }
    }
    fail_if_any("inclusion proof", &failures);
    assert_eq!(checked, 36 + 703);
}

#[test]
fn merkle_consistency_proofs_match_byte_for_byte() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for tree in &doc().trees {
        let ours = Ours::build(tree);
        let table = table(tree);
        for case in &tree.consistency {
            let at = format!("{} consistency {} -> {}", tree.name, case.size1, case.size2);
            let Some(our_ranges) = consistency_ranges(case.size1, case.size2) else {
                failures.push(format!("{at}: consistency_ranges gave None"));
                continue;
            };
            if our_ranges != ranges(&case.proof) {
                failures.push(format!(
                    "{at}: ranges {our_ranges:?} want {:?}",
                    ranges(&case.proof)
                ));
            }
            let want = their_hashes(&table, &case.proof);
            match ours.proof(&our_ranges) {
                Ok(got) if got == want => checked += 1,
                Ok(got) => failures.push(format!("{at}: hashes {got:?} want {want:?}")),
                Err(e) => failures.push(format!("{at}: {e}")),
            }
        }
    }
    fail_if_any("consistency proof", &failures);
    assert_eq!(checked, 36 + 703);
}

#[test]
fn merkle_every_positive_proof_verifies() {
    let mut failures = Vec::new();
    for tree in &doc().trees {
        let table = table(tree);
        let roots = hs(&tree.roots_hex);
        for c in &tree.inclusion {
            let proof = their_hashes(&table, &c.proof);
            let root = &roots[c.size as usize];
            if let Err(e) = verify_inclusion(c.index, c.size, &h(&c.leaf_hash), &proof, root) {
                failures.push(format!(
                    "{} inclusion {}/{}: {e}",
                    tree.name, c.index, c.size
                ));
            }
        }
        for c in &tree.consistency {
            let proof = their_hashes(&table, &c.proof);
            let (r1, r2) = (&roots[c.size1 as usize], &roots[c.size2 as usize]);
            if let Err(e) = verify_consistency(c.size1, c.size2, r1, r2, &proof) {
                failures.push(format!(
                    "{} consistency {} -> {}: {e}",
                    tree.name, c.size1, c.size2
                ));
            }
        }
    }
    fail_if_any("positive verification", &failures);
}

#[test]
fn merkle_every_negative_inclusion_is_rejected_as_expected() {
    let doc = doc();
    let mut failures = Vec::new();
    for c in &doc.negative_inclusion {
        let at = format!(
            "{} {} (index {}, size {})",
            c.tree, c.description, c.index, c.size
        );
        let got = verify_inclusion(
            c.index,
            c.size,
            &h(&c.leaf_hash),
            &hs(&c.proof),
            &h(&c.root),
        );
        match got {
            Ok(()) => failures.push(format!("{at}: ACCEPTED, want {}", c.expect)),
            Err(e) if category(&e) != c.expect => {
                failures.push(format!(
                    "{at}: rejected as {} ({e}), want {}",
                    category(&e),
                    c.expect
                ));
            }
            Err(_) => {}
        }
        // Proof generation refuses the same impossible positions.
        if c.expect == "index_out_of_range" && inclusion_ranges(c.index, c.size).is_some() {
            failures.push(format!("{at}: inclusion_ranges gave a proof"));
        }
    }
    fail_if_any("negative inclusion", &failures);
}

#[test]
fn merkle_every_negative_consistency_is_rejected_as_expected() {
    let doc = doc();
    let mut failures = Vec::new();
    for c in &doc.negative_consistency {
        let at = format!("{} {} ({} -> {})", c.tree, c.description, c.size1, c.size2);
        let got = verify_consistency(c.size1, c.size2, &h(&c.root1), &h(&c.root2), &hs(&c.proof));
        match got {
            Ok(()) => failures.push(format!("{at}: ACCEPTED, want {}", c.expect)),
            Err(e) if category(&e) != c.expect => {
                failures.push(format!(
                    "{at}: rejected as {} ({e}), want {}",
                    category(&e),
                    c.expect
                ));
            }
            Err(_) => {}
        }
        if c.expect == "bad_sizes" && consistency_ranges(c.size1, c.size2).is_some() {
            failures.push(format!("{at}: consistency_ranges gave a proof"));
        }
    }
    fail_if_any("negative consistency", &failures);
}
