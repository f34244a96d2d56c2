//! RFC 6962 / RFC 9162 Merkle tree math: node hashing, compact ranges, proofs and their verification.
//!
//! The tree is never held in memory. Proofs are described as lists of index ranges whose hashes are
//! needed; every such range splits into *perfect* aligned subtrees, which storage keeps (level 0 are
//! the leaf hashes). So the same code serves the database, a bundle and the tests.

use super::hash::Hash;
use std::ops::Range;

/// `H(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Hash::of(&[&[0x01], &left.0, &right.0])
}

/// The root of the empty tree, `H("")`.
pub fn empty_root() -> Hash {
    Hash::of(&[])
}

/// A perfect subtree: leaves `[idx << level, (idx + 1) << level)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    pub level: u8,
    pub idx: u64,
}

/// Largest power of two strictly below `n` (n ≥ 2), the RFC 6962 split point.
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The perfect subtrees that make up `[lo, hi)`, largest first. Valid for ranges that occur in
/// an RFC 6962 tree (lo is a multiple of a power of two at least `hi - lo`), which is every range
/// a proof or a root needs.
pub fn perfect_nodes(range: Range<u64>) -> Vec<NodeId> {
    let mut out = Vec::new();
    let mut lo = range.start;
    while lo < range.end {
        let remaining = range.end - lo;
        let mut level = 63 - remaining.leading_zeros();
        // Also bounded by lo's alignment (lo = 0 is aligned to everything).
        if lo != 0 {
            level = level.min(lo.trailing_zeros());
        }
        out.push(NodeId {
            level: level as u8,
            idx: lo >> level,
        });
        lo += 1u64 << level;
    }
    out
}

/// The RFC 6962 hash of `[lo, hi)` from its perfect subtrees (`perfect_nodes` order): a right fold.
pub fn fold_nodes(hashes: &[Hash]) -> Option<Hash> {
    let (last, rest) = hashes.split_last()?;
    Some(rest.iter().rev().fold(*last, |acc, h| node_hash(h, &acc)))
}

/// Ranges whose hashes form the inclusion proof of `index` in the tree of `size` leaves, in proof
/// order (leaf sibling first). RFC 9162 §2.1.3.1.
pub fn inclusion_ranges(index: u64, size: u64) -> Option<Vec<Range<u64>>> {
    if index >= size {
        return None;
    }
    let mut out = Vec::new();
    let (mut lo, mut hi) = (0u64, size);
    // Walk down from the root, then reverse: the proof lists the deepest sibling first.
    while hi - lo > 1 {
        let k = split_point(hi - lo);
        if index < lo + k {
            out.push(lo + k..hi);
            hi = lo + k;
        } else {
            out.push(lo..lo + k);
            lo += k;
        }
    }
    out.reverse();
    Some(out)
}

/// Ranges whose hashes form the consistency proof from `old` to `new` leaves. RFC 9162 §2.1.4.1.
/// `None` where no proof exists (old = 0 or old > new); empty when old = new.
pub fn consistency_ranges(old: u64, new: u64) -> Option<Vec<Range<u64>>> {
    if old == 0 || old > new {
        return None;
    }
    let mut out = Vec::new();
    if old == new {
        return Some(out);
    }
    let (mut lo, mut hi, mut m, mut whole) = (0u64, new, old, true);
    loop {
        let n = hi - lo;
        if m == n {
            if !whole {
                out.push(lo..hi);
            }
            break;
        }
        let k = split_point(n);
        if m <= k {
            out.push(lo + k..hi);
            hi = lo + k;
        } else {
            out.push(lo..lo + k);
            lo += k;
            m -= k;
            whole = false;
        }
    }
    out.reverse();
    Some(out)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProofError {
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("first tree size {old} is not between 1 and the second size {new}")]
    BadSizes { old: u64, new: u64 },
    #[error("equal tree sizes need an empty proof")]
    NonEmptyProof,
    #[error("proof is empty")]
    EmptyProof,
    #[error("proof has the wrong number of hashes")]
    WrongLength,
    #[error("recomputed root does not match")]
    RootMismatch,
}

/// RFC 9162 §2.1.3.2: verify that `leaf` is at `index` in the tree of `size` with `root`.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err(ProofError::WrongLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongLength);
    }
    if r != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// RFC 9162 §2.1.4.2: verify that the tree of `old` leaves with `old_root` is a prefix of the tree
/// of `new` leaves with `new_root`. Size 0 and old > new fail; equal sizes need an empty proof.
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old == 0 || old > new {
        return Err(ProofError::BadSizes { old, new });
    }
    if old == new {
        if !proof.is_empty() {
            return Err(ProofError::NonEmptyProof);
        }
        return if old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    if proof.is_empty() {
        return Err(ProofError::EmptyProof);
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let (mut fnode, mut snode) = (old - 1, new - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if snode == 0 {
            return Err(ProofError::WrongLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongLength);
    }
    if fr != *old_root || sr != *new_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// The right edge of a tree: the roots of the perfect subtrees covering `[0, size)`, largest
/// first ("peaks"). O(log n) state from which the root at `size` follows and to which leaves append.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CompactRange {
    size: u64,
    peaks: Vec<Hash>,
}

impl CompactRange {
    pub fn new() -> CompactRange {
        CompactRange::default()
    }

    /// Rebuilds the range for `size` leaves from its peaks; `None` if the count is wrong.
    pub fn from_peaks(size: u64, peaks: Vec<Hash>) -> Option<CompactRange> {
        (peaks.len() == size.count_ones() as usize).then_some(CompactRange { size, peaks })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn peaks(&self) -> &[Hash] {
        &self.peaks
    }

    /// The peaks as the node ids they are (largest first).
    pub fn peak_ids(size: u64) -> Vec<NodeId> {
        perfect_nodes(0..size)
    }

    /// Appends a leaf, calling `on_node` for every perfect subtree it completes (level ≥ 1).
    pub fn push(&mut self, leaf: Hash, mut on_node: impl FnMut(NodeId, Hash)) {
        let index = self.size;
        let mut h = leaf;
        let mut level = 0u8;
        // Each trailing one bit of the old size is a peak that now merges with the new node.
        let mut carry = index;
        while carry & 1 == 1 {
            let left = self.peaks.pop().unwrap_or_default();
            h = node_hash(&left, &h);
            level += 1;
            carry >>= 1;
            on_node(
                NodeId {
                    level,
                    idx: index >> level,
                },
                h,
            );
        }
        self.peaks.push(h);
        self.size += 1;
    }

    pub fn root(&self) -> Hash {
        fold_nodes(&self.peaks).unwrap_or_else(empty_root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6962 §2.1 as written, over a list of leaf hashes: the reference the fast code must match.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split_point(n as u64) as usize;
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n)
            .map(|i| Hash::of(&[&[0], &i.to_be_bytes()]))
            .collect()
    }

    fn range_hash(all: &[Hash], r: Range<u64>) -> Hash {
        mth(&all[r.start as usize..r.end as usize])
    }

    #[test]
    fn compact_range_matches_reference_at_every_size() {
        let all = leaves(70);
        let mut cr = CompactRange::new();
        let mut nodes = std::collections::HashMap::new();
        for (i, l) in all.iter().enumerate() {
            cr.push(*l, |id, h| {
                nodes.insert(id, h);
            });
            assert_eq!(cr.root(), mth(&all[..=i]), "size {}", i + 1);
        }
        for (id, h) in nodes {
            let lo = id.idx << id.level;
            assert_eq!(h, range_hash(&all, lo..lo + (1 << id.level)));
        }
    }

    #[test]
    fn proofs_round_trip_for_all_small_sizes() {
        let all = leaves(40);
        for size in 1..=40u64 {
            let root = mth(&all[..size as usize]);
            for i in 0..size {
                let proof: Vec<Hash> = inclusion_ranges(i, size)
                    .unwrap()
                    .into_iter()
                    .map(|r| range_hash(&all, r))
                    .collect();
                verify_inclusion(i, size, &all[i as usize], &proof, &root).unwrap();
                if !proof.is_empty() {
                    let mut bad = proof.clone();
                    bad.pop();
                    assert!(verify_inclusion(i, size, &all[i as usize], &bad, &root).is_err());
                }
            }
            for old in 1..=size {
                let old_root = mth(&all[..old as usize]);
                let proof: Vec<Hash> = consistency_ranges(old, size)
                    .unwrap()
                    .into_iter()
                    .map(|r| range_hash(&all, r))
                    .collect();
                verify_consistency(old, size, &old_root, &root, &proof).unwrap();
                if old < size {
                    assert!(verify_consistency(old, size, &root, &old_root, &proof).is_err());
                }
            }
        }
    }

    /// Every range a proof or root needs folds, from its perfect subtrees, to the reference hash.
    #[test]
    fn perfect_nodes_fold_to_the_range_hash() {
        let all = leaves(64);
        for size in 1..=64u64 {
            let mut ranges = Vec::new();
            ranges.push(0..size);
            for i in 0..size {
                ranges.extend(inclusion_ranges(i, size).unwrap());
                ranges.extend(consistency_ranges(i + 1, size).unwrap());
            }
            for r in ranges {
                let hashes: Vec<Hash> = perfect_nodes(r.clone())
                    .into_iter()
                    .map(|n| {
                        let s = n.idx << n.level;
                        range_hash(&all, s..s + (1 << n.level))
                    })
                    .collect();
                assert_eq!(
                    fold_nodes(&hashes).unwrap(),
                    range_hash(&all, r.clone()),
                    "{r:?}"
                );
            }
        }
    }
}
